"""Tests of lpd.classical: FBP, TV (PDHG), Tikhonov (CGLS), parameter search, errors."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest

from lpd import metrics
from lpd.config import NoiseConfig, ProblemConfig
from lpd.data import phantoms
from lpd.methods import classical
from lpd.physics import operators
from lpd.physics.projector import projector

# A 180-angle parallel-beam problem where FBP is accurate, normalised like the
# ellipse experiment so that the FBP must undo the normalisation.
DENSE = ProblemConfig(name="test_dense", shape=(64, 64), min_pt=(-32.0, -32.0),
                      max_pt=(32.0, 32.0), num_angles=180, normalize=True)
# A tiny problem for exact comparisons with dense linear algebra and with ODL.
TINY = ProblemConfig(name="test_tiny", shape=(16, 16), min_pt=(-8.0, -8.0), max_pt=(8.0, 8.0),
                     num_angles=20)
# The human experiment's physics (fan beam, pre-log Poisson) on a 32 x 32 grid.
FAN = ProblemConfig(name="test_fan", shape=(32, 32), min_pt=(-128.0, -128.0),
                    max_pt=(128.0, 128.0), weighting=1.0, beam="fan", num_angles=64,
                    angle_range=(0.0, 2 * math.pi), det_shape=64, det_min=-360.0,
                    det_max=360.0, src_radius=500.0, det_radius=500.0,
                    noise=NoiseConfig(kind="poisson", mu=0.02, photons=1e4))


def _blob(shape, value=1.0):
    """A smooth image, for which FBP has no edges to blur."""
    u = np.linspace(-1, 1, shape[0])[:, None]
    v = np.linspace(-1, 1, shape[1])[None, :]
    return (value * np.exp(-(u / 0.4) ** 2 - (v / 0.3) ** 2)).astype(np.float32)


def _noisy(setup, image, rng):
    clean = setup.operator(image).data
    return clean + 0.05 * np.mean(np.abs(clean)) * rng.standard_normal(clean.shape)


def _prelog(setup, image, rng):
    noise = setup.config.noise
    lam = noise.photons * np.exp(-noise.mu * setup.ray_trafo(image).data)
    return (rng.poisson(lam) / noise.photons).astype(np.float32)


# --------------------------------------------------------------------------- FBP

@pytest.mark.parametrize("filter_type", ["Ram-Lak", "hann"])
def test_fbp_recovers_smooth_phantom_from_noise_free_normalised_data(filter_type):
    setup = operators.get_setup(DENSE)
    image = _blob(setup.space.shape)
    recon = classical.FBPReconstructor(setup, filter_type)(setup.operator(image).data)
    # Stated accuracy: 3 % relative L2 error (what remains is ODL's ramp filter
    # without a DC term, an offset of about 0.3 % of the peak).
    assert np.linalg.norm(recon - image) / np.linalg.norm(image) < 0.03
    assert recon.dtype == np.float32 and recon.shape == image.shape


def test_fbp_fan_beam_prelog_recovers_smooth_phantom():
    setup = operators.get_setup(FAN)
    image = _blob(setup.space.shape)
    data = np.exp(-setup.config.noise.mu * setup.ray_trafo(image).data)
    recon = classical.FBPReconstructor(setup, "Hann")(data)
    # Fan-beam FBP is exact only for a zero fan angle: 8 % relative error here.
    assert np.linalg.norm(recon - image) / np.linalg.norm(image) < 0.08
    post = classical.FBPReconstructor(setup, "Hann", post_log=True)(
        setup.ray_trafo(image).data)
    np.testing.assert_allclose(post, recon, atol=1e-4)


def test_fbp_ellipse_setup_is_consistent_with_normalisation(rng):
    setup = operators.get_setup("ellipses_small")
    image = phantoms.shepp_logan(setup.space.shape)
    recon = classical.FBPReconstructor(setup, "Hann")(setup.operator(image).data)
    # 30 angles leave streaks, but the mean (DC) of the image must be right.
    assert recon.mean() == pytest.approx(image.mean(), rel=0.05)
    assert metrics.psnr(image, recon) > 18


# ---------------------------------------------------------------------------- TV

def test_gradient_transpose_and_norm(rng):
    x, g = rng.standard_normal((7, 9)), rng.standard_normal((2, 7, 9))
    assert np.vdot(classical.gradient(x), g) == pytest.approx(
        np.vdot(x, classical.gradient_transpose(g)))
    dense = np.stack([classical.gradient(e.reshape(7, 9)).ravel() for e in np.eye(63)], axis=1)
    assert classical.gradient_norm((7, 9)) == pytest.approx(np.linalg.norm(dense, 2))


def test_lambertw_matches_scipy():
    from scipy.special import lambertw

    log_arg = np.array([-800.0, -30.0, -1.0, 0.0, 0.5, 1.0, 3.0, 50.0, 600.0])
    expected = np.array([float(lambertw(np.exp(v)).real) if v < 700 else np.nan
                         for v in log_arg])
    got = classical._lambertw_exp(log_arg)
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-12, atol=1e-300)
    # Beyond overflow: w + log(w) = log_arg still holds.
    assert got[-1] + np.log(got[-1]) == pytest.approx(600.0)


def test_poisson_prox_solves_its_optimality_condition(rng):
    y = rng.uniform(0.0, 1.2, 50)
    y[:5] = 0.0
    term = classical._PoissonKL(y, mu=0.02)
    v = rng.uniform(-200, 400, 50).astype(np.float32)
    for t in (1e-3, 1.0, 1e5):
        p = term.prox(v, t).astype(np.float64)
        residual = t * 0.02 * (y - np.exp(-0.02 * p)) + p - v
        assert np.max(np.abs(residual) / (1 + np.abs(p))) < 1e-5


def test_tv_agrees_with_odl_pdhg(rng):
    """Our PDHG and ODL's reach the same minimiser of the same objective."""
    import odl

    setup = operators.get_setup(TINY)
    image = _blob(setup.space.shape)
    data = _noisy(setup, image, rng).astype(np.float32)
    weight = 0.02
    tv = classical.TVReconstructor(setup, weight, n_iter=1000, initial="zeros", step_ratio=0.1)
    ours = tv(data)

    # The same objective in ODL's terms: its spaces are weighted, so rescale the
    # functionals to plain sums; order-0 padding is the Neumann boundary.
    op = setup.operator
    grad = odl.Gradient(setup.space, pad_mode="order0")
    w_range = operators.constant_weighting(op.range)
    w_space = operators.constant_weighting(setup.space)
    data_fit = (0.5 / w_range) * odl.functionals.L2NormSquared(op.range).translated(
        op.range.element(data))
    reg = (weight / w_space) * odl.functionals.GroupL1Norm(grad.range)
    stacked = odl.BroadcastOperator(op, grad)
    norm = 1.05 * odl.power_method_opnorm(stacked, maxiter=200)
    x = setup.space.zero()
    odl.solvers.pdhg(x, odl.functionals.ZeroFunctional(setup.space),
                     odl.functionals.SeparableSum(data_fit, reg), stacked, niter=1000,
                     tau=0.3 / norm, sigma=1.0 / (0.3 * norm))
    reference = x.data

    assert tv.objective(ours, data) == pytest.approx(tv.objective(reference, data), rel=1e-4)
    assert np.linalg.norm(ours - reference) / np.linalg.norm(reference) < 1e-3


def test_tv_objective_decreases_and_beats_fbp(rng):
    setup = operators.get_setup("ellipses_small")
    image = phantoms.shepp_logan(setup.space.shape)
    data = _noisy(setup, image, rng)
    fbp = classical.FBPReconstructor(setup, "Hann")(data)
    tv = classical.TVReconstructor(setup, 1e-3, n_iter=300, nonneg=True)
    objective = {}
    recon = tv.reconstruct(data, callback=lambda it, x: objective.__setitem__(
        it, tv.objective(x, data)) if it in (10, 100, 300) else None)
    assert objective[10] > objective[100] > objective[300]
    assert objective[300] < tv.objective(np.maximum(fbp, 0), data)
    assert recon.min() >= 0
    assert metrics.psnr(image, recon) > metrics.psnr(image, fbp) + 3


def test_tv_poisson_prelog_beats_fbp(rng):
    setup = operators.get_setup(FAN)
    image = _blob(setup.space.shape)
    image += 0.5 * (np.hypot(*np.meshgrid(np.linspace(-1, 1, 32), np.linspace(-1, 1, 32),
                                           indexing="ij")) < 0.3)
    data = _prelog(setup, image, rng)
    fbp = classical.FBPReconstructor(setup, "Hann")(data)
    tv = classical.TVReconstructor(setup, 3e-3, n_iter=300, nonneg=True, step_ratio=1.0)
    recon = tv(data)
    assert np.all(np.isfinite(recon))
    assert metrics.psnr(image, recon) > metrics.psnr(image, fbp) + 1
    # Post-log input reaches the same solution.
    post = classical.TVReconstructor(setup, 3e-3, n_iter=300, nonneg=True, step_ratio=1.0,
                                     post_log=True)(-np.log(np.maximum(data, 1e-4)) / 0.02)
    assert metrics.psnr(image, post) == pytest.approx(metrics.psnr(image, recon), abs=0.1)


def test_tv_step_sizes_satisfy_the_convergence_condition():
    tv = classical.TVReconstructor(TINY, 1e-2, step_ratio=7.0)
    tau, sigma, a, b = tv.step_sizes()
    proj = projector(tv.setup.operator)
    matrix = np.vstack([proj.matrix.toarray() / a,
                        np.stack([classical.gradient(e.reshape(16, 16)).ravel()
                                  for e in np.eye(256)], axis=1) / b])
    assert tau / sigma == pytest.approx(7.0)
    assert tau * sigma * np.linalg.norm(matrix, 2) ** 2 < 1


# ---------------------------------------------------------------------- Tikhonov

def test_tikhonov_solves_the_normal_equations(rng):
    setup = operators.get_setup(TINY)
    data = _noisy(setup, _blob(setup.space.shape), rng).astype(np.float32)
    matrix = projector(setup.operator).matrix.toarray().astype(np.float64)
    for weight in (1.0, 10.0):
        normal = matrix.T @ matrix + weight * np.eye(matrix.shape[1])
        expected = np.linalg.solve(normal, matrix.T @ data.ravel()).reshape(16, 16)
        tik = classical.TikhonovReconstructor(setup, weight, n_iter=500, tol=1e-7)
        got = tik(data)
        assert tik.iterations_run < 500
        assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 1e-4


def test_tikhonov_without_weight_gives_minimum_norm_least_squares(rng):
    setup = operators.get_setup(TINY)
    data = _noisy(setup, _blob(setup.space.shape), rng).astype(np.float32)
    matrix = projector(setup.operator).matrix.toarray().astype(np.float64)
    expected = (np.linalg.pinv(matrix, rcond=1e-6) @ data.ravel()).reshape(16, 16)
    got = classical.TikhonovReconstructor(setup, 0.0, n_iter=2000, tol=1e-9)(data)
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 1e-2


# ------------------------------------------------------------- parameter search

@pytest.fixture(scope="module")
def validation():
    setup = operators.get_setup("ellipses_small")
    rng = np.random.default_rng(7)
    truth = np.stack([phantoms.shepp_logan(setup.space.shape),
                      phantoms.random_ellipses(rng, setup.space.shape)])
    data = np.stack([_noisy(setup, t, rng) for t in truth]).astype(np.float32)
    return setup, data, truth


def test_golden_section_finds_interior_tv_weight(validation):
    setup, data, truth = validation
    build = functools.partial(classical.TVReconstructor, setup)
    result = classical.golden_section_search(build, "weight", 1e-5, 1e-1, data, truth,
                                             fixed={"n_iter": 150}, n_eval=8)
    scores = {p["weight"]: s for p, s in result.trials}
    assert 1e-5 < result.best["weight"] < 1e-1
    assert result.score > max(scores[1e-5], scores[1e-1]) + 1.0
    assert result.best["n_iter"] == 150 and len(result.trials) == 10
    json.dumps(result.to_dict())


def test_grid_search_finds_interior_tikhonov_weight(validation):
    setup, data, truth = validation
    build = functools.partial(classical.TikhonovReconstructor, setup)
    grid = {"weight": [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]}
    result = classical.grid_search(build, grid, data, truth, fixed={"n_iter": 50})
    scores = [s for _, s in result.trials]
    assert [p["weight"] for p, _ in result.trials] == grid["weight"]
    assert 1e-5 < result.best["weight"] < 10.0
    assert result.score == max(scores) > max(scores[0], scores[-1]) + 0.5


def test_params_round_trip_and_no_silent_overwrite(tmp_path):
    params = classical.ClassicalParams(setup="ellipses_small", fbp_filter="hamming",
                                       fbp_frequency_scaling=0.9, tv_weight=1e-3)
    path = classical.save_params(params, tmp_path / "p.json", search={"grid": [1, 2]})
    assert classical.load_params("ellipses_small", path) == params
    assert params.fbp_filter == "Hamming"
    with pytest.raises(FileExistsError):
        classical.save_params(params, path)
    classical.save_params(params, path, overwrite=True)
    with pytest.raises(ValueError, match="ellipses_small"):
        classical.load_params("ellipses", path)
    with pytest.raises(FileNotFoundError, match="tune_classical"):
        classical.load_params("ellipses_small", tmp_path / "missing.json")
    recons = params.reconstructors()
    assert {k: r.key for k, r in recons.items()} == {"fbp": "fbp", "tv": "tv",
                                                     "tikhonov": "tikhonov"}
    assert recons["tv"].params["weight"] == 1e-3


def test_shipped_params_load():
    for path in sorted(classical.params_path("x").parent.glob("*.json")):
        params = classical.load_params(path.stem)
        assert params.setup == path.stem
        record = json.loads(path.read_text())
        assert "command" in record["search"]


# --------------------------------------------------------------------- errors

@pytest.mark.parametrize("data, match", [
    (np.zeros((30, 5)), "shape"),
    (np.zeros((2, 30, 93)), "a batch"),
    (np.zeros((30, 93, 1)), "channel"),
    (np.full((30, 93), np.nan), "NaN"),
    (np.full((30, 93), "a"), "real numbers"),
])
def test_bad_data_is_refused(data, match):
    recon = classical.FBPReconstructor("ellipses_small")
    assert recon.data_shape == (30, 93)
    with pytest.raises(ValueError, match=match):
        recon(data)


def test_negative_photon_counts_are_refused():
    setup = operators.get_setup(FAN)
    data = np.full(setup.operator.range.shape, 0.5, np.float32)
    data[3, 4] = -0.1
    for recon in (classical.FBPReconstructor(setup), classical.TVReconstructor(setup, 1e-3),
                  classical.TikhonovReconstructor(setup, 1.0)):
        with pytest.raises(ValueError, match="negative"):
            recon(data)
    # Post-log data may be negative (noise around zero attenuation).
    classical.FBPReconstructor(setup, post_log=True)(data)


@pytest.mark.parametrize("make", [
    lambda: classical.FBPReconstructor("ellipses_small", "gauss"),
    lambda: classical.FBPReconstructor("ellipses_small", "Hann", 0.0),
    lambda: classical.FBPReconstructor("ellipses_small", "Hann", 1.5),
    lambda: classical.FBPReconstructor("ellipses_small", post_log=True),
    lambda: classical.TVReconstructor("ellipses_small", 0.0),
    lambda: classical.TVReconstructor("ellipses_small", 1e-3, n_iter=0),
    lambda: classical.TVReconstructor("ellipses_small", 1e-3, initial="random"),
    lambda: classical.TikhonovReconstructor("ellipses_small", -1.0),
    lambda: classical.FBPReconstructor("no_such_setup"),
])
def test_bad_settings_are_refused(make):
    with pytest.raises(ValueError):
        make()
