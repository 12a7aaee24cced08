"""One short, explicit training loop for the learned reconstructors, and loading them.

`train` runs the papers' training: Adam (learning rate 1e-3, beta_2 0.99), the
learning rate decayed to 0 by a cosine over the run, gradients clipped to global
norm 1, mean squared error, fresh simulated data every step. It validates on a
fixed set (PSNR, SSIM), writes TensorBoard summaries, prints a progress line and
keeps checkpoints that lose nothing:

- a checkpoint holds the weights, the optimiser's state, the step and the number
  of batches drawn from the data stream; the learning rate is a function of the
  step. Resuming restarts the data stream at that batch, so an interrupted and
  resumed run ends with the same weights as an uninterrupted one;
- checkpoints are written to a temporary directory and renamed into place, and
  an index (``checkpoints/index.json``) is replaced atomically after them, so a
  crash at any moment leaves the previous checkpoint intact;
- Ctrl-C and SIGTERM make the loop finish the current step, write a checkpoint
  and return (a second Ctrl-C aborts at once);
- a non-finite loss or gradient stops the run with `NonFiniteLossError` and
  writes nothing, so the last checkpoint is the last good state;
- the best checkpoint by validation PSNR is kept besides the latest ones.

Layout of an output directory::

    OUT/config.json                 the TrainingConfig (lpd.config JSON)
    OUT/history.jsonl               one JSON line per validation
    OUT/tensorboard/                scalars and images (tensorboard --logdir OUT)
    OUT/checkpoints/index.json      {"latest": ..., "best": ..., "best_psnr": ...}
    OUT/checkpoints/step-00001000/  model.npz, optimizer.npz, state.json, config.json

Several devices. With more than one GPU (or more than one logical CPU device)
the loop runs under `tf.distribute.MirroredStrategy`: each device takes an equal
slice of the batch, gradients are summed across devices, then clipped, so the
update equals the single-device one. Keras 3 would clip each device's partial
gradient before the sum; the loop clips after it instead. ASTRA's CUDA code is
not thread-safe: with several GPUs use the matrix back-end or one process per
GPU. For a cluster, `tf.distribute.MultiWorkerMirroredStrategy` works the same
way (set ``TF_CONFIG`` on each worker and pass the strategy to `train`).

Pretrained weights ship as exported checkpoints under ``data/weights/<name>/``
(`export_weights` writes one; `load_pretrained` reads it and checks its SHA-256).
A run can start from such weights instead of random ones (``init_from`` of the
configuration): fine-tuning on another set-up or data, or continuing a finished
run under a new learning-rate schedule. The run records the source's SHA-256,
and `export_weights` carries it into the manifest.

References
----------
Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 37(6), 2018,
arXiv:1707.06474 (training: Adam, cosine decay, clipping, 100 000 steps of
batch 5).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import signal
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from lpd import metrics
from lpd.config import (
    METHODS,
    PRESETS,
    NetworkConfig,
    ProblemConfig,
    TrainingConfig,
    from_json,
    to_json,
)
from lpd.io import atomic_write, fsync_dir
from lpd.methods import networks, registry
from lpd.physics import operators

__all__ = [
    "PRESETS",
    "METHODS",
    "TrainResult",
    "NonFiniteLossError",
    "WeightsError",
    "make_config",
    "build_model",
    "train",
    "load_checkpoint",
    "export_weights",
    "load_pretrained",
    "saved_config",
    "make_train_step",
    "default_weights_dir",
]

# Fields that may differ between a run and its resumption: they change what is
# logged or kept, not the weights.
_RESUME_FREE = frozenset({"validation_every", "checkpoint_every", "log_every",
                          "keep_checkpoints", "distribute"})

_OUR_OUTPUTS = ("config.json", "history.jsonl", "tensorboard", "checkpoints")


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient became NaN or infinite; nothing was saved after it.

    Attributes
    ----------
    step : int
        The step whose loss was not finite.
    checkpoint : pathlib.Path or None
        The last good checkpoint (``None`` if none was written yet).
    """

    user_facing = True  # the CLI prints the message instead of a traceback

    def __init__(self, message: str, step: int, checkpoint: Path | None):
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


class WeightsError(RuntimeError):
    """Saved weights are missing, corrupt, or do not fit the model."""

    user_facing = True  # the CLI prints the message instead of a traceback


@dataclasses.dataclass
class TrainResult:
    """What `train` returns.

    Attributes
    ----------
    model : keras.Model
        The model with its weights at the end of the run (not the best ones).
    status : {"completed", "interrupted", "time_limit"}
        Why the run ended.
    step : int
        Steps done in total (including those before a resume).
    out_dir : pathlib.Path
    checkpoint : pathlib.Path
        The checkpoint written at the end.
    best_checkpoint : pathlib.Path or None
        The checkpoint with the highest validation PSNR.
    best_psnr : float
    history : list of dict
        The validations of the whole run (also in ``history.jsonl``).
    """

    model: keras.Model
    status: str
    step: int
    out_dir: Path
    checkpoint: Path
    best_checkpoint: Path | None
    best_psnr: float
    history: list = dataclasses.field(repr=False)

    def __repr__(self) -> str:
        best = f"{self.best_psnr:.2f} dB" if math.isfinite(self.best_psnr) else "-"
        return (f"TrainResult(status={self.status!r}, step={self.step}, "
                f"best_psnr={best}, checkpoint={str(self.checkpoint)!r}, "
                f"best_checkpoint={str(self.best_checkpoint)!r})")


# ---------------------------------------------------------------------------
# Configurations and models
# ---------------------------------------------------------------------------

def make_config(method: str = "lpd", setup: str | ProblemConfig | None = None,
                preset: str = "quick", **overrides) -> TrainingConfig:
    """A `TrainingConfig` from a preset, a method and overrides.

    Parameters
    ----------
    method : {"lpd", "lp", "lgd", "unet"}
    setup : str or ProblemConfig, optional
        The problem; the preset's (``"ellipses"`` unless the preset says
        otherwise) by default.
    preset : {"paper", "quick", "cpu", "tiny"}
        A key of `PRESETS`.
    **overrides
        Fields of `TrainingConfig` (e.g. ``steps=500, batch_size=2, seed=3``);
        ``network`` may be a dict of `NetworkConfig` fields.

    Examples
    --------
    >>> config = make_config("lpd", "ellipses", "paper")
    >>> config.steps, config.batch_size, config.network.n_iter
    (100001, 5, 10)
    """
    if method not in METHODS:
        raise registry.unknown_method(method, METHODS)
    try:
        preset_fields = dict(PRESETS[preset])
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; choose one of {list(PRESETS)}") from None
    network = {"method": method, **preset_fields.pop("network", {}).get(method, {})}
    extra = overrides.pop("network", None) or {}
    if isinstance(extra, NetworkConfig):
        extra = {f.name: getattr(extra, f.name) for f in dataclasses.fields(extra)}
    network.update(extra)
    if network["method"] != method:
        raise ValueError(f"network method {network['method']!r} contradicts method {method!r}")
    fields = {**preset_fields, **overrides}
    if setup is not None:
        fields["setup"] = setup
    if "images" not in overrides and _is_poisson(fields.get("setup", "ellipses")):
        # The human-CT set-ups train on real slices, not on ellipses.
        fields["images"] = "real_ct"
    return TrainingConfig(network=NetworkConfig(**network), **fields)


def _is_poisson(setup: str | ProblemConfig) -> bool:
    if isinstance(setup, ProblemConfig):
        return setup.noise.kind == "poisson"
    from lpd.physics.operators import SETUPS

    return setup in SETUPS and SETUPS[setup].noise.kind == "poisson"


def _prelog_mu(network: NetworkConfig, problem: ProblemConfig, post_log: bool) -> float | None:
    if network.data_model == "linear":
        return None
    poisson = problem.noise.kind == "poisson"
    if network.data_model == "prelog":
        if not poisson:
            raise ValueError(f"data_model='prelog' needs a Poisson set-up, not {problem.name!r}")
        if post_log:
            raise ValueError("data_model='prelog' contradicts post_log=True")
        return problem.noise.mu
    return problem.noise.mu if poisson and not post_log else None


def build_model(network: NetworkConfig, setup: str | ProblemConfig = "ellipses", *,
                operator=None, backend: str = "auto", post_log: bool = False) -> keras.Model:
    """Build the model a `NetworkConfig` describes, for a set-up.

    Parameters
    ----------
    network : NetworkConfig
    setup : str or ProblemConfig
        The problem; stored in the model's config so that it can be reloaded.
    operator : TFOperator, optional
        The forward operator; by default the set-up's (``A / ||A||`` for the
        ellipses, ``A`` for the human set-ups) through `lpd.as_tf_operator`.
    backend : {"auto", "matrix", "odl"}
        Back-end of the bridge when the operator is built here.
    post_log : bool
        Whether the data will be post-log (decides the data model of Poisson
        set-ups with ``data_model="auto"``).

    Returns
    -------
    keras.Model
        Built (all weights created), mapping data to images.
    """
    problem = operators.as_setup(setup)
    if operator is None:
        from lpd.physics.bridge import as_tf_operator

        operator = as_tf_operator(problem.operator, backend=backend)
    mu = _prelog_mu(network, problem.config, post_log)
    common = {"setup": setup, "operator_backend": backend, "prelog_mu": mu}
    fbp = {"fbp_filter": network.fbp_filter,
           "fbp_frequency_scaling": network.fbp_frequency_scaling}
    return registry.get(network.method).load().from_network(network, operator, **fbp,
                                                            **common)


# ---------------------------------------------------------------------------
# Weights and checkpoints on disk
# ---------------------------------------------------------------------------

def _atomic_write_text(path: Path, text: str) -> None:
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


def _assign(variables, path: Path, what: str) -> None:
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


def _checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


class _Checkpoints:
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

    def save(self, step: int, model, optimizer, state: dict, config_json: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / _checkpoint_name(step)
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
        _atomic_write_text(self.index_path, json.dumps(index, indent=2))
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
    return dataclasses.replace(_read_config(path), **overrides)


def _read_config(path: Path) -> TrainingConfig:
    try:
        config = from_json(path.read_text())
    except FileNotFoundError:
        raise WeightsError(f"configuration {path} is missing") from None
    except (OSError, ValueError, TypeError) as err:
        raise WeightsError(f"configuration {path} is unreadable: {err}") from err
    if not isinstance(config, TrainingConfig):
        raise WeightsError(f"{path} holds a {type(config).__name__}, not a TrainingConfig")
    return config


def _model_from_dir(directory: Path, operator=None) -> keras.Model:
    config = _read_config(directory / "config.json")
    model = build_model(config.network, config.setup, operator=operator,
                        backend=config.operator_backend, post_log=config.post_log)
    _assign(model.weights, directory / "model.npz", "model")
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
    return _model_from_dir(_weights_dir(Path(path), which), operator)


def _weights_dir(path: Path, which: str = "best") -> Path:
    """The directory holding ``model.npz``: ``path`` itself, or a run's checkpoint."""
    if which not in ("best", "latest"):
        raise ValueError(f"which must be 'best' or 'latest', got {which!r}")
    if (path / "model.npz").exists():
        return path
    checkpoints = _Checkpoints(path / "checkpoints", keep=1)
    name = checkpoints.index().get("best") if which == "best" else None
    directory = checkpoints.root / name if name else checkpoints.latest()
    if directory is None or not directory.exists():
        raise WeightsError(f"no weights (model.npz) and no checkpoint found in {path}")
    return directory


def default_weights_dir() -> Path:
    """The ``data/weights`` directory beside the package (where shipped weights live)."""
    return Path(__file__).resolve().parents[2] / "data" / "weights"


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
    source = _weights_dir(run_dir, which)
    # Load once to check that the files are sound before shipping them.
    _model_from_dir(source)
    state = json.loads((source / "state.json").read_text())
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.npz"):
        atomic_write(dest / name, (source / name).read_bytes(), overwrite=True)
    if (run_dir / "history.jsonl").exists():
        atomic_write(dest / "history.jsonl", (run_dir / "history.jsonl").read_bytes(),
                     overwrite=True)
    if log is not None:
        atomic_write(dest / "train.log", Path(log).read_bytes(), overwrite=True)
    manifest = {"sha256": _sha256(dest / "model.npz"), "step": state.get("step"),
                "validation": state.get("validation"),
                "training_seconds": state.get("training_seconds"),
                "command": command}
    if state.get("init") is not None:
        manifest["init_from"] = state["init"]
    manifest["precision"] = state.get("precision", "float32")
    _atomic_write_text(dest / "manifest.json", json.dumps(manifest, indent=2))
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
        raise WeightsError(
            f"no pretrained weights {name!r} in {root} (looked for {directory / 'model.npz'}); "
            f"available: {', '.join(available) or 'none'}. Train them with `lpd train` and "
            "ship them with lpd.training.export_weights"
        )
    _check_manifest(directory)
    model = _model_from_dir(directory, operator)
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


def _init_source(config: TrainingConfig) -> tuple[Path, dict]:
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
    directory = _weights_dir(path)
    sha256 = _check_manifest(directory)
    source = _read_config(directory / "config.json")
    if source.network != config.network:
        differ = [f.name for f in dataclasses.fields(NetworkConfig)
                  if getattr(source.network, f.name) != getattr(config.network, f.name)]
        raise WeightsError(
            f"init_from {spec!r}: those weights belong to another network (it differs in "
            f"{', '.join(differ)}); fine-tuning needs the same method and sizes")
    state_path = directory / "state.json"
    manifest_path = directory / "manifest.json"
    step = None
    for meta in (state_path, manifest_path):
        if meta.exists():
            try:
                step = json.loads(meta.read_text()).get("step")
            except (OSError, ValueError) as err:
                raise WeightsError(f"{meta} is unreadable: {err}") from err
            break
    setup = source.setup if isinstance(source.setup, str) else source.setup.name
    return directory, {"source": str(directory), "sha256": sha256, "step": step,
                       "setup": setup}


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------

def _image_source(config: TrainingConfig, setup, split: str):
    from lpd.data import pipelines as datasets

    if config.images == "real_ct":
        from lpd.data import real as realdata

        return realdata.real_ct_slices(setup, split)
    return datasets.RandomPhantoms(config.images, tuple(setup.space.shape))


def _training_stream(config: TrainingConfig, setup, data, start: int) -> Iterator:
    """The training batches from batch ``start`` on."""
    if data is None:
        from lpd.data import pipelines as datasets

        return iter(datasets.training_pairs(setup, _image_source(config, setup, "train"),
                                            config.batch_size, config.seed, start=start,
                                            post_log=config.post_log, augment=config.augment))
    if isinstance(data, tf.data.Dataset):
        return iter(data.skip(start))
    if callable(data):
        return iter(data(start))
    raise TypeError("data must be None, a tf.data.Dataset of batches, or a callable "
                    f"start -> iterable of (data, image) batches; got {type(data).__name__}")


def _validation_set(config: TrainingConfig, setup, validation) -> tuple[np.ndarray, np.ndarray]:
    if validation is None:
        from lpd.data import pipelines as datasets

        source = _image_source(config, setup, "validation")
        n = None if source.is_finite else config.validation_size
        validation = datasets.fixed_set(setup, source, n, seed=config.validation_seed,
                                        post_log=config.post_log)
    data, images = (np.asarray(a, dtype=np.float32) for a in validation)
    if data.ndim == 3:
        data = data[..., None]
    if images.ndim == 3:
        images = images[..., None]
    if len(data) != len(images) or len(data) < 1:
        raise ValueError(f"validation set: {len(data)} data for {len(images)} images")
    return data, images


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------

class _StopRequest:
    """Turns SIGINT/SIGTERM into a flag that the loop checks after each step."""

    def __init__(self, log):
        self.signum: int | None = None
        self._log = log
        self._previous: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        self._log(f"\n{signal.Signals(signum).name} received: finishing this step and saving a "
                  "checkpoint (Ctrl-C again aborts without saving)")

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        return False


def _strategy(kind: str) -> tf.distribute.Strategy:
    if kind == "none":
        return tf.distribute.get_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    devices = gpus or tf.config.list_logical_devices("CPU")
    if kind == "mirrored" or len(devices) > 1:
        cross = None if gpus else tf.distribute.ReductionToOneDevice()
        return tf.distribute.MirroredStrategy([d.name for d in devices],
                                              cross_device_ops=cross)
    return tf.distribute.get_strategy()


def make_train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer,
                    global_batch: int, clip: float = 1.0,
                    strategy: tf.distribute.Strategy | None = None):
    """The compiled training step of `train`: ``step(data, images) -> (loss, grad_norm)``.

    One step is the forward pass, the gradient of the mean squared error (summed
    over ``global_batch`` samples and all devices), clipping at global norm
    ``clip`` and the optimiser's update. ``strategy`` defaults to the current
    `tf.distribute` strategy. Benchmarks and profilers time this function, so
    what they measure is what `train` runs.
    """
    strategy = strategy or tf.distribute.get_strategy()
    variables = model.trainable_variables

    def replica_step(data, images):
        with tf.GradientTape() as tape:
            residual = model(data, training=True) - images
            per_sample = tf.reduce_mean(tf.square(residual), axis=[1, 2, 3])
            loss = tf.reduce_sum(per_sample) / global_batch
        grads = tape.gradient(loss, variables)
        context = tf.distribute.get_replica_context()
        n = context.num_replicas_in_sync
        if n > 1:
            grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        grads, norm = tf.clip_by_global_norm(grads, clip)
        if n > 1:
            # The optimiser sums over devices again: hand it 1/n of the total each.
            grads = [g / n for g in grads]
        optimizer.apply(grads, variables)
        return loss, norm

    @tf.function
    def step(data, images):
        loss, norm = strategy.run(replica_step, args=(data, images))
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        norm = strategy.experimental_local_results(norm)[0]
        return loss, norm

    return step


def _distribute(strategy, data, images):
    n = strategy.num_replicas_in_sync
    if n == 1:
        return tf.convert_to_tensor(data), tf.convert_to_tensor(images)
    batch = int(data.shape[0])
    if batch % n:
        raise ValueError(f"batch size {batch} is not a multiple of the {n} devices")
    per = batch // n

    def slices(context):
        i = context.replica_id_in_sync_group
        return (tf.identity(data[i * per:(i + 1) * per]),
                tf.identity(images[i * per:(i + 1) * per]))

    return strategy.experimental_distribute_values_from_function(slices)


def _summary_metadata(plugin: str, data_class: int) -> bytes:
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(data_class=data_class)
    metadata.plugin_data.plugin_name = plugin
    return metadata.SerializeToString()


def _summary_scalar(tag: str, value: float, step: int) -> None:
    """A TensorBoard scalar, written without the ``tensorboard`` package.

    ``tf.summary.scalar`` needs ``tensorboard`` installed, which TensorFlow
    does not depend on; the event format itself is TensorFlow's, so the loop
    writes the summary with the metadata TensorBoard's scalar plugin reads.
    """
    from tensorflow.core.framework import summary_pb2

    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step,
                     metadata=_summary_metadata("scalars", summary_pb2.DATA_CLASS_SCALAR))


def _summary_image(tag: str, image: np.ndarray, step: int) -> None:
    """A TensorBoard image (``image``: HxWx1 in [0, 1]) in the image plugin's format."""
    from tensorflow.core.framework import summary_pb2

    png = tf.image.encode_png(tf.cast(np.round(np.clip(image, 0, 1) * 255), tf.uint8))
    tensor = tf.stack([tf.as_string(image.shape[1]), tf.as_string(image.shape[0]), png])
    tf.summary.write(tag, tensor, step=step,
                     metadata=_summary_metadata("images", summary_pb2.DATA_CLASS_BLOB_SEQUENCE))


def _format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _prepare_out_dir(out: Path, config: TrainingConfig | None, resume: bool,
                     force: bool, log) -> TrainingConfig:
    saved_path = out / "config.json"
    if resume and saved_path.exists():
        saved = _read_config(saved_path)
        if config is None:
            return saved
        differ = [f.name for f in dataclasses.fields(TrainingConfig)
                  if f.name not in _RESUME_FREE
                  and getattr(saved, f.name) != getattr(config, f.name)]
        if differ:
            raise ValueError(
                f"cannot resume {out}: the configuration differs from the saved one in "
                f"{', '.join(differ)} (a resumed run must be the same run); start a new run "
                "in another directory, or pass force=True without resume to start over here"
            )
        return config
    if config is None:
        raise ValueError(f"no configuration given and none saved in {out}")
    existing = sorted(p.name for p in out.iterdir()) if out.exists() else []
    if existing and not resume:
        if not force:
            raise FileExistsError(
                f"output directory {out} already exists and is not empty ({', '.join(existing[:5])}"
                f"{', ...' if len(existing) > 5 else ''}): pass resume=True to continue the run "
                "in it, or force=True to delete its training outputs and start over"
            )
        for name in _OUR_OUTPUTS:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        log(f"force: removed the previous training outputs in {out}")
    return config


def _refuse_augment_with_data(config: TrainingConfig, data) -> None:
    if config.augment is not None and data is not None:
        raise ValueError(f"augment={config.augment!r} applies to the default data stream, not "
                         "to data given to train(); transform your own images (e.g. with "
                         "lpd.datasets.symmetry) or leave augment unset")


def train(config: TrainingConfig | None, out_dir: str | os.PathLike, *, resume: bool = False,
          force: bool = False, data: Any = None,
          validation: tuple[np.ndarray, np.ndarray] | None = None,
          max_seconds: float | None = None, strategy: tf.distribute.Strategy | None = None,
          log: Callable[[str], None] | None = None) -> TrainResult:
    """Train a learned reconstructor; resumable, with checkpoints that lose nothing.

    Parameters
    ----------
    config : TrainingConfig or None
        What to train (`make_config` builds one from a preset). ``None`` with
        ``resume=True`` takes the configuration saved in ``out_dir``.
    out_dir : path
        Where everything is written (see the module docstring); created if needed.
    resume : bool
        Continue from the last checkpoint in ``out_dir`` (weights, optimiser
        state, step, learning rate, data-stream position). The configuration
        must equal the saved one except for logging and checkpoint intervals.
        With no checkpoint there yet, starts a fresh run.
    force : bool
        Start a fresh run even if ``out_dir`` holds a previous run (its training
        outputs are deleted). Without ``resume`` or ``force``, a non-empty
        ``out_dir`` is an error: nothing is ever overwritten silently.
    data : tf.data.Dataset, callable or None
        Training batches ``(data, image)``, float32 NHWC, ``config.batch_size``
        samples each. ``None``: `lpd.datasets.training_pairs` for the set-up and
        ``config.images``. A callable is called as ``data(start)`` and must return
        the batches from index ``start`` on; a dataset is resumed with
        ``dataset.skip(start)``. Either must give the same batches every time
        for an exact resume.
    validation : (data, images) arrays, optional
        The fixed validation set; `lpd.datasets.fixed_set` of
        ``config.validation_size`` samples by default.
    max_seconds : float, optional
        Stop (with a checkpoint) after this much wall time; resume later.
    strategy : tf.distribute.Strategy, optional
        Overrides ``config.distribute``.
    log : callable, optional
        Receives the progress lines; ``print`` by default.

    Returns
    -------
    TrainResult

    Raises
    ------
    NonFiniteLossError
        If the loss or the gradient norm is NaN or infinite. Nothing is saved
        after the last good step; the error names the last good checkpoint.
    FileExistsError
        If ``out_dir`` holds files and neither ``resume`` nor ``force`` is set.
    ValueError
        If ``resume`` is set and ``config`` differs from the saved one, or
        ``config.augment`` is set for ``data`` of the caller's.
    WeightsError
        If ``config.init_from`` names no weights, corrupt ones, or those of
        another network (checked before anything is written).

    References
    ----------
    Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 37(6), 2018,
    arXiv:1707.06474 (the training procedure of its experiments).
    """
    if log is None:
        def log(line):
            print(line, flush=True)

    out = Path(out_dir)
    init = None
    if config is not None and config.init_from is not None and not resume:
        # Checked before anything is deleted or written: a bad source leaves no
        # trace, and --force cannot delete the weights it is asked to start from.
        init_dir, init = _init_source(config)
        source = init_dir.resolve()
        if out.resolve() in (source, *source.parents):
            raise ValueError(f"init_from {config.init_from!r} lies inside the output directory "
                             f"{out}; copy the weights elsewhere or train into another directory")
    if config is not None:
        _refuse_augment_with_data(config, data)  # before --force deletes anything
    config = _prepare_out_dir(out, config, resume, force, log)
    _refuse_augment_with_data(config, data)  # the saved configuration of a resumed run
    checkpoints = _Checkpoints(out / "checkpoints", config.keep_checkpoints)
    latest = checkpoints.latest() if resume else None
    if config.init_from is not None and latest is None and init is None:
        init_dir, init = _init_source(config)  # a resumed run that had no checkpoint yet
    out.mkdir(parents=True, exist_ok=True)
    config_json = to_json(config)
    _atomic_write_text(out / "config.json", config_json)

    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()

    setup = operators.as_setup(config.setup)
    strategy = strategy or _strategy(config.distribute)
    with strategy.scope():
        model = build_model(config.network, config.setup, backend=config.operator_backend,
                            post_log=config.post_log)
        schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate,
                                                          decay_steps=config.steps, alpha=0.0)
        # No clipping here: the step clips the gradient summed over devices.
        optimizer = keras.optimizers.Adam(learning_rate=schedule, beta_2=config.beta_2)
        optimizer.build(model.trainable_variables)
    precision = networks.set_precision(model, config.precision)

    state = {"step": 0, "batches": 0, "best_psnr": -math.inf, "best": None,
             "best_step": None, "training_seconds": 0.0, "init": None,
             "precision": precision}
    if latest is not None:
        _assign(model.weights, latest / "model.npz", "model")
        _assign(optimizer.variables, latest / "optimizer.npz", "optimizer")
        saved_state = json.loads((latest / "state.json").read_text())
        state.update({k: saved_state[k] for k in state if k in saved_state})
        if state["best_psnr"] is None:
            state["best_psnr"] = -math.inf
        used_before = saved_state.get("precision", "float32")
        if used_before != precision:
            log(f"note: this run computed its convolutions in {used_before} until step "
                f"{state['step']} and goes on in {precision} (precision={config.precision!r} "
                "on this machine): the resumed run is not bit-exact with an uninterrupted one")
        state["precision"] = precision
        if int(optimizer.iterations.numpy()) != state["step"]:
            raise WeightsError(f"{latest}: optimizer at step {int(optimizer.iterations.numpy())}"
                               f" but checkpoint at step {state['step']}")
        log(f"resuming {out} from {latest.name} (step {state['step']} of {config.steps})")
    elif resume:
        log(f"no checkpoint in {out}: starting a fresh run")
    if init is not None:
        _assign(model.weights, init_dir / "model.npz", "model")
        state["init"] = init
        step_text = f"step {init['step']}" if init["step"] is not None else "unknown step"
        log(f"initialised from {init['source']} ({step_text} on {init['setup']}, "
            f"SHA-256 {init['sha256'][:12]}...)")

    history = _read_history(out / "history.jsonl", state["step"])
    val_data, val_images = _validation_set(config, setup, validation)
    # Validation in chunks of the batch size: one traced shape, as in training.
    reconstruct = networks.NetworkReconstructor(model, chunk=max(1, config.batch_size))
    train_step = make_train_step(model, optimizer, config.batch_size,
                                 config.clip_global_norm, strategy)
    writer = tf.summary.create_file_writer(str(out / "tensorboard"))
    n_params = networks.count_parameters(model)
    log(f"training {config.network.method} ({type(model).__name__}, {n_params:,} parameters) "
        f"on {setup.config.name}: {config.steps} steps of batch {config.batch_size}, "
        f"{strategy.num_replicas_in_sync} device(s), convolutions in {precision}; "
        f"writing to {out}")

    def validate(step: int) -> dict:
        recon = reconstruct.reconstruct_batch(val_data)[..., None]
        pairs = list(zip(val_images[..., 0], recon[..., 0], strict=True))
        psnr = [metrics.psnr(t, r, config.psnr_data_range) for t, r in pairs]
        ssim = [metrics.ssim(t, r, config.psnr_data_range) for t, r in pairs]
        record = {"step": step, "psnr": float(np.mean(psnr)), "psnr_std": float(np.std(psnr)),
                  "ssim": float(np.mean(ssim)), "learning_rate": float(schedule(step)),
                  "time": time.time()}
        with writer.as_default():
            _summary_scalar("validation/psnr", record["psnr"], step)
            _summary_scalar("validation/ssim", record["ssim"], step)
            scale = 1.0 / config.psnr_data_range
            _summary_image("validation/reconstruction", recon[0] * scale, step)
            _summary_image("validation/truth", val_images[0] * scale, step)
            _summary_image("validation/abs_error", np.abs(recon[0] - val_images[0]) * scale,
                           step)
        history.append(record)
        with open(out / "history.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        return record

    def save(step: int, record: dict | None) -> Path:
        state["training_seconds"] = previous_seconds + time.perf_counter() - started
        improved = record is not None and record["psnr"] > state["best_psnr"]
        if improved:
            state.update(best_psnr=record["psnr"], best_step=step,
                         best=_checkpoint_name(step))
        snapshot = dict(state, validation=record, config_hash=_sha_text(config_json))
        if not math.isfinite(snapshot["best_psnr"]):
            snapshot["best_psnr"] = None  # JSON has no infinities
        path = checkpoints.save(step, model, optimizer, snapshot, config_json)
        best = checkpoints.root / state["best"] if state["best"] else None
        checkpoints.update_index(path, best, state["best_psnr"], state["best_step"])
        return path

    started = time.perf_counter()
    previous_seconds = state["training_seconds"]
    step = state["step"]
    last_checkpoint = latest
    last_record = history[-1] if history else None
    if step == 0 and last_record is None:
        last_record = validate(0)
        log(f"step 0: validation PSNR {last_record['psnr']:.2f} dB, "
            f"SSIM {last_record['ssim']:.3f} (before training)")
        if init is not None:
            # The starting weights compete for "best": a fine-tuning run that
            # never improves on them keeps them as its best checkpoint.
            last_checkpoint = save(0, last_record)
    status = "completed"
    stream = None
    tick_time, tick_step, rate = started, step, float("nan")
    try:
        with _StopRequest(log) as stop:
            stream = _training_stream(config, setup, data, state["batches"])
            while step < config.steps:
                if stop.signum is not None:
                    status = "interrupted"
                    break
                if max_seconds is not None and time.perf_counter() - started > max_seconds:
                    status = "time_limit"
                    break
                try:
                    batch_data, batch_images = next(stream)
                except StopIteration:
                    raise ValueError(f"the training data ran out after {state['batches']} "
                                     "batches; give an endless stream") from None
                batch_data = np.asarray(batch_data, dtype=np.float32)
                batch_images = np.asarray(batch_images, dtype=np.float32)
                if batch_data.shape[0] != config.batch_size:
                    raise ValueError(f"a training batch holds {batch_data.shape[0]} samples, "
                                     f"the configuration says {config.batch_size}")
                loss, norm = train_step(*_distribute(strategy, batch_data, batch_images))
                loss, norm = float(loss), float(norm)
                if not (math.isfinite(loss) and math.isfinite(norm)):
                    where = (f"the last good checkpoint is {last_checkpoint}"
                             if last_checkpoint else "no checkpoint had been written yet")
                    with open(out / "history.jsonl", "a") as f:
                        f.write(json.dumps({"step": step + 1, "event": "non-finite loss",
                                            "loss": str(loss), "grad_norm": str(norm)}) + "\n")
                    raise NonFiniteLossError(
                        f"non-finite loss at step {step + 1} (loss {loss}, gradient norm {norm},"
                        f" training batch {state['batches']}); stopped without saving: {where}. "
                        "Check the data for NaN/inf, or lower the learning rate, and resume.",
                        step + 1, last_checkpoint)
                step += 1
                state["step"], state["batches"] = step, state["batches"] + 1

                record = None
                if step % config.validation_every == 0 or step == config.steps:
                    record = last_record = validate(step)
                if step % config.log_every == 0 or step == config.steps:
                    now = time.perf_counter()
                    recent = (step - tick_step) / max(now - tick_time, 1e-9)
                    rate = recent if not math.isfinite(rate) else 0.5 * rate + 0.5 * recent
                    tick_time, tick_step = now, step
                    lr = float(schedule(step))
                    with writer.as_default():
                        _summary_scalar("train/loss", loss, step)
                        _summary_scalar("train/grad_norm", norm, step)
                        _summary_scalar("train/learning_rate", lr, step)
                        _summary_scalar("train/steps_per_second", rate, step)
                    val = (f"val {last_record['psnr']:.2f} dB (best "
                           f"{max(state['best_psnr'], last_record['psnr']):.2f})"
                           if last_record else "val -")
                    log(f"step {step:>{len(str(config.steps))}}/{config.steps}  "
                        f"loss {loss:.3e}  {val}  {rate:.2f} steps/s  "
                        f"ETA {_format_seconds((config.steps - step) / rate)}")
                if record is not None or step % config.checkpoint_every == 0:
                    last_checkpoint = save(step, record)
    finally:
        writer.flush()
        writer.close()

    if last_checkpoint is None or last_checkpoint.name != _checkpoint_name(step):
        last_checkpoint = save(step, None)
    best = checkpoints.root / state["best"] if state["best"] else None
    if status == "completed":
        log(f"done: {step} steps; best validation PSNR {state['best_psnr']:.2f} dB at step "
            f"{state['best_step']} ({best})")
    else:
        log(f"stopped ({status}) at step {step}; resume with `lpd train --resume --out {out}` "
            f"or train(..., resume=True) (checkpoint {last_checkpoint})")
    return TrainResult(model=model, status=status, step=step, out_dir=out,
                       checkpoint=last_checkpoint, best_checkpoint=best,
                       best_psnr=state["best_psnr"], history=history)


def _sha_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _read_history(path: Path, step: int) -> list:
    """The validations up to ``step``; later lines (from after the checkpoint) are dropped."""
    if not path.exists():
        return []
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("step", 0) <= step and "event" not in record:
            kept.append(record)
    _atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept
