"""Cost of one proposal of the reversible-jump sampler on the ellipse set-up.

    python benchmarks/bench_posterior.py [--steps 5000] [--burn-in 0] [--seed 0] [--lpd]
                                         [--greedy]

Draws a phantom of the training distribution, simulates its data, starts a chain
at its own ellipses (a timing start, not an estimate: a real run must not know
them) and reports milliseconds per proposal, the acceptances by kind, the PSNR
of the chain's last image against the phantom and, with ``--burn-in``, that of
the mean of the images after it: how good the conditional mean is once a chain
is in the truth's basin (``--steps 60000 --burn-in 20000``).

With ``--greedy`` (and ``--lpd``) it times `posterior.greedy_start` from the
data alone, as `lpd reproduce limit` starts its chains: from the LPD
reconstruction, with and without the ellipses detected on its edges
(`candidates.detect_ellipses`), reporting each start's log-likelihood below the
phantom's own, its ellipse count and its PSNR; then it runs a chain of
``--steps`` proposals from each (FBP-guided, the detected ellipses as its
library where the start had them) and, with ``--burn-in``, reports the PSNR of
its mean (``--steps 300000 --burn-in 150000``, a few minutes).

With ``--segments`` each segment also reports the chain's last state: its log
posterior against the phantom's (`EllipsePosterior.log_posterior`) and that
difference's terms (likelihood, count, marks: whether the data or the prior tells
them apart), its PSNR, its visible ellipses (``|value| x pixels > 20``) and how
many of the phantom's visible ones a chain ellipse covers with an intersection
over union of 0.9 or more. ``--oracle-library``
adds those visible ellipses' shapes to the detected library: a diagnostic, not an
estimate (a real run cannot know them), of whether the chains would find the
phantom's ellipses if the detector had found every one. ``--rebuild-work 50 200``
reports, for the visible ellipses a chain misses, the work of a rebuild that
slides the chain's stand-in to the phantom's shape or to the closest detected
one: whether rebuilds aimed there would be accepted.
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
    p.add_argument("--burn-in", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lpd", action="store_true",
                   help="also score the shipped LPD on the same data (ellipses only)")
    p.add_argument("--greedy", action="store_true",
                   help="time the greedy starts from the LPD reconstruction (needs --lpd)")
    p.add_argument("--temperatures", type=int, nargs="+", default=[1],
                   help="with --greedy: a chain from each start per ladder size (1: a plain "
                        "chain; N > 1: parallel tempering of N powers down to --hottest)")
    p.add_argument("--hottest", type=float, default=0.05,
                   help="the smallest power of the likelihood of a tempering ladder")
    p.add_argument("--segments", type=int, default=1,
                   help="run each chain (from the greedy starts, and the one started at the "
                        "phantom) in this many equal segments and "
                        "report each segment's mean (how a long chain climbs)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="with --greedy: the detector's tolerance in pixels (`detect_ellipses`; "
                        "default its own)")
    p.add_argument("--detected-only", action="store_true",
                   help="with --greedy: only the start with the detected ellipses")
    p.add_argument("--removal-costs", action="store_true",
                   help="with --greedy: after each chain, what removing each of its ellipses "
                        "alone would cost in log-likelihood (are they all load-bearing?)")
    p.add_argument("--merge", type=float, default=0.0,
                   help="with --greedy: the chains' probability of proposing a merge (and "
                        "that of a split) of overlapping ellipses")
    p.add_argument("--joint", type=float, default=0.0,
                   help="the chains' share of joint births, deaths and updates (the values "
                        "of the changed ellipse's neighbours redrawn with its own)")
    p.add_argument("--rebuild", type=float, default=0.0,
                   help="the chains' probability of proposing a rebuild (one ellipse slides "
                        "to a library shape while the ellipses centred near it relax)")
    p.add_argument("--rebuild-stages", type=int, default=50,
                   help="the stages of a rebuild's slide")
    p.add_argument("--rebuild-relax", type=int, default=100,
                   help="the relaxing updates between two stages of a rebuild")
    p.add_argument("--rebuild-costs", action="store_true",
                   help="with --greedy --segments: after each chain, for each visible ellipse "
                        "of the phantom it does not match, the change of log posterior from "
                        "giving its stand-in the phantom's shape, the values of every ellipse "
                        "that meets either refitted")
    p.add_argument("--rebuild-work", type=int, nargs=2, metavar=("STAGES", "RELAX"),
                   help="with --greedy --segments: after each chain, for each visible ellipse "
                        "of the phantom it does not match, the work of three rebuilds "
                        "(`ReversibleJump.rebuild_work`, STAGES stages of RELAX updates) "
                        "sliding its stand-in to the phantom's shape and to the detected "
                        "candidate closest to it: whether a rebuild aimed there is accepted")
    p.add_argument("--oracle-library", action="store_true",
                   help="with --greedy: add the phantom's visible ellipses to the detected "
                        "library (a diagnostic: a real run cannot know them)")
    args = p.parse_args(argv)
    if args.greedy and not args.lpd:
        p.error("--greedy starts from the LPD reconstruction: add --lpd")
    if args.segments < 1 or args.steps % args.segments:
        p.error(f"--segments must be >= 1 and divide --steps ({args.steps})")
    setup = operators.get_setup(args.setup)
    shape = tuple(setup.space.shape)
    params = phantoms.random_ellipse_params(np.random.default_rng(args.seed))
    truth = phantoms.ellipses_to_image(params, shape)
    data = pipelines.simulate(setup, truth[None], np.random.default_rng(args.seed + 1))[0]
    post = posterior.EllipsePosterior(setup.numpy.matrix, shape, data,
                                      setup.config.noise.relative_std, posterior.EllipsePrior())
    chain = posterior.ReversibleJump(post, np.random.default_rng(args.seed + 2), params,
                                     joint=args.joint)
    if args.lpd:
        from lpd import load_pretrained
        from lpd.evaluation import reproduce

        lpd = reproduce._network(load_pretrained(f"{args.setup}/lpd", precision="float32"),
                                 "lpd")
        target = np.asarray(lpd(data), np.float64)
        print(f"shipped LPD on the same data: {metrics.psnr(truth, target, 1.0):.2f} dB")
        if args.greedy:
            _greedy_starts(setup, post, data, truth, params, target, args)
    truth_l = post.log_likelihood(post.columns @ truth.ravel())
    if args.segments > 1:
        print(f"a chain of {args.steps} proposals started at the phantom's own ellipses:")
        _segments(chain, chain, post, truth, truth_l, args, params)
        return
    t0 = time.perf_counter()
    result = chain.run(args.steps, burn_in=args.burn_in)
    seconds = time.perf_counter() - t0
    print(f"{args.setup}: {1e3 * seconds / args.steps:.3f} ms per proposal over {args.steps} "
          f"({', '.join(f'{k} {chain.accepted[k]}/{chain.proposed[k]}' for k in chain.accepted)}"
          f" accepted); {chain.n} ellipses at the end (started with {len(params)}); last "
          f"image {metrics.psnr(truth, chain.x.reshape(shape), 1.0):.2f} dB from the phantom")
    if args.burn_in:
        print(f"mean of the {result['n_kept']} images after {args.burn_in} proposals: "
              f"{metrics.psnr(truth, result['mean'], 1.0):.2f} dB; ellipses "
              f"{result['counts'].min()}-{result['counts'].max()}")


def _greedy_starts(setup, post, data, truth, params, target, args):
    from lpd.methods import candidates, classical

    seed = args.seed
    guide = np.asarray(classical.FBPReconstructor(setup)(data), np.float64)
    truth_l = post.log_likelihood(post.columns @ truth.ravel())
    t0 = time.perf_counter()
    detect = {} if args.tolerance is None else {"tolerance": args.tolerance}
    detected = candidates.detect_ellipses(target, **detect)
    print(f"detect_ellipses on the LPD image: {len(detected)} candidates in "
          f"{time.perf_counter() - t0:.1f} s")
    visible = _visible(params, post.shape)
    found_shapes = detected
    closest, _ = _closest(detected, params, visible, post.shape)
    print(f"the detected shapes come within IoU 0.9 of {np.sum(closest >= 0.9)} of the "
          f"phantom's {len(visible)} visible ellipses, within 0.8 of {np.sum(closest >= 0.8)}")
    if args.oracle_library:
        detected = np.concatenate([detected, params[visible, 1:]])
        print(f"oracle library: the phantom's {len(visible)} visible ellipses added to them")
    print(f"the phantom: {len(params)} ellipses, {len(visible)} visible (|value| x pixels "
          f"> 20), log posterior {post.log_posterior(params):.1f}")
    starts = [("with the detected ellipses", detected), ("without", None)]
    for name, shapes in starts[:1] if args.detected_only else starts:
        t0 = time.perf_counter()
        found = posterior.greedy_start(post, np.random.default_rng(seed + 3), candidates=200,
                                       refine=300, target=target, detected=shapes)
        image = post.image(found)
        gap = truth_l - post.log_likelihood(post.columns @ image.ravel())
        print(f"greedy start {name}: {time.perf_counter() - t0:.0f} s, {len(found)} ellipses "
              f"(the phantom {len(params)}), log-likelihood {gap:.1f} below the phantom's, "
              f"{metrics.psnr(truth, image, 1.0):.2f} dB")
        library = None if shapes is None else candidates.EllipseLibrary(shapes)
        options = dict(guide=guide, library=library, library_births=0.3, merge=args.merge,
                       joint=args.joint, rebuild=args.rebuild,
                       rebuild_stages=args.rebuild_stages, rebuild_relax=args.rebuild_relax)
        for n in args.temperatures:
            rng = np.random.default_rng(seed + 5)
            if n > 1:
                betas = posterior.geometric_ladder(n, args.hottest)
                ladder = posterior.ParallelTempering(post, rng, found, betas=betas, **options)
                chain, what = ladder.cold, f"the cold chain of {n} powers down to {betas[-1]:g}"
            else:
                ladder = chain = posterior.ReversibleJump(post, rng, found, **options)
                what = "a chain"
            t0 = time.perf_counter()
            if args.segments > 1:
                _segments(ladder, chain, post, truth, truth_l, args, params)
                if args.removal_costs:
                    _removal_costs(chain, post, len(params))
                if args.rebuild_costs:
                    _rebuild_costs(chain, post, params)
                if args.rebuild_work:
                    _rebuild_work(chain, post, params, found_shapes, *args.rebuild_work)
                continue
            result = ladder.run(args.steps, burn_in=args.burn_in, thin=10)
            mean = (f", the mean after {args.burn_in} proposals "
                    f"{metrics.psnr(truth, result['mean'], 1.0):.2f} dB" if args.burn_in else "")
            swaps = ("" if n == 1 else "; swaps accepted "
                     + " / ".join(f"{r:.2f}" for r in result["swap_rates"]))
            print(f"  {what} of {args.steps} proposals from it: {time.perf_counter() - t0:.0f} s, "
                  f"{chain.n} ellipses at the end, log-likelihood "
                  f"{truth_l - chain.log_l:.1f} below the phantom's{mean}{swaps}", flush=True)
            if args.removal_costs:
                _removal_costs(chain, post, len(params))


def _rebuild_costs(chain, post, params):
    """Would one switch to the phantom's shape, the neighbours' values refitted, be uphill?

    For each visible ellipse of the phantom that no ellipse of the chain matches
    (IoU >= 0.9), its stand-in (the chain's ellipse of largest IoU with it) takes
    its shape and every ellipse whose footprint meets the old or new one gets its
    least-squares value given the rest; reported is the log posterior after it
    less before, and the same refit without the switch.
    """
    shape = post.shape
    marks = np.array(chain.marks)
    prints = [set(posterior.footprint(m, shape).tolist()) for m in marks]
    units = np.array(chain.units)
    before = post.log_posterior(marks)

    def refit(state, near, near_units):
        rest = post.columns @ post.image(np.delete(state, near, axis=0)).ravel()
        state = state.copy()
        state[near, 0] = np.linalg.lstsq(np.array(near_units).T, post.data - rest,
                                         rcond=None)[0]
        return post.log_posterior(state) - before

    for k in _visible(params, shape):
        own = set(posterior.footprint(params[k], shape).tolist())
        overlaps = [len(own & f) / len(own | f) for f in prints]
        j = int(np.argmax(overlaps))
        if overlaps[j] >= 0.9:
            continue
        near = [i for i, f in enumerate(prints) if f & (own | prints[j])]
        switched = marks.copy()
        switched[j, 1:] = params[k, 1:]
        near_units = [post.projection(posterior.footprint(switched[i], shape), 1.0)
                      if i == j else units[i] for i in near]
        print(f"  phantom ellipse {k} (value {params[k][0]:+.3f}, {len(own)} pixels): its "
              f"stand-in has IoU {overlaps[j]:.2f}; its shape, the values of the {len(near)} "
              f"ellipses that meet either refitted: {refit(switched, near, near_units):+.1f} "
              f"nats of log posterior (the refit alone: "
              f"{refit(marks, near, [units[i] for i in near]):+.1f})", flush=True)


def _rebuild_work(chain, post, params, detected, stages: int, relax: int, repeats: int = 3):
    """Would a rebuild aimed at the right shape be accepted? (`ReversibleJump.rebuild_work`)

    For each visible ellipse of the phantom that no ellipse of the chain matches
    (IoU >= 0.9), its stand-in (the chain's ellipse of largest IoU with it)
    slides to the phantom's shape, and to the detected candidate of largest IoU
    with the phantom's ellipse, ``repeats`` times each; reported is the work
    (the log acceptance ratio less the shape proposal's) and, with a library,
    the proposal ratio of the library's draw near the stand-in
    (`ReversibleJump._rebuild_shape`): a rebuild that drew that shape is accepted
    with probability ``min(1, exp(work + ratio))``.
    """
    shape = post.shape
    prints = [set(posterior.footprint(m, shape).tolist()) for m in chain.marks]
    stages_before, relax_before = chain.rebuild_stages, chain.rebuild_relax
    chain.rebuild_stages, chain.rebuild_relax = stages, relax

    def iou(own, other):
        return len(own & other) / len(own | other)

    missed, stand_ins = [], []
    for k in _visible(params, shape):
        own = set(posterior.footprint(params[k], shape).tolist())
        overlaps = [iou(own, f) for f in prints]
        j = int(np.argmax(overlaps))
        if overlaps[j] < 0.9:
            missed.append(k)
            stand_ins.append((j, overlaps[j], len(own)))
    closest, which = _closest(detected, params, missed, shape)
    for k, (j, overlap, pixels), best, d in zip(missed, stand_ins, closest, which, strict=True):
        targets = [("the phantom's shape", params[k, 1:])]
        if d >= 0:
            targets.append((f"the closest detected shape (IoU {best:.2f})", detected[d]))
        old = chain.marks[j][1:]
        for name, target in targets:
            works = [chain.rebuild_work(j, target) for _ in range(repeats)]
            library, ratio = chain.library, ""
            if library is not None:
                terms = (library.log_density(old, near=target)
                         - library.log_density(target, near=old))
                ratio = f"; the library's proposal ratio (reverse over forward) {terms:+.1f}"
            print(f"  phantom ellipse {k} (value {params[k][0]:+.3f}, {pixels} pixels), its "
                  f"stand-in at IoU {overlap:.2f}, rebuilt to {name} in {stages} stages "
                  f"of {relax} updates: work " + " / ".join(f"{w:+.1f}" for w in works)
                  + ratio, flush=True)
    chain.rebuild_stages, chain.rebuild_relax = stages_before, relax_before


def _removal_costs(chain, post, n_truth):
    """How much log-likelihood removing each of the chain's ellipses alone would lose."""
    costs = np.sort([chain.log_l - post.log_likelihood(chain.p - mark[0] * unit)
                     for mark, unit in zip(chain.marks, chain.units, strict=True)])
    quartiles = " / ".join(f"{q:.1f}" for q in np.percentile(costs, [25, 50, 75]))
    print(f"  removing one of its {chain.n} ellipses (the phantom has {n_truth}) alone costs "
          f"<= 0 nats for {np.sum(costs <= 0)}, <= 5 for {np.sum(costs <= 5)}, "
          f"<= 20 for {np.sum(costs <= 20)}; quartiles {quartiles} nats", flush=True)


def _visible(marks, shape) -> list[int]:
    """The ellipses whose value times pixel count exceeds 20: those the data can show."""
    return [k for k, mark in enumerate(marks)
            if abs(mark[0]) * len(posterior.footprint(mark, shape)) > 20]


def _closest(shapes, params, visible, shape) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``params[visible]``: the largest IoU of one of ``shapes`` (rows of 5)
    with it, and that shape's index (-1 where there are none)."""
    prints = [set(posterior.footprint(np.r_[1.0, d], shape).tolist()) for d in shapes]
    best, which = [], []
    for k in visible:
        own = set(posterior.footprint(params[k], shape).tolist())
        overlaps = [len(own & f) / len(own | f) for f in prints]
        which.append(int(np.argmax(overlaps)) if overlaps else -1)
        best.append(overlaps[which[-1]] if overlaps else 0.0)
    return np.array(best), np.array(which)


def _matched(marks, params, visible, shape) -> int:
    """How many of ``params[visible]`` some ellipse of ``marks`` covers with IoU >= 0.9."""
    prints = [set(posterior.footprint(m, shape).tolist()) for m in marks]
    count = 0
    for k in visible:
        own = set(posterior.footprint(params[k], shape).tolist())
        count += any(len(own & f) >= 0.9 * len(own | f) for f in prints)
    return count


def _segments(ladder, chain, post, truth, truth_l, args, params):
    length = args.steps // args.segments
    visible = _visible(params, post.shape)
    truth_terms = post.log_posterior_terms(params)
    truth_lp = sum(truth_terms.values())
    t0 = time.perf_counter()
    for k in range(args.segments):
        result = ladder.run(length, thin=10)
        mean = metrics.psnr(truth, result["mean"], 1.0)
        moves = ", ".join(f"{kind} {chain.accepted[kind]}/{chain.proposed[kind]}"
                          for kind in ("merge", "split", "joint", "rebuild")
                          if chain.proposed[kind])
        state = metrics.psnr(truth, chain.x.reshape(post.shape), 1.0)
        print(f"  proposals {k * length}-{(k + 1) * length}: mean {mean:.2f} dB, "
              f"{chain.n} ellipses at the end, log-likelihood {truth_l - chain.log_l:.1f} "
              f"below the phantom's ({time.perf_counter() - t0:.0f} s)"
              + (f"; accepted {moves}" if moves else "")
              + ("; swaps accepted " + " / ".join(f"{r:.2f}" for r in result["swap_rates"])
                 if "swap_rates" in result else ""), flush=True)
        terms = post.log_posterior_terms(chain.marks)
        apart = ", ".join(f"{name} {truth_terms[name] - terms[name]:.1f}" for name in terms)
        print(f"    last state: log posterior {truth_lp - sum(terms.values()):.1f} "
              f"below the phantom's ({apart}), {state:.2f} dB, "
              f"{len(_visible(np.array(chain.marks), post.shape))} visible ellipses, "
              f"{_matched(chain.marks, params, visible, post.shape)} of the phantom's "
              f"{len(visible)} matched (IoU >= 0.9)", flush=True)


if __name__ == "__main__":
    main()
