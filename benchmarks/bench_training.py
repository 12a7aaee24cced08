"""Speed and memory of training and reconstruction for each learned method.

Prints, in one run, for each model (LGD, Learned Primal, LPD, FBP + U-Net at the
papers' sizes, and the U-Net of the ``quick`` preset; AUTOMAP with ``--models
automap``) at batch 1 and 5 on the
ellipse set-up (128 x 128, 30 angles):

- ``precision``: what the convolutions compute in (`lpd.networks.set_precision`);
  bfloat16 pays only on CPUs with native bfloat16 (AMX, AVX512_BF16), and is
  several times slower elsewhere;
- ``step s``: median seconds per training step, the step of `lpd.training`
  (`lpd.training.make_train_step`: forward, gradient, clipping, Adam);
- ``samples/s``: training samples per second, ``batch / step s``;
- ``stand-in s``: the same step with the ray transform replaced by a stand-in
  of the same shapes that costs almost nothing (a bilinear resize between the
  image and sinogram shapes, both ways);
- ``operator share``: ``1 - stand-in / step``, the part of the step spent in the
  operator and its bridge (target: below 25 % for LPD);
- ``recon ms/image``: median inference time per image (``model(y)`` in ``tf.function``);
- ``peak RSS MiB``: the process's peak resident memory after the model's
  measurements (``resource.getrusage``; cumulative, models run from small to large).

Target on 2 CPU cores: an LPD training step at batch 1 in at most 0.2 s.

Run: ``python benchmarks/bench_training.py [--repeats 10] [--models lpd,lp]
[--batches 1,5] [--precisions float32,bfloat16]``. Measure on an otherwise idle machine:
the figures scale with
the free cores.
"""

from __future__ import annotations

import argparse
import os
import resource

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import lpd  # noqa: E402
from lpd import metrics, training  # noqa: E402
from lpd.config import NetworkConfig  # noqa: E402
from lpd.methods import networks
from lpd.physics import operators

MODELS = {
    "lgd": NetworkConfig(method="lgd"),
    "lp": NetworkConfig(method="lp"),
    "lpd": NetworkConfig(method="lpd"),
    "unet-quick": NetworkConfig(method="unet",
                                **training.PRESETS["quick"]["network"]["unet"]),
    "unet": NetworkConfig(method="unet"),
    # 358.5 million parameters at 128 x 128 (7 GiB to train): only when asked for.
    "automap": NetworkConfig(method="automap"),
}
DEFAULT_MODELS = ("lgd", "lp", "lpd", "unet-quick", "unet")


class StandIn:
    """An operator of the same shapes as the ray transform that costs (almost) nothing.

    Forward: a bilinear resize of the image to the sinogram shape; "adjoint":
    the resize back (not the exact transpose, which timing does not need).
    Linear, differentiable, about 0.1 ms per call.
    """

    def __init__(self, domain_shape, range_shape):
        self.domain_shape = tuple(domain_shape)
        self.range_shape = tuple(range_shape)
        self._adjoint = _Transpose(self)

    def __call__(self, x):
        return _resize(x, self.range_shape)

    @property
    def adjoint(self):
        return self._adjoint


class _Transpose:
    def __init__(self, forward):
        self.forward = forward
        self.domain_shape, self.range_shape = forward.range_shape, forward.domain_shape

    def __call__(self, y):
        return _resize(y, self.range_shape)

    @property
    def adjoint(self):
        return self.forward


def _resize(x, shape):
    return tf.image.resize(x, shape)


def median_seconds(fn, repeats: int, warmup: int = 2) -> float:
    """Median seconds of ``fn()`` after ``warmup`` untimed calls (`lpd.metrics.time_call`)."""
    return metrics.time_call(fn, repeats=repeats, warmup=warmup)


def train_step(network: NetworkConfig, batch: int, setup: str = "ellipses", operator=None,
               precision: str = "float32"):
    """One training step of `lpd.training` (forward, gradient, clipping, Adam) on a fixed
    random batch, for a fresh model of ``network`` on ``setup``: a function to time.

    ``operator`` replaces the set-up's ray transform (the stand-in of the table).
    """
    keras.utils.set_random_seed(0)
    model = training.build_model(network, setup, operator=operator)
    networks.set_precision(model, precision)
    optimizer = keras.optimizers.Adam(1e-3, beta_2=0.99)
    optimizer.build(model.trainable_variables)
    step = training.make_train_step(model, optimizer, batch)
    shapes = model.operator
    rng = np.random.default_rng(0)
    data = tf.constant(rng.standard_normal((batch, *shapes.range_shape, 1)), tf.float32)
    images = tf.constant(rng.random((batch, *shapes.domain_shape, 1)), tf.float32)
    return lambda: float(step(data, images)[0])


def step_seconds(network: NetworkConfig, operator, batch: int, repeats: int,
                 precision: str = "float32") -> float:
    return median_seconds(train_step(network, batch, operator=operator, precision=precision),
                          repeats)


def recon_seconds(network: NetworkConfig, operator, batch: int, repeats: int,
                  precision: str = "float32") -> float:
    model = training.build_model(network, "ellipses", operator=operator)
    networks.set_precision(model, precision)
    predict = tf.function(lambda y: model(y))
    data = tf.zeros((batch, *operator.range_shape, 1))
    return median_seconds(lambda: predict(data).numpy(), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help=f"comma-separated, of {', '.join(MODELS)} (automap only when "
                             "named: it takes minutes and 7 GiB)")
    parser.add_argument("--batches", default="1,5")
    parser.add_argument("--precisions", default="float32,bfloat16")
    args = parser.parse_args()
    precisions = [p for p in args.precisions.split(",") if p]
    models = [m for m in args.models.split(",") if m]
    batches = [int(b) for b in args.batches.split(",")]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")

    setup = operators.get_setup("ellipses")
    operator = lpd.as_tf_operator(setup.operator)
    stand_in = StandIn(operator.domain_shape, operator.range_shape)
    print(f"ellipses: {operator.domain_shape} -> {operator.range_shape}, operator back-end "
          f"{operator.backend!r}; TF {tf.__version__}, {os.cpu_count()} CPUs, "
          f"GPUs: {len(tf.config.list_physical_devices('GPU'))}; native bfloat16: "
          f"{networks.cpu_has_native_bfloat16()}, precision 'auto' = "
          f"{networks.resolve_precision('auto')}")
    header = (f"{'model':<11} {'params':>10} {'precision':>9} {'batch':>5} {'step s':>8} "
              f"{'samples/s':>9} {'stand-in s':>10} {'op share':>8} {'recon ms/img':>12} "
              f"{'peak RSS MiB':>12}")
    print(header)
    print("-" * len(header))
    for name in models:
        network = MODELS[name]
        params = networks.count_parameters(training.build_model(network, "ellipses",
                                                                operator=operator))
        for precision in precisions:
            for batch in batches:
                real = step_seconds(network, operator, batch, args.repeats, precision)
                cheap = step_seconds(network, stand_in, batch, args.repeats, precision)
                recon = recon_seconds(network, operator, batch, args.repeats,
                                      precision) / batch
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                print(f"{name:<11} {params:>10,} {precision:>9} {batch:>5} {real:>8.3f} "
                      f"{batch / real:>9.2f} {cheap:>10.3f} {1 - cheap / real:>8.1%} "
                      f"{1e3 * recon:>12.1f} {peak:>12.0f}", flush=True)


if __name__ == "__main__":
    main()
