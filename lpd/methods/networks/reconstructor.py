"""A trained network as a reconstructor, and the size of a network.

`NetworkReconstructor` gives a model of `lpd.methods.networks` the batched
interface of the classical methods that `lpd.evaluation.evaluate` scores;
`count_parameters` counts a built model's trainable scalars.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

__all__ = ["count_parameters", "NetworkReconstructor"]


def count_parameters(model: keras.Model) -> int:
    """Number of trainable scalars of a built model."""
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


class NetworkReconstructor:
    """A network as a batched reconstructor for `lpd.evaluation.evaluate`.

    ``reconstruct_batch(data)`` maps data ``(n, *range_shape)`` (a trailing
    channel axis is accepted) to images ``(n, *domain_shape)``, in one traced
    ``tf.function`` of the model in inference mode; ``__call__`` takes one
    sample. With ``chunk`` set, the data go through in chunks of that many
    samples, the last padded to the same size, so that one shape is traced.

    Parameters
    ----------
    model : keras.Model
        A model of this module (it has ``operator``).
    key, name : str, optional
        The method's key and display name (the results table's columns); the
        model's class name by default.
    chunk : int, optional
        Samples per call of the model; all at once by default.
    """

    def __init__(self, model: keras.Model, key: str | None = None, name: str | None = None,
                 chunk: int | None = None):
        if chunk is not None and chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.model = model
        self.key = key or type(model).__name__
        self.name = name or self.key
        self.chunk = chunk
        self.n_parameters = count_parameters(model)
        self.range_shape = tuple(model.operator.range_shape)
        self._predict = tf.function(
            lambda y: model(y, training=False),
            input_signature=[tf.TensorSpec((None, *self.range_shape, 1), tf.float32)])

    @property
    def params(self) -> dict:
        return {"model": type(self.model).__name__}

    def reconstruct_batch(self, data) -> np.ndarray:
        data = np.asarray(data, dtype=np.float32)
        if data.shape[1:] == self.range_shape:
            data = data[..., None]
        elif data.shape[1:] != (*self.range_shape, 1):
            raise ValueError(f"{self.name}: expected data of shape (n, "
                             f"{', '.join(map(str, self.range_shape))}), got {data.shape}")
        if self.chunk is None:
            return self._predict(data).numpy()[..., 0]
        out = []
        for start in range(0, len(data), self.chunk):
            part = data[start:start + self.chunk]
            n = len(part)
            if n < self.chunk:
                part = np.concatenate([part, np.repeat(part[-1:], self.chunk - n, axis=0)])
            out.append(self._predict(part).numpy()[:n, ..., 0])
        return np.concatenate(out)

    def __call__(self, data) -> np.ndarray:
        """Reconstruct one sample (shape ``range_shape``)."""
        return self.reconstruct_batch(np.asarray(data)[None])[0]
