"""Training options: the presets, :class:`TrainConfig`, its validation, the rate schedule and the
optimizer each option names."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

from crc_core.data import Augment
from crc_core.errors import ConfigError
from crc_core.models import get_spec
from crc_core.stain import METHODS as STAIN_METHODS

NO_AUGMENT: dict[str, Any] = {"flip": False, "rot90": False, "color": 0.0, "hed": 0.0}

PRESETS: dict[str, dict[str, Any]] = {
    # Kim, Koh, Lee 2021, section 3.2, exactly: batch 32, 200 epochs, lr 1e-3 lowered tenfold
    # after epochs 80, 120, 160 and 180; Adam (ResNet50, DenseNet121), RMSprop with label
    # smoothing (InceptionV3); no augmentation, no class balancing, best.pt by validation
    # accuracy; the network sees the dataset's patches (400 px in the study) at their own size.
    "paper": {"epochs": 200, "batch_size": 32, "lr": 1e-3, "milestones": [80, 120, 160, 180],
              "gamma": 0.1, "schedule": "step", "augment": NO_AUGMENT, "balance": "none",
              "best_metric": "acc"},
    # The strongest recipe measured on the CPU (benchmarks/RESULTS.md, "recommended preset"):
    # balanced sampling when the largest class has >= 3x the smallest's images, best.pt by
    # validation balanced accuracy, a cosine-decaying rate, flips, rotations, colour, stain and
    # scale augmentation.
    "recommended": {"epochs": 30, "batch_size": 32, "lr": 1e-3, "milestones": [],
                    "gamma": 0.1, "schedule": "cosine", "balance": "auto",
                    "best_metric": "balanced_acc", "optimizer": "adamw", "weight_decay": 0.01,
                    "augment": Augment.recommended().to_json()},
    # A few epochs at a constant rate: for trying things.
    "quick": {"epochs": 5, "batch_size": 16, "lr": 1e-3, "milestones": [], "gamma": 0.1,
              "schedule": "step"},
}
DEFAULT_PRESET = "recommended"
#: One line per preset for help texts and tooltips.
PRESET_HELP: dict[str, str] = {
    "recommended": "the strongest recipe measured on the CPU: 30 epochs, AdamW with a cosine "
                   "rate, balanced sampling when classes are >= 3x apart, best.pt by validation "
                   "balanced accuracy, flips/rotations/colour/stain jitter and zoom 0.6-2x at "
                   "twice the input resolution",
    "paper": "the study exactly: 200 epochs, batch 32, lr 1e-3 lowered tenfold after epochs 80, "
             "120, 160, 180, no augmentation, no balancing, best.pt by validation accuracy",
    "quick": "5 epochs, batch 16, constant rate: for trying things",
}
#: Balanced sampling under ``balance="auto"`` when the largest class has this many times the
#: images of the smallest.
AUTO_BALANCE_RATIO = 3.0

BALANCE_MODES = ("auto", "none", "loss", "sampler")
SCHEDULES = ("step", "cosine")
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
BEST_METRICS = ("acc", "balanced_acc")


@dataclass
class TrainConfig:
    """Every training option; presets fill the schedule, any field can be overridden."""

    arch: str = "resnet50"
    preset: str = "quick"
    epochs: int = 5
    batch_size: int = 16
    lr: float = 1e-3
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    schedule: str = "step"            # step (milestones x gamma) | cosine (to 0 at the last epoch)
    optimizer: str = "adam"           # adam | adamw | rmsprop | sgd
    label_smoothing: float = 0.0
    aux_weight: float = 0.4           # InceptionV3 auxiliary loss weight (torchvision's reference)
    weight_decay: float = 0.0
    image_size: int | None = None     # None: the dataset's patch size, else the model's native size
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    weights: str | None = None        # None | imagenet | path
    init: str | None = None           # fine-tuning from this checkpoint (crc_core.finetune)
    seed: int = 0                     # the model side: initialisation, image order, augmentation
    split_seed: int | None = None     # the data side (split, stain reference); None: ``seed``
    val_fraction: float = 0.2
    test_fraction: float = 0.0        # groups kept out of training and of model selection
    workers: int = -1                 # DataLoader workers when streaming; -1 = automatic
    compile: bool = False
    cache: str = "auto"               # auto | gpu | cpu | none
    amp: bool = True                  # bf16 autocast on CUDA
    half_checkpoint: bool = False     # best.pt weights in float16 (compact release checkpoints)
    # Class imbalance: "loss" weighs each class by n / (K * n_c) in the cross-entropy; "sampler"
    # draws each epoch's images with replacement, every class equally likely. "none" = the paper;
    # "auto" = "sampler" when the largest class has >= AUTO_BALANCE_RATIO x the smallest's images.
    balance: str = "none"
    mpp: float | None = None          # µm/px of tiles whose dataset does not state it (--mpp)
    stain_norm: str = "none"          # none | macenko | reinhard (crc_core.stain), fitted on
    stain_tiles: int = 64             # up to this many training tiles (seeded)
    stain_from: str | None = None     # checkpoint whose fitted normaliser is used, not refitted
    best_metric: str = "acc"          # acc | balanced_acc (mean per-class recall) picks best.pt
    save_every: int = 1               # last.pt every N epochs (and after the last); best.pt always
    # Exponential moving average of the weights (decay per optimizer step; 0 = off): validation,
    # best.pt and the report use the averaged weights, last.pt keeps both for resume.
    ema: float = 0.0
    augment: dict[str, Any] = field(default_factory=lambda: Augment().to_json())
    # image/label/group/split columns, classes, map, source
    data: dict[str, Any] = field(default_factory=dict)
    # What the run decided and the user should know (validation, balance auto): config.json.
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def make_config(arch: str = "resnet50", preset: str = "quick", **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` from a preset; ``overrides`` with value ``None`` are ignored.

    The optimizer and label smoothing follow the paper per architecture unless overridden.
    """
    get_spec(arch)
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values: dict[str, Any] = {"optimizer": "rmsprop" if arch == "inception_v3" else "adam",
                              "label_smoothing": 0.1 if arch == "inception_v3" else 0.0}
    values.update(json.loads(json.dumps(PRESETS[preset])))
    values.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in fields(TrainConfig)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    cfg = TrainConfig(arch=arch, preset=preset, **values)
    validate_config(cfg)
    return cfg


def validate_config(cfg: TrainConfig) -> None:
    """Raise :class:`ConfigError` naming the first option out of range."""
    get_spec(cfg.arch)
    if not isinstance(cfg.epochs, int) or cfg.epochs < 1:
        raise ConfigError(f"--epochs {cfg.epochs} must be a positive integer")
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 2:
        raise ConfigError(f"--batch-size {cfg.batch_size} must be at least 2 (batch norm)")
    if not (isinstance(cfg.lr, int | float) and 0 < cfg.lr < 10 and math.isfinite(cfg.lr)):
        raise ConfigError(f"--lr {cfg.lr} must be a positive number below 10")
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer {cfg.optimizer!r}: choose {', '.join(OPTIMIZERS)}")
    if cfg.schedule not in SCHEDULES:
        raise ConfigError(f"schedule {cfg.schedule!r}: choose {', '.join(SCHEDULES)}")
    if cfg.mpp is not None and not (isinstance(cfg.mpp, int | float) and 0 < cfg.mpp < 1000):
        raise ConfigError(f"--mpp {cfg.mpp}: give the tiles' µm per pixel, e.g. 0.5")
    if cfg.augment:
        Augment.from_json(cfg.augment)
    if cfg.stain_norm not in STAIN_METHODS:
        raise ConfigError(f"--stain-norm {cfg.stain_norm!r}: choose {', '.join(STAIN_METHODS)}")
    if not isinstance(cfg.stain_tiles, int) or cfg.stain_tiles < 1:
        raise ConfigError(f"--stain-tiles {cfg.stain_tiles} must be a positive number of tiles")
    if not 0 <= cfg.label_smoothing < 1:
        raise ConfigError(f"label smoothing {cfg.label_smoothing} must be in [0, 1)")
    spec = get_spec(cfg.arch)
    if cfg.image_size is not None and (not isinstance(cfg.image_size, int)
                                       or cfg.image_size < spec.min_input_size
                                       or cfg.image_size > 2048):
        raise ConfigError(f"--image-size {cfg.image_size}: {cfg.arch} accepts "
                          f"{spec.min_input_size} to 2048 pixels")
    if not 0 <= cfg.val_fraction < 1:
        raise ConfigError(f"--val-fraction {cfg.val_fraction} must be in [0, 1)")
    if not 0 <= cfg.test_fraction < 1 or cfg.val_fraction + cfg.test_fraction >= 1:
        raise ConfigError(f"--test-fraction {cfg.test_fraction} must be in [0, 1) and leave "
                          f"groups for training beside --val-fraction {cfg.val_fraction}")
    if not (isinstance(cfg.ema, int | float) and 0.0 <= cfg.ema < 1.0):
        raise ConfigError(f"--ema {cfg.ema}: give a decay in [0, 1), e.g. 0.99 (0 = off)")
    if not isinstance(cfg.save_every, int) or cfg.save_every < 1:
        raise ConfigError(f"--save-every {cfg.save_every} must be a positive number of epochs")
    if cfg.balance not in BALANCE_MODES:
        raise ConfigError(f"--balance {cfg.balance!r}: choose {', '.join(BALANCE_MODES)}")
    if cfg.best_metric not in BEST_METRICS:
        raise ConfigError(f"--best-metric {cfg.best_metric!r}: choose {', '.join(BEST_METRICS)}")
    if sorted(cfg.milestones) != list(cfg.milestones) or any(m < 1 for m in cfg.milestones):
        raise ConfigError(f"milestones {cfg.milestones} must be increasing positive epochs")


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate of (0-based) ``epoch``.

    ``step``: ``lr * gamma ** (milestones passed)``; with the paper's milestones 80/120/160/180,
    epochs 81-120 (1-based) use 1e-4, and so on. ``cosine``: ``lr * (1 + cos(pi * epoch /
    epochs)) / 2``, from ``lr`` in the first epoch down towards 0 in the last.
    """
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, cfg.epochs)))
    return cfg.lr * cfg.gamma ** sum(1 for m in cfg.milestones if epoch >= m)


def make_optimizer(cfg: TrainConfig, params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        # torchvision's reference settings for RMSprop (TensorFlow-like eps and decay).
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=0.9, eps=0.0316, momentum=0.9,
                                   weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)

