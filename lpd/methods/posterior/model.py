"""The ellipse prior, the likelihood of the ellipse experiment's data, and one ellipse's pixels.

`EllipsePrior` is the training distribution of `lpd.data.phantoms` as a marked point
process; `DiscretePrior` a finite version of it small enough to enumerate
(`lpd.methods.posterior.exact`); `EllipsePosterior` the two with the set-up's operator
and noise, the target of every sampler in this package.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from scipy import special

from lpd.methods.candidates import grid_coordinates


def footprint(mark: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Flat indices of the pixel centres inside one ellipse (`lpd.data.phantoms` convention)."""
    value, a, b, x0, y0, theta = (float(v) for v in mark)
    nx, ny = shape
    xs, ys = grid_coordinates(shape)
    cos, sin = math.cos(theta), math.sin(theta)
    half_x = math.sqrt((a * cos) ** 2 + (b * sin) ** 2)
    half_y = math.sqrt((a * sin) ** 2 + (b * cos) ** 2)
    step_x, step_y = 2.0 / max(nx - 1, 1), 2.0 / max(ny - 1, 1)
    i0 = int(np.clip(math.floor((x0 - half_x + 1) / step_x) - 1, 0, nx))
    i1 = int(np.clip(math.ceil((x0 + half_x + 1) / step_x) + 2, 0, nx))
    j0 = int(np.clip(math.floor((y0 - half_y + 1) / step_y) - 1, 0, ny))
    j1 = int(np.clip(math.ceil((y0 + half_y + 1) / step_y) + 2, 0, ny))
    if i0 >= i1 or j0 >= j1:
        return np.zeros(0, dtype=np.int64)
    dx = xs[i0:i1, None] - x0
    dy = ys[None, j0:j1] - y0
    u = cos * dx + sin * dy
    v = cos * dy - sin * dx
    inside = u * u / (a * a) + v * v / (b * b) <= 1
    i, j = np.nonzero(inside)
    return ((i + i0) * ny + (j + j0)).astype(np.int64)


class EllipsePrior:
    """The paper's distribution of random ellipse phantoms, with the density of one ellipse.

    Parameters are those of `lpd.data.phantoms.random_ellipse_params`: a
    Poisson(``mean_count``) number of ellipses; value ``(U - 1/2) E`` with ``E``
    exponential of mean ``value_scale``, whose density is
    ``E1(2 |v| / value_scale) / value_scale`` (``E1`` the exponential integral);
    half-axes exponential of mean ``axis_scale``; centre uniform in ``[-1, 1]^2``;
    rotation uniform in ``[0, 2 pi)``.
    """

    discrete = False

    def __init__(self, mean_count: float = 50.0, value_scale: float = 0.4,
                 axis_scale: float = 0.2):
        self.mean_count = float(mean_count)
        self.value_scale = float(value_scale)
        self.axis_scale = float(axis_scale)
        self.max_count = math.inf

    def sample_mark(self, rng: np.random.Generator) -> np.ndarray:
        return np.array([(rng.random() - 0.5) * rng.exponential(self.value_scale),
                         rng.exponential(self.axis_scale), rng.exponential(self.axis_scale),
                         rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0, 2 * math.pi)])

    def log_value_density(self, value: float) -> float:
        """``log`` of the density of an ellipse's value, ``E1(2 |v| / s) / s``."""
        if value == 0 or not math.isfinite(value):
            return -math.inf
        s = self.value_scale
        density = special.exp1(2 * abs(value) / s) / s
        return math.log(density) if density > 0 else -math.inf

    def log_shape_density(self, mark: np.ndarray) -> float:
        """``log`` of the density of an ellipse's half-axes, centre and rotation."""
        _, a, b, x0, y0, theta = mark
        if a <= 0 or b <= 0 or abs(x0) > 1 or abs(y0) > 1:
            return -math.inf
        log_axes = -2 * math.log(self.axis_scale) - (a + b) / self.axis_scale
        return log_axes + math.log(0.25) - math.log(2 * math.pi)

    def log_mark_density(self, mark: np.ndarray) -> float:
        """``log`` of the density of one ellipse (value, half-axes, centre, rotation)."""
        log_shape = self.log_shape_density(mark)
        return log_shape + self.log_value_density(mark[0]) if log_shape > -math.inf else log_shape

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        return np.array([self.sample_mark(rng) for _ in range(rng.poisson(self.mean_count))]
                        ).reshape(-1, 6)


class DiscretePrior:
    """A prior of at most ``max_count`` ellipses whose marks come from a finite set (tests).

    The count is Poisson(``mean_count``) conditioned on ``<= max_count``; each
    mark is row ``k`` of ``marks`` with probability ``probs[k]``.
    """

    discrete = True

    def __init__(self, marks: np.ndarray, probs: Sequence[float] | None = None,
                 mean_count: float = 1.0, max_count: int = 2):
        self.marks = np.asarray(marks, dtype=np.float64).reshape(-1, 6)
        k = len(self.marks)
        probs = np.full(k, 1.0 / k) if probs is None else np.asarray(probs, np.float64)
        if probs.shape != (k,) or np.any(probs <= 0) or not math.isclose(probs.sum(), 1):
            raise ValueError("probs must be positive, one per mark, and sum to 1")
        self.probs = probs
        self.mean_count = float(mean_count)
        self.max_count = int(max_count)

    def sample_mark(self, rng: np.random.Generator) -> np.ndarray:
        return self.marks[rng.choice(len(self.marks), p=self.probs)].copy()

    def log_mark_density(self, mark: np.ndarray) -> float:
        hits = np.flatnonzero(np.all(self.marks == mark, axis=1))
        return math.log(self.probs[hits].sum()) if len(hits) else -math.inf


class EllipsePosterior:
    """Prior and likelihood of the ellipse experiment for one data array.

    Parameters
    ----------
    matrix : scipy.sparse matrix, shape (m, nx * ny)
        ``W`` of the experiment's operator (``setup.numpy.matrix``).
    shape : tuple of int
        The image grid.
    data : array-like, shape (m,) or the data's shape
    relative_std : float
        The noise level: ``sigma(x) = relative_std * mean(|W x|)``.
    prior : EllipsePrior or DiscretePrior
    """

    def __init__(self, matrix, shape: tuple[int, int], data, relative_std: float,
                 prior: EllipsePrior | DiscretePrior):
        self.columns = sp.csc_matrix(matrix, dtype=np.float64)
        self.columns.sort_indices()
        self.shape = tuple(int(n) for n in shape)
        self.data = np.asarray(data, dtype=np.float64).ravel()
        if self.columns.shape != (self.data.size, self.shape[0] * self.shape[1]):
            raise ValueError(f"matrix of shape {self.columns.shape} does not map the grid "
                             f"{self.shape} to {self.data.size} data values")
        if not relative_std > 0:
            raise ValueError(f"relative_std must be > 0, got {relative_std}")
        self.relative_std = float(relative_std)
        self.prior = prior

    def projection(self, idx: np.ndarray, value: float) -> np.ndarray:
        """``W`` applied to ``value`` on the pixels ``idx`` (one ellipse).

        Gathers the stored entries of those columns straight from the CSC arrays
        (scipy's column slicing costs far more than the sum itself).
        """
        cols = self.columns
        starts, ends = cols.indptr[idx], cols.indptr[idx + 1]
        lengths = ends - starts
        total = int(lengths.sum())
        if total == 0:
            return np.zeros(self.data.size)
        offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
        sel = offsets + np.arange(total)
        return value * np.bincount(cols.indices[sel], weights=cols.data[sel],
                                   minlength=self.data.size)

    def log_likelihood(self, p: np.ndarray) -> float:
        """``log N(y; p, sigma(p)^2 I)`` with ``sigma = relative_std * mean |p|``."""
        sigma = self.relative_std * float(np.mean(np.abs(p)))
        residual = self.data - p
        if sigma == 0:
            return 0.0 if not np.any(residual) else -math.inf
        m = self.data.size
        return float(-0.5 * np.dot(residual, residual) / sigma**2 - m * math.log(sigma)
                     - 0.5 * m * math.log(2 * math.pi))

    def log_posterior(self, marks) -> float:
        """``log`` of the posterior density of the ellipses ``marks`` (rows of 6), unnormalised.

        The log-likelihood of their image plus the prior's: the Poisson count's
        ``n log(mean_count) - log n!`` (``-inf`` above a `DiscretePrior`'s
        ``max_count``) and each ellipse's `log_mark_density`, for the ellipses in
        this order (the density the chains sample; a set of ``n`` distinct
        ellipses has ``n!`` orders). The constant ``-mean_count`` and the
        evidence are left out, so only differences between states mean something.
        """
        return float(sum(self.log_posterior_terms(marks).values()))

    def log_posterior_terms(self, marks) -> dict[str, float]:
        """The terms of `log_posterior`: ``likelihood``, ``count`` and ``marks`` (the densities').

        Where two states differ, these say whether the data or the prior tells them apart.
        """
        marks = np.asarray(marks, dtype=np.float64).reshape(-1, 6)
        n, prior = len(marks), self.prior
        if n > prior.max_count:
            log_count = -math.inf
        elif prior.mean_count > 0:
            log_count = n * math.log(prior.mean_count) - math.lgamma(n + 1)
        else:
            log_count = 0.0 if n == 0 else -math.inf
        log_marks = float(sum(prior.log_mark_density(mark) for mark in marks))
        p = self.columns @ self.image(marks).ravel()
        return {"likelihood": float(self.log_likelihood(p)), "count": float(log_count),
                "marks": log_marks}

    def image(self, marks: np.ndarray) -> np.ndarray:
        x = np.zeros(self.shape[0] * self.shape[1])
        for mark in marks:
            x[footprint(mark, self.shape)] += mark[0]
        return x.reshape(self.shape)
