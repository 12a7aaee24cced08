"""Cost of one proposal of the reversible-jump sampler on the ellipse set-up.

    python benchmarks/bench_posterior.py [--steps 5000]

Draws a phantom of the training distribution, simulates its data, starts a chain
at its own ellipses (a timing start, not an estimate: a real run must not know
them) and reports milliseconds per proposal, the acceptances by kind and the
PSNR of the chain's last image against the phantom.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from lpd import metrics
from lpd.data import phantoms, pipelines
from lpd.methods import posterior
from lpd.physics import operators


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setup", default="ellipses")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    setup = operators.get_setup(args.setup)
    shape = tuple(setup.space.shape)
    params = phantoms.random_ellipse_params(np.random.default_rng(args.seed))
    truth = phantoms.ellipses_to_image(params, shape)
    data = pipelines.simulate(setup, truth[None], np.random.default_rng(args.seed + 1))[0]
    post = posterior.EllipsePosterior(setup.numpy.matrix, shape, data,
                                      setup.config.noise.relative_std, posterior.EllipsePrior())
    chain = posterior.ReversibleJump(post, np.random.default_rng(args.seed + 2), params)
    t0 = time.perf_counter()
    chain.run(args.steps)
    seconds = time.perf_counter() - t0
    print(f"{args.setup}: {1e3 * seconds / args.steps:.3f} ms per proposal over {args.steps} "
          f"({', '.join(f'{k} {chain.accepted[k]}/{chain.proposed[k]}' for k in chain.accepted)}"
          f" accepted); {chain.n} ellipses at the end (started with {len(params)}); last "
          f"image {metrics.psnr(truth, chain.x.reshape(shape), 1.0):.2f} dB from the phantom")


if __name__ == "__main__":
    main()
