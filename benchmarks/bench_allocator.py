"""TensorFlow's CPU allocator: the system's malloc against its BFC pool, in one run.

TensorFlow takes every CPU tensor from the C library's ``malloc`` unless
``TF_CPU_ALLOCATOR_USE_BFC`` is true, in which case it keeps freed blocks in a
pool (the best-fit-with-coalescing allocator it uses on GPUs). glibc hands
blocks above 32 MiB to ``mmap`` and gives them back at ``free``, so a training
step whose tensors are that large faults in fresh zeroed pages every step:
AUTOMAP's dense kernels (46 and 67 MB at 64 x 64) and their gradients and Adam
temporaries do. LPD's tensors are smaller, and glibc's sliding threshold soon
keeps them on its heap. So the pool pays for AUTOMAP and not for LPD, and lpd
leaves the choice to the user: set ``TF_CPU_ALLOCATOR_USE_BFC=true`` in the
environment of ``lpd train --method automap`` (or of any run with tensors of
tens of MB). This benchmark is the measurement behind that advice.

For each allocator it starts a fresh Python (the variable is read once, when
TensorFlow starts) and times the training step of `lpd.training` (forward,
gradient, clipping, Adam) for

- LPD on ``ellipses`` (128 x 128, 30 angles) at batch 1 and 5;
- AUTOMAP on ``ellipses_small`` (64 x 64; 28.3 million parameters) at batch 5.

It prints the median step time, the minor page faults per step and the peak
resident memory of each, and the ratio malloc / BFC of the step times.
The maths is the same either way: the allocator only decides where tensors live.

Run: ``python benchmarks/bench_allocator.py [--repeats 10] [--cases lpd:5,automap:5]``,
on an otherwise idle machine (pause training runs with ``kill -STOP``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ALLOCATORS = {"malloc": "false", "bfc": "true"}
CASES = (("lpd", "ellipses", 1), ("lpd", "ellipses", 5), ("automap", "ellipses_small", 5))


def _child(repeats: int, cases) -> None:
    """Time every case in this process; print one JSON line per case."""
    import resource

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_training import median_seconds, train_step

    from lpd.config import NetworkConfig

    for method, setup, batch in cases:
        step = train_step(NetworkConfig(method=method), batch, setup)
        for _ in range(2):  # warm-up: tracing, and the first allocations
            step()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        seconds = median_seconds(step, repeats, warmup=0)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        print(json.dumps({"method": method, "setup": setup, "batch": batch,
                          "step_s": seconds,
                          "faults_per_step": (usage.ru_minflt - faults) / repeats,
                          "peak_mib": usage.ru_maxrss / 1024}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--cases", default=",".join(f"{m}:{b}" for m, _, b in CASES),
                        help="which cases, as method:batch (default: all)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    wanted = set(args.cases.split(","))
    cases = [c for c in CASES if f"{c[0]}:{c[2]}" in wanted]
    if not cases:
        parser.error(f"--cases {args.cases!r} names none of "
                     f"{', '.join(f'{m}:{b}' for m, _, b in CASES)}")
    if args.child:
        _child(args.repeats, cases)
        return

    results: dict[str, list[dict]] = {}
    for name, value in ALLOCATORS.items():
        env = {**os.environ, "TF_CPU_ALLOCATOR_USE_BFC": value, "TF_CPP_MIN_LOG_LEVEL": "2"}
        command = [sys.executable, __file__, "--child", "--repeats", str(args.repeats),
                   "--cases", args.cases]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"the {name} child failed:\n{done.stderr[-3000:]}")
        results[name] = [json.loads(line) for line in done.stdout.splitlines()
                         if line.startswith("{")]

    print(f"{os.cpu_count()} CPUs; median of {args.repeats} training steps per case")
    header = (f"{'model':<8} {'set-up':<15} {'batch':>5} {'allocator':>9} {'step s':>8} "
              f"{'faults/step':>11} {'peak MiB':>8} {'malloc/bfc':>10}")
    print(header)
    print("-" * len(header))
    for i, (method, setup, batch) in enumerate(cases):
        base = results["malloc"][i]["step_s"]
        for name in ALLOCATORS:
            r = results[name][i]
            ratio = f"{base / r['step_s']:.2f}" if name == "bfc" else ""
            print(f"{method:<8} {setup:<15} {batch:>5} {name:>9} {r['step_s']:>8.3f} "
                  f"{r['faults_per_step']:>11.0f} {r['peak_mib']:>8.0f} {ratio:>10}")


if __name__ == "__main__":
    main()
