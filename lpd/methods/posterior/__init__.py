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

Modules, each importing only those above it:

- `model`: `footprint`, `EllipsePrior`, `DiscretePrior`, `EllipsePosterior`.
- `chain`: `ReversibleJump`, the chain and all its moves.
- `tempering`: `ParallelTempering`, `swap_states`, `geometric_ladder`.
- `start`: `greedy_start`, the chains' data-driven starts.
- `diagnostics`: `split_rhat`, `effective_sample_size`, `start_distance`.
- `sampling`: `sample` (several chains pooled) and `parallel_map`.
- `exact`: `exact_posterior` and `exact_posterior_mean` of a `DiscretePrior`.
"""

from lpd.methods.posterior.chain import ReversibleJump
from lpd.methods.posterior.diagnostics import effective_sample_size, split_rhat, start_distance
from lpd.methods.posterior.exact import exact_posterior, exact_posterior_mean
from lpd.methods.posterior.model import DiscretePrior, EllipsePosterior, EllipsePrior, footprint
from lpd.methods.posterior.sampling import parallel_map, sample
from lpd.methods.posterior.start import greedy_start
from lpd.methods.posterior.tempering import ParallelTempering, geometric_ladder, swap_states

__all__ = ["EllipsePrior", "DiscretePrior", "EllipsePosterior", "ReversibleJump",
           "ParallelTempering", "swap_states", "geometric_ladder", "exact_posterior",
           "exact_posterior_mean", "footprint", "greedy_start", "sample", "parallel_map",
           "split_rhat", "effective_sample_size", "start_distance"]
