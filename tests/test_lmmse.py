"""The linear MMSE estimator (lpd.methods.lmmse) and the pseudo-inverse.

The estimator is the best linear reconstruction for its training distribution:
on held-out draws of that distribution its mean squared error must be below
that of every other linear method (Tikhonov at any weight, FBP, the
pseudo-inverse). That theorem is the test of the estimate.
"""

from __future__ import annotations

import numpy as np
import pytest

from lpd.config import NoiseConfig, ProblemConfig
from lpd.data import pipelines
from lpd.methods import classical, lmmse, registry
from lpd.physics import operators

TINY = ProblemConfig(name="tiny", shape=(16, 16), min_pt=(-8.0, -8.0), max_pt=(8.0, 8.0),
                     beam="parallel", num_angles=12, normalize=True,
                     noise=NoiseConfig(kind="gaussian", relative_std=0.05))


def _mse(reconstructor, data, images):
    return float(np.mean([(reconstructor(d) - x) ** 2 for d, x in zip(data, images,
                                                                     strict=True)]))


@pytest.fixture(scope="module")
def tiny():
    setup = operators.get_setup(TINY)
    source = pipelines.RandomPhantoms("ellipses", setup.space.shape)
    data, images = (np.asarray(a) for a in pipelines.fixed_set(setup, source, 200, seed=2018))
    return setup, source, data, images


def test_linear_mmse_beats_every_other_linear_method(tiny):
    setup, source, data, images = tiny
    estimate = lmmse.estimate_moments(setup, source, 3000, seed=0, symmetric=True,
                                      validation=(data, images))
    ours = _mse(lmmse.LinearMMSE(setup, estimate), data, images)
    assert ours == pytest.approx(estimate.record["convergence"][-1]["mse"], rel=1e-4)
    others = {f"tikhonov {w:g}": classical.TikhonovReconstructor(setup, w, 200)
              for w in (1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1)}
    others["pinv"] = classical.PseudoInverseReconstructor(setup)
    others["fbp"] = classical.FBPReconstructor(setup, "Hann", 0.7)
    for name, method in others.items():
        assert ours < _mse(method, data, images), name
    # The estimate converges: more samples, lower held-out error.
    curve = [c["mse"] for c in estimate.record["convergence"]]
    assert curve[-1] <= curve[0]


def test_symmetrising_keeps_an_invariant_covariance_and_averages_the_rest():
    rng = np.random.default_rng(0)
    shape = (4, 4)
    index = np.arange(16).reshape(shape)
    a = rng.standard_normal((16, 16))
    cov = a @ a.T
    mean, symmetric = lmmse._symmetrised(np.arange(16.0), cov, shape)
    # Invariant under every symmetry of the square, and idempotent.
    for k in range(8):
        g = pipelines.symmetry(index, k).reshape(-1)
        np.testing.assert_allclose(symmetric[np.ix_(g, g)], symmetric, atol=1e-12)
        np.testing.assert_allclose(mean[g], mean, atol=1e-12)
    again = lmmse._symmetrised(mean, symmetric, shape)[1]
    np.testing.assert_allclose(again, symmetric, atol=1e-12)
    assert np.all(np.linalg.eigvalsh(symmetric) > -1e-9)  # still a covariance


def test_linear_mmse_is_cached_and_a_damaged_cache_is_estimated_again(tiny, tmp_path,
                                                                     monkeypatch):
    setup, _, data, _ = tiny
    monkeypatch.setenv("LPD_CACHE_DIR", str(tmp_path))
    lines = []
    first = lmmse.linear_mmse(setup, "ellipses", 600, seed=3, log=lines.append)
    cached = list((tmp_path / "lmmse").glob("tiny-ellipses-600-*.npz"))
    assert len(cached) == 1 and any("estimating" in line for line in lines)
    lines.clear()
    second = lmmse.linear_mmse(setup, "ellipses", 600, seed=3, log=lines.append)
    assert not lines  # read from the cache
    np.testing.assert_array_equal(first(data[0]), second(data[0]))
    cached[0].write_bytes(b"not a zip file")
    third = lmmse.linear_mmse(setup, "ellipses", 600, seed=3, log=lines.append)
    assert any("unreadable" in line for line in lines)
    np.testing.assert_array_equal(first(data[0]), third(data[0]))
    assert first.params["n_samples"] == 600


def test_linear_mmse_refuses_pre_log_data_and_a_wrong_estimate(tiny):
    setup, source, _, _ = tiny
    with pytest.raises(ValueError, match="pre-log"):
        lmmse.estimate_moments("human_small", source, 10)
    estimate = lmmse.estimate_moments(setup, source, 50, seed=0)
    with pytest.raises(ValueError, match="gain has shape"):
        lmmse.LinearMMSE("ellipses_small", estimate)
    with pytest.raises(ValueError, match="square"):
        lmmse.estimate_moments(operators.get_setup(ProblemConfig(
            name="oblong", shape=(8, 12), min_pt=(-4.0, -6.0), max_pt=(4.0, 6.0),
            beam="parallel", num_angles=6, normalize=True,
            noise=NoiseConfig(kind="gaussian", relative_std=0.05))),
            pipelines.RandomPhantoms("ellipses", (8, 12)), 10, symmetric=True)


def test_pseudo_inverse_fits_the_data_with_minimum_norm(tiny):
    setup, _, data, _ = tiny
    pinv = classical.PseudoInverseReconstructor(setup, 2000, tol=1e-10)
    x = pinv(data[0])
    proj = setup.numpy
    # Least squares: the residual is orthogonal to the range of A ...
    residual = data[0] - proj.forward(x)
    assert np.linalg.norm(proj.transpose(residual)) < 1e-4 * np.linalg.norm(
        proj.transpose(data[0]))
    # ... and minimum norm: x lies in the range of A^T (CGLS from 0 stays there), so
    # adding a null-space component can only make it longer.
    assert registry.get("pinv").load() is classical.PseudoInverseReconstructor
    assert registry.get("lmmse").family == "statistical"
