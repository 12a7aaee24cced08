"""The building blocks of the networks: fast 3x3 convolutions, PReLU, conv blocks.

`_Conv2D` is Keras' ``Conv2D`` with faster gradients on a CPU (and the
bfloat16 switch that `lpd.methods.networks.precision` sets), `_PReLU` a
cheaper PReLU, `_ConvBlock` the conv3x3-act-conv3x3-act-conv3x3 block of the
unrolled schemes. They are shared by the modules of `lpd.methods.networks` and
are not part of its interface; they keep their underscore, and their class
names, because Keras names the weights of layers held in lists by their class.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def _filter_gradient_3x3(x: tf.Tensor, dy: tf.Tensor) -> tf.Tensor:
    """Gradient of a 3x3 "same" convolution with respect to its kernel.

    Pads the input by one pixel, pads ``dy`` at the end of each axis by two, and
    flattens both: the tap ``(a, b)`` of the kernel then pairs ``dy`` with the
    input shifted by ``a * (W + 2) + b`` rows of the flat array, so the kernel
    gradient is nine plain matrix products of contiguous slices. Positions
    where the padded ``dy`` is zero are exactly those where the shift would
    cross a row or an image, so nothing leaks. On a CPU at batch 1 this is 3-8
    times faster than TensorFlow's ``Conv2DBackpropFilter`` for 32 input
    channels, which dominated the training step of the unrolled schemes.
    """
    cin, cout = x.shape[-1], dy.shape[-1]
    width = tf.shape(x)[2] + 2
    flat_x = tf.reshape(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), (-1, cin))
    flat_dy = tf.reshape(tf.pad(dy, [[0, 0], [0, 2], [0, 2], [0, 0]]), (-1, cout))
    rows = tf.shape(flat_dy)[0] - (2 * width + 2)
    dy_t = tf.transpose(flat_dy[:rows])
    taps = [tf.matmul(dy_t, flat_x[a * width + b:a * width + b + rows])
            for a in range(3) for b in range(3)]
    return tf.reshape(tf.transpose(tf.stack(taps), (0, 2, 1)), (3, 3, cin, cout))


GRADIENTS = ("tensorflow", "turned", "turned-matmul")
"""The ways `_conv3x3_same` computes its gradients: TensorFlow's own
(``Conv2DBackpropInput`` and ``Conv2DBackpropFilter``); the input gradient as a
forward convolution with the turned kernel and TensorFlow's kernel gradient
(``turned``); the same with `_filter_gradient_3x3` for the kernel (``turned-matmul``).
All are exact; which is fastest depends on the CPU and the layer's shape."""

#: The way chosen for each shape of a layer's gradient, ``"B,H,W,Cin,Cout"`` -> way:
#: measured once per process on the first gradient of that shape (`gradient_way`),
#: or set from a training run's checkpoint (`set_gradient_ways`), so that a resumed
#: run computes its gradients the way it did before.
_WAYS: dict[str, str] = {}


def gradient_ways() -> dict[str, str]:
    """The gradient way of every layer shape chosen so far in this process (a copy)."""
    return dict(_WAYS)


def set_gradient_ways(ways: dict[str, str]) -> None:
    """Use these gradient ways (from `gradient_ways`) instead of measuring those shapes."""
    unknown = sorted(set(ways.values()) - set(GRADIENTS))
    if unknown:
        raise ValueError(f"unknown gradient way(s) {unknown}; known: {GRADIENTS}")
    _WAYS.update(ways)


def _default_way(cin: int) -> str:
    # The matmul kernel gradient paid from about 16 input channels on where it was
    # first measured (an AVX2 EPYC at batch 1).
    return "turned-matmul" if cin >= 16 else "turned"


def _gradients(way: str, x, kernel, dy):
    if way == "tensorflow":
        dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=kernel,
                                            out_backprop=dy, strides=[1, 1, 1, 1],
                                            padding="SAME")
    else:
        turned = tf.transpose(tf.reverse(kernel, [0, 1]), (0, 1, 3, 2))
        dx = tf.nn.conv2d(dy, turned, 1, "SAME")
    if way == "turned-matmul":
        dk = _filter_gradient_3x3(x, dy)
    else:
        dk = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=tf.shape(kernel),
                                             out_backprop=dy, strides=[1, 1, 1, 1],
                                             padding="SAME")
    return dx, dk


def _measure_way(shape: tuple[int, ...], cout: int, repeats: int = 5,
                 margin: float = 0.05) -> str:
    """The fastest of `GRADIENTS` for this shape on this CPU, timed eagerly now.

    Each way runs as its own ``tf.function`` on random tensors of the shape,
    twice to warm up, then ``repeats`` times, alternating; the best time of each
    counts. The default way is kept unless another is ``margin`` faster, so that
    timing noise does not flip the choice between processes for nothing.
    """
    import time

    rng = tf.random.Generator.from_seed(0)
    x = rng.normal(shape)
    dy = rng.normal((*shape[:-1], cout))
    kernel = rng.normal((3, 3, shape[-1], cout))
    runs = {way: tf.function(lambda x, k, d, way=way: _gradients(way, x, k, d))
            for way in GRADIENTS}
    best = dict.fromkeys(GRADIENTS, float("inf"))
    for r in range(2 + repeats):
        for way, run in runs.items():
            started = time.perf_counter()
            dx, dk = run(x, kernel, dy)
            _ = dx.numpy(), dk.numpy()
            if r >= 2:
                best[way] = min(best[way], time.perf_counter() - started)
    default = _default_way(shape[-1])
    fastest = min(best, key=best.get)
    return fastest if best[fastest] < (1 - margin) * best[default] else default


def gradient_way(shape, cout: int) -> str:
    """The way of a gradient whose input has ``shape`` (NHWC) and ``cout`` outputs.

    Chosen once per shape and process (`_measure_way`) where the shape is fully
    known, else the default; `set_gradient_ways` can fix it beforehand.
    """
    dims = tuple(shape)
    if any(d is None for d in dims):
        return _default_way(int(dims[-1]))
    key = ",".join(str(int(d)) for d in (*dims, cout))
    if key not in _WAYS:
        with tf.init_scope():  # time it eagerly, outside the graph being traced
            _WAYS[key] = _measure_way(tuple(int(d) for d in dims), int(cout))
    return _WAYS[key]


def _conv3x3_same(x: tf.Tensor, kernel: tf.Tensor):
    """``tf.nn.conv2d(x, kernel, 1, "SAME")`` with the gradients fastest on this CPU.

    The forward pass is TensorFlow's. The gradients are computed the way of
    `GRADIENTS` that measured fastest for the layer's shape (`gradient_way`):
    the turned-kernel input gradient (a forward convolution of ``dy`` with the
    kernel turned by 180 degrees and its channel axes swapped, exact for odd
    kernels, stride 1, "same") is often several times faster than
    ``Conv2DBackpropInput`` in oneDNN when the layer has few output channels,
    and `_filter_gradient_3x3` than ``Conv2DBackpropFilter`` at batch 1.
    """

    @tf.custom_gradient
    def conv(x, kernel):
        def grad(dy):
            return _gradients(gradient_way(x.shape, kernel.shape[-1]), x, kernel, dy)

        return tf.nn.conv2d(x, kernel, 1, "SAME"), grad

    return conv(x, kernel)


class _Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` with faster gradients for 3x3 "same" convolutions on a CPU.

    Same weights, outputs and serialisation as Keras' layer; only the
    gradients are computed differently (`_conv3x3_same`), on machines without a
    GPU (where cuDNN's own are the faster). The bias is added with
    ``tf.nn.bias_add`` so that TensorFlow can fuse it into the convolution.
    """

    def build(self, input_shape):
        super().build(input_shape)
        self._fast = (
            tuple(self.kernel_size) == (3, 3) and tuple(self.strides) == (1, 1)
            and tuple(self.dilation_rate) == (1, 1) and self.padding == "same"
            and self.groups == 1 and self.data_format == "channels_last"
            and keras.backend.backend() == "tensorflow"
            and not tf.config.list_physical_devices("GPU")
        )

    #: "float32", or "bfloat16" for convolutions computed in bfloat16 on float32
    #: inputs, weights and outputs (set by `set_precision` before the first call).
    precision = "float32"

    def call(self, inputs):
        if self.precision == "bfloat16":
            # The convolution in bfloat16 (TensorFlow's own gradients, which
            # oneDNN runs on AMX); its inputs, weights, output and bias in float32.
            outputs = tf.cast(tf.nn.conv2d(
                tf.cast(inputs, tf.bfloat16),
                tf.cast(tf.convert_to_tensor(self.kernel), tf.bfloat16),
                self.strides, self.padding.upper(), dilations=self.dilation_rate),
                tf.float32)
        elif not self._fast:
            return super().call(inputs)
        else:
            outputs = _conv3x3_same(inputs, tf.convert_to_tensor(self.kernel))
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, tf.convert_to_tensor(self.bias))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs


@tf.custom_gradient
def _prelu(x: tf.Tensor, alpha: tf.Tensor):
    """``max(x, 0) + alpha * min(x, 0)`` in fewer passes over memory than Keras' PReLU."""
    slope = tf.where(x > 0, tf.ones_like(alpha), alpha)

    def grad(dy):
        axes = list(range(x.shape.rank - 1))
        dalpha = tf.reduce_sum(dy * tf.minimum(x, 0.0), axis=axes)
        return dy * slope, tf.reshape(dalpha, tf.shape(alpha))

    return x * slope, grad


class _PReLU(keras.layers.PReLU):
    """`keras.layers.PReLU` (same weights) with a cheaper call for one slope per channel."""

    def call(self, inputs):
        if (keras.backend.backend() != "tensorflow" or self.alpha.shape[:-1]
                != (1,) * (len(self.alpha.shape) - 1)):
            return super().call(inputs)
        return _prelu(inputs, tf.convert_to_tensor(self.alpha))


class _ConvBlock(keras.layers.Layer):
    """conv3x3(filters) - act - conv3x3(filters) - act - conv3x3(n_out).

    Biases start at zero and kernels Xavier-uniform (the TF1 default of the
    original code); PReLU has one slope per channel, starting at 0 (ReLU).
    """

    def __init__(self, filters: int, n_out: int, activation: str, **kwargs):
        super().__init__(**kwargs)
        self.convs = [
            _Conv2D(n, 3, padding="same", kernel_initializer="glorot_uniform",
                    name=f"conv_{i}")
            for i, n in enumerate((filters, filters, n_out))
        ]
        if activation == "prelu":
            self.acts = [_PReLU(shared_axes=[1, 2], name=f"prelu_{i}")
                         for i in range(2)]
        elif activation == "relu":
            self.acts = [keras.layers.ReLU(name=f"relu_{i}") for i in range(2)]
        else:
            raise ValueError(f"activation must be 'prelu' or 'relu', got {activation!r}")

    def build(self, input_shape):
        shape = tuple(input_shape)
        for i, conv in enumerate(self.convs):
            conv.build(shape)
            shape = (*shape[:-1], conv.filters)
            if i < 2:
                self.acts[i].build(shape)

    def call(self, x):
        x = self.acts[0](self.convs[0](x))
        x = self.acts[1](self.convs[1](x))
        return self.convs[2](x)
