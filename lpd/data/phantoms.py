"""Synthetic images: random ellipses, Shepp-Logan, random rectangles.

Every image is a float32 array indexed exactly like an ODL element on the
set-up's grid: axis 0 is the first coordinate ``x``, axis 1 the second
coordinate ``y``, and entry ``[i, j]`` is the value at the centre of pixel
``(i, j)``. ``shepp_logan(space.shape)`` therefore equals
``odl.phantom.shepp_logan(space, modified=True).data``, and an image is shown the
usual way up with ``imshow(image.T, origin="lower")``.

Shapes are given in coordinates normalised as ODL's ``ellipsoid_phantom`` does:
the centres of the first and last pixel along an axis are at ``-1`` and ``1``.

Parameter arrays have one row per shape with the columns ::

    value, half_axis_1, half_axis_2, centre_x, centre_y, rotation

(ODL's ellipse convention: the value is added inside the shape, the half-axes
are along ``x`` and ``y`` before the counter-clockwise rotation by ``rotation``
radians about the centre).

This module needs numpy only; random draws come from a `numpy.random.Generator`
that the caller passes in, never from global state.

References
----------
Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 37(6), 2018,
arXiv:1707.06474, section IV-A (the random ellipse training set).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = [
    "PHANTOMS",
    "random_ellipse_params",
    "random_ellipses",
    "random_rectangles",
    "ellipses_to_image",
    "rectangles_to_image",
    "shepp_logan_params",
    "shepp_logan",
    "random_phantom",
]

# The ten ellipses of the Shepp-Logan phantom in ODL's convention (Shepp and
# Logan 1974, with ODL's axis order), and the intensities of the modified
# phantom (Toft 1996) that gives the contrast the paper evaluates on.
_SHEPP_LOGAN = np.array([
    # value  axis_1  axis_2  centre_x centre_y  rotation (degrees)
    [2.00, 0.6900, 0.9200, 0.0000, 0.0000, 0.0],
    [-.98, 0.6624, 0.8740, 0.0000, -.0184, 0.0],
    [-.02, 0.1100, 0.3100, 0.2200, 0.0000, -18.0],
    [-.02, 0.1600, 0.4100, -.2200, 0.0000, 18.0],
    [0.01, 0.2100, 0.2500, 0.0000, 0.3500, 0.0],
    [0.01, 0.0460, 0.0460, 0.0000, 0.1000, 0.0],
    [0.01, 0.0460, 0.0460, 0.0000, -.1000, 0.0],
    [0.01, 0.0460, 0.0230, -.0800, -.6050, 0.0],
    [0.01, 0.0230, 0.0230, 0.0000, -.6060, 0.0],
    [0.01, 0.0230, 0.0460, 0.0600, -.6050, 0.0],
])
# ODL adds 5e-17 to the two -0.2 ellipses so that rounding never makes the
# phantom negative; kept so that the images agree bit for bit.
_MODIFIED_VALUES = np.array([1.0, -0.8, -0.2 + 5e-17, -0.2 + 5e-17, 0.1, 0.1, 0.1, 0.1,
                             0.1, 0.1])


def random_ellipse_params(rng: np.random.Generator, mean_count: float = 50.0) -> np.ndarray:
    """Draw the ellipses of one random phantom of the paper's training set.

    The number of ellipses is Poisson(``mean_count``). Each ellipse has the value
    ``(U(0, 1) - 0.5) * E`` with ``E`` exponential of scale (mean) 0.4, two
    half-axes ``0.2 * Exp(1)`` each, a centre uniform in ``[-1, 1]^2`` and a
    rotation uniform in ``[0, 2 pi)``, as in the original code
    (``np.random.exponential(0.4)`` there takes the scale, not the rate).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    mean_count : float
        Mean number of ellipses.

    Returns
    -------
    numpy.ndarray
        Array of shape ``(n, 6)``, float64: value, half-axis 1, half-axis 2,
        centre x, centre y, rotation (see the module docstring).

    References
    ----------
    Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 2018,
    arXiv:1707.06474, section IV-A.
    """
    n = int(rng.poisson(mean_count))
    params = np.empty((n, 6))
    params[:, 0] = (rng.random(n) - 0.5) * rng.exponential(0.4, n)
    params[:, 1] = 0.2 * rng.exponential(1.0, n)
    params[:, 2] = 0.2 * rng.exponential(1.0, n)
    params[:, 3] = rng.uniform(-1.0, 1.0, n)
    params[:, 4] = rng.uniform(-1.0, 1.0, n)
    params[:, 5] = rng.uniform(0.0, 2 * np.pi, n)
    return params


def _normalised_grid(n: int) -> np.ndarray:
    # Written as ODL computes it, so that boundary pixels round the same way.
    if n == 1:
        return np.zeros(1)
    return (np.arange(n) - (n - 1) / 2) / ((n - 1) / 2)


def _check_shape(shape) -> tuple[int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be two positive integers, got {shape}")
    return shape


def _check_params(params) -> np.ndarray:
    params = np.asarray(params, dtype=np.float64)
    if params.ndim != 2 or params.shape[1] != 6:
        raise ValueError(f"expected shape parameters of shape (n, 6), got {params.shape}")
    if not np.all(np.isfinite(params)):
        raise ValueError("shape parameters contain NaN or infinite values")
    if np.any(params[:, 1:3] <= 0):
        raise ValueError("half-axes must be > 0")
    return params


def _rasterise(params, shape, form: str) -> np.ndarray:
    shape = _check_shape(shape)
    params = _check_params(params)
    x = _normalised_grid(shape[0])
    y = _normalised_grid(shape[1])
    image = np.zeros(shape, dtype=np.float32)
    if len(params) == 0:
        return image
    value, a, b, x0, y0, theta = params.T
    cos, sin = np.cos(theta), np.sin(theta)
    if form == "ellipse":
        half_x = np.sqrt((a * cos) ** 2 + (b * sin) ** 2)
        half_y = np.sqrt((a * sin) ** 2 + (b * cos) ** 2)
    else:
        half_x = a * np.abs(cos) + b * np.abs(sin)
        half_y = a * np.abs(sin) + b * np.abs(cos)
    # Index ranges of the bounding boxes, one pixel wider on each side so that
    # rounding can only add candidates; the exact test below decides.
    step_x = 2.0 / max(shape[0] - 1, 1)
    step_y = 2.0 / max(shape[1] - 1, 1)
    i0 = np.clip(np.floor((x0 - half_x + 1) / step_x) - 1, 0, shape[0]).astype(int)
    i1 = np.clip(np.ceil((x0 + half_x + 1) / step_x) + 2, 0, shape[0]).astype(int)
    j0 = np.clip(np.floor((y0 - half_y + 1) / step_y) - 1, 0, shape[1]).astype(int)
    j1 = np.clip(np.ceil((y0 + half_y + 1) / step_y) + 2, 0, shape[1]).astype(int)
    inv_a2, inv_b2 = 1 / a**2, 1 / b**2
    values = value.astype(np.float32)
    # One small box per shape: ~50 boxes of ~30x30 pixels are far cheaper than
    # evaluating every shape on the whole grid.
    for k in np.flatnonzero((i0 < i1) & (j0 < j1)):
        dx = x[i0[k]:i1[k], None] - x0[k]
        dy = y[None, j0[k]:j1[k]] - y0[k]
        u = cos[k] * dx + sin[k] * dy
        v = cos[k] * dy - sin[k] * dx
        if form == "ellipse":
            inside = u * u * inv_a2[k] + v * v * inv_b2[k] <= 1
        else:
            inside = (np.abs(u) <= a[k]) & (np.abs(v) <= b[k])
        image[i0[k]:i1[k], j0[k]:j1[k]][inside] += values[k]
    return image


def ellipses_to_image(params, shape: tuple[int, int] = (128, 128)) -> np.ndarray:
    """Rasterise ellipses: each adds its value at the pixel centres inside it.

    Parameters
    ----------
    params : array-like, shape (n, 6)
        Rows ``value, half_axis_1, half_axis_2, centre_x, centre_y, rotation`` in
        normalised coordinates (see the module docstring).
    shape : tuple of int
        Number of pixels ``(nx, ny)``.

    Returns
    -------
    numpy.ndarray
        float32 image of shape ``shape``, indexed like an ODL element.

    Raises
    ------
    ValueError
        For parameters of the wrong shape, non-finite values or half-axes <= 0.
    """
    return _rasterise(params, shape, "ellipse")


def rectangles_to_image(params, shape: tuple[int, int] = (128, 128)) -> np.ndarray:
    """Rasterise rotated rectangles; the parameters are read as for ellipses.

    A rectangle has half-widths ``half_axis_1`` and ``half_axis_2`` and is
    rotated by ``rotation`` about its centre.

    Parameters
    ----------
    params : array-like, shape (n, 6)
        Rows ``value, half_width_1, half_width_2, centre_x, centre_y, rotation``.
    shape : tuple of int
        Number of pixels ``(nx, ny)``.

    Returns
    -------
    numpy.ndarray
        float32 image of shape ``shape``.
    """
    return _rasterise(params, shape, "rectangle")


def random_ellipses(rng: np.random.Generator, shape: tuple[int, int] = (128, 128),
                    mean_count: float = 50.0) -> np.ndarray:
    """A random phantom of the paper's ellipse training set.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    shape : tuple of int
        Number of pixels ``(nx, ny)``; the ellipses scale with the grid.
    mean_count : float
        Mean number of ellipses (50 in the paper).

    Returns
    -------
    numpy.ndarray
        float32 image of shape ``shape``.

    See Also
    --------
    random_ellipse_params : the distribution of the ellipses.

    References
    ----------
    Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 2018,
    arXiv:1707.06474, section IV-A.

    Examples
    --------
    >>> image = random_ellipses(np.random.default_rng(0))
    >>> image.shape, image.dtype
    ((128, 128), dtype('float32'))
    """
    return ellipses_to_image(random_ellipse_params(rng, mean_count), shape)


def random_rectangles(rng: np.random.Generator, shape: tuple[int, int] = (128, 128),
                      mean_count: float = 50.0) -> np.ndarray:
    """A random phantom of rotated rectangles, for tests of generalisation.

    Same distribution of values, sizes, centres and rotations as
    `random_ellipses` (the original code offered this form beside ellipses),
    but with corners and straight edges, which the ellipse training set never shows.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    shape : tuple of int
        Number of pixels ``(nx, ny)``.
    mean_count : float
        Mean number of rectangles.

    Returns
    -------
    numpy.ndarray
        float32 image of shape ``shape``.
    """
    return rectangles_to_image(random_ellipse_params(rng, mean_count), shape)


def shepp_logan_params(modified: bool = True) -> np.ndarray:
    """The ellipses of the (modified) Shepp-Logan phantom, shape ``(10, 6)``.

    Rotations are in radians, values those of the modified phantom (Toft) when
    ``modified`` is set, otherwise the original ones.
    """
    params = _SHEPP_LOGAN.copy()
    params[:, 5] = np.deg2rad(params[:, 5])
    if modified:
        params[:, 0] = _MODIFIED_VALUES
    return params


def shepp_logan(shape: tuple[int, int] = (128, 128), modified: bool = True) -> np.ndarray:
    """The Shepp-Logan phantom, equal to ODL's on a grid of the same shape.

    Parameters
    ----------
    shape : tuple of int
        Number of pixels ``(nx, ny)``.
    modified : bool
        The modified phantom (values in ``[0, 1]``, the one the paper evaluates
        on) instead of the original low-contrast one.

    Returns
    -------
    numpy.ndarray
        float32 image, equal to ``odl.phantom.shepp_logan(space, modified).data``
        for any space of this shape.

    References
    ----------
    Shepp LA, Logan BF. The Fourier reconstruction of a head section. IEEE
    Trans. Nucl. Sci. 21(3), 1974. Toft P. The Radon Transform: Theory and
    Implementation. PhD thesis, DTU, 1996 (the modified intensities).
    """
    return ellipses_to_image(shepp_logan_params(modified), shape)


PHANTOMS: dict[str, Callable[..., np.ndarray]] = {
    "ellipses": random_ellipses,
    "rectangles": random_rectangles,
}
"""Random phantom families by name: ``f(rng, shape) -> image``."""


def random_phantom(kind: str, rng: np.random.Generator,
                   shape: tuple[int, int] = (128, 128)) -> np.ndarray:
    """A random phantom of the family ``kind`` (a key of `PHANTOMS`).

    Raises
    ------
    ValueError
        For an unknown family.
    """
    try:
        family = PHANTOMS[kind]
    except KeyError:
        raise ValueError(
            f"unknown phantom family {kind!r}; known: {', '.join(PHANTOMS)}"
        ) from None
    return family(rng, shape)
