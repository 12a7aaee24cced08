"""Figures of the reproduction: reconstructions side by side, error maps, training curves.

Plain matplotlib (the ``Agg`` back-end, so no display is needed); every function
writes one PNG atomically and returns its path. Nothing here computes a result:
the figures show arrays and histories that `lpd.reproduce` has already scored.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from lpd.io import atomic_write

__all__ = ["reconstruction_figure", "training_curves_figure", "mask_figure", "grid_figure",
           "error_scale", "curves_figure", "posterior_figure", "bracket_figure"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike, overwrite: bool) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return atomic_write(path, buffer.getvalue(), overwrite=overwrite)


def reconstruction_figure(truth: np.ndarray, reconstructions: Mapping[str, np.ndarray],
                          path: str | os.PathLike, *, window: tuple[float, float],
                          narrow_window: tuple[float, float] | None = None,
                          scores: Mapping[str, str] | None = None, title: str = "",
                          overwrite: bool = False) -> Path:
    """Ground truth and each method side by side, in one or two windows, with error maps.

    Row 1 shows every image in ``window``; row 2 (when ``narrow_window`` is
    given) in the narrow window that shows low-contrast detail; the last row
    shows ``|reconstruction - truth|`` on one colour scale for all methods.

    Parameters
    ----------
    truth : array, shape (nx, ny)
    reconstructions : mapping of name to array (nx, ny)
        In the order of the columns.
    path : path
        The PNG to write.
    window, narrow_window : (low, high)
        Grey-level windows in the images' units.
    scores : mapping of name to str, optional
        A caption under each method's name (e.g. ``"32.1 dB / 0.91"``).
    title : str
    overwrite : bool
        Replace an existing file (it is never replaced otherwise).
    """
    plt = _pyplot()
    truth = np.asarray(truth, dtype=np.float64)
    names = ["ground truth", *reconstructions]
    images = [truth, *(np.asarray(r, dtype=np.float64) for r in reconstructions.values())]
    windows = [("full window", window)]
    if narrow_window is not None:
        windows.append(("narrow window", narrow_window))
    errors = [np.abs(image - truth) for image in images[1:]]
    error_max = error_scale(errors, window[1] - window[0])
    n_rows, n_cols = len(windows) + 1, len(images)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.2 * n_cols, 2.35 * n_rows),
                             squeeze=False)
    for row, (label, (low, high)) in enumerate(windows):
        for col, (name, image) in enumerate(zip(names, images, strict=True)):
            ax = axes[row, col]
            ax.imshow(image.T, origin="lower", cmap="gray", vmin=low, vmax=high)
            if row == 0:
                caption = (scores or {}).get(name, "")
                ax.set_title(f"{name}\n{caption}" if caption else name, fontsize=8)
            if col == 0:
                ax.set_ylabel(f"{label}\n[{low:g}, {high:g}]", fontsize=8)
    axes[-1, 0].text(0.5, 0.5, f"|error|\n0 to {error_max:.3g}", ha="center", va="center",
                     fontsize=9, transform=axes[-1, 0].transAxes)
    for col, error in enumerate(errors, start=1):
        axes[-1, col].imshow(error.T, origin="lower", cmap="magma", vmin=0, vmax=error_max)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[-1, 0].set_frame_on(False)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path, overwrite)


def training_curves_figure(histories: Mapping[str, Sequence[Mapping]], path: str | os.PathLike,
                           *, title: str = "", overwrite: bool = False) -> Path:
    """Validation PSNR against training samples, one line per model.

    Parameters
    ----------
    histories : mapping of name to records
        The ``history.jsonl`` records of each run (``psnr`` and ``samples``, the
        training samples the weights had seen, used; ``step`` where a record has
        no ``samples``, and then the axis says so).
    path : path
        The PNG to write.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    kept = {name: [r for r in records if r.get("psnr") is not None
                   # The untrained model of the pre-log schemes can score far below zero.
                   and r["psnr"] > 0] for name, records in histories.items()}
    by_samples = all(r.get("samples") is not None for rs in kept.values() for r in rs)
    for name, records in kept.items():
        x = [r["samples"] if by_samples else r["step"] for r in records]
        ax.plot(x, [r["psnr"] for r in records], marker=".", label=name)
    ax.set_xlabel("training samples seen" if by_samples else "training step")
    ax.set_ylabel("validation PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path, overwrite)


def mask_figure(masks: Mapping[tuple[str, int], np.ndarray], path: str | os.PathLike, *,
                names: Mapping[str, str] | None = None, overwrite: bool = False) -> Path:
    """The sampling masks of MRI: one panel per ``(pattern, rate)``, patterns as rows.

    Each panel shows centred k-space (``imshow(mask.T, origin="lower")``, the zero
    frequency in the middle), white where a coefficient is measured, with the
    measured fraction in its title.
    """
    plt = _pyplot()
    patterns = list(dict.fromkeys(p for p, _ in masks))
    rates = sorted({r for _, r in masks}, reverse=True)
    fig, axes = plt.subplots(len(patterns), len(rates), squeeze=False,
                             figsize=(2.3 * len(rates), 2.5 * len(patterns)))
    for i, pattern in enumerate(patterns):
        for j, rate in enumerate(rates):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            mask = masks.get((pattern, rate))
            if mask is None:
                ax.set_frame_on(False)
                continue
            ax.imshow(np.asarray(mask, float).T, origin="lower", cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
            label = (names or {}).get(pattern, pattern)
            ax.set_title(f"{label}, 1/{rate}\n{100 * np.mean(mask):.1f} % measured", fontsize=8)
    # Above the panels' own two-line titles (bbox_inches="tight" keeps it in the PNG).
    fig.suptitle("sampling masks (centred k-space)", fontsize=10,
                 y=1.0 + 0.12 / len(patterns))
    return _save(fig, path, overwrite)


def error_scale(errors: Sequence[np.ndarray], limit: float) -> float:
    """The top of the shared colour scale of error maps.

    The largest 99.5th percentile of the maps, among those not beyond ``limit``
    (the width of the images' window): a method that fails outright (the exact
    pseudo-inverse's errors run into the hundreds) then shows as saturated
    instead of turning every other map black. ``limit`` itself when every map
    is beyond it; 1 without maps.
    """
    tops = [float(np.percentile(e, 99.5)) for e in errors]
    within = [t for t in tops if t <= limit]
    top = max(within) if within else (float(limit) if tops else 1.0)
    return top or 1.0


def grid_figure(rows: Sequence[tuple[str, np.ndarray, Mapping[str, np.ndarray],
                                     Mapping[str, str]]],
                path: str | os.PathLike, *, window: tuple[float, float] = (0.0, 1.0),
                title: str = "", overwrite: bool = False) -> Path:
    """One row per case: ground truth and each method, then each method's error map.

    ``rows`` holds ``(label, truth, {method: image}, {method: caption})``; a
    method missing from a row leaves its panels blank. Images in ``window``; the error maps
    ``|image - truth|`` share one colour scale over the whole figure.
    """
    plt = _pyplot()
    methods = list(dict.fromkeys(name for _, _, images, _ in rows for name in images))
    errors = [np.abs(np.asarray(img, float) - truth) for _, truth, images, _ in rows
              for img in images.values()]
    error_max = error_scale(errors, window[1] - window[0])
    n_cols = 1 + 2 * len(methods)
    height = 2.2 * len(rows)
    fig, axes = plt.subplots(len(rows), n_cols, squeeze=False, figsize=(1.9 * n_cols, height))
    for i, (label, truth, images, captions) in enumerate(rows):
        axes[i, 0].imshow(np.asarray(truth).T, origin="lower", cmap="gray", vmin=window[0],
                          vmax=window[1])
        axes[i, 0].set_ylabel(label, fontsize=8)
        if i == 0:
            axes[i, 0].set_title("ground truth", fontsize=8)
        for j, name in enumerate(methods):
            ax = axes[i, 1 + j]
            err = axes[i, 1 + len(methods) + j]
            if i == 0:  # the column's header, whether or not it ran here
                err.set_title(f"|error| {name}\n0 to {error_max:.3g}", fontsize=7)
            if name not in images:  # not run for this case: blank panels
                ax.set_title(f"{name}\n(not run)" if i == 0 else "(not run)", fontsize=7)
                continue
            image = np.asarray(images[name], float)
            ax.imshow(image.T, origin="lower", cmap="gray", vmin=window[0], vmax=window[1])
            ax.set_title(f"{name}\n{captions.get(name, '')}" if i == 0 else
                         captions.get(name, ""), fontsize=7)
            err.imshow(np.abs(image - truth).T, origin="lower", cmap="magma", vmin=0,
                       vmax=error_max)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:  # above the column titles, whatever the number of rows
        fig.subplots_adjust(top=1 - 0.8 / height)
        fig.suptitle(title, fontsize=10, y=1.0, va="top")
    return _save(fig, path, overwrite)


def curves_figure(curves: Mapping[str, Mapping[float, float]], path: str | os.PathLike, *,
                  xlabel: str, ylabel: str, x_scale: float = 1.0, marker: float | None = None,
                  title: str = "", overwrite: bool = False) -> Path:
    """One curve per label: ``{label: {x: y}}``, x on a log axis (times ``x_scale``).

    ``marker`` draws a dotted vertical line (the level a method was trained at, say).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, curve in curves.items():
        xs = sorted(curve)
        ax.plot([x_scale * x for x in xs], [curve[x] for x in xs], marker="o", label=label)
    if marker is not None:
        ax.axvline(marker, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    # Beside the axes, not on them: the curves fill the whole plot.
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path, overwrite)


def posterior_figure(rows: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
                     path: str | os.PathLike, *, window: tuple[float, float] = (0.0, 1.0),
                     overwrite: bool = False) -> Path:
    """Per case: ground truth, posterior mean, posterior standard deviation and ``|mean - truth|``.

    ``rows`` holds ``(label, truth, mean, std)``; the standard deviations and the
    errors share one colour scale, so the uncertainty reads against the error.
    """
    plt = _pyplot()
    scale = max((float(np.percentile(np.concatenate([np.ravel(std), np.abs(
        np.ravel(mean) - np.ravel(truth))]), 99.5)) for _, truth, mean, std in rows),
        default=1.0) or 1.0
    fig, axes = plt.subplots(len(rows), 4, squeeze=False, figsize=(8.4, 2.3 * len(rows)))
    titles = ("ground truth", "posterior mean", f"posterior std\n0 to {scale:.3g}",
              f"|mean - truth|\n0 to {scale:.3g}")
    for i, (label, truth, mean, std) in enumerate(rows):
        panels = (truth, mean, std, np.abs(np.asarray(mean) - truth))
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            if j < 2:
                ax.imshow(np.asarray(panel).T, origin="lower", cmap="gray", vmin=window[0],
                          vmax=window[1])
            else:
                ax.imshow(np.asarray(panel).T, origin="lower", cmap="magma", vmin=0,
                          vmax=scale)
            if i == 0:
                ax.set_title(titles[j], fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_ylabel(label, fontsize=8)
    return _save(fig, path, overwrite)


def bracket_figure(labels: Sequence[str], low: Sequence[float], high: Sequence[float] | None,
                   points: Mapping[str, Sequence[float]], path: str | os.PathLike, *,
                   quantity: str = "PSNR (dB)", title: str = "",
                   overwrite: bool = False) -> Path:
    """Per case a bar from ``low`` to ``high`` (where an unknown lies) and a marker per method.

    ``points`` maps a method's name to its value per case; ``high`` may be ``None``
    (no upper end known): the bar then becomes a marker of ``low``.
    """
    plt = _pyplot()
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.42 * len(labels) + 2.5), 3.6))
    if high is not None:
        ax.vlines(x, low, high, color="0.75", linewidth=7, zorder=1,
                  label="the limit lies here (on average)")
    ax.scatter(x, low, marker="_", s=140, color="k", zorder=3,
               label="chains' mean (the limit's low end)" if high is not None
               else "chains' mean")
    if high is not None:
        ax.scatter(x, high, marker="_", s=140, color="C3", zorder=3,
                   label="planted bound (its high end)")
    palette = [f"C{i}" for i in range(10) if i != 3]  # C3 marks the planted bound
    for k, (name, values) in enumerate(points.items()):
        ax.scatter(x, values, s=14, zorder=2, color=palette[k % len(palette)], label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(quantity)
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path, overwrite)
