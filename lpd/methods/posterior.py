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

A phantom drawn from the prior is, given its own data, a draw from the
posterior, so a chain started at its ellipses (a *planted* start) is in
equilibrium from its first step: its log-likelihood shows where the
posterior's mass lies, against which the chains from data-driven starts are
checked, and `start_distance` bounds the conditional mean's error from below
(the planted solutions of Krzakala and Zdeborová; the same fact underlies the
simulation-based checks of Cook, Gelman and Rubin).

References
----------
Green PJ. Reversible jump Markov chain Monte Carlo computation and Bayesian
model determination. Biometrika 82(4), 1995.
Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 2018, section IV-A
(the ellipse distribution).
Krzakala F, Zdeborová L. Hiding quiet solutions in random constraint satisfaction
problems. Physical Review Letters 102, 2009.
Cook SR, Gelman A, Rubin DB. Validation of software for Bayesian models using
posterior quantiles. Journal of Computational and Graphical Statistics 15(3), 2006.
Nilmeier JP, Crooks GE, Minh DDL, Chodera JD. Nonequilibrium candidate Monte Carlo is
an efficient tool for equilibrium simulation. PNAS 108(45), 2011 (the rebuilds).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy import special

from lpd.methods.candidates import EllipseLibrary, grid_coordinates, moment_candidates

__all__ = ["EllipsePrior", "DiscretePrior", "EllipsePosterior", "ReversibleJump",
           "ParallelTempering", "swap_states", "geometric_ladder", "exact_posterior",
           "exact_posterior_mean", "footprint", "greedy_start", "sample", "parallel_map",
           "split_rhat", "effective_sample_size", "start_distance"]


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
        marks = np.asarray(marks, dtype=np.float64).reshape(-1, 6)
        n, prior = len(marks), self.prior
        if n > prior.max_count:
            return -math.inf
        log_count = n * math.log(prior.mean_count) if prior.mean_count > 0 else (
            0.0 if n == 0 else -math.inf)
        log_marks = sum(prior.log_mark_density(mark) for mark in marks)
        p = self.columns @ self.image(marks).ravel()
        return float(self.log_likelihood(p) + log_count - math.lgamma(n + 1) + log_marks)

    def image(self, marks: np.ndarray) -> np.ndarray:
        x = np.zeros(self.shape[0] * self.shape[1])
        for mark in marks:
            x[footprint(mark, self.shape)] += mark[0]
        return x.reshape(self.shape)


class ReversibleJump:
    """A reversible-jump chain on `EllipsePosterior`: births, deaths and updates of ellipses.

    Every proposal changes one ellipse and is accepted by its
    Metropolis-Hastings-Green ratio, the proposal densities included, so the
    chain's target is the posterior whatever the proposals are; they decide only
    how fast it mixes.

    - A *birth* draws the shape (half-axes, centre, rotation) of a new ellipse
      from the prior, or its centre from a ``guide``, or the whole shape from a
      ``library`` of candidate ellipses; its value is drawn around
      the least-squares fit of that shape to the current residual (``fitted``),
      with the spread of the value's likelihood (``spread`` times
      ``sigma / ||A 1_E||``, with ``sigma`` the noise level of the data). The
      data then decide the value, so that a birth of the right shape is accepted.
    - A *death* removes one ellipse picked at random (the reverse of a birth).
    - An *update* picks one ellipse and one of its six marks: a random-walk step
      of a shape mark with the value re-fitted to the new shape, or (the value
      mark) a fresh fitted value for the same shape. With a library, a share
      ``library_switches`` of the updates instead draws the ellipse's whole
      shape from it: an ellipse that settled near a boundary it does not quite
      follow jumps to the detected one.

    - A *merge* (with ``merge > 0``, proposed as often as a split) picks one
      ellipse and one of its neighbours (their bounding circles meet), removes
      the neighbour and moves the first by a random-walk step of ``merge_scale``
      times the updates' shape steps, its value fitted to what the two explained
      together. A *split* is its reverse: it moves one ellipse by such a step and
      adds a neighbour, its centre drawn around the first's (spread by its larger
      half-axis) and its half-axes and rotation from the prior, with both values
      drawn jointly around their least-squares fit. Together they let a chain trade
      two overlapping ellipses for one, which a death alone rarely does when the
      two share the data between them.

    - A *rebuild* (with ``rebuild > 0``) gives one ellipse a new shape, from the
      library's candidates centred near it (or a random-walk step of all its
      shape marks without a library), sliding it there in stages while the
      ellipses around it relax, and is accepted by the work of the slide
      (nonequilibrium candidate Monte Carlo): the neighbours of an ellipse that
      they have learned to stand in for give way as it takes its own shape.

    - A *joint* birth, death or update (a share ``joint`` of each) also redraws
      the values of the ellipses that meet the changed one (their bounding
      circles meet its old or new one), jointly with its own value, around their
      least-squares fit given the shapes (`_joint_law`). Overlapping ellipses
      share the data between them, so their values are strongly correlated: one
      at a time they move in small steps, and an ellipse that others stand in
      for can neither appear nor go without them giving way at once.

    With ``fitted=False``, or for a `DiscretePrior`, births draw the whole mark
    from the prior and updates are random-walk steps of one mark (an independent
    draw from the prior for the discrete one).

    Parameters
    ----------
    posterior : EllipsePosterior
    rng : numpy.random.Generator
    marks : array, shape (n, 6), optional
        The starting ellipses (none by default).
    steps : sequence of float
        Random-walk scales of (value, half-axis 1, half-axis 2, centre x, centre y,
        rotation); the value's is used only without ``fitted``.
    birth, death : float
        Probabilities of proposing a birth and a death; the rest are updates.
    guide : array of the image's shape, optional
        An image computed from the data alone (an FBP, say): a birth then draws
        its centre, with probability ``1 - prior_births``, from the pixels in
        proportion to ``|guide|``, so that births land where the data say there
        is something.
    prior_births : float
        The share of births whose centre comes from the prior when a guide is given.
    library : lpd.methods.candidates.EllipseLibrary, optional
        Candidate shapes read off a reconstruction (`candidates.detect_ellipses`):
        a share ``library_births`` of the births draws its shape from them, the
        only way a chain finds the large ellipses that overlap others.
    library_births : float
        The share of births drawn from the library when one is given.
    library_switches : float
        The share of updates that draw a shape from the library when one is given.
    fitted : bool
        Draw values around their least-squares fit (continuous prior only).
    spread : float
        Width of the fitted value proposals in units of the value's likelihood width.
    merge : float
        The probability of proposing a merge, and that of a split (0: neither).
    merge_scale : float
        The shape steps of merges and splits, in units of ``steps``.
    joint : float
        The share of births, deaths and updates that are joint moves (0: none),
        below 1: the plain moves reach the states that joint ones cannot change
        (neighbours whose projections are linearly dependent, so that their
        values have no joint fit).
    joint_spread : float
        ``spread`` of the joint moves' values: 1, the width of their law given the
        shapes, since a wider draw of many values at once is seldom accepted.
    probes : int
        Number of fixed random linear functionals of the image traced at every
        kept sample (`run`), for the convergence diagnostics of the image.
    rebuild : float
        The probability of proposing a *rebuild* (`_rebuild`; 0: none): one
        ellipse slides to a new shape over ``rebuild_stages`` stages while the
        ellipses centred near it relax (``rebuild_relax`` updates between two
        stages, their centres kept within ``rebuild_margin`` of the two shapes'
        discs). One rebuild costs about ``rebuild_stages * rebuild_relax``
        proposals.
    """

    def __init__(self, posterior: EllipsePosterior, rng: np.random.Generator, marks=None, *,
                 steps=(0.02, 0.01, 0.01, 0.01, 0.01, 0.1), birth: float = 0.2,
                 death: float = 0.2, guide=None, prior_births: float = 0.5,
                 library: EllipseLibrary | None = None, library_births: float = 0.5,
                 library_switches: float = 0.1, fitted: bool = True, spread: float = 1.5,
                 merge: float = 0.0, merge_scale: float = 3.0, joint: float = 0.0,
                 joint_spread: float = 1.0, probes: int = 4, rebuild: float = 0.0,
                 rebuild_stages: int = 50, rebuild_relax: int = 200,
                 rebuild_margin: float = 0.1):
        self.post = posterior
        self.rng = rng
        self.steps = np.asarray(steps, dtype=np.float64)
        self.p_birth, self.p_death = float(birth), float(death)
        if not (0 < self.p_birth and 0 < self.p_death and self.p_birth + self.p_death <= 1):
            raise ValueError(f"birth and death must be > 0 with a sum <= 1, got {birth}, {death}")
        for name, value in (("spread", spread), ("joint_spread", joint_spread)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and > 0, got {value}")
        # The noise level of the data sets the width of the fitted values: a
        # constant, so that a proposal and its reverse use the same one.
        sigma = posterior.relative_std * float(np.mean(np.abs(posterior.data)))
        self.fitted = bool(fitted) and not posterior.prior.discrete and sigma > 0
        self.value_width = float(spread) * sigma
        self.joint_width = float(joint_spread) * sigma
        self.p_merge = float(merge)
        if not (0 <= self.p_merge and self.p_birth + self.p_death + 2 * self.p_merge <= 1):
            raise ValueError(f"merge must be >= 0 with birth + death + 2 merge <= 1, got "
                             f"merge {merge} beside birth {birth} and death {death}")
        if self.p_merge > 0 and not self.fitted:
            raise ValueError("merges and splits need fitted values (the continuous "
                             "EllipsePrior, fitted=True and data that are not all zero)")
        if not (math.isfinite(merge_scale) and merge_scale > 0):
            raise ValueError(f"merge_scale must be finite and > 0, got {merge_scale}")
        self.merge_steps = float(merge_scale) * self.steps[1:]
        self.p_joint = float(joint)
        if not 0 <= self.p_joint < 1:
            raise ValueError(f"joint must be in [0, 1), got {joint}")
        if self.p_joint > 0 and not self.fitted:
            raise ValueError("joint moves need fitted values (the continuous EllipsePrior, "
                             "fitted=True and data that are not all zero)")
        self.p_rebuild = float(rebuild)
        if not 0 <= self.p_rebuild < 1:
            raise ValueError(f"rebuild must be in [0, 1), got {rebuild}")
        if self.p_rebuild > 0 and posterior.prior.discrete:
            raise ValueError("rebuilds need the continuous EllipsePrior")
        if int(rebuild_stages) < 1 or int(rebuild_relax) < 0:
            raise ValueError(f"rebuild_stages must be >= 1 and rebuild_relax >= 0, got "
                             f"{rebuild_stages} and {rebuild_relax}")
        if not (math.isfinite(rebuild_margin) and rebuild_margin >= 0):
            raise ValueError(f"rebuild_margin must be finite and >= 0, got {rebuild_margin}")
        self.rebuild_stages, self.rebuild_relax = int(rebuild_stages), int(rebuild_relax)
        self.rebuild_margin = float(rebuild_margin)
        self._region = None  # the discs that a rebuild's relaxing ellipses stay centred in
        self.beta = 1.0  # the power of the likelihood (< 1 while a run anneals)
        self._set_guide(guide, prior_births)
        self._set_library(library, library_births, library_switches)
        n_pixels = posterior.shape[0] * posterior.shape[1]
        self.probes = (np.random.default_rng(12345).standard_normal((int(probes), n_pixels))
                       / math.sqrt(n_pixels))
        self.probe_values = np.zeros(int(probes))
        self.marks: list[np.ndarray] = []
        self.prints: list[np.ndarray] = []
        self.units: list[np.ndarray] = []  # A applied to each ellipse's indicator
        self.x = np.zeros(n_pixels)
        self.p = np.zeros(posterior.data.size)
        for mark in (marks if marks is not None else []):
            mark = np.asarray(mark, np.float64)
            idx = footprint(mark, posterior.shape)
            self._insert(mark, idx, posterior.projection(idx, 1.0))
        self.log_l = posterior.log_likelihood(self.p)
        self.accepted = {"birth": 0, "death": 0, "update": 0, "merge": 0, "split": 0,
                         "joint": 0, "rebuild": 0}
        self.proposed = dict(self.accepted)

    # -- the guide -------------------------------------------------------------

    def _set_guide(self, guide, prior_births: float) -> None:
        self.guide = None
        if guide is None:
            return
        if self.post.prior.discrete:
            raise ValueError("a guide needs the continuous EllipsePrior")
        guide = np.asarray(guide, dtype=np.float64)
        if guide.shape != self.post.shape or not np.all(np.isfinite(guide)):
            raise ValueError(f"guide must be a finite image of shape {self.post.shape}, "
                             f"got shape {guide.shape}")
        if not 0 <= prior_births < 1:
            raise ValueError(f"prior_births must be in [0, 1), got {prior_births}")
        weights = np.abs(guide).ravel()
        if weights.sum() == 0:
            raise ValueError("guide is zero everywhere")
        self.guide = weights / weights.sum()
        self.guide_cdf = np.cumsum(self.guide)
        self.prior_births = float(prior_births)

    def _set_library(self, library, library_births: float, library_switches: float) -> None:
        self.library = library
        if library is None:
            return
        if self.post.prior.discrete:
            raise ValueError("a library needs the continuous EllipsePrior")
        if not isinstance(library, EllipseLibrary):
            raise TypeError(f"library must be an EllipseLibrary, got {type(library).__name__}")
        if not 0 < library_births < 1:
            raise ValueError(f"library_births must be in (0, 1), got {library_births}")
        if not 0 <= library_switches < 1:
            raise ValueError(f"library_switches must be in [0, 1), got {library_switches}")
        self.library_births = float(library_births)
        self.library_switches = float(library_switches)

    def _cell(self, mark: np.ndarray) -> int:
        """The guide's cell of a centre: [-1, 1]^2 cut into the grid's nx x ny cells."""
        nx, ny = self.post.shape
        i = min(int((mark[3] + 1) / 2 * nx), nx - 1)
        j = min(int((mark[4] + 1) / 2 * ny), ny - 1)
        return i * ny + j

    def _log_shape_correction(self, mark: np.ndarray) -> float:
        """``log(prior / proposal)`` density of a birth's shape (0 from the prior alone).

        The guided centre is uniform within a cell drawn with the guide's
        probability, so its density over the prior's (uniform on the square) is
        that probability times the number of cells. A library's share of the
        births adds its mixture's density over the prior's.
        """
        ratio = 1.0
        if self.guide is not None:
            q = self.prior_births
            ratio = q + (1 - q) * self.guide[self._cell(mark)] * self.guide.size
        if self.library is None:
            return -math.log(ratio)
        w = self.library_births
        log_library = self.library.log_density(mark[1:]) - self.post.prior.log_shape_density(mark)
        return -float(np.logaddexp(math.log(w) + log_library, math.log1p(-w) + math.log(ratio)))

    def _propose_shape(self) -> np.ndarray:
        mark = self.post.prior.sample_mark(self.rng)  # its value serves where none is fitted
        if self.library is not None and self.rng.random() < self.library_births:
            mark[1:] = self.library.sample(self.rng)
            return mark
        if self.guide is None or self.rng.random() < self.prior_births:
            return mark
        nx, ny = self.post.shape
        k = min(int(np.searchsorted(self.guide_cdf, self.rng.random() * self.guide_cdf[-1])),
                self.guide.size - 1)
        i, j = divmod(k, ny)
        mark[3] = -1 + 2 * (i + self.rng.random()) / nx
        mark[4] = -1 + 2 * (j + self.rng.random()) / ny
        return mark

    # -- fitted values -----------------------------------------------------------

    def _value_law(self, unit: np.ndarray, base: np.ndarray) -> tuple[float, float] | None:
        """Mean and width of the fitted value of a shape with projection ``unit`` on ``base``.

        ``None`` where values come from the prior instead (no fit, or a shape
        that covers no pixel centre and so leaves the data unchanged).
        """
        if not self.fitted:
            return None
        norm2 = float(np.dot(unit, unit))
        if norm2 == 0:
            return None
        mean = float(np.dot(unit, self.post.data - base)) / norm2
        return mean, self.value_width / math.sqrt(norm2)

    def _draw_value(self, law) -> float:
        if law is None:
            return float(self.post.prior.sample_mark(self.rng)[0])
        return law[0] + law[1] * float(self.rng.standard_normal())

    def _log_value_correction(self, value: float, law) -> float:
        """``log(prior / proposal)`` density of a value drawn by `_draw_value` from ``law``."""
        if law is None:
            return 0.0
        mean, width = law
        log_q = -0.5 * ((value - mean) / width) ** 2 - math.log(width * math.sqrt(2 * math.pi))
        return self.post.prior.log_value_density(value) - log_q

    # -- the state ---------------------------------------------------------------

    def _change(self, idx: np.ndarray, value: float) -> None:
        """Add ``value`` on the pixels ``idx`` to the image and its probes."""
        self.x[idx] += value
        self.probe_values += value * self.probes[:, idx].sum(axis=1)

    def _moved_projection(self, old_idx: np.ndarray, old_unit: np.ndarray,
                          idx: np.ndarray) -> np.ndarray:
        """``W`` applied to the footprint ``idx`` of a moved ellipse, from its old one's.

        A small step of a shape mark moves the boundary only, so projecting the
        pixels it left and gained (a thin ring) costs a fraction of projecting
        the whole ellipse; a large move (a library switch) is projected afresh.
        Footprints are sorted, as `footprint` returns them.
        """
        gone = np.setdiff1d(old_idx, idx, assume_unique=True)
        came = np.setdiff1d(idx, old_idx, assume_unique=True)
        if gone.size + came.size >= idx.size:
            return self.post.projection(idx, 1.0)
        return old_unit - self.post.projection(gone, 1.0) + self.post.projection(came, 1.0)

    def _insert(self, mark: np.ndarray, idx: np.ndarray, unit: np.ndarray) -> None:
        self.marks.append(mark)
        self.prints.append(idx)
        self.units.append(unit)
        self._change(idx, mark[0])
        self.p = self.p + mark[0] * unit

    @property
    def n(self) -> int:
        return len(self.marks)

    def _accept(self, log_ratio: float) -> bool:
        return log_ratio >= 0 or self.rng.random() < math.exp(log_ratio)

    # -- the moves ---------------------------------------------------------------

    def step(self) -> None:
        """One proposal: a birth, a death or an update, accepted or not."""
        if self.p_rebuild > 0 and self.rng.random() < self.p_rebuild:
            self._rebuild()
            return
        u = self.rng.random()
        merges = u >= self.p_birth + self.p_death
        if merges and u < self.p_birth + self.p_death + self.p_merge:
            self._merge()
        elif merges and u < self.p_birth + self.p_death + 2 * self.p_merge:
            self._split()
        elif self.p_joint > 0 and self.rng.random() < self.p_joint:
            self._joint_move("birth" if u < self.p_birth else
                             "death" if u < self.p_birth + self.p_death else "update")
        elif u < self.p_birth:
            self._birth()
        elif u < self.p_birth + self.p_death:
            self._death()
        else:
            self._update()

    def _birth(self) -> None:
        self.proposed["birth"] += 1
        prior = self.post.prior
        if self.n >= prior.max_count:
            return
        if prior.discrete:
            mark, correction = prior.sample_mark(self.rng), 0.0
            idx = footprint(mark, self.post.shape)
            unit = self.post.projection(idx, 1.0)
        else:
            mark = self._propose_shape()
            if prior.log_shape_density(mark) == -math.inf:
                return  # a library's draw outside the prior's support
            idx = footprint(mark, self.post.shape)
            unit = self.post.projection(idx, 1.0)
            law = self._value_law(unit, self.p) if self.fitted else None
            if law is not None:
                mark[0] = self._draw_value(law)
            correction = (self._log_shape_correction(mark)
                          + self._log_value_correction(mark[0], law))
        p_new = self.p + mark[0] * unit
        log_l = self.post.log_likelihood(p_new)
        log_ratio = (self.beta * (log_l - self.log_l) + math.log(prior.mean_count / (self.n + 1))
                     + math.log(self.p_death / self.p_birth) + correction)
        if self._accept(log_ratio):
            self._insert(mark, idx, unit)
            self.p, self.log_l = p_new, log_l
            self.accepted["birth"] += 1

    def _death(self) -> None:
        self.proposed["death"] += 1
        if self.n == 0:
            return
        k = int(self.rng.integers(self.n))
        mark, idx, unit = self.marks[k], self.prints[k], self.units[k]
        p_new = self.p - mark[0] * unit
        correction = 0.0
        if not self.post.prior.discrete:  # the reverse birth, from the state without it
            law = self._value_law(unit, p_new) if self.fitted else None
            correction = (self._log_shape_correction(mark)
                          + self._log_value_correction(mark[0], law))
        log_l = self.post.log_likelihood(p_new)
        log_ratio = (self.beta * (log_l - self.log_l)
                     + math.log(self.n / self.post.prior.mean_count)
                     + math.log(self.p_birth / self.p_death) - correction)
        if self._accept(log_ratio):
            self._change(idx, -mark[0])
            del self.marks[k], self.prints[k], self.units[k]
            self.p, self.log_l = p_new, log_l
            self.accepted["death"] += 1

    def _update(self, k: int | None = None) -> None:
        self.proposed["update"] += 1
        if self.n == 0:
            return
        prior = self.post.prior
        k = int(self.rng.integers(self.n)) if k is None else k
        old, old_idx, old_unit = self.marks[k], self.prints[k], self.units[k]
        j = int(self.rng.integers(6))
        if prior.discrete:  # an independent draw from the prior (its ratio cancels)
            new, log_ratio = prior.sample_mark(self.rng), 0.0
        elif self.library is not None and self.rng.random() < self.library_switches:
            # A switch: the whole shape drawn from the library, independently of
            # the old one, so the reverse switch draws the old from it again.
            new = old.copy()
            new[1:] = self.library.sample(self.rng)
            log_ratio = (prior.log_shape_density(new) - prior.log_shape_density(old)
                         + self.library.log_density(old[1:])
                         - self.library.log_density(new[1:]))
            if not math.isfinite(log_ratio):
                return
        else:
            new = old.copy()
            if j > 0 or not self.fitted:
                new[j] += self.steps[j] * self.rng.standard_normal()
                if j == 5:
                    new[5] %= 2 * math.pi
            log_ratio = prior.log_shape_density(new) - prior.log_shape_density(old)
            if not math.isfinite(log_ratio):
                return
        if self._region is not None and not self._in_region(new):
            return
        idx = old_idx if np.array_equal(new[1:], old[1:]) else footprint(new, self.post.shape)
        unit = old_unit if idx is old_idx else self._moved_projection(old_idx, old_unit, idx)
        if self.fitted:
            # Re-fit the value to the new shape on the image without this ellipse;
            # the reverse move re-fits the old value to the old shape there.
            rest = self.p - old[0] * old_unit
            law_new, law_old = self._value_law(unit, rest), self._value_law(old_unit, rest)
            new[0] = self._draw_value(law_new)
            log_ratio += (self._log_value_correction(new[0], law_new)
                          - self._log_value_correction(old[0], law_old))
        elif not prior.discrete:
            log_ratio += prior.log_value_density(new[0]) - prior.log_value_density(old[0])
        if not math.isfinite(log_ratio):
            return
        p_new = self.p - old[0] * old_unit + new[0] * unit
        log_l = self.post.log_likelihood(p_new)
        if self._accept(self.beta * (log_l - self.log_l) + log_ratio):
            self._change(old_idx, -old[0])
            self._change(idx, new[0])
            self.marks[k], self.prints[k], self.units[k] = new, idx, unit
            self.p, self.log_l = p_new, log_l
            self.accepted["update"] += 1

    # -- merges and splits --------------------------------------------------------

    def _joint_law(self, units, base: np.ndarray, width: float | None = None):
        """The law of the joint draw of the values of the ellipses whose projections are ``units``.

        Those values are drawn jointly as ``N(mean, width^2 G^-1)``, ``G``
        the Gram matrix of ``units`` and ``mean`` their least-squares fit to the
        data less ``base`` (the rest of ``A x``) and ``width`` by default
        ``value_width``: the law of the values given the shapes when ``width`` is
        the noise level of the data. A shape whose projection is zero
        (it covers no pixel centre) leaves the data unchanged: its value comes
        from the prior, as in `_value_law`. Returns ``(mean, gram, lower, free, width)``
        (``lower`` the Cholesky factor of ``G``, ``free`` the mask of the fitted
        values), or ``None`` where the fit is not defined: a projection (nearly)
        in the span of the others (less than ``1e-9`` of its squared norm
        outside it).
        """
        units = np.asarray(units, dtype=np.float64).reshape(-1, self.post.data.size)
        return self._gaussian_law(units @ units.T, units @ (self.post.data - base), width)

    def _gaussian_law(self, gram: np.ndarray, rhs: np.ndarray, width: float | None = None):
        """`_joint_law` from the Gram matrix of the projections and their products with the data
        less the rest."""
        width = self.value_width if width is None else float(width)
        free = np.diag(gram) > 0
        gram = gram[np.ix_(free, free)]
        if len(gram) == 0:
            return np.zeros(0), gram, gram, free, width
        try:
            lower = np.linalg.cholesky(gram)
        except np.linalg.LinAlgError:
            return None
        if not np.all(np.diag(lower) ** 2 > 1e-9 * np.diag(gram)):
            return None
        return np.linalg.solve(gram, rhs[free]), gram, lower, free, width

    def _draw_joint(self, law) -> np.ndarray:
        mean, _, lower, free, width = law
        values = np.empty(free.size)
        values[~free] = [self.post.prior.sample_mark(self.rng)[0] for _ in range(np.sum(~free))]
        if mean.size:
            values[free] = mean + width * np.linalg.solve(
                lower.T, self.rng.standard_normal(mean.size))
        return values

    def _log_joint_density(self, values: np.ndarray, law) -> float:
        mean, gram, lower, free, width = law
        values = np.asarray(values, dtype=np.float64)
        log_prior = sum(self.post.prior.log_value_density(v) for v in values[~free])
        if mean.size == 0:
            return log_prior
        d = values[free] - mean
        w2 = width ** 2
        return float(log_prior - 0.5 * d @ gram @ d / w2
                     - 0.5 * mean.size * math.log(2 * math.pi * w2)
                     + np.sum(np.log(np.diag(lower))))

    def _log_normal(self, value: float, law) -> float:
        mean, width = law
        return -0.5 * ((value - mean) / width) ** 2 - math.log(width * math.sqrt(2 * math.pi))

    def _log_split_shape(self, mark: np.ndarray, around: np.ndarray) -> float:
        """``log`` density of the new ellipse of a split of ``around``.

        Its centre is normal around ``around``'s (the larger half-axis as standard
        deviation), its half-axes and rotation are the prior's: the prior's shape
        density with the uniform centre's ``1/4`` replaced by the normal's.
        """
        radius = max(around[1], around[2])
        d2 = (mark[3] - around[3]) ** 2 + (mark[4] - around[4]) ** 2
        log_centre = -0.5 * d2 / radius ** 2 - math.log(2 * math.pi * radius ** 2)
        return self.post.prior.log_shape_density(mark) - math.log(0.25) + log_centre

    @staticmethod
    def _meets(a: np.ndarray, b: np.ndarray) -> bool:
        """Whether two ellipses' bounding circles meet (they are neighbours)."""
        return math.hypot(a[3] - b[3], a[4] - b[4]) < max(a[1], a[2]) + max(b[1], b[2])

    def _neighbours(self, mark: np.ndarray, skip: int | None) -> np.ndarray:
        """The indices of the chain's ellipses other than ``skip`` that meet ``mark``."""
        if not self.marks:
            return np.zeros(0, dtype=np.int64)
        marks = np.array(self.marks)
        reach = np.maximum(marks[:, 1], marks[:, 2]) + max(mark[1], mark[2])
        near = np.hypot(marks[:, 3] - mark[3], marks[:, 4] - mark[4]) < reach
        if skip is not None:
            near[skip] = False
        return np.flatnonzero(near)

    def _shape_step(self, mark: np.ndarray) -> np.ndarray:
        new = mark.copy()
        new[1:] += self.merge_steps * self.rng.standard_normal(5)
        new[5] %= 2 * math.pi
        return new

    def _merge(self) -> None:
        self.proposed["merge"] += 1
        if self.n < 2:
            return
        i = int(self.rng.integers(self.n))
        near = self._neighbours(self.marks[i], i)
        if near.size == 0:
            return
        j = int(near[self.rng.integers(near.size)])
        new = self._shape_step(self.marks[i])
        plan = self._merge_plan(i, j, new)
        if plan is None:
            return
        new[0] = self._draw_value(plan["law"])
        log_ratio, p_new, log_l = self._merge_log_ratio(i, j, new, plan)
        if math.isfinite(log_ratio) and self._accept(log_ratio):
            first, second = self.marks[i], self.marks[j]
            self._change(self.prints[i], -first[0])
            self._change(self.prints[j], -second[0])
            self._change(plan["idx"], new[0])
            self.marks[i], self.prints[i], self.units[i] = new, plan["idx"], plan["unit"]
            del self.marks[j], self.prints[j], self.units[j]
            self.p, self.log_l = p_new, log_l
            self.accepted["merge"] += 1

    def _merge_plan(self, i: int, j: int, new: np.ndarray) -> dict | None:
        """What merging ``j`` into ``i``, reshaped as ``new``, needs (``None``: it cannot be)."""
        if self.post.prior.log_shape_density(new) == -math.inf:
            return None
        idx = footprint(new, self.post.shape)
        unit = self._moved_projection(self.prints[i], self.units[i], idx)
        rest = self.p - self.marks[i][0] * self.units[i] - self.marks[j][0] * self.units[j]
        law = self._value_law(unit, rest)
        pair = self._joint_law([self.units[i], self.units[j]], rest)
        if law is None or pair is None:
            return None
        return {"idx": idx, "unit": unit, "rest": rest, "law": law, "pair": pair}

    def _merge_log_ratio(self, i: int, j: int, new: np.ndarray, plan: dict):
        """``log`` of a merge's acceptance ratio (`_merge_plan`); ``A x`` and ``log L`` after."""
        prior, n = self.post.prior, self.n
        first, second = self.marks[i], self.marks[j]
        near = self._neighbours(first, i).size
        p_new = plan["rest"] + new[0] * plan["unit"]
        log_l = self.post.log_likelihood(p_new)
        # The posterior's ratio (one ellipse fewer), then the reverse split's chance of
        # proposing the two back over this merge's chance of proposing it.
        log_ratio = (self.beta * (log_l - self.log_l) + prior.log_mark_density(new)
                     - prior.log_mark_density(first) - prior.log_mark_density(second)
                     - math.log(prior.mean_count)
                     + math.log(n / (n - 1)) + math.log(near)
                     + self._log_split_shape(second, new)
                     + self._log_joint_density(np.array([first[0], second[0]]), plan["pair"])
                     - self._log_normal(new[0], plan["law"]))
        return log_ratio, p_new, log_l

    def _split(self) -> None:
        self.proposed["split"] += 1
        if self.n < 1 or self.n >= self.post.prior.max_count:
            return
        i = int(self.rng.integers(self.n))
        old = self.marks[i]
        other = self.post.prior.sample_mark(self.rng)
        other[3:5] = old[3:5] + max(old[1], old[2]) * self.rng.standard_normal(2)
        moved = self._shape_step(old)
        plan = self._split_plan(i, moved, other)
        if plan is None:
            return
        moved[0], other[0] = self._draw_joint(plan["pair"])
        log_ratio, p_new, log_l = self._split_log_ratio(i, moved, other, plan)
        if math.isfinite(log_ratio) and self._accept(log_ratio):
            self._change(self.prints[i], -old[0])
            self._change(plan["idx"], moved[0])
            self.marks[i], self.prints[i], self.units[i] = moved, plan["idx"], plan["unit"]
            self._insert(other, plan["other_idx"], plan["other_unit"])
            self.p, self.log_l = p_new, log_l
            self.accepted["split"] += 1

    def _split_plan(self, i: int, moved: np.ndarray, other: np.ndarray) -> dict | None:
        """What splitting ``i`` into ``moved`` and ``other`` needs (``None``: it cannot be)."""
        prior = self.post.prior
        if (prior.log_shape_density(other) == -math.inf
                or prior.log_shape_density(moved) == -math.inf
                or not self._meets(moved, other)):
            return None  # outside the prior, or a pair that no merge would propose
        idx = footprint(moved, self.post.shape)
        unit = self._moved_projection(self.prints[i], self.units[i], idx)
        other_idx = footprint(other, self.post.shape)
        other_unit = self.post.projection(other_idx, 1.0)
        rest = self.p - self.marks[i][0] * self.units[i]
        law = self._value_law(self.units[i], rest)
        pair = self._joint_law([unit, other_unit], rest)
        if law is None or pair is None:
            return None
        return {"idx": idx, "unit": unit, "other_idx": other_idx, "other_unit": other_unit,
                "rest": rest, "law": law, "pair": pair}

    def _split_log_ratio(self, i: int, moved: np.ndarray, other: np.ndarray, plan: dict):
        """``log`` of a split's acceptance ratio (`_split_plan`); ``A x`` and ``log L`` after."""
        prior, n = self.post.prior, self.n
        old = self.marks[i]
        near = self._neighbours(moved, i).size + 1  # the new one among them
        p_new = plan["rest"] + moved[0] * plan["unit"] + other[0] * plan["other_unit"]
        log_l = self.post.log_likelihood(p_new)
        log_ratio = (self.beta * (log_l - self.log_l) + prior.log_mark_density(moved)
                     + prior.log_mark_density(other) - prior.log_mark_density(old)
                     + math.log(prior.mean_count)
                     + math.log(n / (n + 1)) - math.log(near)
                     - self._log_split_shape(other, old)
                     - self._log_joint_density(np.array([moved[0], other[0]]), plan["pair"])
                     + self._log_normal(old[0], plan["law"]))
        return log_ratio, p_new, log_l

    # -- joint moves ------------------------------------------------------------------

    def _birth_terms(self, mark: np.ndarray, n: int) -> float:
        """``log`` of a birth's ratio from ``n`` ellipses but for the likelihood and the marks.

        The count's prior, the chances of proposing the birth and its reverse
        death, and the shape's proposal density; a death's is its negative from
        ``n - 1``.
        """
        prior = self.post.prior
        return (math.log(prior.mean_count / (n + 1)) + math.log(self.p_death / self.p_birth)
                + self._log_shape_correction(mark) - prior.log_shape_density(mark))

    def _joint_move(self, kind: str, k: int | None = None) -> None:
        """A birth, death or update that also redraws the values of its neighbours."""
        self.proposed[kind] += 1
        self.proposed["joint"] += 1
        prior = self.post.prior
        if kind == "birth":
            k, new, terms = None, self._propose_shape(), 0.0
            if prior.log_shape_density(new) == -math.inf:
                return
            near = self._neighbours(new, None)
        elif self.n == 0:
            return
        else:
            k = int(self.rng.integers(self.n)) if k is None else k
            new, terms = None, 0.0
            if kind == "update":
                new, terms = self._shape_proposal(self.marks[k])
                if new is None or (self._region is not None and not self._in_region(new)):
                    return
            near = self._joint_neighbours(k, new)
        idx = unit = None
        if new is not None:
            same = k is not None and np.array_equal(new[1:], self.marks[k][1:])
            idx = self.prints[k] if same else footprint(new, self.post.shape)
            unit = (self.units[k] if same else self.post.projection(idx, 1.0) if k is None
                    else self._moved_projection(self.prints[k], self.units[k], idx))
        plan = self._joint_plan(k, unit, near)
        if plan is None:
            return
        drawn = self._draw_joint(plan["after"])
        values = drawn[:near.size]
        if new is not None:
            new[0] = drawn[-1]
        if kind == "birth":
            terms = self._birth_terms(new, self.n)
        elif kind == "death":
            terms = -self._birth_terms(self.marks[k], self.n - 1)
        log_ratio, p_new, log_l = self._joint_log_ratio(k, new, unit, near, values, plan, terms)
        if math.isfinite(log_ratio) and self._accept(log_ratio):
            self._apply_joint(k, new, idx, unit, near, values)
            self.p, self.log_l = p_new, log_l
            self.accepted[kind] += 1
            self.accepted["joint"] += 1

    def _joint_neighbours(self, k: int, new: np.ndarray | None) -> np.ndarray:
        """The neighbours whose values a joint death (``new`` None) or update of ``k`` redraws.

        For an update, those of the old shape and of the new one: the same set for
        the move and its reverse.
        """
        near = self._neighbours(self.marks[k], k)
        return near if new is None else np.union1d(near, self._neighbours(new, k))

    def _shape_proposal(self, old: np.ndarray) -> tuple[np.ndarray | None, float]:
        """An update's new shape for ``old`` and its ``log`` proposal ratio (reverse over forward).

        A random-walk step of one shape mark (symmetric) or, for the value mark, the
        same shape; a share ``library_switches`` draws the shape from the library.
        ``None`` outside the prior's support.
        """
        new = old.copy()
        terms = 0.0
        if self.library is not None and self.rng.random() < self.library_switches:
            new[1:] = self.library.sample(self.rng)
            terms = self.library.log_density(old[1:]) - self.library.log_density(new[1:])
        else:
            j = int(self.rng.integers(6))
            if j > 0:
                new[j] += self.steps[j] * self.rng.standard_normal()
                new[5] %= 2 * math.pi
        if self.post.prior.log_shape_density(new) == -math.inf or not math.isfinite(terms):
            return None, 0.0
        return new, terms

    def _joint_plan(self, k: int | None, unit, near: np.ndarray) -> dict | None:
        """The laws of a joint move's values: after it (``near``'s and the new shape's) and before.

        ``k``: the changed ellipse (``None`` for a birth); ``unit``: the new
        shape's projection (``None`` for a death). Both laws are fitted on the
        same rest of ``A x`` (all other ellipses), so the reverse move redraws the
        old values from the law before. ``None`` where either is not defined.
        """
        stacked = np.array([self.units[i] for i in near]).reshape(-1, self.p.size)
        rest = self.p - np.array([self.marks[i][0] for i in near]) @ stacked
        if k is not None:
            rest = rest - self.marks[k][0] * self.units[k]
        residual = self.post.data - rest
        gram, rhs = stacked @ stacked.T, stacked @ residual

        def law(extra):  # of the neighbours' values and, if any, ``extra``'s
            if extra is None:
                return self._gaussian_law(gram, rhs, self.joint_width)
            cross = stacked @ extra
            full = np.block([[gram, cross[:, None]], [cross[None], np.array([[extra @ extra]])]])
            return self._gaussian_law(full, np.append(rhs, extra @ residual), self.joint_width)

        after, before = law(unit), law(None if k is None else self.units[k])
        if after is None or before is None:
            return None
        return {"rest": rest, "stacked": stacked, "after": after, "before": before}

    def _joint_log_ratio(self, k: int | None, new: np.ndarray | None, unit, near: np.ndarray,
                         values: np.ndarray, plan: dict, terms: float):
        """``log`` of a joint move's acceptance ratio; ``A x`` and ``log L`` after it.

        ``values``: the neighbours' new values (``new[0]`` the changed one's);
        ``terms``: the move's own part (`_birth_terms`, or an update's shape proposal ratio).
        """
        prior = self.post.prior
        p_new = plan["rest"] + np.asarray(values) @ plan["stacked"]
        log_marks = sum(prior.log_value_density(v) - prior.log_value_density(self.marks[i][0])
                        for i, v in zip(near, values, strict=True))
        before = np.array([self.marks[i][0] for i in near])
        after = np.asarray(values, dtype=np.float64)
        if new is not None:
            p_new = p_new + new[0] * unit
            log_marks += prior.log_mark_density(new)
            after = np.append(after, new[0])
        if k is not None:
            log_marks -= prior.log_mark_density(self.marks[k])
            before = np.append(before, self.marks[k][0])
        log_l = self.post.log_likelihood(p_new)
        log_ratio = (self.beta * (log_l - self.log_l) + log_marks + terms
                     + self._log_joint_density(before, plan["before"])
                     - self._log_joint_density(after, plan["after"]))
        return log_ratio, p_new, log_l

    def _apply_joint(self, k, new, idx, unit, near, values) -> None:
        for i, v in zip(near, values, strict=True):
            mark = self.marks[i].copy()
            self._change(self.prints[i], v - mark[0])
            mark[0] = v
            self.marks[i] = mark
        if k is None:
            self._insert(new, idx, unit)
            return
        self._change(self.prints[k], -self.marks[k][0])
        if new is None:
            del self.marks[k], self.prints[k], self.units[k]
        else:
            self._change(idx, new[0])
            self.marks[k], self.prints[k], self.units[k] = new, idx, unit

    # -- rebuilds --------------------------------------------------------------------

    def _in_region(self, mark: np.ndarray) -> bool:
        """Whether an ellipse's centre lies in the discs of the rebuild under way."""
        return any(math.hypot(mark[3] - x, mark[4] - y) < r for x, y, r in self._region)

    def _rebuild_shape(self, old: np.ndarray) -> tuple[np.ndarray | None, float]:
        """A rebuild's new shape for ``old`` and its ``log`` proposal ratio (reverse over forward).

        From the library where there is one, its candidates centred near ``old``
        drawn the more often (`EllipseLibrary.sample` with ``near``), else a
        random-walk step of every shape mark at the merges' scale (symmetric).
        """
        new = old.copy()
        if self.library is not None:
            new[1:] = self.library.sample(self.rng, near=old[1:])
            if self.post.prior.log_shape_density(new) == -math.inf:
                return None, 0.0  # before the reverse draw's density, which needs axes > 0
            terms = (self.library.log_density(old[1:], near=new[1:])
                     - self.library.log_density(new[1:], near=old[1:]))
        else:
            new[1:] += self.merge_steps * self.rng.standard_normal(5)
            new[5] %= 2 * math.pi
            terms = 0.0
        if self.post.prior.log_shape_density(new) == -math.inf or not math.isfinite(terms):
            return None, 0.0
        return new, terms

    def _rebuild(self) -> None:
        """A non-equilibrium candidate move: one ellipse changes shape while its neighbours relax.

        One ellipse, picked at random, takes a new shape (`_rebuild_shape`) not at
        once but over ``rebuild_stages`` stages: its projection slides from the old
        footprint's to the new one's, ``(1 - t) A 1_old + t A 1_new`` times its
        value, with ``t`` rising in equal steps. Between stages the ellipses
        centred in the two shapes' discs (their larger half-axis plus
        ``rebuild_margin``) relax: ``rebuild_relax`` updates (joint ones in the
        share ``joint``), each of one of them picked at random, at the
        intermediate target; an update that would take a centre out of the discs
        is rejected, so that the same ellipses relax in the reverse move. The
        move is accepted with the sum over stages of the change of the log
        target at each stage (the *work*), plus the proposal ratio of the shape:
        the acceptance of nonequilibrium candidate Monte Carlo (Nilmeier et al.),
        which leaves the posterior unchanged because every relaxation leaves its
        stage's target unchanged and the stages run in the reverse order in the
        reverse move. So an ellipse that the ellipses around it have learned to
        do without can take its own shape while they give way.
        """
        self.proposed["rebuild"] += 1
        if self.n == 0:
            return
        prior = self.post.prior
        j = int(self.rng.integers(self.n))
        old = self.marks[j]
        new, terms = self._rebuild_shape(old)
        if new is None:
            return
        new_idx = footprint(new, self.post.shape)
        new_unit = self._moved_projection(self.prints[j], self.units[j], new_idx)
        saved = dict(marks=list(self.marks), prints=list(self.prints), units=list(self.units),
                     x=self.x.copy(), p=self.p, log_l=self.log_l,
                     probe_values=self.probe_values.copy())  # every name of _STATE
        counts = (dict(self.proposed), dict(self.accepted))
        old_idx, old_unit = self.prints[j], self.units[j]
        # Out of the lists while it slides; its share stays in A x and the image.
        del self.marks[j], self.prints[j], self.units[j]
        margin = self.rebuild_margin
        self._region = [(m[3], m[4], max(m[1], m[2]) + margin) for m in (old, new)]
        relaxing = [i for i, mark in enumerate(self.marks) if self._in_region(mark)]
        work = prior.log_shape_density(new) - prior.log_shape_density(old) + terms
        step = old[0] / self.rebuild_stages
        try:
            for stage in range(self.rebuild_stages):
                p_new = self.p + step * (new_unit - old_unit)
                log_l = self.post.log_likelihood(p_new)
                work += self.beta * (log_l - self.log_l)
                self.p, self.log_l = p_new, log_l
                self._change(old_idx, -step)
                self._change(new_idx, step)
                if stage == self.rebuild_stages - 1 or not relaxing:
                    continue
                for _ in range(self.rebuild_relax):
                    k = relaxing[int(self.rng.integers(len(relaxing)))]
                    if self.p_joint > 0 and self.rng.random() < self.p_joint:
                        self._joint_move("update", k)
                    else:
                        self._update(k)
        finally:
            self._region = None
            self.proposed, self.accepted = counts
        if math.isfinite(work) and self._accept(work):
            self.marks.insert(j, new)
            self.prints.insert(j, new_idx)
            self.units.insert(j, new_unit)
            self.accepted["rebuild"] += 1
            return
        for name, value in saved.items():
            setattr(self, name, value)

    def run(self, n_steps: int, burn_in: int = 0, thin: int = 1, *, anneal: int = 0,
            beta_start: float = 1e-3, after_step: Callable[[int], Any] | None = None) -> dict:
        """Run ``n_steps`` proposals; the mean and variance of the images after ``burn_in``.

        ``anneal`` proposals at the start (part of the burn-in) raise the power of
        the likelihood geometrically from ``beta_start`` to 1, so that the chain
        first roams near the prior and then settles into the posterior; only
        proposals at power 1 are kept.

        Returns ``{"mean", "var", "n_kept", "halves", "counts", "log_likelihood",
        "probes"}``: the mean and variance of the image over the samples kept
        (every ``thin`` proposals after ``burn_in``), the number, mean and
        variance of each half of them (for the split R-hat of `sample`), and the
        traces of the ellipse count, the log-likelihood and the probes.
        ``after_step(s)`` is called after proposal ``s``, before it is kept
        (`ParallelTempering` moves its hotter chains and swaps states there).
        """
        n_steps, burn_in, thin, anneal = int(n_steps), int(burn_in), int(thin), int(anneal)
        if not 0 <= burn_in < n_steps or thin < 1:
            raise ValueError(f"need 0 <= burn_in < n_steps and thin >= 1, got burn_in "
                             f"{burn_in}, n_steps {n_steps}, thin {thin}")
        if not 0 <= anneal <= burn_in:
            raise ValueError(f"anneal ({anneal}) must be within the burn-in ({burn_in})")
        if anneal and not 0 < beta_start <= 1:
            raise ValueError(f"beta_start must be in (0, 1], got {beta_start}")
        kept_total = (n_steps - burn_in + thin - 1) // thin
        half = kept_total // 2
        sums = np.zeros((2, self.x.size))
        squares = np.zeros((2, self.x.size))
        numbers = [0, 0]
        counts, log_ls, probes = [], [], []
        kept = 0
        for s in range(n_steps):
            self.beta = beta_start ** (1 - s / anneal) if s < anneal else 1.0
            self.step()
            if after_step is not None:
                after_step(s)
            if s >= burn_in and (s - burn_in) % thin == 0:
                h = 0 if kept < half else 1
                sums[h] += self.x
                squares[h] += self.x * self.x
                numbers[h] += 1
                counts.append(self.n)
                log_ls.append(self.log_l)
                probes.append(self.probe_values.copy())
                kept += 1
        self.beta = 1.0
        shape = self.post.shape
        total, total_sq = sums.sum(0), squares.sum(0)
        mean = total / kept
        var = np.maximum(total_sq / kept - mean * mean, 0)
        halves = []
        for h in range(2):
            m = sums[h] / max(numbers[h], 1)
            halves.append((numbers[h], m.reshape(shape), np.maximum(
                squares[h] / max(numbers[h], 1) - m * m, 0).reshape(shape)))
        return {"mean": mean.reshape(shape), "var": var.reshape(shape), "n_kept": kept,
                "halves": halves, "counts": np.array(counts),
                "log_likelihood": np.array(log_ls), "probes": np.array(probes)}


_STATE = ("marks", "prints", "units", "x", "p", "log_l", "probe_values")


def swap_states(a: ReversibleJump, b: ReversibleJump) -> None:
    """Exchange the ellipses (and what is computed from them) of two chains on one posterior."""
    if a.post is not b.post:
        raise ValueError("only chains on the same posterior can swap states")
    for name in _STATE:
        first, second = getattr(a, name), getattr(b, name)
        setattr(a, name, second)
        setattr(b, name, first)


class ParallelTempering:
    """Chains at powers ``1 = beta_0 > beta_1 > ... `` of the likelihood that swap states.

    Chain ``k`` targets ``prior x likelihood^beta_k``; the hotter ones roam
    further (a flatter likelihood lets them drop and grow ellipses that the
    data hold in place at ``beta = 1``). Every ``swap_every`` proposals each
    adjacent pair ``(k, k + 1)`` proposes to exchange states, accepted with
    probability ``min(1, exp((beta_k - beta_{k+1}) (log L_{k+1} - log L_k)))``,
    which keeps every chain's target (replica exchange: Swendsen & Wang 1986,
    Geyer 1991). Only the cold chain's images are kept, so its mean is still
    ``E[x | y]``; the ladder buys mixing between modes for ``len(betas)`` times
    the proposals.

    Parameters
    ----------
    posterior : EllipsePosterior
    rng : numpy.random.Generator
        Draws the swaps and seeds the chains (one stream each).
    marks : array, shape (n, 6), optional
        The start of every chain.
    betas : sequence of float
        The ladder, from 1 down (a geometric one: `geometric_ladder`).
    swap_every : int
        Proposals of each chain between two rounds of swaps.
    **chain_options
        Options of every `ReversibleJump`.
    """

    def __init__(self, posterior: EllipsePosterior, rng: np.random.Generator, marks=None, *,
                 betas: Sequence[float] = (1.0, 0.5, 0.25), swap_every: int = 100,
                 **chain_options):
        betas = [float(b) for b in betas]
        if not betas or betas[0] != 1.0 or any(not 0 < b2 < b1
                                                for b1, b2 in itertools.pairwise(betas)):
            raise ValueError(f"betas must start at 1 and fall strictly within (0, 1], got {betas}")
        if int(swap_every) < 1:
            raise ValueError(f"swap_every must be >= 1, got {swap_every}")
        self.rng = rng
        seeds = rng.integers(2**63, size=len(betas))
        self.chains = [ReversibleJump(posterior, np.random.default_rng(int(seed)), marks,
                                      **chain_options) for seed in seeds]
        self.betas = betas
        self.swap_every = int(swap_every)
        self.swaps_proposed = [0] * (len(betas) - 1)
        self.swaps_accepted = [0] * (len(betas) - 1)

    @property
    def cold(self) -> ReversibleJump:
        return self.chains[0]

    def _after_step(self, s: int) -> None:
        for chain, beta in zip(self.chains[1:], self.betas[1:], strict=True):
            chain.beta = beta
            chain.step()
        if (s + 1) % self.swap_every:
            return
        for k in range(len(self.chains) - 1):
            a, b = self.chains[k], self.chains[k + 1]
            log_ratio = (a.beta - b.beta) * (b.log_l - a.log_l)
            self.swaps_proposed[k] += 1
            if log_ratio >= 0 or self.rng.random() < math.exp(log_ratio):
                swap_states(a, b)
                self.swaps_accepted[k] += 1

    def run(self, n_steps: int, burn_in: int = 0, thin: int = 1, **options) -> dict:
        """`ReversibleJump.run` of the cold chain, the others moving beside it.

        While the cold chain anneals (``anneal``) its power is below 1 and the
        swaps use the powers of the moment. The result adds ``swap_rates``: the
        accepted share of the swaps of each adjacent pair.
        """
        result = self.cold.run(n_steps, burn_in, thin, after_step=self._after_step, **options)
        result["swap_rates"] = [a / max(p, 1) for a, p in
                                zip(self.swaps_accepted, self.swaps_proposed, strict=True)]
        return result


def geometric_ladder(n: int, hottest: float) -> list[float]:
    """``n`` powers of the likelihood from 1 down to ``hottest``, evenly spaced in log."""
    if int(n) < 1 or not 0 < hottest <= 1:
        raise ValueError(f"need n >= 1 and 0 < hottest <= 1, got {n}, {hottest}")
    if int(n) == 1:
        return [1.0]
    return [float(b) for b in np.geomspace(1.0, hottest, int(n))]


def _pursuit(columns: list[np.ndarray], library: np.ndarray, residual: np.ndarray
             ) -> tuple[int, float] | None:
    """The library column that best fits ``residual`` with every coefficient fitted again.

    Orthogonal matching pursuit's choice: each column less its part in the span
    of ``columns`` (the ones already chosen), against a residual that the least
    squares fit on those columns leaves. Returns its index and its coefficient
    against the residual on its own (``None`` if no column fits any of it).
    """
    if len(library) == 0:
        return None
    apart = library
    if columns:
        basis = np.linalg.qr(np.array(columns).T)[0]
        apart = library - (library @ basis) @ basis.T
    norms = np.einsum("ij,ij->i", apart, apart)
    gains = np.where(norms > 1e-12 * np.einsum("ij,ij->i", library, library),
                     (apart @ residual) ** 2 / np.maximum(norms, 1e-300), 0.0)
    k = int(np.argmax(gains))
    if not gains[k] > 0:
        return None
    return k, float(library[k] @ residual) / float(library[k] @ library[k])


def _library(detected: np.ndarray, prior: EllipsePrior, shape, columns
             ) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """The detected shapes inside the prior's support: (mark, footprint) and their columns."""
    kept = []
    for d in detected:
        mark = np.concatenate([[0.0], d])
        if prior.log_shape_density(mark) > -math.inf:
            idx = footprint(mark, shape)
            if idx.size:
                kept.append((mark, idx))
    return kept, np.array([columns(idx) for _, idx in kept])


def _fit_image(target: np.ndarray, prior: EllipsePrior, rng: np.random.Generator, *,
               candidates: int, refine: int, max_count: int, patience: int,
               target_error: float, detected: np.ndarray) -> np.ndarray:
    """Ellipses that sum to ``target`` (an image), greedily, in the image domain.

    The same search as `greedy_start` with the image's squared error, at the
    noise level ``target_error``, in place of the data's log-likelihood; its
    candidates are the regions of the residual image (`moment_candidates`) and
    the ``detected`` shapes as well as the prior's draws.
    """
    shape = target.shape
    flat = np.asarray(target, np.float64).ravel()
    x = np.zeros_like(flat)
    marks: list[np.ndarray] = []
    prints: list[np.ndarray] = []
    two_var = 2 * float(target_error) ** 2
    penalty = 3 * math.log(flat.size)
    steps = np.array([0.02, 0.01, 0.01, 0.01, 0.01, 0.1])

    library = [np.concatenate([[0.0], d]) for d in detected]
    failures = 0
    while len(marks) < max_count and failures < patience:
        residual = flat - x
        cdf = np.cumsum(residual ** 2)
        if cdf[-1] == 0:
            break
        best = None
        matched = moment_candidates(residual.reshape(shape)) + [m.copy() for m in library]
        for c in range(len(matched) + candidates):
            if c < len(matched):
                mark = matched[c]
            else:
                mark = prior.sample_mark(rng)
                k = min(int(np.searchsorted(cdf, rng.random() * cdf[-1])), cdf.size - 1)
                i, j = divmod(k, shape[1])
                mark[3] = -1 + 2 * (i + rng.random()) / shape[0]
                mark[4] = -1 + 2 * (j + rng.random()) / shape[1]
            if prior.log_shape_density(mark) == -math.inf:
                continue
            idx = footprint(mark, shape)
            if idx.size == 0:
                continue
            mark[0] = float(residual[idx].mean())
            gain = (mark[0] ** 2 * idx.size / two_var + prior.log_mark_density(mark)
                    + math.log(prior.mean_count / (len(marks) + 1)))
            if best is None or gain > best[0]:
                best = (gain, mark, idx)
        if best is None or not best[0] > penalty:
            failures += 1
            continue
        failures = 0
        _, mark, idx = best
        marks.append(mark)
        prints.append(idx)
        x[idx] += mark[0]
        for r in range(refine):
            k = len(marks) - 1 if r % 2 == 0 else int(rng.integers(len(marks)))
            old, new = marks[k], marks[k].copy()
            j = int(rng.integers(1, 6))
            new[j] += steps[j] * 10 ** rng.uniform(0, 1.5) * rng.standard_normal()
            if j == 5:
                new[5] %= 2 * math.pi
            if prior.log_shape_density(new) == -math.inf:
                continue
            new_idx = footprint(new, shape)
            if new_idx.size == 0:
                continue
            rest = x.copy()
            rest[prints[k]] -= old[0]
            new[0] = float((flat - rest)[new_idx].mean())
            trial = rest
            trial[new_idx] += new[0]
            if np.sum((flat - trial) ** 2) < np.sum((flat - x) ** 2):
                marks[k], prints[k], x = new, new_idx, trial
    return np.array(marks).reshape(-1, 6)


def greedy_start(posterior: EllipsePosterior, rng: np.random.Generator, *,
                 candidates: int = 100, refine: int = 100, max_count: int = 200,
                 patience: int = 3, penalty: float | None = None, start=None,
                 target=None, target_error: float = 0.016, detected=None,
                 log=None) -> np.ndarray:
    """Ellipses that explain the data, found greedily: a start for the chains, from the data alone.

    A chain started empty fills the image with many small ellipses that it then
    cannot remove, far below the posterior's mode. This search adds instead, one
    at a time, the best of ``candidates`` shapes (from the prior, the centre
    drawn where the back-projected residual ``A^T (y - A x)`` is large), each with
    its least-squares value, as long as the best raises the log posterior; after
    each addition ``refine`` random-walk steps of the ellipses' shapes (values
    re-fitted) are kept where they raise it, half of them on the new ellipse.
    Since the best of many candidates fits some noise, an ellipse is added only
    if it raises the log posterior by more than ``penalty`` (by default the
    Bayesian information criterion's price of its six parameters,
    ``3 log m`` for ``m`` data), and any ellipse whose removal costs less than
    that is removed. It stops after ``patience`` rounds in a row without an
    addition. ``start``: ellipses to begin with (none by default).

    ``detected``: shapes ``(a, b, x0, y0, theta)`` read off a reconstruction
    (`lpd.methods.candidates.detect_ellipses`): in every round the one that
    orthogonal matching pursuit picks (the best fit to the residual once every
    value is fitted again with it) competes with the prior's draws. They are
    the large ellipses that overlap others, which random draws never hit.
    After each addition all values are fitted again at once by least squares
    (kept if the posterior rises): a value fitted while other ellipses were
    still missing is set right once they are in.

    ``target``: a reconstruction of the same data (by LPD, say) to fit first, in
    the image domain, where a sharp image shows the ellipses far more directly
    than the data do (its error taken as ``target_error``, 1.6 % being LPD's on
    the held-out ellipses); the data-domain search then goes on from there. It
    is an optimiser, not a sampler: the chains started from its output (with
    different seeds) do the sampling.

    Returns the marks, shape ``(n, 6)``.
    """
    if posterior.prior.discrete:
        raise ValueError("greedy_start needs the continuous EllipsePrior")
    prior = posterior.prior
    detected = np.zeros((0, 5)) if detected is None else np.asarray(detected, np.float64)
    if detected.ndim != 2 or detected.shape[1] != 5 or not np.all(np.isfinite(detected)):
        raise ValueError(f"detected must be finite shapes (a, b, x0, y0, theta) of shape "
                         f"(k, 5), got shape {detected.shape}")
    if target is not None:
        target = np.asarray(target, np.float64)
        if target.shape != posterior.shape or not np.all(np.isfinite(target)):
            raise ValueError(f"target must be a finite image of shape {posterior.shape}")
        if not (math.isfinite(target_error) and target_error > 0):
            raise ValueError(f"target_error must be finite and > 0, got {target_error}")
        fitted = _fit_image(target, prior, rng, candidates=int(candidates),
                            refine=int(refine), max_count=int(max_count),
                            patience=int(patience), target_error=target_error,
                            detected=detected)
        if start is not None:
            raise ValueError("give greedy_start a start or a target, not both")
        start = fitted
    chain = ReversibleJump(posterior, rng, start, fitted=True, probes=0)
    y = posterior.data
    columns_t = posterior.columns.T.tocsr()
    steps = chain.steps
    penalty = 3 * math.log(y.size) if penalty is None else float(penalty)

    def log_post(p, marks_log_density, n):
        return (posterior.log_likelihood(p) + n * math.log(prior.mean_count)
                - math.lgamma(n + 1) + marks_log_density)

    library, library_units = _library(detected, prior, posterior.shape,
                                      lambda idx: posterior.projection(idx, 1.0))
    densities = [prior.log_mark_density(mark) for mark in chain.marks]
    current = (log_post(chain.p, sum(densities), chain.n) if np.any(chain.p) else -math.inf)
    failures = 0
    while chain.n < int(max_count):
        residual = y - chain.p
        weights = np.asarray(columns_t @ residual) ** 2
        if not np.any(weights > 0):
            break
        cdf = np.cumsum(weights)
        best = None
        for _ in range(int(candidates)):
            mark = prior.sample_mark(rng)
            k = min(int(np.searchsorted(cdf, rng.random() * cdf[-1])), cdf.size - 1)
            i, j = divmod(k, posterior.shape[1])
            nx, ny = posterior.shape
            mark[3] = -1 + 2 * (i + rng.random()) / nx
            mark[4] = -1 + 2 * (j + rng.random()) / ny
            idx = footprint(mark, posterior.shape)
            if idx.size == 0:
                continue
            unit = posterior.projection(idx, 1.0)
            norm2 = float(unit @ unit)
            if norm2 == 0:
                continue
            mark[0] = float(unit @ residual) / norm2
            density = prior.log_mark_density(mark)
            trial = log_post(chain.p + mark[0] * unit, sum(densities) + density, chain.n + 1)
            if best is None or trial > best[0]:
                best = (trial, mark, idx, unit, density)
        # The detected shape that orthogonal matching pursuit picks, scored as it
        # stands once every value is fitted again with it (`_refit_values`).
        pick = _pursuit(chain.units, library_units, residual)
        if pick is not None:
            k, value = pick
            mark, idx = library[k][0].copy(), library[k][1]
            mark[0] = value
            unit = library_units[k]
            trial = _refit_values(chain, densities, -math.inf, log_post,
                                  extra=(mark, unit), dry=True)
            if best is None or trial > best[0]:
                best = (trial, mark, idx, unit, prior.log_mark_density(mark))
        if best is None or not best[0] > current + penalty:
            failures += 1
            if failures >= patience:
                break
            continue
        failures = 0
        _, mark, idx, unit, density = best
        chain._insert(mark, idx, unit)
        densities.append(density)
        current = _refit_values(chain, densities, log_post(chain.p, sum(densities), chain.n),
                                log_post)
        # Hill-climb the shapes, each value re-fitted to its new shape.
        for r in range(int(refine)):
            # Half the steps shape the new ellipse, the rest any of them.
            k = chain.n - 1 if r % 2 == 0 else int(rng.integers(chain.n))
            old, old_unit = chain.marks[k], chain.units[k]
            new = old.copy()
            j = int(rng.integers(1, 6))
            # Steps of every scale from the chain's to thirty times it: a
            # candidate's shape may be far from the one that the data want.
            new[j] += steps[j] * 10 ** rng.uniform(0, 1.5) * rng.standard_normal()
            if j == 5:
                new[5] %= 2 * math.pi
            if prior.log_shape_density(new) == -math.inf:
                continue
            new_idx = footprint(new, posterior.shape)
            new_unit = posterior.projection(new_idx, 1.0)
            norm2 = float(new_unit @ new_unit)
            if norm2 == 0:
                continue
            rest = chain.p - old[0] * old_unit
            new[0] = float(new_unit @ (y - rest)) / norm2
            new_density = prior.log_mark_density(new)
            p_new = rest + new[0] * new_unit
            trial = log_post(p_new, sum(densities) - densities[k] + new_density, chain.n)
            if trial > current:
                chain._change(chain.prints[k], -old[0])
                chain._change(new_idx, new[0])
                chain.marks[k], chain.prints[k], chain.units[k] = new, new_idx, new_unit
                chain.p, densities[k], current = p_new, new_density, trial
        # Drop the ellipses that the later ones made redundant.
        for k in range(chain.n - 1, -1, -1):
            p_new = chain.p - chain.marks[k][0] * chain.units[k]
            trial = log_post(p_new, sum(densities) - densities[k], chain.n - 1)
            if trial > current - penalty:
                chain._change(chain.prints[k], -chain.marks[k][0])
                del chain.marks[k], chain.prints[k], chain.units[k], densities[k]
                chain.p, current = p_new, trial
    if log is not None:
        log(f"    greedy start: {chain.n} ellipses, log-likelihood "
            f"{posterior.log_likelihood(chain.p):.1f}")
    return np.array(chain.marks).reshape(-1, 6)


def _refit_values(chain: ReversibleJump, densities: list[float], current: float,
                  log_post, *, extra=None, dry: bool = False) -> float:
    """All the chain's values at once by least squares on the data, kept if the posterior rises.

    Given the shapes, ``A x`` is linear in the values: a value fitted when its
    ellipse was added, against a residual that other missing ellipses still
    held, is set right here once they are in. ``extra``: a ``(mark, unit)`` to
    fit as if it were in; ``dry``: only return the log posterior it would reach.
    """
    post = chain.post
    old_marks = chain.marks + ([extra[0]] if extra is not None else [])
    units = np.array(chain.units + ([extra[1]] if extra is not None else []))
    values = np.linalg.lstsq(units.T, post.data, rcond=None)[0]
    marks = [np.concatenate([[v], m[1:]]) for v, m in zip(values, old_marks, strict=True)]
    new_densities = [post.prior.log_mark_density(m) for m in marks]
    p_new = values @ units
    trial = log_post(p_new, sum(new_densities), len(marks))
    if dry:
        return trial
    if not trial > current:
        return current
    for k, (old, new) in enumerate(zip(chain.marks, marks, strict=True)):
        chain._change(chain.prints[k], new[0] - old[0])
        chain.marks[k] = new
    chain.p = p_new
    densities[:] = new_densities
    return trial


def split_rhat(traces: Sequence[np.ndarray]) -> float:
    """The split potential scale reduction of one scalar over several chains.

    Each chain's trace is cut in two halves; R-hat compares the variance between
    the halves' means with the variance within them (Gelman et al., Bayesian
    Data Analysis, 3rd ed., section 11.4). Near 1 when the chains agree; above
    about 1.01-1.1 they have not mixed.
    """
    halves = []
    for trace in traces:
        trace = np.asarray(trace, dtype=np.float64)
        n = len(trace) // 2
        if n < 2:
            raise ValueError("each trace needs at least 4 samples")
        halves += [trace[:n], trace[len(trace) - n:]]
    n = min(len(h) for h in halves)
    halves = np.array([h[:n] for h in halves])
    return _rhat(n, halves.mean(axis=1), halves.var(axis=1, ddof=1))


def _rhat(n: int, means: np.ndarray, variances: np.ndarray) -> float | np.ndarray:
    within = variances.mean(axis=0)
    between = n * means.var(axis=0, ddof=1)
    pooled = (n - 1) / n * within + between / n
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(pooled / within)


def effective_sample_size(traces: Sequence[np.ndarray]) -> float:
    """The effective number of independent samples in several chains of one scalar.

    From the autocorrelation of the pooled chains, summed in pairs until a pair
    is negative (Geyer's initial positive sequence; BDA3 section 11.5).
    """
    chains = np.array([np.asarray(t, dtype=np.float64) for t in traces])
    m, n = chains.shape
    if n < 4:
        raise ValueError("each trace needs at least 4 samples")
    centred = chains - chains.mean(axis=1, keepdims=True)
    variances = chains.var(axis=1, ddof=1)
    within = variances.mean()
    pooled = (n - 1) / n * within + chains.mean(axis=1).var(ddof=1) if m > 1 else within
    if pooled == 0:
        return float(m * n)
    size = 1 << (2 * n - 1).bit_length()
    spectra = np.fft.rfft(centred, size, axis=1)
    autocov = np.fft.irfft(spectra * np.conj(spectra), size, axis=1)[:, :n] / n
    rho = 1 - (within - autocov.mean(axis=0)) / pooled
    rho[0] = 1.0
    total = 0.0
    for t in range(0, n - 1, 2):
        pair = rho[t] + rho[t + 1]
        if pair < 0:
            break
        total += pair
    return float(m * n / max(2 * total - 1, 1e-12))


def _run_chain(posterior: EllipsePosterior, seed, start, n_steps: int, burn_in: int,
               thin: int, anneal: int, betas, swap_every: int, options: dict) -> dict:
    """One chain of `sample` (a process of its own where ``jobs > 1``)."""
    import time

    rng = np.random.default_rng(seed)
    if betas is not None and len(betas) > 1:
        ladder = ParallelTempering(posterior, rng, start, betas=betas, swap_every=swap_every,
                                   **options)
        chain = ladder.cold
    else:
        ladder = chain = ReversibleJump(posterior, rng, start, **options)
    t0 = time.perf_counter()
    result = ladder.run(n_steps, burn_in, thin, anneal=anneal)
    result["accepted"] = dict(chain.accepted)
    result["proposed"] = dict(chain.proposed)
    result["seconds"] = time.perf_counter() - t0
    result["final"] = (chain.n, chain.log_l)
    return result


def parallel_map(function: Callable, calls: Sequence[tuple], jobs: int | None) -> list:
    """``[function(*args) for args in calls]``, in up to ``jobs`` processes.

    ``jobs=None`` takes as many as the calls and the cores allow; ``1`` runs them
    here, in order. The processes are spawned, not forked (a fork would copy the
    parent's TensorFlow threads), so ``function`` and its arguments are pickled:
    a module-level function and plain data. Results come back in the calls' order,
    each the same as in a serial run (every call carries its own seed).
    """
    calls = list(calls)
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    jobs = min(len(calls), available if jobs is None else int(jobs))
    if jobs < 1 and calls:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if jobs <= 1:
        return [function(*args) for args in calls]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(function, *args) for args in calls]
        return [f.result() for f in futures]


def sample(posterior: EllipsePosterior, n_chains: int, n_steps: int, *, burn_in: int,
           anneal: int = 0, thin: int = 1, seed: int | Sequence[int] = 0, guide=None,
           starts=None,
           betas: Sequence[float] | None = None, swap_every: int = 100,
           jobs: int | None = 1, log=None, **chain_options) -> dict:
    """``E[x | y]`` and the posterior standard deviation from ``n_chains`` independent chains.

    Each chain starts from its entry of ``starts`` (marks; empty by default) with
    its own seed (chain ``c`` seeded by ``[seed, c]``, or ``[*seed, c]`` for a
    sequence), anneals over ``anneal`` proposals
    and keeps every ``thin``-th image after ``burn_in``. With ``betas`` (a ladder
    of more than one power) each chain is a `ParallelTempering` of that ladder,
    and its result has the swap rates. The chains run in up to ``jobs`` processes
    (`parallel_map`; ``None``: one per chain and core), with the same result as
    one after the other. Returns ``{"mean",
    "std", "chains", "diagnostics", "seconds"}``; the diagnostics are the split
    R-hat and effective sample size of the log-likelihood, the ellipse count and
    each probe (a fixed random linear functional of the image), and the split
    R-hat of every pixel (its median, 99th percentile and maximum over the
    pixels that vary), computed from the halves of the chains.
    """
    import time

    if int(n_chains) < 1:
        raise ValueError(f"n_chains must be >= 1, got {n_chains}")
    if starts is not None and len(starts) != int(n_chains):
        raise ValueError(f"starts must hold one set of marks per chain ({n_chains}), "
                         f"got {len(starts)}")
    started = time.perf_counter()
    options = {"guide": guide, **chain_options}
    key = [int(k) for k in seed] if isinstance(seed, (list, tuple)) else [int(seed)]
    calls = [(posterior, [*key, c], None if starts is None else starts[c], n_steps, burn_in,
              thin, anneal, betas, swap_every, options) for c in range(int(n_chains))]
    results = parallel_map(_run_chain, calls, jobs)
    if log is not None:
        for c, result in enumerate(results):
            swaps = ("" if "swap_rates" not in result else ", swaps accepted "
                     + " / ".join(f"{r:.2f}" for r in result["swap_rates"]))
            n, log_l = result["final"]
            log(f"    chain {c + 1}/{n_chains}: {result['seconds']:.0f} s, "
                f"{n} ellipses at the end, log-likelihood {log_l:.1f}{swaps}")
    kept = np.array([r["n_kept"] for r in results], dtype=np.float64)
    mean = np.tensordot(kept, np.array([r["mean"] for r in results]), axes=1) / kept.sum()
    second = np.tensordot(kept, np.array([r["var"] + r["mean"] ** 2 for r in results]),
                          axes=1) / kept.sum()
    std = np.sqrt(np.maximum(second - mean ** 2, 0))
    diagnostics = {}
    if n_chains > 1:
        scalars = {"log_likelihood": [r["log_likelihood"] for r in results],
                   "count": [r["counts"] for r in results]}
        for k in range(results[0]["probes"].shape[1]):
            scalars[f"probe{k}"] = [r["probes"][:, k] for r in results]
        for name, traces in scalars.items():
            diagnostics[name] = {"rhat": float(split_rhat(traces)),
                                 "ess": effective_sample_size(traces)}
        n = min(h[0] for r in results for h in r["halves"])
        means = np.array([h[1] for r in results for h in r["halves"]])
        variances = np.array([h[2] for r in results for h in r["halves"]]) * n / max(n - 1, 1)
        pixel = _rhat(n, means, variances)
        varying = pixel[np.isfinite(pixel)]
        if varying.size:
            diagnostics["pixels"] = {"median": float(np.median(varying)),
                                     "p99": float(np.percentile(varying, 99)),
                                     "max": float(varying.max()), "n": int(varying.size)}
    return {"mean": mean, "std": std, "chains": results, "diagnostics": diagnostics,
            "seconds": time.perf_counter() - started}


def start_distance(result: dict, start) -> float:
    """The mean squared distance of a chain's kept images from the image it started at.

    ``result`` is a chain's (`ReversibleJump.run`) or pooled chains' (`sample`)
    output: the kept images' mean ``m`` and per-pixel variance ``v`` give
    ``mean_t ||x_t - x_0||^2 = ||m - x_0||^2 + sum(v)`` without the images.

    Started at a draw from the posterior (a phantom of the prior, whose data
    the posterior is of: a *planted* start), a chain is in equilibrium from its
    first step, and for a reversible chain whose autocorrelations are
    non-negative half this distance is at most ``E ||x - E[x|y]||^2``, the
    conditional mean's expected squared error, approaching it as the chain
    forgets its start: a lower bound on the error of the best estimator that no
    estimator can beat, where the chains from data-driven starts give an upper
    one (their mean is an estimator).
    """
    start = np.asarray(start, np.float64)
    mean = np.asarray(result["mean"], np.float64)
    variance = (np.asarray(result["var"], np.float64) if "var" in result
                else np.asarray(result["std"], np.float64) ** 2)
    if start.shape != mean.shape:
        raise ValueError(f"start of shape {start.shape} is not an image of the chain's "
                         f"shape {mean.shape}")
    return float(np.sum((mean - start) ** 2) + np.sum(variance))


def exact_posterior(posterior: EllipsePosterior) -> dict:
    """Every configuration of a `DiscretePrior` with its posterior probability.

    Returns ``{"marks": [array (n, 6) per configuration], "weights", "images"}``,
    the weights summing to 1.
    """
    prior = posterior.prior
    if not isinstance(prior, DiscretePrior):
        raise TypeError("the exact posterior needs a DiscretePrior")
    log_weights, images, configurations = [], [], []
    for n in range(prior.max_count + 1):
        for combo in itertools.product(range(len(prior.marks)), repeat=n):
            marks = prior.marks[list(combo)].reshape(-1, 6)
            log_weights.append(posterior.log_posterior(marks))
            images.append(posterior.image(marks))
            configurations.append(marks)
    log_weights = np.array(log_weights)
    weights = np.exp(log_weights - log_weights.max())
    return {"marks": configurations, "weights": weights / weights.sum(),
            "images": np.array(images)}


def exact_posterior_mean(posterior: EllipsePosterior) -> np.ndarray:
    """``E[x | y]`` by enumerating every configuration of a `DiscretePrior`."""
    exact = exact_posterior(posterior)
    return np.tensordot(exact["weights"], exact["images"], axes=1)
