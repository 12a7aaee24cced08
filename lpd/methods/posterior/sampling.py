"""Several chains of one posterior, in processes of their own, pooled into ``E[x | y]``."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from lpd.methods.posterior.chain import ReversibleJump
from lpd.methods.posterior.diagnostics import _rhat, effective_sample_size, split_rhat
from lpd.methods.posterior.model import EllipsePosterior
from lpd.methods.posterior.tempering import ParallelTempering


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
