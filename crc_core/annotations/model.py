"""The annotation model: :class:`Annotation` (one area on shapely geometry, level-0 pixels),
:class:`AnnotationSet` (ordered, by id), :class:`LoadResult` and :func:`clean_geometry`; the
property keys shared by the readers and writers (see :mod:`crc_core.annotations`)."""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

from crc_core.classes import ClassScheme
from crc_core.errors import AnnotationError

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
        """Put ``ann`` in place of the annotation with the same id (same position); return the old
        one."""
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
    """Make an area geometry valid: ``make_valid`` keeping polygonal parts; a MultiPolygon of one
    part becomes a Polygon.

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


