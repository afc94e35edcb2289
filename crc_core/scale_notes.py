"""The scale a patch job has to assume, said once: slides that state no pixel size.

The gland filter of :mod:`crc_core.patches` measures glands in micrometres: it resamples each patch
from the slide's µm/px to its model's scale. A slide without a pixel size (2 of the 3 real slides
in ``../shared/data``) leaves it to assume one, the EBHI tiles' nominal
:data:`crc_core.gland_model.EBHI_MPP`; on cmu-1 patches the assumed scale moved the gland fraction
from 0.32 to 0.82, flipping the >= 0.5 decision. :func:`gland_scale_notes` opens each slide
(metadata only) and returns one line per slide whose scale is assumed, for the CLI (stderr) and the
Build Dataset dialog (a banner). Qt-free; a job generator so the GUI runs it in a worker.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

from crc_core.errors import CrcError
from crc_core.gland_model import EBHI_MPP
from crc_core.jobs import Progress

__all__ = ["gland_scale_note", "gland_scale_notes"]


def gland_scale_note(name: str, min_gland: float, patch_size: int) -> str:
    """The line said for one slide without a pixel size."""
    return (f"{name}: the slide states no pixel size, so the gland filter (>= {min_gland:g}) "
            f"assumes its patches are at the EBHI tiles' scale, {EBHI_MPP:g} µm/px "
            f"({patch_size} px = {patch_size * EBHI_MPP:.0f} µm); if that is wrong, so is the "
            f"filter's decision. Set the slide's pixel size (crc-viewer: Slide Properties, kept in "
            f"the project) or turn the gland filter off (--min-gland 0)")


def _slide_mpp(src: Any, open_slide_fn: Callable[[Any], Any]) -> float | None:
    if getattr(src, "mpp", None):
        return 1.0   # the project's (user-set) pixel size: stated
    try:
        reader = open_slide_fn(src.path)
    except CrcError:
        return 1.0   # unreadable: extraction itself reports it, no scale note
    try:
        mpp = getattr(reader, "mpp", None)
    finally:
        close = getattr(reader, "close", None)
        if close is not None:
            close()
    return None if not mpp else float(mpp[0])


def gland_scale_notes(
    sources: Sequence[Any], min_gland: float | None, patch_size: int,
    open_slide_fn: Callable[[Any], Any] | None = None,
) -> Generator[Progress, None, list[str]]:
    """One note per slide of ``sources`` (:class:`crc_core.patches.SlideSource`) whose scale the
    gland filter assumes; none when the filter is off. A job generator (one event per slide)."""
    if not min_gland:
        return []
    if open_slide_fn is None:
        from crc_core.slide import open_slide as open_slide_fn
    notes: list[str] = []
    for i, src in enumerate(sources):
        yield Progress(i, len(sources), "reading pixel sizes")
        if _slide_mpp(src, open_slide_fn) is None:
            name = getattr(src, "name", None) or src.path.stem
            notes.append(gland_scale_note(name, float(min_gland), patch_size))
    yield Progress(len(sources), len(sources), "reading pixel sizes")
    return notes
