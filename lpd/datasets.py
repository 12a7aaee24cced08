"""Data for training and evaluation: noise, simulation, pipelines, real CT.

Four parts:

Noise models and simulation
    `GaussianNoise` (the ellipse experiment: 5 % of the mean absolute data) and
    `PoissonNoise` (the human experiment: pre-log photon counts), `noise_model`
    to build one from a `lpd.config.NoiseConfig`, and `simulate`, which turns
    images into noisy data with a set-up's operator.
Image sources and pipelines
    An image source is either random (`RandomPhantoms`: a new phantom per
    sample) or a finite set (`ImageSet`: real CT slices, user data).
    `training_pairs` is a ``tf.data`` pipeline that simulates (data, image)
    batches on the fly in parallel with training; `fixed_set` gives validation
    and test sets that are bit-identical every time.
Real human CT that installs offline
    The head CT of the Debian package ``invesalius-examples`` and the CT slices
    of ``pydicom-data``, converted to attenuation relative to water and
    resampled to a set-up's grid: `real_ct_slices`.
Loaders for data that users bring
    The Mayo Clinic / AAPM low-dose CT challenge tree (`mayo_slices`) and
    LoDoPaB-CT (`LoDoPaB`). `describe_sources` lists every source, what is
    installed and how to get what is missing.

Units of real images: attenuation relative to water, ``x = (HU + 1000) / 1000``
clipped at 0, so air is 0, water 1, dense bone about 2 to 3. This is the paper's
"HU / 1000, treated as g/cm^3" shifted so that the image is a non-negative
attenuation, which the pre-log model ``exp(-mu * A x)`` with ``mu = 0.02`` per mm
(the attenuation of water) needs. Values below -1000 HU, including the padding
values below -1024 HU that scanners write outside the field of view, become 0.

Randomness: every sample ``n`` of a stream with seed ``s`` draws from its own
generators, seeded by ``numpy.random.SeedSequence(s, spawn_key=(stream, n))``
(Philox), so results do not depend on batch composition, thread scheduling or
where a stream is resumed.

Environment variables (all optional): ``LPD_HEAD_CT`` (path of ``Cranium.inv3``
when it is not where Debian installs it), ``LPD_MAYO_DIR`` and ``LPD_LODOPAB_DIR``
(directories that `describe_sources` reports on). See ``data/README.md``.

References
----------
Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 37(6), 2018,
arXiv:1707.06474, section IV (data and noise of both experiments).
"""

from __future__ import annotations

import abc
import atexit
import functools
import math
import os
import plistlib
import re
import tarfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from lpd import phantoms
from lpd.config import NoiseConfig, ProblemConfig

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

    from lpd.operators import Setup

__all__ = [
    "DataError",
    "DataSourceMissing",
    "GaussianNoise",
    "PoissonNoise",
    "noise_model",
    "forward_project",
    "simulate",
    "ImageSource",
    "RandomPhantoms",
    "ImageSet",
    "training_pairs",
    "measured_pairs",
    "fixed_set",
    "hu_to_attenuation",
    "resample_to_grid",
    "HEAD_CT_PATH",
    "HEAD_CT_SPLITS",
    "PYDICOM_CT_FILES",
    "REAL_CT_SPLITS",
    "load_inv3",
    "real_ct_slices",
    "MayoSlice",
    "scan_mayo",
    "mayo_slices",
    "LODOPAB_MU_MAX",
    "LoDoPaB",
    "lodopab_problem",
    "data_sources",
    "describe_sources",
]


class DataError(ValueError):
    """Data that cannot be used as it is; the message names the file and the problem."""


class DataSourceMissing(DataError):
    """A data source is not installed or not found; the message says how to get it."""


# ---------------------------------------------------------------------------
# Noise models
# ---------------------------------------------------------------------------

def _as_float_array(values, what: str) -> np.ndarray:
    array = np.asarray(values)
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise ValueError(f"{what} must be a real numeric array, got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contain NaN or infinite values")
    return array


def _generator(rng, fallback: np.random.Generator) -> np.random.Generator:
    if rng is None:
        return fallback
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


class GaussianNoise:
    """Additive white Gaussian noise relative to the mean absolute data.

    Each sample of a batch gets noise of standard deviation
    ``relative_std * mean(|y|)``, the mean taken over that sample. This is the
    noise of the ellipse experiment (5 %), applied to the normalised data
    ``A x / ||A||`` (`input` is ``"operator"``).

    Parameters
    ----------
    relative_std : float
        Noise level relative to the mean absolute data.
    seed : int, optional
        Seed of the generator used when a call gets no ``rng``.

    References
    ----------
    Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 2018,
    arXiv:1707.06474, section IV-A.
    """

    kind = "gaussian"
    input = "operator"

    def __init__(self, relative_std: float = 0.05, seed: int | None = None):
        if not (math.isfinite(relative_std) and relative_std >= 0):
            raise ValueError(f"relative_std must be finite and >= 0, got {relative_std}")
        self.relative_std = float(relative_std)
        self._rng = np.random.default_rng(seed)

    def __call__(self, data, rng: np.random.Generator | None = None) -> np.ndarray:
        """Return noisy ``data`` of shape ``(batch, ...)`` as float32.

        Parameters
        ----------
        data : array-like
            Noise-free data; the first axis is the batch axis.
        rng : numpy.random.Generator, optional
            Source of the noise; the object's own seeded generator by default.

        Raises
        ------
        ValueError
            For data with NaN or infinite values, or without a batch axis.
        """
        data = _as_float_array(data, "data")
        if data.ndim < 2:
            raise ValueError(f"expected data of shape (batch, ...), got {data.shape}")
        rng = _generator(rng, self._rng)
        axes = tuple(range(1, data.ndim))
        std = self.relative_std * np.mean(np.abs(data), axis=axes, keepdims=True)
        return (data + std * rng.standard_normal(data.shape)).astype(np.float32)

    def __repr__(self) -> str:
        return f"GaussianNoise(relative_std={self.relative_std})"


class PoissonNoise:
    """Photon noise on the pre-log model ``y = Poisson(N0 exp(-mu A x)) / N0``.

    `input` is ``"ray_trafo"``: the model takes the line integrals ``A x`` of the
    unnormalised ray transform. The result is the measured fraction of photons,
    1 for an unattenuated ray; a ray that no photon reaches gives 0, which the
    pre-log model handles as it is and `post_log` clamps.

    Parameters
    ----------
    mu : float
        Attenuation scaling per unit length of the geometry (0.02 per mm in the
        human experiment: the attenuation of water, for images relative to water).
    photons : float
        Mean photon count ``N0`` of an unattenuated ray (1e4 in the paper).
    seed : int, optional
        Seed of the generator used when a call gets no ``rng``.

    References
    ----------
    Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 2018,
    arXiv:1707.06474, section IV-B.
    """

    kind = "poisson"
    input = "ray_trafo"

    def __init__(self, mu: float = 0.02, photons: float = 1e4, seed: int | None = None):
        if not (math.isfinite(mu) and mu > 0 and math.isfinite(photons) and photons > 0):
            raise ValueError(f"mu and photons must be finite and > 0, got {mu}, {photons}")
        self.mu = float(mu)
        self.photons = float(photons)
        self._rng = np.random.default_rng(seed)

    def expected(self, line_integrals) -> np.ndarray:
        """The noise-free pre-log data ``exp(-mu * A x)`` as float32."""
        line_integrals = _as_float_array(line_integrals, "line integrals")
        return np.exp(-self.mu * line_integrals).astype(np.float32)

    def __call__(self, line_integrals, rng: np.random.Generator | None = None) -> np.ndarray:
        """Return ``Poisson(photons * exp(-mu * line_integrals)) / photons`` as float32.

        Raises
        ------
        ValueError
            For line integrals with NaN or infinite values, or so negative that
            the expected counts overflow.
        """
        line_integrals = _as_float_array(line_integrals, "line integrals")
        rng = _generator(rng, self._rng)
        with np.errstate(over="ignore"):
            lam = self.photons * np.exp(-self.mu * line_integrals)
        # numpy's Poisson sampler refuses rates above about 1e19.
        if not np.all(lam < 1e18):
            raise ValueError(
                "expected photon counts overflow: the line integrals are too negative "
                f"(min {line_integrals.min():.3g}) for mu={self.mu}"
            )
        return (rng.poisson(lam) / self.photons).astype(np.float32)

    def post_log(self, y, min_photons: float = 1.0) -> np.ndarray:
        """Post-log data ``-log(max(y, min_photons / photons)) / mu`` as float32.

        Rays with zero counts are clamped to ``min_photons`` photons (1, as the
        original post-log variant did; LoDoPaB-CT used 0.1), so the result is finite.

        Raises
        ------
        ValueError
            For NaN or infinite values, or negative counts.
        """
        y = _as_float_array(y, "pre-log data")
        if np.any(y < 0):
            raise ValueError(f"pre-log data must be >= 0 (photon fractions), min is {y.min()}")
        if not min_photons > 0:
            raise ValueError(f"min_photons must be > 0, got {min_photons}")
        floor = min_photons / self.photons
        return (-np.log(np.maximum(y, floor)) / self.mu).astype(np.float32)

    def __repr__(self) -> str:
        return f"PoissonNoise(mu={self.mu}, photons={self.photons:g})"


def noise_model(config: NoiseConfig, seed: int | None = None) -> GaussianNoise | PoissonNoise:
    """Build the noise model described by ``config`` (e.g. ``setup.config.noise``)."""
    if not isinstance(config, NoiseConfig):
        raise TypeError(f"expected a NoiseConfig, got {type(config).__name__}")
    if config.kind == "gaussian":
        return GaussianNoise(config.relative_std, seed=seed)
    return PoissonNoise(config.mu, config.photons, seed=seed)


# ---------------------------------------------------------------------------
# Forward projection and simulation
# ---------------------------------------------------------------------------

# Matrices by (id of the ODL operator, memory budget); the operator is stored
# beside its matrix so that the id stays valid while the entry exists.
_PROJECTORS: dict[tuple[int, float], tuple[Any, Any]] = {}
_PROJECTORS_LOCK = threading.Lock()
# ODL/ASTRA are not known to be safe when several pipeline threads call them at once.
_ODL_LOCK = threading.Lock()


def _projector(op, memory_budget: float):
    with _PROJECTORS_LOCK:
        key = (id(op), float(memory_budget))
        entry = _PROJECTORS.get(key)
        if entry is not None and entry[0] is op:
            return entry[1]
        from lpd import operators

        matrix = None
        estimate = operators.estimate_matrix_bytes(op)
        if estimate is not None and estimate <= memory_budget:
            try:
                matrix = operators.system_matrix(op, memory_budget=memory_budget)
            except operators.MatrixUnavailableError:
                matrix = None
        _PROJECTORS[key] = (op, matrix)
        return matrix


_MATRIX_BUDGET = float(2**30)


def forward_project(op, images, memory_budget: float = _MATRIX_BUDGET) -> np.ndarray:
    """Apply a linear ODL operator to a batch of images.

    Uses the operator's sparse system matrix on the whole batch where one is
    available within ``memory_budget`` (built once per operator and process),
    and ODL one image at a time otherwise. Both give ODL's result up to float32
    rounding; each is deterministic.

    Parameters
    ----------
    op : odl.Operator
        Linear operator on a 2D space, e.g. ``setup.operator``.
    images : array-like, shape (batch, *op.domain.shape)
        The images.
    memory_budget : float
        Largest memory in bytes that the matrix and its transpose may take.

    Returns
    -------
    numpy.ndarray
        float32 array of shape ``(batch, *op.range.shape)``.
    """
    images = np.asarray(images, dtype=np.float32)
    domain_shape = tuple(op.domain.shape)
    if images.shape[1:] != domain_shape:
        raise ValueError(
            f"expected images of shape (batch, {', '.join(map(str, domain_shape))}), "
            f"got {images.shape}"
        )
    matrix = _projector(op, memory_budget)
    batch = images.shape[0]
    range_shape = tuple(op.range.shape)
    if matrix is not None:
        flat = images.reshape(batch, -1)
        # Column-stacked (pixels, batch) keeps one multiplication for the batch.
        out = np.ascontiguousarray((matrix @ np.ascontiguousarray(flat.T)).T)
        return out.astype(np.float32, copy=False).reshape((batch, *range_shape))
    out = np.empty((batch, *range_shape), dtype=np.float32)
    with _ODL_LOCK:
        for i, image in enumerate(images):
            out[i] = op(image).data
    return out


def _as_setup(setup):
    from lpd import operators

    if isinstance(setup, str | ProblemConfig):
        return operators.get_setup(setup)
    if not hasattr(setup, "operator") or not hasattr(setup, "ray_trafo"):
        raise TypeError(f"expected a set-up (lpd.operators.Setup) or its name, got {setup!r}")
    return setup


def simulate(setup: Setup | str, images, rng: np.random.Generator | Sequence[np.random.Generator],
             noise: GaussianNoise | PoissonNoise | None = None,
             post_log: bool = False) -> np.ndarray:
    """Simulate noisy data of a set-up from a batch of images.

    Gaussian noise is added to ``setup.operator(x)`` (normalised for the
    ellipses); Poisson noise is drawn from ``setup.ray_trafo(x)``, the
    unnormalised line integrals, and gives pre-log data.

    Parameters
    ----------
    setup : lpd.operators.Setup or str
        The problem (or its name).
    images : array-like, shape (batch, *setup.space.shape)
        The phantoms.
    rng : numpy.random.Generator or sequence of them
        Source of the noise: one generator for the batch, or one per image.
    noise : GaussianNoise or PoissonNoise, optional
        The noise model; the set-up's own (``setup.config.noise``) by default.
    post_log : bool
        Return ``noise.post_log`` of the pre-log data (Poisson noise only).

    Returns
    -------
    numpy.ndarray
        float32 data of shape ``(batch, *setup.operator.range.shape)``.

    Raises
    ------
    ValueError
        For images of the wrong shape or with NaN values, or ``post_log`` with
        a Gaussian model.
    """
    setup = _as_setup(setup)
    if noise is None:
        noise = noise_model(setup.config.noise)
    if post_log and not isinstance(noise, PoissonNoise):
        raise ValueError("post_log applies to Poisson (pre-log) noise only")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise ValueError(f"expected images of shape (batch, height, width), got {images.shape}")
    if not np.all(np.isfinite(images)):
        raise ValueError("images contain NaN or infinite values")
    op = setup.ray_trafo if noise.input == "ray_trafo" else setup.operator
    clean = forward_project(op, images)
    if isinstance(rng, np.random.Generator):
        data = noise(clean, rng)
    else:
        rngs = list(rng)
        if len(rngs) != len(clean):
            raise ValueError(f"got {len(rngs)} generators for {len(clean)} images")
        data = np.empty_like(clean)
        for i, (sample, sample_rng) in enumerate(zip(clean, rngs, strict=True)):
            data[i] = noise(sample[None], sample_rng)[0]
    if post_log:
        data = noise.post_log(data)
    return data


# ---------------------------------------------------------------------------
# Image sources
# ---------------------------------------------------------------------------

class ImageSource(abc.ABC):
    """Where the images of a pipeline come from.

    Two kinds: `RandomPhantoms` (a new random image for every sample) and
    `ImageSet` (a finite set, visited in a new random order every epoch).
    Images are float32 arrays of shape `shape`, indexed like ODL elements.
    """

    name: str
    shape: tuple[int, int]

    @property
    @abc.abstractmethod
    def is_finite(self) -> bool:
        """Whether the source is a finite set of images."""


class RandomPhantoms(ImageSource):
    """Random phantoms of a family of `lpd.phantoms`, a new one per sample.

    Parameters
    ----------
    kind : str or callable
        A key of `lpd.phantoms.PHANTOMS` (``"ellipses"``, ``"rectangles"``) or a
        function ``f(rng, shape) -> image``.
    shape : tuple of int
        Number of pixels ``(nx, ny)``; must equal the set-up's image shape.

    Examples
    --------
    >>> source = RandomPhantoms("ellipses", (128, 128))
    >>> source.generate(np.random.default_rng(0)).shape
    (128, 128)
    """

    def __init__(self, kind: str | Callable[..., np.ndarray] = "ellipses",
                 shape: tuple[int, int] = (128, 128)):
        if isinstance(kind, str):
            if kind not in phantoms.PHANTOMS:
                raise ValueError(
                    f"unknown phantom family {kind!r}; known: {', '.join(phantoms.PHANTOMS)}"
                )
            self._draw = phantoms.PHANTOMS[kind]
            self.name = kind
        elif callable(kind):
            self._draw = kind
            self.name = getattr(kind, "__name__", "custom")
        else:
            raise TypeError(f"kind must be a name or a callable, got {kind!r}")
        self.shape = tuple(int(s) for s in shape)

    @property
    def is_finite(self) -> bool:
        return False

    def generate(self, rng: np.random.Generator) -> np.ndarray:
        """Draw one image from ``rng``."""
        image = np.asarray(self._draw(rng, self.shape), dtype=np.float32)
        if image.shape != self.shape:
            raise DataError(f"phantom family {self.name!r} returned shape {image.shape}, "
                            f"expected {self.shape}")
        return image

    def __repr__(self) -> str:
        return f"RandomPhantoms({self.name!r}, shape={self.shape})"


class ImageSet(ImageSource):
    """A finite set of images, in memory or loaded on demand.

    Parameters
    ----------
    loader : callable
        ``loader(i) -> image`` for ``0 <= i < count``.
    count : int
        Number of images.
    shape : tuple of int
        Shape of every image.
    labels : sequence of str, optional
        Where each image comes from (file, slice), used in error messages and
        to check that splits do not overlap.
    name : str
        Name of the set.
    skipped : sequence of str
        Files that a loader left out at the user's request, with the reason.

    Examples
    --------
    >>> images = ImageSet.from_array(np.zeros((3, 8, 8), np.float32), name="zeros")
    >>> len(images), images[0].shape
    (3, (8, 8))
    """

    def __init__(self, loader: Callable[[int], np.ndarray], count: int,
                 shape: tuple[int, int], labels: Sequence[str] | None = None,
                 name: str = "images", skipped: Sequence[str] = ()):
        if count < 1:
            raise DataError(f"image set {name!r} is empty")
        self._loader = loader
        self._count = int(count)
        self.shape = tuple(int(s) for s in shape)
        self.labels = list(labels) if labels is not None else [f"{name}[{i}]"
                                                               for i in range(count)]
        if len(self.labels) != self._count:
            raise ValueError(f"got {len(self.labels)} labels for {count} images")
        self.name = name
        self.skipped = list(skipped)

    @classmethod
    def from_array(cls, images, labels: Sequence[str] | None = None,
                   name: str = "images") -> ImageSet:
        """An image set held in memory: ``images`` of shape ``(n, nx, ny)``."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 3:
            raise ValueError(f"expected images of shape (n, nx, ny), got {images.shape}")
        images = images.copy()
        images.setflags(write=False)
        return cls(images.__getitem__, len(images), images.shape[1:], labels, name)

    @property
    def is_finite(self) -> bool:
        return True

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> np.ndarray:
        """Image ``index`` as float32, checked for shape and finite values."""
        index = int(index)
        if not -self._count <= index < self._count:
            raise IndexError(f"index {index} out of range for {self._count} images")
        index %= self._count
        image = np.asarray(self._loader(index), dtype=np.float32)
        if image.shape != self.shape:
            raise DataError(f"{self.labels[index]}: image of shape {image.shape}, "
                            f"expected {self.shape}")
        if not np.all(np.isfinite(image)):
            raise DataError(f"{self.labels[index]}: image contains NaN or infinite values")
        return image

    def images(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """Load the images ``indices`` (all by default) as one float32 array."""
        if indices is None:
            indices = range(self._count)
        return np.stack([self[i] for i in indices]) if len(indices) else np.empty(
            (0, *self.shape), np.float32)

    def subset(self, indices: Sequence[int], name: str | None = None) -> ImageSet:
        """The images ``indices`` of this set, as a new set."""
        indices = [int(i) % self._count for i in indices]
        return ImageSet(lambda i: self._loader(indices[i]), len(indices), self.shape,
                        [self.labels[i] for i in indices], name or self.name)

    def __repr__(self) -> str:
        return f"ImageSet({self.name!r}, {self._count} images of {self.shape})"


# ---------------------------------------------------------------------------
# Deterministic streams and the tf.data pipelines
# ---------------------------------------------------------------------------

# First element of the spawn key of each stream. Training and fixed sets use
# different streams, so a fixed set never repeats a training sample of the
# same seed.
_TRAIN_IMAGE, _TRAIN_NOISE, _TRAIN_ORDER, _FIXED_IMAGE, _FIXED_NOISE = range(5)


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(
        np.random.SeedSequence(seed, spawn_key=(stream, index))))


# A tf.data iterator still alive when Python exits is destroyed during module
# finalisation, holding the GIL, and waits for its in-flight map calls, which
# wait for the GIL: the process hangs. At exit, pipeline calls therefore stop
# doing work and the handler waits until none is in flight.
_CALLS = {"active": 0, "closing": False, "registered": False}
_CALLS_LOCK = threading.Lock()


def _drain_pipelines(timeout: float = 5.0, quiet: float = 0.2) -> None:
    with _CALLS_LOCK:
        _CALLS["closing"] = True
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        with _CALLS_LOCK:
            active = _CALLS["active"]
        now = time.monotonic()
        if active:
            quiet_since = now
        elif now - quiet_since >= quiet:
            return
        time.sleep(0.005)


def _exit_safe(function: Callable) -> Callable:
    with _CALLS_LOCK:
        if not _CALLS["registered"]:
            atexit.register(_drain_pipelines)
            _CALLS["registered"] = True

    @functools.wraps(function)
    def call(*args):
        with _CALLS_LOCK:
            if _CALLS["closing"]:
                raise RuntimeError("lpd pipeline stopped: the interpreter is exiting")
            _CALLS["active"] += 1
        try:
            return function(*args)
        finally:
            with _CALLS_LOCK:
                _CALLS["active"] -= 1

    return call


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _epoch_order(seed: int, epoch: int, count: int) -> np.ndarray:
    return _rng(seed, _TRAIN_ORDER, epoch).permutation(count)


def _training_images(source: ImageSource, samples: np.ndarray, seed: int) -> np.ndarray:
    if not source.is_finite:
        return np.stack([source.generate(_rng(seed, _TRAIN_IMAGE, int(n))) for n in samples])
    count = len(source)
    orders: dict[int, np.ndarray] = {}
    images = []
    for n in samples:
        epoch, position = divmod(int(n), count)
        if epoch not in orders:
            orders[epoch] = _epoch_order(seed, epoch, count)
        images.append(source[orders[epoch][position]])
    return np.stack(images)


def _check_source(setup, source: ImageSource) -> None:
    if not isinstance(source, ImageSource):
        raise TypeError(f"expected an ImageSource (RandomPhantoms, ImageSet), got {source!r}")
    if tuple(source.shape) != tuple(setup.space.shape):
        raise ValueError(
            f"the images of {source.name!r} have shape {source.shape}, the set-up "
            f"{setup.config.name!r} needs {tuple(setup.space.shape)}; build the source "
            "for this set-up (e.g. RandomPhantoms(kind, setup.space.shape) or "
            "real_ct_slices(setup, split))"
        )


def _workers() -> int:
    # Bounded rather than AUTOTUNE: the batches are made under the GIL for the
    # most part, so more threads than cores only add contention with training.
    return max(1, min(4, os.cpu_count() or 1))


def _batch_dataset(make_batch: Callable, data_shape: tuple, image_shape: tuple, start: int,
                   num_batches: int | None, num_parallel_calls: int | None,
                   prefetch: int | None, name: str) -> tf.data.Dataset:
    """Batches ``make_batch(k)`` for ``k = start, start + 1, ...`` as a tf.data pipeline.

    ``make_batch`` is numpy code returning ``(data, images)`` float32 arrays of the
    given shapes; it runs in tf.data's threads, in order-preserving parallel.
    """
    import tensorflow as tf

    def tf_batch(k):
        data, images = tf.numpy_function(_exit_safe(make_batch), [k],
                                         (tf.float32, tf.float32), stateful=False,
                                         name=name)
        data.set_shape(data_shape)
        images.set_shape(image_shape)
        return data, images

    if num_batches is None:
        indices = tf.data.Dataset.counter(int(start))
    else:
        indices = tf.data.Dataset.range(int(start), int(start) + int(num_batches))
    dataset = indices.map(tf_batch, num_parallel_calls=num_parallel_calls or _workers(),
                          deterministic=True)
    return dataset.prefetch(prefetch or 2)


def training_pairs(setup: Setup | str, source: ImageSource, batch_size: int, seed: int, *,
                   start: int = 0, num_batches: int | None = None,
                   noise: GaussianNoise | PoissonNoise | None = None, post_log: bool = False,
                   num_parallel_calls: int | None = None,
                   prefetch: int | None = None) -> tf.data.Dataset:
    """A ``tf.data`` pipeline of simulated training batches ``(data, image)``.

    Each batch is made on the fly (phantom or real slice, projection, noise) by
    numpy code running in ``tf.data``'s threads, in parallel with training and
    prefetched, so the training step rarely waits for data.

    Batch ``k`` holds the samples ``n = k * batch_size + j``. Sample ``n`` draws its
    phantom and its noise from generators seeded by ``(seed, n)`` only, and a
    finite source is visited in a new random order every epoch (seeded by
    ``(seed, epoch)``): the stream is the same however many threads make it, and
    ``start=k`` continues it exactly where a run that stopped after ``k`` batches
    (with the same batch size) left off.

    Parameters
    ----------
    setup : lpd.operators.Setup or str
        The problem (or its name): operator and default noise model.
    source : ImageSource
        The images: `RandomPhantoms` or an `ImageSet` of the set-up's shape.
    batch_size : int
        Samples per batch (5 in the paper).
    seed : int
        Seed of the stream.
    start : int
        Index of the first batch (the training step to resume from).
    num_batches : int, optional
        Number of batches; endless by default.
    noise : GaussianNoise or PoissonNoise, optional
        Noise model; the set-up's own by default.
    post_log : bool
        Post-log data (Poisson noise only), see `PoissonNoise.post_log`.
    num_parallel_calls : int, optional
        Batches made at once (``tf.data.AUTOTUNE`` allowed); by default the
        number of cores, at most 4.
    prefetch : int, optional
        Batches made ahead (``tf.data.AUTOTUNE`` allowed); 2 by default.

    Returns
    -------
    tf.data.Dataset
        Elements ``(data, image)``, float32 NHWC: ``data`` of shape
        ``(batch_size, *range_shape, 1)``, ``image`` of shape
        ``(batch_size, nx, ny, 1)``.

    References
    ----------
    Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 2018,
    arXiv:1707.06474, section IV (training data drawn afresh during training).

    Examples
    --------
    >>> setup = lpd.operators.get_setup("ellipses")
    >>> pairs = training_pairs(setup, RandomPhantoms("ellipses", (128, 128)), 5, seed=0)
    >>> data, image = next(iter(pairs))
    >>> tuple(data.shape), tuple(image.shape)
    ((5, 30, 183, 1), (5, 128, 128, 1))
    """

    setup = _as_setup(setup)
    _check_source(setup, source)
    seed = _check_seed(seed)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batch_size = int(batch_size)
    if int(start) < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if noise is None:
        noise = noise_model(setup.config.noise)
    if post_log and not isinstance(noise, PoissonNoise):
        raise ValueError("post_log applies to Poisson (pre-log) noise only")
    # Build the system matrix now, not in the first pipeline call.
    _projector(setup.ray_trafo if noise.input == "ray_trafo" else setup.operator,
               _MATRIX_BUDGET)

    range_shape = tuple(setup.operator.range.shape)
    image_shape = tuple(setup.space.shape)

    def make_batch(k):
        samples = np.arange(batch_size, dtype=np.int64) + int(k) * batch_size
        images = _training_images(source, samples, seed)
        rngs = [_rng(seed, _TRAIN_NOISE, int(n)) for n in samples]
        data = simulate(setup, images, rngs, noise=noise, post_log=post_log)
        return data[..., None], images[..., None]

    return _batch_dataset(make_batch, (batch_size, *range_shape, 1),
                          (batch_size, *image_shape, 1), start, num_batches,
                          num_parallel_calls, prefetch, "lpd_training_pairs")


def measured_pairs(pairs, batch_size: int, seed: int, *, start: int = 0,
                   num_batches: int | None = None,
                   num_parallel_calls: int | None = None) -> tf.data.Dataset:
    """A ``tf.data`` pipeline over measured (data, image) pairs, e.g. `LoDoPaB`.

    The counterpart of `training_pairs` for data sets that ship their own
    observations: batches are drawn in a new random order every epoch, seeded by
    ``(seed, epoch)``, and ``start`` resumes the stream as there.

    Parameters
    ----------
    pairs : object
        Has ``len(pairs)`` and ``pairs.pair(i) -> (data, image)`` (numpy arrays
        of fixed shapes).
    batch_size, seed, start, num_batches, num_parallel_calls
        As in `training_pairs`.

    Returns
    -------
    tf.data.Dataset
        Elements ``(data, image)``, float32 NHWC.
    """

    seed = _check_seed(seed)
    batch_size = int(batch_size)
    if batch_size < 1 or int(start) < 0:
        raise ValueError(f"need batch_size >= 1 and start >= 0, got {batch_size}, {start}")
    count = len(pairs)
    data0, image0 = pairs.pair(0)
    data_shape, image_shape = np.shape(data0), np.shape(image0)

    def make_batch(k):
        data, images = [], []
        orders: dict[int, np.ndarray] = {}
        for n in range(int(k) * batch_size, (int(k) + 1) * batch_size):
            epoch, position = divmod(n, count)
            if epoch not in orders:
                orders[epoch] = _epoch_order(seed, epoch, count)
            d, x = pairs.pair(int(orders[epoch][position]))
            data.append(d)
            images.append(x)
        return (np.stack(data).astype(np.float32)[..., None],
                np.stack(images).astype(np.float32)[..., None])

    return _batch_dataset(make_batch, (batch_size, *data_shape, 1),
                          (batch_size, *image_shape, 1), start, num_batches,
                          num_parallel_calls, None, "lpd_measured_pairs")


def fixed_set(setup: Setup | str, source: ImageSource, n: int | None = None, seed: int = 0, *,
              noise: GaussianNoise | PoissonNoise | None = None,
              post_log: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A fixed validation or test set, bit-identical every time it is made.

    Sample ``i`` draws its phantom and noise from generators seeded by
    ``(seed, i)`` (streams distinct from those of `training_pairs`, so a fixed
    set never repeats training samples of the same seed). A finite source is
    taken in order, each image once when ``n`` is its length.

    Parameters
    ----------
    setup : lpd.operators.Setup or str
        The problem (or its name).
    source : ImageSource
        `RandomPhantoms` (``n`` required) or an `ImageSet` (``n`` defaults to
        its length; larger ``n`` cycles through it with fresh noise).
    n : int, optional
        Number of samples.
    seed : int
        Seed of the set.
    noise : GaussianNoise or PoissonNoise, optional
        Noise model; the set-up's own by default.
    post_log : bool
        Post-log data (Poisson noise only).

    Returns
    -------
    data : numpy.ndarray
        float32, shape ``(n, *range_shape)`` (add ``[..., None]`` for NHWC).
    images : numpy.ndarray
        float32, shape ``(n, nx, ny)``.
    """
    setup = _as_setup(setup)
    _check_source(setup, source)
    seed = _check_seed(seed)
    if n is None:
        if not source.is_finite:
            raise ValueError("n is required for a random image source")
        n = len(source)
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if source.is_finite:
        images = np.stack([source[i % len(source)] for i in range(n)])
    else:
        images = np.stack([source.generate(_rng(seed, _FIXED_IMAGE, i)) for i in range(n)])
    rngs = [_rng(seed, _FIXED_NOISE, i) for i in range(n)]
    data = simulate(setup, images, rngs, noise=noise, post_log=post_log)
    return data, images


# ---------------------------------------------------------------------------
# Units and resampling of real CT
# ---------------------------------------------------------------------------

def hu_to_attenuation(hu) -> np.ndarray:
    """Convert Hounsfield units to attenuation relative to water, ``>= 0``.

    ``x = max(HU + 1000, 0) / 1000``: air 0, water 1, bone about 2 to 3. Padding
    values below -1024 HU (outside the scanner's field of view) become air.

    Raises
    ------
    DataError
        For NaN or infinite values.
    """
    hu = np.asarray(hu, dtype=np.float64)
    if not np.all(np.isfinite(hu)):
        raise DataError("CT values contain NaN or infinite values")
    return (np.maximum(hu + 1000.0, 0.0) / 1000.0).astype(np.float32)


def _grid_of(grid) -> tuple[tuple[int, int], tuple[float, float], tuple[float, float]]:
    """(shape, min_pt, max_pt) of a set-up, config, set-up name or shape."""
    if isinstance(grid, str):
        from lpd import operators

        try:
            grid = operators.SETUPS[grid]
        except KeyError:
            raise ValueError(f"unknown set-up {grid!r}; known: "
                             f"{', '.join(operators.SETUPS)}") from None
    config = getattr(grid, "config", grid)
    if isinstance(config, ProblemConfig):
        return tuple(config.shape), tuple(config.min_pt), tuple(config.max_pt)
    shape = tuple(int(s) for s in grid)
    if len(shape) != 2:
        raise ValueError(f"expected a set-up, a set-up name or a shape (nx, ny), got {grid!r}")
    # A bare shape means the human experiment's 256 mm field of view.
    return shape, (-128.0, -128.0), (128.0, 128.0)


def resample_to_grid(image, pixel_spacing: tuple[float, float], shape: tuple[int, int],
                     min_pt: tuple[float, float] = (-128.0, -128.0),
                     max_pt: tuple[float, float] = (128.0, 128.0), *,
                     scale: Literal["physical", "pixels"] = "physical",
                     rows_up: bool = False) -> np.ndarray:
    """Resample a CT slice onto an ODL image grid.

    Parameters
    ----------
    image : array-like, shape (rows, columns)
        The slice as stored: columns along ``+x``, rows along ``-y`` (DICOM,
        as displayed) or ``+y`` (``rows_up``, VTK/InVesalius).
    pixel_spacing : tuple of float
        Distance between rows and between columns in mm (DICOM PixelSpacing order).
    shape, min_pt, max_pt
        The target grid; its lengths are taken as mm. The slice's centre is put
        at the centre of the domain.
    scale : {"physical", "pixels"}
        ``"physical"``: keep the physical size (parts outside the domain are
        cropped, the domain outside the slice is air, i.e. 0). ``"pixels"``:
        stretch the slice's pixel grid over the whole domain, as the original
        human experiment put 512 x 512 Mayo slices on its 256 mm grid.
    rows_up : bool
        Whether rows run along ``+y``.

    Returns
    -------
    numpy.ndarray
        float32 array of shape ``shape``, indexed like an ODL element
        (``[i, j]`` at ``(x_i, y_j)``). Linear interpolation, after a Gaussian
        anti-aliasing filter when the grid is coarser than the slice.
    """
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"expected a 2D slice, got shape {image.shape}")
    rows, cols = image.shape
    shape = tuple(int(s) for s in shape)
    cell = [(hi - lo) / n for lo, hi, n in zip(min_pt, max_pt, shape, strict=True)]
    centre = [(lo + hi) / 2 for lo, hi in zip(min_pt, max_pt, strict=True)]
    if scale == "physical":
        row_spacing, col_spacing = (float(s) for s in pixel_spacing)
    elif scale == "pixels":
        col_spacing = (max_pt[0] - min_pt[0]) / cols
        row_spacing = (max_pt[1] - min_pt[1]) / rows
    else:
        raise ValueError(f"scale must be 'physical' or 'pixels', got {scale!r}")
    if not (row_spacing > 0 and col_spacing > 0):
        raise DataError(f"pixel spacing must be > 0, got {pixel_spacing}")
    # Anti-aliasing as scikit-image does it: sigma = (factor - 1) / 2 pixels.
    sigma = (max(0.0, (cell[1] / row_spacing - 1) / 2), max(0.0, (cell[0] / col_spacing - 1) / 2))
    if max(sigma) > 0:
        image = ndimage.gaussian_filter(image, sigma, mode="constant", cval=0.0)
    x = min_pt[0] + (np.arange(shape[0]) + 0.5) * cell[0] - centre[0]
    y = min_pt[1] + (np.arange(shape[1]) + 0.5) * cell[1] - centre[1]
    col = x / col_spacing + (cols - 1) / 2
    row = (rows - 1) / 2 + (y / row_spacing if rows_up else -y / row_spacing)
    coords = np.stack(np.broadcast_arrays(row[None, :], col[:, None]))
    out = ndimage.map_coordinates(image, coords, order=1, mode="grid-constant", cval=0.0)
    return np.maximum(out, 0.0).astype(np.float32)


# ---------------------------------------------------------------------------
# Real human CT that installs offline
# ---------------------------------------------------------------------------

HEAD_CT_PATH = "/usr/share/doc/invesalius-examples/examples/Cranium.inv3"
"""Where Debian's ``invesalius-examples`` installs its head CT (override: ``LPD_HEAD_CT``)."""

HEAD_CT_SPLITS: dict[str, tuple[tuple[int, int], ...]] = {
    "train": ((0, 33), (51, 69), (87, 103)),
    "validation": ((36, 48),),
    "test": ((72, 84),),
}
"""Slices (half-open ranges of z indices, 1.5 mm apart) of each split of the head CT.

Validation and test are 12-slice (18 mm) blocks held out whole; the 3 slices
(4.5 mm) either side of them belong to no split, so that no training slice is a
near copy of a held-out one. Slices 103-107 are left out: they hold almost no
head (the top of the skull).
"""

PYDICOM_CT_FILES = ("693_UNCR.dcm", "J2K_pixelrep_mismatch.dcm", "explicit_VR-UN.dcm")
"""Real 512 x 512 CT slices of three other patients in pydicom / pydicom-data.

``CT_small.dcm`` (128 x 128, a cropped 85 mm field of view) is left out by
default: its body is cut at the edges of the field of view, which no full scan
shows; pass it in ``names`` to `real_ct_slices` to use it anyway.
"""

REAL_CT_SPLITS = ("train", "validation", "test", "other_patients")
"""Splits of `real_ct_slices`: the head CT's three, and the pydicom slices."""

_HEAD_CT_HOW = (
    "install the Debian/Ubuntu package: sudo apt-get install invesalius-examples "
    f"(it puts Cranium.inv3 at {HEAD_CT_PATH}), or set LPD_HEAD_CT to the path of "
    "Cranium.inv3 taken from that package"
)
_PYDICOM_HOW = "pip install pydicom pydicom-data (the slices ship inside these packages)"


def _head_ct_path(path=None) -> Path:
    path = Path(path or os.environ.get("LPD_HEAD_CT") or HEAD_CT_PATH)
    if not path.is_file():
        raise DataSourceMissing(f"head CT not found at {path}: {_HEAD_CT_HOW}")
    return path


@functools.lru_cache(maxsize=2)
def _read_inv3(path: str, mtime: float) -> tuple[np.ndarray, tuple[float, float, float]]:
    try:
        with tarfile.open(path, "r:*") as archive:
            members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
            if "main.plist" not in members:
                raise DataError(f"{path}: no main.plist in the InVesalius project")
            meta = plistlib.loads(archive.extractfile(members["main.plist"]).read())
            matrix = meta.get("matrix", {})
            name = matrix.get("filename", "matrix.dat")
            shape = tuple(int(n) for n in matrix.get("shape", ()))
            dtype = np.dtype(matrix.get("dtype", "int16")).newbyteorder("<")
            if len(shape) != 3 or name not in members:
                raise DataError(f"{path}: main.plist does not describe a 3D volume in {name}")
            raw = archive.extractfile(members[name]).read()
    except (tarfile.TarError, OSError, EOFError, plistlib.InvalidFileException) as err:
        raise DataError(f"{path}: not a readable InVesalius project ({err})") from err
    if len(raw) != math.prod(shape) * dtype.itemsize:
        raise DataError(f"{path}: {name} has {len(raw)} bytes, expected "
                        f"{math.prod(shape) * dtype.itemsize} for {shape} {dtype}")
    spacing = tuple(float(s) for s in meta.get("spacing", (1.0, 1.0, 1.0)))
    volume = np.frombuffer(raw, dtype=dtype).reshape(shape)
    volume.setflags(write=False)
    return volume, spacing


def load_inv3(path: str | os.PathLike | None = None) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read the CT volume of an InVesalius project (``.inv3``) in place.

    Parameters
    ----------
    path : path, optional
        The project; by default ``LPD_HEAD_CT`` or `HEAD_CT_PATH` (the head CT
        of ``invesalius-examples``: 108 slices of 256 x 256 in HU, GPL-2, read
        where it is installed and never copied).

    Returns
    -------
    volume : numpy.ndarray
        Read-only array in HU, shape ``(z, y, x)``; rows run along ``+y`` (VTK).
    spacing : tuple of float
        Voxel size ``(x, y, z)`` in mm.

    Raises
    ------
    DataSourceMissing
        If the file is not there (the message says how to install it).
    DataError
        If it is not a readable InVesalius project.
    """
    path = _head_ct_path(path)
    return _read_inv3(str(path), path.stat().st_mtime)


def _pydicom_path(name: str) -> str:
    try:
        from pydicom.data import get_testdata_file
    except ImportError as err:
        raise DataSourceMissing(f"pydicom is not installed: {_PYDICOM_HOW}") from err
    # download=False: nothing is fetched at run time.
    path = get_testdata_file(name, download=False)
    if path is None:
        raise DataSourceMissing(f"pydicom test file {name} not found: {_PYDICOM_HOW}")
    return str(path)


def _import_pydicom():
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError as err:
        raise DataSourceMissing("reading DICOM needs pydicom: pip install pydicom") from err
    return pydicom, InvalidDicomError


def _read_dicom_hu(path: str, expected_shape: tuple[int, int] | None = None):
    """(HU array, (row, col) spacing, dataset) of a single-slice CT DICOM file."""
    pydicom, InvalidDicomError = _import_pydicom()

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as err:
        raise DataError(f"{path}: not a readable DICOM file ({err})") from err
    _check_dicom_header(ds, path, expected_shape)
    try:
        pixels = ds.pixel_array
    except Exception as err:  # decoders raise many types; all mean the same here
        raise DataError(
            f"{path}: cannot decode the pixel data ({err}); for compressed files install "
            "a decoder such as pillow or pylibjpeg-openjpeg"
        ) from err
    if pixels.ndim != 2:
        raise DataError(f"{path}: expected a single 2D slice, got pixel data of shape "
                        f"{pixels.shape}")
    hu = pixels.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    if not np.all(np.isfinite(hu)):
        raise DataError(f"{path}: CT values contain NaN or infinite values")
    return hu, tuple(float(s) for s in ds.PixelSpacing), ds


def _check_dicom_header(ds, path, expected_shape) -> None:
    missing = [key for key in ("Rows", "Columns", "PixelSpacing", "RescaleSlope",
                               "RescaleIntercept") if key not in ds]
    if missing:
        raise DataError(f"{path}: missing DICOM attribute(s) {', '.join(missing)}")
    shape = (int(ds.Rows), int(ds.Columns))
    if expected_shape is not None and shape != tuple(expected_shape):
        raise DataError(f"{path}: slice of {shape[0]} x {shape[1]} pixels, expected "
                        f"{expected_shape[0]} x {expected_shape[1]}")
    numbers = [float(ds.RescaleSlope), float(ds.RescaleIntercept),
               *(float(s) for s in ds.PixelSpacing)]
    if not all(math.isfinite(v) for v in numbers):
        raise DataError(f"{path}: NaN or infinite rescale slope, intercept or pixel spacing")
    if float(ds.RescaleSlope) == 0 or min(float(s) for s in ds.PixelSpacing) <= 0:
        raise DataError(f"{path}: rescale slope must be non-zero and pixel spacing > 0")


@functools.lru_cache(maxsize=8)
def _real_ct_arrays(split: str, shape, min_pt, max_pt, scale: str, names: tuple[str, ...],
                    head_path: str | None):
    grid = dict(shape=shape, min_pt=min_pt, max_pt=max_pt, scale=scale)
    if split == "other_patients":
        images, labels = [], []
        for name in names:
            path = _pydicom_path(name)
            hu, spacing, ds = _read_dicom_hu(path)
            images.append(resample_to_grid(hu_to_attenuation(hu), spacing, **grid))
            labels.append(f"pydicom:{name} (patient {ds.get('PatientID', '?')})")
        images = np.stack(images)
        images.setflags(write=False)  # cached: callers share it
        return images, labels
    volume, spacing = load_inv3(head_path)
    z = [k for lo, hi in HEAD_CT_SPLITS[split] for k in range(lo, min(hi, len(volume)))]
    images = [resample_to_grid(hu_to_attenuation(volume[k]), (spacing[1], spacing[0]),
                               rows_up=True, **grid) for k in z]
    images = np.stack(images)
    images.setflags(write=False)
    return images, [f"head_ct:z={k}" for k in z]


def real_ct_slices(grid: Any = "human_small", split: str = "train", *,
                   scale: Literal["physical", "pixels"] = "physical",
                   names: Sequence[str] = PYDICOM_CT_FILES,
                   head_ct: str | os.PathLike | None = None) -> ImageSet:
    """Real human CT slices that install offline, on a set-up's grid.

    Splits ``"train"``, ``"validation"`` and ``"test"`` are disjoint blocks of
    slices of the ``invesalius-examples`` head CT (`HEAD_CT_SPLITS`);
    ``"other_patients"`` are the CT slices of pydicom / pydicom-data
    (`PYDICOM_CT_FILES`: two heads and an abdomen of three other patients), a
    test set with no patient in common with the training data, the analogue of
    the paper's held-out patient.

    Images are attenuation relative to water (`hu_to_attenuation`), resampled by
    `resample_to_grid`.

    Parameters
    ----------
    grid : lpd.operators.Setup, ProblemConfig, str or tuple of int
        The target grid: a set-up, its config or name, or a shape ``(nx, ny)`` on
        the human experiment's 256 mm field of view. Lengths are taken as mm.
    split : {"train", "validation", "test", "other_patients"}
        Which slices.
    scale : {"physical", "pixels"}
        Keep the physical pixel size (default), or stretch each slice over the
        domain as the original experiment did (see `resample_to_grid`).
    names : sequence of str
        pydicom test files of the ``"other_patients"`` split.
    head_ct : path, optional
        The ``.inv3`` file instead of ``LPD_HEAD_CT`` / `HEAD_CT_PATH`.

    Returns
    -------
    ImageSet
        The slices, labelled ``"head_ct:z=K"`` or ``"pydicom:NAME (...)"``.

    Raises
    ------
    DataSourceMissing
        If the data are not installed; the message says how to install them.

    References
    ----------
    Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 2018,
    arXiv:1707.06474, section IV-B (human data: HU / 1000, mu = 0.02 per mm).
    """
    if split not in REAL_CT_SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {REAL_CT_SPLITS}")
    shape, min_pt, max_pt = _grid_of(grid)
    head = None if head_ct is None else str(_head_ct_path(head_ct))
    images, labels = _real_ct_arrays(split, shape, min_pt, max_pt, scale, tuple(names), head)
    name = "pydicom_ct" if split == "other_patients" else f"head_ct/{split}"
    return ImageSet(images.__getitem__, len(images), shape, labels, name)


# ---------------------------------------------------------------------------
# Mayo Clinic / AAPM low-dose CT challenge
# ---------------------------------------------------------------------------

_MAYO_HOW = (
    "the AAPM/Mayo Clinic Low Dose CT Grand Challenge data (one folder per patient, "
    "L067 ... L506, each with full_1mm, quarter_1mm, full_3mm, quarter_3mm) are "
    "distributed by the AAPM and Mayo Clinic under a data-use agreement "
    "(https://www.aapm.org/grandchallenge/lowdosect/); see data/README.md"
)
_DICOM_SUFFIXES = (".ima", ".dcm")


@dataclass(frozen=True)
class MayoSlice:
    """One slice of the Mayo/AAPM tree, as `scan_mayo` found it."""

    patient: str
    path: str
    z: float
    pixel_spacing: tuple[float, float]


def _report(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def _check_directory(directory, how: str) -> Path:
    if directory is None:
        raise DataSourceMissing(f"no directory given: {how}")
    directory = Path(directory)
    if not directory.exists():
        raise DataSourceMissing(f"directory {directory} does not exist: {how}")
    if not directory.is_dir():
        raise DataError(f"{directory} is not a directory")
    return directory


def _scan_mayo_file(path: Path, expected_shape):
    pydicom, InvalidDicomError = _import_pydicom()

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as err:
        raise DataError(f"{path}: not a readable DICOM file ({err})") from err
    _check_dicom_header(ds, path, expected_shape)
    if "ImagePositionPatient" not in ds or len(ds.ImagePositionPatient) != 3:
        raise DataError(f"{path}: missing ImagePositionPatient (needed to order slices)")
    z = float(ds.ImagePositionPatient[2])
    if not math.isfinite(z):
        raise DataError(f"{path}: NaN or infinite ImagePositionPatient")
    if "PixelData" not in ds:
        raise DataError(f"{path}: no pixel data")
    if not ds.file_meta.get("TransferSyntaxUID", pydicom.uid.ImplicitVRLittleEndian
                            ).is_compressed:
        expected = int(ds.Rows) * int(ds.Columns) * int(ds.get("BitsAllocated", 16)) // 8
        if len(ds.PixelData) < expected:
            raise DataError(f"{path}: truncated pixel data ({len(ds.PixelData)} bytes, "
                            f"expected {expected})")
    return z, tuple(float(s) for s in ds.PixelSpacing)


def scan_mayo(directory: str | os.PathLike, dose: Literal["full", "quarter"] = "full",
              thickness: Literal["1mm", "3mm"] = "3mm", *,
              patients: Sequence[str] | None = None, exclude_patients: Sequence[str] = (),
              expected_shape: tuple[int, int] | None = (512, 512),
              skip_bad: bool = False) -> list[MayoSlice]:
    """Find and check the slices of a Mayo/AAPM challenge tree.

    Expects ``directory/<patient>/<dose>_<thickness>/**/*.IMA`` (or ``.dcm``),
    single-slice DICOM files. Every file's header is read and checked: readable
    DICOM, size, rescale slope and intercept present and finite, a slice
    position, pixel data of the right length. Slices are ordered by patient and
    by ``ImagePositionPatient[2]``.

    Parameters
    ----------
    directory : path
        The tree's root.
    dose : {"full", "quarter"}
        Full-dose or quarter-dose reconstructions.
    thickness : {"1mm", "3mm"}
        Slice thickness (the paper trained on full-dose 3 mm slices).
    patients : sequence of str, optional
        Patient folders to take (all by default).
    exclude_patients : sequence of str
        Patient folders to leave out (the paper held out ``"L286"``).
    expected_shape : tuple of int or None
        Required ``(rows, columns)``; ``None`` accepts any.
    skip_bad : bool
        Report (as a warning) and skip bad files and missing series instead
        of raising.

    Returns
    -------
    list of MayoSlice

    Raises
    ------
    DataSourceMissing
        If the directory does not exist.
    DataError
        For an empty tree, a missing series, or a bad file (unless ``skip_bad``).
    """
    slices, skipped = _scan_mayo(directory, dose, thickness, patients, exclude_patients,
                                 expected_shape, skip_bad)
    for message in skipped:
        _report(message)
    return slices


def _scan_mayo(directory, dose, thickness, patients, exclude_patients, expected_shape,
               skip_bad) -> tuple[list[MayoSlice], list[str]]:
    directory = _check_directory(directory, _MAYO_HOW)
    if dose not in ("full", "quarter") or thickness not in ("1mm", "3mm"):
        raise ValueError(f"dose must be 'full' or 'quarter' and thickness '1mm' or '3mm', "
                         f"got {dose!r}, {thickness!r}")
    series = f"{dose}_{thickness}"
    folders = sorted(p for p in directory.iterdir() if p.is_dir())
    if patients is not None:
        wanted = set(patients)
        unknown = wanted - {p.name for p in folders}
        if unknown:
            raise DataError(f"{directory}: no folder for patient(s) {', '.join(sorted(unknown))}")
        folders = [p for p in folders if p.name in wanted]
    folders = [p for p in folders if p.name not in set(exclude_patients)]
    if not folders:
        raise DataError(f"{directory}: no patient folders; expected {_MAYO_HOW}")
    found: list[MayoSlice] = []
    skipped: list[str] = []
    for folder in folders:
        series_dir = folder / series
        if not series_dir.is_dir():
            message = f"{series_dir}: missing series folder {series}"
            if skip_bad:
                skipped.append(f"skipped: {message}")
                continue
            raise DataError(message)
        files = sorted(p for p in series_dir.rglob("*")
                       if p.is_file() and p.suffix.lower() in _DICOM_SUFFIXES)
        if not files:
            message = f"{series_dir}: no DICOM files (*.IMA, *.dcm)"
            if skip_bad:
                skipped.append(f"skipped: {message}")
                continue
            raise DataError(message)
        slices = []
        for path in files:
            try:
                z, spacing = _scan_mayo_file(path, expected_shape)
            except DataError as err:
                if not skip_bad:
                    raise
                skipped.append(f"skipped: {err}")
                continue
            slices.append(MayoSlice(folder.name, str(path), z, spacing))
        found.extend(sorted(slices, key=lambda s: s.z))
    if not found:
        raise DataError(f"{directory}: no usable {series} slices found")
    return found, skipped


def mayo_slices(directory: str | os.PathLike, grid: Any = "human", *,
                dose: Literal["full", "quarter"] = "full",
                thickness: Literal["1mm", "3mm"] = "3mm",
                patients: Sequence[str] | None = None,
                exclude_patients: Sequence[str] = (),
                scale: Literal["physical", "pixels"] = "physical",
                expected_shape: tuple[int, int] | None = (512, 512),
                skip_bad: bool = False) -> ImageSet:
    """The slices of a Mayo/AAPM challenge tree as an image source.

    Headers are checked when the set is made (`scan_mayo`); pixels are read,
    converted (``HU = pixel * RescaleSlope + RescaleIntercept``, then
    `hu_to_attenuation`) and resampled (`resample_to_grid`) when an image is used.

    Parameters
    ----------
    directory : path
        The tree's root.
    grid : lpd.operators.Setup, ProblemConfig, str or tuple of int
        Target grid (see `real_ct_slices`). The paper's set-up is ``"human"``
        with ``scale="pixels"``; ``"physical"`` keeps the true size.
    dose, thickness, patients, exclude_patients, expected_shape, skip_bad
        See `scan_mayo`. The paper trained on the full-dose 3 mm slices of all
        patients but ``L286``, and tested on ``L286``.
    scale : {"physical", "pixels"}
        See `resample_to_grid`.

    Returns
    -------
    ImageSet
        Labelled ``"<patient>:<file>"``, ordered by patient and position.

    References
    ----------
    McCollough CH et al. Low-dose CT for the detection and classification of
    metastatic liver lesions: results of the 2016 Low Dose CT Grand Challenge.
    Med. Phys. 44(10), 2017.
    """
    slices, skipped = _scan_mayo(directory, dose, thickness, patients, exclude_patients,
                                 expected_shape, skip_bad)
    for message in skipped:
        _report(message)
    shape, min_pt, max_pt = _grid_of(grid)

    def load(i):
        item = slices[i]
        hu, spacing, _ = _read_dicom_hu(item.path, expected_shape)
        return resample_to_grid(hu_to_attenuation(hu), spacing, shape, min_pt, max_pt,
                                scale=scale)

    labels = [f"{s.patient}:{s.path}" for s in slices]
    return ImageSet(load, len(slices), shape, labels, f"mayo/{dose}_{thickness}", skipped)


# ---------------------------------------------------------------------------
# LoDoPaB-CT
# ---------------------------------------------------------------------------

LODOPAB_MU_MAX = 81.35858
"""Attenuation (per m) that LoDoPaB-CT's ground truth divides by (3071 HU)."""

_LODOPAB_SHAPES = {"ground_truth": (362, 362), "observation": (1000, 513)}
_LODOPAB_COUNTS = {"train": 35820, "validation": 3522, "test": 3553}
_LODOPAB_HOW = (
    "download LoDoPaB-CT from Zenodo (https://zenodo.org/record/3384092: "
    "ground_truth_{train,validation,test}.zip and observation_*.zip) and unzip all "
    "into one directory; see data/README.md"
)


def lodopab_problem() -> ProblemConfig:
    """The problem of LoDoPaB-CT, for `lpd.operators.get_setup`.

    362 x 362 pixels on ``[-0.13, 0.13]^2`` m, parallel beam, 1000 angles on
    ``[0, pi)``, 513 detector pixels (ODL's ``parallel_beam_geometry``), pre-log
    Poisson noise of 4096 photons with ``mu = LODOPAB_MU_MAX`` per m on the
    ground truth as stored (``units="native"``). Its observations are post-log:
    ``PoissonNoise.post_log`` of this model, except that LoDoPaB clamps zero
    counts at 0.1 photons, not 1.

    References
    ----------
    Leuschner J, Schmidt M, Otero Baguer D, Maass P. LoDoPaB-CT, a benchmark
    dataset for low-dose computed tomography reconstruction. Sci. Data 8, 2021.
    """
    return ProblemConfig(
        name="lodopab", shape=(362, 362), min_pt=(-0.13, -0.13), max_pt=(0.13, 0.13),
        beam="parallel", num_angles=1000, det_shape=513, normalize=False,
        noise=NoiseConfig(kind="poisson", mu=LODOPAB_MU_MAX, photons=4096.0),
    )


class LoDoPaB:
    """The files of one part of LoDoPaB-CT, checked and indexed.

    Reads ``ground_truth_<part>_NNN.hdf5`` (and ``observation_<part>_NNN.hdf5``
    where present), each with one dataset ``data`` of ``samples_per_file``
    samples, the last file shorter: ground truth ``(n, 362, 362)`` in ``[0, 1]``
    (attenuation / `LODOPAB_MU_MAX` per m), observations ``(n, 1000, 513)``
    post-log. Files are opened when the object is made (structure and shapes
    checked); values are checked when read.

    Parameters
    ----------
    directory : path
        Directory holding the unzipped ``.hdf5`` files.
    part : {"train", "validation", "test"}
        Which part.
    samples_per_file : int
        Samples in every file but the last (128 in LoDoPaB-CT).
    skip_bad : bool
        Report (as a warning) and skip unreadable or malformed files
        instead of raising.
    check_values : bool
        Read every file now and check for NaN (slow for the training part).

    Attributes
    ----------
    has_observations : bool
        Whether observation files were found for every ground-truth file.
    skipped : list of str
        Files left out by ``skip_bad``, with the reason.

    References
    ----------
    Leuschner J et al. LoDoPaB-CT, a benchmark dataset for low-dose computed
    tomography reconstruction. Sci. Data 8, 2021.
    """

    def __init__(self, directory: str | os.PathLike, part: str = "train", *,
                 samples_per_file: int = 128, skip_bad: bool = False,
                 check_values: bool = False):
        try:
            import h5py  # noqa: F401
        except ImportError as err:
            raise DataSourceMissing("reading LoDoPaB-CT needs h5py: pip install h5py") from err
        if part not in _LODOPAB_COUNTS:
            raise ValueError(f"part must be one of {', '.join(_LODOPAB_COUNTS)}, got {part!r}")
        self.directory = _check_directory(directory, _LODOPAB_HOW)
        self.part = part
        self.samples_per_file = int(samples_per_file)
        self.skipped: list[str] = []
        pattern = re.compile(rf"ground_truth_{part}_(\d{{3}})\.hdf5$")
        numbered = sorted((int(m.group(1)), p) for p in self.directory.iterdir()
                          if (m := pattern.match(p.name)))
        if not numbered:
            raise DataError(f"{self.directory}: no ground_truth_{part}_NNN.hdf5 files; "
                            f"{_LODOPAB_HOW}")
        numbers = [n for n, _ in numbered]
        gaps = sorted(set(range(numbers[-1] + 1)) - set(numbers))
        if gaps and not skip_bad:
            raise DataError(f"{self.directory}: missing ground_truth_{part}_"
                            f"{gaps[0]:03d}.hdf5 (files must be numbered from 000 on)")
        last = numbers[-1]
        self._files: list[tuple[Path, Path | None, int]] = []
        for number, gt_path in numbered:
            obs_path = self.directory / f"observation_{part}_{number:03d}.hdf5"
            try:
                count = self._check_file(gt_path, "ground_truth", number == last,
                                         check_values)
                if obs_path.exists():
                    obs_count = self._check_file(obs_path, "observation", number == last,
                                                 check_values)
                    if obs_count != count:
                        raise DataError(f"{obs_path}: {obs_count} samples but "
                                        f"{gt_path.name} has {count}")
                else:
                    obs_path = None
            except DataError as err:
                if not skip_bad:
                    raise
                self.skipped.append(f"skipped: {err}")
                _report(f"skipped: {err}")
                continue
            self._files.append((gt_path, obs_path, count))
        if not self._files:
            raise DataError(f"{self.directory}: no usable LoDoPaB-CT {part} files")
        self.has_observations = all(obs is not None for _, obs, _ in self._files)
        self._offsets = np.cumsum([0] + [count for _, _, count in self._files])

    def _check_file(self, path: Path, kind: str, is_last: bool, check_values: bool) -> int:
        import h5py

        try:
            with h5py.File(path, "r") as f:
                if "data" not in f:
                    raise DataError(f"{path}: no dataset 'data'")
                data = f["data"]
                shape = tuple(data.shape)
                if len(shape) != 3 or shape[1:] != _LODOPAB_SHAPES[kind]:
                    raise DataError(f"{path}: dataset 'data' of shape {shape}, expected "
                                    f"(n, {', '.join(map(str, _LODOPAB_SHAPES[kind]))})")
                if not (1 <= shape[0] <= self.samples_per_file) or (
                        not is_last and shape[0] != self.samples_per_file):
                    raise DataError(f"{path}: {shape[0]} samples, expected "
                                    f"{self.samples_per_file} (fewer only in the last file)")
                if check_values and not np.all(np.isfinite(data[()])):
                    raise DataError(f"{path}: data contain NaN or infinite values")
        except OSError as err:
            raise DataError(f"{path}: not a readable HDF5 file ({err})") from err
        return shape[0]

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _locate(self, index: int) -> tuple[int, int]:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        file = int(np.searchsorted(self._offsets, index, side="right")) - 1
        return file, index - int(self._offsets[file])

    def _read(self, path: Path, local: int) -> np.ndarray:
        import h5py

        try:
            with h5py.File(path, "r") as f:
                sample = np.asarray(f["data"][local], dtype=np.float32)
        except OSError as err:
            raise DataError(f"{path}: cannot read sample {local} ({err})") from err
        if not np.all(np.isfinite(sample)):
            raise DataError(f"{path}: sample {local} contains NaN or infinite values")
        return sample

    def ground_truth_sample(self, index: int) -> np.ndarray:
        """Ground truth ``index`` as stored: float32 ``(362, 362)`` in ``[0, 1]``.

        LoDoPaB stores images as ODL elements of `lodopab_problem`'s space (its
        observations are the ray transform of the arrays as stored).
        """
        file, local = self._locate(index)
        return self._read(self._files[file][0], local)

    def observation(self, index: int) -> np.ndarray:
        """Observation ``index``: float32 ``(1000, 513)`` post-log sinogram."""
        file, local = self._locate(index)
        path = self._files[file][1]
        if path is None:
            raise DataSourceMissing(
                f"{self.directory}: no observation_{self.part}_NNN.hdf5 files; {_LODOPAB_HOW}")
        return self._read(path, local)

    def pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(observation, ground truth)`` of sample ``index`` (for `measured_pairs`).

        """
        return self.observation(index), self.ground_truth_sample(index)

    def ground_truth(self, grid: Any = None, *, units: Literal["native", "attenuation"] =
                     "native", scale: Literal["physical", "pixels"] = "physical") -> ImageSet:
        """The ground truth as an image source.

        Parameters
        ----------
        grid : optional
            ``None`` keeps LoDoPaB's own 362 x 362 grid (`lodopab_problem`).
            Otherwise a target grid as in `real_ct_slices` (lengths in mm; the
            images cover 260 mm).
        units : {"native", "attenuation"}
            ``"native"``: as stored. ``"attenuation"``: relative to water, as
            `hu_to_attenuation` gives (LoDoPaB's mu_water is 20 per m, air 0.02).
        scale : {"physical", "pixels"}
            See `resample_to_grid`.

        Returns
        -------
        ImageSet
            Images indexed like ODL elements, labelled ``"<file>[<sample>]"``.
        """
        if units not in ("native", "attenuation"):
            raise ValueError(f"units must be 'native' or 'attenuation', got {units!r}")
        target = None if grid is None else _grid_of(grid)

        def load(i):
            image = self.ground_truth_sample(i)
            if units == "attenuation":
                mu = image.astype(np.float64) * LODOPAB_MU_MAX
                image = np.maximum((mu - 0.02) / (20.0 - 0.02), 0.0).astype(np.float32)
            if target is None:
                return image
            shape, min_pt, max_pt = target
            spacing = 260.0 / 362
            # Stored (x, y): its transpose has rows along +y.
            return resample_to_grid(image.T, (spacing, spacing), shape, min_pt, max_pt,
                                    scale=scale, rows_up=True)

        labels = []
        for path, _, count in self._files:
            labels.extend(f"{path.name}[{k}]" for k in range(count))
        shape = (362, 362) if target is None else target[0]
        return ImageSet(load, len(self), shape, labels, f"lodopab/{self.part}", self.skipped)

    def __repr__(self) -> str:
        return f"LoDoPaB({str(self.directory)!r}, part={self.part!r}, {len(self)} samples)"


# ---------------------------------------------------------------------------
# What is installed
# ---------------------------------------------------------------------------

def _source(name, kind, available, summary, location="", how=""):
    return {"name": name, "kind": kind, "available": bool(available), "summary": summary,
            "location": location, "how_to_get": how}


def data_sources(mayo_dir: str | os.PathLike | None = None,
                 lodopab_dir: str | os.PathLike | None = None) -> list[dict]:
    """Every data source lpd knows, with what is installed and how to get the rest.

    Cheap: files are listed and headers read, pixel data are not decoded.

    Parameters
    ----------
    mayo_dir, lodopab_dir : path, optional
        Where the user keeps these data sets; by default the environment
        variables ``LPD_MAYO_DIR`` and ``LPD_LODOPAB_DIR``.

    Returns
    -------
    list of dict
        One per source: ``name``, ``kind`` (``"generated"``, ``"installed"`` or
        ``"user"``), ``available``, ``summary`` (counts and shapes),
        ``location`` and ``how_to_get``.
    """
    out = [
        _source("ellipses", "generated", True,
                "random ellipse phantoms of the paper's training set, any grid "
                "(Poisson(50) ellipses)"),
        _source("rectangles", "generated", True,
                "random rotated rectangles with the ellipses' statistics (generalisation tests)"),
        _source("shepp_logan", "generated", True, "modified Shepp-Logan phantom, any grid"),
    ]
    try:
        path = _head_ct_path()
        volume, spacing = load_inv3(path)
        counts = ", ".join(f"{split} {sum(hi - lo for lo, hi in blocks)}"
                           for split, blocks in HEAD_CT_SPLITS.items())
        out.append(_source(
            "head_ct", "installed", True,
            f"{volume.shape[0]} slices of {volume.shape[1]} x {volume.shape[2]} HU, "
            f"{spacing[0]:.3g} mm pixels, {spacing[2]:.3g} mm apart; splits: {counts}",
            str(path)))
    except DataError as err:
        out.append(_source("head_ct", "installed", False, "real head CT (invesalius-examples)",
                           "", str(err)))
    found, problems, shapes = [], [], []
    for name in PYDICOM_CT_FILES:
        try:
            import pydicom

            path = _pydicom_path(name)
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            found.append(name)
            shapes.append(f"{ds.Rows} x {ds.Columns}")
        except (DataError, ImportError, OSError, ValueError) as err:
            problems.append(str(err))
    out.append(_source(
        "pydicom_ct", "installed", len(found) == len(PYDICOM_CT_FILES),
        f"{len(found)} of {len(PYDICOM_CT_FILES)} CT slices of other patients "
        f"({', '.join(f'{n} {s}' for n, s in zip(found, shapes, strict=True))}): "
        "split 'other_patients'",
        "pydicom / pydicom-data packages", "; ".join(problems) or ""))

    mayo_dir = mayo_dir or os.environ.get("LPD_MAYO_DIR")
    if mayo_dir and Path(mayo_dir).is_dir():
        patients = sorted(p.name for p in Path(mayo_dir).iterdir() if p.is_dir())
        counts = []
        for series in ("full_3mm", "quarter_3mm", "full_1mm", "quarter_1mm"):
            n = sum(1 for p in patients for f in (Path(mayo_dir) / p / series).rglob("*")
                    if f.suffix.lower() in _DICOM_SUFFIXES)
            counts.append(f"{series} {n}")
        out.append(_source("mayo", "user", bool(patients),
                           f"{len(patients)} patients ({', '.join(patients[:12])}"
                           f"{' ...' if len(patients) > 12 else ''}); files: "
                           f"{', '.join(counts)}; 512 x 512", str(mayo_dir),
                           "" if patients else _MAYO_HOW))
    else:
        out.append(_source("mayo", "user", False,
                           "Mayo/AAPM low-dose CT challenge (the paper's human data)",
                           str(mayo_dir or ""),
                           f"set LPD_MAYO_DIR or pass the directory; {_MAYO_HOW}"))

    lodopab_dir = lodopab_dir or os.environ.get("LPD_LODOPAB_DIR")
    if lodopab_dir and Path(lodopab_dir).is_dir():
        parts = []
        for part, expected in _LODOPAB_COUNTS.items():
            gt = len(list(Path(lodopab_dir).glob(f"ground_truth_{part}_*.hdf5")))
            obs = len(list(Path(lodopab_dir).glob(f"observation_{part}_*.hdf5")))
            parts.append(f"{part}: {gt} ground-truth / {obs} observation files "
                         f"(complete: {math.ceil(expected / 128)} files, {expected} samples)")
        have = any("0 ground-truth" not in p for p in parts)
        out.append(_source("lodopab", "user", have,
                           "; ".join(parts) + "; ground truth 362 x 362, observations "
                           "1000 x 513", str(lodopab_dir), "" if have else _LODOPAB_HOW))
    else:
        out.append(_source("lodopab", "user", False,
                           "LoDoPaB-CT (35 820 / 3 522 / 3 553 slices, 362 x 362)",
                           str(lodopab_dir or ""),
                           f"set LPD_LODOPAB_DIR or pass the directory; {_LODOPAB_HOW}"))
    return out


def describe_sources(mayo_dir: str | os.PathLike | None = None,
                     lodopab_dir: str | os.PathLike | None = None) -> str:
    """A readable table of `data_sources` (what ``lpd datasets`` prints)."""
    lines = ["Data sources of lpd (see data/README.md)", ""]
    for source in data_sources(mayo_dir, lodopab_dir):
        status = {"generated": "generated", "installed": "installed",
                  "user": "found"}[source["kind"]]
        if not source["available"]:
            status = "MISSING" if source["kind"] != "user" else "not found"
        lines.append(f"{source['name']:<12} {status:<10} {source['summary']}")
        if source["location"]:
            lines.append(f"{'':<12} {'':<10} at {source['location']}")
        if source["how_to_get"]:
            lines.append(f"{'':<12} {'':<10} to get it: {source['how_to_get']}")
    return "\n".join(lines)
