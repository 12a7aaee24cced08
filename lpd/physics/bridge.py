"""The bridge from ODL operators to TensorFlow ops with exact gradients.

`as_tf_operator` turns any linear ODL operator between uniformly discretised
spaces into an object that applies the operator, and its adjoint, to batches of
float32 tensors in NHWC layout, eagerly or inside ``tf.function``, with
gradients that TensorFlow can propagate through (also to second order).

The back-ends compute the same thing:

``"matrix"``
    A sparse system matrix (for 2D ray transforms taken from ASTRA's own
    projector, then checked against ODL), applied with scipy to the whole batch
    at once. The fastest on a CPU for problems whose matrix fits in memory.
``"native"``
    The operator's own batched numpy code (``batch_apply``), for operators that
    have one: the masked Fourier transform of MRI (`lpd.physics.fourier`).
``"odl"``
    ODL's own call per image. Works for every operator, including ASTRA's CUDA
    transforms on a GPU machine and operators of the user's own.

``backend="auto"`` takes the native code where there is one, else the matrix
where one exists within ``memory_budget``, and ODL otherwise; it never builds a
matrix above the budget.

Gradients. ODL's adjoint is taken in the spaces' weighted inner products
``<x, y>_X = w_X * sum(x * y)``. TensorFlow needs the Euclidean transpose ``W^T``
of the map ``x -> W x`` that the operator applies to arrays, which is
``(w_X / w_Y) * adjoint``. The bridge applies that ratio, so the gradient of
``sum(op(x) * v)`` with respect to ``x`` is exactly ``W^T v`` for any weightings.

This is the only module of lpd that imports both ODL and TensorFlow.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from lpd.physics import operators
from lpd.physics.operators import MatrixUnavailableError, constant_weighting
from lpd.physics.projector import Projector, power_norm, projector

__all__ = ["TFOperator", "PreLogForward", "PreLogDerivative", "as_tf_operator", "tf_norm",
           "post_log", "BACKENDS"]

BACKENDS = ("auto", "matrix", "native", "odl")


class _Kernel:
    """Applies ``W`` or ``W^T`` to a batch of images with the operator's `Projector`."""

    def __init__(self, numpy_face: Projector):
        self.projector = numpy_face
        self.name = numpy_face.backend

    def apply(self, x: np.ndarray, transpose: bool) -> np.ndarray:
        apply = self.projector.transpose if transpose else self.projector.forward
        if x.shape[0] == 1:
            return apply(x[0])[None]
        return apply(x)


class TFOperator:
    """A linear operator on batches of TensorFlow tensors, with its adjoint.

    Made by `as_tf_operator`; not meant to be constructed directly. Calling it
    on a float32 tensor of shape ``(batch, *domain_shape, 1)`` returns a float32
    tensor of shape ``(batch, *range_shape, 1)``.

    Attributes
    ----------
    domain_shape, range_shape : tuple of int
        Shapes of one input and one output image (without batch and channel axes).
    backend : str
        ``"matrix"`` or ``"odl"``.
    odl_op : odl.Operator
        The ODL operator this object applies (for the adjoint, ``odl_op.adjoint``
        of the forward operator).
    """

    def __init__(self, kernel, transpose: bool, scale: float, odl_op, domain_shape,
                 range_shape, domain_weight: float, range_weight: float):
        self._kernel = kernel
        self._transpose = transpose
        self._scale = float(scale)
        self.odl_op = odl_op
        self.domain_shape = tuple(int(n) for n in domain_shape)
        self.range_shape = tuple(int(n) for n in range_shape)
        self._domain_weight = domain_weight
        self._range_weight = range_weight
        self._adjoint = None
        self._euclidean_transpose = None

    @property
    def backend(self) -> str:
        return self._kernel.name

    @property
    def adjoint(self) -> TFOperator:
        """The adjoint in ODL's sense: ``op.adjoint(y)`` equals ``odl_op.adjoint(y)``."""
        if self._adjoint is None:
            # ODL adjoint = (w_Y / w_X) * transpose of the array map.
            ratio = self._range_weight / self._domain_weight
            self._adjoint = TFOperator(
                self._kernel, not self._transpose, self._scale * ratio,
                _odl_adjoint(self.odl_op), self.range_shape, self.domain_shape,
                self._range_weight, self._domain_weight,
            )
            self._adjoint._adjoint = self
        return self._adjoint

    @property
    def transpose(self) -> TFOperator:
        """The Euclidean transpose of the array map (what gradients apply)."""
        if self._euclidean_transpose is None:
            self._euclidean_transpose = TFOperator(
                self._kernel, not self._transpose, self._scale, None, self.range_shape,
                self.domain_shape, self._range_weight, self._domain_weight,
            )
            self._euclidean_transpose._euclidean_transpose = self
        return self._euclidean_transpose

    def _numpy_apply(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        expected = self.domain_shape + (1,)
        if x.shape[1:] != expected:
            # Only reachable when the static shape was unknown at trace time.
            raise ValueError(f"expected input of shape (batch, {expected}), got {x.shape}")
        out = self._kernel.apply(x[..., 0], self._transpose)
        if self._scale != 1.0:
            out *= np.float32(self._scale)
        return out.reshape((x.shape[0], *self.range_shape, 1))

    def _check(self, x) -> tf.Tensor:
        if isinstance(x, np.ndarray) and x.dtype != np.float32:
            raise TypeError(f"expected a float32 tensor, got a numpy array of dtype {x.dtype}")
        x = tf.convert_to_tensor(x)
        if x.dtype != tf.float32:
            raise TypeError(f"expected a float32 tensor, got dtype {x.dtype.name}")
        expected = (None, *self.domain_shape, 1)
        shape = x.shape
        if shape.rank is not None:
            dims = shape.as_list()
            if len(dims) != len(expected) or not all(
                e is None or s is None or s == e for s, e in zip(dims, expected, strict=True)
            ):
                raise ValueError(
                    f"expected a tensor of shape (batch, {', '.join(map(str, expected[1:]))}) "
                    f"(NHWC, one channel), got shape {tuple(shape.as_list())}"
                )
        if shape.rank is None or not shape[1:].is_fully_defined():
            # Unknown at trace time (a tf.function with a loose signature): check when
            # it runs, with the same words, before the data reach the operator.
            expected_text = ", ".join(map(str, expected[1:]))
            check = tf.debugging.assert_equal(
                tf.shape(x)[1:], tf.constant(expected[1:], tf.int32),
                message=f"lpd operator: expected a tensor of shape (batch, {expected_text}) "
                        "(NHWC, one channel)")
            with tf.control_dependencies([check]):
                x = tf.identity(x)
        return x

    def __call__(self, x) -> tf.Tensor:
        """Apply the operator to a batch ``x`` of shape ``(batch, *domain_shape, 1)``."""
        x = self._check(x)
        return self._apply(x)

    def _apply(self, x: tf.Tensor) -> tf.Tensor:
        @tf.custom_gradient
        def apply(x):
            y = tf.numpy_function(self._numpy_apply, [x], tf.float32, stateful=False,
                                  name="lpd_operator")
            y.set_shape([x.shape[0], *self.range_shape, 1])

            def grad(dy):
                # The transpose has a custom gradient of its own, so second
                # derivatives are exact too.
                return self.transpose._apply(dy)

            return y, grad

        return apply(x)

    def __repr__(self) -> str:
        return (f"TFOperator({self.domain_shape} -> {self.range_shape}, "
                f"backend={self.backend!r})")


def _odl_adjoint(odl_op):
    return None if odl_op is None else odl_op.adjoint


def as_tf_operator(odl_op, backend: str = "auto", memory_budget: float = 2**31) -> TFOperator:
    """Wrap a linear ODL operator as a batched TensorFlow op with exact gradients.

    Parameters
    ----------
    odl_op : odl.Operator
        Linear operator between uniformly discretised spaces with constant
        weightings, e.g. a ray transform or ``A / ||A||``.
    backend : {"auto", "matrix", "native", "odl"}
        ``"matrix"``: a sparse system matrix (2D ASTRA CPU ray transforms and
        ``MatrixOperator``), checked against ODL when built. ``"native"``: the
        operator's own batched code (the Fourier transform of MRI). ``"odl"``:
        ODL's own call, for any operator. ``"auto"``: native code where there is
        some, else the matrix where it is available within ``memory_budget``,
        otherwise ODL.
    memory_budget : float
        Largest memory in bytes that the system matrix and its transpose may
        take (default 2 GiB). The estimate is made before anything is built.

    Returns
    -------
    TFOperator
        ``op(x)`` maps float32 tensors of shape ``(batch, *odl_op.domain.shape, 1)``
        to ``(batch, *odl_op.range.shape, 1)``; ``op.adjoint(y)`` equals ODL's
        ``odl_op.adjoint(y)``. The gradient of ``sum(op(x) * v)`` with respect to
        ``x`` is the Euclidean transpose applied to ``v``.

    Raises
    ------
    TypeError
        If ``odl_op`` is not a linear ODL operator between uniformly
        discretised spaces with constant weightings.
    ValueError
        For an unknown back-end, or ``backend="matrix"`` where no matrix is
        available within the budget.

    Examples
    --------
    >>> import lpd
    >>> setup = lpd.operators.get_setup("ellipses")
    >>> op = lpd.as_tf_operator(setup.operator)
    >>> y = op(tf.zeros((2, 128, 128, 1)))
    >>> tuple(y.shape), tuple(op.adjoint(y).shape)
    ((2, 30, 183, 1), (2, 128, 128, 1))
    """
    import odl

    if not isinstance(odl_op, odl.Operator):
        raise TypeError(f"expected an ODL operator, got {type(odl_op).__name__}")
    if not odl_op.is_linear:
        raise TypeError(
            f"expected a linear ODL operator, got the non-linear {type(odl_op).__name__}; "
            "wrap non-linear models around the linear part (see PreLogForward)"
        )
    domain_weight = constant_weighting(odl_op.domain)
    range_weight = constant_weighting(odl_op.range)
    for space in (odl_op.domain, odl_op.range):
        if space.is_complex:
            raise TypeError(f"expected real spaces, got {space!r}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")

    has_native = hasattr(operators.unwrap_scalar(odl_op)[1], "batch_apply")
    if backend == "matrix":
        try:
            operators.shared_system_matrix(odl_op, memory_budget)
        except MatrixUnavailableError as err:
            raise ValueError(f"backend='matrix' is not available: {err}") from err
    if backend == "native" and not has_native:
        raise ValueError(f"backend='native' is not available: {type(odl_op).__name__} has no "
                         "batched code of its own (batch_apply)")
    # A budget of 0 admits no matrix: ODL's own call.
    kernel = _Kernel(projector(odl_op, 0.0 if backend == "odl" else memory_budget,
                               native=backend in ("auto", "native")))
    return TFOperator(kernel, False, 1.0, odl_op, odl_op.domain.shape, odl_op.range.shape,
                      domain_weight, range_weight)


def tf_norm(operator, n_iter: int = 20) -> float:
    """``||A||`` of a TensorFlow-faced operator by `power_norm` from a constant image.

    Deterministic (no random start) and a lower bound that converges from
    below; 20 iterations are within 1 % on the ray transforms of lpd. Works
    for any object with the interface of `TFOperator`.
    """
    start = tf.ones((1, *operator.domain_shape, 1), tf.float32)
    value = power_norm(lambda x: operator.adjoint(operator(x)), start, n_iter, norm=tf.norm)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"could not estimate the operator's norm (got {value})")
    return value


def post_log(y, mu: float, floor: float) -> tf.Tensor:
    """Post-log data ``-log(max(y, floor)) / mu`` of pre-log photon fractions, in TensorFlow.

    The TensorFlow face of `lpd.physics.noise.PoissonNoise.post_log` (which
    clamps at one photon, ``floor = 1 / N0``).
    """
    return -tf.math.log(tf.maximum(y, floor)) / mu


#: Cap of the exponent ``-mu A x`` of the pre-log model: ``exp(20)`` is far
#: below float32's overflow, which early in training an unconstrained iterate
#: can otherwise reach (``inf * 0`` then gives NaN losses, as reported against
#: the original code: learned_primal_dual issues #9, #11, #13). Every physical
#: value (``A x >= 0``) is unchanged.
MAX_EXPONENT = 20.0


class PreLogForward:
    """The non-linear pre-log model ``T(x) = exp(-mu * A x)`` as TensorFlow ops.

    The expected photon fraction on each detector pixel in the human-CT
    experiment: data are ``Poisson(N0 * T(x)) / N0``. Gradients flow through
    `__call__` by TensorFlow's chain rule over the bridge; `derivative` gives
    the linearisation at a point as an operator with an adjoint.

    Parameters
    ----------
    operator : TFOperator
        The linear ray transform ``A``.
    mu : float
        Attenuation scaling (0.02 per mm in the human experiment).

    References
    ----------
    Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 2018,
    arXiv:1707.06474, section IV-B: the dual step sees ``exp(-mu A f)``, the primal
    step ``[dT(f)]^*(h) = A^*(-mu exp(-mu A f) h)``.
    """

    def __init__(self, operator, mu: float):
        if not all(hasattr(operator, name) for name in ("domain_shape", "range_shape",
                                                         "adjoint")):
            raise TypeError(f"expected a TFOperator, got {type(operator).__name__}")
        if not mu > 0:
            raise ValueError(f"mu must be > 0, got {mu}")
        self.operator = operator
        self.mu = float(mu)

    def __call__(self, x) -> tf.Tensor:
        """``exp(-mu * A x)`` for a batch ``x``, the exponent capped at `MAX_EXPONENT`."""
        return tf.exp(tf.minimum(-self.mu * self.operator(x), MAX_EXPONENT))

    def derivative(self, x, value=None, factor: float | None = None) -> PreLogDerivative:
        """The derivative ``dT(x) = -mu T(x) A``, a linear operator with an adjoint.

        ``value`` is ``T(x)`` where it is already known (so that ``A`` is not
        applied twice at the same point). ``factor`` replaces ``-mu`` by another
        constant: the unrolled networks take ``-1 / ||A||``, the same direction
        at a size that does not depend on the units of ``A``.
        """
        return PreLogDerivative(self.operator, self(x) if value is None else value,
                                -self.mu if factor is None else factor)

    def derivative_adjoint(self, x, h) -> tf.Tensor:
        """``[dT(x)]^*(h) = A^*(-mu * exp(-mu * A x) * h)`` (ODL's adjoint)."""
        return self.derivative(x).adjoint(h)


class PreLogDerivative:
    """``h -> factor * T(x) * A h`` at a fixed point ``x`` (``factor = -mu``: `PreLogForward`'s
    derivative), with its adjoint ``g -> A^*(factor * T(x) * g)``."""

    def __init__(self, operator, value: tf.Tensor, factor: float):
        self.operator = operator
        self.value = value
        self.factor = float(factor)

    def __call__(self, h) -> tf.Tensor:
        return self.factor * self.value * self.operator(h)

    def adjoint(self, g) -> tf.Tensor:
        return self.operator.adjoint(self.factor * self.value * g)
