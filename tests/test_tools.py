"""Tests for the scripts in tools/ (shipping weights is tested in test_reproduce.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from lpd.data import pipelines as datasets
from lpd.data import real as realdata

_TOOLS = Path(__file__).resolve().parents[1] / "tools"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, _TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fit_gap_scores_each_split_of_the_head_ct(capsys):
    try:
        realdata.load_inv3()
    except datasets.DataSourceMissing as err:
        pytest.skip(str(err))
    fit_gap = _script("fit_gap")
    assert fit_gap.main(["human_small/unet", "--noise-draws", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    rows = {line.split()[1]: line.split() for line in lines}
    assert set(rows) == set(fit_gap.SPLITS)
    assert [int(rows[s][2]) for s in fit_gap.SPLITS] == [67, 12, 12]
    psnr = {s: float(rows[s][3]) for s in fit_gap.SPLITS}
    # A trained model: far better than FBP (about 22 dB) on every split.
    assert min(psnr.values()) > 24


def test_fit_gap_refuses_models_without_a_finite_training_set(capsys):
    assert _script("fit_gap").main(["ellipses/lpd"]) == 1
    assert "finite training set" in capsys.readouterr().err


def _fake_run(root: Path, *, batch: int, steps: list[int], times: list[float], init=None):
    import json

    (root / "checkpoints" / f"step-{steps[-1]:08d}").mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({
        "batch_size": batch, "steps": 1000, "setup": "ellipses", "validation_every": 10,
        "network": {"method": "lpd"}}))
    (root / "checkpoints" / "index.json").write_text(json.dumps({
        "latest": f"step-{steps[-1]:08d}", "best_psnr": 30.0, "best_step": steps[-1]}))
    state = {"step": steps[-1], "init": init}
    (root / "checkpoints" / f"step-{steps[-1]:08d}" / "state.json").write_text(
        json.dumps(state))
    (root / "history.jsonl").write_text("".join(
        json.dumps({"step": s, "psnr": 20.0 + s / 100, "learning_rate": 1e-3, "time": t}) + "\n"
        for s, t in zip(steps, times, strict=True)))


def test_run_status_counts_samples_through_starts_and_rates_the_last_sitting(tmp_path, capsys):
    run_status = _script("run_status")
    start = tmp_path / "start"
    # 30 steps at batch 2 from weights that had seen 7 samples
    _fake_run(start, batch=2, steps=[0, 10, 20, 30], times=[0, 10, 20, 30],
              init={"samples": 7})
    (start / "state.json").write_text((start / "checkpoints" / "step-00000030" /
                                       "state.json").read_text())
    run = tmp_path / "run"
    # 10 s per step, stopped for an hour after step 20, then 20 s per step
    _fake_run(run, batch=5, steps=[0, 10, 20, 30, 40], times=[0, 100, 200, 3800, 4000],
              init={"source": str(start), "sha256": "x"})
    with open(run / "history.jsonl", "a") as f:  # an event is no validation
        f.write(json.dumps({"step": 33, "event": "non-finite step retried", "loss": "0.1",
                            "grad_norm": "nan"}) + "\n")
    assert run_status.main([str(run)]) == 0
    out = capsys.readouterr().out
    assert "step 40 of 1000 at batch 5; samples seen 267 (with the start's)" in out  # 200 + 67
    assert "rate: 180 steps/h = 900 samples/h (steps 30-40)" in out
    assert "validation: 0:20.00, 10:20.10, 20:20.20, 30:20.30, 40:20.40" in out
    assert "event at step 33: non-finite step retried (loss 0.1, gradient norm nan)" in out
    assert run_status.main([str(tmp_path)]) == 2


def test_train_pnp_keeps_the_best_iteration_count_with_its_own_tuning(tmp_path, capsys):
    pytest.importorskip("tensorflow")
    from lpd.methods import pnp

    config = pnp.DenoiserConfig(shape=(32, 32), features=4, depth=2, patch=16, batch_size=4,
                                steps=2, phantoms_per_step=1)
    network, record = pnp.train_denoiser(config, log=lambda line: None)
    root = tmp_path / "weights"
    pnp.save_denoiser(network, record, pnp.denoiser_dir("ellipses", root))
    train_pnp = _script("train_pnp")
    argv = ["--setup", "ellipses_small", "--n-val", "1", "--n-iter", "1", "2",
            "--ensemble", "full", "--root", str(root)]
    train_pnp.main(argv)
    written = json.loads(pnp.pnp_path("ellipses_small", root).read_text())
    searches = written["search"]["by_iterations"]
    assert [s["n_iter"] for s in searches] == [1, 2]
    best = max(searches, key=lambda s: s["levels"]["score"])
    assert written["params"]["n_iter"] == best["n_iter"]
    assert written["params"]["ensemble"] == "full"
    assert written["search"]["score"] == best["levels"]["score"]
    assert pnp.load_pnp("ellipses_small", pnp.pnp_path("ellipses_small", root)).ensemble == "full"
    with pytest.raises(SystemExit, match="exists"):
        train_pnp.main(argv)


@pytest.mark.parametrize("means, note", [([20.0, 21.0, 22.0], True), ([20.0, 23.0, 22.0], False)])
def test_tune_dip_says_when_the_best_is_the_last_step_tried(tmp_path, capsys, monkeypatch,
                                                           means, note):
    pytest.importorskip("tensorflow")
    from lpd.methods import dip

    def curve(setup, data, truth, n_max, every, **settings):
        steps = list(range(every, n_max + 1, every))
        return {"steps": steps, "psnr": [means] * len(truth), "mean": means,
                "best": steps[int(max(range(len(means)), key=means.__getitem__))]}

    monkeypatch.setattr(dip, "iteration_curve", curve)
    out = tmp_path / "dip.json"
    _script("tune_dip").main(["--setup", "ellipses_small", "--n-val", "1", "--max-steps", "30",
                              "--every", "10", "--tv-weight", "1e-3", "--out", str(out)])
    printed = capsys.readouterr().out
    assert ("the best is the last step tried" in printed) is note
    assert json.loads(out.read_text())["params"]["n_iter"] == (30 if note else 20)
