"""Tissue mask, pen-mark mask and gland fraction for H&E images (scikit-image; Qt-free).

Units: every function takes an RGB ``uint8`` array of shape ``(h, w, 3)`` (a whole-slide thumbnail or
a patch) and returns results in the pixel frame of that array. The tissue mask uses fixed colour rules
(brightness, saturation, ink hues) that do not depend on the image size, so the same call serves a
512 px thumbnail and a 400 px patch; morphological clean-up sizes are fractions of the image area.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from skimage import morphology
from skimage.color import rgb2hsv

__all__ = [
    "background_mask",
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
    arr = _check_rgb(rgb)
    hsv = rgb2hsv(arr)
    return (hsv[..., 1] <= max_saturation) & (hsv[..., 2] >= min_value)


def pen_mask(rgb: np.ndarray, *, dilate_fraction: float = 0.004) -> np.ndarray:
    """Pen and marking-dye ink: strongly saturated blue, green or black pixels.

    H&E stains are purple to pink: red is at least about as strong as green. Blue and green inks have
    green above red; black ink is dark in all three channels. The mask is grown by a small disk
    (``dilate_fraction`` of the image's short side) to take the ink's faint rim.

    Returns
    -------
    (h, w) bool array, True on ink.
    """
    arr = _check_rgb(rgb).astype(np.int16)
    r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
    mx = arr.max(axis=2)
    mn = arr.min(axis=2)
    sat = (mx - mn) / np.maximum(mx, 1)
    blue = (b > r + 60) & (g > r + 5) & (sat > 0.40)
    green = (g > r + 30) & (g >= b - 20) & (sat > 0.30)
    black = (mx < 50) & (mx - mn < 30)
    ink = blue | green | black
    # Drop isolated pixels (JPEG noise); keep real strokes.
    min_px = max(4, int(ink.size * 2e-5))
    ink = morphology.remove_small_objects(ink, max_size=min_px)
    radius = int(round(min(ink.shape) * dilate_fraction))
    if radius >= 1 and ink.any():
        ink = morphology.dilation(ink, morphology.disk(radius))
    return ink


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
    arr = _check_rgb(rgb)
    mask = ~background_mask(arr, max_saturation=max_saturation, min_value=min_value)
    if remove_pen:
        mask &= ~pen_mask(arr)
    area = mask.size
    min_obj = int(area * min_object_fraction)
    if min_obj >= 2:
        mask = morphology.remove_small_objects(mask, max_size=min_obj)
    max_hole = int(area * max_hole_fraction)
    if max_hole >= 2:
        mask = morphology.remove_small_holes(mask, max_size=max_hole)
        if remove_pen:
            # Never fill ink back in.
            mask &= ~pen_mask(arr)
    return mask


def tissue_fraction(rgb: np.ndarray, **kwargs: object) -> float:
    """Fraction of the image covered by tissue (see :func:`tissue_mask`), in [0, 1]."""
    mask = tissue_mask(rgb, **kwargs)  # type: ignore[arg-type]
    return float(mask.mean()) if mask.size else 0.0
