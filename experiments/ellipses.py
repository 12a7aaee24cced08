"""Reproduce the ellipse table of the Learned Primal-Dual paper (Adler & Öktem 2018).

FBP, TV, Tikhonov, FBP + U-Net, learned gradient descent, Learned Primal and
Learned Primal-Dual on the modified Shepp-Logan phantom and 100 held-out random
ellipse phantoms (128 x 128, 30 parallel-beam angles, 5 % Gaussian noise).
Everything is in `lpd.reproduce`; this script is ``lpd reproduce ellipses``.

Run: ``python experiments/ellipses.py [--preset default|quick|paper] [--train]
[--out DIR] [--methods fbp,tv,...] [--images FILE.npy] [--force]``
"""

import sys

from lpd.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "ellipses", *sys.argv[1:]]))
