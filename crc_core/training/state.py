"""The state one training run carries from phase to phase (:class:`TrainingRun`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crc_core.batches import Batches
from crc_core.data import TileTable
from crc_core.distributed import DistInfo
from crc_core.splits import Split
from crc_core.stain import StainNormalizer
from crc_core.training.config import TrainConfig


@dataclass
class TrainingRun:
    """The state one training run carries from phase to phase."""

    cfg: TrainConfig
    out: Path
    info: DistInfo
    device: torch.device
    warn: Callable[[str], None]
    table: TileTable
    split: Split
    size: int = 0
    cache: str = "none"
    train_b: Batches | None = None
    val_b: Batches | None = None
    model: nn.Module | None = None
    train_model: nn.Module | None = None
    ema: torch.optim.swa_utils.AveragedModel | None = None
    optimizer: torch.optim.Optimizer | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    start_epoch: int = 0
    best: tuple[float, float] = (-1.0, math.inf)
    best_epoch: int = 0
    best_val_acc: float | None = None
    micro: int = 2
    per_rank_batch: int = 2
    steps_per_epoch: int = 1
    loss_weight: torch.Tensor | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    stain: StainNormalizer | None = None

    @property
    def autocast(self) -> bool:
        return self.device.type == "cuda" and self.cfg.amp

    @property
    def has_val(self) -> bool:
        return self.val_b is not None and len(self.val_b) > 0

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated and released: the moving average when there is one."""
        assert self.model is not None
        return self.ema.module if self.ema is not None else self.model

