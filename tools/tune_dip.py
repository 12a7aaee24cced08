"""Choose the number of steps of the deep image prior on validation images, and store it.

    python tools/tune_dip.py --setup ellipses

    python tools/tune_dip.py --setup ellipses --tv-weight 1e-4 2e-4 4e-4 --overwrite

Validation images: random ellipse phantoms with the set-up's noise (``--n-val``,
seed ``--seed``: those of ``tools/tune_classical.py``). Each is reconstructed
for ``--max-steps`` steps, its PSNR recorded every ``--every``; the step count
(and, with several ``--tv-weight`` values, the weight of the TV term) with the
best mean PSNR is written with the curves to ``data/weights/<set-up>/dip.json``
(never replaced without ``--overwrite``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from lpd.data import pipelines as datasets
from lpd.methods import dip
from lpd.physics import operators


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setup", default="ellipses", choices=list(operators.SETUPS))
    p.add_argument("--n-val", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=3000)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--tv-weight", type=float, nargs="+", default=[0.0],
                   help="weights of the TV term to compare (0: the plain deep image prior)")
    p.add_argument("--patience", type=int, default=0,
                   help="halve the learning rate after this many steps without a new low of "
                        "the objective (0: constant)")
    p.add_argument("--out", help="JSON file (default data/weights/<set-up>/dip.json)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    command = "python tools/tune_dip.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    out = args.out or dip.dip_path(args.setup)
    if Path(out).exists() and not args.overwrite:
        sys.exit(f"{out} exists; pass --overwrite or another --out")
    setup = operators.get_setup(args.setup)
    data, truth = datasets.fixed_set(
        setup, datasets.RandomPhantoms("ellipses", tuple(setup.space.shape)), args.n_val,
        args.seed)
    print(f"{args.setup}: {args.max_steps} steps on {len(truth)} validation phantoms, "
          f"TV weights {args.tv_weight}", flush=True)
    t0 = time.perf_counter()
    curves = {}
    for weight in args.tv_weight:
        print(f"tv_weight {weight:g}:", flush=True)
        curves[weight] = dip.iteration_curve(setup, data, truth, args.max_steps, args.every,
                                             learning_rate=args.learning_rate,
                                             tv_weight=weight, patience=args.patience,
                                             log=print)
    seconds = (time.perf_counter() - t0) / len(truth) / len(args.tv_weight)

    def best_mean(weight):
        curve = curves[weight]
        return curve["mean"][curve["steps"].index(curve["best"])]

    weight = max(args.tv_weight, key=best_mean)
    curve, best, mean = curves[weight], curves[weight]["best"], best_mean(weight)
    print(f"best mean validation PSNR {mean:.2f} dB at step {best}, tv_weight {weight:g} "
          f"({seconds:.0f} s per image for {args.max_steps} steps)")
    if len(curve["steps"]) > 1 and best == curve["steps"][-1]:
        print(f"note: the best is the last step tried; the mean was still rising "
              f"({curve['mean'][-2]:.2f} -> {mean:.2f} dB over the last {args.every} steps), "
              f"so a larger --max-steps may do better, at {seconds / args.max_steps:.3f} s "
              "per step and image")
    params = {"n_iter": best, "learning_rate": args.learning_rate, "tv_weight": weight,
              "patience": args.patience}
    search = {"command": command, "n_images": len(truth), "seed": args.seed,
              "criterion": "mean PSNR, data range 1", "seconds_per_image": seconds,
              "tv_weight": weight, **curve,
              "by_tv_weight": {f"{w:g}": {"best": c["best"], "best_mean": best_mean(w),
                                          "mean": c["mean"]} for w, c in curves.items()}}
    print("wrote", dip.save_dip(args.setup, params, search, out, overwrite=args.overwrite))


if __name__ == "__main__":
    main()
