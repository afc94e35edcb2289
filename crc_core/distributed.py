"""Several processes under ``torchrun``: the process group, sums across ranks, gradient sync.

``WORLD_SIZE`` > 1 (set by ``torchrun``) makes :func:`init_distributed` join a process group (nccl on
GPUs, gloo on the CPU); every rank then trains its shard inside DistributedDataParallel and only rank
0 writes files. With one process everything here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    created: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (nccl on CUDA, gloo on the CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local, False)
    cuda = device_name != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local % torch.cuda.device_count())
    dist.init_process_group("nccl" if cuda else "gloo")
    return DistInfo(rank, world, local, True)


def all_sum(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    if info.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64,
                     device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def barrier(info: DistInfo) -> None:
    if info.world > 1:
        dist.barrier()

class NoSync:
    """``model.no_sync()`` under DDP while gradients are accumulated, else nothing."""

    def __init__(self, model: nn.Module, active: bool) -> None:
        self.cm = model.no_sync() if active and hasattr(model, "no_sync") else None

    def __enter__(self) -> None:
        if self.cm is not None:
            self.cm.__enter__()

    def __exit__(self, *a: Any) -> None:
        if self.cm is not None:
            self.cm.__exit__(*a)
