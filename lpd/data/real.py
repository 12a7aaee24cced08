"""Real CT data: units, resampling, the offline head CT and loaders for user data.

Three parts:

Units and resampling
    `hu_to_attenuation` converts Hounsfield units to attenuation relative to
    water; `resample_to_grid` puts a slice on a set-up's image grid.
Real human CT that installs offline
    The head CT of the Debian package ``invesalius-examples`` and the CT slices
    of ``pydicom-data``, converted to attenuation relative to water and
    resampled to a set-up's grid: `real_ct_slices`.
Loaders for data that users bring
    The Mayo Clinic / AAPM low-dose CT challenge tree (`mayo_slices`) and
    LoDoPaB-CT (`LoDoPaB`). `describe_sources` lists every source, what is
    installed and how to get what is missing.

Every loader returns an `lpd.datasets.ImageSet`, which the pipelines of
`lpd.datasets` (`lpd.datasets.training_pairs`, `lpd.datasets.fixed_set`,
`lpd.datasets.measured_pairs`) take like any other image source.

Units of real images: attenuation relative to water, ``x = (HU + 1000) / 1000``
clipped at 0, so air is 0, water 1, dense bone about 2 to 3. This is the paper's
"HU / 1000, treated as g/cm^3" shifted so that the image is a non-negative
attenuation, which the pre-log model ``exp(-mu * A x)`` with ``mu = 0.02`` per mm
(the attenuation of water) needs. Values below -1000 HU, including the padding
values below -1024 HU that scanners write outside the field of view, become 0.

Environment variables (all optional): ``LPD_HEAD_CT`` (path of ``Cranium.inv3``
when it is not where Debian installs it), ``LPD_MAYO_DIR`` and ``LPD_LODOPAB_DIR``
(directories that `describe_sources` reports on). See ``data/README.md``.

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
import re
import tarfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lpd.config import SETUPS, ProblemConfig
from lpd.data.pipelines import DataError, DataSourceMissing, ImageSet

__all__ = [
    "hu_to_attenuation",
    "resample_to_grid",
    "HEAD_CT_PATH",
    "HEAD_CT_SPLITS",
    "PYDICOM_CT_FILES",
    "REAL_CT_SPLITS",
    "load_inv3",
    "real_ct_slices",
    "MayoSlice",
    "scan_mayo",
    "mayo_slices",
    "LODOPAB_MU_MAX",
    "LoDoPaB",
    "lodopab_problem",
    "data_sources",
    "describe_sources",
    "grid_of",
    "read_dicom",
    "read_dicom_hu",
    "source_entry",
]


# ---------------------------------------------------------------------------
# Units and resampling of real CT
# ---------------------------------------------------------------------------

def hu_to_attenuation(hu) -> np.ndarray:
    """Convert Hounsfield units to attenuation relative to water, ``>= 0``.

    ``x = max(HU + 1000, 0) / 1000``: air 0, water 1, bone about 2 to 3. Padding
    values below -1024 HU (outside the scanner's field of view) become air.

    Raises
    ------
    DataError
        For NaN or infinite values.
    """
    hu = np.asarray(hu, dtype=np.float64)
    if not np.all(np.isfinite(hu)):
        raise DataError("CT values contain NaN or infinite values")
    return (np.maximum(hu + 1000.0, 0.0) / 1000.0).astype(np.float32)


def grid_of(grid) -> tuple[tuple[int, int], tuple[float, float], tuple[float, float]]:
    """(shape, min_pt, max_pt) of a set-up, config, set-up name or shape."""
    if isinstance(grid, str):
        from lpd.physics import operators

        grid = operators.as_config(grid)
    config = getattr(grid, "config", grid)
    if isinstance(config, ProblemConfig):
        return tuple(config.shape), tuple(config.min_pt), tuple(config.max_pt)
    shape = tuple(int(s) for s in grid)
    if len(shape) != 2:
        raise ValueError(f"expected a set-up, a set-up name or a shape (nx, ny), got {grid!r}")
    # A bare shape means the human experiment's 256 mm field of view.
    return shape, (-128.0, -128.0), (128.0, 128.0)


def resample_to_grid(image, pixel_spacing: tuple[float, float], shape: tuple[int, int],
                     min_pt: tuple[float, float] = (-128.0, -128.0),
                     max_pt: tuple[float, float] = (128.0, 128.0), *,
                     scale: Literal["physical", "pixels"] = "physical",
                     rows_up: bool = False) -> np.ndarray:
    """Resample a CT slice onto an ODL image grid.

    Parameters
    ----------
    image : array-like, shape (rows, columns)
        The slice as stored: columns along ``+x``, rows along ``-y`` (DICOM,
        as displayed) or ``+y`` (``rows_up``, VTK/InVesalius).
    pixel_spacing : tuple of float
        Distance between rows and between columns in mm (DICOM PixelSpacing order).
    shape, min_pt, max_pt
        The target grid; its lengths are taken as mm. The slice's centre is put
        at the centre of the domain.
    scale : {"physical", "pixels"}
        ``"physical"``: keep the physical size (parts outside the domain are
        cropped, the domain outside the slice is air, i.e. 0). ``"pixels"``:
        stretch the slice's pixel grid over the whole domain, as the original
        human experiment put 512 x 512 Mayo slices on its 256 mm grid.
    rows_up : bool
        Whether rows run along ``+y``.

    Returns
    -------
    numpy.ndarray
        float32 array of shape ``shape``, indexed like an ODL element
        (``[i, j]`` at ``(x_i, y_j)``). Linear interpolation, after a Gaussian
        anti-aliasing filter when the grid is coarser than the slice.
    """
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"expected a 2D slice, got shape {image.shape}")
    rows, cols = image.shape
    shape = tuple(int(s) for s in shape)
    cell = [(hi - lo) / n for lo, hi, n in zip(min_pt, max_pt, shape, strict=True)]
    centre = [(lo + hi) / 2 for lo, hi in zip(min_pt, max_pt, strict=True)]
    if scale == "physical":
        row_spacing, col_spacing = (float(s) for s in pixel_spacing)
    elif scale == "pixels":
        col_spacing = (max_pt[0] - min_pt[0]) / cols
        row_spacing = (max_pt[1] - min_pt[1]) / rows
    else:
        raise ValueError(f"scale must be 'physical' or 'pixels', got {scale!r}")
    if not (row_spacing > 0 and col_spacing > 0):
        raise DataError(f"pixel spacing must be > 0, got {pixel_spacing}")
    # Anti-aliasing as scikit-image does it: sigma = (factor - 1) / 2 pixels.
    sigma = (max(0.0, (cell[1] / row_spacing - 1) / 2), max(0.0, (cell[0] / col_spacing - 1) / 2))
    if max(sigma) > 0:
        image = ndimage.gaussian_filter(image, sigma, mode="constant", cval=0.0)
    x = min_pt[0] + (np.arange(shape[0]) + 0.5) * cell[0] - centre[0]
    y = min_pt[1] + (np.arange(shape[1]) + 0.5) * cell[1] - centre[1]
    col = x / col_spacing + (cols - 1) / 2
    row = (rows - 1) / 2 + (y / row_spacing if rows_up else -y / row_spacing)
    coords = np.stack(np.broadcast_arrays(row[None, :], col[:, None]))
    out = ndimage.map_coordinates(image, coords, order=1, mode="grid-constant", cval=0.0)
    return np.maximum(out, 0.0).astype(np.float32)


# ---------------------------------------------------------------------------
# Real human CT that installs offline
# ---------------------------------------------------------------------------

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


def _head_ct_path(path=None) -> Path:
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
    path = _head_ct_path(path)
    return _read_inv3(str(path), path.stat().st_mtime)


def _pydicom_path(name: str) -> str:
    try:
        from pydicom.data import get_testdata_file
    except ImportError as err:
        raise DataSourceMissing(f"pydicom is not installed: {_PYDICOM_HOW}") from err
    # download=False: nothing is fetched at run time.
    path = get_testdata_file(name, download=False)
    if path is None:
        raise DataSourceMissing(f"pydicom test file {name} not found: {_PYDICOM_HOW}")
    return str(path)


def _import_pydicom():
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError as err:
        raise DataSourceMissing("reading DICOM needs pydicom: pip install pydicom") from err
    return pydicom, InvalidDicomError


def read_dicom(path, expected_shape: tuple[int, int] | None, spacing: bool = True):
    """The dataset of a single-slice CT DICOM file, its header checked.

    ``spacing=False`` accepts a header without ``PixelSpacing``.
    """
    pydicom, InvalidDicomError = _import_pydicom()

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as err:
        raise DataError(f"{path}: not a readable DICOM file ({err})") from err
    _check_dicom_header(ds, path, expected_shape, spacing)
    return ds


def read_dicom_hu(path: str, expected_shape: tuple[int, int] | None = None,
                  spacing: bool = True):
    """(HU array, (row, col) spacing, dataset) of a single-slice CT DICOM file.

    With ``spacing=False`` a header without ``PixelSpacing`` is accepted and the
    spacing returned is ``None``.
    """
    ds = read_dicom(path, expected_shape, spacing)
    try:
        pixels = ds.pixel_array
    except Exception as err:  # decoders raise many types; all mean the same here
        raise DataError(
            f"{path}: cannot decode the pixel data ({err}); for compressed files install "
            "a decoder such as pillow or pylibjpeg-openjpeg"
        ) from err
    if pixels.ndim != 2:
        raise DataError(f"{path}: expected a single 2D slice, got pixel data of shape "
                        f"{pixels.shape}")
    hu = pixels.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    if not np.all(np.isfinite(hu)):
        raise DataError(f"{path}: CT values contain NaN or infinite values")
    pixel_spacing = tuple(float(s) for s in ds.PixelSpacing) if "PixelSpacing" in ds else None
    return hu, pixel_spacing, ds


def _check_dicom_header(ds, path, expected_shape, spacing: bool = True) -> None:
    required = ("Rows", "Columns", "PixelSpacing", "RescaleSlope", "RescaleIntercept")
    missing = [key for key in required if key not in ds
               and (spacing or key != "PixelSpacing")]
    if missing:
        raise DataError(f"{path}: missing DICOM attribute(s) {', '.join(missing)}")
    shape = (int(ds.Rows), int(ds.Columns))
    if expected_shape is not None and shape != tuple(expected_shape):
        raise DataError(f"{path}: slice of {shape[0]} x {shape[1]} pixels, expected "
                        f"{expected_shape[0]} x {expected_shape[1]}")
    pixel_spacing = [float(s) for s in ds.PixelSpacing] if "PixelSpacing" in ds else [1.0]
    numbers = [float(ds.RescaleSlope), float(ds.RescaleIntercept), *pixel_spacing]
    if not all(math.isfinite(v) for v in numbers):
        raise DataError(f"{path}: NaN or infinite rescale slope, intercept or pixel spacing")
    if float(ds.RescaleSlope) == 0 or min(pixel_spacing) <= 0:
        raise DataError(f"{path}: rescale slope must be non-zero and pixel spacing > 0")


@functools.lru_cache(maxsize=8)
def _real_ct_arrays(split: str, shape, min_pt, max_pt, scale: str, names: tuple[str, ...],
                    head_path: str | None):
    grid = dict(shape=shape, min_pt=min_pt, max_pt=max_pt, scale=scale)
    if split == "other_patients":
        images, labels = [], []
        for name in names:
            path = _pydicom_path(name)
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
    head = None if head_ct is None else str(_head_ct_path(head_ct))
    images, labels = _real_ct_arrays(split, shape, min_pt, max_pt, scale, tuple(names), head)
    name = "pydicom_ct" if split == "other_patients" else f"head_ct/{split}"
    return ImageSet(images.__getitem__, len(images), shape, labels, name)


# ---------------------------------------------------------------------------
# Mayo Clinic / AAPM low-dose CT challenge
# ---------------------------------------------------------------------------

_MAYO_HOW = (
    "the AAPM/Mayo Clinic Low Dose CT Grand Challenge data (one folder per patient, "
    "L067 ... L506, each with full_1mm, quarter_1mm, full_3mm, quarter_3mm) are "
    "distributed by the AAPM and Mayo Clinic under a data-use agreement "
    "(https://www.aapm.org/grandchallenge/lowdosect/); see data/README.md"
)
_DICOM_SUFFIXES = (".ima", ".dcm")


@dataclass(frozen=True)
class MayoSlice:
    """One slice of the Mayo/AAPM tree, as `scan_mayo` found it."""

    patient: str
    path: str
    z: float
    pixel_spacing: tuple[float, float]


def _report(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def _check_directory(directory, how: str) -> Path:
    if directory is None:
        raise DataSourceMissing(f"no directory given: {how}")
    directory = Path(directory)
    if not directory.exists():
        raise DataSourceMissing(f"directory {directory} does not exist: {how}")
    if not directory.is_dir():
        raise DataError(f"{directory} is not a directory")
    return directory


def _scan_mayo_file(path: Path, expected_shape):
    pydicom, _ = _import_pydicom()
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
        _report(message)
    return slices


def _scan_mayo(directory, dose, thickness, patients, exclude_patients, expected_shape,
               skip_bad) -> tuple[list[MayoSlice], list[str]]:
    directory = _check_directory(directory, _MAYO_HOW)
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
        raise DataError(f"{directory}: no patient folders; expected {_MAYO_HOW}")
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
                       if p.is_file() and p.suffix.lower() in _DICOM_SUFFIXES)
        if not files:
            message = f"{series_dir}: no DICOM files (*.IMA, *.dcm)"
            if skip_bad:
                skipped.append(f"skipped: {message}")
                continue
            raise DataError(message)
        slices = []
        for path in files:
            try:
                z, spacing = _scan_mayo_file(path, expected_shape)
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
        _report(message)
    shape, min_pt, max_pt = grid_of(grid)

    def load(i):
        item = slices[i]
        hu, spacing, _ = read_dicom_hu(item.path, expected_shape)
        return resample_to_grid(hu_to_attenuation(hu), spacing, shape, min_pt, max_pt,
                                scale=scale)

    labels = [f"{s.patient}:{s.path}" for s in slices]
    return ImageSet(load, len(slices), shape, labels, f"mayo/{dose}_{thickness}", skipped)


# ---------------------------------------------------------------------------
# LoDoPaB-CT
# ---------------------------------------------------------------------------

LODOPAB_MU_MAX = SETUPS["lodopab"].noise.mu
"""Attenuation (per m) that LoDoPaB-CT's ground truth divides by (3071 HU)."""

_LODOPAB_SHAPES = {"ground_truth": (362, 362), "observation": (1000, 513)}
_LODOPAB_COUNTS = {"train": 35820, "validation": 3522, "test": 3553}
_LODOPAB_HOW = (
    "download LoDoPaB-CT from Zenodo (https://zenodo.org/record/3384092: "
    "ground_truth_{train,validation,test}.zip and observation_*.zip) and unzip all "
    "into one directory; see data/README.md"
)


def lodopab_problem() -> ProblemConfig:
    """The problem of LoDoPaB-CT: ``lpd.operators.SETUPS["lodopab"]``.

    362 x 362 pixels on ``[-0.13, 0.13]^2`` m, parallel beam, 1000 angles on
    ``[0, pi)``, 513 detector pixels (ODL's ``parallel_beam_geometry``), pre-log
    Poisson noise of 4096 photons with ``mu = LODOPAB_MU_MAX`` per m on the
    ground truth as stored (``units="native"``). Its observations are post-log:
    ``PoissonNoise.post_log`` of this model, except that LoDoPaB clamps zero
    counts at 0.1 photons, not 1.

    References
    ----------
    Leuschner J, Schmidt M, Otero Baguer D, Maass P. LoDoPaB-CT, a benchmark
    dataset for low-dose computed tomography reconstruction. Sci. Data 8, 2021.
    """
    return SETUPS["lodopab"]


class LoDoPaB:
    """The files of one part of LoDoPaB-CT, checked and indexed.

    Reads ``ground_truth_<part>_NNN.hdf5`` (and ``observation_<part>_NNN.hdf5``
    where present), each with one dataset ``data`` of ``samples_per_file``
    samples, the last file shorter: ground truth ``(n, 362, 362)`` in ``[0, 1]``
    (attenuation / `LODOPAB_MU_MAX` per m), observations ``(n, 1000, 513)``
    post-log. Files are opened when the object is made (structure and shapes
    checked); values are checked when read.

    Parameters
    ----------
    directory : path
        Directory holding the unzipped ``.hdf5`` files.
    part : {"train", "validation", "test"}
        Which part.
    samples_per_file : int
        Samples in every file but the last (128 in LoDoPaB-CT).
    skip_bad : bool
        Report (as a warning) and skip unreadable or malformed files
        instead of raising.
    check_values : bool
        Read every file now and check for NaN (slow for the training part).

    Attributes
    ----------
    has_observations : bool
        Whether observation files were found for every ground-truth file.
    skipped : list of str
        Files left out by ``skip_bad``, with the reason.

    References
    ----------
    Leuschner J et al. LoDoPaB-CT, a benchmark dataset for low-dose computed
    tomography reconstruction. Sci. Data 8, 2021.
    """

    def __init__(self, directory: str | os.PathLike, part: str = "train", *,
                 samples_per_file: int = 128, skip_bad: bool = False,
                 check_values: bool = False):
        try:
            import h5py  # noqa: F401
        except ImportError as err:
            raise DataSourceMissing("reading LoDoPaB-CT needs h5py: pip install h5py") from err
        if part not in _LODOPAB_COUNTS:
            raise ValueError(f"part must be one of {', '.join(_LODOPAB_COUNTS)}, got {part!r}")
        self.directory = _check_directory(directory, _LODOPAB_HOW)
        self.part = part
        self.samples_per_file = int(samples_per_file)
        self.skipped: list[str] = []
        pattern = re.compile(rf"ground_truth_{part}_(\d{{3}})\.hdf5$")
        numbered = sorted((int(m.group(1)), p) for p in self.directory.iterdir()
                          if (m := pattern.match(p.name)))
        if not numbered:
            raise DataError(f"{self.directory}: no ground_truth_{part}_NNN.hdf5 files; "
                            f"{_LODOPAB_HOW}")
        numbers = [n for n, _ in numbered]
        gaps = sorted(set(range(numbers[-1] + 1)) - set(numbers))
        if gaps and not skip_bad:
            raise DataError(f"{self.directory}: missing ground_truth_{part}_"
                            f"{gaps[0]:03d}.hdf5 (files must be numbered from 000 on)")
        last = numbers[-1]
        self._files: list[tuple[Path, Path | None, int]] = []
        for number, gt_path in numbered:
            obs_path = self.directory / f"observation_{part}_{number:03d}.hdf5"
            try:
                count = self._check_file(gt_path, "ground_truth", number == last,
                                         check_values)
                if obs_path.exists():
                    obs_count = self._check_file(obs_path, "observation", number == last,
                                                 check_values)
                    if obs_count != count:
                        raise DataError(f"{obs_path}: {obs_count} samples but "
                                        f"{gt_path.name} has {count}")
                else:
                    obs_path = None
            except DataError as err:
                if not skip_bad:
                    raise
                self.skipped.append(f"skipped: {err}")
                _report(f"skipped: {err}")
                continue
            self._files.append((gt_path, obs_path, count))
        if not self._files:
            raise DataError(f"{self.directory}: no usable LoDoPaB-CT {part} files")
        self.has_observations = all(obs is not None for _, obs, _ in self._files)
        self._offsets = np.cumsum([0] + [count for _, _, count in self._files])

    def _check_file(self, path: Path, kind: str, is_last: bool, check_values: bool) -> int:
        import h5py

        try:
            with h5py.File(path, "r") as f:
                if "data" not in f:
                    raise DataError(f"{path}: no dataset 'data'")
                data = f["data"]
                shape = tuple(data.shape)
                if len(shape) != 3 or shape[1:] != _LODOPAB_SHAPES[kind]:
                    raise DataError(f"{path}: dataset 'data' of shape {shape}, expected "
                                    f"(n, {', '.join(map(str, _LODOPAB_SHAPES[kind]))})")
                if not (1 <= shape[0] <= self.samples_per_file) or (
                        not is_last and shape[0] != self.samples_per_file):
                    raise DataError(f"{path}: {shape[0]} samples, expected "
                                    f"{self.samples_per_file} (fewer only in the last file)")
                if check_values and not np.all(np.isfinite(data[()])):
                    raise DataError(f"{path}: data contain NaN or infinite values")
        except OSError as err:
            raise DataError(f"{path}: not a readable HDF5 file ({err})") from err
        return shape[0]

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _locate(self, index: int) -> tuple[int, int]:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        file = int(np.searchsorted(self._offsets, index, side="right")) - 1
        return file, index - int(self._offsets[file])

    def _read(self, path: Path, local: int) -> np.ndarray:
        import h5py

        try:
            with h5py.File(path, "r") as f:
                sample = np.asarray(f["data"][local], dtype=np.float32)
        except OSError as err:
            raise DataError(f"{path}: cannot read sample {local} ({err})") from err
        if not np.all(np.isfinite(sample)):
            raise DataError(f"{path}: sample {local} contains NaN or infinite values")
        return sample

    def ground_truth_sample(self, index: int) -> np.ndarray:
        """Ground truth ``index`` as stored: float32 ``(362, 362)`` in ``[0, 1]``.

        LoDoPaB stores images as ODL elements of `lodopab_problem`'s space (its
        observations are the ray transform of the arrays as stored).
        """
        file, local = self._locate(index)
        return self._read(self._files[file][0], local)

    def observation(self, index: int) -> np.ndarray:
        """Observation ``index``: float32 ``(1000, 513)`` post-log sinogram."""
        file, local = self._locate(index)
        path = self._files[file][1]
        if path is None:
            raise DataSourceMissing(
                f"{self.directory}: no observation_{self.part}_NNN.hdf5 files; {_LODOPAB_HOW}")
        return self._read(path, local)

    def pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(observation, ground truth)`` of sample ``index`` (for `measured_pairs`).

        """
        return self.observation(index), self.ground_truth_sample(index)

    def ground_truth(self, grid: Any = None, *, units: Literal["native", "attenuation"] =
                     "native", scale: Literal["physical", "pixels"] = "physical") -> ImageSet:
        """The ground truth as an image source.

        Parameters
        ----------
        grid : optional
            ``None`` keeps LoDoPaB's own 362 x 362 grid (`lodopab_problem`).
            Otherwise a target grid as in `real_ct_slices` (lengths in mm; the
            images cover 260 mm).
        units : {"native", "attenuation"}
            ``"native"``: as stored. ``"attenuation"``: relative to water, as
            `hu_to_attenuation` gives (LoDoPaB's mu_water is 20 per m, air 0.02).
        scale : {"physical", "pixels"}
            See `resample_to_grid`.

        Returns
        -------
        ImageSet
            Images indexed like ODL elements, labelled ``"<file>[<sample>]"``.
        """
        if units not in ("native", "attenuation"):
            raise ValueError(f"units must be 'native' or 'attenuation', got {units!r}")
        target = None if grid is None else grid_of(grid)

        def load(i):
            image = self.ground_truth_sample(i)
            if units == "attenuation":
                mu = image.astype(np.float64) * LODOPAB_MU_MAX
                image = np.maximum((mu - 0.02) / (20.0 - 0.02), 0.0).astype(np.float32)
            if target is None:
                return image
            shape, min_pt, max_pt = target
            spacing = 260.0 / 362
            # Stored (x, y): its transpose has rows along +y.
            return resample_to_grid(image.T, (spacing, spacing), shape, min_pt, max_pt,
                                    scale=scale, rows_up=True)

        labels = []
        for path, _, count in self._files:
            labels.extend(f"{path.name}[{k}]" for k in range(count))
        shape = (362, 362) if target is None else target[0]
        return ImageSet(load, len(self), shape, labels, f"lodopab/{self.part}", self.skipped)

    def __repr__(self) -> str:
        return f"LoDoPaB({str(self.directory)!r}, part={self.part!r}, {len(self)} samples)"


# ---------------------------------------------------------------------------
# What is installed
# ---------------------------------------------------------------------------

def source_entry(name, kind, available, summary, location="", how=""):
    return {"name": name, "kind": kind, "available": bool(available), "summary": summary,
            "location": location, "how_to_get": how}


def data_sources(mayo_dir: str | os.PathLike | None = None,
                 lodopab_dir: str | os.PathLike | None = None) -> list[dict]:
    """Every data source lpd knows, with what is installed and how to get the rest.

    Cheap: files are listed and headers read, pixel data are not decoded.

    Parameters
    ----------
    mayo_dir, lodopab_dir : path, optional
        Where the user keeps these data sets; by default the environment
        variables ``LPD_MAYO_DIR`` and ``LPD_LODOPAB_DIR``.

    Returns
    -------
    list of dict
        One per source: ``name``, ``kind`` (``"generated"``, ``"installed"`` or
        ``"user"``), ``available``, ``summary`` (counts and shapes),
        ``location`` and ``how_to_get``.
    """
    out = [
        source_entry("ellipses", "generated", True,
                "random ellipse phantoms of the paper's training set, any grid "
                "(Poisson(50) ellipses)"),
        source_entry("rectangles", "generated", True,
                "random rotated rectangles with the ellipses' statistics (generalisation tests)"),
        source_entry("shepp_logan", "generated", True, "modified Shepp-Logan phantom, any grid"),
    ]
    try:
        path = _head_ct_path()
        volume, spacing = load_inv3(path)
        counts = ", ".join(f"{split} {sum(hi - lo for lo, hi in blocks)}"
                           for split, blocks in HEAD_CT_SPLITS.items())
        out.append(source_entry(
            "head_ct", "installed", True,
            f"{volume.shape[0]} slices of {volume.shape[1]} x {volume.shape[2]} HU, "
            f"{spacing[0]:.3g} mm pixels, {spacing[2]:.3g} mm apart; splits: {counts}",
            str(path)))
    except DataError as err:
        out.append(source_entry("head_ct", "installed", False, "real head CT (invesalius-examples)",
                           "", str(err)))
    found, problems, shapes = [], [], []
    for name in PYDICOM_CT_FILES:
        try:
            import pydicom

            path = _pydicom_path(name)
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            found.append(name)
            shapes.append(f"{ds.Rows} x {ds.Columns}")
        except (DataError, ImportError, OSError, ValueError) as err:
            problems.append(str(err))
    out.append(source_entry(
        "pydicom_ct", "installed", len(found) == len(PYDICOM_CT_FILES),
        f"{len(found)} of {len(PYDICOM_CT_FILES)} CT slices of other patients "
        f"({', '.join(f'{n} {s}' for n, s in zip(found, shapes, strict=True))}): "
        "split 'other_patients'",
        "pydicom / pydicom-data packages", "; ".join(problems) or ""))

    mayo_dir = mayo_dir or os.environ.get("LPD_MAYO_DIR")
    if mayo_dir and Path(mayo_dir).is_dir():
        out.append(_mayo_source(Path(mayo_dir)))
    else:
        out.append(source_entry("mayo", "user", False,
                           "Mayo/AAPM low-dose CT challenge (the paper's human data)",
                           str(mayo_dir or ""),
                           f"set LPD_MAYO_DIR or pass the directory; {_MAYO_HOW}"))

    lodopab_dir = lodopab_dir or os.environ.get("LPD_LODOPAB_DIR")
    if lodopab_dir and Path(lodopab_dir).is_dir():
        parts = []
        for part, expected in _LODOPAB_COUNTS.items():
            gt = len(list(Path(lodopab_dir).glob(f"ground_truth_{part}_*.hdf5")))
            obs = len(list(Path(lodopab_dir).glob(f"observation_{part}_*.hdf5")))
            parts.append(f"{part}: {gt} ground-truth / {obs} observation files "
                         f"(complete: {math.ceil(expected / 128)} files, {expected} samples)")
        have = any(Path(lodopab_dir).glob("ground_truth_*_*.hdf5"))
        out.append(source_entry("lodopab", "user", have,
                           "; ".join(parts) + "; ground truth 362 x 362, observations "
                           "1000 x 513", str(lodopab_dir), "" if have else _LODOPAB_HOW))
    else:
        out.append(source_entry("lodopab", "user", False,
                           "LoDoPaB-CT (35 820 / 3 522 / 3 553 slices, 362 x 362)",
                           str(lodopab_dir or ""),
                           f"set LPD_LODOPAB_DIR or pass the directory; {_LODOPAB_HOW}"))
    from lpd.data import packaged_ct  # it builds on this module

    out[5:5] = packaged_ct.describe()  # after the head CT and the pydicom slices
    return out


def _mayo_source(root: Path) -> dict:
    """The Mayo entry of `data_sources`: what was read, not only what is named like it.

    Counts the DICOM files of each series and reads the first file of each
    (its header and pixel-data size), so that a tree of files that are not CT
    slices is reported as unreadable, with the reason.
    """
    patients = sorted(p.name for p in root.iterdir() if p.is_dir())
    counts, shapes, problems = [], set(), []
    readable = 0
    for series in ("full_3mm", "quarter_3mm", "full_1mm", "quarter_1mm"):
        n = 0
        for patient in patients:
            files = sorted(f for f in (root / patient / series).rglob("*")
                           if f.is_file() and f.suffix.lower() in _DICOM_SUFFIXES)
            n += len(files)
            if files:
                try:
                    _scan_mayo_file(files[0], None)
                    ds = read_dicom(str(files[0]), None)
                    shapes.add(f"{int(ds.Rows)} x {int(ds.Columns)}")
                    readable += len(files)
                except DataError as err:
                    problems.append(str(err))
        counts.append(f"{series} {n}")
    available = bool(patients) and readable > 0
    summary = (f"{len(patients)} patients ({', '.join(patients[:12])}"
               f"{' ...' if len(patients) > 12 else ''}); files: {', '.join(counts)}")
    if shapes:
        summary += f"; {', '.join(sorted(shapes))}"
    if problems:
        summary += (f"; unreadable: {'; '.join(problems[:3])}"
                    f"{f' (and {len(problems) - 3} more)' if len(problems) > 3 else ''}")
    return source_entry("mayo", "user", available, summary, str(root),
                   "" if available else _MAYO_HOW)


def describe_sources(mayo_dir: str | os.PathLike | None = None,
                     lodopab_dir: str | os.PathLike | None = None) -> str:
    """A readable table of `data_sources` (what ``lpd datasets`` prints)."""
    lines = ["Data sources of lpd (see data/README.md)", ""]
    for source in data_sources(mayo_dir, lodopab_dir):
        status = {"generated": "generated", "installed": "installed",
                  "user": "found"}[source["kind"]]
        if not source["available"]:
            status = "MISSING" if source["kind"] != "user" else "not found"
        lines.append(f"{source['name']:<12} {status:<10} {source['summary']}")
        if source["location"]:
            lines.append(f"{'':<12} {'':<10} at {source['location']}")
        if source["how_to_get"]:
            lines.append(f"{'':<12} {'':<10} to get it: {source['how_to_get']}")
    return "\n".join(lines)
