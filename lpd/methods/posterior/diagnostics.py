"""How far chains are from their target: split R-hat, effective sample sizes, planted starts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
