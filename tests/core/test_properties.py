"""Property tests (hypothesis): annotation readers on mutated files, round trips, the window grid.

Complements the generated-JSON and random-bytes properties in ``test_annotations.py``: here valid
GeoJSON and ASAP XML files are *mutated* (bytes flipped, cut, spliced, duplicated), arbitrary
polygons with holes and non-ASCII names must round-trip through both formats, and the patch grid
must keep exactly the windows that satisfy the inside rule while its positions cover the area.
Example counts stay modest for CI (``max_examples`` <= 60, no deadline).
"""

from __future__ import annotations

import math

import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

from crc_core.annotations import (
    Annotation,
    AnnotationSet,
    annotations_to_bytes,
    read_annotations_bytes,
)
from crc_core.classes import ClassScheme
from crc_core.errors import CrcError
from crc_core.patches import grid_windows

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))


# ----------------------------------------------------------------------------------- polygons
@st.composite
def star_polygons(draw: st.DrawFn, with_hole: bool | None = None) -> Polygon:
    """A valid star-shaped polygon (vertices at growing angles), optionally with a hole."""
    n = draw(st.integers(3, 24))
    cx = draw(st.integers(300, 5000))
    cy = draw(st.integers(300, 5000))
    angles = sorted(draw(st.lists(st.floats(0, 2 * math.pi, exclude_max=True), min_size=n,
                                  max_size=n, unique=True)))
    radii = draw(st.lists(st.integers(120, 300), min_size=n, max_size=n))
    pts = [(round(cx + r * math.cos(a), 2), round(cy + r * math.sin(a), 2))
           for a, r in zip(angles, radii, strict=True)]
    holes = []
    if with_hole is None:
        with_hole = draw(st.booleans())
    if with_hole:
        h = draw(st.integers(10, 60))
        holes = [[(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]]
    poly = Polygon(pts, holes)
    if not poly.is_valid or poly.area < 1.0 or (holes and not Polygon(pts).contains(
            Polygon(holes[0]))):
        poly = box(cx - 100, cy - 100, cx + 100, cy + 100, ccw=True)
    return poly


names = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)


@st.composite
def annotation_sets(draw: st.DrawFn) -> AnnotationSet:
    scheme = ClassScheme.paper()
    items = []
    for _ in range(draw(st.integers(1, 4))):
        geom = draw(star_polygons())
        items.append(Annotation.new(draw(st.sampled_from(scheme.ids)), geom,
                                    name=draw(names)))
    return AnnotationSet(items)


def _valid_file(fmt: str) -> bytes:
    scheme = ClassScheme.paper()
    aset = AnnotationSet([
        Annotation.rectangle("normal", 10, 20, 300, 200, name="a"),
        Annotation.new("adenoma", Polygon([(400, 400), (900, 420), (700, 900)],
                                          [[(600, 500), (700, 520), (650, 600)]]), name="b"),
    ])
    return annotations_to_bytes(aset, fmt, scheme)


VALID = {"geojson": _valid_file("geojson"), "asap": _valid_file("asap")}


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid file of either format after 1-4 byte-level edits."""
    fmt = draw(st.sampled_from(["geojson", "asap"]))
    data = bytearray(VALID[fmt])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "duplicate", "delete"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.sampled_from([b"<", b"&", b"\"", b"]", b"NaN", b"-1e999",
                                              b"\x00", b"\xff\xfe", b"<!ENTITY x 'y'>", b"{",
                                              b"&lol;", b"9" * 40]))
        elif op == "duplicate":
            j = draw(st.integers(i, len(data)))
            data[j:j] = data[i:j]
        else:
            j = draw(st.integers(i, min(len(data), i + 50)))
            del data[i:j]
    return fmt, bytes(data)


# ----------------------------------------------------------------------------------- readers
@SETTINGS
@given(mutated())
def test_mutated_annotation_files_give_annotations_or_a_crc_error(case: tuple[str, bytes]) -> None:
    fmt, data = case
    try:
        res = read_annotations_bytes(data, fmt, ClassScheme.paper(), slide_size=(5000, 5000))
    except CrcError:
        return
    for a in res.annotations:
        assert a.geometry.is_valid and a.area > 0


@SETTINGS
@given(mutated(), st.booleans())
def test_mutated_files_with_skip_invalid_never_raise_anything_else(case: tuple[str, bytes],
                                                                   skip: bool) -> None:
    fmt, data = case
    try:
        read_annotations_bytes(data, fmt, ClassScheme.paper(), skip_invalid=skip)
    except CrcError:
        pass


@SETTINGS
@given(annotation_sets(), st.sampled_from(["geojson", "asap"]))
def test_polygons_with_holes_and_any_names_round_trip(aset: AnnotationSet, fmt: str) -> None:
    scheme = ClassScheme.paper()
    back = read_annotations_bytes(annotations_to_bytes(aset, fmt, scheme), fmt, scheme)
    assert not back.added_classes
    got = list(back.annotations)
    assert [(a.id, a.class_id, a.name) for a in got] == [(a.id, a.class_id, a.name) for a in aset]
    for a, b in zip(aset, got, strict=True):
        assert a.geometry.symmetric_difference(b.geometry).area < 1e-6 * max(a.area, 1.0)


@SETTINGS
@given(annotation_sets())
def test_geojson_to_asap_and_back_keeps_classes_and_areas(aset: AnnotationSet) -> None:
    scheme = ClassScheme.paper()
    xml = annotations_to_bytes(aset, "asap", scheme)
    mid = read_annotations_bytes(xml, "asap", scheme).annotations
    back = read_annotations_bytes(annotations_to_bytes(mid, "geojson", scheme), "geojson",
                                  scheme).annotations
    assert [a.class_id for a in back] == [a.class_id for a in aset]
    # Within a thousandth of a square pixel (rounding both to 3 decimals failed when they straddled
    # a rounding boundary, e.g. 73193.7175 +/- 1e-9).
    for a, b in zip(aset, back, strict=True):
        assert abs(a.area - b.area) < 1e-3


# ----------------------------------------------------------------------------------- window grid
def _inside(geom: BaseGeometry, x: int, y: int, w: int) -> float:
    return box(x, y, x + w, y + w).intersection(geom).area / float(w * w)


grid_params = st.tuples(st.sampled_from([64, 100, 128, 256]),  # window
                        st.floats(0.0, 0.75),                   # overlap
                        st.floats(0.05, 1.0))                   # min_inside


@SETTINGS
@given(star_polygons(), grid_params)
def test_kept_windows_are_exactly_the_grid_windows_meeting_the_inside_rule(
        geom: Polygon, params: tuple[int, float, float]) -> None:
    window, overlap, min_inside = params
    stride = max(1, int(round(window * (1 - overlap))))
    kept, tried = grid_windows(geom, window, stride, min_inside)
    everything, tried_all = grid_windows(geom, window, stride, 0.0)
    assert tried == tried_all == len(everything)
    kept_set = {tuple(v) for v in kept.tolist()}
    assert kept_set <= {tuple(v) for v in everything.tolist()}
    for x, y in everything.tolist():
        frac = _inside(geom, x, y, window)
        if (x, y) in kept_set:
            assert frac >= min_inside - 1e-6
        else:
            assert frac < min_inside + 1e-6


@SETTINGS
@given(star_polygons(), grid_params)
def test_grid_windows_cover_the_area_interior(geom: Polygon,
                                              params: tuple[int, float, float]) -> None:
    window, overlap, _ = params
    stride = max(1, int(round(window * (1 - overlap))))
    minx, miny, maxx, maxy = geom.bounds
    everything, _ = grid_windows(geom, window, stride, 0.0)
    if maxx - minx < window or maxy - miny < window:
        return  # an area narrower than a window has no grid (reported as too small elsewhere)
    cover = shapely.union_all([box(x, y, x + window, y + window) for x, y in everything.tolist()])
    assert geom.difference(cover).area < 1e-6 * geom.area


@SETTINGS
@given(st.integers(0, 500), st.integers(0, 500), st.integers(128, 1500), st.integers(128, 1500),
       st.sampled_from([64, 128]), st.floats(0.0, 0.75))
def test_full_inside_windows_of_a_rectangle_cover_it_exactly(x: int, y: int, w: int, h: int,
                                                             window: int, overlap: float) -> None:
    rect = box(x, y, x + w, y + h)
    stride = max(1, int(round(window * (1 - overlap))))
    kept, _ = grid_windows(rect, window, stride, 1.0)
    cover = shapely.union_all([box(a, b, a + window, b + window) for a, b in kept.tolist()])
    assert cover.equals(rect)
