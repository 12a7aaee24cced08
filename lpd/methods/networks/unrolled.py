"""The unrolled schemes: `UnrolledReconstructor` and the papers' named models.

`LearnedPrimalDual` and `LearnedPrimal` [1], `LearnedGradientDescent` [2],
with the data model they evaluate (`_Physics`: linear or pre-log) and the
regulariser gradient of [2]. The table of the models, their serialisation and
the references [1], [2] are in the docstring of `lpd.methods.networks`.
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
from lpd.methods.networks.layers import _ConvBlock
from lpd.physics.bridge import PreLogForward, TFOperator, tf_norm

__all__ = ["UnrolledReconstructor", "LearnedPrimalDual", "LearnedPrimal",
           "LearnedGradientDescent"]


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
        # The static batch size where it is known, so that every layer's shape is
        # (the convolutions choose their gradients by shape, `layers.gradient_way`).
        batch = y.shape[0] if y.shape[0] is not None else tf.shape(y)[0]
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
