"""Training configurations from presets, and the model a configuration describes.

`make_config` assembles a `lpd.config.TrainingConfig` from a preset of
`lpd.config.PRESETS`, a method of `lpd.methods.registry` and overrides;
`build_model` builds the network a `lpd.config.NetworkConfig` describes for a
set-up (the registry names its class).
"""

from __future__ import annotations

import dataclasses

import keras

from lpd.config import (
    METHODS,
    PRESETS,
    NetworkConfig,
    ProblemConfig,
    TrainingConfig,
)
from lpd.methods import registry
from lpd.physics import operators

__all__ = ["make_config", "build_model"]


def make_config(method: str = "lpd", setup: str | ProblemConfig | None = None,
                preset: str = "quick", **overrides) -> TrainingConfig:
    """A `TrainingConfig` from a preset, a method and overrides.

    Parameters
    ----------
    method : {"lpd", "lp", "lgd", "unet"}
    setup : str or ProblemConfig, optional
        The problem; the preset's (``"ellipses"`` unless the preset says
        otherwise) by default.
    preset : {"paper", "quick", "cpu", "tiny"}
        A key of `PRESETS`.
    **overrides
        Fields of `TrainingConfig` (e.g. ``steps=500, batch_size=2, seed=3``);
        ``network`` may be a dict of `NetworkConfig` fields.

    Examples
    --------
    >>> config = make_config("lpd", "ellipses", "paper")
    >>> config.steps, config.batch_size, config.network.n_iter
    (100001, 5, 10)
    """
    if method not in METHODS:
        raise registry.unknown_method(method, METHODS)
    try:
        preset_fields = dict(PRESETS[preset])
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; choose one of {list(PRESETS)}") from None
    network = {"method": method, **preset_fields.pop("network", {}).get(method, {})}
    extra = overrides.pop("network", None) or {}
    if isinstance(extra, NetworkConfig):
        extra = {f.name: getattr(extra, f.name) for f in dataclasses.fields(extra)}
    network.update(extra)
    if network["method"] != method:
        raise ValueError(f"network method {network['method']!r} contradicts method {method!r}")
    fields = {**preset_fields, **overrides}
    if setup is not None:
        fields["setup"] = setup
    if "images" not in overrides and _is_poisson(fields.get("setup", "ellipses")):
        # The human-CT set-ups train on real slices, not on ellipses.
        fields["images"] = "real_ct"
    return TrainingConfig(network=NetworkConfig(**network), **fields)


def _is_poisson(setup: str | ProblemConfig) -> bool:
    if isinstance(setup, ProblemConfig):
        return setup.noise.kind == "poisson"
    from lpd.physics.operators import SETUPS

    return setup in SETUPS and SETUPS[setup].noise.kind == "poisson"


def build_model(network: NetworkConfig, setup: str | ProblemConfig = "ellipses", *,
                operator=None, backend: str = "auto", post_log: bool = False) -> keras.Model:
    """Build the model a `NetworkConfig` describes, for a set-up.

    Parameters
    ----------
    network : NetworkConfig
    setup : str or ProblemConfig
        The problem; stored in the model's config so that it can be reloaded.
    operator : TFOperator, optional
        The forward operator; by default the set-up's (``A / ||A||`` for the
        ellipses, ``A`` for the human set-ups) through `lpd.as_tf_operator`.
    backend : {"auto", "matrix", "native", "odl"}
        Back-end of the bridge when the operator is built here.
    post_log : bool
        Whether the data will be post-log (decides the data model of Poisson
        set-ups with ``data_model="auto"``).

    Returns
    -------
    keras.Model
        Built (all weights created), mapping data to images.
    """
    problem = operators.as_setup(setup)
    if operator is None:
        operator = problem.tf_operator(backend)
    data_model = problem.data_model(post_log, network.data_model)
    mu = problem.config.noise.mu if data_model == "prelog" else None
    common = {"setup": setup, "operator_backend": backend, "prelog_mu": mu}
    fbp = {"fbp_filter": network.fbp_filter,
           "fbp_frequency_scaling": network.fbp_frequency_scaling}
    return registry.get(network.method).load().from_network(network, operator, **fbp,
                                                            **common)
