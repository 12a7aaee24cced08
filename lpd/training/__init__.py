"""Training of the learned methods: configurations, the loop, checkpoints, shipped weights.

- `lpd.training.factory`: `make_config` (presets, methods, overrides) and
  `build_model` (the network a configuration describes).
- `lpd.training.loop`: `train`, the resumable loop, and `make_train_step`.
- `lpd.training.checkpoints`: checkpoints of a run on disk, `load_checkpoint`.
- `lpd.training.weights`: `export_weights`, `load_pretrained`, fine-tuning sources.
- `lpd.training.summaries`: TensorBoard scalars and images.

The public names of these modules are available here.
"""

from lpd.config import METHODS, PRESETS
from lpd.training.checkpoints import WeightsError, WeightsMissing, load_checkpoint, saved_config
from lpd.training.factory import build_model, make_config
from lpd.training.loop import NonFiniteLossError, TrainResult, make_train_step, train
from lpd.training.weights import default_weights_dir, export_weights, load_pretrained

__all__ = [
    "PRESETS",
    "METHODS",
    "TrainResult",
    "NonFiniteLossError",
    "WeightsError",
    "WeightsMissing",
    "make_config",
    "build_model",
    "train",
    "load_checkpoint",
    "export_weights",
    "load_pretrained",
    "saved_config",
    "make_train_step",
    "default_weights_dir",
]
