"""Frozen dataclasses for the settings of lpd, and their JSON round trip.

Every setting that decides a result lives in one of these dataclasses, so that it
can be written beside each checkpoint and result (``to_json``) and read back
(``from_json``) to rerun exactly the same thing. This module imports nothing
heavier than the standard library.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from typing import Any, Literal

from lpd.methods import registry

# The learned methods, the networks a NetworkConfig describes (from the registry).
METHODS = registry.learned_keys()


def check_positive(config: Any, integers: tuple[str, ...] = (),
                   reals: tuple[str, ...] = ()) -> None:
    """Raise a `ValueError` naming the first field of ``config`` that is not positive.

    ``integers`` must be whole numbers >= 1 (not booleans); ``reals`` finite and > 0.
    The one check behind the settings dataclasses of lpd (training, networks,
    denoisers, the splitting scheme).
    """
    for name in integers:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    for name in reals:
        value = getattr(config, name)
        if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                or not (math.isfinite(value) and value > 0)):
            raise ValueError(f"{name} must be finite and > 0, got {value!r}")

__all__ = [
    "NoiseConfig",
    "SamplingConfig",
    "MRI_PATTERNS",
    "MRI_RATES",
    "MRI_NOISE",
    "NOISE_TRAINING_LEVELS",
    "mri_setup_name",
    "ProblemConfig",
    "NetworkConfig",
    "TrainingConfig",
    "check_positive",
    "to_dict",
    "from_dict",
    "to_json",
    "from_json",
    "METHODS",
    "PRESETS",
    "PRECISIONS",
    "REAL_CT_IMAGES",
    "TRAINING_IMAGES",
]


@dataclasses.dataclass(frozen=True)
class NoiseConfig:
    """How noisy data are simulated from a phantom.

    Parameters
    ----------
    kind : {"gaussian", "poisson"}
        ``"gaussian"``: additive white Gaussian noise with standard deviation
        ``relative_std * mean(|A x|) + std`` (the ellipse experiment: 5 % relative;
        the MRI experiment: an absolute ``std``), only on the measured entries
        of the data. ``"poisson"``: pre-log photon counts
        ``y = Poisson(photons * exp(-mu * A x)) / photons`` (the human experiment).
    relative_std : float
        Noise level of the Gaussian model, relative to the mean absolute data.
    std : float
        Absolute standard deviation of the Gaussian model, added to the relative
        part. On an MRI set-up (unitary Fourier transform) it is the level ``l``
        of complex image-domain noise ``x + l (xi_1 + i xi_2)``: the same
        standard deviation on the real and the imaginary part of each measured
        coefficient.
    mu : float
        Attenuation scaling of the pre-log model (per unit of length of the geometry).
    photons : float
        Mean photon count per detector pixel of an unattenuated ray (``N0``).
    """

    kind: Literal["gaussian", "poisson"] = "gaussian"
    relative_std: float = 0.05
    mu: float = 0.02
    photons: float = 1e4
    std: float = 0.0

    def __post_init__(self):
        if self.kind not in ("gaussian", "poisson"):
            raise ValueError(f"noise kind must be 'gaussian' or 'poisson', got {self.kind!r}")
        if not (math.isfinite(self.relative_std) and self.relative_std >= 0):
            raise ValueError(f"relative_std must be finite and >= 0, got {self.relative_std}")
        if not (math.isfinite(self.std) and self.std >= 0):
            raise ValueError(f"std must be finite and >= 0, got {self.std}")
        if not (self.mu > 0 and self.photons > 0):
            raise ValueError(f"mu and photons must be > 0, got {self.mu}, {self.photons}")


#: The sampling patterns of k-space an MRI set-up may use (`lpd.physics.fourier.sampling_mask`).
SAMPLING_PATTERNS = ("radial", "random", "lines")


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """Which coefficients of the 2D Fourier transform an MRI set-up measures.

    Parameters
    ----------
    pattern : {"radial", "random", "lines"}
        ``"radial"``: spokes through the centre of k-space; ``"random"``: single
        coefficients drawn at random with a density that falls off from the
        centre (2D random); ``"lines"``: whole phase-encoding lines (rows along
        ``x``) drawn at random, the centre lines always (1D random).
    rate : float
        Fraction of the coefficients measured, in (0, 1].
    seed : int
        Seed of the random patterns (the mask is a fixed part of the scanner).

    References
    ----------
    Liu J, Kuang T, Zhang X. Image reconstruction by splitting deep learning
    regularization from iterative inversion. MICCAI 2018, section 3: radial,
    2D random and 1D random masks at rates 1/5, 1/4 and 1/3.
    """

    pattern: Literal["radial", "random", "lines"] = "radial"
    rate: float = 0.25
    seed: int = 0

    def __post_init__(self):
        if self.pattern not in SAMPLING_PATTERNS:
            raise ValueError(f"sampling pattern must be one of {SAMPLING_PATTERNS}, "
                             f"got {self.pattern!r}")
        if not (isinstance(self.rate, int | float) and 0 < self.rate <= 1):
            raise ValueError(f"sampling rate must be in (0, 1], got {self.rate!r}")


@dataclasses.dataclass(frozen=True)
class ProblemConfig:
    """A tomographic problem: image grid, scanner geometry, normalisation, noise.

    Lengths are in the units of the image domain (millimetres for the human
    set-ups, arbitrary units for the ellipses). Angles are in radians.

    Parameters
    ----------
    name : str
        Name of the set-up (a key of `lpd.operators.SETUPS` for the built-in ones).
    shape : tuple of int
        Number of pixels ``(nx, ny)`` of the reconstruction grid.
    min_pt, max_pt : tuple of float
        Corners of the image domain.
    weighting : float or None
        Constant weighting of the image space. ``None`` uses ODL's default
        (the cell volume); the human set-up of the paper uses ``1.0``.
    beam : {"parallel", "fan"}
        2D parallel beam or 2D fan beam with a flat detector.
    num_angles : int
        Number of projection angles, uniformly spaced.
    angle_range : tuple of float or None
        Interval of the angles. ``None`` for parallel beam means ODL's
        `parallel_beam_geometry` (``[0, pi)`` and a detector that covers the
        image), in which case ``det_shape``, ``det_min`` and ``det_max`` are derived.
    det_shape : int or None
        Number of detector pixels.
    det_min, det_max : float or None
        Extent of the (flat) detector.
    src_radius, det_radius : float or None
        Source and detector distances from the rotation centre (fan beam only).
    normalize : bool
        Whether the experiment uses ``A / ||A||`` (the ellipse experiment) instead of ``A``.
    noise : NoiseConfig
        Noise model of the experiment.
    sampling : SamplingConfig or None
        ``None`` for CT (the ray transform of the geometry above). A
        `SamplingConfig` makes the set-up MRI: the forward operator is the
        unitary 2D Fourier transform of the image on the measured coefficients
        (`lpd.physics.fourier`); the beam fields are then not used.
    """

    name: str
    shape: tuple[int, int]
    min_pt: tuple[float, float]
    max_pt: tuple[float, float]
    weighting: float | None = None
    beam: Literal["parallel", "fan"] = "parallel"
    num_angles: int = 30
    angle_range: tuple[float, float] | None = None
    det_shape: int | None = None
    det_min: float | None = None
    det_max: float | None = None
    src_radius: float | None = None
    det_radius: float | None = None
    normalize: bool = False
    noise: NoiseConfig = dataclasses.field(default_factory=NoiseConfig)
    sampling: SamplingConfig | None = None

    def __post_init__(self):
        # Tuples, not lists, so that the frozen config stays hashable after JSON.
        for field in ("shape", "min_pt", "max_pt", "angle_range"):
            value = getattr(self, field)
            if value is not None:
                object.__setattr__(self, field, tuple(value))
        if isinstance(self.noise, dict):
            object.__setattr__(self, "noise", NoiseConfig(**self.noise))
        if isinstance(self.sampling, dict):
            object.__setattr__(self, "sampling", SamplingConfig(**self.sampling))
        if self.sampling is not None and self.noise.kind != "gaussian":
            raise ValueError("an MRI set-up (sampling given) needs Gaussian noise, "
                             f"got {self.noise.kind!r}")
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise ValueError(f"shape must be two positive integers, got {self.shape}")
        if self.beam not in ("parallel", "fan"):
            raise ValueError(f"beam must be 'parallel' or 'fan', got {self.beam!r}")
        if self.num_angles < 1:
            raise ValueError(f"num_angles must be >= 1, got {self.num_angles}")
        if self.beam == "fan":
            missing = [
                f
                for f in ("angle_range", "det_shape", "det_min", "det_max", "src_radius",
                          "det_radius")
                if getattr(self, f) is None
            ]
            if missing:
                raise ValueError(f"a fan-beam set-up needs {', '.join(missing)}")
        if self.angle_range is not None and not all(map(math.isfinite, self.angle_range)):
            raise ValueError(f"angle_range must be finite, got {self.angle_range}")

    @property
    def modality(self) -> str:
        """``"ct"`` (a ray transform) or ``"mri"`` (sampled Fourier coefficients)."""
        return "ct" if self.sampling is None else "mri"


#: The named problem set-ups (built by `lpd.physics.operators.get_setup`): the
#: two experiments of the Learned Primal-Dual paper (Adler & Öktem, IEEE TMI 2018,
#: arXiv:1707.06474, section IV), smaller set-ups of the same physics that run on
#: a CPU, and LoDoPaB-CT's.
_HUMAN = ProblemConfig(
    name="human",
    shape=(512, 512),
    min_pt=(-128.0, -128.0),
    max_pt=(128.0, 128.0),
    weighting=1.0,
    beam="fan",
    num_angles=1000,
    angle_range=(0.0, 2 * math.pi),
    det_shape=1000,
    det_min=-360.0,
    det_max=360.0,
    src_radius=500.0,
    det_radius=500.0,
    normalize=False,
    noise=NoiseConfig(kind="poisson", mu=0.02, photons=1e4),
)

SETUPS: dict[str, ProblemConfig] = {
    "ellipses": ProblemConfig(
        name="ellipses",
        shape=(128, 128),
        min_pt=(-64.0, -64.0),
        max_pt=(64.0, 64.0),
        beam="parallel",
        num_angles=30,
        normalize=True,
        noise=NoiseConfig(kind="gaussian", relative_std=0.05),
    ),
    "ellipses_small": ProblemConfig(
        name="ellipses_small",
        shape=(64, 64),
        min_pt=(-32.0, -32.0),
        max_pt=(32.0, 32.0),
        beam="parallel",
        num_angles=30,
        normalize=True,
        noise=NoiseConfig(kind="gaussian", relative_std=0.05),
    ),
    "human": _HUMAN,
    # Same physical extent, scanner radii, mu and dose as "human": 2 mm pixels
    # and a detector pixel of about 1.9 mm at the rotation centre.
    "human_small": dataclasses.replace(_HUMAN, name="human_small", shape=(128, 128),
                                       num_angles=128, det_shape=192),
    # LoDoPaB-CT (Leuschner et al., Sci. Data 8, 2021): ODL's parallel_beam_geometry
    # on its grid; mu is the attenuation (per m) that its ground truth divides by
    # (3071 HU), so the model acts on the ground truth as stored.
    "lodopab": ProblemConfig(
        name="lodopab", shape=(362, 362), min_pt=(-0.13, -0.13), max_pt=(0.13, 0.13),
        beam="parallel", num_angles=1000, det_shape=513, normalize=False,
        noise=NoiseConfig(kind="poisson", mu=81.35858, photons=4096.0),
    ),
    # MRI (Liu, Kuang & Zhang 2018, section 3): axial brain slices on the seed's
    # 192 x 160 grid (here y x x: anterior-posterior 192, left-right 160) over
    # the 217 x 181 mm of the Colin27 volume, images in [0, 1], the unitary
    # Fourier transform on a radial mask at rate 1/4, and complex image-domain
    # noise of level 10 % (0.1 of the image maximum).
    "brain_mri": ProblemConfig(
        name="brain_mri", shape=(160, 192), min_pt=(-90.5, -108.5), max_pt=(90.5, 108.5),
        weighting=1.0, noise=NoiseConfig(kind="gaussian", relative_std=0.0, std=0.1),
        sampling=SamplingConfig("radial", 0.25),
    ),
    # The same field of view at half the resolution, for tests and CPU development.
    "brain_mri_small": ProblemConfig(
        name="brain_mri_small", shape=(80, 96), min_pt=(-90.5, -108.5),
        max_pt=(90.5, 108.5), weighting=1.0,
        noise=NoiseConfig(kind="gaussian", relative_std=0.0, std=0.1),
        sampling=SamplingConfig("radial", 0.25),
    ),
}

#: The other training levels of the noise-robustness experiment (`lpd.evaluation.noise`),
#: in percent: ``ellipses_noise<level>`` is ``ellipses`` with that relative noise, and the
#: models retrained on it ship in ``data/weights/ellipses_noise<level>/<method>``.
NOISE_TRAINING_LEVELS = (1, 20)
for _level in NOISE_TRAINING_LEVELS:
    SETUPS[f"ellipses_noise{_level}"] = dataclasses.replace(
        SETUPS["ellipses"], name=f"ellipses_noise{_level}",
        noise=NoiseConfig(kind="gaussian", relative_std=_level / 100))
del _level

#: The cells of the seed's Table 2 (Liu, Kuang & Zhang 2018): sampling patterns, rates
#: ``1 / k`` and noise levels in percent of the image maximum.
MRI_PATTERNS = SAMPLING_PATTERNS
MRI_RATES = (5, 4, 3)
MRI_NOISE = (0, 10)


def mri_setup_name(pattern: str, rate: int, noise: int, base: str = "brain_mri") -> str:
    """The name of one cell of the MRI grid, e.g. ``brain_mri_radial4_noise10`` (rate 1/4)."""
    return f"{base}_{pattern}{rate}_noise{noise}"


# One set-up per cell of the grid, on brain_mri's grid: weights and tuned parameters
# are per set-up.
for _pattern in MRI_PATTERNS:
    for _rate in MRI_RATES:
        for _noise in MRI_NOISE:
            _name = mri_setup_name(_pattern, _rate, _noise)
            SETUPS[_name] = dataclasses.replace(
                SETUPS["brain_mri"], name=_name, sampling=SamplingConfig(_pattern, 1 / _rate),
                noise=NoiseConfig(kind="gaussian", relative_std=0.0, std=_noise / 100))
del _pattern, _rate, _noise, _name


def to_dict(config: Any) -> dict:
    """Return a JSON-ready dict of a config dataclass, tagged with its type."""
    out = {"__type__": type(config).__name__}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[field.name] = value
    return out


def from_dict(data: dict) -> Any:
    """Inverse of `to_dict`: rebuild the config dataclass named by ``__type__``."""
    data = dict(data)
    type_name = data.pop("__type__", None)
    cls = _REGISTRY.get(type_name)
    if cls is None:
        raise ValueError(f"unknown config type {type_name!r}; known: {sorted(_REGISTRY)}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown fields for {type_name}: {sorted(unknown)}")
    kwargs = {k: from_dict(v) if isinstance(v, dict) and "__type__" in v else v
              for k, v in data.items()}
    return cls(**kwargs)


def to_json(config: Any) -> str:
    """Serialise a config dataclass to a JSON string."""
    return json.dumps(to_dict(config), indent=2, sort_keys=True)


def from_json(text: str) -> Any:
    """Rebuild a config dataclass from `to_json` output."""
    return from_dict(json.loads(text))


# Symmetries a training image may be drawn under (`TrainingConfig.augment`).
AUGMENTATIONS = ("flips", "dihedral")

#: The training images that `TrainingConfig.images` may name, and what provides
#: each: ``"phantoms"`` (a family of `lpd.data.phantoms.PHANTOMS`, a new random
#: image every sample) or ``"module:function"`` of a finite real set, called as
#: ``function(setup, split)``. The one list: the CLI, the configuration and
#: `lpd.data.catalogue.training_images` read it. A new source is one entry here.
TRAINING_IMAGES: dict[str, str] = {
    "ellipses": "phantoms",
    "rectangles": "phantoms",
    "real_ct": "lpd.data.head_ct:real_ct_slices",
    "real_ct_patients": "lpd.data.packaged_ct:patient_slices",
    "brain_mri": "lpd.data.brain_mri:brain_mri_slices",
}

#: The real-CT training sets of `TRAINING_IMAGES` (finite sets of slices).
REAL_CT_IMAGES = tuple(k for k, v in TRAINING_IMAGES.items()
                       if v != "phantoms" and k != "brain_mri")

# What the convolutions of a network compute in (`lpd.networks.resolve_precision`).
PRECISIONS = ("auto", "float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Which learned reconstructor to build, and its size (see `lpd.networks`).

    The defaults are the papers' settings. Fields that a method does not use are
    ignored by it (they keep their defaults in saved configurations).

    Parameters
    ----------
    method : str
        A learned method of `lpd.methods.registry` (`METHODS`): ``"lpd"``,
        ``"lp"``, ``"lgd"`` or ``"unet"``.
    n_iter : int
        Unrolled iterations (lpd, lp, lgd).
    n_primal, n_dual : int
        Primal and dual channels (lpd; lp uses ``n_primal``).
    filters : int
        Width of the hidden layers of each update block (lpd, lp, lgd).
    n_memory : int
        Memory channels of learned gradient descent.
    data_gradient, regulariser_gradient : bool
        Inputs of learned gradient descent (its paper's ablation).
    initial : {"zeros", "fbp"} or None
        Start of the unrolled schemes; ``None`` takes the paper's (zeros for lpd
        and lp, the FBP for lgd).
    features, depth : int
        Width at the finest level and number of poolings of the U-Net;
        ``features`` is also the width of AUTOMAP's convolutions.
    widths : {"reference", "doubling"}
        Channel rule of the U-Net (``"reference"`` reproduces the original code's
        9.7e6-parameter network; see `lpd.networks.UNet`).
    fbp_filter : str
        Window of the ramp filter of the network's FBP layer (U-Net input, lgd start).
    fbp_frequency_scaling : float
        Relative cut-off of that filter, in ``(0, 1]``.
    data_model : {"auto", "linear", "prelog"}
        ``"prelog"``: the non-linear model ``exp(-mu A x)`` inside the network
        (Poisson set-ups of the human experiment); ``"auto"`` takes it for
        Poisson set-ups with pre-log data and the linear model otherwise.
    """

    method: str = "lpd"
    n_iter: int = 10
    n_primal: int = 5
    n_dual: int = 5
    filters: int = 32
    n_memory: int = 5
    data_gradient: bool = True
    regulariser_gradient: bool = True
    initial: Literal["zeros", "fbp"] | None = None
    features: int = 64
    depth: int = 4
    widths: Literal["reference", "doubling"] = "reference"
    fbp_filter: str = "hann"
    fbp_frequency_scaling: float = 1.0
    data_model: Literal["auto", "linear", "prelog"] = "auto"

    def __post_init__(self):
        if self.method not in METHODS:
            raise registry.unknown_method(self.method, METHODS)
        check_positive(self, ("n_iter", "n_primal", "n_dual", "filters", "features", "depth"))
        if self.n_memory < 0:
            raise ValueError(f"n_memory must be >= 0, got {self.n_memory}")
        if self.initial not in (None, "zeros", "fbp"):
            raise ValueError(f"initial must be None, 'zeros' or 'fbp', got {self.initial!r}")
        if self.widths not in ("reference", "doubling"):
            raise ValueError(f"widths must be 'reference' or 'doubling', got {self.widths!r}")
        if self.data_model not in ("auto", "linear", "prelog"):
            raise ValueError(
                f"data_model must be 'auto', 'linear' or 'prelog', got {self.data_model!r}"
            )
        if not 0 < self.fbp_frequency_scaling <= 1:
            raise ValueError(
                f"fbp_frequency_scaling must be in (0, 1], got {self.fbp_frequency_scaling}"
            )


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Everything that decides the result of a training run (see `lpd.training.train`).

    Parameters
    ----------
    setup : str or ProblemConfig
        The problem: a name of `lpd.operators.SETUPS` or a user's configuration.
    network : NetworkConfig
        The reconstructor.
    steps : int
        Optimiser steps; the cosine schedule decays the learning rate to 0 over them.
    batch_size : int
        Samples per step (the global batch, split over devices).
    learning_rate, beta_2 : float
        Adam's initial learning rate and second-moment decay (1e-3, 0.99 in the paper).
    clip_global_norm : float
        Gradients are scaled to at most this global norm (1 in the paper).
    seed : int
        Seed of the weights' initialisation and of the training data stream.
    images : str
        Training images: a phantom family of `lpd.phantoms` (``"ellipses"``),
        ``"real_ct"`` (the head CT: `lpd.realdata.real_ct_slices`, train and
        validation splits) or ``"real_ct_patients"`` (the head CT's training
        slices and a chest series of another patient, validated on the head CT's:
        `lpd.data.packaged_ct.patient_slices`).
    post_log : bool
        Train on post-log data (Poisson set-ups only).
    validation_size : int
        Samples of the fixed validation set (random phantoms; a real-CT split
        is taken whole).
    validation_seed : int
        Seed of the validation set.
    validation_every, checkpoint_every, log_every : int
        Intervals, in steps, of validation (PSNR/SSIM, best checkpoint), of
        checkpoints, and of the progress line and TensorBoard scalars.
    keep_checkpoints : int
        Periodic checkpoints kept besides the best one.
    psnr_data_range : float
        Data range of PSNR and SSIM (1, as in the paper).
    operator_backend : {"auto", "matrix", "native", "odl"}
        Back-end of `lpd.as_tf_operator`.
    deterministic : bool
        Enable TensorFlow's op determinism, so that a resumed run reproduces an
        uninterrupted one bit for bit (process-wide and irreversible).
    distribute : {"auto", "none", "mirrored"}
        ``"auto"``: `tf.distribute.MirroredStrategy` when more than one GPU (or
        more than one logical CPU device) is visible; ``"mirrored"`` forces it.
    augment : {None, "flips", "dihedral"}
        Train on each image under a random flip, or a random symmetry of the
        square (see `lpd.datasets.training_pairs`); for small sets of real slices.
    precision : {"auto", "float32", "bfloat16"}
        What the convolutions compute in (`lpd.networks.set_precision`): weights,
        state, operator and loss stay float32 either way. ``"auto"`` takes
        bfloat16 only on a CPU with native bfloat16 where it measured faster;
        the precision used is recorded in each checkpoint's ``state.json``.
    init_from : str or None
        Start from trained weights instead of a random initialisation (fine-tuning
        on another set-up or data, or a finished run continued with a new
        schedule): a shipped name such as ``"ellipses/lpd"``, a weights or
        checkpoint directory, or a run directory (its best checkpoint). The
        network must be the same; the run records the weights' SHA-256.
    """

    setup: Any = "ellipses"
    network: NetworkConfig = dataclasses.field(default_factory=NetworkConfig)
    steps: int = 100_001
    batch_size: int = 5
    learning_rate: float = 1e-3
    beta_2: float = 0.99
    clip_global_norm: float = 1.0
    seed: int = 0
    images: str = "ellipses"
    post_log: bool = False
    validation_size: int = 16
    validation_seed: int = 1
    validation_every: int = 500
    checkpoint_every: int = 1000
    log_every: int = 10
    keep_checkpoints: int = 2
    psnr_data_range: float = 1.0
    operator_backend: Literal["auto", "matrix", "native", "odl"] = "auto"
    deterministic: bool = True
    distribute: Literal["auto", "none", "mirrored"] = "auto"
    augment: Literal["flips", "dihedral"] | None = None
    init_from: str | None = None
    precision: Literal["auto", "float32", "bfloat16"] = "auto"

    def __post_init__(self):
        if isinstance(self.network, dict):
            object.__setattr__(self, "network", from_dict(self.network)
                               if "__type__" in self.network else NetworkConfig(**self.network))
        if isinstance(self.setup, dict):
            object.__setattr__(self, "setup", from_dict(self.setup)
                               if "__type__" in self.setup else ProblemConfig(**self.setup))
        if not isinstance(self.setup, str | ProblemConfig):
            raise TypeError(f"setup must be a set-up name or a ProblemConfig, got {self.setup!r}")
        if not isinstance(self.network, NetworkConfig):
            raise TypeError(f"network must be a NetworkConfig, got {self.network!r}")
        check_positive(self, ("steps", "batch_size", "validation_size", "validation_every",
                              "checkpoint_every", "log_every", "keep_checkpoints"),
                       ("learning_rate", "clip_global_norm", "psnr_data_range"))
        if not 0 <= self.beta_2 < 1:
            raise ValueError(f"beta_2 must be in [0, 1), got {self.beta_2}")
        if self.seed < 0 or self.validation_seed < 0:
            raise ValueError("seeds must be >= 0")
        if self.operator_backend not in ("auto", "matrix", "native", "odl"):
            raise ValueError(f"unknown operator_backend {self.operator_backend!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.images not in TRAINING_IMAGES:
            raise ValueError(f"unknown training images {self.images!r}; choose one of "
                             f"{', '.join(TRAINING_IMAGES)}")
        if self.augment is not None and self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be None or one of {AUGMENTATIONS}, "
                             f"got {self.augment!r}")
        if self.init_from is not None and not (isinstance(self.init_from, str)
                                               and self.init_from.strip()):
            raise ValueError(f"init_from must be a non-empty path or name, got {self.init_from!r}")
        if self.distribute not in ("auto", "none", "mirrored"):
            raise ValueError(
                f"distribute must be 'auto', 'none' or 'mirrored', got {self.distribute!r}"
            )


_REGISTRY: dict[str, type] = {
    cls.__name__: cls for cls in (NoiseConfig, SamplingConfig, ProblemConfig, NetworkConfig,
                                 TrainingConfig)
}


# ---------------------------------------------------------------------------
# Training presets (used by lpd.training and the CLI)
# ---------------------------------------------------------------------------

# Presets as data: overrides of TrainingConfig fields, with per-method network
# settings under "network". "paper" is the original schedule. "quick" shows each
# method beating the FBP on the ellipses on a 2-core CPU: measured on a shared
# machine (about one core free), validation PSNR after 2000 steps against the
# FBP's 26.0 dB on the same 8 phantoms: LPD 28.3 dB (16 min), Learned Primal
# 28.6 (12 min), LGD 29.6 (10 min), FBP + U-Net 28.6 (3 min). "tiny" is a smoke
# test that runs in seconds.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "steps": 100_001, "batch_size": 5, "validation_size": 32,
        "validation_every": 1000, "checkpoint_every": 1000, "log_every": 100,
        "network": {},
    },
    "quick": {
        "steps": 2000, "batch_size": 1, "validation_size": 8,
        "validation_every": 250, "checkpoint_every": 250, "log_every": 25,
        "network": {
            # A U-Net of the "doubling" kind with 16 features: about 1.9e6
            # parameters and a step as fast as LPD's on a CPU.
            "unet": {"features": 16, "depth": 4, "widths": "doubling"},
        },
    },
    # "cpu": the schedule of the weights shipped in data/weights (batch 1, fresh
    # data every step); each shipped model's steps are in its config.json and in
    # the experiment specs of `lpd.reproduce`.
    "cpu": {
        "steps": 6000, "batch_size": 1, "validation_size": 16,
        "validation_every": 250, "checkpoint_every": 250, "log_every": 50,
        "network": {
            "unet": {"features": 16, "depth": 4, "widths": "doubling"},
        },
    },
    "tiny": {
        "setup": "ellipses_small", "steps": 20, "batch_size": 2, "validation_size": 2,
        "validation_every": 10, "checkpoint_every": 10, "log_every": 5,
        "network": {
            "lpd": {"n_iter": 2, "filters": 8},
            "lp": {"n_iter": 2, "filters": 8},
            "lgd": {"n_iter": 2, "filters": 8},
            "unet": {"features": 4, "depth": 2, "widths": "doubling"},
            "automap": {"features": 4},
        },
    },
}
