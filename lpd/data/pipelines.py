"""Synthetic data for training and evaluation: simulation and pipelines.

Two parts:

Simulation
    `simulate` turns images into noisy data with a set-up's operator and its
    noise model (`lpd.physics.noise`: `GaussianNoise`, `PoissonNoise`,
    `noise_model`, which this module re-exports).
Image sources and pipelines
    An image source is either random (`RandomPhantoms`: a new phantom per
    sample) or a finite set (`ImageSet`: real CT slices, user data).
    `training_pairs` is a ``tf.data`` pipeline that simulates (data, image)
    batches on the fly in parallel with training; `fixed_set` gives validation
    and test sets that are bit-identical every time. `measured_pairs` does the
    same for data sets that ship their own observations.

Randomness: every sample ``n`` of a stream with seed ``s`` draws from its own
generators, seeded by ``numpy.random.SeedSequence(s, spawn_key=(stream, n))``
(Philox), so results do not depend on batch composition, thread scheduling or
where a stream is resumed.

References
----------
Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 37(6), 2018,
arXiv:1707.06474, section IV (data and noise of both experiments).
"""

from __future__ import annotations

import abc
import atexit
import functools
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from lpd.config import AUGMENTATIONS
from lpd.data import phantoms
from lpd.physics.noise import GaussianNoise, PoissonNoise, noise_model

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

    from lpd.physics.operators import Setup

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
    "stream_images",
    "stream_noise",
    "AUGMENTATIONS",
    "symmetry",
    "measured_pairs",
    "fixed_set",
    "fixed_image_rng",
]


class DataError(ValueError):
    """Data that cannot be used as it is; the message names the file and the problem."""


class DataSourceMissing(DataError):
    """A data source is not installed or not found; the message says how to get it."""


# ---------------------------------------------------------------------------
# Forward projection and simulation
# ---------------------------------------------------------------------------

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
    from lpd.physics.projector import projector

    return projector(op, memory_budget).forward(images)


def _as_setup(setup) -> Setup:
    from lpd.physics import operators  # imported on use: ODL is slow to import

    return operators.as_setup(setup)


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
    noise = setup.noise if noise is None else noise
    if post_log and not isinstance(noise, PoissonNoise):
        raise ValueError("post_log applies to Poisson (pre-log) noise only")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise ValueError(f"expected images of shape (batch, height, width), got {images.shape}")
    if not np.all(np.isfinite(images)):
        raise ValueError("images contain NaN or infinite values")
    clean = forward_project(setup.noise_input(noise), images)
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
_TRAIN_IMAGE, _TRAIN_NOISE, _TRAIN_ORDER, _FIXED_IMAGE, _FIXED_NOISE, _TRAIN_AUGMENT = range(6)


def symmetry(image: np.ndarray, k: int) -> np.ndarray:
    """Symmetry ``k`` of the square applied to ``image`` (its last two axes).

    ``k`` in 0..3: the identity, the flip of the first axis, of the second axis,
    and both (the 180° rotation); ``k`` in 4..7 transposes the result of
    ``k - 4`` (the other four symmetries; square images only).
    """
    k = int(k)
    if not 0 <= k < 8:
        raise ValueError(f"a symmetry of the square is numbered 0 to 7, got {k}")
    out = image
    if k & 1:
        out = np.flip(out, axis=-2)
    if k & 2:
        out = np.flip(out, axis=-1)
    if k & 4:
        if out.shape[-1] != out.shape[-2]:
            raise ValueError(f"transposing symmetries need square images, got {out.shape[-2:]}")
        out = np.swapaxes(out, -1, -2)
    return np.ascontiguousarray(out)


def inverse_symmetry(k: int) -> int:
    """The number of the symmetry that undoes `symmetry` ``k``.

    The flips (0-3) are their own inverses; a flip followed by the transpose is
    undone by the transpose followed by that flip, which is the other axis's flip
    followed by the transpose.
    """
    k = int(k)
    if not 0 <= k < 8:
        raise ValueError(f"a symmetry of the square is numbered 0 to 7, got {k}")
    return k if k < 4 else 4 | ((k & 1) << 1) | ((k & 2) >> 1)


def _augment(images: np.ndarray, samples: np.ndarray, seed: int, kind: str | None) -> np.ndarray:
    if kind is None:
        return images
    count = 8 if kind == "dihedral" else 4
    return np.stack([symmetry(image, _rng(seed, _TRAIN_AUGMENT, int(n)).integers(count))
                     for image, n in zip(images, samples, strict=True)])


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


def stream_images(source: ImageSource, samples, seed: int) -> np.ndarray:
    """The images of samples ``samples`` of the training stream seeded by ``seed``.

    Exactly those that `training_pairs` draws (before augmentation), for other
    estimators of the training distribution (`lpd.methods.lmmse`).
    """
    return _training_images(source, np.asarray(samples, dtype=np.int64), _check_seed(seed))


def stream_noise(seed: int, samples) -> list[np.random.Generator]:
    """The noise generators of samples ``samples`` of the training stream seeded by ``seed``."""
    return [_rng(_check_seed(seed), _TRAIN_NOISE, int(n)) for n in samples]


def _check_source(setup, source: ImageSource) -> None:
    if not isinstance(source, ImageSource):
        raise TypeError(f"expected an ImageSource (RandomPhantoms, ImageSet), got {source!r}")
    if tuple(source.shape) != tuple(setup.space.shape):
        raise ValueError(
            f"the images of {source.name!r} have shape {source.shape}, the set-up "
            f"{setup.config.name!r} needs {tuple(setup.space.shape)}; build the source "
            "for this set-up (e.g. RandomPhantoms(kind, setup.space.shape) or "
            "lpd.realdata.real_ct_slices(setup, split))"
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
                   prefetch: int | None = None,
                   augment: str | None = None) -> tf.data.Dataset:
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
    augment : {None, "flips", "dihedral"}
        Draw each training image under a random symmetry before it is
        simulated: one of the 4 flips (``"flips"``) or of the 8 symmetries of
        the square (``"dihedral"``, square grids), chosen by ``(seed, n)`` like
        the rest of the sample. The data are simulated from the transformed
        image, so every pair is exact. For small sets of real slices.

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
    noise = setup.noise if noise is None else noise
    if post_log and not isinstance(noise, PoissonNoise):
        raise ValueError("post_log applies to Poisson (pre-log) noise only")
    if augment is not None and augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augment {augment!r}; choose None or one of {AUGMENTATIONS}")
    if augment == "dihedral" and source.shape[0] != source.shape[1]:
        raise ValueError(f"augment='dihedral' needs square images, got shape {source.shape}; "
                         "use 'flips'")
    # Build the system matrix now, not in the first pipeline call.
    from lpd.physics.projector import projector

    projector(setup.noise_input(noise), _MATRIX_BUDGET)

    range_shape = tuple(setup.operator.range.shape)
    image_shape = tuple(setup.space.shape)

    def make_batch(k):
        samples = np.arange(batch_size, dtype=np.int64) + int(k) * batch_size
        images = _augment(_training_images(source, samples, seed), samples, seed, augment)
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


def fixed_image_rng(seed: int, index: int) -> np.random.Generator:
    """The generator that `fixed_set` draws sample ``index``'s random phantom from.

    With it the phantom's parameters can be drawn again, e.g.
    ``phantoms.random_ellipse_params(fixed_image_rng(seed, i))`` for the ellipses of
    sample ``i`` of ``fixed_set(setup, RandomPhantoms("ellipses", shape), n, seed)``.
    """
    return _rng(_check_seed(seed), _FIXED_IMAGE, int(index))


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
        images = np.stack([source.generate(fixed_image_rng(seed, i)) for i in range(n)])
    rngs = [_rng(seed, _FIXED_NOISE, i) for i in range(n)]
    data = simulate(setup, images, rngs, noise=noise, post_log=post_log)
    return data, images
