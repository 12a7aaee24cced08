"""Train the plug-and-play denoiser once, then tune the scheme per set-up on validation data.

    python tools/train_pnp.py --setup ellipses ellipses_small

The denoiser (`lpd.methods.pnp.train_denoiser`: fresh random ellipse phantoms,
noise levels in [0, 0.2]) is trained only when ``data/weights/denoisers/<images>``
does not hold one (``--retrain`` replaces it); every set-up then uses that same
network. Per set-up and per iteration count (``--n-iter``) the scheme's strength
(golden section) and first and last noise level (grid) are tuned on validation
phantoms (``--n-val``, seed ``--seed``, the validation set of
``tools/tune_classical.py``); the best of them is written with the whole search to
``data/weights/<set-up>/pnp.json`` (never replaced without ``--overwrite``).
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import sys

from lpd.data import pipelines as datasets
from lpd.io import atomic_write
from lpd.methods import classical, denoising, pnp
from lpd.physics import operators

LEVEL_STARTS = (0.05, 0.1, 0.2)
LEVEL_ENDS = (0.005, 0.01, 0.02, 0.04)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setup", nargs="+", required=True, help="set-ups to tune the scheme for")
    p.add_argument("--images", default="ellipses", help="phantom family of the denoiser")
    p.add_argument("--steps", type=int, default=pnp.DenoiserConfig.steps)
    p.add_argument("--decay", default=pnp.DenoiserConfig.decay, choices=denoising.DECAYS,
                   help="learning-rate schedule of the denoiser's training")
    p.add_argument("--retrain", action="store_true", help="retrain the denoiser")
    p.add_argument("--n-val", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--n-iter", type=int, nargs="+", default=[20, 40, 80],
                   help="HQS iteration counts to compare (each gets its own strength and levels)")
    p.add_argument("--ensemble", default="periodic", choices=pnp.ENSEMBLES,
                   help="the denoiser's self-ensemble over the symmetries of the square")
    p.add_argument("--root", help="weights directory (default: data/weights)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    command = "python tools/train_pnp.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    for name in args.setup:
        out = pnp.pnp_path(name, args.root)
        if out.exists() and not args.overwrite:
            sys.exit(f"{out} exists; pass --overwrite or another --root")

    directory = pnp.denoiser_dir(args.images, args.root)
    if args.retrain or not (directory / "denoiser.json").exists():
        config = pnp.DenoiserConfig(images=args.images, steps=args.steps, decay=args.decay)
        print(f"training the denoiser on {args.images} ({config.steps} steps)", flush=True)
        network, record = pnp.train_denoiser(config)
        pnp.save_denoiser(network, record, directory, overwrite=args.retrain, command=command)
        print(f"wrote {directory}")
    network, _ = pnp.load_denoiser(directory)

    for name in args.setup:
        setup = operators.get_setup(name)
        val_data, val_truth = datasets.fixed_set(
            setup, datasets.RandomPhantoms(args.images, tuple(setup.space.shape)), args.n_val,
            args.seed)
        search = dict(data=val_data, truth=val_truth, verbose=True)
        searches, best = [], None
        for n_iter in args.n_iter:
            build = functools.partial(pnp.PnPReconstructor, setup, network, n_iter=n_iter,
                                      ensemble=args.ensemble)
            print(f"{name}: {n_iter} iterations: strength, by golden section at levels "
                  "0.1 -> 0.01", flush=True)
            strength = classical.golden_section_search(
                build, "strength", 1e-7, 1e-1, fixed={"level_start": 0.1, "level_end": 0.01},
                n_eval=10, **search)
            print(f"{name}: {n_iter} iterations: levels, by grid at strength "
                  f"{strength.best['strength']:.3g}", flush=True)
            levels = classical.grid_search(
                build, {"level_start": LEVEL_STARTS, "level_end": LEVEL_ENDS},
                fixed={"strength": strength.best["strength"]}, **search)
            searches.append({"n_iter": n_iter, "strength": strength.to_dict(),
                             "levels": levels.to_dict()})
            if best is None or levels.score > best[0]:
                best = (levels.score, {"strength": strength.best["strength"], **levels.best,
                                       "n_iter": n_iter, "ensemble": args.ensemble})
        score, params = best
        record = {"setup": name, "denoiser": args.images, "params": params,
                  "search": {"command": command, "n_images": len(val_truth), "seed": args.seed,
                             "criterion": "mean PSNR, data range 1", "score": score,
                             "by_iterations": searches}}
        out = pnp.pnp_path(name, args.root)
        atomic_write(out, json.dumps(record, indent=2, default=float) + "\n",
                     overwrite=args.overwrite)
        print(f"{name}: {params}, validation {score:.2f} dB; wrote {out}", flush=True)


if __name__ == "__main__":
    main()
