"""Keras models for learned reconstruction: unrolled schemes and FBP + U-Net.

Every model maps a batch of data ``y`` of shape ``(batch, *range_shape, 1)``
(NHWC, float32) to a batch of images ``(batch, *domain_shape, 1)``. The models
receive the forward operator as an argument (a `lpd.tf_ops.TFOperator`, made by
`lpd.as_tf_operator`); they never build a geometry.

One parametrised class, `UnrolledReconstructor`, gives every unrolled scheme;
the named models are that class with the settings of their paper fixed:

=========================  =========================================  ============
model                      what differs                               parameters
=========================  =========================================  ============
`LearnedPrimalDual`        learned dual step, one weight set per       253 220
                           iteration, PReLU
`LearnedPrimal`            dual step replaced by ``A f - y``           125 170
`LearnedGradientDescent`   weights shared by all iterations, input     13 318
                           ``[f, A^*(A f - y), grad reg, memory]``,
                           ReLU, start from the FBP
`FBPUNet`                  U-Net on the FBP, residual (post-process)   9 699 423
=========================  =========================================  ============

(Parameter counts at the paper's settings on the ellipse set-up; they equal the
original code's.) With ``prelog_mu`` set, the unrolled schemes use the
non-linear pre-log model ``T(f) = exp(-mu A f)`` of the human-CT experiment:
the dual step sees ``T(f)`` and the primal step ``[dT(f)]^*(h) =
A^*(-mu T(f) h)`` instead of ``A f`` and ``A^* h``.

Serialisation. ``get_config()`` stores every setting and the name of the
problem set-up the operator came from (``setup``: a name of
`lpd.operators.SETUPS` or a `lpd.config.ProblemConfig` as a dict). An operator
cannot be serialised, so ``from_config(config, operator=None)`` takes it again
as an argument; when none is given it is rebuilt from ``setup`` (the only place
this module looks up a set-up, and only on load). Weights round-trip with
``get_weights``/``set_weights`` or ``save_weights``/``load_weights``;
``keras.saving.load_model`` works for models that know their set-up.

References
----------
.. [1] Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE Trans. Med.
   Imaging 37(6):1322-1332, 2018. arXiv:1707.06474: the Learned Primal-Dual
   algorithm, its "Learned Primal" ablation, and the pre-log model of the
   human-data experiment.
.. [2] Adler J, Öktem O. Solving ill-posed inverse problems using iterative
   deep neural networks. Inverse Problems 33(12):124007, 2017.
   arXiv:1704.04058: the partially learned gradient scheme.
.. [3] Ronneberger O, Fischer P, Brox T. U-Net: Convolutional networks for
   biomedical image segmentation. MICCAI 2015. arXiv:1505.04597.
.. [4] Jin KH, McCann MT, Froustey E, Unser M. Deep convolutional neural
   network for inverse problems in imaging. IEEE TIP 26(9), 2017 (FBP + U-Net).
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import keras
import numpy as np
import tensorflow as tf

from lpd.physics.bridge import PreLogForward, TFOperator, post_log, tf_norm

__all__ = [
    "UnrolledReconstructor",
    "LearnedPrimalDual",
    "LearnedPrimal",
    "LearnedGradientDescent",
    "FilteredBackProjection",
    "UNet",
    "FBPUNet",
    "count_parameters",
    "NetworkReconstructor",
    "cpu_has_native_bfloat16",
    "resolve_precision",
    "set_precision",
]

_PACKAGE = "lpd"


def count_parameters(model: keras.Model) -> int:
    """Number of trainable scalars of a built model."""
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


# ---------------------------------------------------------------------------
# Operators: serialisation and the physics of the unrolled schemes
# ---------------------------------------------------------------------------

def _setup_to_config(setup: Any) -> Any:
    """A JSON-ready description of a set-up: its name, or a ProblemConfig dict."""
    if setup is None or isinstance(setup, str | dict):
        return setup
    from lpd.config import ProblemConfig, to_dict

    if isinstance(setup, ProblemConfig):
        return to_dict(setup)
    raise TypeError(f"setup must be a set-up name, a ProblemConfig or None, got {setup!r}")


def _operator_from_setup(setup: Any, backend: str) -> TFOperator:
    """Rebuild the operator of a stored set-up (used only when loading a model)."""
    if setup is None:
        raise ValueError(
            "this model was saved without a set-up name, so its operator cannot be rebuilt: "
            "pass it again, e.g. Model.from_config(config, operator=lpd.as_tf_operator(A))"
        )
    from lpd.config import from_dict
    from lpd.physics import operators

    name = from_dict(setup) if isinstance(setup, dict) else setup
    return operators.get_setup(name).tf_operator(backend)


def _from_config(cls, config: dict, operator: TFOperator | None):
    """``cls(operator, **config)``, rebuilding the operator from the stored set-up if needed."""
    config = dict(config)
    if operator is None:
        operator = _operator_from_setup(config.get("setup"),
                                        config.get("operator_backend", "auto"))
    return cls(operator, **config)


def _check_operator(operator: Any) -> TFOperator:
    """Accept a `TFOperator`, or any object with the same interface.

    Duck typing lets users plug in an operator written in TensorFlow itself
    (and benchmarks a stand-in): it needs ``domain_shape``, ``range_shape``
    (2D), ``__call__`` and ``adjoint`` on NHWC batches.
    """
    missing = [name for name in ("domain_shape", "range_shape", "adjoint")
               if not hasattr(operator, name)]
    if missing or not callable(operator):
        raise TypeError(
            "expected a TFOperator (from lpd.as_tf_operator) or an object with "
            f"domain_shape, range_shape, __call__ and adjoint; got {type(operator).__name__}"
        )
    if len(operator.domain_shape) != 2 or len(operator.range_shape) != 2:
        raise ValueError(
            "the networks are 2D: expected an operator between 2D spaces, got "
            f"{operator.domain_shape} -> {operator.range_shape}"
        )
    return operator


class _Physics:
    """The data model an unrolled scheme evaluates: linear ``A`` or pre-log ``T = exp(-mu A)``.

    ``forward(f)`` is what the dual step sees; ``derivative_adjoint(f, h, tf_)``
    is what the primal step sees, with ``tf_ = T(f)`` passed in when it is
    already known so that the pre-log model does not apply ``A`` twice at the
    same point. For the linear model that is ``A^* h``. For the pre-log model
    (`lpd.physics.bridge.PreLogForward`) it is ``[dT(f)]^*(h) / (mu ||A||) =
    A^*(-T(f) h) / ||A||``: the derivative's adjoint rescaled by a constant so
    that its size does not depend on the units of ``A``. Unscaled, the human
    set-ups' ``A`` (norm about 260 on ``human_small``) made the first primal
    update so large that the second iteration's ``exp`` overflowed and the loss
    of the very first training step was 5e32. The constant changes no
    information the network sees.
    """

    def __init__(self, operator: TFOperator, prelog_mu: float | None):
        self.operator = operator
        self.prelog = None if prelog_mu is None else PreLogForward(operator, prelog_mu)
        self.adjoint_scale = None if prelog_mu is None else 1.0 / tf_norm(operator)

    def forward(self, f: tf.Tensor) -> tf.Tensor:
        return self.operator(f) if self.prelog is None else self.prelog(f)

    def derivative_adjoint(self, f: tf.Tensor, h: tf.Tensor,
                           forward_at_f: tf.Tensor | None = None) -> tf.Tensor:
        if self.prelog is None:
            return self.operator.adjoint(h)
        return self.prelog.derivative(f, forward_at_f, factor=-self.adjoint_scale).adjoint(h)


def _smoothness_gradient(f: tf.Tensor) -> tf.Tensor:
    """Gradient ``D^T D f`` of ``||D f||^2 / 2``, D forward differences in pixel units.

    The regulariser of [2] (ODL's ``PartialDerivative`` with zero padding,
    adjoint times itself, summed over both axes). Pixel units rather than the
    space's cell size: the network that reads it learns its scale anyway.
    """
    def axis_term(f, axis):
        n = f.shape[axis]
        # D f: f[i+1] - f[i], with f[n] = 0 (zero padding after the last pixel).
        head = tf.gather(f, tf.range(1, n), axis=axis)
        shifted = tf.concat([head, tf.zeros_like(tf.gather(f, [0], axis=axis))], axis=axis)
        d = shifted - f
        # D^T z: z[i-1] - z[i], with z[-1] = 0.
        tail = tf.gather(d, tf.range(0, n - 1), axis=axis)
        prev = tf.concat([tf.zeros_like(tf.gather(d, [0], axis=axis)), tail], axis=axis)
        return prev - d

    return axis_term(f, 1) + axis_term(f, 2)


# ---------------------------------------------------------------------------
# Filtered back-projection as a fixed TensorFlow layer
# ---------------------------------------------------------------------------

def _fbp_filter(n_det: int, filter_type: str, frequency_scaling: float) -> tuple[np.ndarray, int]:
    """Frequency response of the discrete ramp filter times a window, and the FFT length."""
    n_fft = 2 ** int(math.ceil(math.log2(2 * n_det)))
    # The discrete ramp (Ram-Lak) of Kak & Slaney, built in space and transformed,
    # has no DC error from zero padding, unlike sampling |omega| directly.
    k = np.arange(n_fft)
    k = np.where(k > n_fft // 2, k - n_fft, k)
    kernel = np.zeros(n_fft)
    kernel[k == 0] = 0.25
    odd = k % 2 == 1
    kernel[odd] = -1.0 / (np.pi * k[odd]) ** 2
    ramp = np.real(np.fft.rfft(kernel))
    freq = np.fft.rfftfreq(n_fft) * 2  # 1 at the Nyquist frequency, as in ODL
    filter_type = filter_type.lower()
    if filter_type == "ram-lak":
        window = np.ones_like(freq)
    elif filter_type == "hann":
        window = np.cos(freq * np.pi / (2 * frequency_scaling)) ** 2
    elif filter_type == "hamming":
        window = 0.54 + 0.46 * np.cos(freq * np.pi / frequency_scaling)
    elif filter_type == "cosine":
        window = np.cos(freq * np.pi / (2 * frequency_scaling))
    else:
        raise ValueError(
            f"unknown filter {filter_type!r}; choose ram-lak, hann, hamming or cosine"
        )
    window = window * (freq <= frequency_scaling)
    return (ramp * window).astype(np.float32), n_fft


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FilteredBackProjection(keras.layers.Layer):
    """Filtered back-projection as a fixed (untrained) TensorFlow layer.

    Filters the data along the detector axis (the last axis of the data) with a
    windowed discrete ramp filter, back-projects with ``operator.adjoint`` and
    multiplies by one constant. The constant is fitted once, when the layer is
    made, so that the FBP of ``A`` applied to a disc of value 1 is closest to the
    disc in least squares; this makes the layer exact in scale for any operator
    normalisation and any space weighting, without knowing the geometry.

    For parallel beam this is the textbook FBP. For fan beam it omits the fan-beam
    cosine weighting and so is an approximate FBP: good as the input of a learned
    post-processing or the start of an unrolled scheme, not as a baseline (use
    `lpd.classical` for that).

    Parameters
    ----------
    operator : TFOperator
        The forward operator ``A`` (2D).
    filter_type : {"hann", "ram-lak", "hamming", "cosine"}
        Window of the ramp filter; the paper's U-Net baseline used Hann.
    frequency_scaling : float
        Relative cut-off frequency in ``(0, 1]`` (1 = Nyquist).
    prelog_mu : float, optional
        For pre-log data ``y = exp(-mu A x)`` (plus noise): back-project
        ``-log(max(y, eps)) / mu`` instead of ``y``.
    scale : float, optional
        The fitted constant; stored by ``get_config`` so that reloading does not
        refit it.
    setup, operator_backend
        Where the operator came from, for `from_config` (see the module docstring).

    Input: data ``(batch, *range_shape, 1)``; output: images ``(batch, *domain_shape, 1)``.

    References
    ----------
    Kak AC, Slaney M. Principles of Computerized Tomographic Imaging. IEEE
    Press 1988, chapter 3, equations (61) and (73) (discrete ramp filter).
    """

    def __init__(self, operator: TFOperator, filter_type: str = "hann",
                 frequency_scaling: float = 1.0, prelog_mu: float | None = None,
                 scale: float | None = None, setup: Any = None,
                 operator_backend: str = "auto", eps: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.operator = _check_operator(operator)
        if not 0 < frequency_scaling <= 1:
            raise ValueError(f"frequency_scaling must be in (0, 1], got {frequency_scaling}")
        self.filter_type = filter_type
        self.frequency_scaling = float(frequency_scaling)
        self.prelog_mu = None if prelog_mu is None else float(prelog_mu)
        self.eps = float(eps)
        self.setup = _setup_to_config(setup)
        self.operator_backend = operator_backend
        response, self._n_fft = _fbp_filter(operator.range_shape[-1], filter_type,
                                            self.frequency_scaling)
        self._response = tf.constant(response)
        self.scale = float(self._fit_scale() if scale is None else scale)

    def _filtered_backprojection(self, sinogram: tf.Tensor) -> tf.Tensor:
        n_det = self.operator.range_shape[-1]
        line = sinogram[..., 0]
        spectrum = tf.signal.rfft(line, fft_length=[self._n_fft])
        filtered = tf.signal.irfft(spectrum * tf.cast(self._response, spectrum.dtype),
                                   fft_length=[self._n_fft])[..., :n_det]
        return self.operator.adjoint(filtered[..., None])

    def _fit_scale(self) -> float:
        ny, nx = self.operator.domain_shape
        yy, xx = np.meshgrid(np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
        disc = (xx**2 + yy**2 <= 0.5**2).astype(np.float32)[None, ..., None]
        unscaled = self._filtered_backprojection(self.operator(disc)).numpy()
        denom = float(np.sum(unscaled.astype(np.float64) ** 2))
        if not denom > 0:
            raise ValueError("the operator maps a disc to zero: cannot scale the FBP")
        return float(np.sum(unscaled.astype(np.float64) * disc)) / denom

    def call(self, y: tf.Tensor) -> tf.Tensor:
        if self.prelog_mu is not None:
            y = post_log(y, self.prelog_mu, self.eps)
        return self.scale * self._filtered_backprojection(y)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.operator.domain_shape, 1)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(filter_type=self.filter_type, frequency_scaling=self.frequency_scaling,
                      prelog_mu=self.prelog_mu, scale=self.scale, setup=self.setup,
                      operator_backend=self.operator_backend, eps=self.eps)
        return config

    @classmethod
    def from_config(cls, config: dict, operator: TFOperator | None = None):
        return _from_config(cls, config, operator)


# ---------------------------------------------------------------------------
# Unrolled schemes
# ---------------------------------------------------------------------------

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


def _conv3x3_same(x: tf.Tensor, kernel: tf.Tensor, matmul_filter_gradient: bool):
    """``tf.nn.conv2d(x, kernel, 1, "SAME")`` with gradients that are faster on a CPU.

    The input gradient is the forward convolution of ``dy`` with the kernel
    turned by 180 degrees and its channel axes swapped (exact for odd kernels,
    stride 1, "same"), which oneDNN runs up to several times faster than
    ``Conv2DBackpropInput`` when the layer has few output channels. The kernel
    gradient is `_filter_gradient_3x3` when ``matmul_filter_gradient`` is set.
    """

    @tf.custom_gradient
    def conv(x, kernel):
        def grad(dy):
            turned = tf.transpose(tf.reverse(kernel, [0, 1]), (0, 1, 3, 2))
            dx = tf.nn.conv2d(dy, turned, 1, "SAME")
            if matmul_filter_gradient:
                dk = _filter_gradient_3x3(x, dy)
            else:
                dk = tf.raw_ops.Conv2DBackpropFilter(
                    input=x, filter_sizes=tf.shape(kernel), out_backprop=dy,
                    strides=[1, 1, 1, 1], padding="SAME")
            return dx, dk

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
        # The matmul kernel gradient pays from about 16 input channels on.
        self._matmul_filter_gradient = input_shape[-1] >= 16

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
            outputs = _conv3x3_same(inputs, tf.convert_to_tensor(self.kernel),
                                    self._matmul_filter_gradient)
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, tf.convert_to_tensor(self.bias))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs


# ---------------------------------------------------------------------------
# A trained network as a reconstructor
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# Precision of the convolutions
# ---------------------------------------------------------------------------

_NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
_resolved_auto: str | None = None


def cpu_has_native_bfloat16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bfloat16 in hardware (AMX-BF16 or AVX512_BF16).

    Reads the flags of ``/proc/cpuinfo`` (or the text given); ``False`` where
    there is no such file (not Linux).
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return any(flag in flags for flag in _NATIVE_BF16_FLAGS)


def _conv_seconds(dtype: tf.DType, repeats: int = 5) -> float:
    """Median seconds of a 32-channel 3x3 convolution's forward and gradients at 128 x 128."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((1, 128, 128, 32)), tf.float32)
    kernel = tf.constant(0.1 * rng.standard_normal((3, 3, 32, 32)), tf.float32)

    @tf.function
    def step(x, kernel):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = tf.nn.conv2d(tf.cast(x, dtype), tf.cast(kernel, dtype), 1, "SAME")
            loss = tf.reduce_sum(tf.square(tf.cast(y, tf.float32)))
        return tape.gradient(loss, [x, kernel])

    for _ in range(2):
        step(x, kernel)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        [g.numpy() for g in step(x, kernel)]
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def resolve_precision(precision: str = "auto") -> str:
    """The precision the convolutions compute in: ``"float32"`` or ``"bfloat16"``.

    ``"auto"`` takes ``"bfloat16"`` only on a CPU with native bfloat16 (AMX or
    AVX512_BF16) where a convolution with its gradients measured at least 10 %
    faster in it than in float32 (measured once per process), and ``"float32"``
    elsewhere: on CPUs that would emulate bfloat16 (several times slower) and
    on GPUs, where TensorFlow picks its fastest float32 kernels (TF32) itself.
    """
    global _resolved_auto
    if precision in ("float32", "bfloat16"):
        return precision
    if precision != "auto":
        raise ValueError(f"unknown precision {precision!r}; choose one of "
                         "'auto', 'float32', 'bfloat16'")
    if _resolved_auto is None:
        if tf.config.list_physical_devices("GPU") or not cpu_has_native_bfloat16():
            _resolved_auto = "float32"
        else:
            faster = _conv_seconds(tf.bfloat16) < 0.9 * _conv_seconds(tf.float32)
            _resolved_auto = "bfloat16" if faster else "float32"
    return _resolved_auto


def set_precision(model: keras.Model, precision: str = "auto") -> str:
    """Make the convolutions of ``model`` compute in ``precision``; return the one used.

    Weights, activations between the convolutions, the primal and dual state,
    the operator and the loss stay float32, so weights trained in one precision
    load and run in the other. Call it before the model's first call (a
    ``tf.function`` traced earlier keeps the precision it was traced with).
    """
    resolved = resolve_precision(precision)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, _Conv2D):
            layer.precision = resolved
    return resolved


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


@keras.saving.register_keras_serializable(package=_PACKAGE)
class UnrolledReconstructor(keras.Model):
    """An unrolled primal(-dual) scheme with learned update blocks.

    Starting from ``f_0`` (zeros or the FBP, in channel 0 of the primal
    variable; all other channels and the dual variable start at zero), each of
    the ``n_iter`` iterations does

    - dual step: ``h <- h + Gamma_i([h, T(f[forward_channel]), y])`` (learned), or
      ``h <- T(f[forward_channel]) - y`` (the data residual);
    - primal step: ``f <- f + Lambda_i([f, [dT(f_0)]^*(h[0]), (grad reg)])``, or,
      with ``primal_update="memory"``, ``f[0] <- f[0] + u[0]`` and
      ``f[1:] <- relu(u[1:])`` with ``u = Lambda_i(...)`` (the memory of [2]);

    and returns ``f[0]``. ``T`` is ``A`` or the pre-log model ``exp(-mu A)``;
    ``[dT(f)]^*`` is ``A^*`` for the linear model and ``A^*(-mu T(f) .)`` for the
    pre-log one, evaluated at ``f[0]`` after a learned dual step (as in [1]) and
    at ``f[forward_channel]`` after a residual one (so that the input is the
    gradient of the data term). Each block is conv3x3-act-conv3x3-act-conv3x3.

    Use the named models (`LearnedPrimalDual`, `LearnedPrimal`,
    `LearnedGradientDescent`) for the papers' schemes; this class is for
    variants (ablations, other widths).

    Parameters
    ----------
    operator : TFOperator
        The forward operator ``A``, from `lpd.as_tf_operator`.
    n_iter : int
        Number of unrolled iterations.
    n_primal, n_dual : int
        Channels of the primal and dual variables (``n_dual`` must be 1 for a
        residual dual step).
    filters : int
        Width of the hidden layers of each block.
    dual_step : {"learned", "residual"}
    forward_channel : int
        The primal channel the forward operator is applied to.
    share_weights : bool
        One set of block weights for all iterations (learned gradient descent)
        instead of one per iteration.
    activation : {"prelu", "relu"}
    primal_update : {"residual", "memory"}
    data_gradient : bool
        Whether the primal block sees ``[dT]^*(h[0])`` (switch off for the
        "no gradients" ablation of [2]).
    regulariser_gradient : bool
        Whether the primal block also sees the gradient of ``||grad f||^2 / 2``.
    initial : {"zeros", "fbp"}
        Start ``f[0]`` at zero or at a `FilteredBackProjection` of the data.
    prelog_mu : float, optional
        Use the pre-log model ``exp(-mu A f)`` (data are photon fractions).
    fbp_filter, fbp_frequency_scaling, fbp_scale
        Settings of the FBP for ``initial="fbp"`` (see `FilteredBackProjection`).
    setup, operator_backend
        Where the operator came from, stored for `from_config`.

    Input ``y``: ``(batch, *operator.range_shape, 1)`` float32; output:
    ``(batch, *operator.domain_shape, 1)``.

    References
    ----------
    See the module docstring: [1] (Learned Primal-Dual, Learned Primal) and [2]
    (learned gradient descent).
    """

    def __init__(self, operator: TFOperator, n_iter: int = 10, n_primal: int = 5,
                 n_dual: int = 5, filters: int = 32,
                 dual_step: Literal["learned", "residual"] = "learned",
                 forward_channel: int = 1, share_weights: bool = False,
                 activation: Literal["prelu", "relu"] = "prelu",
                 primal_update: Literal["residual", "memory"] = "residual",
                 data_gradient: bool = True, regulariser_gradient: bool = False,
                 initial: Literal["zeros", "fbp"] = "zeros", prelog_mu: float | None = None,
                 fbp_filter: str = "hann", fbp_frequency_scaling: float = 1.0,
                 fbp_scale: float | None = None, setup: Any = None,
                 operator_backend: str = "auto", **kwargs):
        super().__init__(**kwargs)
        self.operator = _check_operator(operator)
        if n_iter < 1 or n_primal < 1 or n_dual < 1 or filters < 1:
            raise ValueError("n_iter, n_primal, n_dual and filters must be >= 1")
        if dual_step not in ("learned", "residual"):
            raise ValueError(f"dual_step must be 'learned' or 'residual', got {dual_step!r}")
        if dual_step == "residual" and n_dual != 1:
            raise ValueError("a residual dual step has one dual channel: set n_dual=1")
        if not 0 <= forward_channel < n_primal:
            raise ValueError(f"forward_channel must be in [0, {n_primal}), got {forward_channel}")
        if primal_update not in ("residual", "memory"):
            raise ValueError(
                f"primal_update must be 'residual' or 'memory', got {primal_update!r}"
            )
        if initial not in ("zeros", "fbp"):
            raise ValueError(f"initial must be 'zeros' or 'fbp', got {initial!r}")
        if dual_step == "learned" and not data_gradient:
            raise ValueError("a learned dual step needs data_gradient=True to reach the image")
        self.n_iter = int(n_iter)
        self.n_primal = int(n_primal)
        self.n_dual = int(n_dual)
        self.filters = int(filters)
        self.dual_step = dual_step
        self.forward_channel = int(forward_channel)
        self.share_weights = bool(share_weights)
        self.activation = activation
        self.primal_update = primal_update
        self.data_gradient = bool(data_gradient)
        self.regulariser_gradient = bool(regulariser_gradient)
        self.initial = initial
        self.prelog_mu = None if prelog_mu is None else float(prelog_mu)
        self.setup = _setup_to_config(setup)
        self.operator_backend = operator_backend
        self._physics = _Physics(operator, self.prelog_mu)

        self.fbp = None
        if initial == "fbp":
            self.fbp = FilteredBackProjection(
                operator, filter_type=fbp_filter, frequency_scaling=fbp_frequency_scaling,
                prelog_mu=self.prelog_mu, scale=fbp_scale, setup=setup,
                operator_backend=operator_backend, name="fbp")

        n_blocks = 1 if self.share_weights else self.n_iter
        self.dual_blocks = []
        if dual_step == "learned":
            self.dual_blocks = [_ConvBlock(self.filters, self.n_dual, activation, name=f"dual_{i}")
                                for i in range(n_blocks)]
        self.primal_blocks = [_ConvBlock(self.filters, self.n_primal, activation,
                                         name=f"primal_{i}") for i in range(n_blocks)]
        # Build now, from the operator's shapes, so that trainable_variables is
        # complete before the first step (optimizer and distribution need it).
        self.build((None, *operator.range_shape, 1))

    def build(self, input_shape):
        domain, range_ = self.operator.domain_shape, self.operator.range_shape
        for block in self.dual_blocks:
            block.build((None, *range_, self.n_dual + 2))
        n_in = (self.n_primal + int(self.data_gradient) + int(self.regulariser_gradient))
        for block in self.primal_blocks:
            block.build((None, *domain, n_in))
        if self.fbp is not None:
            self.fbp.build(input_shape)
        self.built = True

    def call(self, y: tf.Tensor, training: bool = False) -> tf.Tensor:
        y = tf.convert_to_tensor(y, dtype=tf.float32)
        batch = tf.shape(y)[0]
        domain, range_ = self.operator.domain_shape, self.operator.range_shape
        if self.fbp is None:
            primal = tf.zeros((batch, *domain, self.n_primal), dtype=y.dtype)
        else:
            primal = tf.concat(
                [self.fbp(y), tf.zeros((batch, *domain, self.n_primal - 1), dtype=y.dtype)],
                axis=-1)
        if self.dual_step == "learned":
            dual = tf.zeros((batch, *range_, self.n_dual), dtype=y.dtype)
        fc = self.forward_channel
        for i in range(self.n_iter):
            k = 0 if self.share_weights else i
            inputs = [primal]
            if self.dual_step == "learned":
                evaluated = self._physics.forward(primal[..., fc:fc + 1])
                dual = dual + self.dual_blocks[k](tf.concat([dual, evaluated, y], axis=-1))
                inputs.append(self._physics.derivative_adjoint(primal[..., 0:1],
                                                               dual[..., 0:1]))
            elif self.data_gradient:
                point = primal[..., fc:fc + 1]
                evaluated = self._physics.forward(point)
                inputs.append(self._physics.derivative_adjoint(point, evaluated - y, evaluated))
            if self.regulariser_gradient:
                inputs.append(_smoothness_gradient(primal[..., 0:1]))
            update = self.primal_blocks[k](tf.concat(inputs, axis=-1))
            if self.primal_update == "residual":
                primal = primal + update
            else:
                primal = tf.concat([primal[..., 0:1] + update[..., 0:1],
                                    tf.nn.relu(update[..., 1:])], axis=-1)
        return primal[..., 0:1]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.operator.domain_shape, 1)

    def get_config(self) -> dict:
        config = {"name": self.name, "trainable": self.trainable}
        config.update(
            n_iter=self.n_iter, n_primal=self.n_primal, n_dual=self.n_dual,
            filters=self.filters, dual_step=self.dual_step,
            forward_channel=self.forward_channel, share_weights=self.share_weights,
            activation=self.activation, primal_update=self.primal_update,
            data_gradient=self.data_gradient, regulariser_gradient=self.regulariser_gradient,
            initial=self.initial, prelog_mu=self.prelog_mu, setup=self.setup,
            operator_backend=self.operator_backend,
        )
        if self.fbp is not None:
            config.update(fbp_filter=self.fbp.filter_type,
                          fbp_frequency_scaling=self.fbp.frequency_scaling,
                          fbp_scale=self.fbp.scale)
        return config

    @classmethod
    def from_config(cls, config: dict, operator: TFOperator | None = None):
        """Rebuild a model from `get_config` output.

        Parameters
        ----------
        config : dict
        operator : TFOperator, optional
            The forward operator. When not given it is rebuilt from the set-up
            stored in ``config["setup"]``.
        """
        return _from_config(cls, config, operator)


def _fixed(kwargs: dict, **settings) -> dict:
    """Merge a named scheme's fixed settings into ``kwargs``, refusing contradictions.

    A named model's ``get_config`` carries its fixed settings, so equal values
    must pass (``from_config``); a different value means another scheme.
    """
    for key, value in settings.items():
        if key in kwargs and kwargs[key] != value:
            raise ValueError(
                f"{key}={kwargs[key]!r} contradicts this scheme ({key}={value!r}); use "
                "UnrolledReconstructor for variants"
            )
        kwargs[key] = value
    return kwargs


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LearnedPrimalDual(UnrolledReconstructor):
    """Learned Primal-Dual reconstruction [1].

    Dual step ``h <- h + Gamma_i([h, T(f[1]), y])``, primal step
    ``f <- f + Lambda_i([f, [dT(f[0])]^*(h[0])])``, separate weights in each
    iteration, PReLU, zero start; returns ``f[0]``. At the defaults it has
    253 220 parameters, as the original code.

    Parameters
    ----------
    operator : TFOperator
        The forward operator (``A / ||A||`` in the ellipse experiment).
    n_iter, n_primal, n_dual, filters : int
        Iterations, primal and dual channels, hidden width (10, 5, 5, 32 in [1]).
    prelog_mu : float, optional
        Non-linear pre-log model of the human experiment of [1].
    **kwargs
        Further settings of `UnrolledReconstructor` that do not change the scheme
        (``setup``, ``operator_backend``, ``initial``, ``name``).

    References
    ----------
    Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 37(6), 2018,
    arXiv:1707.06474 (the algorithm and the ellipse and human experiments).
    """

    @classmethod
    def from_network(cls, network, operator: TFOperator, **settings):
        """The model a `lpd.config.NetworkConfig` describes (its fields for this model).

        ``settings`` are the model's other arguments (``setup``, ``prelog_mu``,
        ``operator_backend``, the FBP filter); `lpd.training.build_model` passes them.
        """
        return cls(operator, n_iter=network.n_iter, n_primal=network.n_primal,
                   n_dual=network.n_dual, filters=network.filters,
                   initial=network.initial or "zeros", **settings)

    def __init__(self, operator: TFOperator, n_iter: int = 10, n_primal: int = 5,
                 n_dual: int = 5, filters: int = 32, prelog_mu: float | None = None,
                 **kwargs):
        kwargs.setdefault("name", "learned_primal_dual")
        _fixed(kwargs, dual_step="learned", forward_channel=1, share_weights=False,
               activation="prelu", primal_update="residual", data_gradient=True,
               regulariser_gradient=False)
        super().__init__(operator, n_iter=n_iter, n_primal=n_primal, n_dual=n_dual,
                         filters=filters, prelog_mu=prelog_mu, **kwargs)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LearnedPrimal(UnrolledReconstructor):
    """Learned Primal: Learned Primal-Dual with the dual step replaced by ``T(f[1]) - y``.

    The primal block sees ``[f, [dT(f[1])]^*(T(f[1]) - y)]``, i.e. the gradient
    of the data term at ``f[1]``. 125 170 parameters at the defaults.

    Parameters
    ----------
    operator : TFOperator
    n_iter, n_primal, filters : int
    prelog_mu : float, optional
    **kwargs
        Further settings of `UnrolledReconstructor` that do not change the scheme.

    References
    ----------
    Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 37(6), 2018,
    arXiv:1707.06474 (the "Learned Primal" method of its comparisons).
    """

    @classmethod
    def from_network(cls, network, operator: TFOperator, **settings):
        """See `LearnedPrimalDual.from_network`."""
        return cls(operator, n_iter=network.n_iter, n_primal=network.n_primal,
                   filters=network.filters, initial=network.initial or "zeros", **settings)

    def __init__(self, operator: TFOperator, n_iter: int = 10, n_primal: int = 5,
                 filters: int = 32, prelog_mu: float | None = None, **kwargs):
        kwargs.setdefault("name", "learned_primal")
        _fixed(kwargs, dual_step="residual", n_dual=1, forward_channel=1, share_weights=False,
               activation="prelu", primal_update="residual", data_gradient=True,
               regulariser_gradient=False)
        super().__init__(operator, n_iter=n_iter, n_primal=n_primal, filters=filters,
                         prelog_mu=prelog_mu, **kwargs)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LearnedGradientDescent(UnrolledReconstructor):
    """Partially learned gradient descent [2].

    ``f <- f + u[0]``, ``s <- relu(u[1:])`` with ``u = Lambda([f, A^*(A f - y),
    D^T D f, s])``, one set of weights for all iterations, ReLU, ``f_0`` = FBP
    and zero memory ``s``. 13 318 parameters at the defaults, as the original.

    Parameters
    ----------
    operator : TFOperator
    n_iter : int
        Iterations (10 in [2]).
    n_memory : int
        Memory channels ``s`` (5 in [2]).
    filters : int
    data_gradient, regulariser_gradient : bool
        The inputs of the ablation in [2] (both on: 32.02 dB; data only: 30.51;
        none: 29.65 on Shepp-Logan).
    initial : {"fbp", "zeros"}
        ``f_0``; [2] starts from the FBP.
    prelog_mu : float, optional
    **kwargs
        Further settings of `UnrolledReconstructor` that do not change the scheme.

    References
    ----------
    Adler J, Öktem O. Solving ill-posed inverse problems using iterative deep
    neural networks. Inverse Problems 33(12), 2017, arXiv:1704.04058 (the
    partially learned gradient scheme and its ellipse experiment).
    """

    @classmethod
    def from_network(cls, network, operator: TFOperator, **settings):
        """See `LearnedPrimalDual.from_network`."""
        return cls(operator, n_iter=network.n_iter, n_memory=network.n_memory,
                   filters=network.filters, data_gradient=network.data_gradient,
                   regulariser_gradient=network.regulariser_gradient,
                   initial=network.initial or "fbp", **settings)

    def __init__(self, operator: TFOperator, n_iter: int = 10, n_memory: int = 5,
                 filters: int = 32, data_gradient: bool = True,
                 regulariser_gradient: bool = True, initial: str = "fbp",
                 prelog_mu: float | None = None, **kwargs):
        kwargs.setdefault("name", "learned_gradient_descent")
        n_primal = kwargs.pop("n_primal", 1 + n_memory)
        if n_primal != 1 + n_memory:
            raise ValueError(f"n_primal={n_primal} contradicts n_memory={n_memory}")
        _fixed(kwargs, dual_step="residual", n_dual=1, forward_channel=0, share_weights=True,
               activation="relu", primal_update="memory")
        super().__init__(operator, n_iter=n_iter, n_primal=n_primal, filters=filters,
                         data_gradient=data_gradient,
                         regulariser_gradient=regulariser_gradient, initial=initial,
                         prelog_mu=prelog_mu, **kwargs)
        self.n_memory = int(n_memory)

    def get_config(self) -> dict:
        config = super().get_config()
        config["n_memory"] = config.pop("n_primal") - 1
        return config


# ---------------------------------------------------------------------------
# U-Net and FBP + U-Net
# ---------------------------------------------------------------------------

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
