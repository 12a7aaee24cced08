"""Tests of lpd.evaluation: scoring any reconstructor and writing the results table."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from lpd import metrics
from lpd.data import phantoms
from lpd.evaluation import scoring as evaluation
from lpd.methods import classical
from lpd.physics import operators


@pytest.fixture(scope="module")
def small_set():
    setup = operators.get_setup("ellipses_small")
    rng = np.random.default_rng(3)
    truth = np.stack([phantoms.shepp_logan(setup.space.shape),
                      phantoms.random_ellipses(rng, setup.space.shape)])
    clean = np.stack([setup.operator(t).data for t in truth])
    data = clean + 0.05 * np.mean(np.abs(clean), axis=(1, 2), keepdims=True) * \
        rng.standard_normal(clean.shape)
    return setup, data.astype(np.float32), truth


def test_evaluate_classical_reconstructor(small_set):
    setup, data, truth = small_set
    fbp = classical.FBPReconstructor(setup, "Hann", 0.8)
    result = evaluation.evaluate(fbp, data, truth, repeats=2)
    expected = [metrics.psnr(t, fbp(d)) for d, t in zip(data, truth, strict=True)]
    assert result.psnr == pytest.approx(tuple(expected))
    assert result.psnr_mean == pytest.approx(np.mean(expected))
    assert result.psnr_std == pytest.approx(np.std(expected))
    assert len(result.ssim) == 2 and 0 < result.ssim_mean < 1
    assert result.method == "FBP" and result.n_parameters is None
    assert result.params["filter_type"] == "Hann" and result.data_range == 1.0
    assert result.runtime_ms > 0
    row = result.row()
    assert json.loads(row.settings)["frequency_scaling"] == 0.8
    assert row.n_samples == 2 and row.method == "FBP"


class _Batched:
    """A stand-in for a network: batched NHWC output and a parameter count."""

    name = "oracle"
    n_parameters = 1234

    def __init__(self, truth):
        self.truth = truth
        self.calls = []

    def reconstruct_batch(self, data):
        self.calls.append(len(data))
        # Recognise the sample by its data, as a perfect method would.
        index = [int(np.argmin([np.abs(d - s).sum() for s in self.reference]))
                 for d in data]
        return self.truth[index][..., None]


def test_evaluate_batched_reconstructor(small_set):
    _, data, truth = small_set
    net = _Batched(truth)
    net.reference = data
    result = evaluation.evaluate(net, data, truth, batch_size=1, repeats=1, warmup=0)
    assert result.psnr == (math.inf, math.inf)
    assert result.ssim == pytest.approx((1.0, 1.0))
    assert result.n_parameters == 1234 and result.method == "oracle"
    # One call on a batch of one for the memory, two batches of one to reconstruct,
    # then one timed call on a batch of one.
    assert net.calls == [1, 1, 1, 1]


def test_evaluate_keras_style_parameter_count(small_set):
    _, data, truth = small_set

    class Model:
        def count_params(self):
            return 42

        def __call__(self, sample):
            return np.zeros(truth.shape[1:])

    result = evaluation.evaluate(Model(), data, truth, name="zeros", timed=False)
    assert result.n_parameters == 42 and result.method == "zeros"
    assert result.runtime_ms is None


@pytest.mark.parametrize("call, match", [
    (lambda d, t: evaluation.evaluate(lambda x: np.zeros((3, 3)), d, t), "shape"),
    (lambda d, t: evaluation.evaluate(lambda x: np.full(t.shape[1:], np.nan), d, t), "NaN"),
    (lambda d, t: evaluation.evaluate(lambda x: x, d[:1], t), "1 data samples for 2"),
    (lambda d, t: evaluation.evaluate(lambda x: x, d, t[0]), "truth must have shape"),
    (lambda d, t: evaluation.evaluate(lambda x: x, d[:0], t[:0]), "empty"),
])
def test_evaluate_errors(small_set, call, match):
    _, data, truth = small_set
    with pytest.raises(ValueError, match=match):
        call(data, truth)


def _result(method, psnr):
    return evaluation.EvaluationResult(
        method=method, psnr_mean=psnr, psnr_std=0.5, ssim_mean=0.9, ssim_std=0.01,
        psnr=(psnr - 0.5, psnr + 0.5), ssim=(0.89, 0.91), runtime_ms=12.5,
        n_parameters=None if method == "FBP" else 253220, data_range=1.0,
        params={"weight": 1e-3})


def test_write_results_and_refuse_to_overwrite(tmp_path):
    path = tmp_path / "out" / "results.csv"
    rows = [_result("FBP", 19.7), _result("LPD", 38.3)]
    csv_path, md_path = evaluation.write_results(rows, path, title="ellipses")
    with open(csv_path, newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["method"] for r in table] == ["FBP", "LPD"]
    assert tuple(table[0]) == evaluation.COLUMNS
    assert float(table[1]["psnr"]) == pytest.approx(38.3)
    assert table[0]["parameters"] == "" and table[1]["parameters"] == "253220"
    markdown = md_path.read_text()
    assert markdown.startswith("# ellipses") and "| LPD | 38.30 ± 0.50 | 0.900 ± 0.010" in markdown

    before = csv_path.read_text(), md_path.read_text()
    with pytest.raises(FileExistsError):
        evaluation.write_results(rows[:1], path)
    assert (csv_path.read_text(), md_path.read_text()) == before
    # Only the Markdown file exists: still refused, and no CSV appears.
    csv_path.unlink()
    with pytest.raises(FileExistsError):
        evaluation.write_results(rows[:1], path)
    assert not csv_path.exists()
    evaluation.write_results(rows[:1], path, overwrite=True)
    with open(csv_path, newline="") as f:
        assert [r["method"] for r in csv.DictReader(f)] == ["FBP"]
    assert not [p for p in path.parent.iterdir() if p.suffix == ".tmp"]


def test_write_results_errors(tmp_path):
    with pytest.raises(ValueError, match=".csv"):
        evaluation.write_results([_result("FBP", 1.0)], tmp_path / "results.txt")
    with pytest.raises(ValueError, match="unknown columns"):
        evaluation.write_results([{"method": "x", "colour": "red"}], tmp_path / "r.csv")
