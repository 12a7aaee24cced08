"""The reversible-jump chain on the ellipse posterior: births, deaths and updates of ellipses."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from lpd.methods.candidates import EllipseLibrary
from lpd.methods.posterior.model import EllipsePosterior, footprint

# What a chain's state is: its ellipses and what is computed from them.
_STATE = ("marks", "prints", "units", "x", "p", "log_l", "probe_values")


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
        j = int(self.rng.integers(self.n))
        new, terms = self._rebuild_shape(self.marks[j])
        if new is None:
            return
        if self._slide(j, new, terms, decide=True):
            self.accepted["rebuild"] += 1

    def rebuild_work(self, j: int, shape) -> float:
        """The log acceptance ratio of sliding ellipse ``j`` to ``shape`` by a rebuild.

        The rebuild's work (`_rebuild`), its shape proposal ratio left out: a
        diagnostic of whether a rebuild aimed at ``shape`` would be accepted. The
        chain's state is left as it was; its random stream moves on.
        """
        if not 0 <= int(j) < self.n:
            raise ValueError(f"no ellipse {j} in a state of {self.n}")
        new = self.marks[int(j)].copy()
        new[1:] = np.asarray(shape, np.float64)
        if self.post.prior.log_shape_density(new) == -math.inf:
            return -math.inf
        return self._slide(int(j), new, 0.0, decide=False)

    def _slide(self, j: int, new: np.ndarray, terms: float, *, decide: bool) -> bool | float:
        """Slide ellipse ``j`` to ``new`` in stages while its neighbours relax (`_rebuild`).

        With ``decide``, accept by the work (returns whether it was accepted);
        otherwise return the work and restore the state.
        """
        prior = self.post.prior
        old = self.marks[j]
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
        if decide and math.isfinite(work) and self._accept(work):
            self.marks.insert(j, new)
            self.prints.insert(j, new_idx)
            self.units.insert(j, new_unit)
            return True
        for name, value in saved.items():
            setattr(self, name, value)
        return False if decide else work

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
