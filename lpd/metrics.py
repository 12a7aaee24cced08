"""Image quality and cost: PSNR, SSIM, the median run time of a call and its peak memory.

Quality is always measured against the true image with an explicit data range
(1 for the ellipse experiment, as in the paper). Run times are the median of
several calls after a warm-up, the same helper for every method, classical or
learned. This module needs numpy and scikit-image only; it never imports
TensorFlow.

References
----------
Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 37(6), 2018,
arXiv:1707.06474, section IV (PSNR and SSIM of the result tables).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["psnr", "ssim", "time_call", "time_and_memory", "first_call_memory"]


def _pair(truth, estimate) -> tuple[np.ndarray, np.ndarray]:
    truth = np.asarray(truth, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    if truth.shape != estimate.shape:
        raise ValueError(f"truth and estimate differ in shape: {truth.shape} vs {estimate.shape}")
    if truth.size == 0:
        raise ValueError("empty images")
    for what, array in (("truth", truth), ("estimate", estimate)):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{what} contains NaN or infinite values")
    return truth, estimate


def _check_range(data_range: float) -> float:
    data_range = float(data_range)
    if not (math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be finite and > 0, got {data_range}")
    return data_range


def psnr(truth, estimate, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range^2 / MSE)``.

    Parameters
    ----------
    truth, estimate : array-like
        Images of the same shape (any number of axes); computed in float64.
    data_range : float
        The peak value of the ratio: 1 for the ellipse phantoms, as in the paper
        (not the range of ``truth``, which would make images incomparable).

    Returns
    -------
    float
        PSNR in dB; ``inf`` for identical images.

    Raises
    ------
    ValueError
        For different shapes, NaN or infinite values, or a non-positive data range.

    References
    ----------
    Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 2018,
    arXiv:1707.06474, section IV.
    """
    truth, estimate = _pair(truth, estimate)
    data_range = _check_range(data_range)
    mse = float(np.mean((truth - estimate) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def ssim(truth, estimate, data_range: float = 1.0) -> float:
    """Structural similarity of two 2D images (scikit-image's, 7x7 uniform window).

    Parameters
    ----------
    truth, estimate : array-like
        2D images of the same shape, at least 7 x 7.
    data_range : float
        The dynamic range ``L`` in the constants ``(0.01 L)^2`` and ``(0.03 L)^2``.
        Use 1 for the ellipse experiment. (The original code called scikit-image
        with its defaults on float images, which implies ``L = 2``; pass
        ``data_range=2`` to compare with those figures.)

    Returns
    -------
    float
        Mean SSIM, 1 for identical images.

    References
    ----------
    Wang Z, Bovik AC, Sheikh HR, Simoncelli EP. Image quality assessment: from
    error visibility to structural similarity. IEEE TIP 13(4), 2004, equation (13).
    """
    from skimage.metrics import structural_similarity

    truth, estimate = _pair(truth, estimate)
    data_range = _check_range(data_range)
    if truth.ndim != 2 or min(truth.shape) < 7:
        raise ValueError(f"SSIM needs 2D images of at least 7 x 7 pixels, got {truth.shape}")
    value = float(structural_similarity(truth, estimate, data_range=data_range))
    if not -1.0 - 1e-6 <= value <= 1.0 + 1e-6:
        # SSIM lies in [-1, 1]; outside it, rounding has swamped the statistics.
        peak = max(float(np.abs(truth).max()), float(np.abs(estimate).max()))
        raise ValueError(f"SSIM came out as {value:.3g}: images with values up to {peak:.3g} "
                         f"at data_range={data_range:g} are beyond what float64 statistics "
                         "can resolve; scale the images to their data range")
    return value


def _block(result: Any) -> None:
    # TensorFlow (on a GPU) returns before the work is done; asking for the values
    # waits for it, so that the time covers the whole computation.
    if hasattr(result, "numpy") and callable(result.numpy):
        result.numpy()
    elif isinstance(result, tuple | list):
        for item in result:
            _block(item)


def time_call(fn: Callable[..., Any], *args, repeats: int = 5, warmup: int = 1,
              **kwargs) -> float:
    """Median wall-clock time of ``fn(*args, **kwargs)`` in seconds.

    The call is made ``warmup`` times first, untimed (compilation, caches, lazy
    set-up such as building a system matrix or tracing a ``tf.function``), then
    ``repeats`` times, timed one by one. Results with a ``numpy()`` method (TensorFlow
    tensors) are materialised inside the timed region.

    Parameters
    ----------
    fn : callable
        What to time.
    *args, **kwargs
        Its arguments.
    repeats : int
        Timed calls (>= 1).
    warmup : int
        Untimed calls before them (>= 0).

    Returns
    -------
    float
        The median of the timed calls, in seconds.
    """
    return time_and_memory(fn, *args, repeats=repeats, warmup=warmup, **kwargs)[0]


def _rss_kib(field: str) -> int | None:
    """``VmRSS`` or ``VmHWM`` (peak) of this process in KiB, from /proc (Linux); else None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the peak resident memory to the current one (Linux >= 4.0); False if impossible.

    The C heap's free pages are handed back first (glibc's ``malloc_trim``), so that
    what a call allocates shows as new resident memory rather than reused free
    space of earlier work.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def first_call_memory(fn: Callable[..., Any], *args, **kwargs) -> tuple[Any, int | None]:
    """``fn(*args, **kwargs)`` and the peak memory of that call, in bytes.

    Meant for a method's first call: its peak resident set size above the
    process's before it counts the working memory and what the call builds and
    keeps (a traced graph, a kernel's caches), which later calls reuse and so no
    longer show (`time_and_memory`). Read from ``/proc`` on Linux; ``None`` where
    that is not possible.
    """
    measured = _reset_peak()
    start_rss = _rss_kib("VmRSS")
    result = fn(*args, **kwargs)
    _block(result)
    high = _rss_kib("VmHWM") if measured and start_rss is not None else None
    return result, None if high is None else 1024 * max(0, high - start_rss)


def time_and_memory(fn: Callable[..., Any], *args, repeats: int = 5, warmup: int = 1,
                    **kwargs) -> tuple[float, int | None]:
    """`time_call`'s median time, and the peak memory of the timed calls.

    The memory is the largest resident set size of the process during the timed
    calls above that before them, in bytes (after the warm-up, so that caches
    built once, such as a system matrix, are not counted). It is read from
    ``/proc`` on Linux and is ``None`` where that is not possible. It counts
    every allocator of the process (numpy's and TensorFlow's alike).
    """
    if int(repeats) != repeats or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats}")
    if int(warmup) != warmup or warmup < 0:
        raise ValueError(f"warmup must be a non-negative integer, got {warmup}")
    for _ in range(int(warmup)):
        _block(fn(*args, **kwargs))
    measured = _reset_peak()
    start_rss = _rss_kib("VmRSS")
    measured = measured and start_rss is not None
    times = []
    for _ in range(int(repeats)):
        start = time.perf_counter()
        _block(fn(*args, **kwargs))
        times.append(time.perf_counter() - start)
    peak = None
    if measured:
        high = _rss_kib("VmHWM")
        peak = None if high is None else 1024 * max(0, high - start_rss)
    return float(statistics.median(times)), peak
