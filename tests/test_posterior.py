"""The ellipse posterior and its reversible-jump sampler (lpd.methods.posterior).

The sampler is checked against the exact posterior mean of a problem small
enough to enumerate (a 5 x 5 grid, at most two ellipses drawn from four).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import integrate

from lpd.data import phantoms
from lpd.methods import posterior as P


def test_footprints_rasterise_as_the_phantoms_do():
    rng = np.random.default_rng(0)
    for shape in ((32, 24), (7, 9)):
        params = phantoms.random_ellipse_params(rng, 10)
        post = P.EllipsePosterior(sp.eye(shape[0] * shape[1]), shape,
                                  np.zeros(shape[0] * shape[1]), 0.05, P.EllipsePrior())
        np.testing.assert_allclose(post.image(params), phantoms.ellipses_to_image(params, shape),
                                   atol=1e-6)


def test_projection_of_one_ellipse_is_the_matrix_applied_to_it():
    matrix = sp.random(40, 64, density=0.2, random_state=2, format="csr")
    post = P.EllipsePosterior(matrix, (8, 8), np.zeros(40), 0.05, P.EllipsePrior())
    mark = np.array([0.7, 0.5, 0.3, 0.1, -0.2, 0.4])
    idx = P.footprint(mark, (8, 8))
    x = np.zeros(64)
    x[idx] = 0.7
    np.testing.assert_allclose(post.projection(idx, 0.7), matrix @ x, atol=1e-12)
    assert not post.projection(np.zeros(0, np.int64), 1.0).any()


def test_the_density_of_one_ellipse_is_a_density():
    prior = P.EllipsePrior()
    s = prior.value_scale
    value = integrate.quad(lambda v: math.exp(prior.log_mark_density(
        np.array([v, 0.2, 0.2, 0, 0, 0]))) * 4 * 2 * math.pi / 25 * math.exp(2 * 0.2 / 0.2),
        -10 * s, 10 * s, points=[0.0], limit=200)[0]
    assert value == pytest.approx(1.0, rel=1e-3)
    assert prior.log_mark_density(np.array([0.1, -0.2, 0.2, 0, 0, 0])) == -math.inf
    assert prior.log_mark_density(np.array([0.1, 0.2, 0.2, 1.5, 0, 0])) == -math.inf


@pytest.fixture(scope="module")
def small_problem():
    marks = np.array([[0.5, 0.5, 0.4, -0.3, 0.2, 0.3], [0.45, 0.45, 0.5, 0.2, -0.1, 1.0],
                      [-0.3, 0.6, 0.5, 0.0, 0.0, 0.0], [0.3, 0.9, 0.4, 0.1, 0.1, 2.0]])
    prior = P.DiscretePrior(marks, mean_count=1.0, max_count=2)
    matrix = sp.csr_matrix(np.abs(np.random.default_rng(1).standard_normal((4, 25))))
    truth = P.EllipsePosterior(matrix, (5, 5), np.zeros(4), 0.5, prior).image(marks[[0, 2]])
    p = matrix @ truth.ravel()
    y = p + 0.5 * np.mean(np.abs(p)) * np.random.default_rng(2).standard_normal(4)
    return P.EllipsePosterior(matrix, (5, 5), y, 0.5, prior)


def test_the_chains_mean_is_the_exact_posterior_mean(small_problem):
    exact = P.exact_posterior_mean(small_problem)
    # The prior mean, which ignores the data, is far from the posterior mean ...
    prior = small_problem.prior
    weights = [math.exp(-prior.mean_count) * prior.mean_count**n / math.factorial(n)
               for n in range(prior.max_count + 1)]
    mean_count = np.dot(range(prior.max_count + 1), weights) / sum(weights)
    prior_mean = mean_count * np.tensordot(prior.probs, np.array(
        [small_problem.image(m[None]) for m in prior.marks]), axes=1)
    gap = np.abs(prior_mean - exact).max()
    # ... and two chains from different starts both land on it.
    for seed, start in ((3, None), (4, prior.marks[[1, 3]])):
        chain = P.ReversibleJump(small_problem, np.random.default_rng(seed), start)
        result = chain.run(40_000, burn_in=1_000)
        assert np.abs(result["mean"] - exact).max() < gap / 5
        assert chain.accepted["birth"] > 10 and chain.accepted["death"] > 10


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="does not map the grid"):
        P.EllipsePosterior(sp.eye(10), (4, 4), np.zeros(10), 0.05, P.EllipsePrior())
    with pytest.raises(ValueError, match="relative_std"):
        P.EllipsePosterior(sp.eye(16), (4, 4), np.zeros(16), 0.0, P.EllipsePrior())
    with pytest.raises(ValueError, match="probs"):
        P.DiscretePrior(np.zeros((2, 6)), probs=[0.5, 0.6])
    with pytest.raises(TypeError, match="DiscretePrior"):
        P.exact_posterior_mean(P.EllipsePosterior(sp.eye(16), (4, 4), np.zeros(16), 0.05,
                                                  P.EllipsePrior()))
