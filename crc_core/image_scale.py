"""The pixel size a set of tile images states itself, in their resolution tags.

A tile folder from another lab often says its scale in the files: a TIFF's XResolution /
YResolution / ResolutionUnit tags, a PNG's pHYs or a JPEG's JFIF density. When neither the dataset
(``dataset.json``) nor the user (``--mpp``) gives the tiles' µm/px, ``crc evaluate`` and
``crc train`` read those tags here: a scale the images state is a stated scale, not a guess.

The rule is strict, so that a screen or print default is never taken for a microscope calibration:
a tag counts only inside :data:`TILE_MPP_RANGE` (72 dpi is 353 µm/px, 600 dpi 42 µm/px: both out),
and the set's pixel size is used only when **every** image states one and they agree within 2 %.
Otherwise nothing is used and :attr:`StatedScale.problem` says why in one line (some images state a
size and others none, or they state different sizes): the caller warns and the images are taken at
the model's scale, as before. Qt-free; a job generator (headers only, a few per millisecond).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from crc_core.jobs import Progress
from crc_core.slide_backends import resolution_mpp

__all__ = ["TILE_MPP_RANGE", "StatedScale", "image_mpp", "stated_mpp"]

#: µm/px a tile's tag may state and still count (a 1x scan is about 10 µm/px; 0.05 is beyond any
#: light microscope's resolution).
TILE_MPP_RANGE = (0.05, 10.0)
#: Largest relative spread (max / min) of the stated sizes that still counts as one pixel size.
AGREE = 1.02


def image_mpp(path: Path) -> float | None:
    """The µm/px one image file states (the mean of x and y, which must agree within 2 %), or
    ``None``: no tag, an implausible one, or an unreadable file."""
    try:
        with Image.open(path) as img:
            xy = resolution_mpp(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    if xy is None or max(xy) / min(xy) > AGREE:
        return None
    mpp = (xy[0] + xy[1]) / 2
    lo, hi = TILE_MPP_RANGE
    return mpp if lo <= mpp <= hi else None


@dataclass(frozen=True)
class StatedScale:
    """What a set of images states about its pixel size."""

    stated: tuple[float, ...]   # the sizes stated (one per image that states one)
    total: int                  # images read

    @property
    def mpp(self) -> float | None:
        """The set's µm/px: the median, when every image states one and they agree; else None."""
        if not self.total or len(self.stated) != self.total:
            return None
        lo, hi = min(self.stated), max(self.stated)
        if hi / lo > AGREE:
            return None
        return sorted(self.stated)[len(self.stated) // 2]

    @property
    def source(self) -> str:
        """Where :attr:`mpp` comes from, for the report's scale sentence."""
        return f"stated in the resolution tags of all {self.total} images"

    @property
    def problem(self) -> str | None:
        """One line when some images state a size but no single size can be used; else None."""
        if not self.stated or self.mpp is not None:
            return None
        lo, hi = min(self.stated), max(self.stated)
        sizes = f"{lo:g} µm/px" if hi / lo <= AGREE else f"{lo:g} to {hi:g} µm/px"
        if len(self.stated) != self.total:
            what = (f"{len(self.stated)} of {self.total} images state a pixel size in their "
                    f"resolution tags ({sizes}), the others none")
        else:
            what = f"the images' resolution tags state different pixel sizes ({sizes})"
        return f"{what}: none is used; give --mpp, or evaluate the sets apart"


def stated_mpp(paths: Sequence[Path], threads: int = 4) -> Generator[Progress, None, StatedScale]:
    """Read the resolution tags of ``paths`` (headers only) into a :class:`StatedScale`."""
    n = len(paths)
    found: list[float] = []
    chunk = 256
    yield Progress(0, n, "reading pixel sizes")
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for s in range(0, n, chunk):
            found += [m for m in pool.map(image_mpp, paths[s:s + chunk]) if m is not None]
            yield Progress(min(n, s + chunk), n, "reading pixel sizes")
    return StatedScale(tuple(found), n)
