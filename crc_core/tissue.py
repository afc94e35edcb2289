"""Tissue mask, pen-mark mask and gland fraction for H&E images (scikit-image; Qt-free).

Units: every function takes an RGB ``uint8`` array of shape ``(h, w, 3)`` (a whole-slide thumbnail
or a patch) and returns results in the pixel frame of that array. The tissue mask uses fixed colour
rules (brightness, saturation, ink hues) that do not depend on the image size, so the same call
serves a 512 px thumbnail and a 400 px patch; morphological clean-up sizes are fractions of the
image area.

The gland estimator (:func:`gland_mask`, :func:`gland_fraction`, :func:`gland_fractions`) is a small
U-Net trained on the EBHI-Seg gland masks (``crc_core/gland_model.py``, model card
``crc_core/weights/MODEL_CARD.md``). It expects H&E at ``MODEL_MPP`` = 2.6 µm/px and resamples any
input from its own mpp (``None`` = the EBHI tiles' nominal 1.3 µm/px). torch is imported and the
weights are loaded only on the first gland call, once, under a lock; all functions are thread-safe.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from skimage import morphology

__all__ = [
    "background_mask",
    "gland_fraction",
    "gland_fractions",
    "gland_mask",
    "gland_masks",
    "ink_pixels",
    "pen_mask",
    "tissue_fraction",
    "tissue_mask",
]


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an RGB image of shape (h, w, 3), got shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and float(arr.max()) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return arr


def background_mask(
    rgb: np.ndarray, *, max_saturation: float = 0.07, min_value: float = 0.80
) -> np.ndarray:
    """Glass background: bright and nearly grey pixels (also pure white fill outside the slide).

    Parameters
    ----------
    rgb : (h, w, 3) uint8 array
    max_saturation : float
        HSV saturation at or below which a bright pixel is background.
    min_value : float
        HSV value (max channel / 255) at or above which a grey pixel is background.

    Returns
    -------
    (h, w) bool array, True on background.
    """
    _, _, _, mx, mn = _channels(_check_rgb(rgb))
    return _background(mx, mn, max_saturation, min_value)


def _channels(arr: np.ndarray) -> tuple[np.ndarray, ...]:
    """r, g, b as int16 and their per-pixel max and min (elementwise ufuncs: fast on big images)."""
    r, g, b = (arr[..., i].astype(np.int16) for i in range(3))
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    return r, g, b, mx, mn


def _background(
    mx: np.ndarray, mn: np.ndarray, max_saturation: float, min_value: float
) -> np.ndarray:
    # HSV saturation = (max - min) / max, value = max / 255 (as skimage.color.rgb2hsv)
    bright = mx >= min_value * 255.0
    return bright & ((mx - mn) <= max_saturation * mx)


def pen_mask(rgb: np.ndarray, *, dilate_fraction: float = 0.004) -> np.ndarray:
    """Pen and marking-dye ink: strongly saturated blue, green or black pixels.

    H&E stains are purple to pink: red is at least about as strong as green. Blue and green inks
    have green above red; black ink is dark in all three channels. The mask is grown by a small disk
    (``dilate_fraction`` of the image's short side) to take the ink's faint rim.

    Returns
    -------
    (h, w) bool array, True on ink.
    """
    return _pen(*_channels(_check_rgb(rgb)), dilate_fraction=dilate_fraction)


def _pen(
    r: np.ndarray,
    g: np.ndarray,
    b: np.ndarray,
    mx: np.ndarray,
    mn: np.ndarray,
    dilate_fraction: float = 0.004,
) -> np.ndarray:
    ink = _ink(r, g, b, mx, mn)
    # Drop isolated pixels (JPEG noise); keep real strokes.
    min_px = max(4, int(ink.size * 2e-5))
    ink = morphology.remove_small_objects(ink, max_size=min_px)
    radius = int(round(min(ink.shape) * dilate_fraction))
    if radius >= 1 and ink.any():
        ink = morphology.dilation(ink, morphology.disk(radius))
    return ink


def _ink(r: np.ndarray, g: np.ndarray, b: np.ndarray, mx: np.ndarray, mn: np.ndarray
         ) -> np.ndarray:
    sat = (mx - mn) / np.maximum(mx, 1).astype(np.float32)
    blue = (b > r + 60) & (g > r + 5) & (sat > 0.40)
    green = (g > r + 30) & (g >= b - 20) & (sat > 0.30)
    black = (mx < 50) & (mx - mn < 30)
    return blue | green | black


def ink_pixels(rgb: np.ndarray) -> np.ndarray:
    """The pixel rule of :func:`pen_mask` alone (no clean-up, no dilation), for any leading shape.

    ``rgb`` is ``(..., 3)`` uint8 (one image or a batch ``(N, H, W, 3)``); returns ``(...)`` bool.
    Cheap and vectorised, for batch code that needs to know which pixels are ink.
    """
    arr = np.asarray(rgb)[..., :3]
    r, g, b = (arr[..., i].astype(np.int16) for i in range(3))
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    return _ink(r, g, b, mx, mn)


def tissue_mask(
    rgb: np.ndarray,
    *,
    max_saturation: float = 0.07,
    min_value: float = 0.80,
    remove_pen: bool = True,
    min_object_fraction: float = 0.0005,
    max_hole_fraction: float = 0.01,
) -> np.ndarray:
    """Tissue pixels of an RGB thumbnail or patch: not background, not pen ink.

    Parameters
    ----------
    rgb : (h, w, 3) uint8 array
        A slide thumbnail at any downsample, or a patch.
    max_saturation, min_value : float
        Background rule, see :func:`background_mask`.
    remove_pen : bool
        Remove blue/green/black ink (:func:`pen_mask`).
    min_object_fraction : float
        Tissue specks smaller than this fraction of the image area are dropped.
    max_hole_fraction : float
        Holes (lumen, small tears) smaller than this fraction of the image area are filled.

    Returns
    -------
    (h, w) bool array, True on tissue.
    """
    ch = _channels(_check_rgb(rgb))
    mask = ~_background(ch[3], ch[4], max_saturation, min_value)
    ink = _pen(*ch) if remove_pen else None
    if ink is not None:
        mask &= ~ink
    area = mask.size
    min_obj = int(area * min_object_fraction)
    if min_obj >= 2:
        mask = morphology.remove_small_objects(mask, max_size=min_obj)
    max_hole = int(area * max_hole_fraction)
    if max_hole >= 2:
        mask = morphology.remove_small_holes(mask, max_size=max_hole)
        if ink is not None:
            mask &= ~ink  # never fill ink back in
    return mask


def tissue_fraction(rgb: np.ndarray, **kwargs: object) -> float:
    """Fraction of the image covered by tissue (see :func:`tissue_mask`), in [0, 1]."""
    mask = tissue_mask(rgb, **kwargs)  # type: ignore[arg-type]
    return float(mask.mean()) if mask.size else 0.0


# --- gland estimator -------------------------------------------------------------------------


def gland_mask(rgb: np.ndarray, mpp: float | None = None) -> np.ndarray:
    """Gland pixels (epithelium and lumen) of an H&E patch.

    Parameters
    ----------
    rgb : (h, w, 3) uint8 array
    mpp : float or None
        µm per pixel of ``rgb``. The model works at a fixed scale
        (``crc_core.gland_model.MODEL_MPP``); the patch is resampled to it and the mask back to
        ``(h, w)``. ``None`` means the patch is at the EBHI tiles' scale
        (``crc_core.gland_model.EBHI_MPP``).

    Returns
    -------
    (h, w) bool array.
    """
    from crc_core import gland_model

    return gland_model.predict_masks([_check_rgb(rgb)], mpp=mpp)[0]


def gland_masks(
    images: Sequence[np.ndarray] | np.ndarray, mpp: float | None = None, batch_size: int = 16
) -> list[np.ndarray]:
    """Gland masks of many patches at once (batched inference; see :func:`gland_mask`).

    Returns
    -------
    list of (h, w) bool arrays, one per image, each at its image's size.
    """
    from crc_core import gland_model

    imgs = [_check_rgb(im) for im in images]
    if not imgs:
        return []
    return gland_model.predict_masks(imgs, mpp=mpp, batch_size=batch_size)


def gland_fraction(rgb: np.ndarray, mpp: float | None = None) -> float:
    """Fraction of the patch covered by glands, in [0, 1] (see :func:`gland_mask`)."""
    return float(gland_mask(rgb, mpp=mpp).mean())


def gland_fractions(
    images: Sequence[np.ndarray] | np.ndarray, mpp: float | None = None, batch_size: int = 16
) -> np.ndarray:
    """Gland fractions of many patches at once (batched inference).

    Parameters
    ----------
    images : sequence of (h, w, 3) uint8 arrays, or an (n, h, w, 3) array
    mpp : float or None
        µm per pixel of every image (see :func:`gland_mask`).
    batch_size : int
        Images per forward pass (same-size images are batched together).

    Returns
    -------
    (n,) float64 array in [0, 1].
    """
    masks = gland_masks(images, mpp=mpp, batch_size=batch_size)
    return np.array([float(m.mean()) for m in masks], dtype=np.float64)
