"""ODL spaces, geometries and ray transforms, and the named problem set-ups.

This is the only module of lpd that imports ODL's tomography package or ASTRA
(the Fourier operator of MRI is in `lpd.physics.fourier`). Everything else
receives operators built here.

The named set-ups (`SETUPS`) are the two experiments of the Learned Primal-Dual
paper plus smaller set-ups of the same physics that run on a CPU:

==================  ==========  ============  =======  ==================================
name                image       beam          angles   noise
==================  ==========  ============  =======  ==================================
``ellipses``        128 x 128   parallel      30       5 % Gaussian, ``A / ||A||``
``ellipses_small``  64 x 64     parallel      30       5 % Gaussian, ``A / ||A||``
``human``           512 x 512   fan (flat)    1000     pre-log Poisson, mu 0.02, N0 1e4
``human_small``     128 x 128   fan (flat)    128      pre-log Poisson, mu 0.02, N0 1e4
``lodopab``         362 x 362   parallel      1000     LoDoPaB-CT's: Poisson, N0 4096
==================  ==========  ============  =======  ==================================

and the MRI set-ups of `lpd.physics.fourier` (the unitary Fourier transform on
a sampling mask, ``ProblemConfig.sampling``): ``brain_mri`` (160 x 192, a radial
mask at rate 1/4, complex noise of level 0.1) and ``brain_mri_small`` (80 x 96).

References
----------
Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 37(6), 2018,
arXiv:1707.06474, section IV (experimental set-up).
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import weakref

import numpy as np
import scipy.sparse as sp

from lpd.config import SETUPS, ProblemConfig

# Importing ODL changes numpy's print options for the whole process; undo that.
_print_options = np.get_printoptions()
import odl  # noqa: E402
from odl.applications import tomo  # noqa: E402

np.set_printoptions(**_print_options)
del _print_options

__all__ = [
    "SETUPS",
    "DATA_MODELS",
    "as_config",
    "as_setup",
    "Setup",
    "MatrixUnavailableError",
    "get_setup",
    "image_space",
    "make_geometry",
    "ray_transform",
    "operator_norm",
    "estimate_matrix_bytes",
    "system_matrix",
    "SystemMatrix",
    "shared_system_matrix",
    "constant_weighting",
    "unwrap_scalar",
]




def constant_weighting(space) -> float:
    """Return the constant weighting of a uniformly discretised space.

    ODL's inner product on such a space is ``const * sum(x * y)``; lpd needs the
    constant to turn ODL's adjoints into the transposes that gradients need.

    Raises
    ------
    TypeError
        If ``space`` is not a tensor space with a constant weighting (a product
        space, or an array weighting).
    """
    weighting = getattr(space, "weighting", None)
    const = getattr(weighting, "const", None)
    if not isinstance(space, odl.core.space.base_tensors.TensorSpace) or const is None:
        raise TypeError(
            "expected a uniformly discretised space with a constant weighting, got "
            f"{space!r}"
        )
    return float(const)


class MatrixUnavailableError(ValueError):
    """Raised when an operator has no (affordable) sparse-matrix form."""


def image_space(config: ProblemConfig) -> odl.DiscretizedSpace:
    """Return the float32 image space of a problem configuration."""
    kwargs = {} if config.weighting is None else {"weighting": config.weighting}
    return odl.uniform_discr(config.min_pt, config.max_pt, config.shape, dtype="float32",
                             **kwargs)


def make_geometry(config: ProblemConfig, space: odl.DiscretizedSpace | None = None):
    """Return the ODL geometry of a problem configuration.

    Parameters
    ----------
    config : ProblemConfig
        The problem. For parallel beam without ``angle_range`` the geometry is
        ODL's ``parallel_beam_geometry(space, num_angles)``, as in the paper.
    space : odl.DiscretizedSpace, optional
        The image space; built from ``config`` when not given.
    """
    if space is None:
        space = image_space(config)
    if config.beam == "parallel" and config.angle_range is None:
        return tomo.parallel_beam_geometry(space, num_angles=config.num_angles,
                                           det_shape=config.det_shape)
    angles = odl.uniform_partition(*config.angle_range, config.num_angles)
    if config.det_shape is None or config.det_min is None or config.det_max is None:
        raise ValueError(f"set-up {config.name!r} needs det_shape, det_min and det_max")
    detector = odl.uniform_partition(config.det_min, config.det_max, config.det_shape)
    if config.beam == "parallel":
        return tomo.Parallel2dGeometry(angles, detector)
    return tomo.FanBeamGeometry(angles, detector, src_radius=config.src_radius,
                                det_radius=config.det_radius)


def ray_transform(space: odl.DiscretizedSpace, geometry, impl: str | None = None):
    """Return the ray transform of ``space`` for ``geometry``.

    Parameters
    ----------
    space : odl.DiscretizedSpace
        Image space (2D or 3D).
    geometry : odl.applications.tomo.Geometry
        Any ODL geometry: parallel, fan or cone beam.
    impl : {None, "astra_cpu", "astra_cuda", "skimage"}
        Back-end of the transform. ``None`` takes ASTRA's CUDA code where a GPU
        is usable and ``astra_cpu`` otherwise (exactly adjoint, unlike ``skimage``).

    Returns
    -------
    odl.applications.tomo.RayTransform
    """
    if impl is None:
        impl = "astra_cuda" if tomo.ASTRA_CUDA_AVAILABLE else "astra_cpu"
    return tomo.RayTransform(space, geometry, impl=impl)


def operator_norm(op, maxiter: int = 100, seed: int = 0) -> float:
    """Estimate ``||op||`` by ODL's power method from a seeded random start.

    The estimate is a lower bound that converges from below; 100 iterations
    give the paper's normalisation to about 5 digits on the ellipse set-up.
    """
    rng = np.random.default_rng(seed)
    xstart = op.domain.element(rng.standard_normal(op.domain.shape).astype(op.domain.dtype))
    return float(odl.power_method_opnorm(op, xstart=xstart, maxiter=maxiter))


#: How an experiment's data relate to the image: ``"linear"`` (``y = A x`` plus
#: noise), ``"prelog"`` (photon fractions ``exp(-mu A x)`` with Poisson noise) or
#: ``"postlog"`` (their logarithm, ``-log(y) / mu``, taken as linear data).
DATA_MODELS = ("linear", "prelog", "postlog")


@dataclasses.dataclass(frozen=True, eq=False)
class Setup:
    """The forward model of an experiment, built from its configuration.

    Every method, classical or learned, and every data pipeline receives one of
    these; none builds a geometry. Besides the ODL objects it carries each face
    of the physics, each written once in `lpd.physics`: the numpy face of the
    operator (`numpy`, `lpd.physics.projector`), its TensorFlow face
    (`tf_operator`, `lpd.physics.bridge`), its norm, the noise model
    (`noise`), the data model (`data_model`), the post-log transform
    (`post_log`) and the non-linear pre-log model (`prelog_forward`).

    Attributes
    ----------
    config : ProblemConfig
    space : odl.DiscretizedSpace
        The image space.
    geometry : odl.applications.tomo.Geometry or numpy.ndarray
        The scanner geometry; for MRI the boolean sampling mask of k-space.
    ray_trafo : odl.Operator
        The unnormalised forward operator ``A``: the ray transform, or for MRI
        the masked Fourier transform (`lpd.physics.fourier.MaskedFourierTransform`).
    operator : odl.Operator
        The forward operator of the experiment: ``A / ||A||`` when
        ``config.normalize`` is set, otherwise ``A`` itself.
    """

    config: ProblemConfig
    space: odl.DiscretizedSpace
    geometry: object
    ray_trafo: odl.Operator
    operator: odl.Operator

    @property
    def opnorm(self) -> float:
        """``||A||`` by the power method, computed once per set-up and process."""
        return _cached_norm(self.config, getattr(self.ray_trafo, "impl", None))

    @property
    def modality(self) -> str:
        """``"ct"`` or ``"mri"`` (`lpd.config.ProblemConfig.modality`)."""
        return self.config.modality

    @property
    def data_space(self) -> odl.DiscretizedSpace:
        """The range of the forward operator (the sinogram space)."""
        return self.operator.range

    @functools.cached_property
    def noise(self):
        """The noise model (`lpd.physics.noise.GaussianNoise` or ``PoissonNoise``)."""
        from lpd.physics.noise import noise_model

        return noise_model(self.config.noise, support=getattr(self.operator, "support", None))

    def noise_input(self, noise=None) -> odl.Operator:
        """The operator whose output a noise model takes: ``A`` for Poisson, `operator` else."""
        noise = self.noise if noise is None else noise
        return self.ray_trafo if noise.input == "ray_trafo" else self.operator

    @property
    def numpy(self):
        """The numpy face of `operator`: ``W x`` and ``W^T y`` on batches (`Projector`)."""
        from lpd.physics.projector import projector

        return projector(self.operator)

    def tf_operator(self, backend: str = "auto"):
        """The TensorFlow face of `operator` (`lpd.physics.bridge.as_tf_operator`).

        Built once per back-end and shared by every model of the set-up.
        """
        faces = self.__dict__.setdefault("_tf_faces", {})
        if backend not in faces:
            from lpd.physics.bridge import as_tf_operator

            faces[backend] = as_tf_operator(self.operator, backend=backend)
        return faces[backend]

    def data_model(self, post_log: bool = False, requested: str = "auto") -> str:
        """How a method takes this experiment's data: one of `DATA_MODELS`.

        ``post_log`` says the data were converted with `post_log` (Poisson
        set-ups only). ``requested`` is a method's own choice: ``"auto"`` follows
        the data, ``"linear"`` treats any data as linear, ``"prelog"`` insists on
        the pre-log model.

        Raises
        ------
        ValueError
            ``post_log`` for Gaussian noise, or ``"prelog"`` where the data are
            not pre-log.
        """
        poisson = self.config.noise.kind == "poisson"
        if post_log and not poisson:
            raise ValueError("post_log applies to set-ups with Poisson (pre-log) noise only")
        if requested not in ("auto", "linear", "prelog"):
            raise ValueError(f"unknown data model {requested!r}; choose auto, linear or prelog")
        if requested == "prelog":
            if not poisson:
                raise ValueError(f"data_model='prelog' needs a Poisson set-up, "
                                 f"not {self.config.name!r}")
            if post_log:
                raise ValueError("data_model='prelog' contradicts post_log=True")
        if requested == "linear" or not poisson:
            return "linear"
        return "postlog" if post_log else "prelog"

    def post_log(self, data) -> np.ndarray:
        """Post-log data ``-log(max(y, 1 / N0)) / mu`` of pre-log data (`PoissonNoise.post_log`)."""
        if self.config.noise.kind != "poisson":
            raise ValueError(f"{self.config.name!r} has Gaussian noise: its data are not pre-log")
        return self.noise.post_log(data)

    def prelog_forward(self, backend: str = "auto"):
        """The pre-log model ``exp(-mu A x)`` in TensorFlow (`lpd.physics.bridge.PreLogForward`)."""
        if self.config.noise.kind != "poisson":
            raise ValueError(f"{self.config.name!r} has Gaussian noise: no pre-log model")
        from lpd.physics.bridge import PreLogForward

        return PreLogForward(self.tf_operator(backend), self.config.noise.mu)


def _unnormalised(config: ProblemConfig, space, impl: str | None):
    """``(geometry, A)``: the ray transform of the geometry, or (MRI) the mask and `K F`."""
    if config.sampling is not None:
        from lpd.physics.fourier import MaskedFourierTransform, sampling_mask

        mask = sampling_mask(space.shape, config.sampling)
        return mask, MaskedFourierTransform(space, mask)
    geometry = make_geometry(config, space)
    return geometry, ray_transform(space, geometry, impl)


@functools.lru_cache(maxsize=16)
def _cached_norm(config: ProblemConfig, impl: str | None) -> float:
    space = image_space(config)
    return operator_norm(_unnormalised(config, space, impl)[1])


@functools.lru_cache(maxsize=16)
def _build_setup(config: ProblemConfig, impl: str | None) -> Setup:
    space = image_space(config)
    geometry, ray_trafo = _unnormalised(config, space, impl)
    operator = ray_trafo
    if config.normalize:
        operator = (1.0 / _cached_norm(config, getattr(ray_trafo, "impl", None))) * ray_trafo
    return Setup(config=config, space=space, geometry=geometry, ray_trafo=ray_trafo,
                 operator=operator)


def as_config(setup) -> ProblemConfig:
    """The `ProblemConfig` of a set-up, a set-up name or a configuration (nothing is built).

    Raises
    ------
    ValueError
        For a name that is not in `SETUPS` (the message lists them).
    TypeError
        For anything else.
    """
    if isinstance(setup, str):
        try:
            return SETUPS[setup]
        except KeyError:
            raise ValueError(f"unknown set-up {setup!r}; known: {', '.join(SETUPS)}") from None
    config = getattr(setup, "config", setup)
    if not isinstance(config, ProblemConfig):
        raise TypeError(f"expected a set-up (lpd.operators.Setup), its name or a ProblemConfig, "
                        f"got {setup!r}")
    return config


def as_setup(setup) -> Setup:
    """A built set-up from a set-up, a set-up name or a `ProblemConfig` (`get_setup`).

    Every function of lpd that takes "a set-up" accepts these three through this
    one function. An object with the attributes of a `Setup` (``config``,
    ``operator``, ``ray_trafo``, ...) is taken as it is.
    """
    if isinstance(setup, str | ProblemConfig):
        return get_setup(setup)
    if not all(hasattr(setup, name) for name in ("config", "operator", "ray_trafo")):
        raise TypeError(f"expected a set-up (lpd.operators.Setup) or its name, got {setup!r}")
    return setup


def get_setup(name: str | ProblemConfig, impl: str | None = None) -> Setup:
    """Build a named set-up (a key of `SETUPS`) or a user's `ProblemConfig`.

    Set-ups are built once per process and cached, including the operator norm.

    Examples
    --------
    >>> setup = get_setup("ellipses")
    >>> setup.space.shape, setup.operator.range.shape
    ((128, 128), (30, 183))
    """
    if isinstance(name, ProblemConfig):
        return _build_setup(name, impl)
    try:
        config = SETUPS[name]
    except KeyError:
        raise ValueError(
            f"unknown set-up {name!r}; known set-ups: {', '.join(SETUPS)}"
        ) from None
    return _build_setup(config, impl)


# ---------------------------------------------------------------------------
# Sparse system matrices
# ---------------------------------------------------------------------------

def unwrap_scalar(op):
    """Split ``op`` into ``(scalar, inner)`` through ODL's scalar products."""
    scalar = 1.0
    while isinstance(op, odl.OperatorLeftScalarMult | odl.OperatorRightScalarMult):
        scalar *= float(op.scalar)
        op = op.operator
    return scalar, op


def estimate_matrix_bytes(op) -> int | None:
    """Upper estimate of the memory of `system_matrix` (matrix and transpose), in bytes.

    Returns ``None`` when ``op`` has no sparse-matrix form that lpd can build.
    The estimate costs nothing: it is made before anything is allocated.
    """
    _, inner = unwrap_scalar(op)
    if isinstance(inner, tomo.RayTransform):
        if inner.impl != "astra_cpu" or inner.domain.ndim != 2:
            return None
        num_rays = int(np.prod(inner.range.shape))
        # A ray meets at most about two pixels per row or column crossed.
        nnz = num_rays * 2 * max(inner.domain.shape)
    elif isinstance(inner, odl.MatrixOperator):
        matrix = inner.matrix
        nnz = matrix.nnz if sp.issparse(matrix) else int(np.prod(matrix.shape))
        num_rays = matrix.shape[0]
    else:
        return None
    # float32 values and int32 indices, for the matrix and its transpose.
    return 2 * (8 * nnz + 4 * (num_rays + int(np.prod(inner.domain.shape)) + 2))


def _raw_matrix(op) -> sp.csr_matrix:
    """The matrix of ``op`` as it acts on flattened arrays (not yet verified)."""
    scalar, inner = unwrap_scalar(op)
    if isinstance(inner, tomo.RayTransform):
        import astra
        from odl.applications.tomo.backends.astra_cpu import default_astra_proj_type
        from odl.applications.tomo.backends.astra_setup import (
            astra_projection_geometry,
            astra_projector,
            astra_volume_geometry,
        )

        vol_geom = astra_volume_geometry(inner.domain, "cpu")
        proj_geom = astra_projection_geometry(inner.geometry, "cpu")
        proj_id = astra_projector(default_astra_proj_type(inner.geometry), vol_geom, proj_geom,
                                  2)
        try:
            matrix_id = astra.projector.matrix(proj_id)
            try:
                matrix = astra.matrix.get(matrix_id)
            finally:
                astra.matrix.delete(matrix_id)
        finally:
            astra.projector.delete(proj_id)
    else:
        matrix = inner.matrix
        if inner.domain.ndim != 1:
            raise MatrixUnavailableError("MatrixOperator with a multi-axis domain")
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    if scalar != 1.0:
        matrix = (matrix * np.float32(scalar)).tocsr()
    return matrix


def _check_budget(op, memory_budget: float) -> None:
    """Raise `MatrixUnavailableError` unless ``op`` has a matrix form within the budget."""
    estimate = estimate_matrix_bytes(op)
    if estimate is None:
        raise MatrixUnavailableError(
            f"no sparse-matrix form is known for {type(op).__name__} "
            "(only 2D astra_cpu ray transforms and MatrixOperator)"
        )
    if estimate > memory_budget:
        raise MatrixUnavailableError(
            f"the system matrix would take about {estimate / 2**30:.1f} GiB, above the "
            f"memory budget of {memory_budget / 2**30:.1f} GiB; raise memory_budget to "
            "build it anyway"
        )


def system_matrix(op, memory_budget: float = 2**31, verify: bool = True) -> sp.csr_matrix:
    """Return the sparse matrix ``W`` with ``op(x).data.ravel() == W @ x.data.ravel()``.

    Available for 2D ASTRA CPU ray transforms (taken from ASTRA's own projector,
    so it is the transform ODL computes, not an approximation), ODL
    ``MatrixOperator`` on one-axis spaces, and scalar multiples of these.

    Parameters
    ----------
    op : odl.Operator
        A linear operator.
    memory_budget : float
        Largest memory, in bytes, that the matrix and its transpose may take.
        A matrix estimated above it is not built.
    verify : bool
        Check ``W`` against ODL's forward and adjoint on a random input and raise
        if they differ by more than float32 rounding.

    Raises
    ------
    MatrixUnavailableError
        If ``op`` has no matrix form, it would exceed ``memory_budget``, or the
        check against ODL fails.
    """
    _check_budget(op, memory_budget)
    matrix = _raw_matrix(op)
    if matrix.shape != (op.range.size, op.domain.size):
        raise MatrixUnavailableError(
            f"matrix of shape {matrix.shape} does not map {op.domain.shape} to {op.range.shape}"
        )
    if verify:
        _verify_matrix(op, matrix)
    return matrix


@dataclasses.dataclass(frozen=True)
class SystemMatrix:
    """The matrix ``W`` of a linear operator and an explicit CSR copy of ``W^T``.

    ``W^T`` is kept in CSR form because CSR products are several times faster
    than the CSC view that ``W.T`` gives.
    """

    forward: sp.csr_matrix
    transpose: sp.csr_matrix

    @classmethod
    def of(cls, matrix: sp.csr_matrix) -> SystemMatrix:
        return cls(matrix, matrix.T.tocsr())


# Shared matrices by id of the ODL operator. The weak reference both checks that
# the id still names the same operator and drops the entry when it is freed.
_SHARED: dict[int, tuple[weakref.ref, SystemMatrix]] = {}
_SHARED_LOCK = threading.Lock()


def shared_system_matrix(op, memory_budget: float = 2**31) -> SystemMatrix:
    """`system_matrix` of ``op`` and its transpose, built once per operator and process.

    The operator bridge, the data pipeline and the classical solvers all apply
    the same set-up operators; they share one matrix through this function.

    Raises
    ------
    MatrixUnavailableError
        As `system_matrix`: no matrix form, or one estimated above ``memory_budget``
        (checked on every call, also when the matrix has been built before).
    """
    _check_budget(op, memory_budget)
    key = id(op)
    with _SHARED_LOCK:
        entry = _SHARED.get(key)
        if entry is not None and entry[0]() is op:
            return entry[1]
        matrices = SystemMatrix.of(system_matrix(op, memory_budget=memory_budget))

        def forget(ref, key=key):
            # No lock: the collector may call this while this thread holds it.
            if _SHARED.get(key, (None,))[0] is ref:
                _SHARED.pop(key, None)

        _SHARED[key] = (weakref.ref(op, forget), matrices)
        return matrices


def _verify_matrix(op, matrix: sp.csr_matrix, rtol: float = 1e-4) -> None:
    """Raise unless ``matrix`` reproduces ``op`` and its adjoint on random inputs."""
    rng = np.random.default_rng(1234)
    x = rng.random(op.domain.shape, dtype=np.float32)
    y = rng.random(op.range.shape, dtype=np.float32)
    expected = op(x).data.ravel()
    got = matrix @ x.ravel()
    err = np.linalg.norm(got - expected) / max(np.linalg.norm(expected), 1e-30)
    if not err < rtol:
        raise MatrixUnavailableError(f"system matrix differs from ODL's operator by {err:.1e}")
    ratio = constant_weighting(op.range) / constant_weighting(op.domain)
    expected = op.adjoint(y).data.ravel()
    got = ratio * (matrix.T @ y.ravel())
    err = np.linalg.norm(got - expected) / max(np.linalg.norm(expected), 1e-30)
    if not err < rtol:
        raise MatrixUnavailableError(
            f"transposed system matrix differs from ODL's adjoint by {err:.1e}"
        )
