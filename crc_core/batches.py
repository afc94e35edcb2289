"""Training batches: the decoded (or streamed) images of one split, and each epoch's order.

:class:`Batches` holds one split's images decoded once into a uint8 tensor on the training device
(or streams them from disk with DataLoader workers when they would not fit). An epoch's order is a
seeded shuffle (:func:`epoch_order`, sharded between ``torchrun`` ranks) or, with balanced sampling,
a draw with replacement in which every class is equally likely (:func:`balanced_order`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterator

import numpy as np
import torch

from crc_core.data import TileDataset, TileTable, collate_skip, decode_all
from crc_core.distributed import DistInfo
from crc_core.jobs import Progress


class Batches:
    """Per-epoch batches of (uint8 images, labels) on the training device, cached or streamed."""

    def __init__(self, table: TileTable, indices: list[int], size: int, device: torch.device,
                 cache: str, workers: int,
                 transform: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.table, self.indices, self.size, self.device = table, indices, size, device
        self.transform = transform        # uint8 (N, H, W, 3) -> same, at decode time (stain)
        self.cache = cache
        self.workers = workers
        self.images: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.skipped: list[tuple[str, str]] = []

    def prepare(self) -> Generator[Progress, None, None]:
        if self.cache == "none" or not self.indices:
            return
        dev = self.device if self.cache == "gpu" else torch.device("cpu")
        decoded = yield from decode_all(self.table, self.indices, self.size, device=dev,
                                        transform=self.transform)
        self.images, self.labels = decoded.images, decoded.labels
        self.skipped = decoded.skipped
        self.indices = decoded.kept

    def __len__(self) -> int:
        return len(self.indices)

    def labels_list(self) -> list[int]:
        return [self.table.samples[i].label for i in self.indices]

    def iterate(self, order: list[int], batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches over positions ``order`` (into ``self.indices``); a final batch of 1 is dropped
        in training by the caller."""
        if self.images is not None:
            assert self.labels is not None
            # One upload of the epoch's order (a pageable copy per batch would make the CPU
            # wait for the GPU to drain before every step).
            order_t = torch.tensor(order, dtype=torch.long).to(self.images.device,
                                                               non_blocking=True)
            for s in range(0, len(order), batch):
                pos = order_t[s:s + batch]
                x, y = self.images[pos], self.labels[pos]
                yield (x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True))
            return
        ds = TileDataset(self.table, self.indices, self.size, self.transform)
        loader = torch.utils.data.DataLoader(
            ds, batch_size=batch, sampler=order, num_workers=self.workers,
            collate_fn=collate_skip, pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if self.workers > 0 else None)
        for x, y, bad in loader:
            for j in bad.tolist():
                self.skipped.append((str(self.table.samples[self.indices[j]].path), "unreadable"))
            if x.shape[0]:
                yield (x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True))


def class_weights(labels: list[int], n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights ``n / (K * n_c)`` over the K classes present (absent: 0).

    A balanced set gets all ones; the weighted cross-entropy then gives each class the same total
    say in the loss, whatever its share of the images.
    """
    counts = torch.bincount(torch.tensor(labels, dtype=torch.long), minlength=n_classes).double()
    present = int((counts > 0).sum())
    w = torch.zeros(n_classes, dtype=torch.float64)
    nz = counts > 0
    w[nz] = counts.sum() / (present * counts[nz])
    return w.float()


def balanced_order(labels: list[int], info: DistInfo, seed: int, epoch: int) -> list[int]:
    """This rank's share of one epoch drawn with replacement, each class equally likely.

    The epoch keeps the dataset's length; every rank draws the same global sequence (same seed)
    and takes every ``world``-th position, so ranks see disjoint draws of equal length.
    """
    n = len(labels)
    per_class = class_weights(labels, max(labels) + 1 if labels else 1).double()
    w = per_class[torch.tensor(labels, dtype=torch.long)]
    gen = torch.Generator().manual_seed(seed * 7_919 + epoch)
    draw = torch.multinomial(w, n, replacement=True, generator=gen).tolist()
    per_rank = math.ceil(n / info.world)
    draw = (draw + draw[:per_rank * info.world - n])[:per_rank * info.world]
    return draw[info.rank::info.world]


def epoch_order(n: int, info: DistInfo, seed: int, epoch: int, shuffle: bool) -> list[int]:
    sampler = torch.utils.data.DistributedSampler(
        range(n), num_replicas=info.world, rank=info.rank, shuffle=shuffle, seed=seed,
        drop_last=False)
    sampler.set_epoch(epoch)
    return list(sampler)
