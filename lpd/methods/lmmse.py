"""The linear minimum mean squared error (MMSE) estimator of a training distribution.

Among all reconstructions of the form ``x = b + K y``, the one with the lowest
expected squared error over the joint distribution of images and data is

    x*(y) = mean_x + S_xy S_y^{-1} (y - mean_y),

with ``S_xy`` the cross-covariance of image and data and ``S_y`` the covariance
of the data (Kay 1993, theorem 12.1; the lecture in ``shared/seeds/002_*``
gives it as the best linear reconstruction). No linear method (FBP,
Tikhonov, the pseudo-inverse, any filtered back-projection) has a lower
expected squared error on that distribution, which makes it both a baseline
and a check of the others.

Here the moments are estimated from samples: images drawn from the training
distribution (random ellipses, say) and data simulated from them with the
set-up's own noise model, so the signal-dependent scaling of lpd's relative
Gaussian noise is part of ``S_y`` as it is of the data. Sums are accumulated in
float64 about a shift (the first chunk's mean), so that centring loses nothing.
The gain ``K = S_xy S_y^{-1}`` is one dense ``(pixels, data)`` matrix: 360 MB in
float32 on ``ellipses`` (128 x 128 images, 30 x 183 data), which is why it is
estimated where it is used and cached (`cache_dir`) rather than shipped.

References
----------
Kay SM. Fundamentals of Statistical Signal Processing: Estimation Theory.
Prentice Hall 1993, chapter 12 (the linear MMSE estimator).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lpd.config import TRAINING_IMAGES, to_json
from lpd.io import atomic_write
from lpd.methods.classical import Reconstructor
from lpd.physics import operators

__all__ = ["LinearMMSE", "MomentEstimate", "estimate_moments", "linear_mmse", "cache_dir",
           "DEFAULT_SAMPLES"]

#: Samples of the training distribution behind the estimate, by default: enough
#: that the held-out error is within a few hundredths of a dB of its limit on
#: ``ellipses`` (see the convergence record of `estimate_moments`).
DEFAULT_SAMPLES = 20000


@dataclasses.dataclass
class MomentEstimate:
    """Means and the gain of the linear MMSE estimator, estimated from samples.

    Attributes
    ----------
    mean_x, mean_y : numpy.ndarray
        Means of the images and of the data (float32, flat).
    gain : numpy.ndarray
        ``K = S_xy S_y^{-1}``, shape ``(pixels, data)`` (float32).
    n_samples : int
    record : dict
        How it was made: set-up, images, seed, samples, seconds, and the
        convergence of the estimate (`estimate_moments`).
    """

    mean_x: np.ndarray
    mean_y: np.ndarray
    gain: np.ndarray
    n_samples: int
    record: dict

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, mean_x=self.mean_x, mean_y=self.mean_y, gain=self.gain,
                 n_samples=self.n_samples, record=json.dumps(self.record))
        return buffer.getvalue()

    @classmethod
    def from_file(cls, path: Path) -> MomentEstimate:
        with np.load(path) as z:
            return cls(z["mean_x"], z["mean_y"], z["gain"], int(z["n_samples"]),
                       json.loads(str(z["record"])))


class _Moments:
    """Running moments of the images and of the noise, about a fixed shift.

    The data are ``y = A x + n`` with noise that is independent between
    detector pixels and has mean zero given the image (white Gaussian noise
    does). Then ``S_xy = S_x A^T`` and ``S_y = A S_x A^T + diag(E[n^2])``: only
    the image covariance ``S_x`` and the noise power are estimated, and the
    operator enters exactly. Where the image distribution is invariant under
    the symmetries of the square (`symmetric`), ``S_x`` is averaged over them,
    which is worth eight times the samples.
    """

    def __init__(self, x: np.ndarray, n_data: int, symmetric: bool):
        self.shift = x.mean(0)
        self.n = 0
        self.sum_x = np.zeros(x.shape[1])
        self.xx = np.zeros((x.shape[1], x.shape[1]))
        self.noise_power = np.zeros(n_data)
        self.symmetric = symmetric

    def add(self, x: np.ndarray, noise: np.ndarray) -> None:
        dx = (x - self.shift).astype(np.float32)
        self.n += len(x)
        self.sum_x += dx.sum(0, dtype=np.float64)
        self.noise_power += np.square(noise, dtype=np.float64).sum(0)
        # One chunk's products in float32 (BLAS), summed in float64 across chunks.
        self.xx += dx.T @ dx

    def estimate(self, shape: tuple[int, int], forward: Callable[[np.ndarray], np.ndarray]):
        """``(mean_x, mean_y, gain)`` from the samples so far; ``forward`` applies ``A``."""
        import scipy.linalg

        d = self.sum_x / self.n
        mean_x = self.shift + d
        s_x = self.xx / self.n
        s_x -= np.outer(d, d)
        if self.symmetric:
            mean_x, s_x = _symmetrised(mean_x, s_x, shape)
        # S_x A^T, a row block at a time (S_x is symmetric: its rows are images).
        s_xy = np.empty((len(s_x), len(self.noise_power)))
        for start in range(0, len(s_x), 1024):
            rows = s_x[start:start + 1024].reshape(-1, *shape)
            s_xy[start:start + 1024] = forward(rows).reshape(len(rows), -1)
        del s_x
        s_y = forward(np.ascontiguousarray(s_xy.T).reshape(-1, *shape)).reshape(
            len(self.noise_power), -1).astype(np.float64)
        s_y = 0.5 * (s_y + s_y.T)
        s_y[np.diag_indices_from(s_y)] += self.noise_power / self.n
        mean_y = forward(mean_x.reshape(1, *shape)).reshape(-1)
        # K = S_xy S_y^{-1}, i.e. K^T = S_y^{-1} S_xy^T (S_y is symmetric positive definite).
        gain = scipy.linalg.solve(s_y, s_xy.T, assume_a="pos", overwrite_b=True).T
        return mean_x.astype(np.float32), mean_y.astype(np.float32), gain.astype(np.float32)


def _symmetrised(mean: np.ndarray, cov: np.ndarray, shape: tuple[int, int]):
    """Mean and covariance averaged over the 8 symmetries of the square (pixel permutations)."""
    from lpd.data.pipelines import symmetry

    index = np.arange(mean.size).reshape(shape)
    mean_sum, cov_sum = mean.copy(), cov.copy()
    for k in range(1, 8):
        g = symmetry(index, k).reshape(-1)
        mean_sum += mean[g]
        cov_sum += cov[np.ix_(g, g)]
    return mean_sum / 8, cov_sum / 8


def estimate_moments(setup, source, n_samples: int = DEFAULT_SAMPLES, seed: int = 0, *,
                     symmetric: bool = False, chunk: int = 500,
                     checkpoints: tuple[float, ...] = (0.25, 0.5),
                     validation: tuple[np.ndarray, np.ndarray] | None = None,
                     log: Callable[[str], None] | None = None) -> MomentEstimate:
    """Estimate the linear MMSE estimator of ``setup`` for images from ``source``.

    Parameters
    ----------
    setup : lpd.operators.Setup or name
        The forward model: operator and noise model simulate the data.
    source : lpd.data.pipelines.ImageSource
        The training distribution (e.g. ``RandomPhantoms("ellipses", shape)``).
    n_samples : int
        Images drawn; sample ``n`` is seeded by ``(seed, n)`` as in training.
    symmetric : bool
        The distribution is invariant under the 8 symmetries of the square (the
        random phantoms of lpd are: centres uniform on a square, orientations
        uniform): average the image covariance over them.
    chunk : int
        Samples simulated and accumulated at a time.
    checkpoints : tuple of float
        Fractions of ``n_samples`` at which the estimate is also formed and,
        with ``validation``, scored: the convergence record.
    validation : (data, images), optional
        Held-out pairs (not from the same seed) to score the checkpoints on.
    log : callable, optional
        Receives progress lines.

    Returns
    -------
    MomentEstimate
        Its ``record["convergence"]`` lists ``{"samples", "mse"}`` per checkpoint.
    """
    from lpd.data import pipelines

    setup = operators.as_setup(setup)
    if setup.data_model() == "prelog":
        raise ValueError(f"the linear MMSE estimator needs linear data; {setup.config.name!r} "
                         "has pre-log data (simulate post-log data for it)")
    n_samples, chunk = int(n_samples), int(chunk)
    if n_samples < 2 or chunk < 1:
        raise ValueError(f"need n_samples >= 2 and chunk >= 1, got {n_samples}, {chunk}")
    shape = tuple(setup.space.shape)
    if symmetric and shape[0] != shape[1]:
        raise ValueError(f"symmetric=True needs square images, got {shape}")
    forward = setup.numpy.forward
    started = time.perf_counter()
    marks = sorted({max(chunk, int(round(f * n_samples / chunk)) * chunk)
                    for f in checkpoints if 0 < f < 1} - {n_samples})
    moments, convergence = None, []
    for start in range(0, n_samples, chunk):
        samples = np.arange(start, min(start + chunk, n_samples))
        images = pipelines.stream_images(source, samples, seed)
        data = pipelines.simulate(setup, images, pipelines.stream_noise(seed, samples))
        noise = (data - forward(images)).reshape(len(data), -1)
        x = images.reshape(len(images), -1)
        if moments is None:
            moments = _Moments(x, noise.shape[1], symmetric)
        moments.add(x, noise)
        if moments.n in marks or moments.n == n_samples:
            mean_x, mean_y, gain = moments.estimate(shape, forward)
            entry = {"samples": moments.n}
            if validation is not None:
                entry["mse"] = _mse(mean_x, mean_y, gain, *validation)
            convergence.append(entry)
            if log is not None:
                score = f", held-out MSE {entry['mse']:.3e}" if "mse" in entry else ""
                log(f"  linear MMSE: {moments.n}/{n_samples} samples "
                    f"({time.perf_counter() - started:.0f} s){score}")
    record = {"setup": setup.config.name, "source": repr(source), "seed": int(seed),
              "n_samples": n_samples, "symmetric": bool(symmetric),
              "seconds": time.perf_counter() - started, "convergence": convergence}
    return MomentEstimate(mean_x, mean_y, gain, n_samples, record)


def _mse(mean_x, mean_y, gain, data, images) -> float:
    y = np.asarray(data, np.float32).reshape(len(data), -1)
    x = mean_x + (y - mean_y) @ gain.T
    return float(np.mean((x - np.asarray(images, np.float32).reshape(len(images), -1)) ** 2))


class LinearMMSE(Reconstructor):
    """``x = mean_x + K (y - mean_y)``: the best linear reconstruction for a distribution.

    Parameters
    ----------
    setup : lpd.operators.Setup, ProblemConfig or str
        The problem; its data must be linear (Gaussian noise, or post-log).
    estimate : MomentEstimate
        Made by `estimate_moments` (or `linear_mmse`, which caches it).
    post_log : bool
        See `lpd.methods.classical.Reconstructor`.
    """

    key = "lmmse"
    name = "Linear MMSE"

    def __init__(self, setup, estimate: MomentEstimate, *, post_log: bool = False):
        super().__init__(setup, post_log=post_log)
        pixels, measurements = int(np.prod(self.image_shape)), int(np.prod(self.data_shape))
        if estimate.gain.shape != (pixels, measurements):
            raise ValueError(f"the estimate's gain has shape {estimate.gain.shape}; set-up "
                             f"{self.setup.config.name!r} needs ({pixels}, {measurements})")
        self.estimate = estimate

    @property
    def params(self) -> dict:
        return {"n_samples": self.estimate.n_samples, "seed": self.estimate.record.get("seed"),
                **super().params}

    def _reconstruct(self, data: np.ndarray) -> np.ndarray:
        y = self.line_integrals(data).reshape(-1) - self.estimate.mean_y
        x = self.estimate.mean_x + self.estimate.gain @ y
        return x.reshape(self.image_shape).astype(np.float32)


def cache_dir() -> Path:
    """Where estimates are cached: ``$LPD_CACHE_DIR``, else ``~/.cache/lpd``."""
    return Path(os.environ.get("LPD_CACHE_DIR") or Path.home() / ".cache" / "lpd")


def linear_mmse(setup, images: str = "ellipses", n_samples: int = DEFAULT_SAMPLES,
                seed: int = 0, *, cache: bool = True,
                log: Callable[[str], None] | None = None) -> LinearMMSE:
    """The linear MMSE reconstructor of ``setup`` for training images ``images``.

    The estimate is read from `cache_dir` when one of the same set-up, images,
    samples and seed is there, and estimated (`estimate_moments`) and cached
    otherwise (atomically; a damaged cache file is estimated again).
    """
    from lpd.data import catalogue

    setup = operators.as_setup(setup)
    key = hashlib.sha256(json.dumps([to_json(setup.config), images, int(n_samples), int(seed)])
                         .encode()).hexdigest()[:16]
    path = cache_dir() / "lmmse" / f"{setup.config.name}-{images}-{n_samples}-{key}.npz"
    if cache and path.exists():
        try:
            return LinearMMSE(setup, MomentEstimate.from_file(path))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            if log is not None:
                log(f"  linear MMSE: the cached estimate {path} is unreadable ({err}); "
                    "estimating it again")
    if log is not None:
        log(f"  linear MMSE: estimating from {n_samples} samples of {images!r} "
            f"(cached in {path})")
    source = catalogue.training_images(images, setup, "train")
    # lpd's random phantom families are invariant under the symmetries of the square.
    symmetric = TRAINING_IMAGES[images] == "phantoms" and source.shape[0] == source.shape[1]
    estimate = estimate_moments(setup, source, n_samples, seed, symmetric=symmetric, log=log)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, estimate.to_bytes(), overwrite=True)
    return LinearMMSE(setup, estimate)
