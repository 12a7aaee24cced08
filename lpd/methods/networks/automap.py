"""A fully learned reconstruction (AUTOMAP): dense layers from the data to the image.

`Automap` learns the whole map from data to image, with no operator inside:
two dense layers with tanh (``m -> n`` and ``n -> n`` for ``m`` data values and an
image of ``n`` pixels), a reshape to the image grid, two 5x5 convolutions with
ReLU and a 7x7 transposed convolution to one channel. Its parameters grow as
``(m + n) * n``: 28 million at 64 x 64 with 30 angles, 358 million at 128 x 128
(the reason the lecture gives for its limits), against about 250 000 for LPD.

The operator is used only for its shapes (and, as for every model of lpd, to
rebuild the set-up when a saved model is loaded).

References
----------
Zhu B, Liu JZ, Cauley SF, Rosen BR, Rosen MS. Image reconstruction by
domain-transform manifold learning. Nature 555, 2018 (AUTOMAP: two tanh dense
layers of the image's size, two 5x5 convolutions with 64 channels, a 7x7
transposed convolution).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from lpd.methods.networks._common import (
    _PACKAGE,
    _check_operator,
    _from_config,
    _setup_to_config,
)
from lpd.physics.bridge import TFOperator

__all__ = ["Automap", "automap_parameters"]


def automap_parameters(data_size: int, image_size: int, features: int = 64) -> int:
    """Trainable parameters of `Automap` for ``data_size`` inputs and ``image_size`` pixels."""
    dense = (data_size + 1) * image_size + (image_size + 1) * image_size
    convs = (25 * 1 + 1) * features + (25 * features + 1) * features + 49 * features + 1
    return dense + convs


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Automap(keras.Model):
    """AUTOMAP: data ``(batch, *range_shape, 1)`` to images ``(batch, *domain_shape, 1)``.

    Parameters
    ----------
    operator : TFOperator
        The forward operator (its shapes only).
    features : int
        Channels of the two convolutions (64 in the paper).
    setup, operator_backend
        Where the operator came from, for `from_config`.
    """

    @classmethod
    def from_network(cls, network, operator: TFOperator, **settings):
        """Build from a `lpd.config.NetworkConfig` (``features``); other settings are ignored."""
        return cls(operator, features=network.features, setup=settings.get("setup"),
                   operator_backend=settings.get("operator_backend", "auto"))

    def __init__(self, operator: TFOperator, features: int = 64, setup: Any = None,
                 operator_backend: str = "auto", **kwargs):
        kwargs.setdefault("name", "automap")
        super().__init__(**kwargs)
        if features < 1:
            raise ValueError(f"features must be >= 1, got {features}")
        self.operator = _check_operator(operator)
        self.features = int(features)
        self.setup = _setup_to_config(setup)
        self.operator_backend = operator_backend
        nx, ny = self.operator.domain_shape
        pixels = nx * ny
        self.dense_1 = keras.layers.Dense(pixels, activation="tanh", name="dense_1")
        self.dense_2 = keras.layers.Dense(pixels, activation="tanh", name="dense_2")
        self.conv_1 = keras.layers.Conv2D(features, 5, padding="same", activation="relu",
                                          name="conv_1")
        self.conv_2 = keras.layers.Conv2D(features, 5, padding="same", activation="relu",
                                          name="conv_2")
        self.out = keras.layers.Conv2DTranspose(1, 7, padding="same", name="out")
        self.build((None, *operator.range_shape, 1))

    def build(self, input_shape):
        nx, ny = self.operator.domain_shape
        data_size = 1
        for n in self.operator.range_shape:
            data_size *= n
        self.dense_1.build((None, data_size))
        self.dense_2.build((None, nx * ny))
        self.conv_1.build((None, nx, ny, 1))
        self.conv_2.build((None, nx, ny, self.features))
        self.out.build((None, nx, ny, self.features))
        self.built = True

    def call(self, y: tf.Tensor, training: bool = False) -> tf.Tensor:
        nx, ny = self.operator.domain_shape
        y = tf.convert_to_tensor(y, dtype=tf.float32)
        h = self.dense_2(self.dense_1(tf.reshape(y, (tf.shape(y)[0], -1))))
        h = tf.reshape(h, (-1, nx, ny, 1))
        return self.out(self.conv_2(self.conv_1(h)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.operator.domain_shape, 1)

    def get_config(self) -> dict:
        return {"name": self.name, "trainable": self.trainable, "features": self.features,
                "setup": self.setup, "operator_backend": self.operator_backend}

    @classmethod
    def from_config(cls, config: dict, operator: TFOperator | None = None):
        """Rebuild from `get_config` output; see `UnrolledReconstructor.from_config`."""
        return _from_config(cls, config, operator)
