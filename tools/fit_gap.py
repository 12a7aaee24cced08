"""Scores of shipped human-CT models on their own training slices and on held-out ones.

    python tools/fit_gap.py                        # human_small/lpd and human_small/unet
    python tools/fit_gap.py human_small/lpd --noise-draws 1

The human models learn from the 67 training slices of one head CT (with fresh
noise every step). A model that scores much better on those slices than on the
validation and test slices of the same head has over-fitted them, and more data
(or augmentation) would help it; one that scores alike on all of them is limited
by its training time or capacity instead. Every slice is simulated with the
set-up's noise, ``--noise-draws`` times, from a fixed seed; PSNR and SSIM at data
range 1, mean over the samples.
"""

from __future__ import annotations

import argparse
import sys

from lpd import training
from lpd.data import pipelines as datasets
from lpd.data import real as realdata
from lpd.evaluation import scoring as evaluation
from lpd.methods.networks import NetworkReconstructor
from lpd.physics import operators

SPLITS = ("train", "validation", "test")


def scores(model, setup, split: str, noise_draws: int, seed: int) -> tuple[int, float, float]:
    """Number of samples, mean PSNR and mean SSIM of ``model`` on one split."""
    slices = realdata.real_ct_slices(setup, split)
    data, images = datasets.fixed_set(setup, slices, len(slices) * noise_draws, seed=seed)
    result = evaluation.evaluate(NetworkReconstructor(model), data, images, name=split,
                                 timed=False)
    return result.n_samples, result.psnr_mean, result.ssim_mean


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", nargs="*", default=["human_small/lpd", "human_small/unet"],
                        help="shipped weights, '<set-up>/<method>' (default: the human_small "
                             "LPD and U-Net)")
    parser.add_argument("--noise-draws", type=int, default=3,
                        help="noisy samples per slice (default 3)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the noise (default 7)")
    args = parser.parse_args(argv)
    if args.noise_draws < 1:
        parser.error("--noise-draws must be at least 1")

    print(f"{'weights':<20} {'split':<11} {'samples':>7} {'PSNR dB':>8} {'SSIM':>6}")
    for name in args.weights:
        try:
            model = training.load_pretrained(name, precision="float32")
        except training.WeightsError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        setup = operators.get_setup(name.split("/", 1)[0])
        if setup.config.noise.kind != "poisson":
            print(f"error: {name}: only the human-CT models have a finite training set",
                  file=sys.stderr)
            return 1
        for split in SPLITS:
            n, psnr, ssim = scores(model, setup, split, args.noise_draws, args.seed)
            print(f"{name:<20} {split:<11} {n:>7} {psnr:>8.2f} {ssim:>6.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
