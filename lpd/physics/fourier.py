"""MRI: the unitary 2D Fourier transform of a real image on a sampling mask of k-space.

The forward model of partial-Fourier MRI is ``y = K F x``: ``F`` the unitary
discrete Fourier transform of the image (numpy's ``norm="ortho"``, so
``||F x|| = ||x||``), centred so that the zero frequency sits in the middle of
the grid, and ``K`` the sampling mask. The complex data are carried as real
arrays, the real part stacked above the imaginary part: for an image of shape
``(nx, ny)`` the data have shape ``(2 nx, ny)``, ``y.reshape(2, nx, ny)`` gives
the two parts, and the coefficients that are not measured are exact zeros
(the data keep k-space's layout, so that convolutional networks can read them).

`MaskedFourierTransform` is that map as a linear ODL operator from a real image
space to ``odl.rn((2 nx, ny))``. Its adjoint is exact: the Euclidean transpose
is ``x = Re(F^H K^T y)``, the zero-filled inverse transform (its real part,
because the image space is real), scaled by the ratio of the spaces'
weightings as ODL's adjoint needs. It also applies itself to whole batches of
numpy arrays (`batch_apply`), the fast face that `lpd.physics.projector` and
the TensorFlow bridge use.

`sampling_mask` draws the seed paper's three patterns: radial spokes, 2D
random coefficients with a density that falls off from the centre, and 1D
random phase-encoding lines.

References
----------
Liu J, Kuang T, Zhang X. Image reconstruction by splitting deep learning
regularization from iterative inversion. MICCAI 2018, section 3: the model
``y = K F (x + l (xi_1 + i xi_2))``, radial, 2D random and 1D random masks at
rates 1/5, 1/4 and 1/3, noise 0 and 10 %.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from lpd.config import SAMPLING_PATTERNS, SamplingConfig

# Importing ODL changes numpy's print options for the whole process; undo that.
_print_options = np.get_printoptions()
import odl  # noqa: E402

np.set_printoptions(**_print_options)
del _print_options

from lpd.physics.operators import constant_weighting  # noqa: E402

__all__ = ["MaskedFourierTransform", "sampling_mask", "complex_data", "stacked_data"]


def _radius(shape: tuple[int, int]) -> np.ndarray:
    """Distance of each coefficient from the centre of k-space, in units of the grid's half-size."""
    nx, ny = shape
    kx = (np.arange(nx) - nx // 2) / (nx / 2)
    ky = (np.arange(ny) - ny // 2) / (ny / 2)
    return np.hypot(kx[:, None], ky[None, :])


def _radial(shape: tuple[int, int], n_spokes: int) -> np.ndarray:
    """``n_spokes`` lines through the centre at uniformly spaced angles in [0, pi)."""
    nx, ny = shape
    cx, cy = nx // 2, ny // 2
    reach = math.hypot(nx, ny)
    t = np.arange(-reach, reach + 0.25, 0.25)
    mask = np.zeros(shape, dtype=bool)
    for angle in np.arange(n_spokes) * (math.pi / n_spokes):
        i = np.rint(cx + t * math.cos(angle)).astype(int)
        j = np.rint(cy + t * math.sin(angle)).astype(int)
        inside = (i >= 0) & (i < nx) & (j >= 0) & (j < ny)
        mask[i[inside], j[inside]] = True
    return mask


def _radial_mask(shape: tuple[int, int], rate: float) -> np.ndarray:
    """The radial mask whose measured fraction is closest to ``rate``."""
    if rate >= 1:
        return np.ones(shape, dtype=bool)
    low, high = 1, 4 * max(shape)
    while high - low > 1:  # the fraction grows with the number of spokes
        middle = (low + high) // 2
        if _radial(shape, middle).mean() < rate:
            low = middle
        else:
            high = middle
    masks = (_radial(shape, low), _radial(shape, high))
    return min(masks, key=lambda m: abs(m.mean() - rate))


def _random_mask(shape: tuple[int, int], rate: float, rng: np.random.Generator) -> np.ndarray:
    """``round(rate * size)`` coefficients without replacement, denser at the centre.

    The density falls off as ``(1 - r / r_max)^4`` (plus a floor, so that every
    frequency can be drawn), and the coefficients within a small disc at the
    centre, which holds most of an image's energy, are always measured.
    """
    size = shape[0] * shape[1]
    n = min(size, max(1, round(rate * size)))
    radius = _radius(shape)
    centre = radius <= math.sqrt(0.1 * rate * 4 / math.pi)  # about a tenth of the samples
    weights = (1 - radius / radius.max()) ** 4 + 0.02
    weights[centre] = 0
    mask = centre.copy()
    rest = n - int(centre.sum())
    if rest > 0:
        flat = weights.ravel() / weights.sum()
        mask.ravel()[rng.choice(size, size=rest, replace=False, p=flat)] = True
    return mask


def _lines_mask(shape: tuple[int, int], rate: float, rng: np.random.Generator) -> np.ndarray:
    """``round(rate * ny)`` whole lines along ``x`` (fixed ``k_y``), a central quarter always."""
    nx, ny = shape
    n = min(ny, max(1, round(rate * ny)))
    n_centre = max(1, n // 4)
    start = ny // 2 - n_centre // 2
    chosen = set(range(start, start + n_centre))
    offset = np.abs(np.arange(ny) - ny // 2) / (ny / 2)
    weights = np.exp(-0.5 * (offset / 0.4) ** 2)
    weights[list(chosen)] = 0
    extra = rng.choice(ny, size=n - n_centre, replace=False, p=weights / weights.sum())
    chosen.update(int(k) for k in extra)
    mask = np.zeros(shape, dtype=bool)
    mask[:, sorted(chosen)] = True
    return mask


@functools.lru_cache(maxsize=32)
def _cached_mask(shape: tuple[int, int], pattern: str, rate: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if pattern == "radial":
        mask = _radial_mask(shape, rate)
    elif pattern == "random":
        mask = _random_mask(shape, rate, rng)
    else:
        mask = _lines_mask(shape, rate, rng)
    mask.setflags(write=False)
    return mask


def sampling_mask(shape, sampling: SamplingConfig) -> np.ndarray:
    """The boolean mask of measured coefficients of centred k-space, of shape ``shape``.

    Deterministic for a given configuration (the random patterns are drawn
    from ``sampling.seed``); the measured fraction is ``sampling.rate`` to the
    nearest coefficient (random), line (lines) or spoke (radial). The centre
    of k-space, index ``(nx // 2, ny // 2)``, is always measured.

    Raises
    ------
    ValueError
        For a shape that is not two positive integers.
    TypeError
        If ``sampling`` is not a `lpd.config.SamplingConfig`.
    """
    if not isinstance(sampling, SamplingConfig):
        raise TypeError(f"expected a SamplingConfig, got {type(sampling).__name__}")
    shape = tuple(int(n) for n in shape)
    if len(shape) != 2 or min(shape) < 2:
        raise ValueError(f"expected a 2D shape of at least 2 x 2, got {shape}")
    assert sampling.pattern in SAMPLING_PATTERNS
    return _cached_mask(shape, sampling.pattern, float(sampling.rate), int(sampling.seed))


def complex_data(y) -> np.ndarray:
    """Complex k-space ``(..., nx, ny)`` from stacked data ``(..., 2 nx, ny)``."""
    y = np.asarray(y)
    nx = y.shape[-2] // 2
    if y.shape[-2] != 2 * nx:
        raise ValueError(f"stacked data need an even number of rows, got shape {y.shape}")
    return y[..., :nx, :] + 1j * y[..., nx:, :]


def stacked_data(k) -> np.ndarray:
    """Stacked float32 data ``(..., 2 nx, ny)`` from complex k-space ``(..., nx, ny)``."""
    k = np.asarray(k)
    return np.concatenate([k.real, k.imag], axis=-2).astype(np.float32)


class MaskedFourierTransform(odl.Operator):
    """``x -> K F x`` on a real 2D image space, data stacked as ``[Re; Im]``.

    Parameters
    ----------
    space : odl.DiscretizedSpace
        Real 2D image space (the set-up's). With ``weighting=1.0`` (the MRI
        set-ups of lpd) the operator is a partial isometry in ODL's inner
        products too, so ODL's adjoint is the zero-filled inverse transform.
    mask : array-like of bool, shape ``space.shape``
        The measured coefficients of centred k-space (`sampling_mask`).

    Attributes
    ----------
    mask : numpy.ndarray of bool
    support : numpy.ndarray of float32, shape ``range.shape``
        1 on the entries of the data that are measured (both parts), 0 elsewhere:
        where a noise model may add noise.
    """

    def __init__(self, space, mask):
        if space.ndim != 2 or space.is_complex:
            raise TypeError(f"expected a real 2D image space, got {space!r}")
        mask = np.asarray(mask)
        if mask.shape != tuple(space.shape) or mask.dtype != bool:
            raise ValueError(f"expected a boolean mask of shape {tuple(space.shape)}, "
                             f"got {mask.dtype} of shape {mask.shape}")
        nx, ny = space.shape
        data_space = odl.rn((2 * nx, ny), dtype=space.dtype)
        super().__init__(space, data_space, linear=True)
        self.mask = mask
        self.support = np.concatenate([mask, mask]).astype(np.float32)
        self.support.setflags(write=False)
        # ODL's adjoint is the Euclidean transpose times w_Y / w_X:
        # <W x, y>_Y = w_Y (W x) . y = w_X x . ((w_Y / w_X) W^T y).
        self.adjoint_scale = constant_weighting(data_space) / constant_weighting(space)

    def batch_apply(self, x: np.ndarray, transpose: bool = False) -> np.ndarray:
        """``W x`` (or the Euclidean transpose ``W^T y``) on a float32 batch."""
        x = np.asarray(x, dtype=np.float32)
        if transpose:
            k = complex_data(x) * self.mask
            image = np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho")
            return np.ascontiguousarray(image.real, dtype=np.float32)
        k = np.fft.fftshift(np.fft.fft2(x, norm="ortho"), axes=(-2, -1)) * self.mask
        return stacked_data(k)

    def _call(self, x):
        return self.batch_apply(x.data)

    @property
    def adjoint(self):
        if getattr(self, "_adjoint", None) is None:
            self._adjoint = self._make_adjoint()
        return self._adjoint

    def _make_adjoint(self):
        forward = self

        class Adjoint(odl.Operator):
            def __init__(self):
                super().__init__(forward.range, forward.domain, linear=True)

            def batch_apply(self, y, transpose=False):
                if transpose:
                    return forward.batch_apply(y) / forward.adjoint_scale
                return forward.adjoint_scale * forward.batch_apply(y, transpose=True)

            def _call(self, y):
                return self.batch_apply(y.data)

            @property
            def adjoint(self):
                return forward

        return Adjoint()

    def __repr__(self) -> str:
        return (f"MaskedFourierTransform({self.domain!r}, mask of {int(self.mask.sum())} "
                f"/ {self.mask.size})")
