"""`lpd reproduce noise` (lpd.evaluation.noise) on its quick preset: FBP and TV at two levels."""

from __future__ import annotations

import csv

import pytest

from lpd.evaluation import noise


def test_quick_noise_run_writes_its_table_and_figure(tmp_path, monkeypatch):
    import dataclasses

    from lpd.methods import classical

    # TV with fewer iterations than the shipped 1000, to keep the test short.
    shipped = classical.load_params
    monkeypatch.setattr(classical, "load_params", lambda name: dataclasses.replace(
        shipped(name), tv_n_iter=150))
    lines = []
    rows = noise.run("quick", tmp_path / "noise", log=lines.append)
    assert {p.name for p in (tmp_path / "noise").iterdir()} == {
        "results.csv", "results.md", "noise.png", "run.json"}
    by = {(r["method"], r["level"]): r for r in rows}
    # More noise, lower PSNR, for every method.
    for key in ("fbp", "tv"):
        assert by[key, 0.01]["psnr"] > by[key, 0.2]["psnr"]
    # TV is re-tuned at each level: a larger weight for noisier data.
    weights = [float(line.split("weight ")[1]) for line in lines if "re-tuned at" in line
               and "weight " in line]
    assert len(weights) == 2 and weights[1] > weights[0]
    assert by["tv", 0.2]["trained_at"] == 0.2 and by["fbp", 0.2]["trained_at"] == 0.05
    table = list(csv.DictReader((tmp_path / "noise" / "results.csv").open()))
    assert len(table) == 4 and table[0]["level"] == "0.01"
    text = (tmp_path / "noise" / "results.md").read_text()
    assert "| 1 % | 20 % |" in text and "TV (re-tuned at the test level)" in text


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown preset"):
        noise.run("huge", tmp_path / "x")
    with pytest.raises(ValueError, match="unknown method"):
        noise.run("quick", tmp_path / "x", methods=["sart"])


def test_training_levels_are_set_ups_and_their_weights_are_found(tmp_path):
    from lpd.config import NOISE_TRAINING_LEVELS, SETUPS

    for level in NOISE_TRAINING_LEVELS:
        setup = SETUPS[f"ellipses_noise{level}"]
        assert setup.noise.relative_std == pytest.approx(level / 100)
        # Everything but the noise is the experiment's set-up.
        assert setup.num_angles == SETUPS["ellipses"].num_angles
        assert setup.shape == SETUPS["ellipses"].shape
        (tmp_path / f"ellipses_noise{level}" / "unet").mkdir(parents=True)
    (tmp_path / "ellipses_noiseless" / "unet").mkdir(parents=True)
    found = noise._retrained("unet", tmp_path)
    assert sorted(found) == [pytest.approx(v / 100) for v in sorted(NOISE_TRAINING_LEVELS)]
    assert noise._retrained("lpd", tmp_path) == {}
