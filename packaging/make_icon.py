"""Draw the application icon (resources/icon.png, 256 px, and icon.ico) with Pillow.

A stylised colorectal crypt: a pink stromal disc with a ring of purple epithelial nuclei around a
pale lumen, over a rounded dark-blue tile. Run: ``python packaging/make_icon.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]


def draw(size: int = 256) -> Image.Image:
    s = size / 256
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle([8 * s, 8 * s, 248 * s, 248 * s], radius=44 * s, fill=(24, 46, 89, 255))
    d.ellipse([36 * s, 36 * s, 220 * s, 220 * s], fill=(240, 170, 200, 255))
    d.ellipse([70 * s, 70 * s, 186 * s, 186 * s], fill=(150, 70, 160, 255))
    d.ellipse([96 * s, 96 * s, 160 * s, 160 * s], fill=(252, 240, 246, 255))
    for i in range(14):
        a = 2 * math.pi * i / 14
        cx, cy = 128 * s + 48 * s * math.cos(a), 128 * s + 48 * s * math.sin(a)
        r = 7 * s
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(70, 30, 110, 255))
    return img


def main() -> None:
    out = ROOT / "resources"
    out.mkdir(exist_ok=True)
    img = draw(256)
    img.save(out / "icon.png")
    sizes = [(16, 16), (32, 32), (48, 48), (64, 64), (128, 128), (256, 256)]
    img.save(out / "icon.ico", sizes=sizes)


if __name__ == "__main__":
    main()
