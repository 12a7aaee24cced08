"""The posterior of the ellipse experiment, sampled by reversible-jump MCMC.

The training distribution of the ellipse experiment is a marked point process:
a Poisson(50) number of ellipses, each with the value, half-axes, centre and
rotation of `lpd.data.phantoms.random_ellipse_params`, summed on the set-up's
grid. Its data are ``y = A x + sigma(x) e`` with ``e`` white and
``sigma(x) = relative_std * mean(|A x|)`` (`lpd.physics.noise.GaussianNoise`).
`EllipsePosterior` is that prior and likelihood; `ReversibleJump` samples it
with births and deaths of ellipses drawn from the prior and random-walk moves
of one parameter of one ellipse (Green 1995), each accepted by its
Metropolis-Hastings-Green ratio. A move changes one ellipse, so ``A x`` is
updated by the projection of that ellipse's pixels only (the columns of the
system matrix under its footprint). The running mean of the chain's images
estimates the conditional mean ``E[x | y]``, the estimator with the lowest
expected squared error of all (Adler & Öktem, "Deep learning for inverse
problems: where are we? how far can we go?").

For tests, `DiscretePrior` replaces the continuous marks by a finite set and
caps the count, so that `exact_posterior_mean` can enumerate every
configuration and give the exact answer the sampler must reproduce.

References
----------
Green PJ. Reversible jump Markov chain Monte Carlo computation and Bayesian
model determination. Biometrika 82(4), 1995.
Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 2018, section IV-A
(the ellipse distribution).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from scipy import special

__all__ = ["EllipsePrior", "DiscretePrior", "EllipsePosterior", "ReversibleJump",
           "exact_posterior_mean", "footprint"]


def footprint(mark: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Flat indices of the pixel centres inside one ellipse (`lpd.data.phantoms` convention)."""
    value, a, b, x0, y0, theta = (float(v) for v in mark)
    nx, ny = shape
    xs = (np.arange(nx) - (nx - 1) / 2) / ((nx - 1) / 2) if nx > 1 else np.zeros(1)
    ys = (np.arange(ny) - (ny - 1) / 2) / ((ny - 1) / 2) if ny > 1 else np.zeros(1)
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

    def log_mark_density(self, mark: np.ndarray) -> float:
        value, a, b, x0, y0, theta = mark
        if a <= 0 or b <= 0 or abs(x0) > 1 or abs(y0) > 1 or value == 0:
            return -math.inf
        s = self.value_scale
        log_value = math.log(special.exp1(2 * abs(value) / s) / s)
        log_axes = -2 * math.log(self.axis_scale) - (a + b) / self.axis_scale
        return log_value + log_axes + math.log(0.25) - math.log(2 * math.pi)

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

    def image(self, marks: np.ndarray) -> np.ndarray:
        x = np.zeros(self.shape[0] * self.shape[1])
        for mark in marks:
            x[footprint(mark, self.shape)] += mark[0]
        return x.reshape(self.shape)


class ReversibleJump:
    """A reversible-jump chain on `EllipsePosterior`: births, deaths and one-parameter moves.

    Parameters
    ----------
    posterior : EllipsePosterior
    rng : numpy.random.Generator
    marks : array, shape (n, 6), optional
        The starting ellipses (none by default).
    steps : sequence of float
        Random-walk scales of (value, half-axis 1, half-axis 2, centre x, centre y,
        rotation) for the continuous prior.
    birth, death : float
        Probabilities of proposing a birth and a death; the rest are updates.
    """

    def __init__(self, posterior: EllipsePosterior, rng: np.random.Generator, marks=None, *,
                 steps=(0.02, 0.01, 0.01, 0.01, 0.01, 0.1), birth: float = 0.2,
                 death: float = 0.2):
        self.post = posterior
        self.rng = rng
        self.steps = np.asarray(steps, dtype=np.float64)
        self.p_birth, self.p_death = float(birth), float(death)
        self.marks: list[np.ndarray] = []
        self.prints: list[np.ndarray] = []
        self.x = np.zeros(posterior.shape[0] * posterior.shape[1])
        self.p = np.zeros(posterior.data.size)
        for mark in (marks if marks is not None else []):
            self._add(np.asarray(mark, np.float64))
        self.log_l = posterior.log_likelihood(self.p)
        self.accepted = {"birth": 0, "death": 0, "update": 0}
        self.proposed = {"birth": 0, "death": 0, "update": 0}

    def _add(self, mark: np.ndarray) -> None:
        idx = footprint(mark, self.post.shape)
        self.marks.append(mark)
        self.prints.append(idx)
        self.x[idx] += mark[0]
        self.p += self.post.projection(idx, mark[0])

    @property
    def n(self) -> int:
        return len(self.marks)

    def _accept(self, log_ratio: float) -> bool:
        return log_ratio >= 0 or self.rng.random() < math.exp(log_ratio)

    def step(self) -> None:
        """One proposal: a birth, a death or an update, accepted or not."""
        u = self.rng.random()
        prior = self.post.prior
        lam = prior.mean_count
        if u < self.p_birth:
            self.proposed["birth"] += 1
            if self.n >= prior.max_count:
                return
            mark = prior.sample_mark(self.rng)
            idx = footprint(mark, self.post.shape)
            p_new = self.p + self.post.projection(idx, mark[0])
            log_l = self.post.log_likelihood(p_new)
            log_ratio = (log_l - self.log_l + math.log(lam / (self.n + 1))
                         + math.log(self.p_death / self.p_birth))
            if self._accept(log_ratio):
                self.marks.append(mark)
                self.prints.append(idx)
                self.x[idx] += mark[0]
                self.p, self.log_l = p_new, log_l
                self.accepted["birth"] += 1
        elif u < self.p_birth + self.p_death:
            self.proposed["death"] += 1
            if self.n == 0:
                return
            k = int(self.rng.integers(self.n))
            mark, idx = self.marks[k], self.prints[k]
            p_new = self.p - self.post.projection(idx, mark[0])
            log_l = self.post.log_likelihood(p_new)
            log_ratio = (log_l - self.log_l + math.log(self.n / lam)
                         + math.log(self.p_birth / self.p_death))
            if self._accept(log_ratio):
                self.x[idx] -= mark[0]
                del self.marks[k], self.prints[k]
                self.p, self.log_l = p_new, log_l
                self.accepted["death"] += 1
        else:
            self.proposed["update"] += 1
            if self.n == 0:
                return
            k = int(self.rng.integers(self.n))
            old, old_idx = self.marks[k], self.prints[k]
            if prior.discrete:  # an independent draw from the prior (its ratio cancels)
                new = prior.sample_mark(self.rng)
                log_prior = 0.0
            else:
                new = old.copy()
                j = int(self.rng.integers(6))
                new[j] += self.steps[j] * self.rng.standard_normal()
                if j == 5:
                    new[5] %= 2 * math.pi
                log_prior = prior.log_mark_density(new) - prior.log_mark_density(old)
                if not math.isfinite(log_prior):
                    return
            idx = footprint(new, self.post.shape)
            p_new = (self.p - self.post.projection(old_idx, old[0])
                     + self.post.projection(idx, new[0]))
            log_l = self.post.log_likelihood(p_new)
            if self._accept(log_l - self.log_l + log_prior):
                self.x[old_idx] -= old[0]
                self.x[idx] += new[0]
                self.marks[k], self.prints[k] = new, idx
                self.p, self.log_l = p_new, log_l
                self.accepted["update"] += 1

    def run(self, n_steps: int, burn_in: int = 0, thin: int = 1) -> dict:
        """Run ``n_steps`` proposals; the mean and variance of the images after ``burn_in``.

        Returns ``{"mean", "var", "n_kept", "counts", "log_likelihood"}``: the
        running mean and variance of the image (every ``thin`` proposals), and
        the ellipse count and log-likelihood traces at the same times.
        """
        total = np.zeros_like(self.x)
        squares = np.zeros_like(self.x)
        counts, log_ls = [], []
        kept = 0
        for s in range(int(n_steps)):
            self.step()
            if s >= burn_in and (s - burn_in) % thin == 0:
                total += self.x
                squares += self.x * self.x
                counts.append(self.n)
                log_ls.append(self.log_l)
                kept += 1
        mean = total / max(kept, 1)
        var = np.maximum(squares / max(kept, 1) - mean * mean, 0)
        return {"mean": mean.reshape(self.post.shape), "var": var.reshape(self.post.shape),
                "n_kept": kept, "counts": np.array(counts), "log_likelihood": np.array(log_ls)}


def exact_posterior_mean(posterior: EllipsePosterior) -> np.ndarray:
    """``E[x | y]`` by enumerating every configuration of a `DiscretePrior`."""
    prior = posterior.prior
    if not isinstance(prior, DiscretePrior):
        raise TypeError("exact_posterior_mean needs a DiscretePrior")
    lam = prior.mean_count
    log_weights, images = [], []
    for n in range(prior.max_count + 1):
        log_count = n * math.log(lam) - math.lgamma(n + 1) if lam > 0 else 0.0
        for combo in itertools.product(range(len(prior.marks)), repeat=n):
            marks = prior.marks[list(combo)]
            x = posterior.image(marks)
            p = posterior.columns @ x.ravel()
            log_weights.append(log_count + float(np.sum(np.log(prior.probs[list(combo)])))
                               + posterior.log_likelihood(p))
            images.append(x)
    log_weights = np.array(log_weights)
    weights = np.exp(log_weights - log_weights.max())
    weights /= weights.sum()
    return np.tensordot(weights, np.array(images), axes=1)
