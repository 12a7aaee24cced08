"""Helpers shared by the modules of `lpd.methods.networks` (private to the package).

The Keras package name the models are registered under (``_PACKAGE``), the
serialisation of the set-up an operator came from and its rebuilding on load,
and the check of an operator's interface. The names keep their underscore:
this module is the place for what the package's modules share and is not part
of its interface.
"""

from __future__ import annotations

from typing import Any

from lpd.physics.bridge import TFOperator

_PACKAGE = "lpd"


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
