"""The trick menu's vocabulary: every option name a user can write, in one torch-free place.

The modules that implement the options (data, models, init, optim, train) and the config validation
import these, so a bad value is reported without paying for torch's import.
"""

from __future__ import annotations

__all__ = [
    "ACTIVATIONS", "AVERAGINGS", "CLIPS", "CLIP_TARGETS", "DATASETS", "INITS", "MODELS", "MONITORS", "NORMS",
    "OFF_VALUES", "OPTIMIZERS", "SCALINGS", "SCHEDULES", "USER_DATASETS", "USER_MODEL",
]

DATASETS = ("digits", "mnist1d", "mnist", "fashion_mnist", "cifar10")
SCALINGS = ("none", "unit", "symmetric", "standard")
MODELS = ("mlp", "cnn", "resnet", "inception")
# The user's own: a model factory named by import path (model.factory), datasets read from data.path.
# Models and datasets registered from Python or by entry points add options of their own names.
USER_MODEL = "custom"
USER_DATASETS = ("arrays", "imagefolder")
ACTIVATIONS = ("relu", "tanh", "sigmoid")
NORMS = ("none", "batch", "layer", "weight")
INITS = ("default", "uniform", "normal", "gaussian", "xavier", "kaiming")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "normalized")
CLIPS = ("none", "norm", "value")
CLIP_TARGETS = ("threshold", "unit")  # clip=norm: rescale to the threshold, or divide by the norm
SCHEDULES = ("constant", "exponential", "step", "cosine")
AVERAGINGS = ("none", "ensemble", "ema", "swa")
MONITORS = ("val_acc", "val_loss")

# The "off" value of each trick an ablation can switch by its config path alone.
OFF_VALUES: dict[str, object] = {
    "data.scaling": "none",
    "init": "default",
    "norm": "none",
    "dropout": 0.0,
    "weight_decay": 0.0,
    "l1": 0.0,
    "clip": "none",
    "clip.to": "threshold",
    "schedule": "constant",
    "early_stopping.patience": 0,
    "averaging": "none",
    "model.residual": False,
}
