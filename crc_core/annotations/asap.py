"""ASAP XML: reading (defusedxml SAX, holes and parts merged by ``Id``, exclusion groups cut out)
and writing (one element per outline; see :mod:`crc_core.annotations` for the encoding)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np
import shapely
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from crc_core.annotations import geometry
from crc_core.annotations.geometry import (
    _class_info,
    _clean_ring,
    _feature_label,
    _FeatureError,
    _Reader,
    _Skip,
    _xml_text,
)
from crc_core.annotations.model import (
    _ASAP_FLAGS,
    Annotation,
    AnnotationSet,
    _polygonal,
)
from crc_core.classes import ClassScheme
from crc_core.errors import AnnotationError

_EXCLUSION_GROUPS = {"exclusion", "_exclusion", "exclude", "excluded", "exclusions"}
_HOLE_GROUP = "Exclusion"


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
    limit = geometry.MAX_VERTICES_PER_ANNOTATION

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
                        f"{source}: root element is <{name[:60]}>, expected <ASAP_Annotations> "
                        "(ASAP XML)"
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


@dataclass
class _Outline:
    """One ASAP element read as an outline (a shell, or a hole of the annotation with its Id)."""

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


def _read_asap(data: bytes, rd: _Reader) -> list[Annotation]:
    """Annotations of an ASAP file: outlines read, grouped by Id, merged, holes cut out."""
    raw, group_colors = _parse_asap_xml(data, rd.source, stop_early=not rd.skip_invalid)
    used_groups = {(item.attrs.get("PartOfGroup") or "").strip() for item in raw}
    exclusion = set(_EXCLUSION_GROUPS)
    if "_2" in used_groups and used_groups & {"_0", "_1"}:
        exclusion.add("_2")  # Camelyon16: _0/_1 tumour, _2 exclusion
    outlines = [o for i, item in enumerate(raw) if (o := _asap_outline(i, item, exclusion, rd))]
    shells_by_key, holes_by_id, loose_holes = _group_outlines(outlines)
    out: list[Annotation] = []
    for shells in shells_by_key.values():
        first = shells[0]
        holes = holes_by_id.get(first.ann_id or "", []) if first.ann_id else []
        merged = rd.attempt(first.where, _merge_outlines, shells, holes, rd)
        if merged is None:
            continue
        geom, warn = merged
        for w in warn:
            rd.warn(f"{rd.source}: {first.where}: {w}")
        color = group_colors.get(first.group) or first.color
        class_id = rd.class_for(first.group or None, color, first.where)
        out.append(
            Annotation(
                rd.new_id(first.ann_id), class_id, geom, first.name, first.notes, dict(first.flags)
            )
        )
    _cut_loose_holes(out, loose_holes, rd)
    return out


def _asap_outline(i: int, item: _RawAsap, exclusion: set[str], rd: _Reader) -> _Outline | None:
    """Element ``i`` as an outline; None (with a warning or a refusal) when it is not an area."""
    el = item.attrs
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
        return None
    if typ.lower() not in ("polygon", "rectangle", "spline"):
        rd.refuse(where, f"has unknown Type {typ[:40]!r} (accepted: Polygon, Rectangle, Spline)")
        return None
    limit = geometry.MAX_VERTICES_PER_ANNOTATION
    if item.n > limit:
        rd.refuse(
            where,
            f"has {item.n:,} vertices; at most {limit:,} "
            "per annotation are read (simplify the outline first)",
        )
        return None
    ring = rd.attempt(where, _asap_clean_ring, item, where, rd)
    if ring is None:
        return None
    if el.get("AutoName") == "1":
        name = ""
    flags = {k: True for k, attr in _ASAP_FLAGS.items() if el.get(attr) == "1"}
    notes = el.get("Notes") or ""
    return _Outline(
        i, where, el.get("Id"), name, group, el.get("Color"), notes, is_hole, Polygon(ring), flags
    )


def _asap_clean_ring(item: _RawAsap, where: str, rd: _Reader) -> np.ndarray:
    arr = _asap_ring(item.pts)
    notes: dict[str, int] = {}
    ring = _clean_ring(arr, notes, expect_closed=False)
    if ring is None:
        raise _FeatureError("has fewer than three distinct points")
    if notes.get("duplicates"):
        rd.warn(f"{rd.source}: {where}: removed {notes['duplicates']} repeated point(s)")
    return ring


def _group_outlines(
    outlines: list[_Outline],
) -> tuple[dict[str, list[_Outline]], dict[str, list[_Outline]], list[_Outline]]:
    """Outlines into annotations: by Id when our attributes are there, else one per outline.

    Returns (shells by annotation key, holes by Id, holes that belong to no known Id).
    """
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
    for ann_id, hs in holes_by_id.items():
        if f"id:{ann_id}" not in shells_by_key:
            loose_holes.extend(hs)
    return shells_by_key, holes_by_id, loose_holes


def _valid_area(p: Polygon) -> BaseGeometry:
    return p if p.is_valid else (_polygonal(shapely.make_valid(p)) or Polygon())


def _merge_outlines(
    shells: list[_Outline], holes: list[_Outline], rd: _Reader
) -> tuple[BaseGeometry, list[str]]:
    """One annotation's geometry: its shells united, its holes cut out, clipped to the slide.

    Returns (geometry, repair notes); raises _FeatureError (no area) or _Skip (outside the slide).
    """
    warn: list[str] = []
    repaired = [s for s in shells if not s.poly.is_valid]
    if repaired:
        reason = shapely.is_valid_reason(repaired[0].poly)
        warn.append(f"repaired self-intersection ({reason})")
    parts = [_valid_area(s.poly) for s in shells]
    geom: BaseGeometry = shapely.union_all(parts) if len(parts) > 1 else parts[0]
    if holes:
        geom = geom.difference(shapely.union_all([_valid_area(h.poly) for h in holes]))
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
    return out_geom, warn


def _cut_loose_holes(out: list[Annotation], loose_holes: list[_Outline], rd: _Reader) -> None:
    """Exclusions without our Id attribute: cut them from the annotations whose outline
    contains them (more than half of the hole inside the outline)."""
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


