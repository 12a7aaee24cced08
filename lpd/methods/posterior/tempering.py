"""Replica exchange between chains at powers of the likelihood."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from lpd.methods.posterior.chain import _STATE, ReversibleJump
from lpd.methods.posterior.model import EllipsePosterior


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
