"""lpd: learned tomographic reconstruction with ODL, ASTRA and TensorFlow 2.

Reproduces Learned Primal-Dual reconstruction and learned gradient descent
(Adler & Öktem 2017, 2018) and the methods they are compared against.

The package, with imports pointing one way (each builds on those above it):

- `lpd.config`, `lpd.io`, `lpd.metrics`: configuration dataclasses, atomic
  file writes, PSNR/SSIM and timing, used throughout.
- `lpd.physics`: set-ups, ray transforms, the MRI Fourier operator and the ODL ->
  TensorFlow bridge.
- `lpd.data`: phantoms, simulation and pipelines, real CT and brain MRI.
- `lpd.methods`: classical, statistical, plug-and-play and untrained methods, and
  the networks.
- `lpd.training`: the training loop, checkpoints and shipped weights.
- `lpd.evaluation`: scoring, figures and the paper's experiments.
- `lpd.cli`: the ``lpd`` command.

The top-level names are loaded on first use, so that ``import lpd`` stays cheap
and the classical parts never import TensorFlow:

- `as_tf_operator`: an ODL operator as a batched TensorFlow op with gradients.
- `load_pretrained`: a trained model from the weights shipped in ``data/weights``.
- the modules by their short names: `operators`, `tf_ops` (the bridge),
  `phantoms`, `datasets` (the pipelines), `realdata`, `classical`, `networks`,
  `training`, `metrics`, `evaluation`, `config`. The same short names import
  as modules (``import lpd.operators``, ``from lpd.realdata import ...``):
  they are the modules of the layout above under the names they had before it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0.dev0"

__all__ = [
    "as_tf_operator",
    "load_pretrained",
    "physics",
    "data",
    "methods",
    "io",
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

# Short names of the modules (the package's flat layout before its sub-packages).
_MOVED = {
    "lpd.operators": "lpd.physics.operators",
    "lpd.tf_ops": "lpd.physics.bridge",
    "lpd.phantoms": "lpd.data.phantoms",
    "lpd.datasets": "lpd.data.pipelines",
    "lpd.realdata": "lpd.data.real",
    "lpd.classical": "lpd.methods.classical",
    "lpd.networks": "lpd.methods.networks",
    "lpd.figures": "lpd.evaluation.figures",
    "lpd.reproduce": "lpd.evaluation.reproduce",
}

_LAZY = {
    "as_tf_operator": ("lpd.physics.bridge", "as_tf_operator"),
    "load_pretrained": ("lpd.training", "load_pretrained"),
    "config": ("lpd.config", None),
    "io": ("lpd.io", None),
    "metrics": ("lpd.metrics", None),
    "physics": ("lpd.physics", None),
    "data": ("lpd.data", None),
    "methods": ("lpd.methods", None),
    "training": ("lpd.training", None),
    "evaluation": ("lpd.evaluation", None),
    **{name.split(".")[1]: (target, None) for name, target in _MOVED.items()},
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``lpd.<short name>`` as the module it names in `_MOVED` (the same object)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in _MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(_MOVED[spec.name])

    def exec_module(self, module):
        pass  # already executed under its own name


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())


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
