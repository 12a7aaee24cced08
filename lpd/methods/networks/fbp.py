"""Filtered back-projection as a fixed (untrained) TensorFlow layer.

The start of the unrolled schemes with ``initial="fbp"`` and the first stage of
`lpd.methods.networks.unet.FBPUNet`. Serialisation as described in the
docstring of `lpd.methods.networks`.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from lpd.methods.networks._common import (
    _PACKAGE,
    _check_operator,
    _from_config,
    _setup_to_config,
)
from lpd.physics.bridge import TFOperator, post_log

__all__ = ["FilteredBackProjection"]


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
