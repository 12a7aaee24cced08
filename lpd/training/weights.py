"""Shipped weights: export a run's best checkpoint, load pretrained models, fine-tuning sources.

A weights directory (``data/weights/<set-up>/<method>``) holds ``model.npz``,
``config.json``, ``manifest.json`` (SHA-256, step, validation, command,
precision), ``history.jsonl`` and ``train.log``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import keras

from lpd.config import (
    NetworkConfig,
    TrainingConfig,
)
from lpd.io import atomic_write, shipped
from lpd.methods import networks
from lpd.training.checkpoints import (
    WeightsError,
    WeightsMissing,
    model_from_dir,
    read_config,
    resolve_weights_dir,
    write_text,
)

__all__ = ["default_weights_dir", "export_weights", "load_pretrained", "init_source",
           "samples_seen"]


def default_weights_dir() -> Path:
    """The ``data/weights`` directory beside the package (where shipped weights live)."""
    return shipped("weights")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_weights(run_dir: str | os.PathLike, dest: str | os.PathLike,
                   which: str = "best", *, command: str | None = None,
                   log: str | os.PathLike | None = None) -> Path:
    """Export a checkpoint as shippable pretrained weights.

    Writes ``config.json``, ``model.npz`` (weights only, no optimiser state) and
    ``manifest.json`` (SHA-256 of the weights, step, validation PSNR, the
    training command) into ``dest``, the layout `load_pretrained` reads, with
    the run's ``history.jsonl`` and, if given, its console log as ``train.log``:
    what a user needs to see how the shipped model was made.

    Parameters
    ----------
    run_dir : path
        A training run's output directory (or a checkpoint directory).
    dest : path
        Target directory, e.g. ``data/weights/ellipses/lpd``.
    which : {"best", "latest"}
    command : str, optional
        The command that trained the run, recorded in the manifest.
    log : path, optional
        The run's console output, copied to ``dest/train.log``.
    """
    run_dir, dest = Path(run_dir), Path(dest)
    source = resolve_weights_dir(run_dir, which)
    # Load once to check that the files are sound before shipping them.
    model_from_dir(source)
    state = json.loads((source / "state.json").read_text())
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.npz"):
        atomic_write(dest / name, (source / name).read_bytes(), overwrite=True)
    if (run_dir / "history.jsonl").exists():
        text = (run_dir / "history.jsonl").read_text()
        earlier = _earlier_history(state.get("init"), dest, text)
        atomic_write(dest / "history.jsonl", earlier + text, overwrite=True)
    if log is not None:
        atomic_write(dest / "train.log", Path(log).read_bytes(), overwrite=True)
    manifest = {"sha256": _sha256(dest / "model.npz"), "step": state.get("step"),
                "validation": state.get("validation"),
                "training_seconds": state.get("training_seconds"),
                "command": command}
    if state.get("init") is not None:
        manifest["init_from"] = _known_init(state["init"], dest / "manifest.json")
    samples = samples_seen(manifest | {"step": state.get("step")},
                           read_config(source / "config.json").batch_size)
    if samples is not None:
        manifest["samples"] = samples
    manifest["precision"] = state.get("precision", "float32")
    write_text(dest / "manifest.json", json.dumps(manifest, indent=2))
    return dest


def load_pretrained(name: str, weights_dir: str | os.PathLike | None = None, *,
                    operator=None, precision: str = "auto") -> keras.Model:
    """A ready model from pretrained weights shipped with lpd.

    Parameters
    ----------
    name : str
        ``"<set-up>/<method>"``, e.g. ``"ellipses/lpd"``: the directory
        ``<weights_dir>/<name>`` written by `export_weights`.
    weights_dir : path, optional
        Where the weights are; `default_weights_dir` (``data/weights`` in the
        source tree) by default.
    operator : TFOperator, optional
        The forward operator; rebuilt from the stored set-up by default.
    precision : {"auto", "float32", "bfloat16"}
        What the convolutions compute in (`lpd.networks.set_precision`); the
        weights are float32 and load under either.

    Returns
    -------
    keras.Model

    Raises
    ------
    WeightsError
        If the weights are missing (the message lists the available ones),
        corrupt (checksum or file format), or do not fit the model.

    Examples
    --------
    >>> model = lpd.load_pretrained("ellipses/lpd")   # doctest: +SKIP
    >>> image = model(data)                           # doctest: +SKIP
    """
    root = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    directory = root / name
    if not (directory / "model.npz").exists():
        available = _weights_names(root)
        raise WeightsMissing(
            f"no pretrained weights {name!r} in {root} (looked for {directory / 'model.npz'}); "
            f"available: {', '.join(available) or 'none'}. Train them with `lpd train` and "
            "ship them with lpd.training.export_weights"
        )
    _check_manifest(directory)
    model = model_from_dir(directory, operator)
    networks.set_precision(model, precision)
    return model


def _weights_names(root: Path) -> list[str]:
    """The names (``"<set-up>/<method>"``) of the weights under ``root``."""
    if not root.exists():
        return []
    return sorted(str(p.parent.relative_to(root)) for p in root.glob("**/model.npz"))


def _check_manifest(directory: Path) -> str:
    """SHA-256 of ``directory/model.npz``, checked against its manifest if it has one."""
    actual = _sha256(directory / "model.npz")
    manifest_path = directory / "manifest.json"
    if manifest_path.exists():
        try:
            expected = json.loads(manifest_path.read_text())["sha256"]
        except (OSError, ValueError, KeyError) as err:
            raise WeightsError(f"manifest {manifest_path} is unreadable: {err}") from err
        if actual != expected:
            raise WeightsError(
                f"{directory / 'model.npz'} is corrupt: SHA-256 {actual[:12]}... differs from "
                f"the manifest's {expected[:12]}... (re-download or re-export the weights)"
            )
    return actual


def init_source(config: TrainingConfig) -> tuple[Path, dict]:
    """Resolve ``config.init_from`` to a weights directory and describe it.

    A path that exists wins; otherwise the name of shipped weights. The
    network saved with the weights must equal the run's.
    """
    spec = config.init_from
    path = Path(spec).expanduser()
    if not path.exists():
        shipped = default_weights_dir() / spec
        if not (shipped / "model.npz").exists():
            available = _weights_names(default_weights_dir())
            raise WeightsError(
                f"init_from {spec!r}: no such directory, and no shipped weights of that "
                f"name (shipped: {', '.join(available) or 'none'})")
        path = shipped
    directory = resolve_weights_dir(path)
    sha256 = _check_manifest(directory)
    source = read_config(directory / "config.json")
    if source.network != config.network:
        differ = [f.name for f in dataclasses.fields(NetworkConfig)
                  if getattr(source.network, f.name) != getattr(config.network, f.name)]
        raise WeightsError(
            f"init_from {spec!r}: those weights belong to another network (it differs in "
            f"{', '.join(differ)}); fine-tuning needs the same method and sizes")
    state_path = directory / "state.json"
    manifest_path = directory / "manifest.json"
    step = samples = None
    for meta in (state_path, manifest_path):
        if meta.exists():
            try:
                record = json.loads(meta.read_text())
            except (OSError, ValueError) as err:
                raise WeightsError(f"{meta} is unreadable: {err}") from err
            step, samples = record.get("step"), samples_seen(record, source.batch_size)
            break
    setup = source.setup if isinstance(source.setup, str) else source.setup.name
    return directory, {"source": str(directory), "sha256": sha256, "step": step,
                       "setup": setup, "samples": samples}


def _records(path: Path) -> list[dict]:
    """The validation records of a ``history.jsonl`` (not its events)."""
    records = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return [r for r in records if "event" not in r]


def _earlier_history(init: dict | None, dest: Path, history: str) -> str:
    """The validation records that come before ``history`` on the line of its weights.

    A shipped ``history.jsonl`` (and the training curves drawn from it) goes back
    to the start of the line of weights, through warm starts:

    - where the run started from a checkpoint of another run (its directory, or a
      copy of it with that run's ``history.jsonl`` beside its files), that run's
      records come first;
    - before them, the records of the weights being replaced, where the line
      started from those very weights (same SHA-256) or both started from the
      same weights (a sibling, such as an earlier decay of the learning rate
      from the same checkpoint).

    Only records whose ``samples`` are below those of the next part are kept.
    Empty where nothing is known of the line, or records lack ``samples``.
    """
    if init is None:
        return ""
    try:
        first = json.loads(history.splitlines()[0])["samples"]
        parts: list[dict] = []
        parent = init.get("sha256")
        source = Path(init.get("source") or "")
        for directory in (source, source.parent.parent) if init.get("source") else ():
            if (directory / "history.jsonl").exists() and directory.resolve() != dest.resolve():
                parts = [r for r in _records(directory / "history.jsonl")
                         if r.get("samples") is not None and r["samples"] < first]
                first = parts[0]["samples"] if parts else first
                state = json.loads((source / "state.json").read_text())
                parent = (state.get("init") or {}).get("sha256")
                break
        manifest_path, previous = dest / "manifest.json", dest / "history.jsonl"
        if parent is None or not (manifest_path.exists() and previous.exists()):
            return "".join(json.dumps(r) + "\n" for r in parts)
        manifest = json.loads(manifest_path.read_text())
        if parent not in (manifest.get("sha256"), (manifest.get("init_from") or {}).get("sha256")):
            return "".join(json.dumps(r) + "\n" for r in parts)
        records = _records(previous)
        if any(r.get("samples") is None for r in records):
            # Older records lack ``samples``: the weights' own record gives their start.
            batch = read_config(dest / "config.json").batch_size
            start = samples_seen(manifest, batch) - int(manifest["step"]) * batch
            for r in records:
                if r.get("samples") is None:
                    r["samples"] = start + int(r["step"]) * batch
        kept = [r for r in records if r["samples"] < first]
    except (OSError, ValueError, IndexError, KeyError, TypeError, WeightsError):
        return ""
    return "".join(json.dumps(r) + "\n" for r in kept + parts)


def _known_init(init: dict, previous_manifest: Path) -> dict:
    """``init`` with its ``samples`` taken from the manifest being replaced where the run
    does not know them and that manifest started from the same weights (same SHA-256)."""
    if init.get("samples") is not None or not previous_manifest.exists():
        return init
    try:
        earlier = json.loads(previous_manifest.read_text()).get("init_from") or {}
    except (OSError, ValueError):
        return init
    if earlier.get("sha256") == init.get("sha256") and earlier.get("samples") is not None:
        return dict(init, samples=earlier["samples"])
    return init


def samples_seen(record: dict, batch_size: int) -> int | None:
    """Training samples that the weights of a checkpoint or manifest have seen in all.

    ``record`` is a checkpoint's ``state.json`` or a ``manifest.json``: its own
    steps times ``batch_size``, plus what its starting weights had seen
    (``init``/``init_from``); ``None`` where that is not known. A manifest that
    states ``samples`` is taken at its word.
    """
    if record.get("samples") is not None:
        return int(record["samples"])
    step = record.get("step")
    if step is None:
        return None
    init = record.get("init", record.get("init_from"))
    if init is None:
        return int(step) * int(batch_size)
    if init.get("samples") is None:
        return None
    return int(init["samples"]) + int(step) * int(batch_size)
