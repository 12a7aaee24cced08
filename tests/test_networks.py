"""Tests for lpd.networks: shapes, parameter counts, gradients, learning, round trips.

Parameter counts are checked on the paper's ellipse set-up (they equal the
original code's); everything that runs the networks uses the 64 x 64 set-up
``ellipses_small`` with fewer iterations and filters, to stay fast.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import lpd  # noqa: E402
from lpd.methods import networks  # noqa: E402
from lpd.methods.networks import precision  # noqa: E402
from lpd.physics import operators  # noqa: E402

SMALL = dict(n_iter=2, filters=8)


@pytest.fixture(scope="module")
def op():
    return lpd.as_tf_operator(operators.get_setup("ellipses_small").operator)


@pytest.fixture(scope="module")
def op_paper():
    return lpd.as_tf_operator(operators.get_setup("ellipses").operator)


def _small_models(op):
    return {
        "lpd": networks.LearnedPrimalDual(op, setup="ellipses_small", **SMALL),
        "lp": networks.LearnedPrimal(op, setup="ellipses_small", **SMALL),
        "lgd": networks.LearnedGradientDescent(op, setup="ellipses_small", **SMALL),
        "unet": networks.FBPUNet(op, features=4, depth=2, widths="doubling",
                                 setup="ellipses_small"),
        "lpd_prelog": networks.LearnedPrimalDual(op, prelog_mu=0.5, **SMALL),
        "lgd_prelog": networks.LearnedGradientDescent(op, prelog_mu=0.5, **SMALL),
    }


def _phantoms(n, shape, seed=0):
    """Random discs: a cheap stand-in for the ellipse phantoms."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]),
                         indexing="ij")
    images = np.zeros((n, *shape, 1), np.float32)
    for image in images:
        for _ in range(4):
            cx, cy, r = rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(0.1, 0.4)
            image[..., 0] += rng.uniform(0.2, 0.5) * ((xx - cx) ** 2 + (yy - cy) ** 2 < r**2)
    return images


def test_parameter_counts_equal_the_original_code(op_paper):
    # LPD: about 2.5e5 with one PReLU slope per channel (253 220 in the original).
    lpd_model = networks.LearnedPrimalDual(op_paper)
    count = networks.count_parameters(lpd_model)
    assert abs(count - 2.5e5) / 2.5e5 < 0.05
    assert count == 253_220
    assert networks.count_parameters(networks.LearnedPrimal(op_paper)) == 125_170
    assert networks.count_parameters(networks.LearnedGradientDescent(op_paper)) == 13_318
    # The original's reference U-Net (64 features, depth 4): "10^7" in the tables.
    assert networks.count_parameters(networks.FBPUNet(op_paper)) == 9_699_423


def test_prelu_has_one_slope_per_channel(op_paper):
    model = networks.LearnedPrimalDual(op_paper, n_iter=1)
    alphas = [v for v in model.trainable_variables if "alpha" in v.path]
    assert alphas and all(tuple(v.shape) == (1, 1, 32) for v in alphas)


def test_models_are_built_before_the_first_call(op):
    for model in _small_models(op).values():
        before = [v.path for v in model.trainable_variables]
        model(tf.zeros((1, *op.range_shape, 1)))
        assert [v.path for v in model.trainable_variables] == before


@pytest.mark.parametrize("batch", [1, 3])
def test_output_shapes(op, batch):
    y = tf.random.stateless_normal((batch, *op.range_shape, 1), seed=(1, 2))
    for name, model in _small_models(op).items():
        # Pre-log data are photon fractions in (0, 1].
        out = model(tf.exp(-tf.abs(y)) if "prelog" in name else y)
        assert tuple(out.shape) == (batch, *op.domain_shape, 1), name
        assert out.dtype == tf.float32
        assert np.all(np.isfinite(out.numpy())), name


def test_output_shape_inside_tf_function(op):
    model = networks.LearnedPrimalDual(op, **SMALL)
    out = tf.function(model)(tf.zeros((2, *op.range_shape, 1)))
    assert tuple(out.shape) == (2, *op.domain_shape, 1)


def test_gradient_reaches_every_layer(op):
    x = _phantoms(2, op.domain_shape)
    y = op(x)
    for name, model in _small_models(op).items():
        target = x if "prelog" not in name else x * 0.1
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(y if "prelog" not in name else tf.exp(-y)) - target)
                                  ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        dead = [v.path for v, g in zip(model.trainable_variables, grads, strict=True)
                if g is None or not np.any(g.numpy() != 0)]
        assert not dead, f"{name}: no gradient reaches {dead}"


@pytest.mark.parametrize("name", ["lpd", "lp", "lgd", "unet"])
def test_a_few_steps_lower_the_loss(op, name):
    keras.utils.set_random_seed(0)
    model = _small_models(op)[name]
    x = _phantoms(4, op.domain_shape, seed=1)
    y = op(x)
    optimizer = keras.optimizers.Adam(1e-3, beta_2=0.99)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(y) - x) ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        grads, _ = tf.clip_by_global_norm(grads, 1.0)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    losses = [float(step()) for _ in range(25)]
    # The U-Net starts from the FBP, already close on noise-free data.
    assert losses[-1] < (0.9 if name == "unet" else 0.7) * losses[0], losses


def test_learned_primal_dual_zero_weights_give_zero_image(op):
    # Zero start and residual updates: with all weights zero the output is 0.
    model = networks.LearnedPrimalDual(op, **SMALL)
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    assert np.all(model(tf.ones((1, *op.range_shape, 1))).numpy() == 0)


def test_lgd_with_zero_weights_returns_the_fbp(op):
    model = networks.LearnedGradientDescent(op, **SMALL)
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    y = op(_phantoms(1, op.domain_shape))
    np.testing.assert_allclose(model(y).numpy(), model.fbp(y).numpy(), atol=1e-6)


@pytest.mark.parametrize("name", ["lpd", "lp", "lgd", "unet", "lpd_prelog"])
def test_config_round_trip_with_weights(op, name):
    model = _small_models(op)[name]
    model.set_weights([w + 0.01 * np.arange(w.size, dtype=np.float32).reshape(w.shape) % 0.1
                       for w in model.get_weights()])
    y = tf.random.stateless_uniform((2, *op.range_shape, 1), seed=(3, 4))
    config = model.get_config()
    clone = type(model).from_config(config, operator=op)
    assert clone.get_config() == config
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(clone(y).numpy(), model(y).numpy())


def test_keras_serialisation_rebuilds_the_operator_from_the_setup(op, tmp_path):
    model = networks.LearnedPrimal(op, setup="ellipses_small", **SMALL)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(model))
    assert isinstance(restored, networks.LearnedPrimal)
    path = tmp_path / "lp.weights.h5"
    model.save_weights(path)
    restored.load_weights(path)
    y = tf.random.stateless_uniform((1, *op.range_shape, 1), seed=(5, 6))
    np.testing.assert_allclose(restored(y).numpy(), model(y).numpy(), rtol=1e-5, atol=1e-6)


def test_from_config_without_setup_or_operator_says_what_to_do(op):
    config = networks.LearnedPrimalDual(op, **SMALL).get_config()
    with pytest.raises(ValueError, match="operator"):
        networks.LearnedPrimalDual.from_config(config)


def test_named_models_refuse_contradicting_settings(op):
    with pytest.raises(ValueError, match="UnrolledReconstructor"):
        networks.LearnedPrimalDual(op, share_weights=True)
    with pytest.raises(ValueError, match="n_dual"):
        networks.UnrolledReconstructor(op, dual_step="residual", n_dual=5)


@pytest.mark.parametrize("way", ["tensorflow", "turned", "turned-matmul"])
def test_fast_convolution_gradients_equal_keras_every_way(op, way, monkeypatch):
    from lpd.methods.networks import layers

    assert way in layers.GRADIENTS
    monkeypatch.setattr(layers, "_WAYS", {})
    monkeypatch.setattr(layers, "_measure_way", lambda shape, cout: way)
    x = tf.random.stateless_normal((2, 12, 10, 32), seed=(7, 8))
    for filters in (5, 32):
        ours = networks._Conv2D(filters, 3, padding="same")
        ref = keras.layers.Conv2D(filters, 3, padding="same")
        ours.build(x.shape)
        ref.build(x.shape)
        ref.set_weights([w + 0.1 for w in ours.get_weights()])
        ours.set_weights(ref.get_weights())
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            a, b = ours(x), ref(x)
            la, lb = tf.reduce_sum(a * a), tf.reduce_sum(b * b)
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)
        for ga, gb in zip(tape.gradient(la, [x, *ours.trainable_variables]),
                          tape.gradient(lb, [x, *ref.trainable_variables]), strict=True):
            np.testing.assert_allclose(ga.numpy(), gb.numpy(), rtol=1e-4,
                                       atol=1e-4 * float(np.abs(gb.numpy()).max()))
    assert networks.gradient_ways() == {"2,12,10,32,5": way, "2,12,10,32,32": way}


def test_the_gradient_way_is_measured_once_per_shape_and_can_be_set(monkeypatch):
    from lpd.methods.networks import layers

    monkeypatch.setattr(layers, "_WAYS", {})
    calls = []

    def measure(shape, cout):
        calls.append((shape, cout))
        return "tensorflow"

    monkeypatch.setattr(layers, "_measure_way", measure)
    assert layers.gradient_way((5, 8, 8, 32), 32) == "tensorflow"
    assert layers.gradient_way(tf.TensorShape([5, 8, 8, 32]), 32) == "tensorflow"
    assert calls == [((5, 8, 8, 32), 32)]
    # A shape unknown at trace time takes the default without measuring.
    assert layers.gradient_way((None, 8, 8, 32), 32) == "turned-matmul"
    assert layers.gradient_way((None, 8, 8, 6), 32) == "turned"
    assert len(calls) == 1
    networks.set_gradient_ways({"1,4,4,6,5": "turned-matmul"})
    assert layers.gradient_way((1, 4, 4, 6), 5) == "turned-matmul"
    assert len(calls) == 1
    with pytest.raises(ValueError, match="unknown gradient way"):
        networks.set_gradient_ways({"1,4,4,6,5": "fastest"})


def test_measuring_keeps_the_default_way_unless_another_is_clearly_faster(monkeypatch):
    from lpd.methods.networks import layers

    way = layers._measure_way((1, 6, 6, 4), 3, repeats=1, margin=10.0)  # nothing is 10x
    assert way == "turned"
    assert layers._measure_way((1, 6, 6, 4), 3, repeats=1, margin=0.0) in layers.GRADIENTS


def test_prelu_equals_keras():
    x = tf.random.stateless_normal((2, 6, 7, 4), seed=(9, 10))
    ours = networks._PReLU(shared_axes=[1, 2])
    ref = keras.layers.PReLU(shared_axes=[1, 2])
    ours.build(x.shape)
    ref.build(x.shape)
    ours.set_weights([np.array([[[0.1, -0.2, 0.3, 0.0]]], np.float32)])
    ref.set_weights(ours.get_weights())
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        a, b = ours(x), ref(x)
        la, lb = tf.reduce_sum(a**2), tf.reduce_sum(b**2)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
    for ga, gb in zip(tape.gradient(la, [x, ours.alpha]), tape.gradient(lb, [x, ref.alpha]),
                      strict=True):
        np.testing.assert_allclose(np.asarray(ga), np.asarray(gb), rtol=1e-5, atol=1e-6)


def test_smoothness_gradient_is_the_gradient_of_the_difference_norm():
    f = tf.random.stateless_normal((2, 9, 7, 1), seed=(11, 12))

    def energy(f):
        dx = tf.concat([f[:, 1:], tf.zeros_like(f[:, :1])], axis=1) - f
        dy = tf.concat([f[:, :, 1:], tf.zeros_like(f[:, :, :1])], axis=2) - f
        return 0.5 * tf.reduce_sum(dx**2 + dy**2)

    with tf.GradientTape() as tape:
        tape.watch(f)
        e = energy(f)
    np.testing.assert_allclose(networks._smoothness_gradient(f).numpy(),
                               tape.gradient(e, f).numpy(), rtol=1e-5, atol=1e-5)


def test_fbp_layer_matches_odl_fbp(op):
    from odl.applications import tomo

    setup = operators.get_setup("ellipses_small")
    x = _phantoms(1, op.domain_shape)
    y = op(x)
    ours = networks.FilteredBackProjection(op)(y).numpy()[0, ..., 0]
    reference = (tomo.fbp_op(setup.ray_trafo, filter_type="Hann")
                 * setup.opnorm)(y.numpy()[0, ..., 0]).data
    error = np.linalg.norm(ours - reference) / np.linalg.norm(reference)
    assert error < 0.1
    # And it is a reconstruction: much closer to the phantom than zero is.
    assert np.linalg.norm(ours - x[0, ..., 0]) < 0.5 * np.linalg.norm(x)


def test_duck_typed_operator_is_accepted():
    class Resize:
        domain_shape, range_shape = (16, 16), (8, 12)

        def __call__(self, x):
            return tf.image.resize(x, self.range_shape)

        @property
        def adjoint(self):
            return lambda y: tf.image.resize(y, self.domain_shape)

    model = networks.LearnedPrimalDual(Resize(), n_iter=1, filters=4)
    assert tuple(model(tf.zeros((1, 8, 12, 1))).shape) == (1, 16, 16, 1)
    with pytest.raises(TypeError, match="TFOperator"):
        networks.LearnedPrimalDual(object())


def test_prelog_physics_rescales_the_derivative_adjoint_by_mu_times_the_norm():
    # The primal step of the pre-log schemes sees [dT(f)]^*(h) / (mu ||A||); the
    # unscaled human operator (||A|| about 263) made the untrained network overflow.
    setup = operators.get_setup("human_small")
    op = lpd.as_tf_operator(setup.operator)
    mu = setup.config.noise.mu
    physics = networks._Physics(op, mu)
    assert physics.adjoint_scale == pytest.approx(1 / setup.opnorm, rel=1e-3)
    rng = np.random.default_rng(0)
    f = tf.constant(rng.uniform(0, 1, (1, *op.domain_shape, 1)), tf.float32)
    h = tf.constant(rng.standard_normal((1, *op.range_shape, 1)), tf.float32)
    exact = lpd.tf_ops.PreLogForward(op, mu).derivative_adjoint(f, h).numpy()
    ours = physics.derivative_adjoint(f, h).numpy()
    np.testing.assert_allclose(ours, exact / (mu * setup.opnorm), rtol=2e-3,
                               atol=1e-6 * np.abs(exact).max() / (mu * setup.opnorm))
    # The forward model is the physics itself, untouched where A f >= 0.
    np.testing.assert_allclose(physics.forward(f).numpy(),
                               tf.exp(-mu * op(f)).numpy(), rtol=1e-6)


def test_untrained_prelog_lpd_on_the_human_setup_is_finite():
    setup = operators.get_setup("human_small")
    op = lpd.as_tf_operator(setup.operator)
    model = networks.LearnedPrimalDual(op, prelog_mu=setup.config.noise.mu, n_iter=3,
                                       filters=8)
    y = tf.exp(-setup.config.noise.mu * op(tf.ones((1, *op.domain_shape, 1))))
    assert np.all(np.isfinite(model(y).numpy()))


# ---------------------------------------------------------------------------
# Precision of the convolutions
# ---------------------------------------------------------------------------

def test_native_bfloat16_is_read_from_the_cpu_flags():
    assert networks.cpu_has_native_bfloat16("flags\t\t: fpu sse2 avx2 amx_bf16 amx_tile\n")
    assert networks.cpu_has_native_bfloat16("flags : avx512f avx512_bf16\n")
    assert not networks.cpu_has_native_bfloat16("flags : fpu sse2 avx2 fma avx512f\n")
    assert not networks.cpu_has_native_bfloat16("model name : amx_bf16 in a name\n")


def test_auto_precision_is_float32_without_native_bfloat16(monkeypatch):
    monkeypatch.setattr(precision, "_resolved_auto", None)
    monkeypatch.setattr(precision, "cpu_has_native_bfloat16", lambda: False)
    monkeypatch.setattr(precision, "_conv_seconds", lambda dtype: pytest.fail("measured"))
    assert networks.resolve_precision("auto") == "float32"
    assert networks.resolve_precision("bfloat16") == "bfloat16"
    with pytest.raises(ValueError, match="unknown precision 'float16'"):
        networks.resolve_precision("float16")


def test_auto_precision_takes_bfloat16_only_where_it_measured_faster(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bfloat16", lambda: True)
    for bf16_seconds, expected in ((0.5, "bfloat16"), (0.95, "float32")):
        monkeypatch.setattr(precision, "_resolved_auto", None)
        monkeypatch.setattr(precision, "_conv_seconds",
                             lambda dtype, s=bf16_seconds: s if dtype == tf.bfloat16 else 1.0)
        assert networks.resolve_precision("auto") == expected
    # One round slowed by another process does not decide: the best of three rounds does.
    bf16_rounds = iter([2.0, 0.6, 0.6])
    monkeypatch.setattr(precision, "_resolved_auto", None)
    monkeypatch.setattr(precision, "_conv_seconds",
                        lambda dtype: next(bf16_rounds) if dtype == tf.bfloat16 else 1.0)
    assert networks.resolve_precision("auto") == "bfloat16"


def test_bfloat16_convolutions_keep_weights_and_state_float32_and_close(op):
    keras.utils.set_random_seed(3)
    reference = networks.LearnedPrimalDual(op, setup="ellipses_small", **SMALL)
    model = networks.LearnedPrimalDual.from_config(reference.get_config(), operator=op)
    model.set_weights(reference.get_weights())
    assert networks.set_precision(model, "bfloat16") == "bfloat16"
    assert all(w.dtype == "float32" for w in model.weights)
    y = tf.constant(np.random.default_rng(0).standard_normal((2, *op.range_shape, 1)),
                    tf.float32)
    target = tf.zeros((2, *op.domain_shape, 1))

    def output_and_gradient(m):
        with tf.GradientTape() as tape:
            out = m(y)
            loss = tf.reduce_mean(tf.square(out - target))
        return out, tape.gradient(loss, m.trainable_variables)

    out32, grads32 = output_and_gradient(reference)
    out16, grads16 = output_and_gradient(model)
    assert out16.dtype == tf.float32
    assert not np.array_equal(out16.numpy(), out32.numpy())  # bfloat16 did compute
    scale = float(tf.reduce_max(tf.abs(out32)))
    assert float(tf.reduce_max(tf.abs(out16 - out32))) < 0.05 * scale
    flat32 = tf.concat([tf.reshape(g, [-1]) for g in grads32], 0)
    flat16 = tf.concat([tf.reshape(g, [-1]) for g in grads16], 0)
    cosine = tf.reduce_sum(flat32 * flat16) / (tf.norm(flat32) * tf.norm(flat16))
    assert float(cosine) > 0.99


def test_network_reconstructor_batches_chunks_and_checks_shapes(op):
    keras.utils.set_random_seed(1)
    model = networks.LearnedPrimal(op, setup="ellipses_small", **SMALL)
    y = np.random.default_rng(2).standard_normal((5, *op.range_shape)).astype(np.float32)
    whole = networks.NetworkReconstructor(model, "lp", "Learned Primal")
    chunked = networks.NetworkReconstructor(model, chunk=2)
    out = whole.reconstruct_batch(y)
    assert out.shape == (5, *op.domain_shape)
    np.testing.assert_allclose(chunked.reconstruct_batch(y[..., None]), out, atol=1e-5)
    np.testing.assert_allclose(whole(y[3]), out[3], atol=1e-5)
    np.testing.assert_allclose(out, model(y[..., None], training=False).numpy()[..., 0],
                               atol=1e-5)
    assert (whole.name, whole.n_parameters) == ("Learned Primal",
                                                networks.count_parameters(model))
    assert chunked.name == "LearnedPrimal"
    with pytest.raises(ValueError, match="expected data of shape"):
        whole.reconstruct_batch(np.zeros((2, 5, 5), np.float32))
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        networks.NetworkReconstructor(model, chunk=0)


def test_automap_maps_data_to_images_with_the_parameters_it_claims():
    from lpd.methods.networks import Automap, automap_parameters
    from lpd.physics import operators as ops

    setup = ops.get_setup("ellipses_small")
    operator = setup.tf_operator()
    model = Automap(operator, features=4, setup="ellipses_small")
    data_size = int(np.prod(operator.range_shape))
    assert model.count_params() == automap_parameters(data_size, 64 * 64, 4)
    # The paper's size at 128 x 128 with 30 angles: the count the docstring gives.
    assert automap_parameters(30 * 183, 128 * 128) == 358_523_649
    y = tf.random.normal((2, *operator.range_shape, 1))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(y) ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    assert model(y).shape == (2, 64, 64, 1) and all(g is not None for g in grads)
    clone = Automap.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(y).numpy(), model(y).numpy(), atol=1e-6)
