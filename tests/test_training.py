"""Tests for lpd.training: the loop, checkpoints, resume, failures, devices, loading.

Runs tiny networks on the 64 x 64 set-up ``ellipses_small`` with a small numpy
data stream, so that each run takes seconds. Two tests run in a subprocess:
exact resume (it enables TensorFlow's process-wide op determinism) and
training on two logical CPU devices (which must be configured before
TensorFlow starts).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import lpd  # noqa: E402
from lpd import config as lpd_config  # noqa: E402
from lpd import training  # noqa: E402
from lpd.physics import operators  # noqa: E402

SETUP = "ellipses_small"


def _config(method="lpd", **overrides):
    fields = dict(steps=6, batch_size=2, validation_every=3, checkpoint_every=2,
                  log_every=2, deterministic=False, seed=5)
    fields.update(overrides)
    return training.make_config(method, SETUP, "tiny", **fields)


def _stream(batch_size=2, nan_at=None, interrupt_at=None):
    """A deterministic data stream: batch k depends on k only, starts at ``start``."""
    op = lpd.as_tf_operator(operators.get_setup(SETUP).operator)
    shape = op.domain_shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]),
                         indexing="ij")

    def batch(k):
        rng = np.random.default_rng(1000 + k)
        images = np.zeros((batch_size, *shape, 1), np.float32)
        for image in images:
            for _ in range(3):
                c = rng.uniform(-0.5, 0.5, 2)
                r = rng.uniform(0.1, 0.4)
                image[..., 0] += rng.uniform(0.2, 0.5) * (((xx - c[0]) ** 2
                                                           + (yy - c[1]) ** 2) < r**2)
        data = op(images).numpy()
        data += 0.01 * rng.standard_normal(data.shape).astype(np.float32)
        if k == nan_at:
            data[0, 0, 0, 0] = np.nan
        return data, images

    def start_at(start):
        k = start
        while True:
            if k == interrupt_at:
                os.kill(os.getpid(), signal.SIGINT)
            yield batch(k)
            k += 1

    validation = tuple(np.concatenate(a) for a in zip(batch(10_000), batch(10_001),
                                                       strict=True))
    return start_at, validation


def _quiet(line):
    pass


def test_training_writes_config_checkpoints_and_summaries(tmp_path):
    data, validation = _stream()
    config = _config()
    result = training.train(config, tmp_path, data=data, validation=validation, log=_quiet)
    assert result.status == "completed" and result.step == 6
    assert lpd_config.from_json((tmp_path / "config.json").read_text()) == config
    index = json.loads((tmp_path / "checkpoints" / "index.json").read_text())
    assert index["latest"] == "step-00000006"
    assert index["best"] in {"step-00000003", "step-00000006"}
    checkpoint = tmp_path / "checkpoints" / "step-00000006"
    for name in ("model.npz", "optimizer.npz", "state.json", "config.json"):
        assert (checkpoint / name).exists()
    state = json.loads((checkpoint / "state.json").read_text())
    assert state["step"] == 6 and state["batches"] == 6
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history] == [0, 3, 6]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    # Old periodic checkpoints are pruned (keep_checkpoints=2, plus the best).
    assert len(list((tmp_path / "checkpoints").glob("step-*"))) <= 3


def test_refuses_to_overwrite_a_run_without_resume_or_force(tmp_path):
    data, validation = _stream()
    training.train(_config(steps=2), tmp_path, data=data, validation=validation, log=_quiet)
    with pytest.raises(FileExistsError, match="resume=True"):
        training.train(_config(steps=2), tmp_path, data=data, validation=validation,
                       log=_quiet)
    result = training.train(_config(steps=2), tmp_path, force=True, data=data,
                            validation=validation, log=_quiet)
    assert result.step == 2


def test_force_deletes_only_what_lpd_wrote(tmp_path):
    data, validation = _stream()
    training.train(_config(steps=2), tmp_path, data=data, validation=validation, log=_quiet)
    mine = [tmp_path / "checkpoints" / "my_model.pt", tmp_path / "tensorboard" / "notes.txt",
            tmp_path / "README.txt"]
    for path in mine:
        path.write_text("the user's")
    training.train(_config(steps=2), tmp_path, force=True, data=data, validation=validation,
                   log=_quiet)
    assert all(path.read_text() == "the user's" for path in mine)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir()) == [
        "step-00000002"]


def test_force_refuses_a_config_json_that_lpd_did_not_write(tmp_path):
    data, validation = _stream()
    (tmp_path / "config.json").write_text('{"model": "mine"}')
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "step-00000001").mkdir()
    with pytest.raises(FileExistsError, match="config.json is not a configuration written"):
        training.train(_config(steps=2), tmp_path, force=True, data=data,
                       validation=validation, log=_quiet)
    assert (tmp_path / "config.json").read_text() == '{"model": "mine"}'
    assert (tmp_path / "checkpoints" / "step-00000001").is_dir()  # nothing deleted


def test_an_unknown_setup_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="unknown set-up 'nope'"):
        training.train(training.make_config("lpd", "nope", "tiny"), tmp_path / "run",
                       log=_quiet)
    assert not (tmp_path / "run").exists()


def test_resume_skips_a_checkpoint_whose_state_is_damaged(tmp_path):
    data, validation = _stream()
    training.train(_config(steps=4), tmp_path, data=data, validation=validation, log=_quiet)
    (tmp_path / "checkpoints" / "step-00000004" / "state.json").write_text("{not json")
    lines = []
    result = training.train(_config(steps=4), tmp_path, resume=True, data=data,
                            validation=validation, log=lines.append)
    text = "\n".join(lines)
    assert "step-00000004: state.json is unreadable" in text
    assert re.search(r"resuming .* from step-0000000[23] ", text)
    assert result.step == 4 and result.status == "completed"


def test_resume_names_a_checkpoint_whose_gradient_ways_are_malformed(tmp_path):
    from lpd.training.checkpoints import WeightsError

    data, validation = _stream()
    training.train(_config(steps=2, precision="float32"), tmp_path, data=data,
                   validation=validation, log=_quiet)
    state_path = tmp_path / "checkpoints" / "step-00000002" / "state.json"
    state = json.loads(state_path.read_text())
    for bad, message in ((["turned"], "must map layer shapes"), ({"k": "sideways"}, "unknown")):
        state_path.write_text(json.dumps({**state, "gradient_ways": bad}))
        with pytest.raises(WeightsError, match=f"state.json.*{message}"):
            training.train(_config(steps=2, precision="float32"), tmp_path, resume=True,
                           data=data, validation=validation, log=_quiet)


def test_resume_refuses_a_different_configuration(tmp_path):
    data, validation = _stream()
    training.train(_config(steps=2), tmp_path, data=data, validation=validation, log=_quiet)
    with pytest.raises(ValueError, match="learning_rate"):
        training.train(_config(steps=2, learning_rate=1e-2), tmp_path, resume=True,
                       data=data, validation=validation, log=_quiet)


def test_interrupt_saves_and_resume_continues(tmp_path, monkeypatch):
    from lpd.methods.networks import layers

    monkeypatch.setattr(layers, "_WAYS", dict(layers._WAYS))  # the ways set below stay here
    data, validation = _stream(interrupt_at=3)
    lines = []
    result = training.train(_config(precision="float32"), tmp_path, data=data,
                            validation=validation, log=lines.append)
    assert result.status == "interrupted" and result.step == 4
    assert (tmp_path / "checkpoints" / "step-00000004" / "state.json").exists()
    assert any("SIGINT" in line for line in lines)
    # The resumed run computes the gradients the way the checkpoint says it did.
    from lpd.methods import networks

    state_path = tmp_path / "checkpoints" / "step-00000004" / "state.json"
    state = json.loads(state_path.read_text())
    # How each convolution's gradient was computed (float32 only), for a bit-exact resume.
    assert state["gradient_ways"] and set(state["gradient_ways"].values()) <= set(
        layers.GRADIENTS)
    saved = {key: "tensorflow" for key in state["gradient_ways"]}
    state_path.write_text(json.dumps({**state, "gradient_ways": saved}))
    data, _ = _stream()
    # The configuration is read back from the run directory.
    result = training.train(None, tmp_path, resume=True, data=data, validation=validation,
                            log=_quiet)
    assert result.status == "completed" and result.step == 6
    assert saved and all(networks.gradient_ways()[key] == "tensorflow" for key in saved)


def test_resume_after_a_crash_during_a_checkpoint_write(tmp_path):
    data, validation = _stream(interrupt_at=2)
    training.train(_config(), tmp_path, data=data, validation=validation, log=_quiet)
    # A crash mid-write leaves a temporary directory and the previous index.
    root = tmp_path / "checkpoints"
    (root / ".tmp-step-00000004-1").mkdir()
    (root / ".tmp-step-00000004-1" / "model.npz").write_bytes(b"partial")
    data, _ = _stream()
    result = training.train(_config(), tmp_path, resume=True, data=data,
                            validation=validation, log=_quiet)
    assert result.step == 6
    assert not list(root.glob(".tmp-*"))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    data, validation = _stream(nan_at=4)
    with pytest.raises(training.NonFiniteLossError, match="step 5") as info:
        training.train(_config(), tmp_path, data=data, validation=validation, log=_quiet)
    assert info.value.step == 5
    assert info.value.checkpoint.name == "step-00000004"
    index = json.loads((tmp_path / "checkpoints" / "index.json").read_text())
    assert index["latest"] == "step-00000004"
    assert not (tmp_path / "checkpoints" / "step-00000005").exists()
    model = training.load_checkpoint(tmp_path, "latest")
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


def test_a_non_finite_step_leaves_weights_and_optimiser_as_they_were():
    from lpd.training import loop

    config = _config()
    model = training.build_model(config.network, SETUP)
    optimizer = tf.keras.optimizers.Adam(1e-3, beta_2=0.99)
    optimizer.build(model.trainable_variables)
    step = loop.make_train_step(model, optimizer, 2)
    data, validation = _stream()
    batch_data, batch_images = next(data(0))
    bad = batch_data.copy()
    bad[0, 0, 0, 0] = np.nan
    before = [w.copy() for w in model.get_weights()]
    moments = [v.numpy().copy() for v in optimizer.variables]
    loss, norm = step(tf.constant(bad), tf.constant(batch_images))
    assert not np.isfinite(float(norm))
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(moments, optimizer.variables,
                                                            strict=True))
    loss, norm = step(tf.constant(batch_data), tf.constant(batch_images))
    assert np.isfinite(float(norm)) and int(optimizer.iterations.numpy()) == 1
    assert not all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(),
                                                        strict=True))


def test_a_fault_of_the_moment_is_retried_and_the_run_stays_the_same(tmp_path, monkeypatch):
    from lpd.training import loop

    data, validation = _stream()
    straight = training.train(_config(), tmp_path / "straight", data=data,
                              validation=validation, log=_quiet)
    real = loop.make_train_step
    calls = []

    def flaky(*args, **kwargs):
        step = real(*args, **kwargs)

        def once_nan(data, images):
            calls.append(1)
            if len(calls) in (4, 5):  # two tries of step 4: as the step gives them,
                return tf.constant(1e-3), tf.constant(np.nan)  # without the update
            return step(data, images)
        return once_nan

    monkeypatch.setattr(loop, "make_train_step", flaky)
    lines = []
    result = training.train(_config(), tmp_path / "flaky", data=data, validation=validation,
                            log=lines.append)
    assert result.status == "completed" and result.step == 6 and len(calls) == 8
    assert all(np.array_equal(a, b) for a, b in zip(
        straight.model.get_weights(), result.model.get_weights(), strict=True))
    assert any("step 4: non-finite loss or gradient on 2 tries" in line
               and "continuing" in line for line in lines)
    records = [json.loads(line) for line in
               (tmp_path / "flaky" / "history.jsonl").read_text().splitlines()]
    assert {"step": 4, "event": "non-finite step retried", "tries": 2,
            "loss": "0.0010000000474974513", "grad_norm": "nan"} in records
    # The event stays in the history when the run resumes, and is no validation.
    training.train(None, tmp_path / "flaky", resume=True, data=data,
                   validation=validation, log=_quiet)
    records = [json.loads(line) for line in
               (tmp_path / "flaky" / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "event" in r] == [4]


def test_huge_learning_rate_is_reported_as_non_finite(tmp_path):
    data, validation = _stream()
    with pytest.raises(training.NonFiniteLossError, match="learning rate"):
        training.train(_config(steps=30, learning_rate=1e30, validation_every=30,
                               checkpoint_every=30), tmp_path, data=data,
                       validation=validation, log=_quiet)


def test_default_data_pipeline_and_time_limit(tmp_path):
    config = training.make_config("lgd", preset="tiny", deterministic=False, steps=1000)
    result = training.train(config, tmp_path, max_seconds=0.0, log=_quiet)
    assert result.status == "time_limit" and result.step == 0
    result = training.train(None, tmp_path, resume=True, max_seconds=3.0, log=_quiet)
    assert result.status == "time_limit" and 0 < result.step < 1000


def test_augmented_default_stream_trains_and_given_data_refuse_it(tmp_path):
    config = training.make_config("lgd", preset="tiny", deterministic=False, steps=2,
                                  augment="dihedral")
    result = training.train(config, tmp_path / "run", log=_quiet)
    assert result.status == "completed" and result.step == 2
    saved = lpd_config.from_json((tmp_path / "run" / "config.json").read_text())
    assert saved.augment == "dihedral"
    data, validation = _stream()
    with pytest.raises(ValueError, match="augment='dihedral' applies to the default"):
        training.train(config, tmp_path / "other", data=data, validation=validation,
                       log=_quiet)
    assert not (tmp_path / "other").exists()
    # Nor does --force delete the run already there before refusing.
    with pytest.raises(ValueError, match="applies to the default"):
        training.train(config, tmp_path / "run", force=True, data=data,
                       validation=validation, log=_quiet)
    assert (tmp_path / "run" / "checkpoints" / "index.json").exists()
    with pytest.raises(ValueError, match="augment must be"):
        _config(augment="rotations")


def test_export_and_load_pretrained(tmp_path):
    data, validation = _stream()
    run = tmp_path / "run"
    result = training.train(_config("lp", steps=3), run, data=data, validation=validation,
                            log=_quiet)
    weights = tmp_path / "weights"
    training.export_weights(run, weights / "ellipses_small" / "lp")
    # float32 on both sides: "auto" may take bfloat16 on a CPU with native bfloat16.
    model = training.load_pretrained("ellipses_small/lp", weights, precision="float32")
    best = training.load_checkpoint(run, "best")
    y = validation[0][:1]
    np.testing.assert_array_equal(model(y).numpy(), best(y).numpy())
    assert result.best_checkpoint is not None

    manifest = json.loads((weights / "ellipses_small" / "lp" / "manifest.json").read_text())
    assert manifest["precision"] in ("float32", "bfloat16")
    # float32 weights load and run with bfloat16 convolutions too, close to float32.
    half = training.load_pretrained("ellipses_small/lp", weights, precision="bfloat16")
    assert all(w.dtype == "float32" for w in half.weights)
    np.testing.assert_allclose(half(y).numpy(), best(y).numpy(), atol=0.05)

    with pytest.raises(training.WeightsError, match="available: ellipses_small/lp"):
        training.load_pretrained("ellipses/lpd", weights)
    path = weights / "ellipses_small" / "lp" / "model.npz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(training.WeightsError, match="corrupt"):
        training.load_pretrained("ellipses_small/lp", weights)
    (weights / "ellipses_small" / "lp" / "manifest.json").unlink()
    with pytest.raises(training.WeightsError, match="corrupt"):
        training.load_pretrained("ellipses_small/lp", weights)


def test_init_from_weights_without_a_manifest_starts_and_records_their_checksum(tmp_path):
    data, validation = _stream()
    source = tmp_path / "source"
    training.train(_config(steps=2), source, data=data, validation=validation, log=_quiet)
    bare = tmp_path / "bare"  # a weights directory with no manifest.json
    training.export_weights(source, bare)
    (bare / "manifest.json").unlink()
    result = training.train(_config(steps=2, init_from=str(bare)), tmp_path / "tuned",
                            data=data, validation=validation, log=_quiet)
    assert result.status == "completed"
    state = json.loads((tmp_path / "tuned" / "checkpoints" / "step-00000000" / "state.json")
                       .read_text())
    assert state["init"]["sha256"] == hashlib.sha256((bare / "model.npz").read_bytes()
                                                     ).hexdigest()


def test_init_from_starts_at_the_given_weights_and_records_them(tmp_path):
    data, validation = _stream()
    source = tmp_path / "source"
    training.train(_config(steps=3), source, data=data, validation=validation, log=_quiet)
    best = training.load_checkpoint(source, "best")
    best_dir = source / "checkpoints" / json.loads(
        (source / "checkpoints" / "index.json").read_text())["best"]
    best_psnr = json.loads((best_dir / "state.json").read_text())["validation"]["psnr"]

    tuned = tmp_path / "tuned"
    config = _config(steps=4, init_from=str(source), learning_rate=1e-4)
    lines = []
    # A time limit of 0 stops before the first step: the weights are the source's.
    result = training.train(config, tuned, data=data, validation=validation,
                            log=lines.append, max_seconds=0)
    assert result.step == 0
    # The starting weights are a checkpoint of the run, and its best so far.
    assert result.best_checkpoint == tuned / "checkpoints" / "step-00000000"
    for ours, theirs in zip(result.model.weights, best.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    assert any(line.startswith("initialised from") for line in lines)
    history = [json.loads(line) for line in (tuned / "history.jsonl").read_text().splitlines()]
    assert history[0]["step"] == 0
    assert history[0]["psnr"] == pytest.approx(best_psnr, abs=1e-4)

    # Resuming takes the run's own checkpoint; the record of the source stays.
    data, _ = _stream()
    result = training.train(config, tuned, resume=True, data=data, validation=validation,
                            log=_quiet)
    assert result.status == "completed" and result.step == 4
    state = json.loads((result.checkpoint / "state.json").read_text())
    sha = hashlib.sha256((best_dir / "model.npz").read_bytes()).hexdigest()
    assert state["init"]["sha256"] == sha and state["init"]["step"] == 3
    weights = training.export_weights(tuned, tmp_path / "weights" / "tuned")
    manifest = json.loads((weights / "manifest.json").read_text())
    assert manifest["init_from"]["sha256"] == sha
    # Samples count the whole lineage: the source's 3 steps, then these 4.
    batch = config.batch_size
    assert state["init"]["samples"] == 3 * batch and manifest["samples"] == 7 * batch
    history = [json.loads(line) for line in (tuned / "history.jsonl").read_text().splitlines()]
    assert [r["samples"] for r in history] == [3 * batch + r["step"] * batch for r in history]


def test_samples_seen_follows_the_lineage_of_the_weights(tmp_path):
    from lpd.training.weights import samples_seen

    assert samples_seen({"step": 10}, 5) == 50  # from scratch
    assert samples_seen({"step": 10, "init": {"samples": 7}}, 5) == 57
    assert samples_seen({"step": 10, "init_from": {"sha256": "x"}}, 5) is None  # unknown
    assert samples_seen({"samples": 3, "step": 10}, 5) == 3
    assert samples_seen({}, 5) is None


def test_init_from_refuses_missing_corrupt_or_foreign_weights(tmp_path):
    data, validation = _stream()
    with pytest.raises(training.WeightsError, match="no such directory.*shipped: "):
        training.train(_config(init_from=str(tmp_path / "nowhere")), tmp_path / "a",
                       data=data, validation=validation, log=_quiet)
    assert not (tmp_path / "a").exists()  # nothing written for a bad source

    lgd_run = tmp_path / "lgd"
    training.train(_config("lgd", steps=2), lgd_run, data=data, validation=validation,
                   log=_quiet)
    with pytest.raises(training.WeightsError, match="another network.*method"):
        training.train(_config(init_from=str(lgd_run)), tmp_path / "b", data=data,
                       validation=validation, log=_quiet)

    shipped = training.export_weights(lgd_run, tmp_path / "weights" / "lgd")
    path = shipped / "model.npz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(training.WeightsError, match="corrupt"):
        training.train(_config("lgd", init_from=str(shipped)), tmp_path / "c", data=data,
                       validation=validation, log=_quiet)
    with pytest.raises(ValueError, match="init_from"):
        _config(init_from="  ")
    # --force into the run it starts from would delete its own source: refused.
    with pytest.raises(ValueError, match="inside the output directory"):
        training.train(_config("lgd", init_from=str(lgd_run)), lgd_run, force=True, data=data,
                       validation=validation, log=_quiet)
    assert training.load_checkpoint(lgd_run) is not None


def test_load_pretrained_says_when_nothing_is_shipped(tmp_path):
    with pytest.raises(training.WeightsError, match="no pretrained weights"):
        training.load_pretrained("ellipses/lpd", tmp_path / "nowhere")


def test_the_precision_used_is_recorded_and_a_bad_one_refused(tmp_path):
    data, validation = _stream(interrupt_at=1)
    training.train(_config("lp", steps=4, precision="bfloat16"), tmp_path / "run", data=data,
                   validation=validation, log=_quiet)
    states = [json.loads(p.read_text())
              for p in (tmp_path / "run" / "checkpoints").glob("*/state.json")]
    assert states and all(state["precision"] == "bfloat16" for state in states)
    # A run may go on in another precision (say, once bfloat16 is known to be as good).
    data, _ = _stream()
    lines = []
    result = training.train(_config("lp", steps=4, precision="float32"), tmp_path / "run",
                            resume=True, data=data, validation=validation, log=lines.append)
    assert result.status == "completed" and result.step == 4
    assert any("computed its convolutions in bfloat16 until step" in line
               and "goes on in float32" in line for line in lines), lines
    with pytest.raises(ValueError, match="precision must be one of"):
        _config(precision="half")


def test_presets_and_config_round_trip():
    paper = training.make_config("lpd", "ellipses", "paper")
    assert (paper.steps, paper.batch_size, paper.learning_rate, paper.beta_2,
            paper.clip_global_norm) == (100_001, 5, 1e-3, 0.99, 1.0)
    assert paper.network == lpd_config.NetworkConfig(method="lpd")
    for method in training.METHODS:
        for preset in training.PRESETS:
            config = training.make_config(method, preset=preset, seed=3)
            assert config.network.method == method and config.seed == 3
            assert lpd_config.from_json(lpd_config.to_json(config)) == config
    assert training.make_config("lpd", "human_small").images == "real_ct"
    assert training.make_config("lpd", "ellipses").images == "ellipses"
    with pytest.raises(ValueError, match="preset"):
        training.make_config("lpd", preset="nope")
    with pytest.raises(ValueError, match="method"):
        training.make_config("tv")


def test_build_model_picks_the_prelog_model_for_poisson_setups():
    network = lpd_config.NetworkConfig(method="lpd", n_iter=1, filters=4)
    assert training.build_model(network, "human_small").prelog_mu == 0.02
    assert training.build_model(network, "human_small", post_log=True).prelog_mu is None
    assert training.build_model(network, SETUP).prelog_mu is None


def _run_python(*parts: str, timeout: float = 240) -> dict:
    code = "\n".join(textwrap.dedent(part) for part in parts)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=timeout, env=env,
                          cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


_PRELUDE = """
import json, os, sys, tempfile
sys.path.insert(0, "tests")
import numpy as np
from test_training import _config, _quiet, _stream
from lpd import training
out = tempfile.mkdtemp()
"""


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one():
    # In a subprocess: op determinism is process-wide and cannot be switched off.
    result = _run_python(_PRELUDE, """
    config = _config(deterministic=True)
    data, validation = _stream()
    straight = training.train(config, out + "/a", data=data, validation=validation, log=_quiet)
    data, _ = _stream(interrupt_at=2)
    first = training.train(config, out + "/b", data=data, validation=validation, log=_quiet)
    data, _ = _stream()
    second = training.train(config, out + "/b", resume=True, data=data,
                            validation=validation, log=_quiet)
    a, b = straight.model.get_weights(), second.model.get_weights()
    print(json.dumps({"first": [first.status, first.step], "second": second.step,
                      "equal": all(np.array_equal(x, y) for x, y in zip(a, b, strict=True)),
                      "max_diff": max(float(np.abs(x - y).max()) for x, y in zip(a, b))}))
    """)
    assert result["first"] == ["interrupted", 3]
    assert result["second"] == 6
    assert result["equal"], result


def test_training_on_two_logical_cpu_devices():
    result = _run_python("""
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    """, _PRELUDE, """
    data, validation = _stream()
    # float32: "auto" may take bfloat16, whose rounding differs with the batch per device.
    config = _config(steps=3, distribute="mirrored", precision="float32")
    two = training.train(config, out + "/two", data=data, validation=validation, log=_quiet)
    one = training.train(_config(steps=3, distribute="none", precision="float32"),
                         out + "/one", data=data, validation=validation, log=_quiet)
    a, b = two.model.get_weights(), one.model.get_weights()
    diff = max(float(np.abs(x - y).max() / (np.abs(y).max() + 1e-12))
               for x, y in zip(a, b, strict=True))
    print(json.dumps({"devices": len(tf.config.list_logical_devices("CPU")),
                      "status": two.status, "step": two.step, "diff": diff,
                      "finite": all(bool(np.all(np.isfinite(x))) for x in a)}))
    """)
    assert result["devices"] == 2
    assert result["status"] == "completed" and result["step"] == 3 and result["finite"]
    # Same update as on one device, up to the order of the summation.
    assert result["diff"] < 1e-4, result


def test_shipping_again_keeps_what_was_known_of_the_same_starting_weights(tmp_path):
    from lpd.training.weights import _known_init

    previous = tmp_path / "manifest.json"
    previous.write_text(json.dumps({"init_from": {"sha256": "abc", "samples": 9500}}))
    assert _known_init({"sha256": "abc"}, previous)["samples"] == 9500
    assert "samples" not in _known_init({"sha256": "other"}, previous)
    assert _known_init({"sha256": "abc", "samples": 1}, previous)["samples"] == 1
    assert "samples" not in _known_init({"sha256": "abc"}, tmp_path / "none.json")


def test_shipping_a_run_over_the_weights_it_started_from_keeps_their_curve(tmp_path):
    from lpd.training.weights import _earlier_history

    dest = tmp_path / "weights"
    dest.mkdir()
    (dest / "manifest.json").write_text(json.dumps({"sha256": "abc"}))
    (dest / "history.jsonl").write_text("".join(
        json.dumps({"step": s, "psnr": 30 + s / 100, "samples": 1000 + 5 * s}) + "\n"
        for s in (0, 100, 200, 300)))
    run = "".join(json.dumps({"step": s, "psnr": 33.0, "samples": 2000 + 5 * s}) + "\n"
                  for s in (0, 50))  # started from the step-200 weights: 2 000 samples
    earlier = _earlier_history({"sha256": "abc"}, dest, run)
    assert [json.loads(line)["step"] for line in earlier.splitlines()] == [0, 100]
    # Other weights, records without samples, or nothing there: nothing is carried.
    assert _earlier_history({"sha256": "other"}, dest, run) == ""
    assert _earlier_history(None, dest, run) == ""
    assert _earlier_history({"sha256": "abc"}, dest, '{"step": 0, "psnr": 1}\n') == ""
    assert _earlier_history({"sha256": "abc"}, tmp_path / "none", run) == ""
    # Records without samples take them from the weights' manifest (batch of its config).
    (dest / "config.json").write_text(lpd_config.to_json(_config(batch_size=5)))
    (dest / "manifest.json").write_text(json.dumps(
        {"sha256": "abc", "step": 200, "init_from": {"sha256": "x", "samples": 1000}}))
    (dest / "history.jsonl").write_text("".join(
        json.dumps({"step": s, "psnr": 30.0}) + "\n" for s in (0, 100, 200, 300)))
    earlier = [json.loads(line) for line in
               _earlier_history({"sha256": "abc"}, dest, run).splitlines()]
    assert [(r["step"], r["samples"]) for r in earlier] == [(0, 1000), (100, 1500)]

    # A run that started from a checkpoint of another run (a copy with that run's history
    # beside it), which had started from the same weights as the ones being replaced (a
    # sibling line): the weights' records, then the other run's, then this run's.
    other = tmp_path / "other-run"
    other.mkdir()
    (other / "state.json").write_text(json.dumps({"step": 40, "init": {"sha256": "x"}}))
    (other / "history.jsonl").write_text("".join(
        json.dumps({"step": s, "psnr": 31.0, "samples": 1000 + 5 * s}) + "\n"
        for s in (0, 20, 40, 60)))  # its records go beyond the copied checkpoint's step
    (dest / "manifest.json").write_text(json.dumps(
        {"sha256": "sibling", "step": 200, "init_from": {"sha256": "x", "samples": 1000}}))
    (dest / "history.jsonl").write_text("".join(
        json.dumps({"step": s, "psnr": 30.0, "samples": s}) + "\n" for s in (0, 500, 1500)))
    run = json.dumps({"step": 0, "psnr": 32.0, "samples": 1200}) + "\n"
    earlier = [json.loads(line) for line in _earlier_history(
        {"sha256": "ckpt", "source": str(other)}, dest, run).splitlines()]
    assert [(r["psnr"], r["samples"]) for r in earlier] == [
        (30.0, 0), (30.0, 500), (31.0, 1000), (31.0, 1100)]
    # Unrelated weights being replaced: only the other run's records.
    (dest / "manifest.json").write_text(json.dumps({"sha256": "y", "init_from": {"sha256": "z"}}))
    earlier = [json.loads(line) for line in _earlier_history(
        {"sha256": "ckpt", "source": str(other)}, dest, run).splitlines()]
    assert [r["samples"] for r in earlier] == [1000, 1100]
