"""Tests of lpd.metrics: PSNR and SSIM known values, timing, errors."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import numpy as np
import pytest

from lpd import metrics


def test_psnr_of_identical_images_is_inf(rng):
    image = rng.random((16, 16))
    assert metrics.psnr(image, image.copy()) == math.inf


def test_psnr_of_known_mse():
    truth = np.zeros((10, 10))
    # MSE 0.01 at data range 1 is 20 dB; at data range 2, 20 + 20 log10(2) dB.
    estimate = np.full((10, 10), 0.1)
    assert metrics.psnr(truth, estimate) == pytest.approx(20.0)
    assert metrics.psnr(truth, estimate, data_range=2.0) == pytest.approx(
        20.0 + 20 * math.log10(2))
    assert metrics.psnr(truth, estimate.astype(np.float32)) == pytest.approx(20.0, abs=1e-5)


def test_psnr_matches_scikit_image(rng):
    from skimage.metrics import peak_signal_noise_ratio

    truth, estimate = rng.random((32, 32)), rng.random((32, 32))
    assert metrics.psnr(truth, estimate) == pytest.approx(
        peak_signal_noise_ratio(truth, estimate, data_range=1.0))


def test_ssim_known_values(rng):
    image = rng.random((32, 32))
    assert metrics.ssim(image, image.copy()) == pytest.approx(1.0)
    noisy = image + 0.3 * rng.standard_normal(image.shape)
    value = metrics.ssim(image, noisy)
    assert 0 < value < 0.9
    # A larger data range shrinks the constants' effect less: SSIM rises with it.
    assert metrics.ssim(image, noisy, data_range=2.0) > value


def test_ssim_matches_scikit_image_with_stated_range(rng):
    from skimage.metrics import structural_similarity

    truth, estimate = rng.random((24, 24)), rng.random((24, 24))
    assert metrics.ssim(truth, estimate, data_range=1.0) == pytest.approx(
        structural_similarity(truth, estimate, data_range=1.0))


@pytest.mark.parametrize("call", [
    lambda: metrics.psnr(np.zeros((4, 4)), np.zeros((4, 5))),
    lambda: metrics.psnr(np.zeros((4, 4)), np.full((4, 4), np.nan)),
    lambda: metrics.psnr(np.zeros((4, 4)), np.zeros((4, 4)), data_range=0),
    lambda: metrics.psnr(np.zeros(0), np.zeros(0)),
    lambda: metrics.ssim(np.zeros((4, 4)), np.zeros((4, 4))),
    lambda: metrics.ssim(np.zeros((8, 8, 8)), np.zeros((8, 8, 8))),
    lambda: metrics.ssim(np.zeros((8, 8)), np.zeros((8, 8)), data_range=-1),
])
def test_metric_errors(call):
    with pytest.raises(ValueError):
        call()


def test_time_call_is_median_after_warmup():
    calls = []

    def fn(x, scale=1.0):
        calls.append(x)
        # The first (warm-up) call is slow, as a first call that compiles would be.
        time.sleep(0.2 if len(calls) == 1 else 0.01 * scale)
        return x

    seconds = metrics.time_call(fn, 1, repeats=3, warmup=1, scale=1.0)
    assert len(calls) == 4
    assert 0.009 < seconds < 0.1


def test_time_call_blocks_on_lazy_results():
    class Lazy:
        done = False

        def numpy(self):
            time.sleep(0.02)
            Lazy.done = True

    assert metrics.time_call(Lazy, repeats=1, warmup=0) >= 0.02
    assert Lazy.done


@pytest.mark.parametrize("kwargs", [{"repeats": 0}, {"warmup": -1}, {"repeats": 1.5}])
def test_time_call_errors(kwargs):
    with pytest.raises(ValueError):
        metrics.time_call(lambda: None, **kwargs)


def test_no_tensorflow_import():
    code = ("import sys, lpd.metrics, lpd.classical, lpd.evaluation; "
            "sys.exit('tensorflow' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_ssim_refuses_values_that_swamp_its_statistics():
    rng = np.random.default_rng(0)
    truth = rng.random((32, 32)) * 1e200
    with pytest.raises(ValueError, match="SSIM came out as"):
        metrics.ssim(truth, truth[::-1], data_range=1.0)


def test_peak_memory_of_a_call_counts_what_it_allocates():
    def allocate():
        return np.ones((2048, 4096)).sum()  # 64 MiB, freed on return

    seconds, peak = metrics.time_and_memory(allocate, repeats=1, warmup=1)
    if peak is None:
        pytest.skip("no /proc peak-memory counters on this system")
    assert seconds > 0
    assert 56 * 2**20 < peak < 256 * 2**20
    _, small = metrics.time_and_memory(lambda: 1 + 1, repeats=1, warmup=1)
    assert small < 16 * 2**20


def test_the_first_call_memory_counts_what_a_call_keeps():
    kept = []

    def build_and_reconstruct():
        if not kept:
            kept.append(np.ones((2048, 4096)))  # 64 MiB built once and kept
        return kept[0][0, 0] + 1

    result, first = metrics.first_call_memory(build_and_reconstruct)
    if first is None:
        pytest.skip("no /proc peak-memory counters on this system")
    assert result == 2.0
    assert 56 * 2**20 < first < 256 * 2**20
    # Later calls reuse it: the steady-state peak does not see it.
    _, later = metrics.time_and_memory(build_and_reconstruct, repeats=2, warmup=0)
    assert later < 16 * 2**20
