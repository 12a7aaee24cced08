"""The limit: the conditional mean ``E[x | y]`` by MCMC, and how far each method is from it.

``lpd reproduce limit`` (`run`), after Adler & Öktem's "Deep learning for inverse
problems: where are we? how far can we go?" (``../shared/seeds/004_*``). On the
ellipse set-up the conditional mean is the estimator of least expected squared
error, so every method's error is measured against it:

    normalised error = E ||A(y) - x||^2 / E ||E[x | y] - x||^2

(the seed: FBP 372, TV 56.0, learned post-processing 42.2, learned iterative
5.2, the conditional mean 1). For each image (the Shepp-Logan test case and the
first held-out phantoms of `lpd reproduce ellipses`) the posterior of
`lpd.methods.posterior` is sampled by several reversible-jump chains, each
started from `greedy_start` with its own seed (a start from the data alone) and
guided by the FBP; the default preset's greedy search fits the LPD reconstruction of
the same data first, in the image domain (a start from the data alone: LPD sees
nothing else). The ellipses whose edges that reconstruction shows
(`lpd.methods.candidates.detect_ellipses`; the FBP's where a preset names no
target) are tried by the greedy search and drawn by a share of the chains'
births: the large overlapping ellipses that prior draws never hit. Their pooled
mean is ``E[x | y]``, their pooled standard deviation the posterior's. The
chains' agreement (split R-hat of the log-likelihood and of every pixel) is
reported beside the numbers: where the chains disagree the mean is not yet the
conditional mean, and the table says so.

On each held-out image ``planted`` more chains start at the phantom's own
ellipses: given its data, a phantom of the prior is a draw from the posterior,
so they are in equilibrium from their first step. The chains from the greedy
starts are checked against them (the gap between their log-likelihoods, the
R-hat over all the chains), and half their mean squared distance from the
phantom bounds the conditional mean's error from below
(`posterior.start_distance`), where the greedy chains' mean, an estimator,
bounds it from above: the table gives each normalised error between the two.

It writes ``results.csv`` (one row per method), ``results.md`` (the table, the
seed's figures, the sampler's diagnostics), ``limit.png`` (ground truth, the
conditional mean and each method with its error map, per shown image),
``posterior.png`` (ground truth, conditional mean, posterior standard deviation
and error), ``bracket.png`` (per held-out image, the interval in which the
conditional mean's PSNR lies, and each method's) and ``run.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lpd import metrics
from lpd.data import phantoms
from lpd.data import pipelines as datasets
from lpd.evaluation import figures, reproduce
from lpd.evaluation import scoring as evaluation
from lpd.io import atomic_write
from lpd.methods import candidates, classical, posterior, registry
from lpd.physics import operators

__all__ = ["PRESETS", "SEED_RATIOS", "IMPLIED_SHEPP_LOGAN_PSNR", "run"]

SEED_RATIOS = {"fbp": 372.0, "tv": 56.0, "unet": 42.2, "lpd": 5.2}
"""The seed's normalised errors: FBP, TV, learned post-processing (here FBP + U-Net) and
learned iterative (here LPD), on this set-up (Adler & Öktem, seed 004)."""

IMPLIED_SHEPP_LOGAN_PSNR = 45.4
"""The conditional mean's PSNR on Shepp-Logan (dB) that makes the seed's ratios agree with
the LPD paper's Shepp-Logan PSNRs (FBP 19.75, TV 28.06, FBP + U-Net 29.20, LPD 38.28)."""

# Half the births, deaths and updates are joint (the neighbours' values redrawn with the
# changed ellipse's): at equal proposals they reach higher log-likelihoods than one-ellipse
# moves, at about three times the time (docs/limit.md, "Joint moves").
_CHAINS = {"n_chains": 2, "n_steps": 600_000, "burn_in": 300_000, "thin": 20,
           "library_births": 0.3, "joint": 0.5}
_DEFAULT = {"setup": "ellipses", "n": 20, "seed": 2018, "test_seed": 2017,
            "methods": ("fbp", "tv", "unet", "lgd", "lp", "lpd"), "chains": _CHAINS,
            "greedy": {"candidates": 200, "refine": 300}, "weights": "ellipses",
            "target": "lpd", "detect": {}, "planted": 2}
PRESETS: dict[str, dict[str, Any]] = {
    "default": _DEFAULT,
    # The default's settings on 3 held-out images: a first look at the table in ~45 min.
    "pilot": {**_DEFAULT, "n": 3},
    # The pilot's images with chains four times as long: what longer chains give (~3 h).
    "long": {**_DEFAULT, "n": 3, "chains": {**_CHAINS, "n_steps": 2_400_000,
                                             "burn_in": 1_200_000, "thin": 80}},
    # The pilot with one-ellipse moves only (the default until joint moves replaced it):
    # what joint moves add (~25 min).
    "plain": {**_DEFAULT, "n": 3, "chains": {**_CHAINS, "joint": 0.0}},
    "quick": {"setup": "ellipses_small", "n": 2, "seed": 2018, "test_seed": 2017,
              "methods": ("fbp",), "weights": None,
              "chains": {"n_chains": 2, "n_steps": 3000, "burn_in": 1000, "thin": 5,
                         "library_births": 0.3},
              "greedy": {"candidates": 30, "refine": 30}, "target": None, "detect": {},
              "planted": 2},
}

_OUTPUTS = ("results.csv", "results.md", "limit.png", "posterior.png", "bracket.png",
            "run.json")
_COLUMNS = ("method", "name", "psnr_held_out", "mse_held_out", "ratio_held_out",
            "ratio_held_out_at_most", "seed_ratio", "psnr_shepp_logan", "ratio_shepp_logan")
_CONVERGED_RHAT = 1.1
_PLANTED_STREAM = 1  # the planted chains' seeds: (seed, image, 1, chain)


def _methods(keys: Sequence[str], setup, weights: str | None, log) -> dict[str, Any]:
    """The reconstructors to compare: tuned classical ones, shipped networks, the rest."""
    try:
        tuned = classical.load_params(setup.config.name).reconstructors(setup)
    except FileNotFoundError:
        tuned = {}
    out = {}
    for key in keys:
        method = registry.get(key)
        if key in tuned:
            out[key] = tuned[key]
        elif method.learned:
            if weights is None:
                raise ValueError(f"{key} needs shipped weights; this preset has none")
            model, _, _ = reproduce._shipped(weights, key, log)
            out[key] = reproduce._network(model, key)
        elif key == "fbp":
            out[key] = classical.FBPReconstructor(setup)
        else:
            out[key] = reproduce._untuned(key, setup, log)
    return out


def _images(setup, settings) -> tuple[np.ndarray, np.ndarray, list[str], list]:
    """Data, ground truths and labels: Shepp-Logan, then the held-out phantoms.

    Also each image's ellipses (``None`` for Shepp-Logan, which is no draw from the
    prior): the planted chains start there.
    """
    shape = tuple(setup.space.shape)
    sl_data, sl = datasets.fixed_set(
        setup, datasets.ImageSet.from_array(phantoms.shepp_logan(shape)[None],
                                            name="shepp_logan"), seed=settings["test_seed"])
    data, images = datasets.fixed_set(setup, datasets.RandomPhantoms("ellipses", shape),
                                      settings["n"], seed=settings["seed"])
    marks = []
    for i, image in enumerate(images):
        params = phantoms.random_ellipse_params(datasets.fixed_image_rng(settings["seed"], i))
        if not np.array_equal(phantoms.ellipses_to_image(params, shape).astype(image.dtype),
                              image):
            raise RuntimeError(f"held-out phantom {i}: its ellipses, drawn again, do not give "
                               "its image; lpd.data.pipelines.fixed_image_rng no longer "
                               "matches fixed_set")
        marks.append(params)
    labels = ["Shepp-Logan"] + [f"held-out {i}" for i in range(len(images))]
    return (np.concatenate([sl_data, data]), np.concatenate([sl, images]), labels,
            [None, *marks])


def _greedy(post, seed, target, detected, greedy: dict) -> np.ndarray:
    """One chain's start (a process of its own in `posterior.parallel_map`)."""
    return posterior.greedy_start(post, np.random.default_rng(seed), target=target,
                                  detected=detected, **greedy)


def _posterior(setup, data: np.ndarray, guide: np.ndarray, target, settings):
    """The image's posterior and the shapes detected on the target (or the guide)."""
    post = posterior.EllipsePosterior(setup.numpy.matrix, tuple(setup.space.shape), data,
                                      setup.config.noise.relative_std,
                                      posterior.EllipsePrior())
    detect = settings.get("detect")
    detected = (candidates.detect_ellipses(guide if target is None else target, **detect)
                if detect is not None else np.zeros((0, 5)))
    return post, detected


def _sample(post, settings, n_chains: int, seed, guide, starts, detected, jobs, log) -> dict:
    """``n_chains`` chains of the preset's settings from ``starts``."""
    chains = dict(settings["chains"])
    chains.pop("n_chains")
    n_steps = chains.pop("n_steps")
    births = chains.pop("library_births", 0.5)
    library = candidates.EllipseLibrary(detected) if len(detected) else None
    return posterior.sample(post, n_chains, n_steps, **chains, seed=seed, guide=guide,
                            starts=starts, jobs=jobs, log=log, library=library,
                            library_births=births)


def _conditional_mean(shared: Callable[[], tuple], guide: np.ndarray, target, settings,
                      index: int, jobs: int | None, log) -> dict:
    """Chains from greedy starts; ``shared()`` gives the posterior and the detected shapes."""
    t0 = time.perf_counter()
    post, detected = shared()
    n_chains = settings["chains"]["n_chains"]
    starts = posterior.parallel_map(
        _greedy, [(post, [settings["seed"], index, c], target, detected, settings["greedy"])
                  for c in range(n_chains)], jobs)
    greedy_seconds = time.perf_counter() - t0
    result = _sample(post, settings, n_chains, settings["seed"] + index, guide, starts,
                     detected, jobs, log)
    result["greedy_seconds"] = greedy_seconds
    result["start_counts"] = [len(s) for s in starts]
    result["detected"] = len(detected)
    return result


def _planted(shared: Callable[[], tuple], guide: np.ndarray, settings, index: int,
             marks: np.ndarray, jobs: int | None, log) -> dict:
    """Chains started at the phantom's own ellipses: a draw from its posterior.

    They are in equilibrium from their first step, so their log-likelihood is
    what the chains from the greedy starts should reach, and half their mean
    squared distance from the phantom bounds the conditional mean's error from
    below (`posterior.start_distance`).
    """
    post, detected = shared()
    n = int(settings["planted"])
    result = _sample(post, settings, n, [settings["seed"], index, _PLANTED_STREAM], guide,
                     [marks] * n, detected, jobs, log)
    result["distance"] = posterior.start_distance(result, post.image(marks))
    result["greedy_seconds"] = 0.0
    result["start_counts"] = [len(marks)] * n
    result["detected"] = len(detected)
    return result


def _fingerprint(setup, settings: dict, index: int, data: np.ndarray, target) -> str:
    """What an image's conditional mean depends on: settings, data and the starts' target."""
    import hashlib

    from lpd import __version__

    digest = hashlib.sha256(np.ascontiguousarray(data, np.float64).tobytes())
    if target is not None:
        digest.update(np.ascontiguousarray(target, np.float64).tobytes())
    keys = ("setup", "seed", "chains", "greedy", "target", "detect", "weights")
    return json.dumps({"version": __version__, "setup": setup.config.name, "index": index,
                       "settings": {k: settings.get(k) for k in keys},
                       "sha256": digest.hexdigest()}, sort_keys=True, default=str)


def _planted_fingerprint(settings, fingerprint: str, marks: np.ndarray) -> str:
    """The planted chains' fingerprint: the image's, their number and the phantom's ellipses."""
    import hashlib

    digest = hashlib.sha256(np.ascontiguousarray(marks, np.float64).tobytes()).hexdigest()
    return json.dumps({"chains": json.loads(fingerprint), "planted": settings["planted"],
                       "ellipses": digest}, sort_keys=True)


def _db(squared_error: float, pixels: int) -> float:
    """The PSNR (peak 1) of a summed squared error over ``pixels`` pixels."""
    return 10 * math.log10(pixels / squared_error) if squared_error > 0 else math.inf


def _cached_mean(cache: Path, fingerprint: str, compute: Callable[[], dict], log) -> dict:
    """An image's conditional mean from ``cache`` if it was sampled with these settings.

    Otherwise ``compute()`` samples it and it is written there (atomically), so an
    interrupted run resumes at the first image it had not finished. The chains'
    log-likelihood traces are kept with it (``None`` from a cache written before
    they were).
    """
    if cache.exists():
        with np.load(cache, allow_pickle=False) as stored:
            if str(stored["fingerprint"]) == fingerprint:
                log(f"  sampled before, read from {cache}")
                traces = (stored["log_likelihood"] if "log_likelihood" in stored.files
                          else None)
                return {"mean": stored["mean"], "std": stored["std"],
                        "summary": json.loads(str(stored["summary"])), "traces": traces,
                        "cached": True}
        log(f"  {cache} was sampled with other settings or data: sampling anew")
    result = compute()
    traces = np.array([c["log_likelihood"] for c in result["chains"]], np.float64)
    entry = {"mean": result["mean"], "std": result["std"], "summary": _summary(result),
             "traces": traces, "cached": False}
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(cache, lambda f: np.savez(
        f, mean=entry["mean"], std=entry["std"], fingerprint=np.array(fingerprint),
        summary=np.array(json.dumps(entry["summary"])), log_likelihood=traces),
        overwrite=True)
    return entry


def _summary(result: dict) -> dict:
    d = result["diagnostics"]
    summary = {"rhat_log_likelihood": d.get("log_likelihood", {}).get("rhat"),
               "ess_log_likelihood": d.get("log_likelihood", {}).get("ess"),
               "rhat_count": d.get("count", {}).get("rhat"),
               "rhat_pixels_p99": d.get("pixels", {}).get("p99"),
               "rhat_pixels_max": d.get("pixels", {}).get("max"),
               "ellipses": [float(np.mean(c["counts"])) for c in result["chains"]],
               "log_likelihood": [float(np.mean(c["log_likelihood"]))
                                  for c in result["chains"]],
               "start_ellipses": result["start_counts"],
               "detected": result["detected"],
               "seconds": result["seconds"] + result["greedy_seconds"]}
    if "distance" in result:
        summary["distance"] = float(result["distance"])
    return summary


def _planted_check(entry: dict, planted: dict) -> dict:
    """How the chains from the greedy starts compare with the planted ones on one image.

    ``gap``: the greedy chains' mean log-likelihood less the planted chains', in
    units of the planted chains' standard deviation of it (near 0 in
    equilibrium); ``rhat``: the split R-hat of the log-likelihood over all the
    chains (``None`` without the greedy chains' traces, from an older cache).
    """
    theirs = np.asarray(planted["traces"], np.float64)
    spread = float(np.std(theirs)) or 1.0
    ours = entry["traces"]
    if ours is not None and np.size(ours):
        ours = np.asarray(ours, np.float64)
        gap = (float(np.mean(ours)) - float(np.mean(theirs))) / spread
        rhat = float(posterior.split_rhat([*ours, *theirs]))
    else:
        gap = (float(np.mean(entry["summary"].get("log_likelihood") or [np.nan]))
               - float(np.mean(theirs))) / spread
        rhat = None
    return {"gap": gap if np.isfinite(gap) else None, "rhat": rhat,
            "log_likelihood": float(np.mean(theirs)), "spread": spread,
            "ellipses": planted["summary"]["ellipses"],
            "start_ellipses": planted["summary"]["start_ellipses"],
            "bound": planted["summary"]["distance"] / 2,
            "seconds": planted["summary"]["seconds"]}


def _converged(summary: dict) -> bool:
    """The greedy chains agree with each other and, where planted, with the planted chains.

    Against the planted chains: the split R-hat of the log-likelihood over all of
    them, or (without the greedy chains' traces) a mean log-likelihood within one
    standard deviation of the planted chains'.
    """
    values = (summary["rhat_log_likelihood"], summary["rhat_pixels_p99"])
    agree = all(v is not None and v < _CONVERGED_RHAT for v in values)
    planted = summary.get("planted")
    if planted is None:
        return agree
    if planted["rhat"] is not None:
        return agree and planted["rhat"] < _CONVERGED_RHAT
    return agree and planted["gap"] is not None and abs(planted["gap"]) < 1


def run(preset: str = "default", out: str | os.PathLike | None = None, *,
        methods: Sequence[str] | None = None, force: bool = False, jobs: int | None = None,
        log: Callable[[str], Any] | None = None, command: str | None = None) -> list[dict]:
    """Sample the conditional means and score every method against them (module docstring).

    The chains of an image (and their greedy starts) run in up to ``jobs`` processes
    (by default one per chain and core). Each image's conditional mean is kept in
    ``out/images/`` as soon as it is sampled, so that a run stopped part-way and
    started again with the same settings resumes at the first image it had not done.
    """
    settings, keys, out, log = reproduce.begin_run("limit", PRESETS, preset, methods, out,
                                                   force, _OUTPUTS, log)
    command = command or f"lpd.evaluation.limit.run({preset!r})"
    started = time.perf_counter()
    setup = operators.get_setup(settings["setup"])
    if setup.config.noise.kind != "gaussian" or setup.config.modality != "ct":
        raise ValueError(f"the ellipse posterior needs a CT set-up with Gaussian noise, "
                         f"got {setup.config.name!r}")
    recon = _methods(keys, setup, settings.get("weights"), log)
    out.mkdir(parents=True, exist_ok=True)
    data, truth, labels, marks = _images(setup, settings)
    guide_method = recon.get("fbp") or classical.FBPReconstructor(setup)
    chains = settings["chains"]
    log(f"lpd reproduce limit (preset {preset!r}): {len(truth)} images ({labels[0]} and "
        f"{len(truth) - 1} held-out), {chains['n_chains']} chains x {chains['n_steps']} "
        f"proposals each; writing to {out}")
    errors = {key: [] for key in ("cm", *keys)}
    psnrs = {key: [] for key in ("cm", *keys)}
    bounds = []  # the planted chains' bound on the conditional mean's error, per held-out image
    shown, shown_posterior, diagnostics = [], [], []
    for i, (y, x) in enumerate(zip(data, truth, strict=True)):
        log(f"{labels[i]} ({i + 1}/{len(truth)}):")
        target = settings.get("target")
        if target is not None and target not in recon:
            raise ValueError(f"the preset starts its chains from the {target} reconstruction; "
                             f"keep {target!r} among the methods")
        target_image = None if target is None else recon[target](y)
        entry_fingerprint = _fingerprint(setup, settings, i, y, target_image)
        guide = guide_method(y)
        # The posterior and the detected shapes, built once for both kinds of chains.
        shared = functools.cache(functools.partial(_posterior, setup, y, guide, target_image,
                                                   settings))
        entry = _cached_mean(
            out / "images" / f"{i:02d}.npz", entry_fingerprint,
            functools.partial(_conditional_mean, shared, guide, target_image, settings, i,
                              jobs, log), log)
        summary = {"image": labels[i], **entry["summary"], "cached": entry["cached"]}
        if marks[i] is not None and settings.get("planted"):
            planted = _cached_mean(
                out / "images" / f"{i:02d}-planted.npz",
                _planted_fingerprint(settings, entry_fingerprint, marks[i]),
                functools.partial(_planted, shared, guide, settings, i, marks[i], jobs, log),
                log)
            summary["planted"] = _planted_check(entry, planted)
            bounds.append(summary["planted"]["bound"])
            check = summary["planted"]
            log(f"  planted chains (started at the phantom's ellipses): log-likelihood "
                f"{check['log_likelihood']:.1f}, the greedy chains' "
                + ("?" if check["gap"] is None else f"{check['gap']:+.1f}")
                + " standard deviations from it; the conditional mean's PSNR at most "
                  f"{_db(check['bound'], x.size):.2f} dB")
        estimates = {"cm": entry["mean"].astype(np.float32)}
        estimates.update({key: np.asarray(method(y), np.float32)
                          for key, method in recon.items()})
        for key, image in estimates.items():
            errors[key].append(float(np.sum((image - x) ** 2)))
            psnrs[key].append(metrics.psnr(x, image, 1.0))
        diagnostics.append(summary)
        log(f"  conditional mean {psnrs['cm'][-1]:.2f} dB ("
            + ", ".join(f"{registry.get(k).name} {psnrs[k][-1]:.2f}" for k in keys)
            + f"); R-hat of the log-likelihood {summary['rhat_log_likelihood']:.3g}, "
              f"{summary['seconds']:.0f} s")
        if i < 2:
            names = {"Conditional mean": estimates["cm"],
                     **{registry.get(k).name: estimates[k] for k in keys}}
            captions = {n: f"{metrics.psnr(x, img, 1.0):.2f} dB" for n, img in names.items()}
            shown.append((labels[i], x, names, captions))
            shown_posterior.append((labels[i], x, entry["mean"], entry["std"]))
    rows = _rows(keys, errors, psnrs, truth[0].size,
                 bounds if len(bounds) == len(truth) - 1 else None)
    meta = {"experiment": "limit", "preset": preset, "setup": setup.config.name,
            "images": labels, "chains": chains, "greedy": settings["greedy"],
            "target": settings.get("target"),
            "held_out": f"the first {settings['n']} random ellipse phantoms of `lpd reproduce "
                        f"ellipses` (seed {settings['seed']})",
            "diagnostics": diagnostics,
            "converged": all(_converged(d) for d in diagnostics),
            "planted": settings.get("planted") or 0,
            "limit_psnr_held_out_at_most": (
                float(np.mean([_db(b, truth[0].size) for b in bounds]))
                if bounds and len(bounds) == len(truth) - 1 else None),
            "seconds_per_image": float(np.mean([d["seconds"] for d in diagnostics])),
            "pixels": int(truth[0].size),
            "psnr": {key: values for key, values in psnrs.items()},
            "limit_psnr_at_most": [_db(b, truth[0].size) for b in bounds],
            "command": command, "wall_seconds": time.perf_counter() - started}
    written = _write(out, rows, meta, shown, shown_posterior)
    log(f"done in {meta['wall_seconds']:.0f} s; wrote " + ", ".join(map(str, written)))
    return rows


def _rows(keys, errors: dict, psnrs: dict, pixels: int, bounds=None) -> list[dict]:
    """The table: ``errors`` are each image's summed squared errors, Shepp-Logan first.

    ``bounds``: the planted chains' lower bounds on the conditional mean's summed
    squared error, one per held-out image, which bound each normalised error from
    above (``ratio_held_out_at_most``).
    """
    cm = np.asarray(errors["cm"])
    rows = []
    for key in ("cm", *keys):
        err = np.asarray(errors[key])
        name = "Conditional mean (MCMC)" if key == "cm" else registry.get(key).name
        rows.append({
            "method": key, "name": name,
            "psnr_held_out": float(np.mean(psnrs[key][1:])) if len(err) > 1 else None,
            "mse_held_out": float(np.mean(err[1:]) / pixels) if len(err) > 1 else None,
            # E||A(y) - x||^2 / E||E[x|y] - x||^2 over the held-out images, and the same
            # ratio for the one Shepp-Logan image.
            "ratio_held_out": float(err[1:].sum() / cm[1:].sum()) if len(err) > 1 else None,
            "ratio_held_out_at_most": (float(err[1:].sum() / np.sum(bounds))
                                       if bounds is not None and len(err) > 1 else None),
            "seed_ratio": 1.0 if key == "cm" else SEED_RATIOS.get(key),
            "psnr_shepp_logan": float(psnrs[key][0]),
            "ratio_shepp_logan": float(err[0] / cm[0]),
        })
    return rows


def _fmt(value, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _g(value) -> str:
    return "" if value is None else f"{value:.3g}"


def _markdown(rows: list[dict], meta: dict) -> str:
    chains = meta["chains"]
    lines = ["# The limit: each method against the conditional mean", "",
             f"Set-up `{meta['setup']}`; Shepp-Logan and {meta['held_out']}. The conditional "
             f"mean is the pooled mean of {chains['n_chains']} reversible-jump chains per "
             f"image ({chains['n_steps']} proposals each, the first {chains['burn_in']} "
             "discarded"
             + (f"; {chains['joint']:.0%} of the births, deaths and updates joint, redrawing "
                "the values of the changed ellipse's neighbours with its own"
                if chains.get("joint") else "")
             + "), each started from `greedy_start` with its own seed"
             + (f" (fitting the {meta['target']} reconstruction first)" if meta["target"]
                else "") + ". Normalised "
             "error: `E||A(y) - x||^2 / E||E[x|y] - x||^2`; the seed's figures from Adler & "
             "Öktem (seed 004: FBP 372, TV 56.0, learned post-processing 42.2, learned "
             "iterative 5.2).", "",
             "| method | held-out PSNR (dB) | normalised error | at most (planted) | seed "
             "| Shepp-Logan PSNR (dB) | Shepp-Logan normalised error |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {_fmt(r['psnr_held_out'])} | "
                     f"{_fmt(r['ratio_held_out'], 1)} | "
                     f"{_fmt(r.get('ratio_held_out_at_most'), 1)} | "
                     f"{_fmt(r['seed_ratio'], 1)} | "
                     f"{_fmt(r['psnr_shepp_logan'])} | {_fmt(r['ratio_shepp_logan'], 1)} |")
    cm = rows[0]
    lines += ["", f"The conditional mean on Shepp-Logan: {cm['psnr_shepp_logan']:.2f} dB "
                  f"(the seed's ratios imply about {IMPLIED_SHEPP_LOGAN_PSNR} dB).", ""]
    bound = meta.get("limit_psnr_held_out_at_most")
    if bound is not None:
        lpd = next((r for r in rows if r["method"] == "lpd"), None)
        lines += [
            f"**Planted chains.** On each held-out image {meta['planted']} more chains of the "
            "same settings start at the phantom's own ellipses. Given its data a phantom of "
            "the prior is a draw from the posterior, so these chains are in equilibrium "
            "from their first step: half their mean squared distance from the phantom is "
            "at most the conditional mean's expected squared error (`posterior."
            "start_distance`), as the chains' mean, an estimator, is at least it. So the "
            f"conditional mean's held-out PSNR lies between {cm['psnr_held_out']:.2f} dB "
            f"and {bound:.2f} dB, and each normalised error between its two columns"
            + (f" (LPD: {lpd['ratio_held_out']:.1f} to {lpd['ratio_held_out_at_most']:.1f}; "
               "the seed: 5.2)" if lpd is not None else "") + ".", ""]
    planted = " and with the planted chains" if meta.get("planted") else ""
    verdict = ("The chains agree (split R-hat below "
               f"{_CONVERGED_RHAT} for the log-likelihood and the 99th percentile of the "
               f"pixels on every image){planted}." if meta["converged"] else
               "**Not converged**: on some images the chains disagree with each other"
               f"{' or with the planted chains' if planted else ''} (split R-hat of the "
               f"log-likelihood or of the pixels at or above {_CONVERGED_RHAT}), so their "
               "mean is not yet the conditional mean and the ratios above are not the "
               "limit's.")
    lines += [verdict, "", "| image | R-hat log-likelihood | ESS log-likelihood | R-hat "
              "count | R-hat pixels (p99 / max) | detected | ellipses (start; mean per chain) "
              "| planted: log-likelihood gap (std) / R-hat with them / ellipses "
              "| limit at most (dB) | s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for d in meta["diagnostics"]:
        planted = d.get("planted")
        lines.append(
            f"| {d['image']} | {_g(d['rhat_log_likelihood'])} | "
            f"{_fmt(d['ess_log_likelihood'], 0)} | {_g(d['rhat_count'])} | "
            f"{_g(d['rhat_pixels_p99'])} / {_g(d['rhat_pixels_max'])} | "
            f"{d.get('detected', '')} | {', '.join(map(str, d['start_ellipses']))}; "
            f"{', '.join(f'{c:.0f}' for c in d['ellipses'])} | "
            + ("" if planted is None else
               f"{_fmt(planted['gap'], 1) or '–'} / {_g(planted['rhat']) or '–'} / "
               + ", ".join(f"{c:.0f}" for c in planted["ellipses"]))
            + " | " + ("" if planted is None else
                       _fmt(_db(planted["bound"], meta["pixels"])))
            + f" | {d['seconds']:.0f}"
            + ("" if planted is None else f" + {planted['seconds']:.0f}") + " |")
    cached = sum(bool(d.get("cached")) for d in meta["diagnostics"])
    planted_seconds = [d["planted"]["seconds"] for d in meta["diagnostics"] if "planted" in d]
    lines += ["", f"{meta['seconds_per_image']:.0f} s per image (greedy starts and chains)"
              + (f", and {np.mean(planted_seconds):.0f} s per held-out image for the planted "
                 "chains" if planted_seconds else "") + ". "
              f"Written by `{meta['command']}` in {meta['wall_seconds']:.0f} s"
              + (f" ({cached} of the {len(meta['diagnostics'])} images sampled by an earlier "
                 "run with the same settings, read from `images/`)." if cached else "."), ""]
    return "\n".join(lines)


def _write(out: Path, rows: list[dict], meta: dict, shown: list, shown_posterior: list
           ) -> list[Path]:
    def write(stage: Path) -> None:
        atomic_write(stage / "results.csv", evaluation.csv_text(rows, _COLUMNS))
        atomic_write(stage / "results.md", _markdown(rows, meta))
        figures.grid_figure(shown, stage / "limit.png",
                            title="the conditional mean (MCMC) and each method, with errors")
        figures.posterior_figure(shown_posterior, stage / "posterior.png")
        held_out = meta["images"][1:]
        high = meta["limit_psnr_at_most"]
        figures.bracket_figure(
            held_out, meta["psnr"]["cm"][1:], high if len(high) == len(held_out) else None,
            {registry.get(k).name: v[1:] for k, v in meta["psnr"].items() if k != "cm"},
            stage / "bracket.png",
            title="held-out phantoms: where the conditional mean's PSNR lies, and each method")
        atomic_write(stage / "run.json", json.dumps(
            {**meta, "versions": reproduce._versions(), "rows": rows}, indent=2,
            default=_json) + "\n")

    return reproduce.write_staged(out, _OUTPUTS, write)


def _json(value):
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return str(value)
