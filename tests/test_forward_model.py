"""The forward model of an experiment (`lpd.physics.operators.Setup`) and its faces.

One object per experiment carries the operator's numpy and TensorFlow faces,
its norm, the noise model, the data model, the post-log transform and the
pre-log model; these tests check that the faces agree with each other and with
the formulas they stand for.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from lpd.methods import classical  # noqa: E402
from lpd.physics import bridge, operators  # noqa: E402
from lpd.physics.noise import GaussianNoise, PoissonNoise  # noqa: E402
from lpd.physics.projector import power_norm  # noqa: E402


@pytest.fixture(scope="module")
def human():
    return operators.get_setup("human_small")


@pytest.fixture(scope="module")
def ellipses():
    return operators.get_setup("ellipses_small")


def test_noise_model_and_its_input(ellipses, human):
    assert isinstance(ellipses.noise, GaussianNoise)
    assert ellipses.noise is ellipses.noise  # built once
    assert ellipses.noise_input() is ellipses.operator
    assert isinstance(human.noise, PoissonNoise)
    assert human.noise.mu == human.config.noise.mu
    # Photon noise takes the line integrals of the unnormalised transform.
    assert human.noise_input() is human.ray_trafo
    assert human.noise_input(GaussianNoise(0.05)) is human.operator


def test_data_model_decides_once_for_every_method(ellipses, human):
    assert ellipses.data_model() == "linear"
    assert human.data_model() == "prelog"
    assert human.data_model(post_log=True) == "postlog"
    assert human.data_model(requested="linear") == "linear"
    with pytest.raises(ValueError, match="Poisson"):
        ellipses.data_model(post_log=True)
    with pytest.raises(ValueError, match="needs a Poisson"):
        ellipses.data_model(requested="prelog")
    with pytest.raises(ValueError, match="contradicts"):
        human.data_model(post_log=True, requested="prelog")
    with pytest.raises(ValueError, match="unknown data model"):
        human.data_model(requested="postlog?")
    # The classical reconstructors read it from the set-up.
    assert classical.FBPReconstructor(human).data_model == "prelog"
    assert classical.FBPReconstructor(human, post_log=True).data_model == "postlog"


def test_post_log_inverts_the_expected_pre_log_data(human):
    rng = np.random.default_rng(0)
    line_integrals = rng.uniform(0, 200, (4, 7)).astype(np.float32)
    expected = human.noise.expected(line_integrals)
    np.testing.assert_allclose(human.post_log(expected), line_integrals, rtol=1e-5, atol=1e-3)
    # A ray that no photon reached is clamped at one photon.
    floor = -np.log(1 / human.config.noise.photons) / human.config.noise.mu
    assert human.post_log(np.zeros(3, np.float32)) == pytest.approx(np.full(3, floor))
    # The TensorFlow face computes the same float32 numbers (up to the last bit of log).
    tf_face = bridge.post_log(tf.constant(expected), human.noise.mu,
                              1 / human.config.noise.photons).numpy()
    np.testing.assert_allclose(tf_face, human.post_log(expected), rtol=1e-6)
    # The reconstructors convert with it.
    fbp = classical.FBPReconstructor(human)
    np.testing.assert_array_equal(fbp.line_integrals(expected), human.post_log(expected))


def test_gaussian_set_ups_have_no_pre_log_face(ellipses):
    with pytest.raises(ValueError, match="Gaussian"):
        ellipses.post_log(np.ones(3))
    with pytest.raises(ValueError, match="Gaussian"):
        ellipses.prelog_forward()


def test_faces_of_the_operator_agree(ellipses):
    face = ellipses.tf_operator()
    assert face is ellipses.tf_operator("auto")  # one per back-end
    x = np.random.default_rng(1).standard_normal((2, *ellipses.space.shape)).astype(np.float32)
    np.testing.assert_allclose(face(x[..., None]).numpy()[..., 0], ellipses.numpy.forward(x),
                               rtol=1e-5, atol=1e-6)
    # Both norms are the same power method; the normalised operator has norm 1.
    assert bridge.tf_norm(face, 50) == pytest.approx(1.0, rel=2e-3)
    assert ellipses.numpy.norm() == pytest.approx(1.0, rel=1e-3)


def test_power_norm_takes_a_start_and_any_array_kind():
    matrix = np.diag([3.0, 1.0, 0.5]).astype(np.float32)
    start = np.ones(3, np.float32)
    assert power_norm(lambda x: matrix.T @ (matrix @ x), start, 200) == pytest.approx(3.0,
                                                                                    rel=1e-5)
    tf_matrix = tf.constant(matrix)
    value = power_norm(lambda x: tf.linalg.matvec(tf_matrix, tf.linalg.matvec(tf_matrix, x)),
                       tf.constant(start), 200, norm=tf.norm)
    assert value == pytest.approx(3.0, rel=1e-5)


def test_pre_log_derivative_is_linear_with_an_exact_adjoint(human):
    model = human.prelog_forward()
    rng = np.random.default_rng(2)
    x = tf.constant(rng.uniform(0, 0.5, (1, *human.space.shape, 1)), tf.float32)
    h = tf.constant(rng.standard_normal((1, *human.space.shape, 1)), tf.float32)
    g = tf.constant(rng.standard_normal((1, *human.operator.range.shape, 1)), tf.float32)
    derivative = model.derivative(x)
    # Dot test <dT h, g> = <h, dT^* g> (unit weightings on the human set-up).
    lhs = float(tf.reduce_sum(tf.cast(derivative(h), tf.float64) * tf.cast(g, tf.float64)))
    rhs = float(tf.reduce_sum(tf.cast(h, tf.float64) * tf.cast(derivative.adjoint(g),
                                                                tf.float64)))
    assert lhs == pytest.approx(rhs, rel=1e-4)
    # It is the derivative: T(x + t h) - T(x) ~ t dT(x) h.
    t = 1e-3
    difference = (model(x + t * h) - model(x)).numpy() / t
    np.testing.assert_allclose(difference, derivative(h).numpy(),
                               atol=2e-2 * np.abs(derivative(h).numpy()).max())
    # Another factor scales it; a known value is reused.
    scaled = model.derivative(x, model(x), factor=1.0)
    np.testing.assert_allclose(scaled.adjoint(g).numpy(),
                               derivative.adjoint(g).numpy() / -human.noise.mu,
                               rtol=1e-4, atol=1e-5 * np.abs(derivative.adjoint(g).numpy()).max())


def test_pre_log_model_caps_its_exponent(human):
    model = human.prelog_forward()
    very_negative = -1e4 * tf.ones((1, *human.space.shape, 1))
    values = model(very_negative).numpy()
    assert np.all(np.isfinite(values))
    assert values.max() == pytest.approx(np.exp(bridge.MAX_EXPONENT), rel=1e-5)
