"""Where the time of one training step goes: TensorFlow's profiler, summed by op type.

Traces a few training steps of a model (the step of `lpd.training`: forward,
gradient, clipping, Adam) with ``tf.profiler`` and prints the self-time of each
TensorFlow op type on the host, largest first, with its share of the traced time
and of the step. Op types are what TensorFlow runs (``Conv2D``,
``Conv2DBackpropFilter``, ``SparseTensorDenseMatMul``, ``Mul``, ...), so the
table says how much of a step is convolution, operator, element-wise work and
bookkeeping.

Run: ``python benchmarks/profile_step.py [--model lpd] [--batch 5] [--steps 5]
[--top 25] [--logdir DIR]``; the trace stays in ``--logdir`` for TensorBoard's
profile plugin. Measure on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import lpd  # noqa: E402
from lpd import training  # noqa: E402
from lpd.config import NetworkConfig  # noqa: E402
from lpd.physics import operators

MODELS = ("lpd", "lp", "lgd", "unet")


def op_self_times(logdir: Path) -> collections.Counter:
    """Seconds of self-time per TensorFlow op type in the newest trace in ``logdir``.

    Read from the profiler's "framework_op_stats" table (one row per op, with
    its type and total self-time in microseconds), so a function call is not
    counted on top of the ops inside it.
    """
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

    xplanes = sorted(logdir.rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime)
    if not xplanes:
        raise RuntimeError(f"the profiler wrote no trace into {logdir}")
    data, ok = plugin.xspace_to_tools_data([str(xplanes[-1])], "framework_op_stats", {})
    if not ok:
        raise RuntimeError(f"TensorFlow's profiler could not read {xplanes[-1]}: {data[:200]!r}")
    table = json.loads(data)[0]
    column = {c["id"]: i for i, c in enumerate(table["cols"])}
    totals = collections.Counter()
    for row in table["rows"]:
        cells = row["c"]
        if cells[column["host_or_device"]]["v"] != "Host":
            continue
        kind = cells[column["type"]]["v"]
        totals[kind] += cells[column["total_self_time"]]["v"] * 1e-6
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default="lpd")
    parser.add_argument("--setup", default="ellipses")
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--logdir", default=None)
    args = parser.parse_args()

    network = NetworkConfig(method=args.model)
    model = training.build_model(network, args.setup)
    optimizer = keras.optimizers.Adam(1e-3, beta_2=0.99)
    optimizer.build(model.trainable_variables)
    step = training.make_train_step(model, optimizer, args.batch)
    rng = np.random.default_rng(0)
    op = lpd.as_tf_operator(operators.get_setup(args.setup).operator)
    data = tf.constant(rng.standard_normal((args.batch, *op.range_shape, 1)), tf.float32)
    images = tf.constant(rng.random((args.batch, *op.domain_shape, 1)), tf.float32)
    for _ in range(3):
        step(data, images)

    logdir = Path(args.logdir or tempfile.mkdtemp(prefix="lpd-profile-"))
    tf.profiler.experimental.start(str(logdir))
    start = time.perf_counter()
    for _ in range(args.steps):
        float(step(data, images)[0])
    wall = (time.perf_counter() - start) / args.steps
    tf.profiler.experimental.stop()

    totals = op_self_times(logdir)
    traced = sum(totals.values())
    print(f"{args.model} on {args.setup}, batch {args.batch}: {wall:.3f} s per step "
          f"(wall, under the profiler), {traced / args.steps:.3f} s of op self-time per step "
          f"(all threads); trace in {logdir}")
    print(f"{'op type':<40} {'s/step':>8} {'share':>7}")
    for kind, seconds in totals.most_common(args.top):
        print(f"{kind:<40} {seconds / args.steps:>8.4f} {seconds / traced:>7.1%}")


if __name__ == "__main__":
    main()
