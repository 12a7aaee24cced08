"""Training of the learned methods: the loop, checkpoints and shipped weights.

The public names are those of `lpd.training.loop`: `make_config`, `train`,
`build_model`, `load_checkpoint`, `export_weights`, `load_pretrained`, ...
"""

from lpd.training.loop import (  # noqa: F401
    METHODS,
    PRESETS,
    NonFiniteLossError,
    TrainResult,
    WeightsError,
    __all__,  # noqa: F401
    build_model,
    default_weights_dir,
    export_weights,
    load_checkpoint,
    load_pretrained,
    make_config,
    make_train_step,
    saved_config,
    train,
)
