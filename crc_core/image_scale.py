"""The scale of images scored by a model: the pixel size a tile set states in its resolution tags,
the factor to the model's scale (:func:`scale_to_model`, with the sentence the report shows), and
the note when images are smaller than the model's window (:func:`said_fields`).

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
from typing import Any

from PIL import Image

from crc_core.jobs import Event, JobWarning, Progress
from crc_core.slide_backends import resolution_mpp

__all__ = ["TILE_MPP_RANGE", "StatedScale", "image_mpp", "images_scale", "said_fields",
           "scale_to_model", "stated_mpp", "table_stated"]

#: µm/px a tile's tag may state and still count (a 1x scan is about 10 µm/px; 0.05 is beyond any
#: light microscope's resolution).
TILE_MPP_RANGE = (0.05, 10.0)
#: Largest relative spread (max / min) of the stated sizes that still counts as one pixel size.
AGREE = 1.02
#: Images covering less than this share of the model's window are said to be mirrored to fill it
#: (a few mirrored rows of a near-window tile are not worth a warning).
MIRRORED_NOTE_BELOW = 0.9


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

    def overridden_by(self, given: float) -> str | None:
        """One line when a pixel size ``given`` by the user (``--mpp``, the Train dialog) differs
        by more than 2 % from the one the images state; it is used, and this says so."""
        tagged = self.mpp
        if tagged is None or abs(tagged / given - 1) <= AGREE - 1:
            return None
        return (f"the pixel size given ({given:g} µm/px, --mpp) is used, though the images' "
                f"resolution tags state {tagged:g} µm/px")

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


def table_stated(table: Any, indices: Sequence[int] | None = None, threads: int = 4
                 ) -> Generator[Progress, None, StatedScale | None]:
    """Job: what the resolution tags of ``table``'s images (``indices``, default all) state, or
    ``None`` without reading them when the dataset itself states its scale (``table.mpp``)."""
    if table.mpp is not None:
        return None
    rows = range(len(table.samples)) if indices is None else indices
    return (yield from stated_mpp([table.samples[i].path for i in rows], threads))


def scale_to_model(meta: dict[str, Any], table: Any, mpp: float | None,
                   stated: StatedScale | None = None) -> tuple[float, str, list[str]]:
    """Factor from an image's pixels to the network input's, the sentence saying so, and warnings.

    ``meta``: the checkpoint's ``input_size``, ``patch_size`` and ``mpp``; ``table``: a
    :class:`crc_core.tables.TileTable`. The images' µm/px: ``--mpp``, else the dataset's, else the
    one ``stated`` in every image's resolution tags (:func:`stated_mpp`)."""
    size = int(meta["input_size"])
    patch = meta.get("patch_size") if isinstance(meta.get("patch_size"), int) else size
    model_mpp = meta.get("mpp") if isinstance(meta.get("mpp"), int | float) else None
    tagged = stated.mpp if stated is not None else None
    warnings = [stated.problem] if stated is not None and stated.problem else []
    if mpp is not None:
        image_mpp, source = float(mpp), "given (--mpp)"
        if stated is not None and (said := stated.overridden_by(image_mpp)):
            warnings.append(said)
    elif table.mpp is not None:
        image_mpp, source = table.mpp, "the dataset's"
    elif tagged is not None:
        assert stated is not None
        image_mpp, source = tagged, stated.source
    else:
        image_mpp, source = None, ""
    per_input = size / patch           # input pixels per patch pixel
    if model_mpp and image_mpp:
        factor = image_mpp / model_mpp * per_input
        return factor, (f"images at {image_mpp:g} µm/px ({source}) resampled to the model's "
                        f"{model_mpp:g} µm/px ({patch} px patches -> {size} px input)"), warnings
    if model_mpp:
        return per_input, (f"the images' pixel size is unknown: taken as the model's "
                           f"{model_mpp:g} µm/px (give --mpp to resample them to it)"), warnings
    return per_input, (f"the model's scale is unknown (trained without a pixel size): images "
                       f"are taken at its patches' pixel scale ({patch} px patches -> {size} px "
                       f"input)"), warnings


def images_scale(meta: dict[str, Any], table: Any, indices: Sequence[int],
                 mpp: float | None, threads: int) -> Generator[Event, None, tuple[float, str]]:
    """Job: :func:`scale_to_model` of the images scored, their resolution tags read unless the
    dataset states the scale; its warnings yielded."""
    stated = yield from table_stated(table, indices, threads)
    factor, note, warnings = scale_to_model(meta, table, mpp, stated)
    for w in warnings:
        yield JobWarning(w)
    return factor, note


def said_fields(fields: Sequence[float]) -> Generator[Event, None, str]:
    """Job: a warning when images were smaller than the model's window at its scale (mirrored
    to fill it); returns it as a clause for the report's scale sentence, else ``""``."""
    small = sorted(f for f in fields if f < MIRRORED_NOTE_BELOW)
    if not small:
        return ""
    note = (f"{len(small)} of {len(fields)} images are smaller than the model's window at its "
            f"scale (median {100 * small[len(small) // 2]:.0f} % of its area) and were mirrored "
            f"at their edges to fill it: the model sees mirrored borders, so expect lower "
            f"figures than on whole windows")
    yield JobWarning(note)
    return f"; {note}"
