"""Noise robustness: methods tuned or trained at one noise level, tested across levels.

``lpd reproduce noise`` (`run`), the last experiment of the lecture in
``../shared/seeds/002_*``: on the ellipse set-up, the held-out phantoms are
simulated at every test level of relative Gaussian noise (`LEVELS`: 1, 2.5, 5,
10 and 20 %) and reconstructed by

- FBP with its filter tuned at 5 % (fixed: an analytical method has no level);
- TV with its weight re-tuned at every level on validation phantoms of that level
  (what a careful user of a variational method does);
- the shipped learned models (trained at 5 %), used as they are;
- plug-and-play, whose coupling scales with the data's noise variance
  (``strength * (level / 5 %)^2``: the level is a parameter of the scheme, the
  denoiser is not retrained);
- models retrained at other levels where they exist
  (``data/weights/ellipses_noise<percent>/<method>``, one curve per training level).

It writes ``results.csv`` (one row per method, training level and test level),
``results.md`` (PSNR by test level), ``noise.png`` (PSNR against the test level,
one curve per method and training level) and ``run.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lpd.data import pipelines as datasets
from lpd.evaluation import figures, reproduce
from lpd.evaluation import scoring as evaluation
from lpd.io import atomic_write
from lpd.methods import classical, registry
from lpd.physics import operators
from lpd.physics.noise import GaussianNoise

__all__ = ["LEVELS", "PRESETS", "run"]

LEVELS = (0.01, 0.025, 0.05, 0.10, 0.20)
"""Test levels of relative Gaussian noise (of the mean absolute data)."""

TRAINED_AT = 0.05
"""The level of the experiment, at which the shipped models were trained and FBP tuned."""

PRESETS: dict[str, dict[str, Any]] = {
    "default": {"setup": "ellipses", "levels": LEVELS, "n": 32, "seed": 2019, "n_val": 4,
                "val_seed": 1, "methods": ("fbp", "tv", "pnp", "unet", "lpd")},
    "quick": {"setup": "ellipses", "levels": (0.01, 0.2), "n": 2, "seed": 2019,
              "n_val": 1, "val_seed": 1, "methods": ("fbp", "tv")},
}

_OUTPUTS = ("results.csv", "results.md", "noise.png", "run.json")
_COLUMNS = ("level", "trained_at", *evaluation.COLUMNS)


def _retrained(key: str, root: Path) -> dict[float, Path]:
    """Models of ``key`` retrained at other levels: ``{level: directory}``."""
    found = {}
    for directory in sorted(root.glob(f"ellipses_noise*/{key}")):
        text = directory.parent.name.removeprefix("ellipses_noise")
        try:
            found[float(text) / 100] = directory
        except ValueError:
            continue
    return found


def _methods(key: str, setup, level: float, val, params: classical.ClassicalParams,
             log: Callable[[str], Any]) -> list[tuple[float | None, Any, str]]:
    """``(training level, reconstructor, note)`` of one method at one test level."""
    if key == "fbp":
        return [(TRAINED_AT, params.reconstructors(setup)["fbp"], "tuned at 5 %")]
    if key == "tv":
        search = classical.golden_section_search(
            functools.partial(classical.TVReconstructor, setup), "weight", 1e-5, 1e-1,
            val[0], val[1], fixed={"n_iter": params.tv_n_iter, "nonneg": params.tv_nonneg,
                                   "step_ratio": params.tv_step_ratio}, n_eval=8)
        log(f"  TV re-tuned at {100 * level:g} %: weight {search.best['weight']:.3g}")
        return [(level, classical.TVReconstructor(setup, **search.best),
                 "re-tuned at the test level")]
    if key == "pnp":
        from lpd.methods import pnp

        method = pnp.load_pnp(setup)
        method.strength *= (level / TRAINED_AT) ** 2
        return [(level, method, "the level as a parameter; denoiser not retrained")]
    method = registry.get(key)
    if not method.learned:
        return [(None, reproduce._untuned(key, setup, log), "")]
    from lpd import training

    root = training.default_weights_dir()
    # Evaluated in float32 wherever the weights were trained: the same numbers on every CPU.
    shipped = training.load_pretrained(f"ellipses/{key}", root, precision="float32")
    out = [(TRAINED_AT, reproduce._network(shipped, key), "shipped, trained at 5 %")]
    for trained, directory in _retrained(key, root).items():
        model = training.load_pretrained(f"{directory.parent.name}/{key}", root,
                                         precision="float32")
        out.append((trained, reproduce._network(model, key),
                    f"retrained at {100 * trained:g} %"))
    return out


def run(preset: str = "default", out: str | os.PathLike | None = None, *,
        methods: Sequence[str] | None = None, force: bool = False,
        log: Callable[[str], Any] | None = None, command: str | None = None) -> list[dict]:
    """Test every method across noise levels; see the module docstring for what is written."""
    settings, keys, out, log = reproduce.begin_run("noise", PRESETS, preset, methods, out,
                                                   force, _OUTPUTS, log)
    command = command or f"lpd.evaluation.noise.run({preset!r})"
    started = time.perf_counter()
    setup = operators.get_setup(settings["setup"])
    params = classical.load_params(setup.config.name)
    shape = tuple(setup.space.shape)
    out.mkdir(parents=True, exist_ok=True)
    log(f"lpd reproduce noise (preset {preset!r}): {', '.join(keys)} at "
        f"{', '.join(f'{100 * v:g} %' for v in settings['levels'])}; writing to {out}")
    rows = []
    for level in settings["levels"]:
        noise = GaussianNoise(level)
        phantoms = datasets.RandomPhantoms("ellipses", shape)
        held = datasets.fixed_set(setup, phantoms, settings["n"], settings["seed"], noise=noise)
        val = datasets.fixed_set(setup, phantoms, settings["n_val"], settings["val_seed"],
                                 noise=noise)
        log(f"test level {100 * level:g} %: {settings['n']} held-out phantoms")
        for key in keys:
            for trained, method, note in _methods(key, setup, level, val, params, log):
                name = registry.get(key).name
                result = evaluation.evaluate(method, *held, name=name, timed=False)
                row = result.row(method=key, name=name, training=note)
                rows.append({"level": level, "trained_at": trained, **dataclasses.asdict(row)})
                log(f"  {name} ({note}): {row.psnr:.2f} ± {row.psnr_std:.2f} dB")
    meta = {"experiment": "noise", "preset": preset, "setup": setup.config.name,
            "levels": list(settings["levels"]), "methods": list(keys),
            "held_out": f"{settings['n']} random ellipse phantoms (seed {settings['seed']})",
            "command": command, "wall_seconds": time.perf_counter() - started}
    written = _write(out, rows, meta)
    log(f"done in {meta['wall_seconds']:.0f} s; wrote " + ", ".join(map(str, written)))
    return rows


def _curves(rows: list[dict]) -> dict[str, dict[float, float]]:
    curves: dict[str, dict[float, float]] = {}
    for row in rows:
        label = row["name"] + (f" ({row['training']})" if row["training"] else "")
        curves.setdefault(label, {})[row["level"]] = row["psnr"]
    return curves


def _markdown(rows: list[dict], meta: dict) -> str:
    levels = meta["levels"]
    lines = ["# Noise robustness: ellipses, methods tested across relative Gaussian noise",
             "", f"Set-up `{meta['setup']}`, {meta['held_out']} at each level; mean PSNR "
             "(dB, data range 1).", ""]
    header = ["method", *(f"{100 * v:g} %" for v in levels)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, curve in _curves(rows).items():
        lines.append("| " + " | ".join([label, *(f"{curve[v]:.2f}" if v in curve else ""
                                                 for v in levels)]) + " |")
    lines += ["", f"Written by `{meta['command']}` in {meta['wall_seconds']:.0f} s.", ""]
    return "\n".join(lines)


def _write(out: Path, rows: list[dict], meta: dict) -> list[Path]:
    def write(stage: Path) -> None:
        atomic_write(stage / "results.csv", evaluation.csv_text(rows, _COLUMNS))
        atomic_write(stage / "results.md", _markdown(rows, meta))
        figures.curves_figure(_curves(rows), stage / "noise.png",
                              xlabel="relative noise of the test data (%)", ylabel="PSNR (dB)",
                              x_scale=100.0, marker=100 * TRAINED_AT,
                              title="noise robustness (ellipses): trained or tuned at 5 % "
                                    "unless the legend says otherwise")
        atomic_write(stage / "run.json", json.dumps(
            {**meta, "versions": reproduce._versions(), "rows": rows}, indent=2,
            default=str) + "\n")

    return reproduce.write_staged(out, _OUTPUTS, write)
