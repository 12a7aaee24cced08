"""The deep image prior (lpd.methods.dip): it fits the data, it is seeded, it is tuned on disk."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from lpd.data import phantoms, pipelines  # noqa: E402
from lpd.methods import classical, dip, registry  # noqa: E402
from lpd.physics import operators  # noqa: E402


@pytest.fixture(scope="module")
def case():
    setup = operators.get_setup("ellipses_small")
    truth = phantoms.shepp_logan((64, 64))
    data = pipelines.simulate(setup, truth[None], np.random.default_rng(0))[0]
    return setup, truth, data


def test_fitting_lowers_the_data_misfit_and_is_repeatable(case):
    setup, _, data = case
    misfits = []
    method = dip.DIPReconstructor(setup, n_iter=40, learning_rate=1e-2, features=4, depth=2)
    image = method.fit(data, 10, lambda k, x: misfits.append(
        float(np.sum((setup.numpy.forward(x) - data) ** 2))))
    assert image.shape == (64, 64) and image.dtype == np.float32
    assert len(misfits) == 4 and misfits[-1] < 0.95 * misfits[0]
    np.testing.assert_allclose(method(data), image, atol=1e-5)  # the same seed, the same fit
    assert method.n_parameters == 0 and method.max_held_out == 8


def test_the_iteration_count_comes_from_validation_data(case, tmp_path):
    setup, truth, data = case
    curve = dip.iteration_curve(setup, data[None], truth[None], 20, 10, learning_rate=1e-2,
                                features=4, depth=2)
    assert curve["steps"] == [10, 20] and curve["best"] in (10, 20)
    path = tmp_path / "dip.json"
    dip.save_dip("ellipses_small", {"n_iter": curve["best"], "learning_rate": 1e-2,
                                    "features": 4, "depth": 2},
                 {"n_images": 1, **curve}, path)
    loaded = dip.load_dip(setup, path)
    assert loaded.n_iter == curve["best"] and "chosen on 1 validation" in loaded.training
    assert json.loads(path.read_text())["setup"] == "ellipses_small"
    with pytest.raises(ValueError, match="deep-image-prior settings of set-up"):
        dip.load_dip("ellipses", path)
    with pytest.raises(FileNotFoundError, match="tune_dip.py --setup ellipses"):
        dip.load_dip("ellipses", tmp_path / "none.json")
    with pytest.raises(ValueError, match="n_iter"):
        dip.DIPReconstructor(setup, n_iter=0)


def test_the_method_is_in_the_registry():
    assert registry.get("dip").family == "untrained"
    assert registry.get("dip").load() is dip.load_dip


def test_total_variation_is_the_tv_baseline_s():
    import tensorflow as tf

    x = np.random.default_rng(3).normal(size=(17, 23)).astype(np.float32)
    g = classical.gradient(x).astype(np.float64)
    expected = np.sum(np.sqrt(g[0] ** 2 + g[1] ** 2))
    value = float(dip.total_variation(tf.constant(x[None, ..., None]), eps=0.0))
    assert value == pytest.approx(expected, rel=1e-5)
    # the smoothing keeps the gradient finite on a flat image
    flat = tf.Variable(np.zeros((1, 5, 5, 1), np.float32))
    with tf.GradientTape() as tape:
        tv = dip.total_variation(flat)
    assert np.all(np.isfinite(tape.gradient(tv, flat).numpy()))


def test_dip_with_tv_returns_its_lowest_objective_iterate(case):
    setup, truth, data = case
    op = setup.numpy.forward
    weight = 1e-3

    def objective(x):
        g = classical.gradient(x)
        return (0.5 * np.sum((op(x) - data) ** 2)
                + weight * np.sum(np.sqrt(g[0].astype(np.float64) ** 2 + g[1] ** 2)))

    seen = []
    method = dip.DIPReconstructor(setup, n_iter=30, learning_rate=1e-2, features=4, depth=2,
                                  tv_weight=weight)
    image = method.fit(data, 1, lambda k, x: seen.append(objective(x)))
    assert np.all(np.diff(seen) <= 1e-3 * seen[0])  # the best so far never gets worse
    assert objective(image) == pytest.approx(seen[-1], rel=1e-3)
    assert method.params["tv_weight"] == weight
    plain = dip.DIPReconstructor(setup, n_iter=30, learning_rate=1e-2, features=4, depth=2)
    assert not np.allclose(plain(data), image)
    with pytest.raises(ValueError, match="tv_weight"):
        dip.DIPReconstructor(setup, tv_weight=-1.0)


def test_patience_halves_the_step_when_the_objective_stalls(case):
    setup, _, data = case
    settings = dict(n_iter=30, learning_rate=5e-2, features=4, depth=2, tv_weight=1e-3)
    steady = dip.DIPReconstructor(setup, **settings)
    steady.fit(data)
    assert steady.final_learning_rate == pytest.approx(5e-2)
    patient = dip.DIPReconstructor(setup, patience=1, **settings)
    image = patient.fit(data)
    assert patient.final_learning_rate < 5e-2 and patient.params["patience"] == 1
    # the rule looks back only: the first steps of a longer run are a shorter run
    short = dip.DIPReconstructor(setup, patience=1, **{**settings, "n_iter": 20})
    seen = {}
    patient.fit(data, 20, lambda k, x: seen.setdefault(k, x))
    np.testing.assert_allclose(short.fit(data), seen[20], atol=1e-5)
    assert image.shape == (64, 64)
    with pytest.raises(ValueError, match="patience"):
        dip.DIPReconstructor(setup, patience=-1)
