"""Reproduce the human-CT comparison of the Learned Primal-Dual paper on real CT.

FBP, TV, Tikhonov, FBP + U-Net and Learned Primal-Dual with the paper's physics
(fan beam, pre-log Poisson data, mu = 0.02 / mm, 1e4 photons) on held-out
head-CT slices and on slices of other patients. The default preset is the CPU
size ``human_small`` (128 x 128, 128 angles); ``--preset paper`` is the paper's
512 x 512 with 1000 angles (FBP and TV; learned models need ``--train``).
Everything is in `lpd.reproduce`; this script is ``lpd reproduce human``.

Run: ``python experiments/human_ct.py [--preset default|quick|paper] [--train]
[--out DIR] [--methods fbp,tv,...] [--images FILE.npy] [--force]``
"""

import sys

from lpd.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "human", *sys.argv[1:]]))
