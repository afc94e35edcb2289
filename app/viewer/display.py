"""What the slide view reads out and how it shows the slide: magnification and brightness/contrast.

Magnification
-------------
A slide's *native* magnification is the objective power its scanner recorded (``objective_power``,
e.g. 20 for ``aperio.AppMag = 20``); when the file has none, it is estimated from the pixel size
with the usual equivalence 10 µm/px at 1× (0.25 µm/px ~ 40×, 0.5 µm/px ~ 20×), and the readout
says so with "≈". The view's magnification is the native one times its scale (screen px per
level-0 px); scale 1 is the scan's own resolution. With neither objective power nor pixel size the
magnification is unknown: the readout says so and shows the zoom in percent of the scan.

Brightness and contrast
-----------------------
:class:`DisplayAdjust` is a view-only change of the slide's pixels (annotations and prediction
layers are drawn unchanged over it): ``out = (in - 127.5) * contrast + 127.5 + brightness * 255``,
clipped to 0..255, applied as a 256-entry lookup table to each painted frame. Files are never
changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PySide6.QtGui import QImage

#: µm per pixel that corresponds to 1× (10 µm/px); 0.25 µm/px is 40×.
UM_PER_PX_AT_1X = 10.0
#: The magnifications offered as buttons.
MAGNIFICATIONS = (5, 10, 20, 40)


def native_magnification(
    objective_power: float | None, mpp: tuple[float, float] | None
) -> tuple[float | None, str]:
    """``(magnification at scale 1, how it is known)``: ``"objective"``, ``"pixel size"`` or
    ``"unknown"`` (then ``None``)."""
    if objective_power and objective_power > 0:
        return float(objective_power), "objective"
    if mpp and mpp[0] and mpp[0] > 0:
        return UM_PER_PX_AT_1X / float((mpp[0] + mpp[1]) / 2), "pixel size"
    return None, "unknown"


def format_magnification(mag: float) -> str:
    """``"20×"``, ``"7.7×"``, ``"0.625×"``: three significant digits at most."""
    return f"{mag:.3g}×"


def magnification_readout(
    scale: float, objective_power: float | None, mpp: tuple[float, float] | None
) -> tuple[str, str]:
    """``(short text, explanation)`` of the magnification shown at ``scale``."""
    native, source = native_magnification(objective_power, mpp)
    if native is None:
        return (
            f"zoom {scale * 100:.3g}% (magnification unknown)",
            "This slide records neither an objective power nor a pixel size, so its "
            "magnification is unknown; the zoom is given in percent of the scan's resolution "
            "(File > Set Pixel Size gives it one).",
        )
    text = format_magnification(native * scale)
    if source == "objective":
        why = f"Scanned at {format_magnification(native)} (objective power in the file)"
    else:
        assert mpp is not None
        text = "≈" + text
        why = (
            f"Estimated from the pixel size {mpp[0]:.3g} µm/px (10 µm/px = 1×; the file "
            f"records no objective power): scanned at ≈{format_magnification(native)}"
        )
    return text, f"{why}; now {scale * 100:.3g}% of the scan's resolution."


@dataclass(frozen=True)
class DisplayAdjust:
    """View-only brightness (-1..1, added as a share of full scale) and contrast (factor > 0)."""

    brightness: float = 0.0
    contrast: float = 1.0

    @property
    def is_identity(self) -> bool:
        return abs(self.brightness) < 1e-6 and abs(self.contrast - 1.0) < 1e-6

    def lut(self) -> np.ndarray:
        """The 256-entry uint8 lookup table."""
        x = np.arange(256, dtype=np.float32)
        y = (x - 127.5) * float(self.contrast) + 127.5 + float(self.brightness) * 255.0
        return np.clip(np.rint(y), 0, 255).astype(np.uint8)

    def apply(self, img: QImage) -> None:
        """Apply in place to an ``RGB32``/``ARGB32`` image (alpha untouched)."""
        if self.is_identity or img.isNull():
            return
        if img.format() not in (QImage.Format.Format_RGB32, QImage.Format.Format_ARGB32,
                                QImage.Format.Format_ARGB32_Premultiplied):
            raise ValueError(f"DisplayAdjust.apply needs a 32-bit image, not {img.format()}")
        h, w, bpl = img.height(), img.width(), img.bytesPerLine()
        buf = np.frombuffer(img.bits(), np.uint8, count=h * bpl).reshape(h, bpl)
        px = buf[:, : w * 4].reshape(h, w, 4)
        rgb = px[..., :3]  # BGR in memory on little-endian; the same table for each channel
        rgb[...] = self.lut()[rgb]


def contrast_from_slider(value: int) -> float:
    """Slider -100..100 to a contrast factor 0.25..4 (0 = 1, symmetric in log scale)."""
    return float(2.0 ** (value / 50.0))


def slider_from_contrast(contrast: float) -> int:
    return int(round(50.0 * math.log2(max(1e-6, contrast))))
