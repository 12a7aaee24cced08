"""Real human CT that installs offline: a head CT and the CT slices of pydicom.

The head CT of the Debian package ``invesalius-examples`` and the CT slices
of ``pydicom-data``, converted to attenuation relative to water
(`lpd.data.ct_units.hu_to_attenuation`) and resampled to a set-up's grid:
`real_ct_slices`.

Environment variable (optional): ``LPD_HEAD_CT`` (path of ``Cranium.inv3``
when it is not where Debian installs it). See ``data/README.md``.

References
----------
Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 37(6), 2018,
arXiv:1707.06474, section IV-B (the human data).
"""

from __future__ import annotations

import functools
import math
import os
import plistlib
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lpd.data.ct_units import grid_of, hu_to_attenuation, read_dicom_hu, resample_to_grid
from lpd.data.pipelines import DataError, DataSourceMissing, ImageSet

__all__ = ["HEAD_CT_PATH", "HEAD_CT_SPLITS", "PYDICOM_CT_FILES", "REAL_CT_SPLITS", "load_inv3",
           "real_ct_slices", "head_ct_path", "pydicom_path"]


HEAD_CT_PATH = "/usr/share/doc/invesalius-examples/examples/Cranium.inv3"
"""Where Debian's ``invesalius-examples`` installs its head CT (override: ``LPD_HEAD_CT``)."""

HEAD_CT_SPLITS: dict[str, tuple[tuple[int, int], ...]] = {
    "train": ((0, 33), (51, 69), (87, 103)),
    "validation": ((36, 48),),
    "test": ((72, 84),),
}
"""Slices (half-open ranges of z indices, 1.5 mm apart) of each split of the head CT.

Validation and test are 12-slice (18 mm) blocks held out whole; the 3 slices
(4.5 mm) either side of them belong to no split, so that no training slice is a
near copy of a held-out one. Slices 103-107 are left out: they hold almost no
head (the top of the skull).
"""

PYDICOM_CT_FILES = ("693_UNCR.dcm", "J2K_pixelrep_mismatch.dcm", "explicit_VR-UN.dcm")
"""Real 512 x 512 CT slices of three other patients in pydicom / pydicom-data.

``CT_small.dcm`` (128 x 128, a cropped 85 mm field of view) is left out by
default: its body is cut at the edges of the field of view, which no full scan
shows; pass it in ``names`` to `real_ct_slices` to use it anyway.
"""

REAL_CT_SPLITS = ("train", "validation", "test", "other_patients")
"""Splits of `real_ct_slices`: the head CT's three, and the pydicom slices."""

_HEAD_CT_HOW = (
    "install the Debian/Ubuntu package: sudo apt-get install invesalius-examples "
    f"(it puts Cranium.inv3 at {HEAD_CT_PATH}), or set LPD_HEAD_CT to the path of "
    "Cranium.inv3 taken from that package"
)
_PYDICOM_HOW = "pip install pydicom pydicom-data (the slices ship inside these packages)"


def head_ct_path(path=None) -> Path:
    """The head CT file (``path``, ``LPD_HEAD_CT`` or `HEAD_CT_PATH`), checked to exist."""
    path = Path(path or os.environ.get("LPD_HEAD_CT") or HEAD_CT_PATH)
    if not path.is_file():
        raise DataSourceMissing(f"head CT not found at {path}: {_HEAD_CT_HOW}")
    return path


@functools.lru_cache(maxsize=2)
def _read_inv3(path: str, mtime: float) -> tuple[np.ndarray, tuple[float, float, float]]:
    try:
        with tarfile.open(path, "r:*") as archive:
            members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
            if "main.plist" not in members:
                raise DataError(f"{path}: no main.plist in the InVesalius project")
            meta = plistlib.loads(archive.extractfile(members["main.plist"]).read())
            matrix = meta.get("matrix", {})
            name = matrix.get("filename", "matrix.dat")
            shape = tuple(int(n) for n in matrix.get("shape", ()))
            dtype = np.dtype(matrix.get("dtype", "int16")).newbyteorder("<")
            if len(shape) != 3 or name not in members:
                raise DataError(f"{path}: main.plist does not describe a 3D volume in {name}")
            raw = archive.extractfile(members[name]).read()
    except (tarfile.TarError, OSError, EOFError, plistlib.InvalidFileException) as err:
        raise DataError(f"{path}: not a readable InVesalius project ({err})") from err
    if len(raw) != math.prod(shape) * dtype.itemsize:
        raise DataError(f"{path}: {name} has {len(raw)} bytes, expected "
                        f"{math.prod(shape) * dtype.itemsize} for {shape} {dtype}")
    spacing = tuple(float(s) for s in meta.get("spacing", (1.0, 1.0, 1.0)))
    volume = np.frombuffer(raw, dtype=dtype).reshape(shape)
    volume.setflags(write=False)
    return volume, spacing


def load_inv3(path: str | os.PathLike | None = None) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read the CT volume of an InVesalius project (``.inv3``) in place.

    Parameters
    ----------
    path : path, optional
        The project; by default ``LPD_HEAD_CT`` or `HEAD_CT_PATH` (the head CT
        of ``invesalius-examples``: 108 slices of 256 x 256 in HU, GPL-2, read
        where it is installed and never copied).

    Returns
    -------
    volume : numpy.ndarray
        Read-only array in HU, shape ``(z, y, x)``; rows run along ``+y`` (VTK).
    spacing : tuple of float
        Voxel size ``(x, y, z)`` in mm.

    Raises
    ------
    DataSourceMissing
        If the file is not there (the message says how to install it).
    DataError
        If it is not a readable InVesalius project.
    """
    path = head_ct_path(path)
    return _read_inv3(str(path), path.stat().st_mtime)


def pydicom_path(name: str) -> str:
    """The path of pydicom test file ``name`` where it is installed (never downloaded)."""
    try:
        from pydicom.data import get_testdata_file
    except ImportError as err:
        raise DataSourceMissing(f"pydicom is not installed: {_PYDICOM_HOW}") from err
    # download=False: nothing is fetched at run time.
    path = get_testdata_file(name, download=False)
    if path is None:
        raise DataSourceMissing(f"pydicom test file {name} not found: {_PYDICOM_HOW}")
    return str(path)


@functools.lru_cache(maxsize=8)
def _real_ct_arrays(split: str, shape, min_pt, max_pt, scale: str, names: tuple[str, ...],
                    head_path: str | None):
    grid = dict(shape=shape, min_pt=min_pt, max_pt=max_pt, scale=scale)
    if split == "other_patients":
        images, labels = [], []
        for name in names:
            path = pydicom_path(name)
            hu, spacing, ds = read_dicom_hu(path)
            images.append(resample_to_grid(hu_to_attenuation(hu), spacing, **grid))
            labels.append(f"pydicom:{name} (patient {ds.get('PatientID', '?')})")
        images = np.stack(images)
        images.setflags(write=False)  # cached: callers share it
        return images, labels
    volume, spacing = load_inv3(head_path)
    z = [k for lo, hi in HEAD_CT_SPLITS[split] for k in range(lo, min(hi, len(volume)))]
    images = [resample_to_grid(hu_to_attenuation(volume[k]), (spacing[1], spacing[0]),
                               rows_up=True, **grid) for k in z]
    images = np.stack(images)
    images.setflags(write=False)
    return images, [f"head_ct:z={k}" for k in z]


def real_ct_slices(grid: Any = "human_small", split: str = "train", *,
                   scale: Literal["physical", "pixels"] = "physical",
                   names: Sequence[str] = PYDICOM_CT_FILES,
                   head_ct: str | os.PathLike | None = None) -> ImageSet:
    """Real human CT slices that install offline, on a set-up's grid.

    Splits ``"train"``, ``"validation"`` and ``"test"`` are disjoint blocks of
    slices of the ``invesalius-examples`` head CT (`HEAD_CT_SPLITS`);
    ``"other_patients"`` are the CT slices of pydicom / pydicom-data
    (`PYDICOM_CT_FILES`: two heads and an abdomen of three other patients), a
    test set with no patient in common with the training data, the analogue of
    the paper's held-out patient.

    Images are attenuation relative to water (`hu_to_attenuation`), resampled by
    `resample_to_grid`.

    Parameters
    ----------
    grid : lpd.operators.Setup, ProblemConfig, str or tuple of int
        The target grid: a set-up, its config or name, or a shape ``(nx, ny)`` on
        the human experiment's 256 mm field of view. Lengths are taken as mm.
    split : {"train", "validation", "test", "other_patients"}
        Which slices.
    scale : {"physical", "pixels"}
        Keep the physical pixel size (default), or stretch each slice over the
        domain as the original experiment did (see `resample_to_grid`).
    names : sequence of str
        pydicom test files of the ``"other_patients"`` split.
    head_ct : path, optional
        The ``.inv3`` file instead of ``LPD_HEAD_CT`` / `HEAD_CT_PATH`.

    Returns
    -------
    ImageSet
        The slices, labelled ``"head_ct:z=K"`` or ``"pydicom:NAME (...)"``.

    Raises
    ------
    DataSourceMissing
        If the data are not installed; the message says how to install them.

    References
    ----------
    Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 2018,
    arXiv:1707.06474, section IV-B (human data: HU / 1000, mu = 0.02 per mm).
    """
    if split not in REAL_CT_SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {REAL_CT_SPLITS}")
    shape, min_pt, max_pt = grid_of(grid)
    head = None if head_ct is None else str(head_ct_path(head_ct))
    images, labels = _real_ct_arrays(split, shape, min_pt, max_pt, scale, tuple(names), head)
    name = "pydicom_ct" if split == "other_patients" else f"head_ct/{split}"
    return ImageSet(images.__getitem__, len(images), shape, labels, name)
