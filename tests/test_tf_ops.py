"""Tests for the ODL -> TensorFlow bridge (lpd.tf_ops).

Every operator below is checked on every back-end that supports it, eagerly and
inside ``tf.function``, at batch 1 and 3:

- forward and adjoint equal ODL's;
- the dot test ``<A x, y>_Y = <x, A^* y>_X`` in ODL's weighted inner products;
- gradients equal the Euclidean transpose ``(w_X / w_Y) A^*`` and agree with
  finite differences, for the operator and for its adjoint, to second order.

The operators include the masked Fourier transform of MRI, and weightings and
geometries that the package's set-ups do not use (a unit-square image space
whose weightings differ between domain and range, a fan beam, a one-axis
matrix, a finite-difference operator).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
odl = pytest.importorskip("odl")

import lpd  # noqa: E402
from lpd.config import ProblemConfig  # noqa: E402
from lpd.physics import operators  # noqa: E402
from lpd.physics.bridge import PreLogForward, TFOperator, as_tf_operator  # noqa: E402


def _unit_square_parallel():
    # Domain weighting 1/32^2 and range weighting != domain weighting.
    space = odl.uniform_discr([-1, -1], [1, 1], [32, 32], dtype="float32")
    geometry = operators.tomo.parallel_beam_geometry(space, num_angles=18)
    return operators.ray_transform(space, geometry, "astra_cpu")


def _fan_beam():
    config = ProblemConfig(name="fan", shape=(40, 36), min_pt=(-20, -18), max_pt=(20, 18),
                           beam="fan", num_angles=25, angle_range=(0, 2 * math.pi),
                           det_shape=70, det_min=-60, det_max=60, src_radius=60,
                           det_radius=40)
    return operators.get_setup(config).operator


def _normalised_ellipses():
    return operators.get_setup("ellipses_small").operator


def _matrix_operator():
    matrix = np.random.default_rng(3).standard_normal((23, 17)).astype(np.float32)
    # ODL's MatrixOperator takes its adjoint as the plain transpose whatever the
    # weightings, which is the true adjoint only for equal weightings.
    domain = odl.rn(17, dtype="float32", weighting=2.0)
    range_ = odl.rn(23, dtype="float32", weighting=2.0)
    return odl.MatrixOperator(matrix, domain=domain, range=range_)


def _partial_derivative():
    space = odl.uniform_discr([0, 0], [2, 3], [12, 15], dtype="float32")
    return odl.PartialDerivative(space, axis=1, pad_mode="constant")


def _mri_small():
    # The masked unitary Fourier transform of MRI on its own set-up (weightings 1).
    return operators.get_setup("brain_mri_small").operator


def _mri_weighted():
    # The same kind of operator on a space with ODL's default (cell-volume)
    # weighting, so that ODL's adjoint differs from the Euclidean transpose.
    from lpd.config import SamplingConfig
    from lpd.physics.fourier import MaskedFourierTransform, sampling_mask

    space = odl.uniform_discr([0, 0], [2, 3], [12, 10], dtype="float32")
    return MaskedFourierTransform(space, sampling_mask(space.shape,
                                                       SamplingConfig("lines", 0.5, seed=2)))


# name -> (factory, back-ends that must work)
OPERATORS = {
    "mri_small": (_mri_small, ("native", "odl")),
    "mri_weighted": (_mri_weighted, ("native", "odl")),
    "ellipses_small": (_normalised_ellipses, ("matrix", "odl")),
    "unit_square": (_unit_square_parallel, ("matrix", "odl")),
    "fan_beam": (_fan_beam, ("matrix", "odl")),
    "matrix_op": (_matrix_operator, ("matrix", "odl")),
    "partial_derivative": (_partial_derivative, ("odl",)),
}
CASES = [(name, backend) for name, (_, backends) in OPERATORS.items() for backend in backends]


def _weights(odl_op):
    return (operators.constant_weighting(odl_op.domain),
            operators.constant_weighting(odl_op.range))


def _random(shape, rng):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def built():
    cache = {}

    def get(name, backend):
        key = (name, backend)
        if key not in cache:
            odl_op = OPERATORS[name][0]()
            cache[key] = (odl_op, as_tf_operator(odl_op, backend=backend))
        return cache[key]

    return get


def _batched(odl_op, x):
    return np.stack([odl_op(xi).data for xi in x])


@pytest.mark.parametrize("name,backend", CASES)
@pytest.mark.parametrize("batch", [1, 3])
def test_forward_and_adjoint_equal_odl(built, name, backend, batch, rng):
    odl_op, op = built(name, backend)
    assert op.backend == backend
    x = _random((batch, *odl_op.domain.shape), rng)
    y = _random((batch, *odl_op.range.shape), rng)
    fwd = op(x[..., None]).numpy()[..., 0]
    adj = op.adjoint(y[..., None]).numpy()[..., 0]
    expected_fwd = _batched(odl_op, x)
    expected_adj = _batched(odl_op.adjoint, y)
    scale = np.abs(expected_fwd).max()
    np.testing.assert_allclose(fwd, expected_fwd, atol=1e-5 * scale)
    np.testing.assert_allclose(adj, expected_adj, atol=1e-5 * np.abs(expected_adj).max())


@pytest.mark.parametrize("name,backend", CASES)
def test_dot_test_in_weighted_inner_products(built, name, backend, rng):
    odl_op, op = built(name, backend)
    w_x, w_y = _weights(odl_op)
    x = _random((2, *odl_op.domain.shape, 1), rng).astype(np.float64)
    y = _random((2, *odl_op.range.shape, 1), rng).astype(np.float64)
    lhs = w_y * np.sum(op(x.astype(np.float32)).numpy() * y)
    rhs = w_x * np.sum(x * op.adjoint(y.astype(np.float32)).numpy())
    assert lhs == pytest.approx(rhs, rel=1e-4)


def _gradient(fn, x, use_function):
    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = fn(x)
        return tape.gradient(value, x)

    if use_function:
        grad = tf.function(grad)
    return grad(tf.constant(x)).numpy()


@pytest.mark.parametrize("name,backend", CASES)
@pytest.mark.parametrize("use_function", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("batch", [1, 3])
def test_gradients_are_euclidean_transposes(built, name, backend, use_function, batch, rng):
    odl_op, op = built(name, backend)
    w_x, w_y = _weights(odl_op)
    x = _random((batch, *odl_op.domain.shape, 1), rng)
    v = _random((batch, *odl_op.range.shape, 1), rng)
    u = _random((batch, *odl_op.domain.shape, 1), rng)

    # d/dx sum(A x * v) = W^T v = (w_X / w_Y) A^* v
    grad = _gradient(lambda t: tf.reduce_sum(op(t) * v), x, use_function)
    expected = (w_x / w_y) * _batched(odl_op.adjoint, v[..., 0])[..., None]
    np.testing.assert_allclose(grad, expected, atol=1e-5 * np.abs(expected).max())

    # d/dy sum(A^* y * u) = (w_Y / w_X) W u = (w_Y / w_X) A u
    grad = _gradient(lambda t: tf.reduce_sum(op.adjoint(t) * u), v, use_function)
    expected = (w_y / w_x) * _batched(odl_op, u[..., 0])[..., None]
    np.testing.assert_allclose(grad, expected, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("name,backend", CASES)
def test_gradients_agree_with_finite_differences(built, name, backend, rng):
    odl_op, op = built(name, backend)
    x = _random((2, *odl_op.domain.shape, 1), rng)
    direction = _random(x.shape, rng)

    def loss(t):
        return 0.5 * tf.reduce_sum(tf.square(op(t)))

    grad = _gradient(loss, x, use_function=False)
    # The loss is quadratic, so central differences are exact up to rounding.
    # float64 accumulation of float32 evaluations keeps the rounding small.
    h = 1e-1
    plus = float(loss(tf.constant(x + h * direction)).numpy())
    minus = float(loss(tf.constant(x - h * direction)).numpy())
    fd = (plus - minus) / (2 * h)
    assert np.sum(grad.astype(np.float64) * direction) == pytest.approx(fd, rel=2e-3)


@pytest.mark.parametrize("name,backend", [("unit_square", "matrix"), ("fan_beam", "odl")])
def test_second_derivatives_are_exact(built, name, backend, rng):
    # Hessian-vector product of 0.5 ||W x||^2 is W^T W d.
    odl_op, op = built(name, backend)
    x = tf.constant(_random((1, *odl_op.domain.shape, 1), rng))
    d = tf.constant(_random(x.shape, rng))
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            loss = 0.5 * tf.reduce_sum(tf.square(op(x)))
        grad = inner.gradient(loss, x)
        directional = tf.reduce_sum(grad * d)
    hvp = outer.gradient(directional, x).numpy()
    expected = op.transpose(op(d)).numpy()
    np.testing.assert_allclose(hvp, expected, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("name", ["unit_square", "fan_beam", "matrix_op"])
def test_backends_agree(built, name, rng):
    odl_op, by_matrix = built(name, "matrix")
    _, by_odl = built(name, "odl")
    x = _random((2, *odl_op.domain.shape, 1), rng)
    y = _random((2, *odl_op.range.shape, 1), rng)
    a, b = by_matrix(x).numpy(), by_odl(x).numpy()
    np.testing.assert_allclose(a, b, atol=1e-5 * np.abs(b).max())
    a, b = by_matrix.adjoint(y).numpy(), by_odl.adjoint(y).numpy()
    np.testing.assert_allclose(a, b, atol=1e-5 * np.abs(b).max())


def test_adjoint_of_adjoint_is_the_operator(built):
    _, op = built("unit_square", "matrix")
    assert op.adjoint.adjoint is op
    assert op.transpose.transpose is op
    assert op.adjoint.domain_shape == op.range_shape


def test_auto_backend_takes_the_matrix_within_the_budget_and_odl_above():
    odl_op = _normalised_ellipses()
    assert as_tf_operator(odl_op).backend == "matrix"
    assert as_tf_operator(odl_op, memory_budget=1024).backend == "odl"
    assert as_tf_operator(_partial_derivative()).backend == "odl"


def test_top_level_name_is_the_bridge():
    assert lpd.as_tf_operator is as_tf_operator


def test_works_in_keras_layer_and_unknown_batch(built, rng):
    odl_op, op = built("ellipses_small", "matrix")

    @tf.function(input_signature=[tf.TensorSpec([None, *odl_op.domain.shape, 1], tf.float32)])
    def normal(x):
        return op.adjoint(op(x))

    out = normal(tf.constant(_random((4, *odl_op.domain.shape, 1), rng)))
    assert out.shape == (4, *odl_op.domain.shape, 1)


# --- errors -----------------------------------------------------------------

def test_wrong_dtype_is_named(built):
    _, op = built("ellipses_small", "matrix")
    with pytest.raises(TypeError, match="float32.*float64"):
        op(np.zeros((1, 64, 64, 1)))
    with pytest.raises(TypeError, match="float32.*int32"):
        op(tf.zeros((1, 64, 64, 1), dtype=tf.int32))


@pytest.mark.parametrize("shape", [(64, 64), (1, 64, 64), (1, 64, 63, 1), (1, 64, 64, 2)])
def test_wrong_shape_or_rank_is_named(built, shape):
    _, op = built("ellipses_small", "matrix")
    with pytest.raises(ValueError, match=r"expected a tensor of shape \(batch, 64, 64, 1\)"):
        op(np.zeros(shape, dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(batch, 30, 93, 1\)"):
        op.adjoint(np.zeros(shape, dtype=np.float32))


def test_non_linear_operator_is_refused():
    space = operators.image_space(operators.SETUPS["ellipses_small"])
    with pytest.raises(TypeError, match="linear"):
        as_tf_operator(odl.PowerOperator(space, 2))


def test_non_odl_object_and_product_space_are_refused():
    with pytest.raises(TypeError, match="ODL operator"):
        as_tf_operator(np.eye(3))
    space = operators.image_space(operators.SETUPS["ellipses_small"])
    with pytest.raises(TypeError, match="constant weighting"):
        as_tf_operator(odl.Gradient(space))


def test_backend_errors():
    with pytest.raises(ValueError, match="unknown backend"):
        as_tf_operator(_normalised_ellipses(), backend="cuda")
    with pytest.raises(ValueError, match="backend='matrix' is not available"):
        as_tf_operator(_partial_derivative(), backend="matrix")
    with pytest.raises(ValueError, match="memory budget"):
        as_tf_operator(_normalised_ellipses(), backend="matrix", memory_budget=1024)


# --- the pre-log model --------------------------------------------------------

def test_pre_log_model_and_its_derivative(rng):
    setup = operators.get_setup("human_small")
    op = as_tf_operator(setup.operator)
    model = PreLogForward(op, mu=setup.config.noise.mu)
    x = tf.constant(np.abs(_random((2, *setup.space.shape, 1), rng)) * 0.1)
    h = tf.constant(_random((2, *setup.operator.range.shape, 1), rng))
    expected = np.exp(-0.02 * _batched(setup.operator, x.numpy()[..., 0]))[..., None]
    np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-5)
    # The human set-up has unit weightings, so the adjoint of the derivative
    # equals the gradient that TensorFlow computes through the bridge.
    w_x, w_y = _weights(setup.operator)
    assert w_x == w_y == 1.0
    grad = _gradient(lambda t: tf.reduce_sum(model(t) * h), x.numpy(), use_function=True)
    np.testing.assert_allclose(model.derivative_adjoint(x, h).numpy(), grad,
                               atol=1e-5 * np.abs(grad).max())


def test_pre_log_model_validates_arguments(built):
    _, op = built("ellipses_small", "matrix")
    with pytest.raises(ValueError, match="mu"):
        PreLogForward(op, mu=0)
    with pytest.raises(TypeError, match="TFOperator"):
        PreLogForward(lambda x: x, mu=0.02)
    assert isinstance(op, TFOperator)


def test_a_wrong_shape_unknown_at_trace_time_fails_with_the_bridges_words():
    import tensorflow as tf

    import lpd

    op = lpd.as_tf_operator(operators.get_setup("ellipses_small").operator)
    loose = tf.function(lambda x: op(x),
                        input_signature=[tf.TensorSpec((None, None, None, 1), tf.float32)])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"lpd operator: expected a tensor of shape \(batch, 64, 64, 1\)"):
        loose(tf.zeros((1, 32, 32, 1)))
    assert tuple(loose(tf.zeros((2, 64, 64, 1))).shape) == (2, *op.range_shape, 1)
