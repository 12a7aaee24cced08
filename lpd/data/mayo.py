"""Loader for the Mayo Clinic / AAPM low-dose CT challenge tree, which users bring.

`scan_mayo` finds and checks the slices of the tree; `mayo_slices` makes them
an image source on a set-up's grid (see `lpd.data.ct_units` for the units).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lpd.data.ct_units import (
    check_directory,
    grid_of,
    hu_to_attenuation,
    import_pydicom,
    read_dicom,
    read_dicom_hu,
    report,
    resample_to_grid,
)
from lpd.data.pipelines import DataError, ImageSet

__all__ = ["MayoSlice", "scan_mayo", "mayo_slices", "scan_mayo_file", "MAYO_HOW",
           "DICOM_SUFFIXES"]


MAYO_HOW = (
    "the AAPM/Mayo Clinic Low Dose CT Grand Challenge data (one folder per patient, "
    "L067 ... L506, each with full_1mm, quarter_1mm, full_3mm, quarter_3mm) are "
    "distributed by the AAPM and Mayo Clinic under a data-use agreement "
    "(https://www.aapm.org/grandchallenge/lowdosect/); see data/README.md"
)
"""Where the Mayo/AAPM data come from (ends the messages that say how to get them)."""

DICOM_SUFFIXES = (".ima", ".dcm")
"""Suffixes (lower case) of the DICOM files of a Mayo/AAPM tree."""


@dataclass(frozen=True)
class MayoSlice:
    """One slice of the Mayo/AAPM tree, as `scan_mayo` found it."""

    patient: str
    path: str
    z: float
    pixel_spacing: tuple[float, float]


def scan_mayo_file(path: Path, expected_shape):
    """``(z, pixel spacing)`` of one Mayo/AAPM slice, its header and pixel data checked."""
    pydicom, _ = import_pydicom()
    ds = read_dicom(path, expected_shape)
    if "ImagePositionPatient" not in ds or len(ds.ImagePositionPatient) != 3:
        raise DataError(f"{path}: missing ImagePositionPatient (needed to order slices)")
    z = float(ds.ImagePositionPatient[2])
    if not math.isfinite(z):
        raise DataError(f"{path}: NaN or infinite ImagePositionPatient")
    if "PixelData" not in ds:
        raise DataError(f"{path}: no pixel data")
    if not ds.file_meta.get("TransferSyntaxUID", pydicom.uid.ImplicitVRLittleEndian
                            ).is_compressed:
        expected = int(ds.Rows) * int(ds.Columns) * int(ds.get("BitsAllocated", 16)) // 8
        if len(ds.PixelData) < expected:
            raise DataError(f"{path}: truncated pixel data ({len(ds.PixelData)} bytes, "
                            f"expected {expected})")
    return z, tuple(float(s) for s in ds.PixelSpacing)


def scan_mayo(directory: str | os.PathLike, dose: Literal["full", "quarter"] = "full",
              thickness: Literal["1mm", "3mm"] = "3mm", *,
              patients: Sequence[str] | None = None, exclude_patients: Sequence[str] = (),
              expected_shape: tuple[int, int] | None = (512, 512),
              skip_bad: bool = False) -> list[MayoSlice]:
    """Find and check the slices of a Mayo/AAPM challenge tree.

    Expects ``directory/<patient>/<dose>_<thickness>/**/*.IMA`` (or ``.dcm``),
    single-slice DICOM files. Every file's header is read and checked: readable
    DICOM, size, rescale slope and intercept present and finite, a slice
    position, pixel data of the right length. Slices are ordered by patient and
    by ``ImagePositionPatient[2]``.

    Parameters
    ----------
    directory : path
        The tree's root.
    dose : {"full", "quarter"}
        Full-dose or quarter-dose reconstructions.
    thickness : {"1mm", "3mm"}
        Slice thickness (the paper trained on full-dose 3 mm slices).
    patients : sequence of str, optional
        Patient folders to take (all by default).
    exclude_patients : sequence of str
        Patient folders to leave out (the paper held out ``"L286"``).
    expected_shape : tuple of int or None
        Required ``(rows, columns)``; ``None`` accepts any.
    skip_bad : bool
        Report (as a warning) and skip bad files and missing series instead
        of raising.

    Returns
    -------
    list of MayoSlice

    Raises
    ------
    DataSourceMissing
        If the directory does not exist.
    DataError
        For an empty tree, a missing series, or a bad file (unless ``skip_bad``).
    """
    slices, skipped = _scan_mayo(directory, dose, thickness, patients, exclude_patients,
                                 expected_shape, skip_bad)
    for message in skipped:
        report(message)
    return slices


def _scan_mayo(directory, dose, thickness, patients, exclude_patients, expected_shape,
               skip_bad) -> tuple[list[MayoSlice], list[str]]:
    directory = check_directory(directory, MAYO_HOW)
    if dose not in ("full", "quarter") or thickness not in ("1mm", "3mm"):
        raise ValueError(f"dose must be 'full' or 'quarter' and thickness '1mm' or '3mm', "
                         f"got {dose!r}, {thickness!r}")
    series = f"{dose}_{thickness}"
    folders = sorted(p for p in directory.iterdir() if p.is_dir())
    if isinstance(patients, str):
        patients = [patients]  # one patient, not its letters
    if isinstance(exclude_patients, str):
        exclude_patients = [exclude_patients]
    if patients is not None:
        wanted = set(patients)
        unknown = wanted - {p.name for p in folders}
        if unknown:
            raise DataError(f"{directory}: no folder for patient(s) {', '.join(sorted(unknown))}")
        folders = [p for p in folders if p.name in wanted]
    folders = [p for p in folders if p.name not in set(exclude_patients)]
    if not folders:
        raise DataError(f"{directory}: no patient folders; expected {MAYO_HOW}")
    found: list[MayoSlice] = []
    skipped: list[str] = []
    for folder in folders:
        series_dir = folder / series
        if not series_dir.is_dir():
            message = f"{series_dir}: missing series folder {series}"
            if skip_bad:
                skipped.append(f"skipped: {message}")
                continue
            raise DataError(message)
        files = sorted(p for p in series_dir.rglob("*")
                       if p.is_file() and p.suffix.lower() in DICOM_SUFFIXES)
        if not files:
            message = f"{series_dir}: no DICOM files (*.IMA, *.dcm)"
            if skip_bad:
                skipped.append(f"skipped: {message}")
                continue
            raise DataError(message)
        slices = []
        for path in files:
            try:
                z, spacing = scan_mayo_file(path, expected_shape)
            except DataError as err:
                if not skip_bad:
                    raise
                skipped.append(f"skipped: {err}")
                continue
            slices.append(MayoSlice(folder.name, str(path), z, spacing))
        found.extend(sorted(slices, key=lambda s: s.z))
    if not found:
        reasons = ""
        if skipped:
            shown = "; ".join(m.removeprefix("skipped: ") for m in skipped[:5])
            more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
            reasons = f": every file was skipped: {shown}{more}"
        raise DataError(f"{directory}: no usable {series} slices found{reasons}")
    return found, skipped


def mayo_slices(directory: str | os.PathLike, grid: Any = "human", *,
                dose: Literal["full", "quarter"] = "full",
                thickness: Literal["1mm", "3mm"] = "3mm",
                patients: Sequence[str] | None = None,
                exclude_patients: Sequence[str] = (),
                scale: Literal["physical", "pixels"] = "physical",
                expected_shape: tuple[int, int] | None = (512, 512),
                skip_bad: bool = False) -> ImageSet:
    """The slices of a Mayo/AAPM challenge tree as an image source.

    Headers are checked when the set is made (`scan_mayo`); pixels are read,
    converted (``HU = pixel * RescaleSlope + RescaleIntercept``, then
    `hu_to_attenuation`) and resampled (`resample_to_grid`) when an image is used.

    Parameters
    ----------
    directory : path
        The tree's root.
    grid : lpd.operators.Setup, ProblemConfig, str or tuple of int
        Target grid (see `real_ct_slices`). The paper's set-up is ``"human"``
        with ``scale="pixels"``; ``"physical"`` keeps the true size.
    dose, thickness, patients, exclude_patients, expected_shape, skip_bad
        See `scan_mayo`. The paper trained on the full-dose 3 mm slices of all
        patients but ``L286``, and tested on ``L286``.
    scale : {"physical", "pixels"}
        See `resample_to_grid`.

    Returns
    -------
    ImageSet
        Labelled ``"<patient>:<file>"``, ordered by patient and position.

    References
    ----------
    McCollough CH et al. Low-dose CT for the detection and classification of
    metastatic liver lesions: results of the 2016 Low Dose CT Grand Challenge.
    Med. Phys. 44(10), 2017.
    """
    slices, skipped = _scan_mayo(directory, dose, thickness, patients, exclude_patients,
                                 expected_shape, skip_bad)
    for message in skipped:
        report(message)
    shape, min_pt, max_pt = grid_of(grid)

    def load(i):
        item = slices[i]
        hu, spacing, _ = read_dicom_hu(item.path, expected_shape)
        return resample_to_grid(hu_to_attenuation(hu), spacing, shape, min_pt, max_pt,
                                scale=scale)

    labels = [f"{s.patient}:{s.path}" for s in slices]
    return ImageSet(load, len(slices), shape, labels, f"mayo/{dose}_{thickness}", skipped)
