"""Units, grids and DICOM reading shared by every real-CT source.

`hu_to_attenuation` converts Hounsfield units to attenuation relative to water;
`grid_of` and `resample_to_grid` put a slice on a set-up's image grid;
`read_dicom` and `read_dicom_hu` read single-slice CT DICOM files, their headers
checked. Also the small helpers that the sources share: `import_pydicom`,
`check_directory`, `report` (of skipped files) and `source_entry` (an entry of
`lpd.data.catalogue.data_sources`, here so that every source can make its own).

Units of real images: attenuation relative to water, ``x = (HU + 1000) / 1000``
clipped at 0, so air is 0, water 1, dense bone about 2 to 3. This is the paper's
"HU / 1000, treated as g/cm^3" (Adler & Öktem, Learned Primal-Dual Reconstruction,
IEEE TMI 2018, arXiv:1707.06474, section IV-B) shifted so that the image is a
non-negative attenuation, which the pre-log model ``exp(-mu * A x)`` with
``mu = 0.02`` per mm (the attenuation of water) needs. Values below -1000 HU,
including the padding values below -1024 HU that scanners write outside the field
of view, become 0.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Literal

import numpy as np

from lpd.config import ProblemConfig
from lpd.data.pipelines import DataError, DataSourceMissing

__all__ = ["hu_to_attenuation", "grid_of", "resample_to_grid", "import_pydicom", "read_dicom",
           "read_dicom_hu", "check_directory", "report", "source_entry"]


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


def import_pydicom():
    """``(pydicom, InvalidDicomError)``, or `DataSourceMissing` saying how to install it."""
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
    pydicom, InvalidDicomError = import_pydicom()

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


def report(message: str) -> None:
    """Warn of ``message`` (a skipped file) at the caller of the loader that skipped it."""
    warnings.warn(message, stacklevel=3)


def check_directory(directory, how: str) -> Path:
    """``directory`` as a Path, checked to exist and be a directory (``how``: how to get it)."""
    if directory is None:
        raise DataSourceMissing(f"no directory given: {how}")
    directory = Path(directory)
    if not directory.exists():
        raise DataSourceMissing(f"directory {directory} does not exist: {how}")
    if not directory.is_dir():
        raise DataError(f"{directory} is not a directory")
    return directory


def source_entry(name, kind, available, summary, location="", how=""):
    """One entry of `lpd.data.catalogue.data_sources` (see there for the keys)."""
    return {"name": name, "kind": kind, "available": bool(available), "summary": summary,
            "location": location, "how_to_get": how}
