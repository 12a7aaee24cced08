"""Greedy starts of the chains: ellipses that explain the data, found from the data alone."""

from __future__ import annotations

import math

import numpy as np

from lpd.methods.candidates import moment_candidates
from lpd.methods.posterior.chain import ReversibleJump
from lpd.methods.posterior.model import EllipsePosterior, EllipsePrior, footprint


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


def _climb_step(mark: np.ndarray, steps: np.ndarray, prior: EllipsePrior,
                rng: np.random.Generator) -> np.ndarray | None:
    """A hill-climbing step of one shape mark of ``mark`` (``None`` off the prior's support).

    Steps of every scale from the chain's (``steps``) to thirty times it: a
    candidate's shape may be far from the one that the data want.
    """
    new = mark.copy()
    j = int(rng.integers(1, 6))
    new[j] += steps[j] * 10 ** rng.uniform(0, 1.5) * rng.standard_normal()
    if j == 5:
        new[5] %= 2 * math.pi
    return None if prior.log_shape_density(new) == -math.inf else new


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
            old = marks[k]
            new = _climb_step(old, steps, prior, rng)
            if new is None:
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
            new = _climb_step(old, steps, prior, rng)
            if new is None:
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
