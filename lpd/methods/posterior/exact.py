"""The exact posterior of a `DiscretePrior`, by enumerating every configuration (for tests)."""

from __future__ import annotations

import itertools

import numpy as np

from lpd.methods.posterior.model import DiscretePrior, EllipsePosterior


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
