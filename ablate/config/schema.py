"""The training config's typed schemas: one dataclass per trick family, plus the root ``Config``.

Values live in ``conf/`` YAML files that name their schema (``base_adam``...) in their defaults list,
so a typo or a wrong type fails when the config is composed, not at epoch 37.
:data:`GROUP_SCHEMAS` names each group's schemas as the ConfigStore registers them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

__all__ = ["GROUP_SCHEMAS", "Config"]


@dataclass
class DataConfig:
    name: str = MISSING
    root: str = "data"  # where torchvision files and the mnist1d cache live
    download: bool = False  # torchvision datasets only; nothing is fetched unless asked
    scaling: str = "standard"  # none | unit [0,1] | symmetric [-1,1] | standard (mean 0, std 1)
    val_fraction: float = 0.2  # of the training split
    test_fraction: float = 0.2  # of all examples, for datasets without an official test split
    data_seed: int = 0  # fixes the splits whatever the model seed
    path: str | None = None  # arrays: a .npz / .pt file; imagefolder: a folder of class folders
    num_classes: int | None = None  # the user's data: null = the largest label + 1
    function: str | None = None  # a registered dataset's module:function, for other processes


@dataclass
class ModelConfig:
    name: str = MISSING
    depth: int = 2  # hidden layers (mlp), conv blocks (cnn), residual blocks (resnet)
    width: int = 128  # units or channels
    activation: str = "relu"
    residual: bool = False  # skip connections around each block


@dataclass
class InitConfig:
    name: str = MISSING


@dataclass
class UniformInitConfig(InitConfig):
    bound: float = 0.05  # U(-bound, bound)


@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr: float = MISSING


@dataclass
class SGDConfig(OptimizerConfig):
    momentum: float = 0.0
    nesterov: bool = False


@dataclass
class AdagradConfig(OptimizerConfig):
    lr_decay: float = 0.0
    eps: float = 1e-10


@dataclass
class RMSpropConfig(OptimizerConfig):
    alpha: float = 0.99  # smoothing of the squared-gradient average
    eps: float = 1e-8
    momentum: float = 0.0


@dataclass
class AdamConfig(OptimizerConfig):
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


@dataclass
class NormalizedConfig(OptimizerConfig):
    momentum: float = 0.0  # heavy-ball momentum on the normalised directions


@dataclass
class ClipConfig:
    name: str = MISSING


@dataclass
class ThresholdClipConfig(ClipConfig):
    threshold: float = 1.0  # max global L2 norm (norm) or max |g| per element (value)


@dataclass
class NormClipConfig(ThresholdClipConfig):
    to: str = "threshold"  # above the threshold: rescale to it (threshold) or to norm 1 (unit)


@dataclass
class ScheduleConfig:
    name: str = MISSING


@dataclass
class ExponentialScheduleConfig(ScheduleConfig):
    gamma: float = 0.98  # lr multiplier per epoch


@dataclass
class StepScheduleConfig(ScheduleConfig):
    step_size: int = 10  # epochs between drops
    gamma: float = 0.5


@dataclass
class CosineScheduleConfig(ScheduleConfig):
    min_lr: float = 0.0  # reached at the last epoch


@dataclass
class AveragingConfig:
    name: str = MISSING


@dataclass
class EnsembleConfig(AveragingConfig):
    members: int = 3  # independently initialised models, predictions averaged


@dataclass
class EMAConfig(AveragingConfig):
    decay: float = 0.99  # per optimizer step


@dataclass
class SWAConfig(AveragingConfig):
    start: float = 0.75  # fraction of the epochs after which weights are averaged, once per epoch


@dataclass
class EarlyStoppingConfig:
    patience: int = 0  # epochs without improvement before stopping; 0 = off
    min_delta: float = 0.0  # smallest change that counts as an improvement
    monitor: str = "val_acc"


@dataclass
class TrainerConfig:
    epochs: int = 20
    batch_size: int = 128
    device: str = "auto"  # auto = CUDA when present, else CPU
    threads: int = 1  # torch threads per process on the CPU; parallelise with processes
    diagnostics: bool = True  # per-layer gradient norm and activation std, once per epoch
    eval_batch_size: int = 2048


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "ablate"
    run_name: str | None = None
    flush_every: float = 2.0  # seconds between MLflow writes of per-epoch metrics; 0 = every epoch


@dataclass
class Config:
    data: DataConfig = MISSING
    # Any, not ModelConfig: a user's model (model=custom, conf/model/<theirs>.yaml) carries fields of
    # its own. The built-in models' YAML still names base_model, so their fields stay typed.
    model: Any = MISSING
    init: InitConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    clip: ClipConfig = MISSING
    schedule: ScheduleConfig = MISSING
    averaging: AveragingConfig = MISSING
    norm: str = "none"  # none | batch | layer after the weights, before the activation | weight (reparam.)
    dropout: float = 0.0  # drop probability after each hidden activation; 0 = off
    weight_decay: float = 0.0  # L2 on weight matrices / kernels (not biases or norm gains); 0 = off
    l1: float = 0.0  # L1 penalty on the same weights, added to the loss; 0 = off
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = 0  # drives init, data order and dropout


GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "data": {"base_data": DataConfig},
    "model": {"base_model": ModelConfig},
    "init": {"base_init": InitConfig, "base_uniform": UniformInitConfig},
    "optimizer": {
        "base_sgd": SGDConfig,
        "base_adagrad": AdagradConfig,
        "base_rmsprop": RMSpropConfig,
        "base_adam": AdamConfig,
        "base_normalized": NormalizedConfig,
    },
    "clip": {
        "base_clip": ClipConfig,
        "base_threshold": ThresholdClipConfig,
        "base_norm_clip": NormClipConfig,
    },
    "schedule": {
        "base_schedule": ScheduleConfig,
        "base_exponential": ExponentialScheduleConfig,
        "base_step": StepScheduleConfig,
        "base_cosine": CosineScheduleConfig,
    },
    "averaging": {
        "base_averaging": AveragingConfig,
        "base_ensemble": EnsembleConfig,
        "base_ema": EMAConfig,
        "base_swa": SWAConfig,
    },
}
