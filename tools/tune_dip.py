"""Choose the number of steps of the deep image prior on validation images, and store it.

    python tools/tune_dip.py --setup ellipses

Validation images: random ellipse phantoms with the set-up's noise (``--n-val``,
seed ``--seed``: those of ``tools/tune_classical.py``). Each is reconstructed
for ``--max-steps`` steps, its PSNR recorded every ``--every``; the step count
with the best mean PSNR is written with the curves to
``data/weights/<set-up>/dip.json`` (never replaced without ``--overwrite``).
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
    print(f"{args.setup}: {args.max_steps} steps on {len(truth)} validation phantoms",
          flush=True)
    t0 = time.perf_counter()
    curve = dip.iteration_curve(setup, data, truth, args.max_steps, args.every,
                                learning_rate=args.learning_rate, log=print)
    seconds = (time.perf_counter() - t0) / len(truth)
    best = curve["best"]
    mean = curve["mean"][curve["steps"].index(best)]
    print(f"best mean validation PSNR {mean:.2f} dB at step {best} "
          f"({seconds:.0f} s per image for {args.max_steps} steps)")
    params = {"n_iter": best, "learning_rate": args.learning_rate}
    search = {"command": command, "n_images": len(truth), "seed": args.seed,
              "criterion": "mean PSNR, data range 1", "seconds_per_image": seconds, **curve}
    print("wrote", dip.save_dip(args.setup, params, search, out, overwrite=args.overwrite))


if __name__ == "__main__":
    main()
