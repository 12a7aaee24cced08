"""What the convolutions of a network compute in: float32, or bfloat16 where it is faster.

`set_precision` switches every `lpd.methods.networks.layers._Conv2D` of a
model; `resolve_precision` turns ``"auto"`` into ``"float32"`` or
``"bfloat16"`` (measured once per process, on CPUs with native bfloat16 only,
see `cpu_has_native_bfloat16`).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from lpd import metrics
from lpd.methods.networks.layers import _Conv2D

__all__ = ["cpu_has_native_bfloat16", "resolve_precision", "set_precision"]


_NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
_resolved_auto: str | None = None


def cpu_has_native_bfloat16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bfloat16 in hardware (AMX-BF16 or AVX512_BF16).

    Reads the flags of ``/proc/cpuinfo`` (or the text given); ``False`` where
    there is no such file (not Linux).
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return any(flag in flags for flag in _NATIVE_BF16_FLAGS)


def _conv_seconds(dtype: tf.DType, repeats: int = 5) -> float:
    """Median seconds of a 32-channel 3x3 convolution's forward and gradients at 128 x 128."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((1, 128, 128, 32)), tf.float32)
    kernel = tf.constant(0.1 * rng.standard_normal((3, 3, 32, 32)), tf.float32)

    @tf.function
    def step(x, kernel):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = tf.nn.conv2d(tf.cast(x, dtype), tf.cast(kernel, dtype), 1, "SAME")
            loss = tf.reduce_sum(tf.square(tf.cast(y, tf.float32)))
        return tape.gradient(loss, [x, kernel])

    return metrics.time_call(step, x, kernel, repeats=repeats, warmup=2)


def resolve_precision(precision: str = "auto") -> str:
    """The precision the convolutions compute in: ``"float32"`` or ``"bfloat16"``.

    ``"auto"`` takes ``"bfloat16"`` only on a CPU with native bfloat16 (AMX or
    AVX512_BF16) where a convolution with its gradients measured at least 10 %
    faster in it than in float32 (measured once per process, the best of three
    alternating rounds), and ``"float32"``
    elsewhere: on CPUs that would emulate bfloat16 (several times slower) and
    on GPUs, where TensorFlow picks its fastest float32 kernels (TF32) itself.
    """
    global _resolved_auto
    if precision in ("float32", "bfloat16"):
        return precision
    if precision != "auto":
        raise ValueError(f"unknown precision {precision!r}; choose one of "
                         "'auto', 'float32', 'bfloat16'")
    if _resolved_auto is None:
        if tf.config.list_physical_devices("GPU") or not cpu_has_native_bfloat16():
            _resolved_auto = "float32"
        else:
            # Three rounds, alternating, the best of each: another process on the
            # same cores (a training run beside this one) slows either at random.
            best = {tf.float32: float("inf"), tf.bfloat16: float("inf")}
            for _ in range(3):
                for dtype in best:
                    best[dtype] = min(best[dtype], _conv_seconds(dtype))
            faster = best[tf.bfloat16] < 0.9 * best[tf.float32]
            _resolved_auto = "bfloat16" if faster else "float32"
    return _resolved_auto


def set_precision(model: keras.Model, precision: str = "auto") -> str:
    """Make the convolutions of ``model`` compute in ``precision``; return the one used.

    Weights, activations between the convolutions, the primal and dual state,
    the operator and the loss stay float32, so weights trained in one precision
    load and run in the other. Call it before the model's first call (a
    ``tf.function`` traced earlier keeps the precision it was traced with).
    """
    resolved = resolve_precision(precision)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, _Conv2D):
            layer.precision = resolved
    return resolved
