"""Training data: decoding tile tables into tensor caches, streaming, and batch augmentation.

Tables (what images, which labels, which groups) are read by :mod:`crc_core.tables` and split by
:mod:`crc_core.splits`; both are re-exported here. Images are decoded once, through the one
preprocessing path of :mod:`crc_core.preprocess`, into a ``uint8`` tensor ``(N, 3, S, S)`` (on the
GPU when it fits); augmentation (:class:`Augment`: flips, 90-degree rotations, colour and HED stain
jitter) runs batch-wise on whatever device the batch is on. Unreadable images are skipped with a
warning and counted.
"""

from __future__ import annotations

import math
import os
from collections.abc import Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from crc_core.errors import ConfigError
from crc_core.jobs import Progress
from crc_core.preprocess import decode_image
from crc_core.splits import Split, split_by_group
from crc_core.tables import (
    IMAGE_SUFFIXES,
    Sample,
    TileTable,
    load_table,
    parse_classes,
    parse_map,
)

__all__ = [
    "IMAGE_SUFFIXES", "Augment", "DecodedSet", "Sample", "Split", "TileDataset", "TileTable",
    "cache_bytes", "choose_cache", "collate_skip", "decode_all", "decode_image", "hed_jitter",
    "load_table", "normalize", "parse_classes", "parse_map", "split_by_group",
]


@dataclass
class DecodedSet:
    """Images decoded into one uint8 tensor; ``kept`` maps rows back to table indices."""

    images: torch.Tensor           # (N, 3, S, S) uint8
    labels: torch.Tensor           # (N,) int64
    kept: list[int]                # table indices of the rows
    skipped: list[tuple[str, str]]  # (path, reason)


def decode_all(table: TileTable, indices: Sequence[int], size: int, workers: int = 0,
               device: str | torch.device = "cpu") -> Generator[Progress, None, DecodedSet]:
    """Decode ``indices`` of ``table`` once into a uint8 tensor (a job generator).

    Unreadable images are skipped (listed in ``skipped``), never fatal.
    """
    n = len(indices)
    images = torch.empty((n, 3, size, size), dtype=torch.uint8)
    ok = np.zeros(n, dtype=bool)
    skipped: list[tuple[str, str]] = []
    threads = max(1, workers or min(8, os.cpu_count() or 1))

    def one(j: int) -> tuple[int, str | None]:
        path = table.samples[indices[j]].path
        try:
            images[j] = torch.from_numpy(decode_image(path, size))
            return j, None
        except FileNotFoundError:
            return j, "file not found"
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            return j, f"unreadable image ({type(exc).__name__})"

    step = max(1, n // 50)
    with ThreadPoolExecutor(threads) as pool:
        for done, (j, err) in enumerate(pool.map(one, range(n)), 1):
            if err is None:
                ok[j] = True
            else:
                skipped.append((str(table.samples[indices[j]].path), err))
            if done % step == 0 or done == n:
                yield Progress(done, n, "decoding images")
    keep_j = np.flatnonzero(ok)
    kept = [indices[j] for j in keep_j]
    imgs = images[torch.from_numpy(keep_j)] if len(keep_j) < n else images
    labels = torch.tensor([table.samples[i].label for i in kept], dtype=torch.int64)
    return DecodedSet(imgs.to(device), labels.to(device), kept, skipped)


class TileDataset(torch.utils.data.Dataset):
    """Streaming dataset (decoded per item, for DataLoader workers).

    Items are ``(uint8 (3, S, S), label, index)``.

    Unreadable images yield a label of -1 and are dropped by :func:`collate_skip`.
    """

    def __init__(self, table: TileTable, indices: Sequence[int], size: int) -> None:
        self.table = table
        self.indices = list(indices)
        self.size = size

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, int, int]:
        s = self.table.samples[self.indices[j]]
        try:
            return torch.from_numpy(decode_image(s.path, self.size)), s.label, j
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return torch.zeros((3, self.size, self.size), dtype=torch.uint8), -1, j


def collate_skip(batch: list[tuple[torch.Tensor, int, int]]
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack a batch, dropping unreadable items (label -1)."""
    good = [b for b in batch if b[1] >= 0]
    bad = [b[2] for b in batch if b[1] < 0]
    if not good:
        return (torch.empty((0, 3, 1, 1), dtype=torch.uint8), torch.empty(0, dtype=torch.int64),
                torch.tensor(bad, dtype=torch.int64))
    return (torch.stack([b[0] for b in good]), torch.tensor([b[1] for b in good]),
            torch.tensor(bad, dtype=torch.int64))


def cache_bytes(n: int, size: int) -> int:
    return n * 3 * size * size


def choose_cache(n: int, size: int, device: torch.device, mode: str = "auto") -> str:
    """Where decoded images live: ``"gpu"``, ``"cpu"`` or ``"none"`` (stream from disk)."""
    if mode not in ("auto", "gpu", "cpu", "none"):
        raise ConfigError(f"cache mode {mode!r}: choose auto, gpu, cpu or none")
    need = cache_bytes(n, size)
    if mode != "auto":
        if mode == "gpu" and device.type != "cuda":
            raise ConfigError("--cache gpu needs a CUDA device")
        return mode
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        if need < 0.4 * free:
            return "gpu"
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        avail = 8 << 30
    return "cpu" if need < min(0.3 * avail, 32 << 30) else "none"


# ----------------------------------------------------------------------------- augmentation
# skimage.color's rgb<->hed matrices (Ruifrok & Johnston).
_RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED[2] = torch.linalg.cross(_RGB_FROM_HED[0], _RGB_FROM_HED[1])
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)


@dataclass
class Augment:
    """Batch augmentation on float ``(N, 3, H, W)`` images in [0, 1], on any device.

    Parameters
    ----------
    flip
        Random horizontal and vertical flips.
    rot90
        Random multiples of 90 degrees (square images).
    color
        Brightness, contrast and saturation factors drawn from ``1 ± color`` (0 = off).
    hed
        Stain jitter: each HED channel scaled by ``1 ± hed`` and shifted by ``± hed / 2`` in optical
        density (Tellez et al. 2018; 0 = off).
    """

    flip: bool = True
    rot90: bool = True
    color: float = 0.1
    hed: float = 0.03

    def to_json(self) -> dict[str, Any]:
        return {"flip": self.flip, "rot90": self.rot90, "color": self.color, "hed": self.hed}

    @classmethod
    def recommended(cls) -> Augment:
        """The augmentation of the ``recommended`` training preset."""
        return cls(flip=True, rot90=True, color=0.1, hed=0.05)

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        n = x.shape[0]
        if n == 0:
            return x
        dev = x.device

        def u(*shape: int) -> torch.Tensor:
            return torch.rand(shape, generator=gen, device=gen.device if gen else dev).to(dev)

        if self.flip:
            x = torch.where((u(n) < 0.5).view(n, 1, 1, 1), x.flip(-1), x)
            x = torch.where((u(n) < 0.5).view(n, 1, 1, 1), x.flip(-2), x)
        if self.rot90 and x.shape[-1] == x.shape[-2]:
            k = (u(n) * 4).long().clamp_(max=3)
            out = x.clone()
            for r in (1, 2, 3):
                sel = (k == r).nonzero().flatten()
                if sel.numel():
                    out[sel] = torch.rot90(x[sel], r, dims=(-2, -1))
            x = out
        if self.hed > 0:
            a = 1 + (u(n, 3) * 2 - 1) * self.hed
            b = (u(n, 3) * 2 - 1) * self.hed / 2
            x = hed_jitter(x, a, b)
        if self.color > 0:
            c = self.color
            bright = (1 + (u(n) * 2 - 1) * c).view(n, 1, 1, 1)
            contrast = (1 + (u(n) * 2 - 1) * c).view(n, 1, 1, 1)
            sat = (1 + (u(n) * 2 - 1) * c).view(n, 1, 1, 1)
            x = x * bright
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * contrast + mean
            gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
            x = (x - gray) * sat + gray
            x = x.clamp(0, 1)
        return x


def hed_jitter(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Scale/shift the HED stain concentrations of ``x`` ((N,3,H,W) in [0,1]; (N,3) factors)."""
    log_adjust = math.log(1e-6)
    m_fwd = _HED_FROM_RGB.to(x.device, torch.float32)
    m_inv = _RGB_FROM_HED.to(x.device, torch.float32)
    xf = x.float().clamp(min=1e-6)
    od = torch.log(xf) / log_adjust                         # (N,3,H,W) optical density, >= 0
    stains = torch.einsum("nchw,cd->ndhw", od, m_fwd).clamp(min=0)
    stains = stains * scale.view(-1, 3, 1, 1) + shift.view(-1, 3, 1, 1)
    log_rgb = -(stains * -log_adjust)
    rgb = torch.exp(torch.einsum("ndhw,dc->nchw", log_rgb, m_inv))
    return rgb.clamp(0, 1).to(x.dtype)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel for ``(N, 3, H, W)`` float input in [0, 1]."""
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s
