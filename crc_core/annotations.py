"""Annotations on shapely geometry, and their QuPath GeoJSON and ASAP XML files.

Geometry is in **level-0 pixels** of the slide (x to the right, y down), as shapely ``Polygon`` or
``MultiPolygon`` (rectangles, polygons and freehand outlines are all polygons; holes are interior
rings). Every annotation has a UUID (``id``), a class (``class_id``, an id of a
:class:`~crc_core.classes.ClassScheme`), an optional name and notes, and free ``properties`` that
are kept on a GeoJSON round trip (QuPath measurements, ``isLocked``...).

Files
-----
* ``.geojson`` / ``.json``: QuPath-compatible GeoJSON. Read: a FeatureCollection, a bare Feature, or
  a list of features (QuPath 0.2-0.6 exports), with ``properties.objectType`` (``"annotation"``;
  detections, cells and tiles are skipped with one warning), ``properties.classification`` as
  ``{name | names, color: [r, g, b] | colorRGB: int}`` or a plain string, ``name``, and notes in
  ``notes``, ``description`` or QuPath's ``metadata.ANNOTATION_DESCRIPTION``. Written: a
  FeatureCollection of ``Feature`` objects with ``id``, ``geometry`` and ``properties {objectType:
  "annotation", classification: {name, color}, name, description, metadata:
  {ANNOTATION_DESCRIPTION}, isLocked, isHidden (only when true), ...}`` that QuPath 0.4+ imports
  (QuPath shows the name, the description and the lock; it ignores ``isHidden``).
* ``.xml``: ASAP XML (``ASAP_Annotations/Annotations/Annotation`` with ``Coordinates/Coordinate``
  and ``AnnotationGroups/Group``), parsed by defusedxml's SAX reader with DTDs forbidden (no
  external entity is read and no entity is expanded; no element tree is built). The class is the
  annotation's ``PartOfGroup``. ``Spline`` outlines are read as the polygon through their control
  points; ``Dot``/``PointSet`` annotations are skipped with a warning.

ASAP encoding of holes and multipolygons
-----------------------------------------
ASAP draws single outlines only, so an annotation is written as one ``Annotation`` element per
outline, all with the same ``Name`` and extra attributes ASAP ignores: ``Id`` (the annotation's
UUID), ``Role`` (``"shell"`` or ``"hole"``) and, when set, ``Locked="1"`` / ``Hidden="1"``. Each polygon part is a ``Role="shell"`` element in
its class group; each hole is a ``Role="hole"`` element in the group ``Exclusion`` (the convention
ASAP users follow for regions cut out of an annotation). On reading, elements
sharing an ``Id`` are merged back into one (multi)polygon and their holes subtracted, so areas, holes
and parts survive XML -> GeoJSON -> XML. Files without these attributes (drawn in ASAP, or saved
again by ASAP, which drops unknown attributes) still keep their areas: every element of a group named
``Exclusion``/``_exclusion``/``exclude`` (any case), or ``_2`` in a Camelyon16 file (groups
``_0``/``_1`` with ``_2`` for exclusions), is subtracted from the outlines that contain it.

Repair and refusal
------------------
Loading repairs what is safe and reports it as a warning naming the feature (``feature #3 (id
..., name ...)``): a self-intersecting or otherwise invalid outline (``shapely.make_valid``, keeping
the polygonal parts), an unclosed ring (closed), repeated points (removed), a degenerate hole
(dropped), an unknown class name (added to the scheme), coordinates outside the slide when
``slide_size`` is given (clipped; an annotation entirely outside is skipped). Points, lines and
other non-area objects are skipped with a warning. Refused with an :class:`AnnotationError` naming
the feature: fewer than three distinct points, NaN or infinite coordinates, wrong JSON types, and
an annotation of more than :data:`MAX_VERTICES_PER_ANNOTATION` vertices (a million-vertex outline
is refused before any geometry is built: simplify it in QuPath first). Measured on the 2-core
dev machine: a 400,000-vertex outline loads in about 1.4 s from GeoJSON and 3.5 s from ASAP XML;
a 1,000,000-vertex one is refused in 2-4 s (``benchmarks/annotations_bench.py``).
``skip_invalid=True`` turns these refusals into skips with a warning. Files above
:data:`MAX_FILE_BYTES` are refused before they are read, so a huge file never exhausts memory.
Any malformed input gives an ``AnnotationError``, never another exception.

Saves are atomic (temporary file, fsync, rename): a crash mid-save leaves the previous file whole.
Nothing here is thread-safe; the GUI owns an ``AnnotationSet`` on its own thread.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

from crc_core.atomic import atomic_path
from crc_core.classes import ClassScheme
from crc_core.errors import AnnotationError, ClassSchemeError

__all__ = [
    "Annotation",
    "AnnotationSet",
    "GeoJsonCache",
    "LoadResult",
    "MAX_FILE_BYTES",
    "MAX_VERTICES_PER_ANNOTATION",
    "UNCLASSIFIED",
    "clean_geometry",
    "load_annotations",
    "read_annotations_bytes",
    "save_annotations",
    "annotations_to_bytes",
    "format_for_path",
]

#: Largest annotation file read (bytes). Parsing JSON takes several times the file size in memory.
MAX_FILE_BYTES = 256 * 1024 * 1024
#: Most vertices in one annotation (all rings and parts). Larger outlines are refused.
MAX_VERTICES_PER_ANNOTATION = 500_000
#: Most warnings kept in a LoadResult; the rest are counted in a final line.
MAX_WARNINGS = 200
#: Property keys of the two viewer flags (``isLocked`` is QuPath's; QuPath ignores ``isHidden``).
LOCKED_KEY = "isLocked"
HIDDEN_KEY = "isHidden"
#: QuPath keeps an annotation's description in ``properties.metadata`` under this key.
QUPATH_DESCRIPTION_KEY = "ANNOTATION_DESCRIPTION"
#: Annotation flags written as extra ASAP attributes (``Locked="1"``, ``Hidden="1"``).
_ASAP_FLAGS = {LOCKED_KEY: "Locked", HIDDEN_KEY: "Hidden"}

#: Class name given to annotations that carry no classification.
UNCLASSIFIED = "Unclassified"

GEOJSON_SUFFIXES = (".geojson", ".json")
XML_SUFFIXES = (".xml",)
_EXCLUSION_GROUPS = {"exclusion", "_exclusion", "exclude", "excluded", "exclusions"}
_HOLE_GROUP = "Exclusion"
_NON_ANNOTATION_TYPES = {"detection", "cell", "tile", "tma core", "tma_core", "tmacore", "root"}
_QUPATH_LEGACY_IDS = {
    "PathAnnotationObject": "annotation",
    "PathDetectionObject": "detection",
    "PathCellObject": "cell",
    "PathTileObject": "tile",
    "TMACoreObject": "tma core",
    "PathRootObject": "root",
}

Geometry = Polygon | MultiPolygon


# --------------------------------------------------------------------------- model
def _new_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Annotation:
    """One annotated region.

    Attributes
    ----------
    id : str
        UUID string (uuid4 for new annotations; a QuPath UUID is kept).
    class_id : str
        Id of a class in the project's :class:`ClassScheme`.
    geometry : shapely.Polygon | shapely.MultiPolygon
        Valid, non-empty area in level-0 pixels.
    name, notes : str
        Free text ("" when absent).
    properties : dict
        Extra JSON-compatible properties kept on GeoJSON round trips.
    """

    id: str
    class_id: str
    geometry: Geometry
    name: str = ""
    notes: str = ""
    properties: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.geometry, (Polygon, MultiPolygon)):
            raise AnnotationError(
                f"annotation {self.id}: geometry must be a Polygon or MultiPolygon, "
                f"not {type(self.geometry).__name__}"
            )

    @classmethod
    def new(
        cls,
        class_id: str,
        geometry: BaseGeometry,
        name: str = "",
        notes: str = "",
        properties: dict[str, Any] | None = None,
    ) -> Annotation:
        """A new annotation with a fresh uuid4; the geometry is repaired by :func:`clean_geometry`.

        Raises
        ------
        AnnotationError
            When the geometry has no area (fewer than three distinct points, only lines).
        """
        geom, _ = clean_geometry(geometry)
        return cls(_new_id(), class_id, geom, name, notes, dict(properties or {}))

    @classmethod
    def rectangle(
        cls, class_id: str, x: float, y: float, w: float, h: float, name: str = ""
    ) -> Annotation:
        """A new axis-aligned rectangle annotation, ``(x, y)`` its top-left corner in level-0 px."""
        return cls.new(class_id, box(x, y, x + w, y + h), name=name)

    @classmethod
    def polygon(
        cls, class_id: str, points: Iterable[tuple[float, float]], name: str = ""
    ) -> Annotation:
        """A new polygon (or freehand outline) annotation from its vertices in level-0 px."""
        pts = [tuple(p) for p in points]
        if len({p for p in pts}) < 3:
            raise AnnotationError("a polygon needs at least three distinct points")
        return cls.new(class_id, Polygon(pts), name=name)

    @property
    def area(self) -> float:
        """Area in level-0 pixels squared."""
        return float(self.geometry.area)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(min_x, min_y, max_x, max_y)`` in level-0 px."""
        return tuple(self.geometry.bounds)  # type: ignore[return-value]

    def replace(self, **changes: Any) -> Annotation:
        """A copy with some fields changed (same id unless ``id`` is given)."""
        return dataclasses.replace(self, **changes)

    @property
    def locked(self) -> bool:
        """Locked (QuPath's ``isLocked``): the viewer refuses to move, reshape or delete it."""
        return self.properties.get(LOCKED_KEY) is True

    @property
    def hidden(self) -> bool:
        """Hidden (``isHidden``): not drawn in the viewer; still saved, exported and used."""
        return self.properties.get(HIDDEN_KEY) is True

    def with_flags(self, locked: bool | None = None, hidden: bool | None = None) -> Annotation:
        """A copy with the locked and/or hidden flag set (``None`` keeps it)."""
        props = dict(self.properties)
        for key, value in ((LOCKED_KEY, locked), (HIDDEN_KEY, hidden)):
            if value is not None:
                props[key] = bool(value)
        return dataclasses.replace(self, properties=props)


class AnnotationSet:
    """Annotations of one slide, in drawing order, addressable by id."""

    def __init__(self, annotations: Iterable[Annotation] = ()) -> None:
        self._items: dict[str, Annotation] = {}
        for a in annotations:
            self.add(a)

    def __iter__(self) -> Iterator[Annotation]:
        return iter(list(self._items.values()))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, ann_id: object) -> bool:
        if isinstance(ann_id, Annotation):
            ann_id = ann_id.id
        return ann_id in self._items

    def __repr__(self) -> str:
        return f"AnnotationSet({len(self)} annotations)"

    @property
    def ids(self) -> list[str]:
        return list(self._items)

    def add(self, ann: Annotation, index: int | None = None) -> Annotation:
        """Append (or insert at ``index``) an annotation; its id must be new."""
        if not isinstance(ann, Annotation):
            raise AnnotationError(f"expected an Annotation, got {type(ann).__name__}")
        if ann.id in self._items:
            raise AnnotationError(f"annotation id {ann.id} is already in the set")
        if index is None or index >= len(self._items):
            self._items[ann.id] = ann
        else:
            items = list(self._items.values())
            items.insert(max(0, index), ann)
            self._items = {a.id: a for a in items}
        return ann

    def remove(self, ann_id: str | Annotation) -> Annotation:
        """Remove and return the annotation with this id."""
        key = ann_id.id if isinstance(ann_id, Annotation) else ann_id
        try:
            return self._items.pop(key)
        except KeyError:
            raise AnnotationError(f"no annotation with id {key}") from None

    def get(self, ann_id: str) -> Annotation:
        try:
            return self._items[ann_id]
        except KeyError:
            raise AnnotationError(f"no annotation with id {ann_id}") from None

    def find(self, ann_id: str) -> Annotation | None:
        return self._items.get(ann_id)

    def index(self, ann_id: str) -> int:
        """Position of an annotation in drawing order."""
        for i, key in enumerate(self._items):
            if key == ann_id:
                return i
        raise AnnotationError(f"no annotation with id {ann_id}")

    def replace(self, ann: Annotation) -> Annotation:
        """Put ``ann`` in place of the annotation with the same id (same position); return the old one."""
        if ann.id not in self._items:
            raise AnnotationError(f"no annotation with id {ann.id}")
        old = self._items[ann.id]
        self._items[ann.id] = ann
        return old

    def clear(self) -> None:
        self._items.clear()

    def copy(self) -> AnnotationSet:
        """A shallow copy (annotations are shared; shapely geometries are immutable)."""
        out = AnnotationSet()
        out._items = dict(self._items)
        return out

    def classes_in_use(self) -> set[str]:
        """Class ids used by at least one annotation."""
        return {a.class_id for a in self._items.values()}

    def count_by_class(self) -> dict[str, int]:
        return dict(Counter(a.class_id for a in self._items.values()))

    def by_class(self, class_id: str) -> list[Annotation]:
        return [a for a in self._items.values() if a.class_id == class_id]

    def total_area(self, class_id: str | None = None) -> float:
        """Summed area (level-0 px²) of all annotations, or of one class. Overlaps count twice."""
        return float(
            sum(
                a.geometry.area
                for a in self._items.values()
                if class_id is None or a.class_id == class_id
            )
        )

    def area_by_class(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for a in self._items.values():
            out[a.class_id] = out.get(a.class_id, 0.0) + float(a.geometry.area)
        return out

    def union(self, class_id: str | None = None) -> BaseGeometry:
        """Union of the geometries (of one class), overlaps counted once."""
        geoms = [
            a.geometry for a in self._items.values() if class_id is None or a.class_id == class_id
        ]
        return shapely.union_all(geoms) if geoms else Polygon()

    def display_names(self, scheme: ClassScheme | None = None) -> dict[str, str]:
        """The name a person reads for each annotation id: its name, else ``"<class> #<n>"``.

        ``n`` counts the annotations of that class in drawing order (from 1); the class is its
        display name in ``scheme`` (the class id when the scheme lacks it). Never a UUID.
        """
        counts: Counter[str] = Counter()
        out: dict[str, str] = {}
        for a in self._items.values():
            counts[a.class_id] += 1
            if a.name.strip():
                out[a.id] = a.name.strip()
                continue
            c = scheme.find(a.class_id) if scheme is not None else None
            out[a.id] = f"{c.name if c is not None else a.class_id} #{counts[a.class_id]}"
        return out

    def display_name(self, ann_id: str, scheme: ClassScheme | None = None) -> str:
        """:meth:`display_names` of one annotation."""
        return self.display_names(scheme)[self.get(ann_id).id]

    def at_point(self, x: float, y: float) -> list[Annotation]:
        """Annotations whose area contains the level-0 point, topmost (last drawn) first."""
        pt = shapely.Point(x, y)
        return [a for a in reversed(list(self._items.values())) if a.geometry.intersects(pt)]


@dataclass
class LoadResult:
    """What :func:`load_annotations` read: the annotations, warnings, and classes it added."""

    annotations: AnnotationSet
    warnings: list[str] = field(default_factory=list)
    added_classes: list[str] = field(default_factory=list)
    skipped: int = 0


# --------------------------------------------------------------------------- geometry helpers
class _FeatureError(Exception):
    """A feature that must be refused (or skipped with skip_invalid); message without location."""


class _Skip(Exception):
    """A feature skipped with a warning (points, lines, outside the slide)."""


def _polygonal(geom: BaseGeometry) -> Geometry | None:
    """The polygonal part of a geometry as Polygon/MultiPolygon, or None when it has no area."""
    polys: list[Polygon] = []
    stack = [geom]
    while stack:
        g = stack.pop()
        if isinstance(g, Polygon):
            if not g.is_empty and g.area > 0:
                polys.append(g)
        elif hasattr(g, "geoms"):
            stack.extend(g.geoms)
    if not polys:
        return None
    if len(polys) == 1:
        return polys[0]
    merged = shapely.union_all(polys)
    return _single(merged)


def _single(geom: BaseGeometry) -> Geometry | None:
    if isinstance(geom, MultiPolygon) and len(geom.geoms) == 1:
        return geom.geoms[0]
    if isinstance(geom, (Polygon, MultiPolygon)):
        return geom if not geom.is_empty else None
    return _polygonal(geom)


def clean_geometry(geom: BaseGeometry) -> tuple[Geometry, list[str]]:
    """Make an area geometry valid: ``make_valid`` keeping polygonal parts; MultiPolygon of one -> Polygon.

    Returns
    -------
    (geometry, notes)
        The repaired geometry and human-readable notes on what was repaired (empty when nothing).

    Raises
    ------
    AnnotationError
        When nothing with an area is left.
    """
    notes: list[str] = []
    if not isinstance(geom, BaseGeometry):
        raise AnnotationError(f"expected a shapely geometry, got {type(geom).__name__}")
    if geom.is_empty:
        raise AnnotationError("the outline is empty")
    coords = shapely.get_coordinates(geom)
    if coords.size and not np.isfinite(coords).all():
        raise AnnotationError("the outline has NaN or infinite coordinates")
    if not geom.is_valid:
        reason = shapely.is_valid_reason(geom)
        geom = shapely.make_valid(geom)
        notes.append(f"repaired an invalid outline ({reason})")
    out = _polygonal(geom)
    if out is None:
        raise AnnotationError(
            "the outline has no area (fewer than three distinct points or only lines)"
        )
    return out, notes


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
    """Remove repeated points and the closing point; None when fewer than 3 distinct points remain."""
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
    """Count points in nested coordinate lists without building arrays (depth: 2 ring, 3 polygon, 4 multi)."""
    if not isinstance(coords, list):
        return 0
    if depth <= 2:
        return len(coords)
    return sum(_count_vertices(c, depth - 1) for c in coords)


def _polygon_json(coords: Any, what: str, notes: dict[str, int]) -> Polygon | None:
    """A GeoJSON Polygon's coordinates -> shapely Polygon (may be invalid); None when degenerate shell."""
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
            f"clipped to the slide ({100.0 * (1 - inside.area / out.area):.1f}% of its area was outside)"
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


def _read_geojson(data: bytes, rd: _Reader) -> list[Annotation]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AnnotationError(
            f"{rd.source}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    if not text.strip():
        raise AnnotationError(f"{rd.source}: the file is empty; expected GeoJSON")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            f"{rd.source}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise AnnotationError(
            f"{rd.source}: not usable JSON ({type(exc).__name__}: {exc})"[:300]
        ) from None

    if isinstance(doc, list):
        features = doc
    elif isinstance(doc, dict):
        kind = doc.get("type")
        if kind == "FeatureCollection":
            features = doc.get("features")
            if not isinstance(features, list):
                raise AnnotationError(
                    f"{rd.source}: 'features' is {_jtype(features)}, expected a list of GeoJSON features"
                )
        elif kind == "Feature":
            features = [doc]
        elif kind in ("Polygon", "MultiPolygon"):
            features = [{"type": "Feature", "geometry": doc, "properties": {}}]
        else:
            raise AnnotationError(
                f"{rd.source}: GeoJSON 'type' is {kind!r}; expected a FeatureCollection, a Feature "
                "or a list of features"
            )
    else:
        raise AnnotationError(
            f"{rd.source}: top level is {_jtype(doc)}; expected a GeoJSON FeatureCollection, a Feature "
            "or a list of features"
        )

    out: list[Annotation] = []
    skipped_kinds: Counter[str] = Counter()
    for i, feat in enumerate(features):
        if not isinstance(feat, dict):
            rd.refuse(f"feature #{i + 1}", f"is {_jtype(feat)}, expected a GeoJSON Feature object")
            continue
        props = feat.get("properties")
        if props is None:
            props = {}
        fid = feat.get("id", props.get("id") if isinstance(props, dict) else None)
        name = props.get("name") if isinstance(props, dict) else None
        where = _feature_label(i, fid, name)
        if not isinstance(props, dict):
            rd.refuse(where, f"has 'properties' of type {_jtype(props)}, expected an object")
            continue
        obj_type = props.get("objectType")
        if obj_type is None and isinstance(fid, str) and fid in _QUPATH_LEGACY_IDS:
            obj_type = _QUPATH_LEGACY_IDS[fid]
        if obj_type is not None and not isinstance(obj_type, str):
            rd.refuse(where, f"has 'objectType' of type {_jtype(obj_type)}, expected a string")
            continue
        if isinstance(obj_type, str) and obj_type.strip().lower() in _NON_ANNOTATION_TYPES:
            skipped_kinds[obj_type.strip().lower()] += 1
            continue
        try:
            ann = _feature_to_annotation(feat, props, where, rd)
        except _FeatureError as exc:
            rd.refuse(where, str(exc))
            continue
        except _Skip as exc:
            rd.skipped += 1
            rd.warn(f"{rd.source}: {where} {exc}: skipped")
            continue
        if ann is not None:
            out.append(ann)
    for kind, n in sorted(skipped_kinds.items()):
        rd.warn(f"{rd.source}: skipped {n} QuPath {kind} object(s); only annotations are read")
    return out


def _feature_to_annotation(
    feat: dict[str, Any], props: dict[str, Any], where: str, rd: _Reader
) -> Annotation:
    geom = feat.get("geometry")
    if geom is None:
        raise _Skip("has no geometry")
    if not isinstance(geom, dict):
        raise _FeatureError(f"has 'geometry' of type {_jtype(geom)}, expected an object")
    notes: dict[str, int] = {}
    polys = _geometry_polys(geom, "geometry", notes, where, rd, depth=0)
    name = props.get("name", "")
    if name is None:
        name = ""
    if not isinstance(name, str):
        raise _FeatureError(f"has 'name' of type {_jtype(name)}, expected a string")
    note = props.get("notes", props.get("description", ""))
    if note is None:
        note = ""
    if not isinstance(note, str):
        raise _FeatureError(f"has 'notes' of type {_jtype(note)}, expected a string")

    meta = props.get("metadata")
    if isinstance(meta, dict) and QUPATH_DESCRIPTION_KEY in meta:
        meta = {k: v for k, v in meta.items() if k != QUPATH_DESCRIPTION_KEY}
        qdesc = props["metadata"][QUPATH_DESCRIPTION_KEY]
        if not note and isinstance(qdesc, str):
            note = qdesc
        props = {**props, "metadata": meta} if meta else {
            k: v for k, v in props.items() if k != "metadata"
        }
    name, note = _text(name), _text(note)
    cls_name, cls_color = _classification(props, where)
    if cls_name is not None:
        cls_name = _text(cls_name)
    warn: list[str] = []
    shape = _finish_geometry(polys, notes, warn, rd.clip)
    for w in warn:
        rd.warn(f"{rd.source}: {where}: {w}")
    class_id = rd.class_for(cls_name, cls_color, where)
    extra = {
        k: v
        for k, v in props.items()
        if k not in ("objectType", "classification", "name", "notes", "description", "id")
    }
    return Annotation(rd.new_id(feat.get("id")), class_id, shape, name, note, extra)


def _classification(props: dict[str, Any], where: str) -> tuple[str | None, Any]:
    cls = props.get("classification")
    if cls is None:
        # QuPath 0.1-0.2 wrote the class as a plain string under "classification" or "class".
        legacy = props.get("class")
        return (legacy if isinstance(legacy, str) else None), None
    if isinstance(cls, str):
        return cls, None
    if not isinstance(cls, dict):
        raise _FeatureError(f"has 'classification' of type {_jtype(cls)}, expected an object")
    name = cls.get("name")
    if name is None and isinstance(cls.get("names"), list):
        parts = cls["names"]
        if not all(isinstance(p, str) for p in parts):
            raise _FeatureError("has non-string entries in 'classification.names'")
        name = ": ".join(parts)
    if name is not None and not isinstance(name, str):
        raise _FeatureError(f"has 'classification.name' of type {_jtype(name)}, expected a string")
    color = cls.get("color", cls.get("colorRGB"))
    return name, color


def _geometry_polys(
    geom: dict[str, Any], what: str, notes: dict[str, int], where: str, rd: _Reader, depth: int
) -> list[Polygon]:
    kind = geom.get("type")
    coords = geom.get("coordinates")
    if kind == "Polygon":
        n = _count_vertices(coords, 3)
        if n > MAX_VERTICES_PER_ANNOTATION:
            raise _FeatureError(
                f"has {n:,} vertices; at most {MAX_VERTICES_PER_ANNOTATION:,} per annotation are read "
                "(simplify the outline first)"
            )
        p = _polygon_json(coords, what, notes)
        return [p] if p is not None else []
    if kind == "MultiPolygon":
        if not isinstance(coords, list):
            raise _FeatureError(
                f"{what} coordinates are {_jtype(coords)}, expected a list of polygons"
            )
        n = _count_vertices(coords, 4)
        if n > MAX_VERTICES_PER_ANNOTATION:
            raise _FeatureError(
                f"has {n:,} vertices; at most {MAX_VERTICES_PER_ANNOTATION:,} per annotation are read "
                "(simplify the outline first)"
            )
        polys = []
        for k, part in enumerate(coords):
            p = _polygon_json(part, f"{what} part {k + 1}", notes)
            if p is None:
                notes["degenerate_parts"] = notes.get("degenerate_parts", 0) + 1
            else:
                polys.append(p)
        if not polys:
            notes.pop("degenerate_parts", None)
        return polys
    if kind == "GeometryCollection":
        members = geom.get("geometries")
        if not isinstance(members, list):
            raise _FeatureError(f"{what} 'geometries' is {_jtype(members)}, expected a list")
        if depth > 4:
            raise _FeatureError(f"{what} nests GeometryCollections too deeply")
        polys = []
        dropped = 0
        total = 0
        for k, m in enumerate(members):
            if not isinstance(m, dict):
                raise _FeatureError(
                    f"{what} member {k + 1} is {_jtype(m)}, expected a geometry object"
                )
            if m.get("type") in ("Polygon", "MultiPolygon", "GeometryCollection"):
                got = _geometry_polys(m, f"{what} member {k + 1}", notes, where, rd, depth + 1)
                total += sum(len(p.exterior.coords) for p in got)
                if total > MAX_VERTICES_PER_ANNOTATION:
                    raise _FeatureError(
                        f"has more than {MAX_VERTICES_PER_ANNOTATION:,} vertices (simplify the outline first)"
                    )
                polys.extend(got)
            else:
                dropped += 1
        if dropped and polys:
            rd.warn(
                f"{rd.source}: {where}: dropped {dropped} point/line member(s) of a GeometryCollection"
            )
        if not polys:
            raise _Skip("has no area (points or lines only)")
        return polys
    if kind in ("Point", "MultiPoint", "LineString", "MultiLineString"):
        raise _Skip(f"is a {kind}, not an area")
    if not isinstance(kind, str):
        raise _FeatureError("has a geometry without a 'type' string")
    raise _FeatureError(f"has unknown geometry type {kind!r}")


# ----------------------------------------------------------------------------- ASAP XML
@dataclass
class _RawAsap:
    """One ``Annotation`` element as read: its attributes and raw (Order, X, Y) strings."""

    attrs: dict[str, str]
    pts: list[tuple[str | None, str | None, str | None]]
    n: int = 0


def _parse_asap_xml(
    data: bytes, source: str, stop_early: bool = True
) -> tuple[list[_RawAsap], dict[str, str | None]]:
    """Parse an ASAP file with defusedxml's SAX reader: (annotations, {group name: colour}).

    DTDs are forbidden, so no entity is expanded and nothing external is read. No element tree
    is built; coordinates of an outline above the vertex limit are counted, not kept, and with
    ``stop_early`` such an outline stops the parse at once with an AnnotationError.
    """
    import xml.sax
    import xml.sax.handler

    import defusedxml
    import defusedxml.sax

    if not data.strip():
        raise AnnotationError(f"{source}: the file is empty; expected ASAP XML")
    anns: list[_RawAsap] = []
    groups: dict[str, str | None] = {}
    limit = MAX_VERTICES_PER_ANNOTATION

    class Handler(xml.sax.handler.ContentHandler):
        def __init__(self) -> None:
            super().__init__()
            self.root = True
            self.cur: _RawAsap | None = None

        def startElement(self, name: str, attrs: Any) -> None:  # noqa: N802 (SAX API)
            if self.root:
                self.root = False
                if name != "ASAP_Annotations":
                    raise AnnotationError(
                        f"{source}: root element is <{name[:60]}>, expected <ASAP_Annotations> (ASAP XML)"
                    )
            if name == "Coordinate":
                cur = self.cur
                if cur is None:
                    return
                cur.n += 1
                if cur.n <= limit:
                    cur.pts.append((attrs.get("Order"), attrs.get("X"), attrs.get("Y")))
                elif stop_early:
                    where = _feature_label(
                        len(anns) - 1, cur.attrs.get("Id"), cur.attrs.get("Name")
                    )
                    raise AnnotationError(
                        f"{source}: {where.replace('feature', 'annotation', 1)} has more than "
                        f"{limit:,} vertices; at most that many per annotation are read "
                        "(simplify the outline first)"
                    )
            elif name == "Annotation":
                self.cur = _RawAsap(dict(attrs.items()), [])
                anns.append(self.cur)
            elif name == "Group":
                gname = attrs.get("Name")
                if gname:
                    groups[gname] = attrs.get("Color")

        def endElement(self, name: str) -> None:  # noqa: N802 (SAX API)
            if name == "Annotation":
                self.cur = None

    try:
        defusedxml.sax.parseString(
            data, Handler(), forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except defusedxml.DefusedXmlException as exc:
        raise AnnotationError(
            f"{source}: refused: the XML declares a DTD or entities ({type(exc).__name__}); "
            "ASAP annotation files have none"
        ) from None
    except xml.sax.SAXException as exc:
        raise AnnotationError(f"{source}: not well-formed XML ({exc})") from None
    except (ValueError, LookupError, RecursionError) as exc:
        raise AnnotationError(f"{source}: not usable XML ({exc})") from None
    return anns, groups


def _asap_ring(pts: list[tuple[str | None, str | None, str | None]]) -> np.ndarray:
    """(Order, X, Y) strings -> (n, 2) float array in Order; precise _FeatureError on bad values."""
    if not pts:
        return np.zeros((0, 2))
    orders, xs, ys = zip(*pts, strict=True)
    try:  # fast path: every value a plain number
        xy = np.array([xs, ys], dtype=np.float64).T
        if None in orders:
            order = np.arange(len(pts))
        else:
            order = np.array(orders, dtype=np.int64)
        if np.isfinite(xy).all():
            return xy[np.argsort(order, kind="stable")]
    except (ValueError, TypeError, OverflowError):
        pass
    rows = []
    for k, (o_s, x_s, y_s) in enumerate(pts):
        try:
            o = int(o_s) if o_s is not None else k
        except ValueError:
            raise _FeatureError(
                f"coordinate {k + 1} has Order {o_s[:20]!r}, not an integer"
            ) from None
        rows.append(
            (
                o,
                k,
                _xml_float(x_s, f"coordinate {k + 1} X"),
                _xml_float(y_s, f"coordinate {k + 1} Y"),
            )
        )
    rows.sort()
    return np.asarray([(x, y) for _, _, x, y in rows], dtype=np.float64).reshape(-1, 2)


def _xml_float(v: str | None, what: str) -> float:
    if v is None:
        raise _FeatureError(f"{what} has no value")
    try:
        # Some ASAP builds wrote the locale's decimal comma.
        f = float(v.strip().replace(",", "."))
    except ValueError:
        raise _FeatureError(f"{what} {v[:40]!r} is not a number") from None
    if not math.isfinite(f):
        raise _FeatureError(f"{what} is NaN or infinite")
    return f


def _read_asap(data: bytes, rd: _Reader) -> list[Annotation]:
    raw, group_colors = _parse_asap_xml(data, rd.source, stop_early=not rd.skip_invalid)

    @dataclass
    class _Outline:
        index: int
        where: str
        ann_id: str | None
        name: str
        group: str
        color: str | None
        notes: str
        hole: bool
        poly: Polygon
        flags: dict[str, bool]

    outlines: list[_Outline] = []
    used_groups = {(item.attrs.get("PartOfGroup") or "").strip() for item in raw}
    exclusion = set(_EXCLUSION_GROUPS)
    if "_2" in used_groups and used_groups & {"_0", "_1"}:
        exclusion.add("_2")  # Camelyon16: _0/_1 tumour, _2 exclusion
    for i, item in enumerate(raw):
        el = item.attrs
        n_coords = item.n
        name = el.get("Name") or ""
        where = _feature_label(i, el.get("Id"), name).replace("feature", "annotation", 1)
        typ = (el.get("Type") or "Polygon").strip()
        group = (el.get("PartOfGroup") or "").strip()
        if group == "None":
            group = ""
        role = (el.get("Role") or "").strip().lower()
        is_hole = role == "hole" or (role == "" and group.lower() in exclusion)
        if typ.lower() in ("dot", "pointset", "point", "measurement", "line"):
            rd.skipped += 1
            rd.warn(f"{rd.source}: {where} is a {typ}, not an area: skipped")
            continue
        if typ.lower() not in ("polygon", "rectangle", "spline"):
            rd.refuse(
                where, f"has unknown Type {typ[:40]!r} (accepted: Polygon, Rectangle, Spline)"
            )
            continue
        if n_coords > MAX_VERTICES_PER_ANNOTATION:
            rd.refuse(
                where,
                f"has {n_coords:,} vertices; at most {MAX_VERTICES_PER_ANNOTATION:,} "
                "per annotation are read (simplify the outline first)",
            )
            continue
        try:
            arr = _asap_ring(item.pts)
            notes: dict[str, int] = {}
            ring = _clean_ring(arr, notes, expect_closed=False)
            if ring is None:
                raise _FeatureError("has fewer than three distinct points")
            if notes.get("duplicates"):
                rd.warn(f"{rd.source}: {where}: removed {notes['duplicates']} repeated point(s)")
        except _FeatureError as exc:
            rd.refuse(where, str(exc))
            continue
        if el.get("AutoName") == "1":
            name = ""
        outlines.append(
            _Outline(
                i,
                where,
                el.get("Id"),
                name,
                group,
                el.get("Color"),
                el.get("Notes") or "",
                is_hole,
                Polygon(ring),
                {k: True for k, attr in _ASAP_FLAGS.items() if el.get(attr) == "1"},
            )
        )

    # Group outlines into annotations: by Id when our attributes are there, else one per outline.
    shells_by_key: dict[str, list[_Outline]] = {}
    holes_by_id: dict[str, list[_Outline]] = {}
    loose_holes: list[_Outline] = []
    for o in outlines:
        if o.hole:
            if o.ann_id:
                holes_by_id.setdefault(o.ann_id, []).append(o)
            else:
                loose_holes.append(o)
        else:
            key = f"id:{o.ann_id}" if o.ann_id else f"el:{o.index}"
            shells_by_key.setdefault(key, []).append(o)

    def _valid_area(p: Polygon) -> BaseGeometry:
        return p if p.is_valid else (_polygonal(shapely.make_valid(p)) or Polygon())

    for ann_id, hs in holes_by_id.items():
        if f"id:{ann_id}" not in shells_by_key:
            loose_holes.extend(hs)

    out: list[Annotation] = []
    for shells in shells_by_key.values():
        first = shells[0]
        where = first.where
        warn: list[str] = []
        geom: BaseGeometry
        try:
            repaired = [s for s in shells if not s.poly.is_valid]
            if repaired:
                reason = shapely.is_valid_reason(repaired[0].poly)
                warn.append(f"repaired self-intersection ({reason})")
            parts = [_valid_area(s.poly) for s in shells]
            geom = shapely.union_all(parts) if len(parts) > 1 else parts[0]
            hole_list = holes_by_id.get(first.ann_id or "", []) if first.ann_id else []
            if hole_list:
                geom = geom.difference(shapely.union_all([_valid_area(h.poly) for h in hole_list]))
            out_geom = _polygonal(geom)
            if out_geom is None:
                raise _FeatureError("has no area")
            if rd.clip is not None and not rd.clip.covers(out_geom):
                inside = _polygonal(out_geom.intersection(rd.clip))
                if inside is None:
                    raise _Skip("lies entirely outside the slide")
                warn.append(
                    f"clipped to the slide ({100.0 * (1 - inside.area / out_geom.area):.1f}% "
                    "of its area was outside)"
                )
                out_geom = inside
        except _FeatureError as exc:
            rd.refuse(where, str(exc))
            continue
        except _Skip as exc:
            rd.skipped += 1
            rd.warn(f"{rd.source}: {where} {exc}: skipped")
            continue
        for w in warn:
            rd.warn(f"{rd.source}: {where}: {w}")
        group = first.group
        color = group_colors.get(group) or first.color
        class_id = rd.class_for(group or None, color, where)
        out.append(
            Annotation(
                rd.new_id(first.ann_id), class_id, out_geom, first.name, first.notes,
                dict(first.flags),
            )
        )

    # Exclusions without our Id attribute: cut them from the annotations whose outline contains them.
    for h in loose_holes:
        hp = _valid_area(h.poly)
        if hp.is_empty:
            continue
        hit = False
        for k, ann in enumerate(out):
            shell_area = (
                shapely.Polygon(ann.geometry.exterior)
                if isinstance(ann.geometry, Polygon)
                else shapely.union_all([Polygon(p.exterior) for p in ann.geometry.geoms])
            )
            if shell_area.intersection(hp).area > 0.5 * hp.area:
                g = _polygonal(ann.geometry.difference(hp))
                if g is not None:
                    out[k] = ann.replace(geometry=g)
                    hit = True
        if not hit:
            rd.warn(f"{rd.source}: {h.where} is an exclusion region inside no annotation: ignored")
    return out


# --------------------------------------------------------------------------- public I/O
def format_for_path(path: str | Path) -> str:
    """``"geojson"`` or ``"asap"`` from a file name; AnnotationError for other extensions."""
    suffix = Path(path).suffix.lower()
    if suffix in GEOJSON_SUFFIXES:
        return "geojson"
    if suffix in XML_SUFFIXES:
        return "asap"
    raise AnnotationError(
        f"{path}: unknown annotation file type {suffix or '(no extension)'!r}; "
        "use .geojson or .json (QuPath GeoJSON) or .xml (ASAP XML)"
    )


def read_annotations_bytes(
    data: bytes,
    fmt: str,
    scheme: ClassScheme,
    slide_size: tuple[int, int] | None = None,
    source: str = "annotations",
    skip_invalid: bool = False,
) -> LoadResult:
    """Parse annotation file content (``fmt``: ``"geojson"`` or ``"asap"``). See :func:`load_annotations`."""
    rd = _Reader(scheme, slide_size, skip_invalid, source)
    if len(data) > MAX_FILE_BYTES:
        raise AnnotationError(
            f"{source}: {len(data) / 2**20:.0f} MiB is larger than the {MAX_FILE_BYTES // 2**20} MiB "
            "accepted for an annotation file (export annotations without detections)"
        )
    try:
        if fmt == "geojson":
            anns = _read_geojson(data, rd)
        elif fmt == "asap":
            anns = _read_asap(data, rd)
        else:
            raise AnnotationError(f"{source}: unknown annotation format {fmt!r} (geojson or asap)")
    except AnnotationError:
        raise
    except (RecursionError, MemoryError) as exc:
        raise AnnotationError(
            f"{source}: too large or too deeply nested to read ({type(exc).__name__})"
        ) from None
    except (
        shapely.errors.ShapelyError,
        ValueError,
        TypeError,
        OverflowError,
        LookupError,
        AttributeError,
        IndexError,
    ) as exc:
        # Geometry the checks above let through but GEOS cannot use.
        raise AnnotationError(
            f"{source}: unusable geometry ({type(exc).__name__}: {exc})"[:300]
        ) from None
    return LoadResult(AnnotationSet(anns), rd.finish_warnings(), rd.added, rd.skipped)


def load_annotations(
    path: str | Path,
    scheme: ClassScheme,
    slide_size: tuple[int, int] | None = None,
    skip_invalid: bool = False,
) -> LoadResult:
    """Read a QuPath GeoJSON (``.geojson``/``.json``) or ASAP XML (``.xml``) annotation file.

    Parameters
    ----------
    path
        The file; its extension chooses the format.
    scheme
        The class scheme. **Unknown class names are added to it** (listed in ``added_classes``).
    slide_size
        ``(width, height)`` of the slide's level 0; when given, annotations are clipped to it.
    skip_invalid
        Skip (with a warning) features that would otherwise be refused.

    Returns
    -------
    LoadResult
        ``annotations``, ``warnings`` (one line each, naming the feature), ``added_classes``,
        ``skipped`` (features not read).

    Raises
    ------
    AnnotationError
        On anything that cannot be read; the message names the file and the feature.
    """
    p = Path(path)
    fmt = format_for_path(p)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise AnnotationError(f"{p}: annotation file not found") from None
    except OSError as exc:
        raise AnnotationError(f"{p}: cannot read ({exc.strerror or exc})") from None
    if p.is_dir():
        raise AnnotationError(f"{p}: is a folder, not an annotation file")
    if size > MAX_FILE_BYTES:
        raise AnnotationError(
            f"{p}: {size / 2**20:.0f} MiB is larger than the {MAX_FILE_BYTES // 2**20} MiB accepted "
            "for an annotation file (export annotations without detections)"
        )
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise AnnotationError(f"{p}: cannot read ({exc.strerror or exc})") from None
    return read_annotations_bytes(data, fmt, scheme, slide_size, str(p), skip_invalid)


def _coords_json(ring: Any) -> list[list[float]]:
    arr = np.asarray(ring.coords)[:, :2]
    if arr.size and np.all(arr == np.round(arr)) and np.abs(arr).max() < 2**53:
        return arr.astype(np.int64).tolist()
    return arr.tolist()


def _polygon_coords(p: Polygon) -> list[list[list[float]]]:
    p = shapely.geometry.polygon.orient(p, sign=1.0)
    return [_coords_json(p.exterior)] + [_coords_json(r) for r in p.interiors]


def _geometry_json(g: Geometry) -> dict[str, Any]:
    if isinstance(g, Polygon):
        return {"type": "Polygon", "coordinates": _polygon_coords(g)}
    return {"type": "MultiPolygon", "coordinates": [_polygon_coords(p) for p in g.geoms]}


def _class_info(scheme: ClassScheme, class_id: str) -> tuple[str, tuple[int, int, int]]:
    c = scheme.find(class_id)
    if c is None:
        return class_id, (128, 128, 128)
    return c.name, c.color


def _plain(v: Any, depth: int = 0) -> Any:
    """Properties as strict JSON: NaN/inf (QuPath writes NaN measurements) become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if depth > 50:
        raise AnnotationError("annotation properties are nested too deeply")
    if isinstance(v, dict):
        return {
            str(k) if isinstance(k, (int, float, bool)) else k: _plain(x, depth + 1)
            for k, x in v.items()
        }
    if isinstance(v, (list, tuple)):
        return [_plain(x, depth + 1) for x in v]
    return v


def _feature_text(a: Annotation, cname: str, color: tuple[int, int, int]) -> str:
    props: dict[str, Any] = {"objectType": "annotation"}
    props.update(
        {k: _plain(v) for k, v in a.properties.items() if k not in ("objectType", "classification")}
    )
    if a.name:
        props["name"] = a.name
    else:
        props.pop("name", None)
    meta = dict(props["metadata"]) if isinstance(props.get("metadata"), dict) else {}
    meta.pop(QUPATH_DESCRIPTION_KEY, None)
    if a.notes:
        props["description"] = a.notes
        meta[QUPATH_DESCRIPTION_KEY] = a.notes  # where QuPath reads it
    if meta:
        props["metadata"] = meta
    else:
        props.pop("metadata", None)
    props["classification"] = {"name": cname, "color": list(color)}
    props.setdefault(LOCKED_KEY, False)
    if props.get(HIDDEN_KEY) is not True:
        props.pop(HIDDEN_KEY, None)
    feature = {
        "type": "Feature",
        "id": a.id,
        "geometry": _geometry_json(a.geometry),
        "properties": props,
    }
    try:
        return json.dumps(feature, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise AnnotationError(
            f"annotation {a.id}: properties are not plain JSON values ({exc})"
        ) from None


class GeoJsonCache:
    """Encoded GeoJSON features of annotations that did not change since the last save.

    Encoding coordinates dominates the cost of a save; with a cache, an autosave after one edit
    encodes one feature. A feature is reused only when the very same ``Annotation`` object is
    still in the set with the same class name and colour, name, notes, geometry object and
    properties (annotations are replaced, not mutated, by edits; in-place changes of these
    fields are detected too).
    """

    def __init__(self) -> None:
        self._items: dict[str, tuple[Annotation, tuple[Any, ...], Any, str]] = {}

    def text(self, a: Annotation, cname: str, color: tuple[int, int, int]) -> str:
        key = (cname, color, a.class_id, a.name, a.notes)
        hit = self._items.get(a.id)
        if (
            hit is not None
            and hit[0] is a
            and hit[1] == key
            and hit[2][0] is a.geometry
            and hit[2][1] == a.properties
        ):
            return hit[3]
        text = _feature_text(a, cname, color)
        self._items[a.id] = (a, key, (a.geometry, copy.deepcopy(a.properties)), text)
        return text

    def keep_only(self, ids: Iterable[str]) -> None:
        keep = set(ids)
        for k in [k for k in self._items if k not in keep]:
            del self._items[k]


def _to_geojson(
    aset: AnnotationSet, scheme: ClassScheme, cache: GeoJsonCache | None = None
) -> bytes:
    parts = []
    for a in aset:
        cname, color = _class_info(scheme, a.class_id)
        parts.append(
            cache.text(a, cname, color) if cache is not None else _feature_text(a, cname, color)
        )
    if cache is not None:
        cache.keep_only(aset.ids)
    text = '{"type":"FeatureCollection","features":[' + ",".join(parts) + "]}"
    return text.encode("utf-8", "replace")  # a lone surrogate typed into a name becomes "?"


def _is_rectangle(p: Polygon) -> bool:
    if p.interiors:
        return False
    coords = np.asarray(p.exterior.coords)
    if len(coords) != 5:
        return False
    minx, miny, maxx, maxy = p.bounds
    return bool(
        np.all(np.isin(coords[:, 0], (minx, maxx))) and np.all(np.isin(coords[:, 1], (miny, maxy)))
    )


_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _xml_text(text: str) -> str:
    """Drop characters XML 1.0 cannot hold (control characters, lone surrogates)."""
    return _XML_BAD.sub("", text)


def _text(value: str) -> str:
    """A string from JSON with lone surrogates (not encodable as UTF-8) replaced by U+FFFD."""
    return _SURROGATE.sub("\ufffd", value)


def _fmt_num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _to_asap(aset: AnnotationSet, scheme: ClassScheme) -> bytes:
    root = ET.Element("ASAP_Annotations")
    anns = ET.SubElement(root, "Annotations")
    groups_used: dict[str, tuple[int, int, int]] = {}
    any_hole = False
    n = 0

    def outline(
        ring: Any, name: str, typ: str, group: str, color: str, ann: Annotation, role: str
    ) -> None:
        nonlocal n
        attrs = {
            "Name": _xml_text(name),
            "Type": typ,
            "PartOfGroup": _xml_text(group),
            "Color": color,
            "Id": ann.id,
            "Role": role,
        }
        if not ann.name:
            attrs["AutoName"] = "1"  # ASAP needs a Name; ours was empty
        if ann.notes and role == "shell":
            attrs["Notes"] = _xml_text(ann.notes)
        for key, attr in _ASAP_FLAGS.items():
            if ann.properties.get(key) is True:
                attrs[attr] = "1"  # ours, like Id and Role; ASAP ignores them
        el = ET.SubElement(anns, "Annotation", attrs)
        coords = ET.SubElement(el, "Coordinates")
        arr = np.asarray(ring.coords)[:-1, :2]  # ASAP rings are not closed
        for k, (x, y) in enumerate(arr):
            ET.SubElement(
                coords, "Coordinate", {"Order": str(k), "X": _fmt_num(x), "Y": _fmt_num(y)}
            )
        n += 1

    for a in aset:
        cname, color = _class_info(scheme, a.class_id)
        hexcol = "#{:02X}{:02X}{:02X}".format(*color)
        groups_used.setdefault(cname, color)
        name = a.name or f"Annotation {n}"
        polys = [a.geometry] if isinstance(a.geometry, Polygon) else list(a.geometry.geoms)
        for p in polys:
            outline(
                p.exterior,
                name,
                "Rectangle" if _is_rectangle(p) else "Polygon",
                cname,
                hexcol,
                a,
                "shell",
            )
        for p in polys:
            for r in p.interiors:
                any_hole = True
                outline(r, name, "Polygon", _HOLE_GROUP, "#000000", a, "hole")
    groups = ET.SubElement(root, "AnnotationGroups")
    if any_hole and _HOLE_GROUP not in groups_used:
        groups_used[_HOLE_GROUP] = (0, 0, 0)
    for gname, color in groups_used.items():
        g = ET.SubElement(
            groups,
            "Group",
            {
                "Name": _xml_text(gname),
                "PartOfGroup": "None",
                "Color": "#{:02X}{:02X}{:02X}".format(*color),
            },
        )
        ET.SubElement(g, "Attributes")
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def annotations_to_bytes(
    aset: AnnotationSet, fmt: str, scheme: ClassScheme, cache: GeoJsonCache | None = None
) -> bytes:
    """Serialise to ``"geojson"`` (QuPath) or ``"asap"`` (ASAP XML) bytes.

    ``cache`` (GeoJSON only) reuses the encoding of annotations unchanged since the last call.
    """
    if fmt == "geojson":
        return _to_geojson(aset, scheme, cache)
    if fmt == "asap":
        return _to_asap(aset, scheme)
    raise AnnotationError(f"unknown annotation format {fmt!r} (geojson or asap)")


def save_annotations(aset: AnnotationSet, path: str | Path, scheme: ClassScheme) -> None:
    """Write annotations atomically; ``.geojson``/``.json`` -> QuPath GeoJSON, ``.xml`` -> ASAP XML.

    The content is built in memory first; then a temporary file beside ``path`` is written,
    fsynced and renamed over it, so a failure at any point leaves the previous file whole.
    """
    p = Path(path)
    data = annotations_to_bytes(aset, format_for_path(p), scheme)
    with atomic_path(p) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
