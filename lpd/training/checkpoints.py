"""Weights and optimiser state on disk: arrays, checkpoints of a run, saved configurations.

A checkpoint directory holds ``model.npz`` and ``optimizer.npz`` (variables by
path), ``state.json`` (step, best score, data-stream position, precision) and
``config.json``; `Checkpoints` writes them atomically, keeps the best and the
latest few, and finds the newest sound one. `load_checkpoint` rebuilds a
model from a run or checkpoint directory.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import zipfile
from pathlib import Path

import keras
import numpy as np

from lpd.config import (
    TrainingConfig,
    from_json,
)
from lpd.io import atomic_write, fsync_dir
from lpd.training.factory import build_model

__all__ = ["WeightsError", "WeightsMissing", "Checkpoints", "load_checkpoint", "saved_config",
           "model_from_dir",
           "read_config", "assign", "checkpoint_name", "resolve_weights_dir", "write_text"]


class WeightsError(RuntimeError):
    """Saved weights are missing, corrupt, or do not fit the model."""

    user_facing = True  # the CLI prints the message instead of a traceback


class WeightsMissing(WeightsError, FileNotFoundError):
    """The weights asked for are not there (not trained or not shipped yet)."""


def write_text(path: Path, text: str) -> None:
    atomic_write(path, text, overwrite=True)


def _save_arrays(path: Path, variables) -> None:
    arrays = {f"v{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
    arrays["names"] = np.array([v.path for v in variables])
    atomic_write(path, lambda f: np.savez(f, **arrays), overwrite=True)


def _load_arrays(path: Path) -> tuple[list[str], list[np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            names = [str(n) for n in data["names"]]
            values = [data[f"v{i:05d}"] for i in range(len(names))]
    except FileNotFoundError:
        raise WeightsError(f"weights file {path} is missing") from None
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as err:
        raise WeightsError(f"weights file {path} is corrupt or not an lpd weights file: "
                           f"{err}") from err
    return names, values


def assign(variables, path: Path, what: str) -> None:
    names, values = _load_arrays(path)
    if len(values) != len(variables):
        raise WeightsError(f"{path} holds {len(values)} {what} variables, the model has "
                           f"{len(variables)}: it was saved from another architecture")
    for variable, name, value in zip(variables, names, values, strict=True):
        if tuple(variable.shape) != value.shape:
            raise WeightsError(f"{path}: {what} variable {name} has shape {value.shape}, the "
                               f"model's {variable.path} has {tuple(variable.shape)}")
        if not np.all(np.isfinite(value)):
            raise WeightsError(f"{path}: {what} variable {name} holds NaN or infinite values")
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


class Checkpoints:
    """The checkpoint directory of a run: atomic writes, an index, retention."""

    def __init__(self, root: Path, keep: int):
        self.root = root
        self.keep = keep
        self.index_path = root / "index.json"

    def index(self) -> dict:
        if not self.index_path.exists():
            return {}
        try:
            index = json.loads(self.index_path.read_text())
        except (OSError, ValueError) as err:
            raise WeightsError(f"checkpoint index {self.index_path} is unreadable: {err}") from err
        return index

    def latest(self) -> Path | None:
        name = self.index().get("latest")
        if name is not None and (self.root / name / "state.json").exists():
            return self.root / name
        # An index older than the newest complete checkpoint (a crash between the
        # rename and the index update): take the newest complete one.
        complete = sorted(p for p in self.root.glob("step-*") if (p / "state.json").exists())
        return complete[-1] if complete else None

    def latest_sound(self, log=None) -> tuple[Path | None, dict | None]:
        """The newest checkpoint whose ``state.json`` reads, and that state.

        A checkpoint whose state is unreadable (a damaged file) is skipped for
        the one before it; ``log`` is told which, and why.
        """
        first = self.latest()
        if first is None:
            return None, None
        candidates = [first] + sorted((p for p in self.root.glob("step-*")
                                       if (p / "state.json").exists() and p.name < first.name),
                                      reverse=True)
        for path in candidates:
            try:
                state = json.loads((path / "state.json").read_text())
                if not isinstance(state, dict) or "step" not in state:
                    raise ValueError("no step in it")
            except (OSError, ValueError) as err:
                if log is not None:
                    log(f"checkpoint {path}: state.json is unreadable ({err}); "
                        "trying the one before it")
                continue
            return path, state
        raise WeightsError(f"no checkpoint in {self.root} has a readable state.json; "
                           "start the run afresh with --force")

    def save(self, step: int, model, optimizer, state: dict, config_json: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / checkpoint_name(step)
        if final.exists():
            # The same step is saved once: a second save (e.g. at exit right
            # after a periodic one) would hold the same weights.
            return final
        tmp = self.root / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        _save_arrays(tmp / "model.npz", model.weights)
        _save_arrays(tmp / "optimizer.npz", optimizer.variables)
        atomic_write(tmp / "config.json", config_json)
        # state.json last: its presence marks a complete checkpoint.
        atomic_write(tmp / "state.json", json.dumps(state, indent=2))
        fsync_dir(tmp)
        os.replace(tmp, final)
        fsync_dir(self.root)
        return final

    def update_index(self, latest: Path, best: Path | None, best_psnr: float,
                     best_step: int | None) -> None:
        index = {"latest": latest.name, "best": best.name if best else None,
                 "best_psnr": best_psnr if math.isfinite(best_psnr) else None,
                 "best_step": best_step}
        write_text(self.index_path, json.dumps(index, indent=2))
        self._prune(keep={latest.name, *([best.name] if best else [])})

    def _prune(self, keep: set[str]) -> None:
        periodic = sorted(p.name for p in self.root.glob("step-*"))
        keep = keep | set(periodic[-self.keep:])
        for name in periodic:
            if name not in keep:
                shutil.rmtree(self.root / name, ignore_errors=True)
        for tmp in self.root.glob(".tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)


def saved_config(out_dir: str | os.PathLike, **overrides) -> TrainingConfig:
    """The configuration saved in a run directory, with ``overrides`` applied.

    Raises
    ------
    FileNotFoundError
        If ``out_dir`` holds no ``config.json`` (no run was started there).
    """
    path = Path(out_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"no training run in {out_dir}: {path} does not exist")
    return dataclasses.replace(read_config(path), **overrides)


def read_config(path: Path) -> TrainingConfig:
    try:
        config = from_json(path.read_text())
    except FileNotFoundError:
        raise WeightsError(f"configuration {path} is missing") from None
    except (OSError, ValueError, TypeError) as err:
        raise WeightsError(f"configuration {path} is unreadable: {err}") from err
    if not isinstance(config, TrainingConfig):
        raise WeightsError(f"{path} holds a {type(config).__name__}, not a TrainingConfig")
    return config


def model_from_dir(directory: Path, operator=None) -> keras.Model:
    config = read_config(directory / "config.json")
    model = build_model(config.network, config.setup, operator=operator,
                        backend=config.operator_backend, post_log=config.post_log)
    assign(model.weights, directory / "model.npz", "model")
    return model


def load_checkpoint(path: str | os.PathLike, which: str = "best", *,
                    operator=None) -> keras.Model:
    """Load a model from a training run or from one of its checkpoints.

    Parameters
    ----------
    path : path
        A run's output directory, or a checkpoint directory in it.
    which : {"best", "latest"}
        For a run directory: the best checkpoint by validation PSNR, or the last.
    operator : TFOperator, optional
        The forward operator; rebuilt from the run's set-up by default.

    Raises
    ------
    WeightsError
        If no checkpoint is found or its files are corrupt.
    """
    return model_from_dir(resolve_weights_dir(Path(path), which), operator)


def resolve_weights_dir(path: Path, which: str = "best") -> Path:
    """The directory holding ``model.npz``: ``path`` itself, or a run's checkpoint."""
    if which not in ("best", "latest"):
        raise ValueError(f"which must be 'best' or 'latest', got {which!r}")
    if (path / "model.npz").exists():
        return path
    checkpoints = Checkpoints(path / "checkpoints", keep=1)
    name = checkpoints.index().get("best") if which == "best" else None
    directory = checkpoints.root / name if name else checkpoints.latest()
    if directory is None or not directory.exists():
        raise WeightsError(f"no weights (model.npz) and no checkpoint found in {path}")
    return directory
