"""Real brain MRI that installs offline: axial slices of the Colin27 T1 volume.

The Debian package ``mricron-data`` ships the Colin27 average brain (one
subject, 27 T1-weighted scans averaged; Holmes et al., J Comput Assist Tomogr
22(2), 1998) in MNI space at ``/usr/share/mricron/templates/ch2.nii.gz``:
181 x 217 x 181 voxels of 1 mm, uint8. `load_colin27` reads it (intensities
scaled to [0, 1]); `brain_mri_slices` gives the axial slices of a split
(`BRAIN_MRI_SPLITS`) resampled to a set-up's grid, such as the ``brain_mri``
and ``brain_mri_small`` set-ups of `lpd.config.SETUPS`.

Environment variable (optional): ``LPD_BRAIN_MRI`` (path of a NIfTI volume to
read instead of `COLIN27_PATH`). See ``data/README.md``.

nibabel (``pip install nibabel``, in the ``data`` extra) reads the file; it is
imported only when a volume is read.

References
----------
Liu, Kuang & Zhang 2018, section 3 (the MRI experiment that the ``brain_mri``
set-ups follow: 192 x 160 axial brain slices, images in [0, 1], noise of level
10 % of the image maximum).
"""

from __future__ import annotations

import functools
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from lpd.data.ct_units import grid_of, resample_to_grid
from lpd.data.pipelines import DataError, DataSourceMissing, ImageSet

__all__ = ["COLIN27_PATH", "BRAIN_MRI_SPLITS", "brain_mri_path", "load_colin27",
           "read_colin27_header", "brain_mri_slices", "split_slices"]


COLIN27_PATH = "/usr/share/mricron/templates/ch2.nii.gz"
"""Where Debian's ``mricron-data`` installs the Colin27 T1 volume (override: ``LPD_BRAIN_MRI``)."""

BRAIN_MRI_SPLITS: dict[str, tuple[tuple[int, int], ...]] = {
    "train": ((22, 68), (97, 110), (128, 141)),
    "validation": ((114, 124),),
    "test": ((72, 93),),
}
"""Axial slices (half-open ranges of z indices, 1 mm apart) of each split of Colin27.

Voxel ``z`` lies at MNI ``z - 71`` mm. The useful range is slices 22-140: those
whose brain (the brain mask ``ch2bet.nii.gz`` of the same package) covers at
least a quarter of the largest cross-section (19 504 mm² at z = 73). Below 22
the slices are mostly face, skull base and neck around a small cerebellum;
above 140 they are mostly scalp over the vertex.

- ``"test"``: slices 72-92 (21 slices, MNI +1 to +21 mm), through the lateral
  ventricles, basal ganglia and thalami, where the brain is widest and has most
  structure (the seed paper tested on 21 slices).
- ``"validation"``: slices 114-123 (10 slices, MNI +43 to +52 mm), the centrum
  semiovale and the cortex above the ventricles, away from the test block.
- ``"train"``: the rest of the useful range, 72 slices: 22-67 (cerebellum,
  temporal lobes, midbrain), 97-109 and 128-140 (upper brain).

The 4 slices (4 mm) either side of each held-out block belong to no split
(68-71, 93-96, 110-113, 124-127), so that no training slice is a near copy of a
held-out one. All slices come from one (averaged) subject: the splits are
different slices of the same brain.
"""

_HOW = (
    "install the Debian/Ubuntu package: sudo apt-get install mricron-data "
    f"(it puts the Colin27 T1 volume at {COLIN27_PATH}), or set LPD_BRAIN_MRI to the "
    "path of ch2.nii.gz taken from that package"
)
_NIBABEL_HOW = "pip install nibabel (or pip install 'lpd[data]')"


def brain_mri_path(path: str | os.PathLike | None = None) -> Path:
    """The brain volume (``path``, ``LPD_BRAIN_MRI`` or `COLIN27_PATH`), checked to exist.

    Raises
    ------
    DataSourceMissing
        If there is no such file; the message says how to install it.
    """
    path = Path(path or os.environ.get("LPD_BRAIN_MRI") or COLIN27_PATH)
    if not path.is_file():
        raise DataSourceMissing(f"brain MRI volume not found at {path}: {_HOW}")
    return path


def _import_nibabel():
    try:
        import nibabel
    except ImportError as err:
        raise DataSourceMissing(f"nibabel is not installed, it reads the brain MRI volume: "
                                f"{_NIBABEL_HOW}") from err
    return nibabel


def _open_nifti(path: str):
    """The NIfTI image at ``path`` (header read, data not decoded), in RAS order."""
    nib = _import_nibabel()
    try:
        image = nib.load(path)
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError,
            zlib.error) as err:
        raise DataError(f"{path}: not a readable NIfTI volume ({err})") from err
    if not isinstance(image, nib.Nifti1Pair):  # Nifti1Image, Nifti2Image and pairs
        raise DataError(f"{path}: a {type(image).__name__}, not a NIfTI volume")
    shape = image.shape
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3 or min(shape) < 1:
        raise DataError(f"{path}: expected a 3-D volume, got shape {image.shape}")
    # Reorder (flip / permute) the voxel axes to the closest RAS order; what
    # remains off the diagonal is an oblique acquisition, which we refuse.
    image = nib.as_closest_canonical(image)
    linear = np.asarray(image.affine, dtype=np.float64)[:3, :3]
    spacing = np.diag(linear)
    off_diagonal = np.abs(linear - np.diag(spacing)).max()
    if not (np.all(np.isfinite(linear)) and np.all(spacing > 0)
            and off_diagonal <= 1e-6 * np.abs(spacing).max()):
        raise DataError(f"{path}: the voxel axes are not aligned with the scanner's RAS axes "
                        f"(affine {image.affine[:3].tolist()}); only axis-aligned volumes "
                        "are supported")
    return image, tuple(int(n) for n in shape), tuple(float(s) for s in spacing)


def read_colin27_header(path: str | os.PathLike | None = None
                        ) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Shape and voxel size (mm) of the volume in RAS order, from its header only.

    Cheap (the voxels are not decoded); used by `lpd.data.catalogue.data_sources`.
    Raises as `load_colin27`.
    """
    path = brain_mri_path(path)
    _, shape, spacing = _open_nifti(str(path))
    return shape, spacing


@functools.lru_cache(maxsize=2)
def _read_volume(path: str, mtime: float) -> tuple[np.ndarray, tuple[float, float, float]]:
    image, shape, spacing = _open_nifti(path)
    try:
        volume = np.asarray(image.get_fdata(dtype=np.float32)).reshape(shape)
    except (OSError, EOFError, ValueError, zlib.error) as err:  # truncated or corrupt voxels
        raise DataError(f"{path}: cannot read the voxels of the NIfTI volume ({err})") from err
    if not np.all(np.isfinite(volume)):
        raise DataError(f"{path}: the volume contains NaN or infinite values")
    peak = float(volume.max())
    if peak <= 0:
        raise DataError(f"{path}: the volume has no positive intensity (max {peak})")
    volume = np.ascontiguousarray(np.clip(volume / peak, 0.0, 1.0), dtype=np.float32)
    volume.setflags(write=False)  # cached: callers share it
    return volume, spacing


def load_colin27(path: str | os.PathLike | None = None
                 ) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read the Colin27 T1 brain volume (or another NIfTI volume), scaled to [0, 1].

    Intensities are divided by the volume's maximum (254 for Colin27), so the
    brightest voxel is 1 and the background 0: the scale of the seed paper's
    images, whose noise level of 10 % is relative to an image maximum of 1.
    Negative values (none in Colin27) are clipped to 0. The decoded volume is
    cached per file.

    Parameters
    ----------
    path : path, optional
        A NIfTI file (``.nii`` or ``.nii.gz``); by default ``LPD_BRAIN_MRI`` or
        `COLIN27_PATH` (``mricron-data``'s ``ch2.nii.gz``, read where it is
        installed and never copied).

    Returns
    -------
    volume : numpy.ndarray
        Read-only float32 array, shape ``(x, y, z)`` in RAS voxel order: axis 0
        runs left -> right, axis 1 posterior -> anterior, axis 2 inferior ->
        superior (Colin27: 181 x 217 x 181). A volume stored in another
        axis-aligned order is flipped / permuted to RAS.
    spacing : tuple of float
        Voxel size along the three axes in mm (Colin27: 1, 1, 1).

    Raises
    ------
    DataSourceMissing
        If the file or nibabel is not there (the message says how to install it).
    DataError
        If the file is not a readable 3-D NIfTI volume, its axes are oblique
        (a non-diagonal affine after reordering to RAS), or it has no positive
        or non-finite values.
    """
    path = brain_mri_path(path)
    return _read_volume(str(path), path.stat().st_mtime)


def split_slices(split: str) -> list[int]:
    """The axial z indices of ``split`` (`BRAIN_MRI_SPLITS`), in increasing order."""
    if split not in BRAIN_MRI_SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {tuple(BRAIN_MRI_SPLITS)}")
    return [z for lo, hi in BRAIN_MRI_SPLITS[split] for z in range(lo, hi)]


@functools.lru_cache(maxsize=8)
def _split_arrays(split: str, shape, min_pt, max_pt, path: str, mtime: float):
    volume, spacing = _read_volume(path, mtime)
    zs = split_slices(split)
    if zs[-1] >= volume.shape[2]:
        raise DataError(f"{path}: {volume.shape[2]} axial slices, but split {split!r} needs "
                        f"z up to {zs[-1]} (BRAIN_MRI_SPLITS are z indices of Colin27, "
                        "181 slices of 1 mm)")
    images = []
    for z in zs:
        # volume[:, :, z] is indexed [x, y]; resample_to_grid takes (rows, columns)
        # with columns along +x, here rows along +y: the transposed slice.
        plane = volume[:, :, z].T
        image = resample_to_grid(plane, (spacing[1], spacing[0]), shape, min_pt, max_pt,
                                 scale="physical", rows_up=True)
        image = np.clip(image, 0.0, None)
        # Each slice on its own maximum: the seed's noise level (10 %) is relative
        # to an image maximum of 1, and the slices' own maxima (scalp and orbital
        # fat) range from 0.65 to 0.92 of the volume's.
        peak = float(image.max())
        images.append(image / peak if peak > 0 else image)
    images = np.stack(images).astype(np.float32)
    images.setflags(write=False)  # cached: callers share it
    return images, [f"colin27:z={z}" for z in zs]


def brain_mri_slices(grid: Any = "brain_mri", split: str = "train", *,
                     path: str | os.PathLike | None = None) -> ImageSet:
    """Axial slices of the Colin27 brain MRI, on a set-up's grid.

    Slice ``z`` is ``volume[:, :, z]`` of `load_colin27` (x left -> right, y
    posterior -> anterior), centred on the grid's domain at its physical size
    (lengths taken as mm) and resampled by linear interpolation (after a
    Gaussian anti-aliasing filter when the grid is coarser than 1 mm: see
    `lpd.data.ct_units.resample_to_grid`). For the ``brain_mri`` set-ups the
    domain is the slice's own 181 x 217 mm; on a domain of another size the
    slice is cropped or padded with 0. ``plt.imshow(image.T, origin="lower")``
    shows the slice with anterior at the top and the subject's right on the
    right. Each slice is divided by its own maximum, so that its values span
    [0, 1] and the seed's noise level ("10 %", ``std=0.1``) is relative to the
    image maximum, as there. float32; the arrays are cached per split, grid and file.

    Parameters
    ----------
    grid : lpd.operators.Setup, ProblemConfig, str or tuple of int
        The target grid: a set-up, its config or name (default ``"brain_mri"``).
        A bare shape means a 256 mm field of view (`grid_of`).
    split : {"train", "validation", "test"}
        Which slices (`BRAIN_MRI_SPLITS`).
    path : path, optional
        The NIfTI volume instead of ``LPD_BRAIN_MRI`` / `COLIN27_PATH`.

    Returns
    -------
    ImageSet
        Named ``"brain_mri/<split>"``, slices labelled ``"colin27:z=K"``.

    Raises
    ------
    ValueError
        For an unknown split (the message lists them).
    DataSourceMissing
        If the volume or nibabel is not installed; the message says how to get it.
    DataError
        If the file is not a usable volume.
    """
    split_slices(split)  # the ValueError before any file is touched
    shape, min_pt, max_pt = grid_of(grid)
    file = brain_mri_path(path)
    images, labels = _split_arrays(split, tuple(shape), tuple(float(v) for v in min_pt),
                                   tuple(float(v) for v in max_pt), str(file),
                                   file.stat().st_mtime)
    return ImageSet(images.__getitem__, len(images), shape, labels, f"brain_mri/{split}")
