"""Figures of lpd.evaluation.figures: what their panels say."""

from __future__ import annotations

import numpy as np
import pytest

from lpd.evaluation import figures


def test_grid_figure_heads_every_column_even_where_its_first_row_did_not_run(tmp_path,
                                                                              monkeypatch):
    saved = {}

    def keep(fig, path, overwrite):
        saved["titles"] = [ax.get_title() for ax in fig.axes]
        saved["suptitle"] = fig._suptitle.get_text()
        saved["top"] = max(ax.get_position().y1 for ax in fig.axes)
        return path

    monkeypatch.setattr(figures, "_save", keep)
    truth = np.zeros((8, 8))
    rows = [("case 1", truth, {"A": truth + 0.1}, {"A": "1 dB"}),
            ("case 2", truth, {"A": truth, "B": truth + 0.2}, {"A": "2 dB", "B": "3 dB"})]
    figures.grid_figure(rows, tmp_path / "grid.png", title="a title")
    first_row = saved["titles"][:5]
    assert first_row[0] == "ground truth"
    assert first_row[1] == "A\n1 dB" and first_row[2] == "B\n(not run)"
    assert first_row[3].startswith("|error| A") and first_row[4].startswith("|error| B")
    assert saved["suptitle"] == "a title"
    # The axes leave 0.8 inch for the title and the two-line column titles above them.
    assert abs(saved["top"] - (1 - 0.8 / (2.2 * len(rows)))) < 1e-6


def test_a_failed_method_does_not_black_out_the_other_error_maps():
    rng = np.random.default_rng(0)
    good = 0.1 * rng.random((16, 16))
    wild = 500 * rng.random((16, 16))
    assert figures.error_scale([good, wild], 1.0) == pytest.approx(np.percentile(good, 99.5))
    assert figures.error_scale([wild], 1.0) == 1.0  # everything beyond the window: the window
    assert figures.error_scale([], 1.0) == 1.0
    assert figures.error_scale([np.zeros((4, 4))], 1.0) == 1.0
