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
- a non-finite loss or gradient leaves the weights untouched and the step is
  tried again on the same batch (up to three more times: bfloat16 convolutions
  on AMX have given a NaN gradient now and then that the same step did not
  repeat); one that stays non-finite stops the run with
  `NonFiniteLossError` and writes nothing, so the last checkpoint is the last
  good state;
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
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from lpd import metrics
from lpd.config import (
    TrainingConfig,
    to_json,
)
from lpd.methods import networks
from lpd.physics import operators
from lpd.training import summaries
from lpd.training.checkpoints import (
    Checkpoints,
    WeightsError,
    assign,
    checkpoint_name,
    read_config,
    write_text,
)
from lpd.training.factory import build_model
from lpd.training.weights import init_source, samples_seen

__all__ = ["TrainResult", "NonFiniteLossError", "train", "make_train_step"]

# Fields that may differ between a run and its resumption: they change what is
# logged or kept, or the rounding of the weights (the precision of the
# convolutions, which "auto" may resolve differently on another machine), not the
# maths of the run.
_RESUME_FREE = frozenset({"validation_every", "checkpoint_every", "log_every",
                          "keep_checkpoints", "distribute", "precision"})


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
# Data
# ---------------------------------------------------------------------------

def _image_source(config: TrainingConfig, setup, split: str):
    from lpd.data import catalogue

    return catalogue.training_images(config.images, setup, split)


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


#: Further tries of a training step whose loss or gradient is not finite.
_RETRIES = 3


def make_train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer,
                    global_batch: int, clip: float = 1.0,
                    strategy: tf.distribute.Strategy | None = None):
    """The training step of `train`: ``step(data, images) -> (loss, grad_norm)``.

    One step is the forward pass, the gradient of the mean squared error (summed
    over ``global_batch`` samples and all devices), clipping at global norm
    ``clip`` and the optimiser's update. The update is applied only where the loss
    and the gradient's norm are finite: a non-finite step leaves the weights and
    the optimiser's state as they were, so the caller may retry it or stop with
    the last good state in memory. ``strategy`` defaults to the current
    `tf.distribute` strategy. Benchmarks and profilers time this function, so
    what they measure is what `train` runs.
    """
    strategy = strategy or tf.distribute.get_strategy()
    variables = model.trainable_variables

    def replica_gradients(data, images):
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
        return loss, grads, norm

    @tf.function
    def gradients(data, images):
        loss, grads, norm = strategy.run(replica_gradients, args=(data, images))
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        norm = strategy.experimental_local_results(norm)[0]
        return loss, grads, norm

    @tf.function
    def apply(grads):
        strategy.run(lambda g: optimizer.apply(g, variables), args=(grads,))

    def step(data, images):
        # Two compiled halves with the check between them, rather than a tf.cond
        # around the update: the optimiser's cross-device update cannot run
        # inside a conditional branch under MirroredStrategy.
        loss, grads, norm = gradients(data, images)
        if math.isfinite(float(loss)) and math.isfinite(float(norm)):
            apply(grads)
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
        saved = read_config(saved_path)
        if config is None:
            return saved
        differ = [f.name for f in dataclasses.fields(TrainingConfig)
                  if f.name not in _RESUME_FREE
                  and getattr(saved, f.name) != getattr(config, f.name)]
        if differ:
            raise ValueError(
                f"cannot resume {out}: the configuration differs from the saved one in "
                f"{', '.join(differ)} (a resumed run must be the same run); start a new run "
                "in another directory, or start over here with --force (force=True) and "
                "without --resume"
            )
        return config
    if config is None:
        raise ValueError(f"no training run in {out} to resume (it has no config.json): start "
                         "one without --resume, with --method and --preset (or pass a config)")
    existing = sorted(p.name for p in out.iterdir()) if out.exists() else []
    if existing and not resume:
        if not force:
            raise FileExistsError(
                f"output directory {out} already exists and is not empty ({', '.join(existing[:5])}"
                f"{', ...' if len(existing) > 5 else ''}): continue the run in it with --resume "
                "(resume=True), or delete its training outputs and start over with --force "
                "(force=True)"
            )
        removed = _remove_training_outputs(out)
        log(f"force: removed the previous training outputs in {out} ({removed} files and "
            "directories that lpd had written; anything else is kept)")
    return config


def _our_outputs(out: Path) -> list[Path]:
    """What ``force`` may delete in ``out``: the files and directories a run of lpd writes.

    Raises `FileExistsError`, deleting nothing, when ``config.json`` or
    ``history.jsonl`` is there but is not lpd's (a file of the user's by that name).
    """
    ours = []
    config = out / "config.json"
    if config.exists():
        try:
            read_config(config)
        except WeightsError:
            raise FileExistsError(f"{config} is not a configuration written by lpd train; "
                                  "move it away or train into another directory") from None
        ours.append(config)
    history = out / "history.jsonl"
    if history.exists():
        try:
            records = [json.loads(line) for line in history.read_text().splitlines() if line]
            ok = all(isinstance(r, dict) and "step" in r for r in records)
        except (OSError, ValueError):
            ok = False
        if not ok:
            raise FileExistsError(f"{history} is not a training history written by lpd train; "
                                  "move it away or train into another directory")
        ours.append(history)
    tensorboard = out / "tensorboard"
    if tensorboard.is_dir():
        ours += sorted(tensorboard.glob("events.out.tfevents.*"))
    checkpoints = out / "checkpoints"
    if checkpoints.is_dir():
        ours += sorted(p for p in checkpoints.iterdir()
                       if p.name == "index.json" or p.is_dir()
                       and re.fullmatch(r"(\.tmp-)?step-\d{8}(-\d+)?", p.name))
    return ours


def _remove_training_outputs(out: Path) -> int:
    """Delete what `_our_outputs` lists, then the directories lpd made if they are empty."""
    ours = _our_outputs(out)  # checks everything before anything is deleted
    for path in ours:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    for name in ("tensorboard", "checkpoints"):
        directory = out / name
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
    return len(ours)


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
    config, init = _checked_config(config, out, resume, force, data, log)
    run = _Run.open(config, out, resume, init, validation, strategy, log)
    status, last_checkpoint = run.loop(data, max_seconds)
    if last_checkpoint is None or last_checkpoint.name != checkpoint_name(run.step):
        last_checkpoint = run.save(run.step, None)
    state = run.state
    best = run.checkpoints.root / state["best"] if state["best"] else None
    if status == "completed":
        log(f"done: {run.step} steps; best validation PSNR {state['best_psnr']:.2f} dB at step "
            f"{state['best_step']} ({best})")
    else:
        log(f"stopped ({status}) at step {run.step}; resume with `lpd train --resume --out "
            f"{out}` or train(..., resume=True) (checkpoint {last_checkpoint})")
    return TrainResult(model=run.model, status=status, step=run.step, out_dir=out,
                       checkpoint=last_checkpoint, best_checkpoint=best,
                       best_psnr=state["best_psnr"], history=run.history)


def _checked_config(config: TrainingConfig | None, out: Path, resume: bool, force: bool,
                    data: Any, log: Callable[[str], None]) -> tuple[TrainingConfig, tuple | None]:
    """The run's configuration (the saved one on resume) and its starting weights.

    The weights are ``(directory, record)`` from `init_source`, or ``None``.

    Everything that can be refused is refused here, before anything is
    deleted or written; then the output directory is made ready.
    """
    init = None
    if config is not None and config.init_from is not None and not resume:
        # Checked before anything is deleted or written: a bad source leaves no
        # trace, and --force cannot delete the weights it is asked to start from.
        init = init_source(config)
        source = init[0].resolve()
        if out.resolve() in (source, *source.parents):
            raise ValueError(f"init_from {config.init_from!r} lies inside the output directory "
                             f"{out}; copy the weights elsewhere or train into another directory")
    if config is not None:
        operators.as_config(config.setup)  # an unknown set-up is refused before any write
        _refuse_augment_with_data(config, data)  # before --force deletes anything
    config = _prepare_out_dir(out, config, resume, force, log)
    _refuse_augment_with_data(config, data)  # the saved configuration of a resumed run
    return config, init


class _Run:
    """One training run: its model, optimiser, state and outputs, opened by `_Run.open`.

    ``state`` is what a checkpoint saves besides the weights: the step, the
    batches drawn from the data stream, the best validation so far, the
    training time, the starting weights, the precision and the convolutions'
    gradient ways.
    """

    def __init__(self, config, out, setup, model, optimizer, schedule, state, history,
                 checkpoints, latest, strategy, validation, log):
        self.config, self.out, self.setup, self.log = config, out, setup, log
        self.latest = latest  # the checkpoint resumed from
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.state, self.history, self.checkpoints = state, history, checkpoints
        self.strategy = strategy
        self.config_json = to_json(config)
        self.val_data, self.val_images = _validation_set(config, setup, validation)
        # Validation in chunks of the batch size: one traced shape, as in training.
        self.reconstruct = networks.NetworkReconstructor(model, chunk=max(1, config.batch_size))
        self.writer = tf.summary.create_file_writer(str(out / "tensorboard"))
        self.started = time.perf_counter()
        self.previous_seconds = state["training_seconds"]

    @property
    def step(self) -> int:
        return self.state["step"]

    @classmethod
    def open(cls, config: TrainingConfig, out: Path, resume: bool, init: tuple | None,
             validation, strategy, log) -> _Run:
        """Build the model and optimiser; restore the last sound checkpoint on resume.

        ``init`` is ``(directory, record)`` of the starting weights (`init_source`).
        """
        checkpoints = Checkpoints(out / "checkpoints", config.keep_checkpoints)
        latest, saved_state = checkpoints.latest_sound(log) if resume else (None, None)
        if config.init_from is not None and latest is None and init is None:
            init = init_source(config)  # a resumed run that had no checkpoint yet
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "config.json", to_json(config))

        keras.utils.set_random_seed(config.seed)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()

        setup = operators.as_setup(config.setup)
        strategy = strategy or _strategy(config.distribute)
        with strategy.scope():
            model = build_model(config.network, config.setup,
                                backend=config.operator_backend, post_log=config.post_log)
            schedule = keras.optimizers.schedules.CosineDecay(
                config.learning_rate, decay_steps=config.steps, alpha=0.0)
            # No clipping here: the step clips the gradient summed over devices.
            optimizer = keras.optimizers.Adam(learning_rate=schedule, beta_2=config.beta_2)
            optimizer.build(model.trainable_variables)
        precision = networks.set_precision(model, config.precision)

        state = {"step": 0, "batches": 0, "best_psnr": -math.inf, "best": None,
                 "best_step": None, "training_seconds": 0.0, "init": None,
                 "precision": precision, "gradient_ways": {}}
        if latest is not None:
            cls._restore(latest, saved_state, model, optimizer, state, precision, config, log)
            log(f"resuming {out} from {latest.name} (step {state['step']} of {config.steps})")
        elif resume:
            log(f"no checkpoint in {out}: starting a fresh run")
        if init is not None:
            init_dir, init = init
            assign(model.weights, init_dir / "model.npz", "model")
            state["init"] = init
            step_text = f"step {init['step']}" if init["step"] is not None else "unknown step"
            log(f"initialised from {init['source']} ({step_text} on {init['setup']}, "
                f"SHA-256 {init['sha256'][:12]}...)")

        history = _read_history(out / "history.jsonl", state["step"])
        run = cls(config, out, setup, model, optimizer, schedule, state, history, checkpoints,
                  latest, strategy, validation, log)
        log(f"training {config.network.method} ({type(model).__name__}, "
            f"{networks.count_parameters(model):,} parameters) on {setup.config.name}: "
            f"{config.steps} steps of batch {config.batch_size}, "
            f"{strategy.num_replicas_in_sync} device(s), convolutions in {precision}; "
            f"writing to {out}")
        return run

    @staticmethod
    def _restore(latest: Path, saved_state: dict, model, optimizer, state: dict,
                 precision: str, config: TrainingConfig, log) -> None:
        assign(model.weights, latest / "model.npz", "model")
        assign(optimizer.variables, latest / "optimizer.npz", "optimizer")
        state.update({k: saved_state[k] for k in state if k in saved_state})
        if state["best_psnr"] is None:
            state["best_psnr"] = -math.inf
        used_before = saved_state.get("precision", "float32")
        if used_before != precision:
            log(f"note: this run computed its convolutions in {used_before} until step "
                f"{state['step']} and goes on in {precision} (precision={config.precision!r} "
                "on this machine): the resumed run is not bit-exact with an uninterrupted one")
        state["precision"] = precision
        # The convolutions' gradients the way the run computed them before, so that
        # the resumed run is bit-exact (ways are read when the step is traced).
        ways = state["gradient_ways"]
        if not (isinstance(ways, dict)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in ways.items())):
            raise WeightsError(f"{latest / 'state.json'}: 'gradient_ways' must map layer "
                               f"shapes to gradient ways, got {ways!r}")
        try:
            networks.set_gradient_ways(ways)
        except ValueError as e:
            raise WeightsError(f"{latest / 'state.json'}: {e}") from None
        if int(optimizer.iterations.numpy()) != state["step"]:
            raise WeightsError(f"{latest}: optimizer at step {int(optimizer.iterations.numpy())}"
                               f" but checkpoint at step {state['step']}")

    def validate(self, step: int) -> dict:
        """Score the validation set, log it (TensorBoard, ``history.jsonl``) and return it."""
        config = self.config
        recon = self.reconstruct.reconstruct_batch(self.val_data)[..., None]
        val_images = self.val_images
        pairs = list(zip(val_images[..., 0], recon[..., 0], strict=True))
        psnr = [metrics.psnr(t, r, config.psnr_data_range) for t, r in pairs]
        ssim = [metrics.ssim(t, r, config.psnr_data_range) for t, r in pairs]
        record = {"step": step, "psnr": float(np.mean(psnr)), "psnr_std": float(np.std(psnr)),
                  "ssim": float(np.mean(ssim)), "learning_rate": float(self.schedule(step)),
                  "samples": samples_seen({"step": step, "init": self.state["init"]},
                                          config.batch_size),
                  "time": time.time()}
        with self.writer.as_default():
            summaries.scalar("validation/psnr", record["psnr"], step)
            summaries.scalar("validation/ssim", record["ssim"], step)
            scale = 1.0 / config.psnr_data_range
            summaries.image("validation/reconstruction", recon[0] * scale, step)
            summaries.image("validation/truth", val_images[0] * scale, step)
            summaries.image("validation/abs_error", np.abs(recon[0] - val_images[0]) * scale,
                           step)
        self.history.append(record)
        with open(self.out / "history.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        return record

    def save(self, step: int, record: dict | None) -> Path:
        """Write a checkpoint (the best one too when ``record`` improves on it)."""
        state = self.state
        state["training_seconds"] = (self.previous_seconds + time.perf_counter()
                                     - self.started)
        if record is not None and record["psnr"] > state["best_psnr"]:
            state.update(best_psnr=record["psnr"], best_step=step,
                         best=checkpoint_name(step))
        state["gradient_ways"] = networks.gradient_ways()
        snapshot = dict(state, validation=record, config_hash=_sha_text(self.config_json))
        if not math.isfinite(snapshot["best_psnr"]):
            snapshot["best_psnr"] = None  # JSON has no infinities
        path = self.checkpoints.save(step, self.model, self.optimizer, snapshot,
                                     self.config_json)
        best = self.checkpoints.root / state["best"] if state["best"] else None
        self.checkpoints.update_index(path, best, state["best_psnr"], state["best_step"])
        return path

    def loop(self, data, max_seconds: float | None) -> tuple[str, Path | None]:
        """Train until the last step, a stop request or ``max_seconds``.

        Returns the status (``"completed"``, ``"interrupted"``, ``"time_limit"``)
        and the last checkpoint written.
        """
        config, state, log = self.config, self.state, self.log
        train_step = make_train_step(self.model, self.optimizer, config.batch_size,
                                     config.clip_global_norm, self.strategy)
        last_checkpoint = self.latest
        last_record = self.history[-1] if self.history else None
        if state["step"] == 0 and last_record is None:
            last_record = self.validate(0)
            log(f"step 0: validation PSNR {last_record['psnr']:.2f} dB, "
                f"SSIM {last_record['ssim']:.3f} (before training)")
            if state["init"] is not None:
                # The starting weights compete for "best": a fine-tuning run that
                # never improves on them keeps them as its best checkpoint.
                last_checkpoint = self.save(0, last_record)
        status = "completed"
        progress = _Progress(state["step"], self.started)
        try:
            with _StopRequest(log) as stop:
                stream = _training_stream(config, self.setup, data, state["batches"])
                while state["step"] < config.steps:
                    if stop.signum is not None:
                        status = "interrupted"
                        break
                    if (max_seconds is not None
                            and time.perf_counter() - self.started > max_seconds):
                        status = "time_limit"
                        break
                    loss, norm = self._one_step(train_step, stream, last_checkpoint)
                    step = state["step"] = state["step"] + 1
                    state["batches"] += 1
                    record = None
                    if step % config.validation_every == 0 or step == config.steps:
                        record = last_record = self.validate(step)
                    if step % config.log_every == 0 or step == config.steps:
                        self._log_progress(step, loss, norm, last_record, progress)
                    if record is not None or step % config.checkpoint_every == 0:
                        last_checkpoint = self.save(step, record)
        finally:
            self.writer.flush()
            self.writer.close()
        return status, last_checkpoint

    def _one_step(self, train_step, stream, last_checkpoint) -> tuple[float, float]:
        """Draw a batch, take one training step; refuse a non-finite loss."""
        config, state = self.config, self.state
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
        inputs = _distribute(self.strategy, batch_data, batch_images)
        step = state["step"] + 1
        faults = []
        for _ in range(1 + _RETRIES):
            loss, norm = (float(v) for v in train_step(*inputs))
            if math.isfinite(loss) and math.isfinite(norm):
                break
            # The step left the weights as they were. A fault of the moment passes
            # on another try of the same batch, which keeps the run exactly what
            # it would have been; a NaN of the data or of diverging weights does not.
            faults.append((loss, norm))
        if faults and len(faults) <= _RETRIES:
            tries = ", ".join(f"loss {a}, gradient norm {b}" for a, b in faults)
            self.log(f"step {step}: non-finite loss or gradient on {len(faults)} "
                     f"tr{'y' if len(faults) == 1 else 'ies'} of training batch "
                     f"{state['batches']} ({tries}), finite on the next: continuing")
            self._event(step, "non-finite step retried", tries=len(faults),
                        loss=str(faults[0][0]), grad_norm=str(faults[0][1]))
        if not (math.isfinite(loss) and math.isfinite(norm)):
            where = (f"the last good checkpoint is {last_checkpoint}"
                     if last_checkpoint else "no checkpoint had been written yet")
            self._event(step, "non-finite loss", loss=str(loss), grad_norm=str(norm))
            raise NonFiniteLossError(
                f"non-finite loss at step {step} (loss {loss}, gradient norm {norm},"
                f" training batch {state['batches']}, {1 + _RETRIES} tries); stopped "
                f"without saving: {where}. "
                "Check the data for NaN/inf, or lower the learning rate, and resume.",
                step, last_checkpoint)
        return loss, norm

    def _event(self, step: int, event: str, **details) -> None:
        """Append what the run met at ``step`` to ``history.jsonl`` (kept on resume)."""
        with open(self.out / "history.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "event": event, **details}) + "\n")

    def _log_progress(self, step: int, loss: float, norm: float, last_record: dict | None,
                      progress: _Progress) -> None:
        config = self.config
        rate = progress.update(step)
        lr = float(self.schedule(step))
        with self.writer.as_default():
            summaries.scalar("train/loss", loss, step)
            summaries.scalar("train/grad_norm", norm, step)
            summaries.scalar("train/learning_rate", lr, step)
            summaries.scalar("train/steps_per_second", rate, step)
        best = self.state["best_psnr"]
        val = (f"val {last_record['psnr']:.2f} dB (best "
               f"{max(best, last_record['psnr']):.2f})" if last_record else "val -")
        self.log(f"step {step:>{len(str(config.steps))}}/{config.steps}  loss {loss:.3e}  {val}  "
                 f"{rate:.2f} steps/s  ETA {_format_seconds((config.steps - step) / rate)}")


class _Progress:
    """Steps per second, smoothed over the logging intervals."""

    def __init__(self, step: int, started: float):
        self.tick_time, self.tick_step, self.rate = started, step, float("nan")

    def update(self, step: int) -> float:
        now = time.perf_counter()
        recent = (step - self.tick_step) / max(now - self.tick_time, 1e-9)
        self.rate = recent if not math.isfinite(self.rate) else 0.5 * self.rate + 0.5 * recent
        self.tick_time, self.tick_step = now, step
        return self.rate


def _sha_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _read_history(path: Path, step: int) -> list:
    """The validations up to ``step``; later ones (from after the checkpoint) are dropped.

    Events (a non-finite step, retried or not) stay in the file wherever they
    happened: they record what the run met, not a state it resumes from.
    """
    if not path.exists():
        return []
    kept, lines = [], []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "event" in record:
            lines.append(record)
        elif record.get("step", 0) <= step:
            kept.append(record)
            lines.append(record)
    write_text(path, "".join(json.dumps(r) + "\n" for r in lines))
    return kept
