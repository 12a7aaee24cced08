"""Reproduce the MRI table of Liu, Kuang & Zhang (2018): sampling patterns x rates x noise.

``lpd reproduce mri`` (`run`): for every cell of the grid (a sampling pattern,
a rate ``1 / k`` and a noise level, each its own set-up of `lpd.config.SETUPS`,
``brain_mri_<pattern><k>_noise<level>``) it simulates the data of the test
slices of the brain MRI (`lpd.data.brain_mri`) and reconstructs them with
every method: zero filling, TV (tuned per cell on the validation slices,
``data/classical/<set-up>.json``) and the splitting scheme with its shipped
networks (``data/weights/<set-up>/admm``), its GAN variant
(``data/weights/<set-up>/admm_gan``), and Learned Primal-Dual trained on the
cell's own operator (``data/weights/<set-up>/lpd``; beside the seed's ADMM-net,
its unrolled baseline). A cell without a learned method's weights has "not
trained" in that method's column. It writes into the output directory

- ``results.csv``: one row per cell and method (the columns of
  `lpd.evaluation.scoring.COLUMNS` after ``setup``, ``pattern``, ``rate`` and
  ``noise``), the seed's figure of the same cell beside ours;
- ``results.md``: the table in the layout of the seed's Table 2;
- ``masks.png`` (the masks of the grid) and ``reconstructions.png`` (one test
  slice per cell and method, with error maps);
- ``run.json``: what ran, with which versions, and how long it took.

The grid and its presets are data (`MRI`): ``default`` runs rate 1/4 of each
pattern at both noise levels, ``full`` the seed's whole grid, ``quick`` the
default cells on three test slices. In ``full`` a cell without networks of its
own runs those of its pattern and noise level at rate 1/4 (with its own tuned
TV weight; `lpd.methods.splitting.load_splitting` with ``trained_on``), and the
table marks those cells.

References
----------
Liu J, Kuang T, Zhang X. Image reconstruction by splitting deep learning
regularization from iterative inversion. MICCAI 2018, Table 2 (PSNR/SSIM on
21 ADNI test slices of 192 x 160).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lpd.config import MRI_NOISE, MRI_PATTERNS, MRI_RATES, mri_setup_name
from lpd.data import brain_mri
from lpd.data import pipelines as datasets
from lpd.evaluation import figures, reproduce
from lpd.evaluation import scoring as evaluation
from lpd.io import atomic_write
from lpd.methods import classical, registry, splitting
from lpd.physics import operators

__all__ = ["Cell", "MRI", "SEED_TABLE", "cells", "run"]

PATTERN_NAMES = {"radial": "radial", "random": "2D random", "lines": "1D random"}
"""The seed's names of the sampling patterns."""


@dataclasses.dataclass(frozen=True)
class Cell:
    """One cell of the grid: a sampling pattern, a rate ``1 / rate`` and a noise level (%)."""

    pattern: str
    rate: int
    noise: int

    @property
    def setup(self) -> str:
        return mri_setup_name(self.pattern, self.rate, self.noise)

    @property
    def label(self) -> str:
        return f"{PATTERN_NAMES[self.pattern]}, 1/{self.rate}, {self.noise} % noise"


# The seed's Table 2: (PSNR, SSIM) per cell and method. Its columns are ZF, TV,
# ADMM-net (an unrolled network, the seed's learned baseline), SCAE (the
# splitting scheme with the network that lpd's "admm" uses), SNLAE and GAN.
_COLUMNS = ("zf", "tv", "admm_net", "scae", "snlae", "gan")
_TABLE2 = """
radial 0 5 24.36/0.47 30.73/0.86 32.31/0.92 32.00/0.92 30.47/0.83 30.13/0.84
radial 0 4 25.45/0.51 32.32/0.90 33.67/0.93 33.94/0.94 32.53/0.88 32.26/0.90
radial 0 3 27.25/0.56 34.60/0.94 35.27/0.94 36.37/0.96 35.15/0.92 34.49/0.94
radial 10 5 22.18/0.35 24.69/0.49 25.44/0.59 25.52/0.73 25.98/0.68 25.02/0.73
radial 10 4 22.38/0.36 25.16/0.49 25.96/0.61 26.13/0.70 26.38/0.66 25.53/0.74
radial 10 3 22.37/0.37 25.28/0.49 26.50/0.60 26.64/0.74 26.70/0.65 26.71/0.75
random 0 5 24.91/0.49 31.69/0.89 33.81/0.93 34.24/0.94 31.95/0.86 31.79/0.89
random 0 4 25.30/0.50 32.79/0.90 34.97/0.94 35.61/0.95 32.85/0.86 32.94/0.91
random 0 3 26.32/0.53 34.93/0.93 36.31/0.95 37.71/0.96 35.33/0.91 35.10/0.94
random 10 5 22.37/0.37 24.97/0.51 25.42/0.61 25.90/0.73 25.97/0.67 25.78/0.75
random 10 4 22.38/0.36 24.92/0.49 25.84/0.60 26.06/0.74 26.15/0.67 26.31/0.75
random 10 3 22.37/0.37 24.91/0.47 26.14/0.56 26.38/0.72 26.41/0.62 26.48/0.76
lines 0 5 22.78/0.61 25.22/0.75 28.53/0.85 28.79/0.87 28.73/0.86 27.21/0.81
lines 0 4 23.06/0.62 25.77/0.76 28.99/0.87 29.37/0.88 29.06/0.86 27.47/0.82
lines 0 3 23.86/0.65 27.34/0.81 32.18/0.91 31.25/0.91 30.98/0.89 30.09/0.86
lines 10 5 20.72/0.27 22.38/0.39 22.59/0.40 22.22/0.61 24.52/0.60 22.76/0.67
lines 10 4 20.37/0.26 22.25/0.37 22.98/0.44 22.72/0.63 24.39/0.56 23.32/0.69
lines 10 3 20.37/0.28 22.59/0.37 23.96/0.47 23.75/0.62 24.98/0.58 23.93/0.70
"""


def _parse_table(text: str) -> dict[Cell, dict[str, tuple[float, float]]]:
    table = {}
    for line in text.strip().splitlines():
        pattern, noise, rate, *values = line.split()
        table[Cell(pattern, int(rate), int(noise))] = {
            column: tuple(float(v) for v in value.split("/"))
            for column, value in zip(_COLUMNS, values, strict=True)}
    return table


SEED_TABLE = _parse_table(_TABLE2)
"""The seed's Table 2 by cell: ``{column: (PSNR, SSIM)}`` for ZF, TV, ADMM-net, SCAE, SNLAE, GAN."""

# The seed's column each method of lpd stands beside.
SEED_COLUMN = {"zf": "zf", "tv": "tv", "admm": "scae", "admm_gan": "gan", "lpd": "admm_net"}
_SEED_NAMES = {"zf": "ZF", "tv": "TV", "admm_net": "ADMM-net, the seed's unrolled network",
               "scae": "SCAE", "snlae": "SNLAE", "gan": "GAN"}

_SOURCE = ("Liu, Kuang & Zhang, MICCAI 2018, Table 2 (21 ADNI slices of 192 x 160; ours are 21 "
           "Colin27 slices, one averaged subject: compare orders and gaps, not values)")


@dataclasses.dataclass(frozen=True)
class MRIExperiment:
    """The MRI table: its presets (cells, methods, test slices, seed of the noise)."""

    name: str
    title: str
    presets: dict[str, dict[str, Any]]


_DEFAULT_CELLS = tuple(Cell(p, 4, n) for p in MRI_PATTERNS for n in MRI_NOISE)
_FULL_CELLS = tuple(Cell(p, r, n) for p in MRI_PATTERNS for n in MRI_NOISE for r in MRI_RATES)
# LPD, trained on a cell's own operator, stands where the seed has ADMM-net (its
# unrolled baseline); a cell without its weights says "not trained". ADMM + GAN
# (admm_gan) joins the default once its networks ship for a cell; until then
# `--methods zf,tv,admm,admm_gan` runs it where it is trained.
_METHODS = ("zf", "tv", "admm", "lpd")
# The whole grid: the seed's methods (LPD is trained for few cells; `--methods` adds it).
_FULL_METHODS = ("zf", "tv", "admm")

MRI = MRIExperiment(
    name="mri",
    title="MRI: brain slices, unitary Fourier transform on a sampling mask, complex noise",
    presets={
        "default": {"cells": _DEFAULT_CELLS, "methods": _METHODS, "n_test": None,
                    "seed": 2018, "timing": {"repeats": 1, "warmup": 0}},
        # A cell without networks of its own runs those of its pattern and noise
        # level at rate 1/4 (the default's cells), marked in the table.
        "full": {"cells": _FULL_CELLS, "methods": _FULL_METHODS, "n_test": None, "seed": 2018,
                 "timing": {"repeats": 1, "warmup": 0}, "networks_from_rate": 4},
        "quick": {"cells": _DEFAULT_CELLS, "methods": _METHODS, "n_test": 3, "seed": 2018,
                  "timing": {"repeats": 1, "warmup": 0}},
    },
)

# The test slice shown in reconstructions.png (through the ventricles).
_SHOWN = "colin27:z=82"

# The methods of the splitting scheme, by key: their network ("scae" or "gan").
_SPLITTING = {key: network for network, (key, _) in splitting.NETWORKS.items()}

_OUTPUTS = ("results.csv", "results.md", "masks.png", "reconstructions.png", "run.json")
_COLUMNS_CSV = ("setup", "pattern", "rate", "noise", *evaluation.COLUMNS)


def cells(preset: str) -> tuple[Cell, ...]:
    """The cells of a preset of `MRI`."""
    if preset not in MRI.presets:
        raise ValueError(f"unknown preset {preset!r} for 'mri'; choose one of "
                         f"{list(MRI.presets)}")
    return MRI.presets[preset]["cells"]


def _methods(methods: Sequence[str] | None, preset: dict) -> tuple[str, ...]:
    if methods is None:
        return tuple(preset["methods"])
    unknown = [m for m in methods if m not in registry.METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(registry.METHODS)}")
    wrong = [m for m in methods if not registry.get(m).applies_to("mri")]
    if wrong:
        raise ValueError(f"{', '.join(wrong)} do(es) not apply to MRI")
    if not methods:
        raise ValueError("no methods selected")
    return tuple(m for m in registry.METHODS if m in methods)


def _reconstructor(key: str, setup, tuned: dict, log: Callable[[str], Any],
                   trained_on: str | None = None):
    if key in tuned:
        return tuned[key]
    method = registry.get(key)
    if trained_on is not None:
        return splitting.load_splitting(setup, network=_SPLITTING[key], trained_on=trained_on,
                                        log=log)
    if method.learned:
        from lpd.training import weights

        # Missing weights raise WeightsMissing, a FileNotFoundError: "not trained".
        model = weights.load_pretrained(f"{setup.config.name}/{key}", precision="float32")
        return reproduce._network(model, key)
    return reproduce._untuned(key, setup, log)


def _networks_from(cell: Cell, key: str, settings: dict) -> str | None:
    """The set-up whose networks a splitting method runs in ``cell``: None for its own."""
    rate = settings.get("networks_from_rate")
    if key not in _SPLITTING or rate is None or cell.rate == rate:
        return None
    if (splitting.weights_dir(cell.setup, network=_SPLITTING[key]) / "splitting.json").exists():
        return None
    return Cell(cell.pattern, rate, cell.noise).setup


def run(preset: str = "default", out: str | os.PathLike | None = None, *,
        methods: Sequence[str] | None = None, force: bool = False,
        log: Callable[[str], Any] | None = None, command: str | None = None) -> list[dict]:
    """Reproduce the MRI table; see the module docstring for what is written.

    Returns
    -------
    list of dict
        One row per cell and method (the columns of ``results.csv``).

    Raises
    ------
    ValueError
        For an unknown preset or method, or a method that does not apply to MRI.
    FileExistsError
        If ``out`` holds earlier results and ``force`` is not set.
    FileNotFoundError
        If a cell has no tuned TV weight or no trained networks (the message says how
        to make them).
    """
    if log is None:
        def log(line):
            print(line, flush=True)
    started = time.perf_counter()
    grid = cells(preset)
    settings = MRI.presets[preset]
    keys = _methods(methods, settings)
    out = Path(out) if out is not None else Path("results") / f"mri-{preset}"
    reproduce._check_out(out, force, _OUTPUTS)
    command = command or f"lpd.evaluation.mri.run({preset!r})"
    out.mkdir(parents=True, exist_ok=True)
    log(f"lpd reproduce mri (preset {preset!r}): {len(grid)} cells, methods {', '.join(keys)}; "
        f"writing to {out}")

    rows: list[dict] = []
    shown: list[tuple[str, np.ndarray, dict, dict]] = []
    missing: dict[str, list[str]] = {}
    borrowed: dict[str, dict[str, str]] = {}
    for cell in grid:
        setup = operators.get_setup(cell.setup)
        slices = brain_mri.brain_mri_slices(setup, "test")
        if settings["n_test"] is not None:
            pick = np.linspace(0, len(slices) - 1, settings["n_test"]).round().astype(int)
            slices = slices.subset(pick)
        data, truth = datasets.fixed_set(setup, slices, seed=settings["seed"])
        index = slices.labels.index(_SHOWN) if _SHOWN in slices.labels else len(slices) // 2
        tuned = classical.load_params(setup.config.name).reconstructors(setup)
        log(f"{cell.label} ({cell.setup}): {len(truth)} test slices, "
            f"{100 * setup.geometry.mean():.1f} % of k-space measured")
        images, captions = {}, {}
        for key in keys:
            name = registry.get(key).name
            source = _networks_from(cell, key, settings)
            try:
                method = _reconstructor(key, setup, tuned, log, source)
            except FileNotFoundError as err:
                # A cell whose networks are not trained yet: its row says so.
                log(f"  {name}: left out of this cell: {err}")
                missing.setdefault(cell.setup, []).append(key)
                continue
            t0 = time.perf_counter()
            result = evaluation.evaluate(method, data, truth, name=name,
                                         repeats=settings["timing"]["repeats"],
                                         warmup=settings["timing"]["warmup"], keep_images=True)
            row = result.row(method=key, name=name, training=getattr(method, "training", ""))
            seed = SEED_TABLE.get(cell, {}).get(SEED_COLUMN.get(key, ""))
            if seed is not None:
                row.paper_psnr, row.paper_ssim = seed
            rows.append({"setup": cell.setup, "pattern": cell.pattern, "rate": f"1/{cell.rate}",
                         "noise": cell.noise, **dataclasses.asdict(row)})
            if source is not None:
                borrowed.setdefault(cell.setup, {})[key] = source
            images[name] = result.images[index]
            captions[name] = f"{result.psnr[index]:.2f} dB / {result.ssim[index]:.3f}"
            seed_text = "" if seed is None else f" (seed {seed[0]:.2f} / {seed[1]:.2f})"
            log(f"  {name}: {row.psnr:.2f} ± {row.psnr_std:.2f} dB, SSIM {row.ssim:.3f}"
                f"{seed_text}; {time.perf_counter() - t0:.0f} s")
        shown.append((cell.label, truth[index], images, captions))

    wall = time.perf_counter() - started
    meta = {"experiment": "mri", "preset": preset, "cells": [c.setup for c in grid],
            "methods": list(keys), "test": f"{len(truth)} test slices of the brain MRI "
            f"({', '.join(slices.labels[:3])}, ...)", "shown": _SHOWN, "data_range": 1.0,
            "command": command, "wall_seconds": wall, "not_trained": missing,
            "networks_from": borrowed, "networks_from_rate": settings.get("networks_from_rate")}
    written = _write(out, rows, meta, grid, shown, keys)
    log(f"done in {wall:.0f} s; wrote " + ", ".join(str(p) for p in written))
    return rows


def _markdown(rows: list[dict], meta: dict, keys: Sequence[str]) -> str:
    names = {k: registry.get(k).name for k in keys}
    by_cell: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_cell.setdefault(row["setup"], {})[row["method"]] = row
    lines = [f"# {MRI.title}", "",
             f"Preset `{meta['preset']}`; {meta['test']}; PSNR (dB) / SSIM at data range 1, "
             "mean over the slices. In parentheses the seed's figure for the same cell ("
             + "; ".join(f"{names[k]}: {_SEED_NAMES[SEED_COLUMN[k]]}" for k in keys
                         if k in SEED_COLUMN)
             + f"). {_SOURCE}.", ""]
    header = ["pattern", "noise", "rate", *(names[k] for k in keys)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for methods in by_cell.values():
        first = next(iter(methods.values()))
        cells_text = []
        for key in keys:
            row = methods.get(key)
            if row is None:
                cells_text.append("not trained")
                continue
            text = f"{row['psnr']:.2f} / {row['ssim']:.3f}"
            if key in meta.get("networks_from", {}).get(row["setup"], {}):
                text += " †"
            if row["paper_psnr"] is not None:
                text += f" ({row['paper_psnr']:.2f} / {row['paper_ssim']:.2f})"
            cells_text.append(text)
        lines.append("| " + " | ".join([PATTERN_NAMES[first["pattern"]], f"{first['noise']} %",
                                         first["rate"], *cells_text]) + " |")
    untrained = {key for keys_ in meta["not_trained"].values() for key in keys_}
    if untrained:
        how = []
        if untrained & set(_SPLITTING):
            how.append("`python tools/train_splitting.py --setup <set-up>` trains those of the "
                       "splitting scheme (with `--network gan` those of ADMM + GAN)")
        for key in sorted(untrained - set(_SPLITTING)):
            how.append(f"`lpd train --setup <set-up> --method {key} --images brain_mri` "
                       f"trains {names[key]}")
        lines += ["", "\"not trained\": no shipped networks for that cell yet; "
                  + "; ".join(how) + "."]
    if meta.get("networks_from"):
        lines += ["", f"† with the networks trained at rate 1/{meta['networks_from_rate']} "
                  "of the same "
                  "pattern and noise level (this cell has none of its own): the regulariser is "
                  "learned apart from the inversion, so it may serve another mask; its first "
                  "loop takes this cell's tuned TV weight. The seed trains every cell's own."]
    lines += ["", f"Written by `{meta['command']}` in {meta['wall_seconds']:.0f} s.", ""]
    return "\n".join(lines)


def _write(out: Path, rows: list[dict], meta: dict, grid: Sequence[Cell], shown: list,
           keys: Sequence[str]) -> list[Path]:
    def write(stage: Path) -> None:
        atomic_write(stage / "results.csv", evaluation.csv_text(rows, _COLUMNS_CSV))
        atomic_write(stage / "results.md", _markdown(rows, meta, keys))
        masks = {}
        for cell in grid:
            if (cell.pattern, cell.rate) not in masks:
                masks[cell.pattern, cell.rate] = operators.get_setup(cell.setup).geometry
        figures.mask_figure(masks, stage / "masks.png",
                            names={p: PATTERN_NAMES[p] for p in MRI_PATTERNS})
        figures.grid_figure(shown, stage / "reconstructions.png",
                            title=f"{MRI.title}\ntest slice {meta['shown']}")
        atomic_write(stage / "run.json", json.dumps(
            {**meta, "versions": reproduce._versions(), "rows": rows}, indent=2,
            default=str) + "\n")

    return reproduce.write_staged(out, _OUTPUTS, write)
