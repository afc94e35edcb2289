"""Shapely helpers for the drawing tools: cleaning drawn shapes, hit tests, vertices, Qt paths.

All coordinates are level-0 pixels. Drawn outlines may cross themselves (a lasso, a polygon clicked
in a figure eight); :func:`clean_polygonal` repairs them with ``shapely.make_valid`` and keeps only
the
area, so every stored geometry is a valid Polygon or MultiPolygon.
"""

from __future__ import annotations

from collections.abc import Sequence

import shapely
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QPainterPath, QPolygonF
from shapely.geometry import MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry

Polygonal = Polygon | MultiPolygon


def clean_polygonal(geom: BaseGeometry | None, min_area: float = 1e-6) -> Polygonal | None:
    """A valid Polygon/MultiPolygon with the area of ``geom``, or ``None`` when it has none."""
    if geom is None or geom.is_empty:
        return None
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    polys: list[Polygon] = []
    if isinstance(geom, Polygon):
        polys = [geom]
    elif isinstance(geom, MultiPolygon):
        polys = list(geom.geoms)
    elif hasattr(geom, "geoms"):
        for g in geom.geoms:  # GeometryCollection from make_valid
            c = clean_polygonal(g, min_area)
            if c is not None:
                polys.extend([c] if isinstance(c, Polygon) else list(c.geoms))
    polys = [p for p in polys if p.area > min_area]
    if not polys:
        return None
    if len(polys) == 1:
        return polys[0]
    merged = shapely.union_all(polys)
    if isinstance(merged, (Polygon, MultiPolygon)):
        return merged
    return MultiPolygon(polys)


def polygon_from_points(points: Sequence[tuple[float, float]]) -> Polygonal | None:
    """The area enclosed by a clicked or drawn outline (``None`` under 3 distinct points)."""
    pts: list[tuple[float, float]] = []
    for p in points:
        if not pts or (abs(p[0] - pts[-1][0]) > 1e-9 or abs(p[1] - pts[-1][1]) > 1e-9):
            pts.append((float(p[0]), float(p[1])))
    if len(pts) >= 2 and pts[0] == pts[-1]:
        pts.pop()
    if len(pts) < 3:
        return None
    return clean_polygonal(Polygon(pts))


def stroke_area(points: Sequence[tuple[float, float]], radius: float) -> Polygonal | None:
    """The area swept by a round brush of ``radius`` along ``points``."""
    if not points or radius <= 0:
        return None
    if len(points) == 1:
        return clean_polygonal(Point(points[0]).buffer(radius, quad_segs=16))
    line = shapely.LineString(points)
    return clean_polygonal(line.buffer(radius, quad_segs=16))


def polygons(geom: BaseGeometry) -> list[Polygon]:
    if isinstance(geom, Polygon):
        return [geom]
    if isinstance(geom, MultiPolygon):
        return list(geom.geoms)
    return []


def to_painter_path(geom: BaseGeometry) -> QPainterPath:
    """A QPainterPath (odd-even fill: holes stay holes) in level-0 px."""
    path = QPainterPath()
    path.setFillRule(Qt.FillRule.OddEvenFill)
    for poly in polygons(geom):
        for ring in [poly.exterior, *poly.interiors]:
            pts = [QPointF(x, y) for x, y in ring.coords]
            path.addPolygon(QPolygonF(pts))
            path.closeSubpath()
    return path


VertexId = tuple[int, int, int]  # (polygon index, ring index (0 = exterior), vertex index)


def vertices(geom: BaseGeometry) -> list[tuple[VertexId, tuple[float, float]]]:
    """Every editable vertex (the closing duplicate of each ring excluded)."""
    out: list[tuple[VertexId, tuple[float, float]]] = []
    for pi, poly in enumerate(polygons(geom)):
        for ri, ring in enumerate([poly.exterior, *poly.interiors]):
            coords = list(ring.coords)[:-1]
            for vi, (x, y) in enumerate(coords):
                out.append(((pi, ri, vi), (x, y)))
    return out


def _rebuild(geom: BaseGeometry, edit) -> Polygonal | None:  # type: ignore[no-untyped-def]
    new_polys = []
    for pi, poly in enumerate(polygons(geom)):
        rings = [list(r.coords)[:-1] for r in [poly.exterior, *poly.interiors]]
        edit(pi, rings)
        if len(rings[0]) < 3:
            continue
        holes = [r for r in rings[1:] if len(r) >= 3]
        new_polys.append(Polygon(rings[0], holes))
    if not new_polys:
        return None
    return clean_polygonal(new_polys[0] if len(new_polys) == 1 else MultiPolygon(new_polys))


def move_vertex(geom: BaseGeometry, vid: VertexId, xy: tuple[float, float]) -> Polygonal | None:
    """``geom`` with one vertex moved (repaired if the move made it cross itself)."""

    def edit(pi: int, rings: list[list[tuple[float, float]]]) -> None:
        if pi == vid[0]:
            rings[vid[1]][vid[2]] = (float(xy[0]), float(xy[1]))

    return _rebuild(geom, edit)


def delete_vertex(geom: BaseGeometry, vid: VertexId) -> Polygonal | None:
    """``geom`` without one vertex (a ring left with fewer than 3 vertices disappears)."""

    def edit(pi: int, rings: list[list[tuple[float, float]]]) -> None:
        if pi == vid[0]:
            del rings[vid[1]][vid[2]]

    return _rebuild(geom, edit)


def insert_vertex(geom: BaseGeometry, xy: tuple[float, float], tol: float) -> Polygonal | None:
    """``geom`` with a vertex added on the edge nearest ``xy`` when that edge is within ``tol``."""
    best: tuple[float, int, int, int] | None = None
    p = Point(xy)
    for pi, poly in enumerate(polygons(geom)):
        for ri, ring in enumerate([poly.exterior, *poly.interiors]):
            c = list(ring.coords)
            for i in range(len(c) - 1):
                d = shapely.LineString([c[i], c[i + 1]]).distance(p)
                if d <= tol and (best is None or d < best[0]):
                    best = (d, pi, ri, i + 1)
    if best is None:
        return None
    _, bpi, bri, at = best

    def edit(pi: int, rings: list[list[tuple[float, float]]]) -> None:
        if pi == bpi:
            rings[bri].insert(at, (float(xy[0]), float(xy[1])))

    return _rebuild(geom, edit)
