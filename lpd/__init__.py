"""lpd: learned tomographic reconstruction with ODL, ASTRA and TensorFlow 2.

Reproduces Learned Primal-Dual reconstruction and learned gradient descent
(Adler & Öktem 2017, 2018) and the methods they are compared against.

The top-level names are loaded on first use, so that ``import lpd`` stays cheap
and the classical parts never import TensorFlow:

- `as_tf_operator`: an ODL operator as a batched TensorFlow op with gradients.
- `load_pretrained`: a trained model from the weights shipped in ``data/weights``.
- modules: `operators` (set-ups, ray transforms), `tf_ops` (the bridge),
  `phantoms`, `datasets` (noise, simulation, pipelines), `realdata` (real CT
  and loaders for user data), `classical` (FBP, TV, Tikhonov), `metrics`,
  `evaluation`, `networks` (LPD, learned primal, LGD, U-Net), `training`,
  `config`.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0.dev0"

__all__ = [
    "as_tf_operator",
    "load_pretrained",
    "operators",
    "tf_ops",
    "phantoms",
    "datasets",
    "realdata",
    "classical",
    "metrics",
    "evaluation",
    "networks",
    "training",
    "config",
    "__version__",
]

_LAZY = {
    "as_tf_operator": ("lpd.tf_ops", "as_tf_operator"),
    "operators": ("lpd.operators", None),
    "config": ("lpd.config", None),
    "tf_ops": ("lpd.tf_ops", None),
    "load_pretrained": ("lpd.training", "load_pretrained"),
    "phantoms": ("lpd.phantoms", None),
    "datasets": ("lpd.datasets", None),
    "realdata": ("lpd.realdata", None),
    "classical": ("lpd.classical", None),
    "metrics": ("lpd.metrics", None),
    "evaluation": ("lpd.evaluation", None),
    "networks": ("lpd.networks", None),
    "training": ("lpd.training", None),
}


def __getattr__(name: str):
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'lpd' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
