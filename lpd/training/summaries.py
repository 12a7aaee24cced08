"""TensorBoard summaries written without TensorBoard's Python package.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = ["scalar", "image"]


def _summary_metadata(plugin: str, data_class: int) -> bytes:
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(data_class=data_class)
    metadata.plugin_data.plugin_name = plugin
    return metadata.SerializeToString()


def scalar(tag: str, value: float, step: int) -> None:
    """A TensorBoard scalar, written without the ``tensorboard`` package.

    ``tf.summary.scalar`` needs ``tensorboard`` installed, which TensorFlow
    does not depend on; the event format itself is TensorFlow's, so the loop
    writes the summary with the metadata TensorBoard's scalar plugin reads.
    """
    from tensorflow.core.framework import summary_pb2

    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step,
                     metadata=_summary_metadata("scalars", summary_pb2.DATA_CLASS_SCALAR))


def image(tag: str, image: np.ndarray, step: int) -> None:
    """A TensorBoard image (``image``: HxWx1 in [0, 1]) in the image plugin's format."""
    from tensorflow.core.framework import summary_pb2

    png = tf.image.encode_png(tf.cast(np.round(np.clip(image, 0, 1) * 255), tf.uint8))
    tensor = tf.stack([tf.as_string(image.shape[1]), tf.as_string(image.shape[0]), png])
    tf.summary.write(tag, tensor, step=step,
                     metadata=_summary_metadata("images", summary_pb2.DATA_CLASS_BLOB_SEQUENCE))
