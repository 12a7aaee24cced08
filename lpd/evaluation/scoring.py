"""One evaluation for every method, classical or learned, and the results table.

`evaluate` reconstructs a data set with any reconstructor, scores every sample
with PSNR and SSIM at a stated data range, and times one reconstruction with
`lpd.metrics.time_call` (median of several runs after a warm-up).
`write_results` writes the table as CSV and Markdown, atomically, and never
replaces an existing file unless asked to.

A reconstructor is either

- a callable mapping one data array (shape ``range_shape``) to one image
  (shape ``image_shape``), like the classical reconstructors of `lpd.classical`; or
- an object with ``reconstruct_batch(data)`` mapping ``(n, *range_shape)`` to
  ``(n, *image_shape)`` (a trailing channel axis of size 1 is dropped), like a
  wrapped network.

Optional attributes are used where present: ``name`` or ``key`` (the method's
name), ``params`` (a dict of settings for the table) and ``n_parameters`` or
``count_params()`` (the number of trained parameters).

This module imports numpy and `lpd.metrics` only; it never imports TensorFlow,
so it evaluates learned methods without making the classical ones depend on it.

References
----------
Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 37(6), 2018,
arXiv:1707.06474, section IV (PSNR, SSIM and run time of the result tables).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lpd import metrics
from lpd.io import atomic_write

__all__ = ["EvaluationResult", "ResultRow", "evaluate", "write_results", "csv_text", "COLUMNS"]


@dataclasses.dataclass
class ResultRow:
    """One line of every results table of lpd (`COLUMNS` in order).

    `EvaluationResult.row` fills the scores of one data set; an experiment
    (`lpd.evaluation.reproduce`) adds its test case, the paper's figures and
    how the model was trained. Empty cells are ``None``.

    Attributes
    ----------
    method, name : str
        The method's key (e.g. ``"lpd"``) and its display name.
    psnr, psnr_std, ssim, ssim_std : float
        Mean and standard deviation over the ``n_samples`` scored samples
        (the held-out set of an experiment).
    psnr_test, ssim_test, ssim_test_paper, n_test
        An experiment's test case (Shepp-Logan, say); ``ssim_test_paper`` in the
        paper's convention (data range 2).
    runtime_ms : float
        Median time of one reconstruction.
    peak_memory_mb : float
        Peak memory of its first reconstruction above the process's before it, in
        MiB (Linux).
    parameters : int
        Trained parameters.
    data_range : float
        Data range of PSNR and SSIM.
    paper_psnr, paper_ssim : float
        The paper's figures for the test case.
    training, settings : str
        How the model was trained; the method's settings (JSON).
    """

    method: str
    name: str = ""
    psnr: float | None = None
    psnr_std: float | None = None
    ssim: float | None = None
    ssim_std: float | None = None
    n_samples: int | None = None
    psnr_test: float | None = None
    ssim_test: float | None = None
    ssim_test_paper: float | None = None
    n_test: int | None = None
    runtime_ms: float | None = None
    peak_memory_mb: float | None = None
    parameters: int | None = None
    data_range: float | None = None
    paper_psnr: float | None = None
    paper_ssim: float | None = None
    training: str = ""
    settings: str = ""


COLUMNS = tuple(f.name for f in dataclasses.fields(ResultRow))
"""Columns of the results table, in order."""


@dataclasses.dataclass(frozen=True)
class EvaluationResult:
    """Scores and run time of one method on one data set.

    Attributes
    ----------
    method : str
        Name of the method.
    psnr_mean, psnr_std, ssim_mean, ssim_std : float
        Mean and (population) standard deviation over the samples.
    psnr, ssim : tuple of float
        Per-sample values, in the order of the data set.
    runtime_ms : float or None
        Median time of one reconstruction (one sample) in milliseconds;
        ``None`` when not timed.
    peak_memory_mb : float or None
        Peak resident memory of the method's first reconstruction (one sample)
        above the process's before it (`lpd.metrics.first_call_memory`): its
        working memory and what it builds and keeps; in MiB, ``None`` when not
        measured.
    n_parameters : int or None
        Trained parameters, where the reconstructor exposes the count.
    data_range : float
        Data range of PSNR and SSIM.
    params : dict
        The reconstructor's settings, where it exposes them.
    images : numpy.ndarray or None
        The reconstructions, shape ``(n, height, width)``, when `evaluate` was
        asked to keep them.
    """

    method: str
    psnr_mean: float
    psnr_std: float
    ssim_mean: float
    ssim_std: float
    psnr: tuple
    ssim: tuple
    runtime_ms: float | None
    n_parameters: int | None
    data_range: float
    params: dict = dataclasses.field(default_factory=dict)
    peak_memory_mb: float | None = None
    images: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def n_samples(self) -> int:
        """Number of samples scored."""
        return len(self.psnr)

    def row(self, **columns) -> ResultRow:
        """This result as a row of the results table; ``columns`` fill the others."""
        return ResultRow(**{
            "method": self.method,
            "psnr": self.psnr_mean,
            "psnr_std": self.psnr_std,
            "ssim": self.ssim_mean,
            "ssim_std": self.ssim_std,
            "runtime_ms": self.runtime_ms,
            "peak_memory_mb": self.peak_memory_mb,
            "parameters": self.n_parameters,
            "n_samples": self.n_samples,
            "data_range": self.data_range,
            "settings": json.dumps(self.params, sort_keys=True, default=_jsonable),
        } | columns)


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _method_name(reconstructor, name: str | None) -> str:
    if name is not None:
        return str(name)
    for attr in ("name", "key"):
        value = getattr(reconstructor, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(reconstructor).__name__


def _parameter_count(reconstructor) -> int | None:
    count = getattr(reconstructor, "n_parameters", None)
    if callable(count):
        count = count()
    if count is None:
        counter = getattr(reconstructor, "count_params", None)
        if callable(counter):
            try:
                count = counter()
            except ValueError:
                # Keras raises for a model that has not been built yet.
                count = None
    return None if count is None else int(count)


def _as_images(output, expected: tuple[int, ...], what: str) -> np.ndarray:
    images = np.asarray(output)
    if images.shape != expected and images.shape[-1:] == (1,) and images.shape[:-1] == expected:
        images = images[..., 0]
    if images.shape != expected:
        raise ValueError(f"{what} returned shape {images.shape}, expected {expected}")
    images = images.astype(np.float64)
    if not np.all(np.isfinite(images)):
        raise ValueError(f"{what} returned NaN or infinite values")
    return images


def _report(progress, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


def evaluate(reconstructor: Callable | Any, data, truth, *, name: str | None = None,
             data_range: float = 1.0, repeats: int = 5, warmup: int = 1,
             batch_size: int = 16, timed: bool = True,
             progress: Callable[[int, int], Any] | None = None,
             keep_images: bool = False) -> EvaluationResult:
    """Reconstruct a data set, score it with PSNR and SSIM, and time it.

    Parameters
    ----------
    reconstructor : callable or object with ``reconstruct_batch``
        The method (see the module docstring).
    data : array-like, shape (n, *range_shape)
        The measured data, one sample per row.
    truth : array-like, shape (n, height, width)
        The true images.
    name : str, optional
        Name of the method in the table; taken from the reconstructor by default.
    data_range : float
        Data range of PSNR and SSIM (1 for the ellipse experiment, as the paper).
    repeats, warmup : int
        Timing: the median of ``repeats`` reconstructions of the first sample,
        after ``warmup`` untimed ones (`lpd.metrics.time_call`). A batched
        reconstructor is timed on a batch of one, so every method's time is that
        of one image.
    batch_size : int
        Samples per call of ``reconstruct_batch``.
    timed : bool
        Measure the run time (``runtime_ms`` is ``None`` otherwise).
    progress : callable, optional
        Called as ``progress(done, total)`` after each sample or batch, for
        progress output on long runs.
    keep_images : bool
        Return the reconstructions in ``result.images`` (for figures).

    Returns
    -------
    EvaluationResult

    Raises
    ------
    ValueError
        For data and images of different counts, images that are not 2D, an empty
        set, or a reconstruction of the wrong shape or with NaN / infinite values.
    """
    data = np.asarray(data)
    truth = np.asarray(truth, dtype=np.float64)
    if truth.ndim != 3:
        raise ValueError(f"truth must have shape (n, height, width), got {truth.shape}")
    if len(data) != len(truth):
        raise ValueError(f"got {len(data)} data samples for {len(truth)} images")
    if len(truth) == 0:
        raise ValueError("empty data set")
    if not np.all(np.isfinite(truth)):
        raise ValueError("truth contains NaN or infinite values")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    method = _method_name(reconstructor, name)
    n, image_shape = len(truth), truth.shape[1:]

    batched = getattr(reconstructor, "reconstruct_batch", None)
    if callable(batched):
        def one(sample):
            return batched(sample[None])
    elif callable(reconstructor):
        one = reconstructor
    else:
        raise TypeError(f"{method}: a reconstructor must be callable or have "
                        "reconstruct_batch")
    # The memory of one reconstruction by the method as it comes, before any other
    # call has built what it keeps (a batched method's batches are larger).
    first, peak_bytes = metrics.first_call_memory(one, data[0]) if timed else (None, None)
    if callable(batched):
        chunks = []
        for i in range(0, n, int(batch_size)):
            chunk = data[i:i + batch_size]
            chunks.append(_as_images(batched(chunk), (len(chunk), *image_shape), method))
            _report(progress, i + len(chunk), n)
        images = np.concatenate(chunks)
    else:
        samples = []
        for i, sample in enumerate(data):
            image = first if i == 0 and first is not None else reconstructor(sample)
            samples.append(_as_images(image, image_shape, f"{method} (sample {i})"))
            _report(progress, i + 1, n)
        images = np.stack(samples)

    psnr = tuple(metrics.psnr(t, x, data_range) for t, x in zip(truth, images, strict=True))
    ssim = tuple(metrics.ssim(t, x, data_range) for t, x in zip(truth, images, strict=True))
    runtime_ms = None
    if timed:
        runtime_ms = 1e3 * metrics.time_call(one, data[0], repeats=repeats, warmup=warmup)
    params = getattr(reconstructor, "params", None)
    # A perfect sample has PSNR inf, and then the spread is undefined (nan).
    with np.errstate(invalid="ignore"):
        psnr_std = float(np.std(psnr))
    return EvaluationResult(
        method=method,
        psnr_mean=float(np.mean(psnr)), psnr_std=psnr_std,
        ssim_mean=float(np.mean(ssim)), ssim_std=float(np.std(ssim)),
        psnr=psnr, ssim=ssim, runtime_ms=runtime_ms,
        peak_memory_mb=None if peak_bytes is None else peak_bytes / 2**20,
        n_parameters=_parameter_count(reconstructor), data_range=float(data_range),
        params=dict(params) if isinstance(params, dict) else {},
        images=images.astype(np.float32) if keep_images else None,
    )


# ---------------------------------------------------------------------------
# The results table
# ---------------------------------------------------------------------------

def _rows(results: Sequence[EvaluationResult | ResultRow | dict]) -> list[dict]:
    rows = []
    for result in results:
        if isinstance(result, EvaluationResult):
            result = result.row()
        row = dataclasses.asdict(result) if isinstance(result, ResultRow) else dict(result)
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown columns {sorted(unknown)}; the table has {COLUMNS}")
        rows.append({c: row.get(c) for c in COLUMNS})
    return rows


def csv_text(rows: Iterable[dict], columns: Sequence[str] = COLUMNS) -> str:
    """A results table as CSV text: a header of ``columns``, then one line per row.

    Missing values (``None``) are written as empty cells.
    """
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        if isinstance(row, ResultRow):
            row = dataclasses.asdict(row)
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()


def _cell(column: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if column in ("psnr", "psnr_std"):
        return f"{value:.2f}"
    if column in ("ssim", "ssim_std"):
        return f"{value:.3f}"
    if column == "runtime_ms":
        return f"{value:.1f}" if value < 100 else f"{value:.0f}"
    if column == "parameters":
        return f"{int(value):,}".replace(",", " ")
    return str(value).replace("|", "\\|")


def _markdown_text(rows: list[dict], title: str | None) -> str:
    columns = ("method", "psnr", "ssim", "runtime_ms", "parameters", "n_samples",
               "data_range", "settings")
    header = ["method", "PSNR (dB)", "SSIM", "runtime (ms)", "parameters", "samples",
              "data range", "settings"]
    lines = [f"# {title}", ""] if title else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = []
        for column in columns:
            cell = _cell(column, row[column])
            std = row.get(f"{column}_std")
            if column in ("psnr", "ssim") and std is not None and row["n_samples"] not in (
                    None, 1):
                cell += " ± " + _cell(f"{column}_std", std)
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(results: Sequence[EvaluationResult | ResultRow | dict],
                  path: str | os.PathLike, *, title: str | None = None,
                  overwrite: bool = False) -> tuple[Path, Path]:
    """Write the results table as CSV and Markdown.

    Parameters
    ----------
    results : sequence of EvaluationResult, ResultRow or dict
        One row per method (dicts with keys from `COLUMNS`).
    path : path
        The CSV file, e.g. ``out/results.csv``; the Markdown table goes beside
        it with the suffix ``.md``. The directory is created if needed.
    title : str, optional
        A heading for the Markdown table.
    overwrite : bool
        Replace existing files. Without it an existing CSV or Markdown file is
        an error, and neither file is written.

    Returns
    -------
    (Path, Path)
        The CSV and Markdown files.

    Raises
    ------
    FileExistsError
        If a file exists and ``overwrite`` is not set.
    """
    csv_path = Path(path)
    if csv_path.suffix.lower() != ".csv":
        raise ValueError(f"the table path must end in .csv, got {csv_path}")
    md_path = csv_path.with_suffix(".md")
    rows = _rows(results)
    if not overwrite:
        existing = [str(p) for p in (csv_path, md_path) if p.exists()]
        if existing:
            raise FileExistsError(f"{', '.join(existing)} exist(s); pass overwrite=True "
                                  "(--overwrite) or choose another output path")
    atomic_write(csv_path, csv_text(rows), overwrite=overwrite)
    atomic_write(md_path, _markdown_text(rows, title), overwrite=overwrite)
    return csv_path, md_path
