"""`lpd reproduce mri` (lpd.evaluation.mri) on one cell of the grid and two test slices."""

from __future__ import annotations

import csv

import pytest

from lpd.data.pipelines import DataError
from lpd.evaluation import mri


@pytest.fixture
def one_cell(monkeypatch):
    from lpd.data import brain_mri

    try:
        brain_mri.brain_mri_path()
    except DataError as err:
        pytest.skip(f"brain MRI not installed: {err}")
    preset = {"cells": (mri.Cell("radial", 4, 0),), "methods": ("zf", "tv"), "n_test": 2,
              "seed": 2018, "timing": {"repeats": 1, "warmup": 0}}
    monkeypatch.setitem(mri.MRI.presets, "one", preset)
    return "one"


def test_one_cell_writes_the_table_beside_the_seeds(one_cell, tmp_path):
    out = tmp_path / "mri"
    rows = mri.run(one_cell, out, log=lambda line: None)
    assert [r["method"] for r in rows] == ["zf", "tv"]
    assert {p.name for p in out.iterdir()} == {"results.csv", "results.md", "masks.png",
                                              "reconstructions.png", "run.json"}
    table = list(csv.DictReader((out / "results.csv").open()))
    assert table[0]["setup"] == "brain_mri_radial4_noise0" and table[0]["rate"] == "1/4"
    assert float(table[0]["paper_psnr"]) == 25.45  # the seed's ZF of this cell
    # TV is ahead of zero filling, as in every cell of the seed's table.
    assert float(table[1]["psnr"]) > float(table[0]["psnr"])
    text = (out / "results.md").read_text()
    assert "(25.45 / 0.51)" in text and "(32.32 / 0.90)" in text
    with pytest.raises(FileExistsError, match="--force"):
        mri.run(one_cell, out, log=lambda line: None)
    mri.run(one_cell, out, methods=["zf"], force=True, log=lambda line: None)
    assert len(list(csv.DictReader((out / "results.csv").open()))) == 1


def test_the_command_refuses_what_mri_does_not_take(tmp_path, capsys):
    from lpd import cli

    assert cli.main(["reproduce", "mri", "--train", "--out", str(tmp_path)]) != 0
    assert "--train is not supported" in capsys.readouterr().err
    assert cli.main(["reproduce", "noise", "--images", "x.npy", "--out", str(tmp_path)]) != 0
    assert "--images is not supported" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not apply to MRI"):
        mri.run("default", tmp_path / "x", methods=["fbp"], log=lambda line: None)


def test_a_cell_without_networks_is_reported_not_trained(one_cell, tmp_path, monkeypatch):
    from lpd.methods import splitting

    monkeypatch.setattr(splitting, "weights_dir",
                        lambda name, root=None, network="scae": tmp_path / "none")
    monkeypatch.setitem(mri.MRI.presets[one_cell], "methods", ("zf", "admm"))
    lines = []
    rows = mri.run(one_cell, tmp_path / "out", log=lines.append)
    assert [r["method"] for r in rows] == ["zf"]
    assert any("left out of this cell" in line for line in lines)
    text = (tmp_path / "out" / "results.md").read_text()
    assert "not trained" in text and "train_splitting.py" in text


def test_a_cell_without_its_lpd_says_how_to_train_it(one_cell, tmp_path, monkeypatch):
    monkeypatch.setitem(mri.MRI.presets[one_cell], "methods", ("zf", "lpd"))
    from lpd.training import weights

    monkeypatch.setattr(weights, "default_weights_dir", lambda: tmp_path / "no-weights")
    rows = mri.run(one_cell, tmp_path / "out", log=lambda line: None)
    assert [r["method"] for r in rows] == ["zf"]
    text = (tmp_path / "out" / "results.md").read_text()
    assert "| not trained |" in text
    assert "`lpd train --setup <set-up> --method lpd --images brain_mri`" in text
    assert "train_splitting.py" not in text


def test_the_full_grid_runs_the_rate_4_networks_where_a_cell_has_none(one_cell, tmp_path,
                                                                       monkeypatch):
    from lpd.methods import splitting

    own = splitting.weights_dir("brain_mri_radial4_noise10") / "splitting.json"
    if not own.exists():
        pytest.skip("the shipped networks of radial 1/4, 10 % are not here")
    preset = dict(mri.MRI.presets[one_cell], cells=(mri.Cell("radial", 3, 10),
                                                    mri.Cell("radial", 4, 10)),
                  methods=("zf", "admm"), n_test=1, networks_from_rate=4)
    monkeypatch.setitem(mri.MRI.presets, one_cell, preset)
    lines = []
    rows = mri.run(one_cell, tmp_path / "out", log=lines.append)
    assert [(r["setup"], r["method"]) for r in rows] == [
        ("brain_mri_radial3_noise10", "zf"), ("brain_mri_radial3_noise10", "admm"),
        ("brain_mri_radial4_noise10", "zf"), ("brain_mri_radial4_noise10", "admm")]
    assert "slices of brain_mri_radial4_noise10" in rows[1]["training"]
    assert "slices of" not in rows[3]["training"]
    # The learned regulariser of rate 1/4 still beats zero filling at rate 1/3.
    assert rows[1]["psnr"] > rows[0]["psnr"] + 2
    text = (tmp_path / "out" / "results.md").read_text()
    radial3, radial4 = (line for line in text.splitlines() if line.startswith("| radial"))
    assert "†" in radial3 and "†" not in radial4
    assert "† with the networks trained at rate 1/4 of the same pattern" in text
