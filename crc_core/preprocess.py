"""One preprocessing path for training, evaluation and prediction: decode, resample, normalise.

A model sees an image the same way wherever it comes from: a tile file read by ``crc train`` or
``crc evaluate``, or a window cut from a slide by ``crc predict``. Both end in :func:`resample`
(uint8 RGB ``(H, W, 3)`` to the network's input side) and :func:`to_float_input` (uint8 batch to the
normalised float tensor the network takes). Keeping one function for each step is what makes the
figures in an evaluation report hold for the class map on a slide: a tile scored by ``crc evaluate``
and the same pixels placed in a slide and scored by ``crc predict`` get the same probabilities (a test
checks it).

Stain normalisation, when a checkpoint has one, is applied to each image or window at its own
resolution, *before* resampling (``transform`` arguments): Macenko estimates from a shrunk image
mix stains (benchmarks/stain_undo.py: re-staining to the TCGA slide undone to 3.2 grey levels at
224 px, 14.2 after shrinking to 64 px).

Resampling. Downscaling averages the source pixels each output pixel covers (Pillow's ``BOX`` filter,
i.e. area averaging, exact for integer factors); upscaling interpolates bicubically. The earlier
training path decoded JPEG tiles with libjpeg's DCT scaling ("draft" mode) while prediction resized
windows bilinearly: the same model scored mAP 0.903 through one and 0.821 through the other on the same
tiles, so the shortcut is gone. Images that are not square are stretched to the square input (as
before); callers that know a physical scale resample to it first (see :mod:`crc_core.inference`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = [
    "RESAMPLING", "Transform", "decode_image", "decode_rgb", "decode_windows", "decode_windows_covering",
    "image_windows", "resample", "resample_by", "to_float_input", "window_coverage",
]

#: A uint8 ``(N, H, W, 3)`` -> same function (the checkpoint's stain normalisation).
Transform = Callable[[np.ndarray], np.ndarray]

#: What the report and checkpoints say about the resampling (plain text, stored in checkpoints).
RESAMPLING = "area-average down (Pillow BOX), bicubic up"


def resample(rgb: np.ndarray, size: int) -> np.ndarray:
    """``(size, size, 3)`` uint8: ``rgb`` ((H, W, 3) uint8) resampled to the network input side.

    Returns ``rgb`` itself when it already has that shape.
    """
    h, w = rgb.shape[:2]
    if (h, w) == (size, size):
        return rgb
    down = h >= size and w >= size
    filt = Image.Resampling.BOX if down else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((size, size), filt))


def decode_rgb(path: Path) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of an image file at its own resolution."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _at_own_resolution(rgb: np.ndarray, transform: Transform | None) -> np.ndarray:
    """``transform`` (the stain normalisation) on one image at its own resolution, before any
    resampling: per-image stain estimates from a shrunk image mix stains and are coarse."""
    return rgb if transform is None else transform(rgb[None])[0]


def decode_image(path: Path, size: int, transform: Transform | None = None) -> np.ndarray:
    """``(3, size, size)`` uint8 RGB of an image file: ``transform`` at the file's resolution, then
    :func:`resample` (no DCT shortcut)."""
    rgb = _at_own_resolution(decode_rgb(path), transform)
    return np.ascontiguousarray(resample(rgb, size).transpose(2, 0, 1))


def to_float_input(x: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                   channels_last: bool = True) -> torch.Tensor:
    """Normalised float input ``(N, 3, H, W)`` from a uint8 batch ``(N, 3, H, W)``.

    ``(x / 255 - mean) / std`` per channel, computed as one multiply-add on ``x``'s device.
    """
    scale = 1.0 / (255.0 * torch.tensor(std, dtype=torch.float32, device=x.device))
    shift = torch.tensor(mean, dtype=torch.float32, device=x.device) / torch.tensor(
        std, dtype=torch.float32, device=x.device)
    xf = x.float() * scale.view(1, 3, 1, 1) - shift.view(1, 3, 1, 1)
    return xf.contiguous(memory_format=torch.channels_last) if channels_last else xf


def resample_by(rgb: np.ndarray, factor: float) -> np.ndarray:
    """``rgb`` scaled by ``factor`` (both axes; rounded to whole pixels, at least 1)."""
    h, w = rgb.shape[:2]
    nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
    if (nh, nw) == (h, w):
        return rgb
    filt = Image.Resampling.BOX if factor < 1 else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((nw, nh), filt))


def _starts(length: int, size: int) -> list[int]:
    """Window starts covering ``length`` with windows of ``size`` (the last one flush)."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, size))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def window_coverage(wh: tuple[int, int], factor: float, size: int) -> float:
    """Share of one ``size`` px network window an image of ``wh`` (width, height) px covers once
    scaled by ``factor`` (:func:`image_windows` mirrors the rest); 1 for an image of a window or
    more."""
    w, h = wh
    return min(1.0, round(w * factor) / size) * min(1.0, round(h * factor) / size)


def image_windows(rgb: np.ndarray, factor: float, size: int) -> np.ndarray:
    """``(k, size, size, 3)`` uint8 network inputs of one image at the model's scale.

    The image is scaled by ``factor`` (its µm/px over the network input's µm/px); an image of
    exactly one window (the usual tile) becomes that window; a larger one is cut into a grid of
    windows covering it (the last row and column flush), whose probabilities the caller averages;
    a smaller one is mirrored at its edges up to one window. A square tile of the trained patch
    size goes through exactly the :func:`resample` a slide window goes through.
    """
    h, w = rgb.shape[:2]
    if (round(h * factor), round(w * factor)) == (size, size):
        return resample(rgb, size)[None]
    img = resample_by(rgb, factor)
    h, w = img.shape[:2]
    if h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        img = np.pad(img, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)),
                     mode="symmetric" if min(h, w) > 1 else "edge")
        h, w = img.shape[:2]
    return np.stack([img[y:y + size, x:x + size] for y in _starts(h, size)
                     for x in _starts(w, size)])


def decode_windows(path: Path, factor: float, size: int,
                   transform: Transform | None = None) -> np.ndarray:
    """:func:`image_windows` of an image file, ``transform`` applied at the file's resolution."""
    return decode_windows_covering(path, factor, size, transform)[0]


def decode_windows_covering(path: Path, factor: float, size: int,
                            transform: Transform | None = None) -> tuple[np.ndarray, float]:
    """:func:`decode_windows` and the share of one window the image covers
    (:func:`window_coverage`), from the one decode."""
    rgb = decode_rgb(path)
    return (image_windows(_at_own_resolution(rgb, transform), factor, size),
            window_coverage((rgb.shape[1], rgb.shape[0]), factor, size))
