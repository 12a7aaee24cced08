"""The U-Net and learned post-processing of the FBP (`FBPUNet`, [3], [4]).

The references are those of the docstring of `lpd.methods.networks`.
"""

from __future__ import annotations

from typing import Any, Literal

import keras
import tensorflow as tf

from lpd.methods.networks._common import (
    _PACKAGE,
    _check_operator,
    _from_config,
    _setup_to_config,
)
from lpd.methods.networks.fbp import FilteredBackProjection
from lpd.methods.networks.layers import _Conv2D
from lpd.physics.bridge import TFOperator

__all__ = ["UNet", "FBPUNet"]


@keras.saving.register_keras_serializable(package=_PACKAGE)
class UNet(keras.Model):
    """A 2D U-Net mapping images ``(batch, H, W, channels)`` to ``(batch, H, W, n_out)``.

    Two conv3x3-ReLU per level, 2x2 max-pooling down, 2x2 transposed
    convolutions up, skip connections by concatenation, a 1x1 output
    convolution. Images whose sides are not multiples of ``2**depth`` are
    zero-padded at the end and cropped back.

    Parameters
    ----------
    n_out : int
        Output channels.
    features : int
        Channels at the finest level.
    depth : int
        Number of poolings (the coarsest level is ``2**depth`` times smaller).
    widths : {"reference", "doubling"}
        Channels per level. ``"doubling"``: ``features * 2**level`` (the U-Net of
        [3]). ``"reference"``: the widths of the original code's
        ``reference_unet`` (``features`` at level 0, ``2**level`` at levels
        ``1 .. depth-1``, ``features * 2**depth`` at the coarsest), which is what
        gives its 9.7e6 parameters at ``features=64, depth=4``; kept to reproduce
        the paper's FBP + U-Net baseline.

    References
    ----------
    Ronneberger O et al. arXiv:1505.04597. The widths of ``"reference"``:
    ``adler.tensorflow.reference_unet`` used by adler-j/learned_primal_dual.
    """

    def __init__(self, n_out: int = 1, features: int = 64, depth: int = 4,
                 widths: Literal["reference", "doubling"] = "reference", **kwargs):
        super().__init__(**kwargs)
        if depth < 1 or features < 1:
            raise ValueError("depth and features must be >= 1")
        if widths not in ("reference", "doubling"):
            raise ValueError(f"widths must be 'reference' or 'doubling', got {widths!r}")
        self.n_out, self.features, self.depth, self.widths = n_out, features, depth, widths
        level_widths = [self._width(level) for level in range(depth + 1)]

        def conv(n, name):
            return _Conv2D(n, 3, padding="same", activation="relu",
                           kernel_initializer="he_normal", name=name)

        self.down = [[conv(level_widths[level], f"down_{level}_{j}") for j in range(2)]
                     for level in range(depth + 1)]
        self.upsample = [keras.layers.Conv2DTranspose(level_widths[level], 2, strides=2,
                                                      kernel_initializer="he_normal",
                                                      name=f"upsample_{level}")
                         for level in range(depth)]
        self.up = [[conv(level_widths[level], f"up_{level}_{j}") for j in range(2)]
                   for level in range(depth)]
        self.pool = keras.layers.MaxPooling2D(2)
        self.out = keras.layers.Conv2D(n_out, 1, name="out")

    def build(self, input_shape):
        # Built from shapes rather than by a call, so that no image is pushed
        # through the network when a model is made.
        channels = input_shape[-1]
        for level in range(self.depth + 1):
            for layer in self.down[level]:
                layer.build((None, None, None, channels))
                channels = layer.filters
        for level in reversed(range(self.depth)):
            self.upsample[level].build((None, None, None, channels))
            channels = self.upsample[level].filters + self.down[level][-1].filters
            for layer in self.up[level]:
                layer.build((None, None, None, channels))
                channels = layer.filters
        self.out.build((None, None, None, channels))
        self.built = True

    def _width(self, level: int) -> int:
        if level == self.depth:
            return self.features * 2**self.depth
        if self.widths == "reference" and level > 0:
            return 2**level
        return self.features * 2**level

    def call(self, x: tf.Tensor) -> tf.Tensor:
        height, width = x.shape[1], x.shape[2]
        multiple = 2**self.depth
        pad_h, pad_w = -height % multiple, -width % multiple
        if pad_h or pad_w:
            x = tf.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
        skips = []
        for level in range(self.depth + 1):
            if level > 0:
                x = self.pool(x)
            for layer in self.down[level]:
                x = layer(x)
            skips.append(x)
        for level in reversed(range(self.depth)):
            x = self.upsample[level](x)
            x = tf.concat([x, skips[level]], axis=-1)
            for layer in self.up[level]:
                x = layer(x)
        x = self.out(x)
        return x[:, :height, :width, :]

    def get_config(self) -> dict:
        return {"name": self.name, "trainable": self.trainable, "n_out": self.n_out,
                "features": self.features, "depth": self.depth, "widths": self.widths}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FBPUNet(keras.Model):
    """Learned post-processing: ``x = FBP(y) + UNet(FBP(y))``.

    Input contract: the model takes the *data* ``y`` like every other model of
    this module, and computes the FBP itself with the fixed
    `FilteredBackProjection` layer (Hann filter by default, as the paper's
    baseline). To post-process another reconstruction, call ``model.unet`` on it
    and add the input: ``x0 + model.unet(x0)``.

    Parameters
    ----------
    operator : TFOperator
    features, depth : int
        Width and depth of the `UNet` (64 and 4 in the paper: 9 699 423 parameters).
    widths : {"reference", "doubling"}
        Channel rule of the `UNet`.
    prelog_mu : float, optional
        For pre-log data: the FBP works on ``-log(y) / mu``.
    fbp_filter, fbp_frequency_scaling, fbp_scale
        Settings of the `FilteredBackProjection`.
    setup, operator_backend
        Where the operator came from, for `from_config`.

    References
    ----------
    Jin KH et al., IEEE TIP 26(9), 2017; the "FBP + U-Net" baseline of Adler &
    Öktem, arXiv:1707.06474.
    """

    @classmethod
    def from_network(cls, network, operator: TFOperator, **settings):
        """See `LearnedPrimalDual.from_network`."""
        return cls(operator, features=network.features, depth=network.depth,
                   widths=network.widths, **settings)

    def __init__(self, operator: TFOperator, features: int = 64, depth: int = 4,
                 widths: Literal["reference", "doubling"] = "reference",
                 prelog_mu: float | None = None, fbp_filter: str = "hann",
                 fbp_frequency_scaling: float = 1.0, fbp_scale: float | None = None,
                 setup: Any = None, operator_backend: str = "auto", **kwargs):
        kwargs.setdefault("name", "fbp_unet")
        super().__init__(**kwargs)
        self.operator = _check_operator(operator)
        self.setup = _setup_to_config(setup)
        self.operator_backend = operator_backend
        self.prelog_mu = None if prelog_mu is None else float(prelog_mu)
        self.fbp = FilteredBackProjection(
            operator, filter_type=fbp_filter, frequency_scaling=fbp_frequency_scaling,
            prelog_mu=self.prelog_mu, scale=fbp_scale, setup=setup,
            operator_backend=operator_backend, name="fbp")
        self.unet = UNet(1, features=features, depth=depth, widths=widths, name="unet")
        self.build((None, *operator.range_shape, 1))

    def build(self, input_shape):
        self.fbp.build(input_shape)
        self.unet.build((None, *self.operator.domain_shape, 1))
        self.built = True

    def call(self, y: tf.Tensor, training: bool = False) -> tf.Tensor:
        x0 = self.fbp(tf.convert_to_tensor(y, dtype=tf.float32))
        return x0 + self.unet(x0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.operator.domain_shape, 1)

    def get_config(self) -> dict:
        return {"name": self.name, "trainable": self.trainable,
                "features": self.unet.features, "depth": self.unet.depth,
                "widths": self.unet.widths, "prelog_mu": self.prelog_mu,
                "fbp_filter": self.fbp.filter_type,
                "fbp_frequency_scaling": self.fbp.frequency_scaling,
                "fbp_scale": self.fbp.scale, "setup": self.setup,
                "operator_backend": self.operator_backend}

    @classmethod
    def from_config(cls, config: dict, operator: TFOperator | None = None):
        """Rebuild from `get_config` output; see `UnrolledReconstructor.from_config`."""
        return _from_config(cls, config, operator)
