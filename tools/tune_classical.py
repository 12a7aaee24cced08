"""Tune FBP, TV and Tikhonov on validation data and store the chosen values.

    python tools/tune_classical.py --setup ellipses
    python tools/tune_classical.py --setup human_small --n-val 2
    python tools/tune_classical.py --setup brain_mri_radial4_noise10 --tv-iter 300

Validation data: random ellipse phantoms (ellipse set-ups), the validation
slices of the real head CT (human set-ups) or of the brain MRI (MRI set-ups:
FBP is not tuned there), with the set-up's noise; PSNR at
``--data-range``. ``--tune-on test`` tunes on the test images themselves (the
protocol behind the issue's reference figures), for comparison only.
Writes ``data/classical/<setup>.json`` (``--out``; never replaced without
``--overwrite``) and prints the table of the test images (Shepp-Logan, or test
slices of the head CT), which ``--table out/x.csv`` also writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import shlex
import sys
from pathlib import Path

import numpy as np

from lpd.data import phantoms
from lpd.data import pipelines as datasets
from lpd.data import real as realdata
from lpd.evaluation import scoring as evaluation
from lpd.methods import classical
from lpd.physics import operators
from lpd.physics.projector import projector


def image_sets(setup, n_val, seed):
    """Validation and test sets as (data, images) pairs."""
    name, shape = setup.config.name, setup.space.shape
    pick = lambda s, n: s.subset(np.linspace(0, len(s) - 1, n).round().astype(int))  # noqa: E731
    if setup.config.modality == "mri":
        from lpd.data import brain_mri

        val = pick(brain_mri.brain_mri_slices(setup, "validation"), n_val)
        test = brain_mri.brain_mri_slices(setup, "test")
        return (datasets.fixed_set(setup, val, seed=seed), datasets.fixed_set(setup, test,
                                                                              seed=seed),
                f"brain MRI validation slices {val.labels}")
    if setup.config.noise.kind == "gaussian":
        val = datasets.fixed_set(setup, datasets.RandomPhantoms("ellipses", shape), n_val, seed)
        sl = datasets.ImageSet.from_array(phantoms.shepp_logan(shape)[None], name="shepp_logan")
        return val, datasets.fixed_set(setup, sl, seed=seed + 1000), "random ellipses"
    val = pick(realdata.real_ct_slices(name, "validation"), n_val)
    test = pick(realdata.real_ct_slices(name, "test"), 4)
    return (datasets.fixed_set(setup, val, seed=seed), datasets.fixed_set(setup, test, seed=seed),
            f"head CT validation slices {val.labels}")


def convergence(setup, data, weight, nonneg, n_iter, ratios):
    """Objective after n_iter iterations per step ratio, relative to a long run."""
    finals = {}
    for ratio in ratios:
        tv = classical.TVReconstructor(setup, weight, n_iter, nonneg, step_ratio=ratio)
        finals[ratio] = tv.objective(tv(data), data)
    best = min(finals, key=finals.get)
    long = classical.TVReconstructor(setup, weight, 5 * n_iter, nonneg, step_ratio=best)
    reference = long.objective(long(data), data)
    gaps = {r: f / reference - 1 for r, f in finals.items()}
    return best, {"reference_objective": reference, "reference_n_iter": 5 * n_iter,
                  "relative_gap": {str(r): g for r, g in gaps.items()}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setup", default="ellipses", choices=list(operators.SETUPS))
    p.add_argument("--n-val", type=int, default=4, help="validation images")
    p.add_argument("--seed", type=int, default=1, help="seed of the validation set")
    p.add_argument("--tv-iter", type=int, default=1000, help="PDHG iterations (paper: 1000)")
    p.add_argument("--n-eval", type=int, default=12, help="golden-section evaluations")
    p.add_argument("--data-range", type=float, default=1.0)
    p.add_argument("--tune-on", choices=["validation", "test"], default="validation")
    p.add_argument("--out", help="JSON file (default data/classical/<setup>.json)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--table", help="also write the test table to this .csv (and .md)")
    args = p.parse_args(argv)
    command = "python tools/tune_classical.py " + shlex.join(sys.argv[1:] if argv is None
                                                                   else argv)
    setup = operators.get_setup(args.setup)
    out = args.out or classical.params_path(args.setup)
    # Check before the search, which takes minutes, rather than fail after it.
    for path in (out, args.table):
        if path and Path(path).exists() and not args.overwrite:
            sys.exit(f"{path} exists; pass --overwrite or another path")
    (val_data, val_truth), (test_data, test_truth), source = image_sets(setup, args.n_val,
                                                                       args.seed)
    if args.tune_on == "test":
        val_data, val_truth, source = test_data, test_truth, "the test images themselves"
    search_args = dict(data=val_data, truth=val_truth, data_range=args.data_range, verbose=True)
    print(f"set-up {args.setup}: tuning on {len(val_truth)} images ({source})", flush=True)

    mri = setup.config.modality == "mri"
    fbp = None
    if not mri:  # MRI's analytical method, zero filling, has no parameters
        print("FBP: grid over filters and frequency scaling")
        scalings = [round(float(v), 2) for v in np.arange(0.1, 1.001, 0.05)]
        fbp = classical.grid_search(functools.partial(classical.FBPReconstructor, setup),
                                    {"filter_type": classical.FILTERS,
                                     "frequency_scaling": scalings}, **search_args)

    poisson = setup.config.noise.kind == "poisson"
    # Attenuation and MR magnitude are non-negative; ellipse phantoms are not, so
    # try both there.
    nonneg_options = (True,) if poisson or mri else (False, True)
    # Images in [0, 1] and a unitary operator: the MRI weights are larger.
    weights = (1e-6, 1.0) if mri else (1e-5, 1e-1)
    ratio, tv, record = 100.0, None, {}
    for _ in range(2):  # re-search once if PDHG had not converged at this ratio
        tv = max((classical.golden_section_search(
            functools.partial(classical.TVReconstructor, setup), "weight", *weights,
            fixed={"n_iter": args.tv_iter, "nonneg": nn, "step_ratio": ratio},
            n_eval=args.n_eval, **search_args) for nn in nonneg_options),
            key=lambda r: r.score)
        print(f"TV: convergence at weight {tv.best['weight']:.4g}", flush=True)
        best_ratio, record = convergence(setup, val_data[0], tv.best["weight"],
                                         tv.best["nonneg"], args.tv_iter, (1.0, 10.0, 100.0,
                                                                           1000.0))
        print(f"  relative objective gap after {args.tv_iter} iterations by tau/sigma: "
              f"{record['relative_gap']}")
        # The weight stands if the ratio searched with had converged.
        if record["relative_gap"][str(ratio)] < 1e-4:
            break
        ratio = best_ratio

    print("Tikhonov: golden section on the weight")
    scale = projector(setup.ray_trafo if poisson else setup.operator).norm() ** 2
    tik = classical.golden_section_search(
        functools.partial(classical.TikhonovReconstructor, setup), "weight", 1e-6 * scale,
        10.0 * scale, fixed={"n_iter": 100}, n_eval=args.n_eval, **search_args)

    fbp_params = ({} if fbp is None else
                  {"fbp_filter": fbp.best["filter_type"],
                   "fbp_frequency_scaling": fbp.best["frequency_scaling"]})
    params = classical.ClassicalParams(
        setup=args.setup, **fbp_params, tv_weight=tv.best["weight"],
        tv_n_iter=args.tv_iter, tv_nonneg=tv.best["nonneg"], tv_step_ratio=ratio,
        tikhonov_weight=tik.best["weight"], tikhonov_n_iter=100)
    print(params)

    results = [evaluation.evaluate(r, test_data, test_truth, data_range=args.data_range,
                                   repeats=3) for r in params.reconstructors(setup).values()]
    header = f"{'method':10s} {'PSNR':>7s} {'SSIM':>6s} {'ms':>9s}  settings"
    print(f"test images ({len(test_truth)}), data range {args.data_range}:\n{header}")
    for r in results:
        print(f"{r.method:10s} {r.psnr_mean:7.2f} {r.ssim_mean:6.3f} {r.runtime_ms:9.1f}  "
              f"{r.params}")
    search = {"command": command, "tuned_on": source, "n_images": len(val_truth),
              "seed": args.seed, "data_range": args.data_range, "criterion": "mean PSNR",
              "fbp": None if fbp is None else fbp.to_dict(), "tv": tv.to_dict(),
              "tv_convergence": record,
              "tikhonov": tik.to_dict(),
              "test": [dataclasses.asdict(r.row()) | {"psnr_per_image": list(r.psnr)}
                       for r in results]}
    print("wrote", classical.save_params(params, out, search, overwrite=args.overwrite))
    if args.table:
        print("wrote", *evaluation.write_results(results, args.table, overwrite=args.overwrite,
                                                 title=f"Classical methods, {args.setup}"))


if __name__ == "__main__":
    main()
