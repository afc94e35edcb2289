"""Outline validation and repair shared by the GeoJSON and ASAP readers, the bookkeeping of one
load (:class:`_Reader`: warnings, added classes, refusals) and the text clean-up of both formats."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

from crc_core.annotations.model import (
    MAX_WARNINGS,
    UNCLASSIFIED,
    Geometry,
    _new_id,
    _polygonal,
)
from crc_core.classes import ClassScheme
from crc_core.errors import AnnotationError, ClassSchemeError

T = TypeVar("T")

#: Most vertices in one annotation (all rings and parts). Larger outlines are refused.
#: The readers look it up in this module at call time: one setting governs GeoJSON and ASAP.
MAX_VERTICES_PER_ANNOTATION = 500_000


# --------------------------------------------------------------------------- geometry helpers
class _FeatureError(Exception):
    """A feature that must be refused (or skipped with skip_invalid); message without location."""


class _Skip(Exception):
    """A feature skipped with a warning (points, lines, outside the slide)."""



def _ring_array(ring: Any, what: str) -> np.ndarray:
    """Validate a GeoJSON/ASAP ring as an (n, 2) float array (extra z values dropped)."""
    if not isinstance(ring, list):
        raise _FeatureError(f"{what} is {_jtype(ring)}, expected a list of [x, y] pairs")
    if not ring:
        return np.zeros((0, 2))
    try:
        arr = np.asarray(ring)
    except (ValueError, TypeError):
        raise _FeatureError(f"{what} must be a list of [x, y] number pairs") from None
    if arr.dtype.kind not in "iuf" or arr.ndim != 2 or arr.shape[1] < 2:
        raise _FeatureError(f"{what} must be a list of [x, y] number pairs")
    arr = arr[:, :2].astype(np.float64)
    if not np.isfinite(arr).all():
        raise _FeatureError(f"{what} has NaN or infinite coordinates")
    return arr


def _clean_ring(arr: np.ndarray, notes: dict[str, int], expect_closed: bool) -> np.ndarray | None:
    """Remove repeated points and the closing point; None when fewer than 3 distinct points
    remain."""
    if len(arr) == 0:
        return None
    closed = len(arr) > 1 and bool(np.all(arr[0] == arr[-1]))
    if expect_closed and not closed:
        notes["unclosed"] = notes.get("unclosed", 0) + 1
    if closed:
        arr = arr[:-1]
    if len(arr) > 1:
        keep = np.ones(len(arr), dtype=bool)
        keep[1:] = np.any(arr[1:] != arr[:-1], axis=1)
        # The ring wraps: a last point equal to the first is a repeat too.
        if len(arr) > 2 and np.all(arr[-1] == arr[0]):
            keep[-1] = False
        dups = int((~keep).sum())
        if dups:
            notes["duplicates"] = notes.get("duplicates", 0) + dups
            arr = arr[keep]
    if len(arr) < 3 or not _three_distinct(arr):
        return None
    return arr


def _three_distinct(arr: np.ndarray) -> bool:
    """Whether an (n, 2) array holds at least three distinct points (O(n), no sort)."""
    d0 = np.any(arr != arr[0], axis=1)
    if not d0.any():
        return False
    p1 = arr[int(np.argmax(d0))]
    return bool((d0 & np.any(arr != p1, axis=1)).any())


def _count_vertices(coords: Any, depth: int) -> int:
    """Count points in nested coordinate lists without building arrays (depth: 2 ring, 3 polygon, 4
    multi)."""
    if not isinstance(coords, list):
        return 0
    if depth <= 2:
        return len(coords)
    return sum(_count_vertices(c, depth - 1) for c in coords)


def _polygon_json(coords: Any, what: str, notes: dict[str, int]) -> Polygon | None:
    """A GeoJSON Polygon's coordinates -> shapely Polygon (may be invalid); None when degenerate
    shell."""
    if not isinstance(coords, list) or not coords:
        raise _FeatureError(f"{what} must be a non-empty list of rings")
    shell = _clean_ring(_ring_array(coords[0], f"{what} outer ring"), notes, expect_closed=True)
    if shell is None:
        return None
    holes = []
    for k, ring in enumerate(coords[1:], start=1):
        h = _clean_ring(_ring_array(ring, f"{what} hole {k}"), notes, expect_closed=True)
        if h is None:
            notes["degenerate_holes"] = notes.get("degenerate_holes", 0) + 1
            continue
        holes.append(h)
    return Polygon(shell, holes)


def _finish_geometry(
    polys: list[Polygon], notes: dict[str, int], warn: list[str], clip: Polygon | None
) -> Geometry:
    """Combine parts, repair, clip to the slide. Raises _FeatureError / _Skip."""
    if not polys:
        raise _FeatureError("has fewer than three distinct points")
    geom: BaseGeometry = polys[0] if len(polys) == 1 else MultiPolygon(polys)
    if notes.get("unclosed"):
        warn.append(f"closed {notes['unclosed']} unclosed ring(s)")
    if notes.get("duplicates"):
        warn.append(f"removed {notes['duplicates']} repeated point(s)")
    if notes.get("degenerate_holes"):
        warn.append(
            f"dropped {notes['degenerate_holes']} hole(s) with fewer than three distinct points"
        )
    if notes.get("degenerate_parts"):
        warn.append(
            f"dropped {notes['degenerate_parts']} part(s) with fewer than three distinct points"
        )
    if not geom.is_valid:
        reason = shapely.is_valid_reason(geom)
        geom = shapely.make_valid(geom)
        kind = (
            "self-intersection"
            if "Self-intersection" in reason or "Ring Self" in reason
            else "invalid outline"
        )
        warn.append(f"repaired {kind} ({reason})")
    out = _polygonal(geom)
    if out is None:
        raise _FeatureError("has no area")
    if clip is not None and not clip.covers(out):
        inside = _polygonal(out.intersection(clip))
        if inside is None:
            raise _Skip("lies entirely outside the slide")
        warn.append(
            f"clipped to the slide ({100.0 * (1 - inside.area / out.area):.1f}% of its area was "
            "outside)"
        )
        out = inside
    return out


def _jtype(v: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(v), type(v).__name__)


# --------------------------------------------------------------------------- reading
class _Reader:
    """Shared state of one load: scheme, warnings, added classes, id uniqueness."""

    def __init__(
        self,
        scheme: ClassScheme,
        slide_size: tuple[int, int] | None,
        skip_invalid: bool,
        source: str,
    ) -> None:
        self.scheme = scheme
        self.skip_invalid = skip_invalid
        self.source = source
        self.warnings: list[str] = []
        self._dropped_warnings = 0
        self.added: list[str] = []
        self.skipped = 0
        self.ids: set[str] = set()
        self.clip: Polygon | None = None
        if slide_size is not None:
            w, h = slide_size
            if not (w > 0 and h > 0):
                raise AnnotationError(f"slide size {slide_size!r} must be positive (width, height)")
            self.clip = box(0, 0, float(w), float(h))

    def warn(self, msg: str) -> None:
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(msg)
        else:
            self._dropped_warnings += 1

    def finish_warnings(self) -> list[str]:
        out = list(self.warnings)
        if self._dropped_warnings:
            out.append(f"{self.source}: {self._dropped_warnings} more warning(s) not shown")
        return out

    def class_for(self, name: str | None, color: Any, where: str) -> str:
        """Class id for a class name from the file; unknown names are added to the scheme."""
        name = (name or "").strip() or UNCLASSIFIED
        c = self.scheme.find_name(name) or self.scheme.find(name)
        if c is not None:
            return c.id
        rgb = _color_or_none(color)
        try:
            c = self.scheme.add(name, color=rgb)
        except ClassSchemeError as exc:  # e.g. all keys used: add without a key
            raise AnnotationError(
                f"{self.source}: {where}: cannot add class {name!r} ({exc})"
            ) from None
        self.added.append(c.name)
        self.warn(f"{self.source}: class {name!r} is not in the class scheme: added it")
        return c.id

    def new_id(self, raw: Any) -> str:
        """Keep a file's id when it is a UUID not seen before; otherwise a fresh uuid4."""
        if isinstance(raw, str):
            try:
                u = str(uuid.UUID(raw))
            except ValueError:
                u = ""
            if u and u not in self.ids:
                self.ids.add(u)
                return u
        new = _new_id()
        self.ids.add(new)
        return new

    def refuse(self, where: str, msg: str) -> None:
        if self.skip_invalid:
            self.skipped += 1
            self.warn(f"{self.source}: {where} {msg}: skipped")
            return
        raise AnnotationError(f"{self.source}: {where} {msg}")

    def attempt(self, where: str, fn: Callable[..., T], *args: Any) -> T | None:
        """``fn(*args)`` for the feature at ``where``, or None when it is refused (a _FeatureError:
        an AnnotationError, or skipped with ``skip_invalid``) or skipped (a _Skip, with a
        warning)."""
        try:
            return fn(*args)
        except _FeatureError as exc:
            self.refuse(where, str(exc))
        except _Skip as exc:
            self.skipped += 1
            self.warn(f"{self.source}: {where} {exc}: skipped")
        return None




_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _xml_text(text: str) -> str:
    """Drop characters XML 1.0 cannot hold (control characters, lone surrogates)."""
    return _XML_BAD.sub("", text)


def _text(value: str) -> str:
    """A string from JSON with lone surrogates (not encodable as UTF-8) replaced by U+FFFD."""
    return _SURROGATE.sub("\ufffd", value)


def _color_or_none(color: Any) -> tuple[int, int, int] | None:
    if isinstance(color, (list, tuple)) and len(color) >= 3:
        try:
            rgb = tuple(int(c) for c in color[:3])
        except (TypeError, ValueError, OverflowError):
            return None
        if all(0 <= c <= 255 for c in rgb) and not any(isinstance(c, bool) for c in color[:3]):
            return rgb  # type: ignore[return-value]
        return None
    if isinstance(color, int) and not isinstance(color, bool):
        v = color & 0xFFFFFF  # Java ARGB int (QuPath colorRGB), possibly negative
        return ((v >> 16) & 255, (v >> 8) & 255, v & 255)
    if isinstance(color, str):
        m = re.fullmatch(r"#?([0-9a-fA-F]{6})", color.strip())
        if m:
            v = int(m.group(1), 16)
            return ((v >> 16) & 255, (v >> 8) & 255, v & 255)
    return None


def _feature_label(index: int, fid: Any, name: Any) -> str:
    label = f"feature #{index + 1}"
    extra = []
    if isinstance(fid, (str, int)) and not isinstance(fid, bool) and str(fid):
        extra.append(f"id {str(fid)[:60]}")
    if isinstance(name, str) and name:
        extra.append(f"name {name[:60]!r}")
    return label + (f" ({', '.join(extra)})" if extra else "")


def _class_info(scheme: ClassScheme, class_id: str) -> tuple[str, tuple[int, int, int]]:
    c = scheme.find(class_id)
    if c is None:
        return class_id, (128, 128, 128)
    return c.name, c.color
