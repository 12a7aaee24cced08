"""`lpd reproduce limit` (lpd.evaluation.limit): its table, its arithmetic, its errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from lpd.data import phantoms, pipelines
from lpd.evaluation import limit


def test_normalised_errors_are_ratios_of_summed_squared_errors():
    errors = {"cm": [1.0, 2.0, 2.0], "fbp": [10.0, 30.0, 10.0]}
    psnrs = {"cm": [40.0, 30.0, 32.0], "fbp": [20.0, 25.0, 27.0]}
    rows = {r["method"]: r for r in limit._rows(("fbp",), errors, psnrs, 4)}
    assert rows["cm"]["ratio_held_out"] == rows["cm"]["ratio_shepp_logan"] == 1.0
    # Shepp-Logan first, then the held-out images: 40 / 4 and 10 / 1.
    assert rows["fbp"]["ratio_held_out"] == pytest.approx(10.0)
    assert rows["fbp"]["ratio_shepp_logan"] == pytest.approx(10.0)
    assert rows["fbp"]["psnr_held_out"] == pytest.approx(26.0)
    # The mean squared error per pixel (4 of them) over the held-out images.
    assert rows["fbp"]["mse_held_out"] == pytest.approx(20.0 / 4)
    assert rows["fbp"]["seed_ratio"] == 372.0 and rows["cm"]["seed_ratio"] == 1.0
    assert rows["fbp"]["ratio_held_out_at_most"] is None
    # The planted chains' bounds on the conditional mean's error (held-out images only)
    # bound each ratio from above: 40 / (1 + 1), and 4 / 2 for the chains' own mean.
    bounded = {r["method"]: r for r in limit._rows(("fbp",), errors, psnrs, 4, [1.0, 1.0])}
    assert bounded["fbp"]["ratio_held_out_at_most"] == pytest.approx(20.0)
    assert bounded["cm"]["ratio_held_out_at_most"] == pytest.approx(2.0)


def test_quick_limit_run_writes_its_table_figures_and_diagnostics(tmp_path):
    out = tmp_path / "limit"
    lines = []
    rows = limit.run("quick", out, log=lines.append)
    for name in ("results.csv", "results.md", "limit.png", "posterior.png", "bracket.png",
                 "run.json"):
        assert (out / name).is_file(), name
    assert [r["method"] for r in rows] == ["cm", "fbp"]
    with open(out / "results.csv") as f:
        assert [r["method"] for r in csv.DictReader(f)] == ["cm", "fbp"]
    meta = json.loads((out / "run.json").read_text())
    assert meta["images"][0] == "Shepp-Logan" and len(meta["diagnostics"]) == 3
    for d in meta["diagnostics"]:
        assert d["rhat_log_likelihood"] > 0 and len(d["start_ellipses"]) == 2
    # Planted chains on the held-out images (not on Shepp-Logan, no draw from the prior),
    # started at the phantom's ellipses: their bound on the conditional mean's error is
    # below the chains' mean's error on average, and bounds the ratios from above.
    assert "planted" not in meta["diagnostics"][0]
    for i, d in enumerate(meta["diagnostics"][1:]):
        planted = d["planted"]
        assert planted["rhat"] > 0 and planted["bound"] > 0 and len(planted["ellipses"]) == 2
        phantom = phantoms.random_ellipse_params(pipelines.fixed_image_rng(2018, i))
        assert planted["start_ellipses"] == [len(phantom)] * 2
    bound, cm = meta["limit_psnr_held_out_at_most"], rows[0]["psnr_held_out"]
    assert bound == pytest.approx(np.mean(meta["limit_psnr_at_most"])) and bound > cm
    for r in rows:
        assert r["ratio_held_out_at_most"] >= r["ratio_held_out"] > 0
    text = (out / "results.md").read_text()
    # The verdict follows the diagnostics.
    assert ("Not converged" in text) != meta["converged"]
    assert "45.4 dB" in text
    with pytest.raises(FileExistsError):
        limit.run("quick", out, log=lines.append)
    # Each image's conditional mean was kept: a second run reads them, and gives the same
    # table.
    cached = sorted(p.name for p in (out / "images").iterdir())
    assert cached == ["00.npz", "01-planted.npz", "01.npz", "02-planted.npz", "02.npz"]
    lines.clear()
    again = limit.run("quick", out, force=True, log=lines.append)
    assert sum("read from" in line for line in lines) == 5
    assert again == rows
    assert "3 of the 3 images sampled by an earlier run" in (out / "results.md").read_text()


def test_a_cached_conditional_mean_is_read_only_with_its_own_fingerprint(tmp_path):
    calls = []

    def compute(value):
        def sample():
            calls.append(value)
            image = np.full((2, 2), value)
            return {"mean": image, "std": image / 10, "diagnostics": {}, "chains": [],
                    "start_counts": [1], "detected": 0, "seconds": 1.0,
                    "greedy_seconds": 0.5}
        return sample

    cache = tmp_path / "images" / "00.npz"
    first = limit._cached_mean(cache, "a", compute(1.0), print)
    again = limit._cached_mean(cache, "a", compute(2.0), print)
    assert calls == [1.0] and np.array_equal(again["mean"], first["mean"])
    assert again["summary"] == first["summary"] and again["summary"]["seconds"] == 1.5
    other = limit._cached_mean(cache, "b", compute(3.0), print)
    assert calls == [1.0, 3.0] and other["mean"][0, 0] == 3.0
    assert limit._cached_mean(cache, "b", compute(4.0), print)["mean"][0, 0] == 3.0


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown preset"):
        limit.run("huge", tmp_path / "x")
    with pytest.raises(ValueError, match="unknown method"):
        limit.run("quick", tmp_path / "x", methods=["fpb"])


def _entry(traces, **summary):
    return {"traces": None if traces is None else np.asarray(traces, np.float64),
            "summary": summary}


def test_the_greedy_chains_are_checked_against_the_planted_ones():
    rng = np.random.default_rng(0)
    planted = _entry(rng.normal(100.0, 2.0, (2, 400)), ellipses=[50.0, 52.0], distance=8.0,
                     seconds=3.0, start_ellipses=[49, 49])
    # Greedy chains whose log-likelihood sits where the planted chains' does agree with them;
    # chains ten standard deviations below do not, and the verdict says so.
    same = limit._planted_check(_entry(rng.normal(100.0, 2.0, (2, 400))), planted)
    low = limit._planted_check(_entry(rng.normal(80.0, 2.0, (2, 400))), planted)
    assert abs(same["gap"]) < 0.3 and same["rhat"] < 1.05
    assert low["gap"] == pytest.approx(-10.0, abs=0.5) and low["rhat"] > 2
    assert same["bound"] == low["bound"] == 4.0 and same["ellipses"] == [50.0, 52.0]
    agree = {"rhat_log_likelihood": 1.01, "rhat_pixels_p99": 1.02}
    assert limit._converged(agree) and limit._converged({**agree, "planted": same})
    assert not limit._converged({**agree, "planted": low})
    # From a cache without the greedy chains' traces: their mean log-likelihoods instead.
    old = limit._planted_check(_entry(None, log_likelihood=[79.0, 81.0]), planted)
    assert old["rhat"] is None and old["gap"] == pytest.approx(-10.0, abs=0.5)
    assert not limit._converged({**agree, "planted": old})
    older = limit._planted_check(_entry(None), planted)
    assert older["gap"] is None and not limit._converged({**agree, "planted": older})
