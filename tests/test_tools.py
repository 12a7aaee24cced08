"""Tests for the scripts in tools/ (shipping weights is tested in test_reproduce.py)."""

from __future__ import annotations

import importlib.util
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
