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
from lpd.methods import candidates as C
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


def test_the_log_posterior_adds_the_likelihood_the_count_and_the_marks():
    matrix = sp.random(40, 64, density=0.2, random_state=3, format="csr")
    marks = np.array([[0.3, 0.5, 0.3, 0.1, -0.2, 0.4], [-0.2, 0.3, 0.6, -0.3, 0.3, 1.0]])
    prior = P.EllipsePrior(mean_count=7.0)
    data = np.random.default_rng(4).standard_normal(40)
    post = P.EllipsePosterior(matrix, (8, 8), data, 0.05, prior)
    p = matrix @ post.image(marks).ravel()  # as the phantoms rasterise (tested above)
    expected = (post.log_likelihood(p) + 2 * math.log(7.0) - math.log(2)
                + prior.log_mark_density(marks[0]) + prior.log_mark_density(marks[1]))
    assert post.log_posterior(marks) == pytest.approx(expected, rel=1e-9)
    terms = post.log_posterior_terms(marks)
    assert terms["likelihood"] == pytest.approx(post.log_likelihood(p), rel=1e-12)
    assert terms["count"] == pytest.approx(2 * math.log(7.0) - math.log(2), rel=1e-12)
    assert terms["marks"] == pytest.approx(prior.log_mark_density(marks[0])
                                           + prior.log_mark_density(marks[1]), rel=1e-12)
    # An ellipse outside the prior's support has no density.
    outside = marks.copy()
    outside[1, 3] = 1.5
    assert post.log_posterior(outside) == -math.inf
    # A DiscretePrior's count stops at max_count.
    discrete = P.EllipsePosterior(matrix, (8, 8), data, 0.05,
                                  P.DiscretePrior(marks, max_count=1))
    assert discrete.log_posterior(marks[:1]) > -math.inf
    assert discrete.log_posterior(marks) == -math.inf


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


def test_a_chain_planted_at_a_posterior_draw_measures_the_conditional_means_error(
        small_problem):
    # Given the data, the phantom is a draw from the posterior, so a chain started at
    # it is in equilibrium: half its mean squared distance from its start is, on
    # average over such starts, E||x - E[x|y]||^2, the conditional mean's error.
    exact = P.exact_posterior(small_problem)
    weights, images = exact["weights"], exact["images"]
    assert weights.sum() == pytest.approx(1.0) and len(exact["marks"]) == 1 + 4 + 16
    mean = np.tensordot(weights, images, axes=1)
    np.testing.assert_array_equal(mean, P.exact_posterior_mean(small_problem))
    mmse = float(np.tensordot(weights, ((images - mean) ** 2).sum(axis=(1, 2)), axes=1))
    rng = np.random.default_rng(0)
    halves = []
    for r in range(40):
        k = int(rng.choice(len(weights), p=weights))
        chain = P.ReversibleJump(small_problem, np.random.default_rng(100 + r),
                                 exact["marks"][k])
        halves.append(P.start_distance(chain.run(1_000, burn_in=200), images[k]) / 2)
    assert np.mean(halves) == pytest.approx(mmse, rel=0.25)
    # From the most probable configuration instead (not a draw), it is another number.
    mode = int(np.argmax(weights))
    chain = P.ReversibleJump(small_problem, np.random.default_rng(1), exact["marks"][mode])
    result = chain.run(20_000, burn_in=200)
    expected = mmse + float(np.sum((mean - images[mode]) ** 2))
    assert P.start_distance(result, images[mode]) == pytest.approx(expected, rel=0.1)
    with pytest.raises(ValueError, match="start of shape"):
        P.start_distance(result, np.zeros((4, 4)))


def test_bad_inputs_are_named(small_problem):
    with pytest.raises(ValueError, match="does not map the grid"):
        P.EllipsePosterior(sp.eye(10), (4, 4), np.zeros(10), 0.05, P.EllipsePrior())
    with pytest.raises(ValueError, match="relative_std"):
        P.EllipsePosterior(sp.eye(16), (4, 4), np.zeros(16), 0.0, P.EllipsePrior())
    with pytest.raises(ValueError, match="probs"):
        P.DiscretePrior(np.zeros((2, 6)), probs=[0.5, 0.6])
    with pytest.raises(TypeError, match="DiscretePrior"):
        P.exact_posterior_mean(P.EllipsePosterior(sp.eye(16), (4, 4), np.zeros(16), 0.05,
                                                  P.EllipsePrior()))
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="continuous EllipsePrior"):
        P.ReversibleJump(small_problem, rng, guide=np.ones((5, 5)))
    continuous = P.EllipsePosterior(sp.eye(16), (4, 4), np.zeros(16), 0.05, P.EllipsePrior())
    with pytest.raises(ValueError, match="shape"):
        P.ReversibleJump(continuous, rng, guide=np.ones((5, 5)))
    with pytest.raises(ValueError, match="zero everywhere"):
        P.ReversibleJump(continuous, rng, guide=np.zeros((4, 4)))
    with pytest.raises(ValueError, match="birth and death"):
        P.ReversibleJump(continuous, rng, birth=0.6, death=0.6)
    with pytest.raises(ValueError, match="one set of marks per chain"):
        P.sample(continuous, 2, 10, burn_in=1, starts=[None])
    chain = P.ReversibleJump(continuous, rng)
    with pytest.raises(ValueError, match="within the burn-in"):
        chain.run(100, burn_in=10, anneal=20)
    with pytest.raises(ValueError, match="burn_in"):
        chain.run(100, burn_in=100)


def test_annealed_chains_sampled_together_reach_the_exact_mean(small_problem):
    exact = P.exact_posterior_mean(small_problem)
    result = P.sample(small_problem, 2, 30_000, burn_in=3_000, anneal=2_000, seed=5)
    assert result["mean"].shape == exact.shape == result["std"].shape
    assert np.abs(result["mean"] - exact).max() < 0.03
    diagnostics = result["diagnostics"]
    assert diagnostics["log_likelihood"]["rhat"] < 1.05
    assert 100 < diagnostics["log_likelihood"]["ess"] <= 2 * 27_000
    assert diagnostics["pixels"]["max"] < 1.1
    # The posterior standard deviation is that of the pooled chains' images.
    assert np.all(result["std"] >= 0) and result["std"].max() > 0


def test_chains_in_processes_give_what_they_give_one_after_the_other(small_problem):
    serial = P.sample(small_problem, 2, 2_000, burn_in=500, seed=3, jobs=1)
    parallel = P.sample(small_problem, 2, 2_000, burn_in=500, seed=3, jobs=2)
    np.testing.assert_array_equal(serial["mean"], parallel["mean"])
    for a, b in zip(serial["chains"], parallel["chains"], strict=True):
        np.testing.assert_array_equal(a["log_likelihood"], b["log_likelihood"])
    # A different seed gives a different chain (the comparison can fail).
    other = P.sample(small_problem, 2, 2_000, burn_in=500, seed=4, jobs=1)
    assert not np.array_equal(serial["chains"][0]["log_likelihood"],
                              other["chains"][0]["log_likelihood"])
    with pytest.raises(ValueError, match="jobs"):
        P.parallel_map(divmod, [(1, 1)], 0)


def test_swapped_chains_keep_their_images_and_likelihoods_consistent(small_problem):
    a = P.ReversibleJump(small_problem, np.random.default_rng(0), small_problem.prior.marks[[0]])
    b = P.ReversibleJump(small_problem, np.random.default_rng(1), small_problem.prior.marks[[1, 2]])
    before = (a.x.copy(), a.log_l, b.x.copy(), b.log_l)
    P.swap_states(a, b)
    np.testing.assert_array_equal(a.x, before[2])
    np.testing.assert_array_equal(b.x, before[0])
    for chain, n in ((a, 2), (b, 1)):
        assert chain.n == n
        image = small_problem.image(np.array(chain.marks))
        np.testing.assert_allclose(chain.x.reshape(image.shape), image, atol=1e-12)
        assert chain.log_l == pytest.approx(small_problem.log_likelihood(
            small_problem.columns @ chain.x))
    other = P.EllipsePosterior(small_problem.columns, (5, 5), small_problem.data, 0.5,
                               small_problem.prior)
    with pytest.raises(ValueError, match="same posterior"):
        P.swap_states(a, P.ReversibleJump(other, np.random.default_rng(2)))


def test_parallel_tempering_keeps_the_cold_chain_on_the_exact_posterior(small_problem):
    exact = P.exact_posterior_mean(small_problem)
    ladder = P.ParallelTempering(small_problem, np.random.default_rng(7),
                                 small_problem.prior.marks[[1, 3]],
                                 betas=P.geometric_ladder(3, 0.1), swap_every=5)
    result = ladder.run(15_000, burn_in=1_000)
    assert np.abs(result["mean"] - exact).max() < 0.03
    # Neighbours of a ladder this gentle swap often, every chain moved, and the hotter a
    # chain the more births and deaths it accepts (what the ladder is for).
    assert all(0.2 < rate <= 1 for rate in result["swap_rates"])
    assert all(chain.accepted["update"] > 1000 for chain in ladder.chains)
    jumps = [chain.accepted["birth"] + chain.accepted["death"] for chain in ladder.chains]
    assert jumps == sorted(jumps) and jumps[-1] > 10 * max(jumps[0], 1)
    pooled = P.sample(small_problem, 2, 10_000, burn_in=1_000, seed=3,
                      betas=(1.0, 0.3), swap_every=10)
    assert np.abs(pooled["mean"] - exact).max() < 0.03
    assert all(len(chain["swap_rates"]) == 1 for chain in pooled["chains"])


def test_bad_ladders_are_named(small_problem):
    rng = np.random.default_rng(0)
    for betas in ((0.5, 0.25), (1.0, 1.0), (1.0, 0.5, 0.7), (1.0, 0.0)):
        with pytest.raises(ValueError, match="betas"):
            P.ParallelTempering(small_problem, rng, betas=betas)
    with pytest.raises(ValueError, match="swap_every"):
        P.ParallelTempering(small_problem, rng, swap_every=0)
    assert P.geometric_ladder(3, 0.25) == pytest.approx([1.0, 0.5, 0.25])
    assert P.geometric_ladder(1, 0.25) == [1.0]
    with pytest.raises(ValueError, match="hottest"):
        P.geometric_ladder(3, 0.0)


def _flat_posterior(n: int = 8, noise: float = 0.5) -> P.EllipsePosterior:
    """An n x n problem whose likelihood is flat (the target is the prior, 3 ellipses on
    average), with data that ask for large values (so fitted values must be corrected);
    ``noise`` sets the widths of the fitted values."""
    data = 0.3 + 0.1 * np.random.default_rng(1).random(n * n)
    post = P.EllipsePosterior(sp.eye(n * n), (n, n), data, noise,
                              P.EllipsePrior(mean_count=3.0))
    post.log_likelihood = lambda p: 0.0
    return post


def _held(chain: P.ReversibleJump, steps: int) -> tuple[list[int], np.ndarray]:
    """The ellipse counts and all the marks held, every 20 proposals after 2 000."""
    counts, marks = [], []
    for s in range(steps):
        chain.step()
        if s > 2_000 and s % 20 == 0:
            counts.append(chain.n)
            marks += chain.marks
    return counts, np.array(marks)


@pytest.mark.parametrize("fitted", [True, False])
def test_guided_births_and_fitted_values_leave_the_target_unchanged(fitted):
    # With a flat likelihood the target is the prior itself. A guide that puts
    # every guided birth in one corner, and values fitted to data that ask for
    # large ones, must not move the centres, signs or sizes of the values of the
    # ellipses the chain holds.
    post = _flat_posterior()
    guide = np.zeros((8, 8))
    guide[:2, :2] = 1.0
    chain = P.ReversibleJump(post, np.random.default_rng(0), guide=guide, prior_births=0.2,
                             birth=0.3, death=0.3, fitted=fitted)
    assert chain.fitted == fitted
    counts, marks = _held(chain, 80_000)
    centres, values = marks[:, 3:5], marks[:, 0]
    corner = np.mean((centres[:, 0] < -0.5) & (centres[:, 1] < -0.5))
    assert np.mean(counts) == pytest.approx(3.0, rel=0.1)
    assert corner == pytest.approx(1 / 16, abs=0.03)  # not the guide's share of births
    # The prior's value (U - 1/2) E, E of mean 0.4: positive half the time, E|v| = 0.1.
    assert np.mean(values > 0) == pytest.approx(0.5, abs=0.06)
    assert np.mean(np.abs(values)) == pytest.approx(0.1, rel=0.15)
    assert chain.accepted["birth"] > 1000


def test_rhat_and_effective_sample_size_on_known_chains():
    rng = np.random.default_rng(0)
    iid = rng.standard_normal((4, 4000))
    assert P.split_rhat(iid) == pytest.approx(1.0, abs=0.01)
    assert P.effective_sample_size(iid) == pytest.approx(16_000, rel=0.15)
    # AR(1) with coefficient phi: ESS = n (1 - phi) / (1 + phi).
    phi, ar = 0.9, np.zeros((4, 20_000))
    for t in range(1, ar.shape[1]):
        ar[:, t] = phi * ar[:, t - 1] + rng.standard_normal(4)
    assert P.effective_sample_size(ar) == pytest.approx(80_000 * (1 - phi) / (1 + phi),
                                                        rel=0.25)
    # Chains stuck in different places.
    apart = iid + np.arange(4)[:, None]
    assert P.split_rhat(apart) > 1.5
    assert P.effective_sample_size(apart) < 100
    with pytest.raises(ValueError, match="at least 4"):
        P.split_rhat([np.zeros(3)])


def test_the_greedy_start_finds_two_ellipses_from_the_data_alone():
    shape = (24, 24)
    rng = np.random.default_rng(0)
    matrix = sp.csr_matrix(rng.standard_normal((300, 576)) / 24)
    marks = np.array([[0.8, 0.35, 0.25, -0.4, 0.3, 0.5], [-0.5, 0.3, 0.4, 0.4, -0.3, 2.0]])
    probe = P.EllipsePosterior(matrix, shape, np.zeros(300), 0.02, P.EllipsePrior())
    truth = probe.image(marks)
    p = matrix @ truth.ravel()
    y = p + 0.02 * np.mean(np.abs(p)) * rng.standard_normal(300)
    post = P.EllipsePosterior(matrix, shape, y, 0.02, P.EllipsePrior(mean_count=2.0))
    found = P.greedy_start(post, np.random.default_rng(1), candidates=100, refine=300)
    image = post.image(found)
    assert 1 <= len(found) <= 6
    assert np.linalg.norm(image - truth) < 0.25 * np.linalg.norm(truth)
    # Nearly as likely as the truth, far more than nothing.
    truth_l = post.log_likelihood(p)
    assert post.log_likelihood(matrix @ image.ravel()) > truth_l - 0.1 * abs(truth_l)
    # A sharp reconstruction to fit first, in the image domain, leads it there too.
    blurred = truth + 0.01 * rng.standard_normal(truth.shape)
    fitted = P.greedy_start(post, np.random.default_rng(3), candidates=100, refine=300,
                            target=blurred, target_error=0.01)
    assert np.linalg.norm(post.image(fitted) - truth) < 0.25 * np.linalg.norm(truth)
    with pytest.raises(ValueError, match="target must be"):
        P.greedy_start(post, rng, target=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="not both"):
        P.greedy_start(post, rng, target=truth, start=marks)
    # From the truth it keeps the truth (no addition pays for itself).
    kept = P.greedy_start(post, np.random.default_rng(2), candidates=50, refine=50, start=marks)
    assert np.linalg.norm(post.image(kept) - truth) < 0.05 * np.linalg.norm(truth)
    with pytest.raises(ValueError, match="continuous EllipsePrior"):
        P.greedy_start(P.EllipsePosterior(sp.eye(4), (2, 2), np.ones(4), 0.1,
                                          P.DiscretePrior(np.zeros((1, 6)))), rng)


def test_library_births_leave_the_target_unchanged():
    # As above, with births drawn from a library of one candidate ellipse whose
    # kernels are wide enough for its density to matter beside the prior's: the
    # chain must still hold the prior's ellipses, not the library's.
    post = _flat_posterior()
    candidate = np.array([0.3, 0.15, -0.6, -0.6, 0.4])
    library = C.EllipseLibrary(candidate[None], widths=(0.1, 0.05, 0.15, 0.15, 0.12))
    chain = P.ReversibleJump(post, np.random.default_rng(0), library=library,
                             library_births=0.7, library_switches=0.5, birth=0.3, death=0.3)
    counts, marks = _held(chain, 100_000)
    near = (np.abs(marks[:, 3] - candidate[2]) < 0.15) & (np.abs(marks[:, 4] - candidate[3]) < 0.15)
    assert np.mean(counts) == pytest.approx(3.0, rel=0.1)
    assert np.mean(near) == pytest.approx(0.3 * 0.3 / 4, abs=0.01)  # the prior's share
    assert np.mean(marks[:, 1:3]) == pytest.approx(0.2, rel=0.15)  # half-axes of mean 0.2
    assert chain.accepted["birth"] > 1000
    with pytest.raises(TypeError, match="EllipseLibrary"):
        P.ReversibleJump(post, np.random.default_rng(0), library=candidate[None])
    with pytest.raises(ValueError, match="library_births"):
        P.ReversibleJump(post, np.random.default_rng(0), library=library, library_births=1.0)
    with pytest.raises(ValueError, match="library_switches"):
        P.ReversibleJump(post, np.random.default_rng(0), library=library, library_switches=-0.1)


def test_detected_shapes_lead_the_greedy_start_to_overlapping_ellipses():
    # Three large ellipses overlapping one another, one inside another, one on
    # its own, seen by the small set-up's ray transform: random candidates and
    # region moments tile the overlaps with wrong ellipses; the shapes read off
    # the edges of a sharp image of them (here the truth with 1 % noise, as a
    # stand-in for LPD's) are the right ones.
    from lpd.data import pipelines
    from lpd.physics import operators

    setup = operators.get_setup("ellipses_small")
    marks = np.array([[0.5, 0.55, 0.3, -0.2, 0.0, 0.4], [-0.3, 0.45, 0.25, 0.2, 0.15, 2.0],
                      [0.25, 0.35, 0.6, 0.0, -0.2, 1.2], [0.4, 0.12, 0.08, -0.35, 0.05, 0.0],
                      [0.3, 0.2, 0.15, 0.65, -0.65, 0.8]])
    grid = tuple(setup.space.shape)
    truth = phantoms.ellipses_to_image(marks, grid)
    y = pipelines.simulate(setup, truth[None], np.random.default_rng(1))[0]
    post = P.EllipsePosterior(setup.numpy.matrix, grid, y, setup.config.noise.relative_std,
                              P.EllipsePrior(mean_count=5.0))
    truth_l = post.log_likelihood(post.columns @ truth.ravel())
    detected = C.detect_ellipses(truth + 0.01 * np.random.default_rng(2).standard_normal(grid))

    def gap_and_error(found):
        image = post.image(found)
        return (truth_l - post.log_likelihood(post.columns @ image.ravel()),
                np.linalg.norm(image - truth) / np.linalg.norm(truth))

    gap, error = gap_and_error(P.greedy_start(post, np.random.default_rng(3), candidates=50,
                                              refine=100, detected=detected))
    blind_gap, blind_error = gap_and_error(P.greedy_start(post, np.random.default_rng(3),
                                                          candidates=50, refine=100))
    assert error < 0.15 < 0.2 < blind_error
    assert gap < blind_gap / 3
    with pytest.raises(ValueError, match="detected must be"):
        P.greedy_start(post, np.random.default_rng(3), detected=np.zeros((2, 6)))


def test_moved_ellipses_keep_the_projection_of_their_footprint():
    # Updates project only the pixels an ellipse gained and lost; after many of them
    # every ellipse's stored projection is still that of its whole footprint.
    rng = np.random.default_rng(4)
    shape = (32, 32)
    matrix = sp.random(300, 32 * 32, density=0.05, random_state=5, format="csr")
    params = phantoms.random_ellipse_params(rng, 6)
    post = P.EllipsePosterior(matrix, shape, matrix @ phantoms.ellipses_to_image(
        params, shape).ravel(), 0.05, P.EllipsePrior())
    chain = P.ReversibleJump(post, np.random.default_rng(6), params, birth=0.01, death=0.01)
    chain.run(3000)
    assert chain.accepted["update"] > 300
    for mark, idx, unit in zip(chain.marks, chain.prints, chain.units, strict=True):
        np.testing.assert_array_equal(idx, P.footprint(mark, shape))
        np.testing.assert_allclose(unit, post.projection(idx, 1.0), atol=1e-9)
    np.testing.assert_allclose(chain.p, matrix @ chain.x, atol=1e-8)


def _overlapping_problem():
    """Four ellipses on the small set-up's ray transform, three of them overlapping."""
    from lpd.physics import operators

    setup = operators.get_setup("ellipses_small")
    shape = tuple(setup.space.shape)
    marks = np.array([[0.4, 0.3, 0.2, -0.2, 0.0, 0.3], [0.2, 0.25, 0.15, 0.05, 0.1, 1.0],
                      [-0.1, 0.2, 0.1, -0.1, -0.2, 0.5], [-0.3, 0.15, 0.1, 0.6, -0.6, 2.0]])
    truth = P.EllipsePosterior(setup.numpy.matrix, shape,
                               np.zeros(setup.numpy.matrix.shape[0]), 0.05, P.EllipsePrior())
    clean = truth.columns @ truth.image(marks).ravel()
    data = clean + 0.05 * np.mean(np.abs(clean)) * np.random.default_rng(0).standard_normal(
        clean.size)
    post = P.EllipsePosterior(setup.numpy.matrix, shape, data, 0.05, P.EllipsePrior())
    return post, marks


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_a_merge_and_the_split_that_undoes_it_have_reciprocal_ratios(beta):
    # Detailed balance of the pair of moves: the log acceptance ratio of merging
    # ellipse j into i, and that of the split which gives the two back, sum to 0.
    post, marks = _overlapping_problem()
    rng = np.random.default_rng(3)
    checked = 0
    for trial in range(20):
        chain = P.ReversibleJump(post, np.random.default_rng(trial), marks, merge=0.1)
        chain.beta = beta
        i, j = (0, 1) if trial % 2 == 0 else (1, 0)
        assert j in chain._neighbours(chain.marks[i], i)
        assert chain._neighbours(chain.marks[i], i).size >= 2  # so that the counts matter
        new = chain._shape_step(chain.marks[i])
        plan = chain._merge_plan(i, j, new)
        new[0] = plan["law"][0] + 0.01 * rng.standard_normal()
        merge_ratio, p_new, log_l = chain._merge_log_ratio(i, j, new, plan)
        first, second = chain.marks[i].copy(), chain.marks[j].copy()
        # The merged state, with the merged ellipse where i was (j removed).
        merged = [m for k, m in enumerate(chain.marks) if k != j]
        k = i if i < j else i - 1
        merged[k] = new
        back = P.ReversibleJump(post, np.random.default_rng(0), np.array(merged), merge=0.1)
        back.beta = beta
        assert back.log_l == pytest.approx(log_l, abs=1e-6)
        split_plan = back._split_plan(k, first, second)
        split_ratio, p_back, _ = back._split_log_ratio(k, first, second, split_plan)
        np.testing.assert_allclose(p_back, chain.p, atol=1e-9)
        assert merge_ratio + split_ratio == pytest.approx(0.0, abs=1e-6)
        checked += 1
    assert checked == 20


def test_merges_and_splits_leave_the_target_unchanged():
    # As with births: with a flat likelihood the target is the prior, so the count
    # stays Poisson(3) and the marks keep the prior's law, however often merges and
    # splits are proposed.
    post = _flat_posterior()
    chain = P.ReversibleJump(post, np.random.default_rng(1), birth=0.05, death=0.05,
                             merge=0.35)
    counts, marks = _held(chain, 150_000)
    assert np.mean(counts) == pytest.approx(3.0, abs=0.3)
    assert np.var(counts) == pytest.approx(3.0, abs=0.5)
    assert np.mean(marks[:, 1:3]) == pytest.approx(0.2, abs=0.025)
    assert np.mean(marks[:, 0] > 0) == pytest.approx(0.5, abs=0.06)
    assert chain.accepted["merge"] > 100 and chain.accepted["split"] > 100
    with pytest.raises(ValueError, match="merge"):
        P.ReversibleJump(post, np.random.default_rng(0), birth=0.3, death=0.3, merge=0.3)
    with pytest.raises(ValueError, match="fitted values"):
        P.ReversibleJump(post, np.random.default_rng(0), merge=0.1, fitted=False)


def _joint_chain(post, marks, beta, seed=0):
    """A chain with joint moves, a guide and a library: every term of their ratios counts."""
    guide = np.abs(post.columns.T @ post.data).reshape(post.shape)  # the back-projection
    library = C.EllipseLibrary(np.array([[0.2, 0.15, 0.0, 0.05, 0.7],
                                         [0.25, 0.15, 0.05, 0.1, 1.0]]))
    chain = P.ReversibleJump(post, np.random.default_rng(seed), marks, guide=guide,
                             library=library, joint=0.5)
    chain.beta = beta
    return chain


def _joint_proposal(chain, k, new, unit, near, terms):
    """A joint move's values drawn as the chain draws them (``new[0]`` set), its log ratio,
    and ``A x`` and ``log L`` after it."""
    plan = chain._joint_plan(k, unit, near)
    drawn = chain._draw_joint(plan["after"])
    new[0] = drawn[-1]
    terms = chain._birth_terms(new, chain.n) if terms is None else terms
    ratio, p_new, log_l = chain._joint_log_ratio(k, new, unit, near, drawn[:-1], plan, terms)
    return ratio, drawn[:-1], p_new, log_l


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_a_joint_birth_and_the_death_that_undoes_it_have_reciprocal_ratios(beta):
    # Detailed balance: the log acceptance ratio of a birth that redraws its
    # neighbours' values and that of the death which gives the old values back
    # sum to 0. Both come from `_joint_log_ratio`, so this checks that a move and
    # its reverse see the same neighbours, the same rest of A x and the same laws;
    # the densities themselves are checked against the prior below.
    post, marks = _overlapping_problem()
    rng = np.random.default_rng(4)
    for trial in range(10):
        chain = _joint_chain(post, marks, beta, seed=trial)
        new = np.array([0.0, 0.2, 0.15, 0.0, 0.05, 0.7]) + 0.02 * rng.standard_normal(6)
        near = chain._neighbours(new, None)
        assert near.size >= 2  # so that the neighbours' values matter
        unit = post.projection(P.footprint(new, post.shape), 1.0)
        birth, values, p_new, log_l = _joint_proposal(chain, None, new, unit, near, None)
        born = np.vstack([marks, new])
        born[near, 0] = values
        back = _joint_chain(post, born, beta)
        assert back.log_l == pytest.approx(log_l, abs=1e-6)
        k = back.n - 1
        assert np.array_equal(back._joint_neighbours(k, None), near)
        back_plan = back._joint_plan(k, None, near)
        death, p_back, _ = back._joint_log_ratio(
            k, None, None, near, marks[near, 0], back_plan,
            -back._birth_terms(back.marks[k], back.n - 1))
        np.testing.assert_allclose(p_back, chain.p, atol=1e-9)
        np.testing.assert_allclose(p_new, back.p, atol=1e-9)
        assert birth + death == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_a_joint_update_and_its_reverse_have_reciprocal_ratios(beta):
    post, marks = _overlapping_problem()
    rng = np.random.default_rng(5)
    for trial in range(12):
        chain = _joint_chain(post, marks, beta, seed=trial)
        k = trial % 4
        old = chain.marks[k].copy()
        new = old + np.r_[0.0, 0.03 * rng.standard_normal(5)]
        if k == 3:  # far from the others: a step that brings it among them
            new[3:5] = [0.0, -0.1]
        near = chain._joint_neighbours(k, new)
        assert near.size >= 2
        idx = P.footprint(new, post.shape)
        unit = chain._moved_projection(chain.prints[k], chain.units[k], idx)
        forward, values, _, log_l = _joint_proposal(chain, k, new, unit, near, 0.0)
        moved = marks.copy()
        moved[k], moved[near, 0] = new, values
        back = _joint_chain(post, moved, beta)
        assert back.log_l == pytest.approx(log_l, abs=1e-6)
        assert np.array_equal(back._joint_neighbours(k, old), near)
        back_plan = back._joint_plan(k, chain.units[k], near)
        reverse, p_back, _ = back._joint_log_ratio(k, old, chain.units[k], near,
                                                   marks[near, 0], back_plan, 0.0)
        np.testing.assert_allclose(p_back, chain.p, atol=1e-9)
        assert forward + reverse == pytest.approx(0.0, abs=1e-6)


def test_joint_moves_leave_the_target_unchanged():
    # With a flat likelihood the target is the prior: the count stays Poisson(3)
    # and the marks keep the prior's law when nearly every move redraws the
    # neighbours' values around their fit to data that ask for large values. (On
    # a finer grid than the other tests': on 8 x 8 pixels two small ellipses
    # often cover the same pixels, and only plain moves change such a pair; with
    # wider fitted values, so that large ellipses get the prior's small values.)
    post = _flat_posterior(24, 4.0)
    chain = P.ReversibleJump(post, np.random.default_rng(3), birth=0.35, death=0.25, joint=0.9)
    counts, marks = _held(chain, 100_000)
    assert np.mean(counts) == pytest.approx(3.0, abs=0.3)
    assert np.var(counts) == pytest.approx(3.0, abs=0.5)
    assert np.mean(marks[:, 1:3]) == pytest.approx(0.2, abs=0.025)
    assert np.mean(marks[:, 0] > 0) == pytest.approx(0.5, abs=0.06)
    assert np.mean(np.abs(marks[:, 0])) == pytest.approx(0.1, rel=0.15)
    assert chain.accepted["joint"] > 5000
    with pytest.raises(ValueError, match="joint"):
        P.ReversibleJump(post, np.random.default_rng(0), joint=1.0)
    with pytest.raises(ValueError, match="fitted values"):
        P.ReversibleJump(post, np.random.default_rng(0), joint=0.5, fitted=False)


@pytest.mark.parametrize("with_library", [False, True])
def test_rebuilds_leave_the_target_unchanged(with_library):
    # With a flat likelihood the target is the prior: the count stays Poisson(3) and
    # the marks keep the prior's law when a third of the proposals slide one ellipse
    # to a new shape while the ellipses centred near it relax (the new shape a
    # random-walk step, or a library candidate centred near the old one).
    post = _flat_posterior(24, 4.0)
    library = None
    if with_library:
        rng = np.random.default_rng(7)
        library = C.EllipseLibrary(np.array([post.prior.sample_mark(rng)[1:]
                                             for _ in range(300)]),
                                   widths=(0.05, 0.05, 0.05, 0.05, 0.1), scales=(1.0, 3.0))
    chain = P.ReversibleJump(post, np.random.default_rng(5), birth=0.3, death=0.3,
                             rebuild=0.3, rebuild_stages=3, rebuild_relax=4, joint=0.3,
                             library=library)
    steps = 60_000 if with_library else 40_000
    counts, marks = _held(chain, steps)
    assert np.mean(counts) == pytest.approx(3.0, abs=0.3)
    assert np.var(counts) == pytest.approx(3.0, abs=0.5)
    assert np.mean(marks[:, 1:3]) == pytest.approx(0.2, abs=0.025)
    assert np.mean(marks[:, 0] > 0) == pytest.approx(0.5, abs=0.06)
    assert np.mean(np.abs(marks[:, 3:5])) == pytest.approx(0.5, abs=0.05)  # uniform centres
    assert chain.accepted["rebuild"] > 1000
    # The relaxations inside a rebuild are not counted as the chain's own proposals.
    assert sum(chain.proposed[k] for k in ("birth", "death", "update")) < steps
    for bad in ({"rebuild": 1.0}, {"rebuild_stages": 0}, {"rebuild_relax": -1},
                {"rebuild_margin": -0.1}):
        with pytest.raises(ValueError, match="rebuild"):
            P.ReversibleJump(post, np.random.default_rng(0), **bad)


def test_rebuilds_keep_a_chain_at_the_posteriors_likelihood():
    # Started at the phantom's ellipses, chains with and without rebuilds hold the
    # same log-likelihood on average (a rebuild that got the sign of its work wrong
    # drives it down by thousands of nats), and a chain's image, A x and log L stay
    # those of its ellipses through accepted and rejected rebuilds alike.
    post, marks = _overlapping_problem()
    means = {}
    for rebuild in (0.0, 0.3):
        chain = P.ReversibleJump(post, np.random.default_rng(1), marks, rebuild=rebuild,
                                 rebuild_stages=5, rebuild_relax=10, joint=0.3)
        traces = []
        for s in range(5000):
            chain.step()
            if s >= 1000 and s % 10 == 0:
                traces.append(chain.log_l)
        means[rebuild] = np.mean(traces)
        image = post.image(np.array(chain.marks))
        np.testing.assert_allclose(chain.x, image.ravel(), atol=1e-9)
        np.testing.assert_allclose(chain.p, post.columns @ image.ravel(), atol=1e-9)
        assert chain.log_l == pytest.approx(post.log_likelihood(chain.p), abs=1e-6)
    assert 100 < chain.accepted["rebuild"] < chain.proposed["rebuild"]
    assert means[0.3] == pytest.approx(means[0.0], abs=25)  # chains differ by ~10


def test_the_work_of_an_instant_rebuild_is_its_change_of_log_posterior():
    # One stage and no relaxation: the slide is a jump, and its work is the log
    # posterior after it less before (values kept); the state is left unchanged.
    post, marks = _overlapping_problem()
    chain = P.ReversibleJump(post, np.random.default_rng(2), marks, rebuild_stages=1,
                             rebuild_relax=0)
    shape = np.array([0.3, 0.14, 0.1, 0.05, 1.2])
    moved = marks.copy()
    moved[1, 1:] = shape
    work = chain.rebuild_work(1, shape)
    assert work == pytest.approx(post.log_posterior(moved) - post.log_posterior(marks),
                                 abs=1e-6)
    np.testing.assert_array_equal(np.array(chain.marks), marks)
    assert chain.log_l == pytest.approx(post.log_likelihood(post.columns @ post.image(
        marks).ravel()), abs=1e-6)
    # In stages, with the neighbours relaxing, it is a random variable (the NCMC work).
    chain.rebuild_stages, chain.rebuild_relax = 4, 20
    works = [chain.rebuild_work(1, shape) for _ in range(5)]
    assert len(set(works)) > 1 and all(math.isfinite(w) for w in works)
    np.testing.assert_array_equal(np.array(chain.marks), marks)
    with pytest.raises(ValueError, match="no ellipse 7"):
        chain.rebuild_work(7, shape)
    assert chain.rebuild_work(1, [0.2, -0.1, 0.0, 0.0, 0.0]) == -math.inf
