"""Train the networks of the ADMM splitting scheme (`lpd.methods.splitting`) for MRI set-ups.

    python tools/train_splitting.py --setup brain_mri_radial4_noise10
    python tools/train_splitting.py --cells default     # the six cells of `lpd reproduce mri`
    python tools/train_splitting.py --setup brain_mri_radial4_noise10 --network gan

Training images: the training slices of the brain MRI (`lpd.data.brain_mri`),
validation on its validation slices; the TV weight of the first loop is the
set-up's tuned one (``data/classical/<set-up>.json``, from
``tools/tune_classical.py``). Writes ``data/weights/<set-up>/admm/`` (``admm_gan/``
with ``--network gan``, the GAN variant; ``--root``
for another directory; never replaced without ``--overwrite``; a cell whose
networks exist is skipped). Progress goes to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time

from lpd.data import brain_mri
from lpd.evaluation import mri
from lpd.methods import splitting
from lpd.physics import operators


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--setup", nargs="+", help="MRI set-up(s), e.g. brain_mri_radial4_noise10")
    which.add_argument("--cells", choices=sorted(mri.MRI.presets),
                       help="every set-up of a preset of `lpd reproduce mri`")
    p.add_argument("--root", help="weights directory (default: data/weights)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--network", choices=sorted(splitting.NETWORKS), default="scae",
                   help="the SCAE on the squared error, or trained as a GAN's generator")
    p.add_argument("--first-patches", type=int, default=splitting.SplittingConfig.first_patches)
    p.add_argument("--later-patches", type=int, default=splitting.SplittingConfig.later_patches)
    p.add_argument("--patch", type=int, default=splitting.SplittingConfig.patch)
    args = p.parse_args(argv)
    command = "python tools/train_splitting.py " + shlex.join(sys.argv[1:] if argv is None
                                                                    else argv)
    names = args.setup or [cell.setup for cell in mri.cells(args.cells)]
    for name in names:
        setup = operators.get_setup(name)
        if setup.config.modality != "mri":
            sys.exit(f"{name} is not an MRI set-up")
        out = splitting.weights_dir(name, args.root, args.network)
        if (out / "splitting.json").exists() and not args.overwrite:
            print(f"{name}: networks exist at {out}; skipped (--overwrite to retrain)")
            continue
        config = dataclasses.replace(splitting.SplittingConfig(), seed=args.seed,
                                     network=args.network,
                                     first_patches=args.first_patches,
                                     later_patches=args.later_patches, patch=args.patch)
        train = brain_mri.brain_mri_slices(setup, "train").images()
        val = brain_mri.brain_mri_slices(setup, "validation").images()
        print(f"{name}: training on {len(train)} slices (and their x-flips), validating on "
              f"{len(val)}", flush=True)
        t0 = time.perf_counter()
        method, record = splitting.train_splitting(setup, train, val, config)
        splitting.save_splitting(method, record, out, overwrite=args.overwrite, command=command)
        print(f"{name}: wrote {out} ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
