"""Small U-Net that segments colorectal glands (epithelium + lumen) in H&E patches; CPU inference.

Scale. The EBHI-Seg tiles the model is trained on are 224 x 224 px and labelled "400x total
magnification", but they are camera frames shrunk to 224 px: a normal colonic crypt (about
60-80 µm across) spans about 60-70 px and a lymphocyte nucleus (about 7 µm) about 5 px. Compared
with CMU-1 (Aperio, 0.499 µm/px, where the same nuclei span 12-15 px) the tiles are about 2.5-3
times coarser, so their nominal scale is taken as ``EBHI_MPP = 1.3`` µm/px (an estimate; the
release states no pixel size). The network runs at ``MODEL_MPP = 2.6`` µm/px (EBHI tiles halved to
112 px): glands stay 25-35 px across, enough to outline them, and inference stays cheap. Any input
is resampled from its own mpp (``None`` = ``EBHI_MPP``) to ``MODEL_MPP`` and the mask back to the
input size.

Weights: ``crc_core/weights/gland_unet.pt`` (float16 state dict + config, read with
``torch.load(weights_only=True)``), loaded on first use, once, under a lock; inference is
thread-safe (``torch.inference_mode``, no shared mutable state). Training:
``tools/train_gland_model.py``; model card: ``crc_core/weights/MODEL_CARD.md``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crc_core.errors import CheckpointError

EBHI_MPP = 1.3
"""Nominal µm/px of the EBHI-Seg 224 px tiles (estimated, see the module docstring)."""
MODEL_MPP = 2.6
"""µm/px at which the network sees its input."""
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_PATH = WEIGHTS_DIR / "gland_unet.pt"
META_PATH = WEIGHTS_DIR / "gland_unet.json"
FORMAT = "crc-gland-unet/1"
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)

_LOCK = threading.Lock()
_MODEL: GlandUNet | None = None


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class GlandUNet(nn.Module):
    """U-Net with ``depth`` poolings and ``base`` channels at full resolution; 1 logit per pixel.

    Input (n, 3, h, w) normalised RGB, h and w multiples of ``2**depth``; output (n, 1, h, w)
    logits.
    """

    def __init__(self, base: int = 16, depth: int = 3) -> None:
        super().__init__()
        self.base = base
        self.depth = depth
        self.threshold = 0.0  # logit above which a pixel is gland (chosen on validation cases)
        chans = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = 3
        for c in chans:
            self.down.append(_block(cin, c))
            cin = c
        self.up = nn.ModuleList()
        for i in range(depth - 1, -1, -1):
            self.up.append(_block(chans[i + 1] + chans[i], chans[i]))
        self.head = nn.Conv2d(chans[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, blk in enumerate(self.down):
            x = blk(x)
            if i < self.depth:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for blk in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = blk(torch.cat([x, skip], dim=1))
        return self.head(x)


def to_input(batch_uint8: torch.Tensor) -> torch.Tensor:
    """(n, h, w, 3) uint8 -> (n, 3, h, w) float32 normalised the way the model was trained."""
    x = batch_uint8.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def save_weights(model: GlandUNet, path: Path, meta: dict[str, Any]) -> None:
    """Write a float16 state dict + config (plain types) for ``torch.load(weights_only=True)``."""
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save(
        {
            "format": FORMAT,
            "base": model.base,
            "depth": model.depth,
            "threshold": float(model.threshold),
            "model_mpp": MODEL_MPP,
            "ebhi_mpp": EBHI_MPP,
            "mean": list(MEAN),
            "std": list(STD),
            "state_dict": state,
            "meta": json.loads(json.dumps(meta)),
        },
        path,
    )


def load_model(path: Path | None = None) -> GlandUNet:
    """Build the network from a weights file (default: the packaged one); eval mode, float32."""
    path = Path(path) if path is not None else WEIGHTS_PATH
    if not path.exists():
        raise CheckpointError(
            f"gland model weights not found: {path} (train them with tools/train_gland_model.py)"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise CheckpointError(f"cannot read gland model weights {path}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a gland model file (expected format {FORMAT})")
    model = GlandUNet(base=int(ckpt["base"]), depth=int(ckpt["depth"]))
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in ckpt["state_dict"].items()}
    model.load_state_dict(state)
    model.threshold = float(ckpt.get("threshold", 0.0))
    model.eval()
    return model


def get_model() -> GlandUNet:
    """The packaged model, loaded once (thread-safe)."""
    global _MODEL
    if _MODEL is None:
        with _LOCK:
            if _MODEL is None:
                _MODEL = load_model()
    return _MODEL


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    down = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=down)


def predict_logits(
    model: nn.Module, batch_uint8: np.ndarray | torch.Tensor, scale: float
) -> torch.Tensor:
    """Logits at the input size for a batch of same-size images.

    ``batch_uint8`` is (n, h, w, 3) uint8; the batch is resampled by ``scale`` (input mpp / model
    mpp), padded by reflection to a multiple of ``2**depth``, run, cropped, and the logits are
    resampled back to (h, w). Returns (n, h, w) float32.
    """
    t = torch.as_tensor(np.ascontiguousarray(batch_uint8))
    n, h, w, _ = t.shape
    x = to_input(t)
    sh, sw = max(8, round(h * scale)), max(8, round(w * scale))
    x = _resize(x, (sh, sw))
    m = 2 ** int(getattr(model, "depth", 3))
    ph, pw = (-sh) % m, (-sw) % m
    if ph or pw:
        mode = "reflect" if ph < sh and pw < sw else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    with torch.inference_mode():
        y = model(x)[:, :, :sh, :sw]
        y = _resize(y, (h, w))
    return y[:, 0]


def predict_masks(
    images: Sequence[np.ndarray],
    mpp: float | None = None,
    batch_size: int = 16,
    model: GlandUNet | None = None,
) -> list[np.ndarray]:
    """Boolean gland masks for RGB uint8 images (any sizes; same-size images are batched).

    Parameters
    ----------
    images : sequence of (h, w, 3) uint8 arrays
    mpp : float or None
        µm/px of the images; ``None`` means the EBHI scale (``EBHI_MPP``).
    batch_size : int
        Images per forward pass.
    model : GlandUNet or None
        The network to run (e.g. other weights, by :func:`load_model`); ``None``: the packaged one.
    """
    if mpp is not None and not (np.isfinite(mpp) and mpp > 0):
        raise ValueError(f"mpp must be a positive number of µm per pixel or None, got {mpp!r}")
    scale = (EBHI_MPP if mpp is None else float(mpp)) / MODEL_MPP
    model = get_model() if model is None else model
    out: list[np.ndarray | None] = [None] * len(images)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(tuple(im.shape[:2]), []).append(i)
    for idx in groups.values():
        for s in range(0, len(idx), max(1, batch_size)):
            chunk = idx[s : s + batch_size]
            logits = predict_logits(model, np.stack([images[i] for i in chunk]), scale)
            masks = (logits > model.threshold).numpy()
            for j, i in enumerate(chunk):
                out[i] = masks[j]
    return [m for m in out if m is not None]


# --- EBHI-Seg data and validation figures (training script, benchmark and tests share these) -----


def read_ebhi_labels(ebhi_dir: Path) -> list[dict[str, str]]:
    """Rows of ``labels.csv`` (image, gland_mask, ebhi_class, case_id) that have a gland mask."""
    import csv

    with open(Path(ebhi_dir) / "labels.csv", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r.get("gland_mask")]


def load_ebhi_tiles(
    ebhi_dir: Path, rows: Sequence[dict[str, str]]
) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, h, w, 3) uint8 and gland masks (n, h, w) bool for ``rows`` of ``labels.csv``."""
    from PIL import Image

    root = Path(ebhi_dir)
    imgs, masks = [], []
    for r in rows:
        with Image.open(root / r["image"]) as im:
            imgs.append(np.asarray(im.convert("RGB")))
        with Image.open(root / r["gland_mask"]) as m:
            masks.append(np.asarray(m.convert("L")) > 127)
    return np.stack(imgs), np.stack(masks)


def case_key(case_id: str) -> str:
    """The patient/case a tile belongs to: the 7-digit case number inside ``case_id``.

    ``labels.csv`` gives the number for most tiles, but for the ``GTDC...`` files its ``case_id`` is
    the whole file name (``GTDC2102188-2-400-003.png``); both map to ``2102188`` here.
    """
    import re

    if case_id.isdigit():
        return case_id
    m = re.search(r"(\d{7})", case_id)
    return m.group(1) if m else case_id


def held_out_cases(meta_path: Path | None = None) -> list[str]:
    """The case ids (as in ``labels.csv``) the model card lists as its test split."""
    meta = json.loads(Path(meta_path or META_PATH).read_text())
    return [str(c) for c in meta["split"]["test"]]


def held_out_rows(
    rows: Sequence[dict[str, str]], meta_path: Path | None = None
) -> list[dict[str, str]]:
    """Rows of the test split whose case (:func:`case_key`) never appears in train or validation."""
    meta = json.loads(Path(meta_path or META_PATH).read_text())
    test = {str(c) for c in meta["split"]["test"]}
    seen = {case_key(str(c)) for k in ("train", "val") for c in meta["split"][k]}
    return [
        r
        for r in rows
        if (r["case_id"] in test or case_key(r["case_id"]) in test)
        and case_key(r["case_id"]) not in seen
    ]


def gland_metrics(pred: Sequence[np.ndarray], true: Sequence[np.ndarray]) -> dict[str, float]:
    """Per-tile Dice (mean), Pearson r and MAE of gland fractions, balanced accuracy of ``>= 0.5``.

    A tile where both masks are empty counts as Dice 1. The balanced accuracy is the mean of the
    recalls of the two classes (fraction >= 0.5 and < 0.5); with one class absent it is that class's
    recall.
    """
    dices, fp, ft = [], [], []
    for p, t in zip(pred, true, strict=True):
        p = np.asarray(p, bool)
        t = np.asarray(t, bool)
        denom = p.sum() + t.sum()
        dices.append(1.0 if denom == 0 else 2.0 * np.logical_and(p, t).sum() / denom)
        fp.append(p.mean())
        ft.append(t.mean())
    fpa, fta = np.asarray(fp), np.asarray(ft)
    r = float(np.corrcoef(fpa, fta)[0, 1]) if fpa.std() > 0 and fta.std() > 0 else float("nan")
    yp, yt = fpa >= 0.5, fta >= 0.5
    recalls = [float((yp[yt == c] == c).mean()) for c in (True, False) if (yt == c).any()]
    return {
        "n_tiles": len(dices),
        "mean_dice": float(np.mean(dices)),
        "pearson_r": r,
        "mae": float(np.abs(fpa - fta).mean()),
        "balanced_accuracy": float(np.mean(recalls)),
        "n_true_ge_half": int(yt.sum()),
        "n_true_lt_half": int((~yt).sum()),
    }


def slide_tissue_windows(
    path: Path, size: int, level: int = 0, min_tissue: float = 0.5
) -> list[tuple[int, int, np.ndarray]]:
    """Non-overlapping ``size`` px windows of one slide level that are mostly tissue.

    The windows tile the level from its top-left corner (stride ``size``, incomplete windows at
    the right and bottom edges left out); a window is kept when
    :func:`crc_core.tissue.tissue_fraction` (on every 4th pixel) is at least ``min_tissue``.
    Returns ``(x, y, rgb)`` with ``x, y`` in level-0 pixels and ``rgb`` a (size, size, 3) uint8
    array. Shared by the training tool (negatives), the
    benchmark and the tests, so all three see the same windows.
    """
    import openslide

    from crc_core.tissue import tissue_fraction

    out = []
    with openslide.OpenSlide(str(path)) as slide:
        w, h = slide.level_dimensions[level]
        ds = slide.level_downsamples[level]
        for y in range(0, h - size + 1, size):
            for x in range(0, w - size + 1, size):
                x0, y0 = int(round(x * ds)), int(round(y * ds))
                rgb = np.asarray(slide.read_region((x0, y0), level, (size, size)).convert("RGB"))
                if tissue_fraction(rgb[::4, ::4]) >= min_tissue:
                    out.append((x0, y0, rgb))
    return out
