"""QuPath GeoJSON: reading features into annotations, and writing (with :class:`GeoJsonCache`, which
re-encodes only the annotations changed since the last save)."""

from __future__ import annotations

import copy
import json
import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np
import shapely
from shapely.geometry import Polygon

from crc_core.annotations import geometry
from crc_core.annotations.geometry import (
    _class_info,
    _count_vertices,
    _feature_label,
    _FeatureError,
    _finish_geometry,
    _jtype,
    _polygon_json,
    _Reader,
    _Skip,
    _text,
)
from crc_core.annotations.model import (
    HIDDEN_KEY,
    LOCKED_KEY,
    QUPATH_DESCRIPTION_KEY,
    Annotation,
    AnnotationSet,
    Geometry,
)
from crc_core.classes import ClassScheme
from crc_core.errors import AnnotationError

_NON_ANNOTATION_TYPES = {"detection", "cell", "tile", "tma core", "tma_core", "tmacore", "root"}
_QUPATH_LEGACY_IDS = {
    "PathAnnotationObject": "annotation",
    "PathDetectionObject": "detection",
    "PathCellObject": "cell",
    "PathTileObject": "tile",
    "TMACoreObject": "tma core",
    "PathRootObject": "root",
}


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
                    f"{rd.source}: 'features' is {_jtype(features)}, expected a list of GeoJSON "
                    "features"
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
            f"{rd.source}: top level is {_jtype(doc)}; expected a GeoJSON FeatureCollection, a "
            "Feature "
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
        ann = rd.attempt(where, _feature_to_annotation, feat, props, where, rd)
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


def _check_vertex_count(coords: Any, depth: int) -> None:
    """Refuse an outline above the vertex limit before any geometry is built."""
    n = _count_vertices(coords, depth)
    limit = geometry.MAX_VERTICES_PER_ANNOTATION
    if n > limit:
        raise _FeatureError(
            f"has {n:,} vertices; at most {limit:,} per annotation are read "
            "(simplify the outline first)"
        )


def _geometry_polys(
    geom: dict[str, Any], what: str, notes: dict[str, int], where: str, rd: _Reader, depth: int
) -> list[Polygon]:
    kind = geom.get("type")
    coords = geom.get("coordinates")
    if kind == "Polygon":
        _check_vertex_count(coords, 3)
        p = _polygon_json(coords, what, notes)
        return [p] if p is not None else []
    if kind == "MultiPolygon":
        if not isinstance(coords, list):
            raise _FeatureError(
                f"{what} coordinates are {_jtype(coords)}, expected a list of polygons"
            )
        _check_vertex_count(coords, 4)
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
                if total > geometry.MAX_VERTICES_PER_ANNOTATION:
                    raise _FeatureError(
                        f"has more than {geometry.MAX_VERTICES_PER_ANNOTATION:,} vertices "
                        "(simplify the outline first)"
                    )
                polys.extend(got)
            else:
                dropped += 1
        if dropped and polys:
            rd.warn(
                f"{rd.source}: {where}: dropped {dropped} point/line member(s) of a "
                "GeometryCollection"
            )
        if not polys:
            raise _Skip("has no area (points or lines only)")
        return polys
    if kind in ("Point", "MultiPoint", "LineString", "MultiLineString"):
        raise _Skip(f"is a {kind}, not an area")
    if not isinstance(kind, str):
        raise _FeatureError("has a geometry without a 'type' string")
    raise _FeatureError(f"has unknown geometry type {kind!r}")


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


