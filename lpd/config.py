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
from typing import Any, Literal

__all__ = [
    "NoiseConfig",
    "ProblemConfig",
    "to_dict",
    "from_dict",
    "to_json",
    "from_json",
]


@dataclasses.dataclass(frozen=True)
class NoiseConfig:
    """How noisy data are simulated from a phantom.

    Parameters
    ----------
    kind : {"gaussian", "poisson"}
        ``"gaussian"``: additive white Gaussian noise with standard deviation
        ``relative_std * mean(|A x|)`` (the ellipse experiment). ``"poisson"``:
        pre-log photon counts ``y = Poisson(photons * exp(-mu * A x)) / photons``
        (the human experiment).
    relative_std : float
        Noise level of the Gaussian model, relative to the mean absolute data.
    mu : float
        Attenuation scaling of the pre-log model (per unit of length of the geometry).
    photons : float
        Mean photon count per detector pixel of an unattenuated ray (``N0``).
    """

    kind: Literal["gaussian", "poisson"] = "gaussian"
    relative_std: float = 0.05
    mu: float = 0.02
    photons: float = 1e4

    def __post_init__(self):
        if self.kind not in ("gaussian", "poisson"):
            raise ValueError(f"noise kind must be 'gaussian' or 'poisson', got {self.kind!r}")
        if not self.relative_std >= 0:
            raise ValueError(f"relative_std must be >= 0, got {self.relative_std}")
        if not (self.mu > 0 and self.photons > 0):
            raise ValueError(f"mu and photons must be > 0, got {self.mu}, {self.photons}")


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

    def __post_init__(self):
        # Tuples, not lists, so that the frozen config stays hashable after JSON.
        for field in ("shape", "min_pt", "max_pt", "angle_range"):
            value = getattr(self, field)
            if value is not None:
                object.__setattr__(self, field, tuple(value))
        if isinstance(self.noise, dict):
            object.__setattr__(self, "noise", NoiseConfig(**self.noise))
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


_REGISTRY: dict[str, type] = {cls.__name__: cls for cls in (NoiseConfig, ProblemConfig)}
