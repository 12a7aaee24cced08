"""Image denoisers for the plug-and-play family, and the loop that trains them on patches.

Two convolutional networks, both residual (they predict the correction of their
input) and both fully convolutional, so that one trained network serves any
image size:

- `scae`: the stacked convolutional auto-encoder of Liu, Kuang & Zhang (2018),
  3x3 convolutions with 32-64-128-64-32 hidden channels (`lpd.methods.splitting`);
- `dncnn`: a DnCNN-like denoiser (Zhang et al. 2017) that also takes the noise
  level as a second input channel, a constant map (as FFDNet and DRUNet do), so
  that one network denoises at every level (`lpd.methods.pnp`).

`fit` trains either on batches that a function draws (random patches), with
Adam and the mean squared error, and reports progress. `fit_adversarial` trains
a denoiser as the generator of a GAN against `discriminator`, the seed's
eight-layer strided network, the denoiser's loss being the mean squared error
plus a small adversarial term (as SRGAN does: the adversarial loss alone would
not tie the output to its target).

References
----------
Liu J, Kuang T, Zhang X. MICCAI 2018, Table 1 (the SCAE).
Zhang K, Zuo W, Chen Y, Meng D, Zhang L. Beyond a Gaussian denoiser: residual
learning of deep CNN for image denoising. IEEE TIP 26(7), 2017 (DnCNN).
Zhang K, Zuo W, Zhang L. FFDNet: toward a fast and flexible solution for
CNN-based image denoising. IEEE TIP 27(9), 2018 (the noise-level map).
Goodfellow I et al. Generative adversarial nets. NeurIPS 2014.
Ledig C et al. Photo-realistic single image super-resolution using a generative
adversarial network. CVPR 2017 (content plus adversarial loss).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["scae", "dncnn", "discriminator", "fit", "fit_adversarial", "apply",
           "random_patches"]


def scae(filters=(32, 64, 128, 64, 32), seed: int = 0):
    """The stacked convolutional auto-encoder: 3x3 convolutions, ReLU, a residual output.

    Maps images ``(batch, H, W, 1)`` to images of the same shape, for any H, W.
    """
    import keras

    keras.utils.set_random_seed(seed)
    x = keras.Input((None, None, 1))
    h = x
    for f in filters:
        h = keras.layers.Conv2D(f, 3, padding="same", activation="relu")(h)
    out = keras.layers.Add()([x, keras.layers.Conv2D(1, 3, padding="same")(h)])
    return keras.Model(x, out, name="scae")


def dncnn(features: int = 32, depth: int = 8, seed: int = 0):
    """A DnCNN-like denoiser of ``(image, level)``: ``depth`` 3x3 convolutions, a residual output.

    Input ``(batch, H, W, 2)``: the noisy image and a constant map of its noise
    standard deviation; output ``(batch, H, W, 1)``: the denoised image.
    """
    import keras

    if depth < 2 or features < 1:
        raise ValueError(f"need depth >= 2 and features >= 1, got {depth}, {features}")
    keras.utils.set_random_seed(seed)
    x = keras.Input((None, None, 2))
    h = x
    for _ in range(depth - 1):
        h = keras.layers.Conv2D(features, 3, padding="same", activation="relu")(h)
    image = keras.layers.Lambda(lambda t: t[..., :1])(x)
    out = keras.layers.Add()([image, keras.layers.Conv2D(1, 3, padding="same")(h)])
    return keras.Model(x, out, name="dncnn")


def discriminator(filters=(8, 64, 64, 64, 64, 64, 64), kernels=(3, 3, 3, 3, 3, 1, 1),
                  strides=(2, 2, 2, 2, 2, 1, 1), seed: int = 0):
    """The GAN's discriminator of Liu, Kuang & Zhang (2018, Table 1): a logit per image.

    Seven convolutions with the seed's filters, sizes and strides (leaky ReLU),
    then a global average and one dense unit: eight layers. Takes images
    ``(batch, H, W, 1)`` of any size; returns ``(batch, 1)`` logits of "real".
    """
    import keras

    if not (len(filters) == len(kernels) == len(strides)) or not filters:
        raise ValueError("filters, kernels and strides need one entry per layer each")
    keras.utils.set_random_seed(seed)
    x = keras.Input((None, None, 1))
    h = x
    for f, k, s in zip(filters, kernels, strides, strict=True):
        h = keras.layers.Conv2D(int(f), int(k), strides=int(s), padding="same")(h)
        h = keras.layers.LeakyReLU(0.2)(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(x, keras.layers.Dense(1)(h), name="discriminator")


def apply(network, images: np.ndarray, level: float | None = None) -> np.ndarray:
    """The network on a batch of images ``(n, H, W)``; ``level``: the noise map of `dncnn`."""
    x = np.asarray(images, np.float32)[..., None]
    if level is not None:
        x = np.concatenate([x, np.full_like(x, level)], axis=-1)
    return np.asarray(network(x, training=False))[..., 0]


def random_patches(images: np.ndarray, targets: np.ndarray, n: int, size: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random square patches at the same places of images and targets, x-flipped at random."""
    count, nx, ny = images.shape
    size_x, size_y = min(size, nx), min(size, ny)
    idx = rng.integers(count, size=n)
    i0 = rng.integers(nx - size_x + 1, size=n)
    j0 = rng.integers(ny - size_y + 1, size=n)
    flip = rng.random(n) < 0.5
    a = np.empty((n, size_x, size_y), np.float32)
    t = np.empty_like(a)
    for k in range(n):
        sl = (idx[k], slice(i0[k], i0[k] + size_x), slice(j0[k], j0[k] + size_y))
        a[k], t[k] = images[sl], targets[sl]
        if flip[k]:
            a[k], t[k] = a[k][::-1], t[k][::-1]
    return a, t


def _batch(draw: Callable[[int], tuple[np.ndarray, np.ndarray]], step: int):
    """``draw(step)`` as float32 arrays with a channel axis."""
    x, y = (np.asarray(a, np.float32) for a in draw(step))
    return (x[..., None] if x.ndim == 3 else x), (y[..., None] if y.ndim == 3 else y)


DECAYS = ("constant", "cosine")
"""Learning-rate schedules of `fit`: constant, or a cosine from its value to 0."""


def learning_rate_schedule(learning_rate: float, n_steps: int, decay: str = "constant"):
    """The learning rate of `fit`'s Adam: a constant, or a cosine decay to 0 over ``n_steps``.

    Raises
    ------
    ValueError
        For a decay not in `DECAYS`.
    """
    import keras

    if decay not in DECAYS:
        raise ValueError(f"unknown decay {decay!r}; choose one of {DECAYS}")
    if decay == "constant":
        return learning_rate
    return keras.optimizers.schedules.CosineDecay(learning_rate, max(1, n_steps), alpha=0.0)


def fit(network, draw: Callable[[int], tuple[np.ndarray, np.ndarray]], n_steps: int,
        learning_rate: float = 1e-3, *, decay: str = "constant",
        log: Callable[[str], Any] | None = None, label: str = "") -> float:
    """Train ``network`` for ``n_steps`` Adam steps on batches ``(x, target) = draw(step)``.

    ``x`` is ``(batch, H, W, channels)``, ``target`` ``(batch, H, W, 1)`` (or
    without the channel axis); the loss is their mean squared error. The
    learning rate is constant or decays to 0 (``decay``, see
    `learning_rate_schedule`). Progress is logged five times. Returns the mean
    loss of the last 50 steps.
    """
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.Adam(learning_rate_schedule(learning_rate, n_steps, decay))

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(network(x, training=True) - y))
        grads = tape.gradient(loss, network.trainable_variables)
        optimizer.apply_gradients(zip(grads, network.trainable_variables, strict=True))
        return loss

    losses = []
    t0 = time.perf_counter()
    for s in range(n_steps):
        losses.append(float(step(*_batch(draw, s))))
        if log is not None and ((s + 1) % max(1, n_steps // 5) == 0 or s + 1 == n_steps):
            log(f"    {label}step {s + 1}/{n_steps}, loss {np.mean(losses[-50:]):.3e} "
                f"({time.perf_counter() - t0:.0f} s)")
    return float(np.mean(losses[-50:])) if losses else math.nan


def fit_adversarial(generator, critic, draw: Callable[[int], tuple[np.ndarray, np.ndarray]],
                    n_steps: int, learning_rate: float = 1e-3, adversarial_weight: float = 1e-3,
                    *, log: Callable[[str], Any] | None = None, label: str = "") -> float:
    """Train ``generator`` against ``critic`` (a `discriminator`) on batches of `draw`.

    Each step updates the critic on the targets (real) and the generator's
    outputs (fake), then the generator on ``MSE + adversarial_weight * BCE(critic(G(x)), real)``
    (the non-saturating form). Returns the mean squared error of the generator
    over the last 50 steps, comparable with `fit`'s loss.
    """
    import keras
    import tensorflow as tf

    if not (math.isfinite(adversarial_weight) and adversarial_weight >= 0):
        raise ValueError(f"adversarial_weight must be finite and >= 0, got {adversarial_weight}")
    g_optimizer = keras.optimizers.Adam(learning_rate)
    d_optimizer = keras.optimizers.Adam(learning_rate)
    weight = tf.constant(adversarial_weight, tf.float32)

    def bce(logits, real: bool):
        labels = tf.ones_like(logits) if real else tf.zeros_like(logits)
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits))

    @tf.function
    def step(x, y):
        fake = generator(x, training=True)
        with tf.GradientTape() as tape:
            d_loss = (bce(critic(y, training=True), True)
                      + bce(critic(tf.stop_gradient(fake), training=True), False))
        grads = tape.gradient(d_loss, critic.trainable_variables)
        d_optimizer.apply_gradients(zip(grads, critic.trainable_variables, strict=True))
        with tf.GradientTape() as tape:
            fake = generator(x, training=True)
            mse = tf.reduce_mean(tf.square(fake - y))
            g_loss = mse + weight * bce(critic(fake, training=True), True)
        grads = tape.gradient(g_loss, generator.trainable_variables)
        g_optimizer.apply_gradients(zip(grads, generator.trainable_variables, strict=True))
        return mse, d_loss

    losses, d_losses = [], []
    t0 = time.perf_counter()
    for s in range(n_steps):
        mse, d_loss = step(*_batch(draw, s))
        losses.append(float(mse))
        d_losses.append(float(d_loss))
        if log is not None and ((s + 1) % max(1, n_steps // 5) == 0 or s + 1 == n_steps):
            log(f"    {label}step {s + 1}/{n_steps}, mse {np.mean(losses[-50:]):.3e}, "
                f"discriminator {np.mean(d_losses[-50:]):.3f} ({time.perf_counter() - t0:.0f} s)")
    return float(np.mean(losses[-50:])) if losses else math.nan
