"""Speed of the ODL -> TensorFlow bridge against calling scipy / ASTRA directly.

Prints, in one run, the median time per call of the forward operator, the
adjoint, forward + gradient (eagerly, one op per call), and of one
forward + adjoint pair inside a tf.function that chains ten of them (as an
unrolled network does), for each back-end of `lpd.as_tf_operator`, at
batch 1 and 8, on the ellipse set-up (parallel beam) and the small human set-up
(fan beam). Beside them: the same work done directly (a scipy sparse product on
the batch, and ODL/ASTRA called per image), and the ratios that matter:

- ``vs sparse``: bridge time / raw sparse product (target: <= 2 at batch 1,
  <= 1.3 at batch 8 for the default back-end);
- ``vs ODL``: raw ODL-per-image time / bridge time (target: >= 2).

Run: ``python benchmarks/bench_operators.py [--repeats 30]``. Ratios are taken
within one run, so they are comparable across machines; absolute times are not.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import lpd  # noqa: E402
from lpd import metrics  # noqa: E402
from lpd.physics import operators  # noqa: E402


def median_ms(fn, *args, repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``fn(*args)`` in milliseconds, after ``warmup`` calls."""
    return 1e3 * metrics.time_call(fn, *args, repeats=repeats, warmup=warmup)


def per_image(odl_op, batch: np.ndarray) -> list:
    """What a user without the bridge does: call ODL on each image of the batch."""
    return [odl_op(image[..., 0]) for image in batch]


def run(fn, *args) -> None:
    """Call ``fn`` and wait for its results."""
    tf.nest.map_structure(lambda t: t.numpy(), fn(*args))


def forward_and_gradient(op):
    """Eager forward call and the gradient of ``sum(op(x) * y)`` (one adjoint call)."""

    def fn(x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(op(x) * y)
        # The loss is returned too: a linear map's gradient does not need the
        # forward output, and in a graph an unused forward call is pruned away.
        return loss, tape.gradient(loss, x)

    return fn


def normal_chain(op):
    """Ten chained ``x -> A^* A x`` inside one tf.function, as in an unrolled network.

    One tf.function call has a fixed cost of its own (about 0.3 ms here) that a
    network pays once per step, not once per operator call; the chain spreads it.
    """

    @tf.function
    def fn(x):
        for _ in range(10):
            x = op.adjoint(op(x))
        return x

    return fn


def bench_setup(name: str, repeats: int) -> list[dict]:
    setup = operators.get_setup(name)
    odl_op = setup.operator
    matrix = operators.system_matrix(odl_op)
    matrix_t = matrix.T.tocsr()
    rows = []
    rng = np.random.default_rng(0)
    for batch in (1, 8):
        x_np = rng.random((batch, *odl_op.domain.shape, 1), dtype=np.float32)
        y_np = rng.random((batch, *odl_op.range.shape, 1), dtype=np.float32)
        flat_x = np.ascontiguousarray(x_np.reshape(batch, -1).T)
        flat_y = np.ascontiguousarray(y_np.reshape(batch, -1).T)
        if batch == 1:
            flat_x, flat_y = flat_x[:, 0], flat_y[:, 0]

        raw = {
            "forward": median_ms(matrix.__matmul__, flat_x, repeats=repeats),
            "adjoint": median_ms(matrix_t.__matmul__, flat_y, repeats=repeats),
        }
        raw["forward+grad"] = raw["forward"] + raw["adjoint"]
        raw["10x normal"] = raw["forward+grad"]
        odl = {
            "forward": median_ms(per_image, odl_op, x_np, repeats=repeats),
            "adjoint": median_ms(per_image, odl_op.adjoint, y_np, repeats=repeats),
        }
        odl["forward+grad"] = odl["forward"] + odl["adjoint"]
        odl["10x normal"] = odl["forward+grad"]

        x, y = tf.constant(x_np), tf.constant(y_np)
        for backend in ("matrix", "odl"):
            op = lpd.as_tf_operator(odl_op, backend=backend)
            times = {
                "forward": median_ms(run, op, x, repeats=repeats),
                "adjoint": median_ms(run, op.adjoint, y, repeats=repeats),
                "forward+grad": median_ms(run, forward_and_gradient(op), x, y,
                                          repeats=repeats),
                "10x normal": median_ms(run, normal_chain(op), x, repeats=repeats) / 10,
            }
            for kind, ms in times.items():
                rows.append({
                    "setup": name, "batch": batch, "backend": backend, "call": kind,
                    "bridge_ms": ms, "sparse_ms": raw[kind], "odl_ms": odl[kind],
                })
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--setups", default="ellipses,human_small")
    args = parser.parse_args(argv)

    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs; median of {args.repeats} calls")
    header = (f"{'setup':<12} {'batch':>5} {'backend':<7} {'call':<13} {'bridge ms':>9} "
              f"{'sparse ms':>9} {'ODL ms':>8} {'vs sparse':>9} {'vs ODL':>7}")
    print(header)
    print("-" * len(header))
    for name in args.setups.split(","):
        default = lpd.as_tf_operator(operators.get_setup(name).operator).backend
        for row in bench_setup(name, args.repeats):
            mark = "*" if row["backend"] == default else " "
            print(f"{row['setup']:<12} {row['batch']:>5} {row['backend'] + mark:<7} "
                  f"{row['call']:<13} {row['bridge_ms']:>9.2f} {row['sparse_ms']:>9.2f} "
                  f"{row['odl_ms']:>8.2f} {row['bridge_ms'] / row['sparse_ms']:>8.2f}x "
                  f"{row['odl_ms'] / row['bridge_ms']:>6.2f}x")
    print("* = back-end chosen by backend='auto'. 'vs sparse' = bridge / scipy product "
          "(lower is better); 'vs ODL' = ODL per image / bridge (higher is better).")


if __name__ == "__main__":
    main()
