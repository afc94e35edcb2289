"""Annotations: model, QuPath GeoJSON and ASAP XML round trips, repairs, refusals, atomic saves."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon, Polygon, box

import crc_core.annotations as annmod
from crc_core.annotations import (
    Annotation,
    AnnotationSet,
    load_annotations,
    save_annotations,
)
from crc_core.classes import ClassScheme
from crc_core.errors import AnnotationError

# A realistic export of QuPath 0.5.1 ("Export objects as GeoJSON", pretty-printed,
# FeatureCollection),
# with a rectangle, a brush annotation with a hole, a multipolygon, a point annotation, a derived
# class, a detection and an unclassified annotation.
QUPATH_05 = """{
  "type": "FeatureCollection",
  "features": [
    {
      "type": "Feature",
      "id": "2f1d3c8e-61b5-4f2a-9a6e-4b1f0f7f3a10",
      "geometry": {
        "type": "Polygon",
        "coordinates": [[[1024, 768], [1536, 768], [1536, 1280], [1024, 1280], [1024, 768]]]
      },
      "properties": {
        "objectType": "annotation",
        "name": "Rectangle 1",
        "classification": {"name": "Normal", "color": [76, 175, 80]},
        "isLocked": false
      }
    },
    {
      "type": "Feature",
      "id": "8b0e4a5c-0f43-4c47-8a8d-96c1a1f9d2b4",
      "geometry": {
        "type": "Polygon",
        "coordinates": [
          [[2000.5, 2000], [3000, 2000], [3000, 3000], [2000.5, 3000], [2000.5, 2000]],
          [[2400, 2400], [2600, 2400], [2600, 2600], [2400, 2600], [2400, 2400]]
        ]
      },
      "properties": {
        "objectType": "annotation",
        "classification": {"name": "Adenocarcinoma moderately differentiated",
                           "color": [255, 112, 67]},
        "isLocked": false,
        "measurements": {"Area px^2": 959500.0}
      }
    },
    {
      "type": "Feature",
      "id": "c0f7b8f2-2f0c-4d8e-8b7e-3f6b0d1e4a55",
      "geometry": {
        "type": "MultiPolygon",
        "coordinates": [
          [[[100, 100], [200, 100], [200, 200], [100, 200], [100, 100]]],
          [[[400, 100], [500, 100], [500, 200], [400, 200], [400, 100]]]
        ]
      },
      "properties": {
        "objectType": "annotation",
        "name": "Two glands",
        "classification": {"name": "Adenoma", "color": [33, 150, 243]}
      }
    },
    {
      "type": "Feature",
      "id": "0d3c9a3e-9ef5-44b3-bb9b-1a6e7d6c0b11",
      "geometry": {"type": "MultiPoint", "coordinates": [[10, 10], [20, 20]]},
      "properties": {"objectType": "annotation", "name": "Points 1"}
    },
    {
      "type": "Feature",
      "id": "7a61f0cb-1b3e-4e3e-9d4c-5f5a2f0b9e01",
      "geometry": {
        "type": "Polygon",
        "coordinates": [[[600, 600], [700, 600], [700, 700], [600, 700], [600, 600]]]
      },
      "properties": {
        "objectType": "annotation",
        "classification": {"names": ["Tumor", "Positive"], "color": [200, 50, 50]}
      }
    },
    {
      "type": "Feature",
      "id": "aa3a0d7c-5b1e-4c3b-8c5e-9c9b1c2d3e4f",
      "geometry": {
        "type": "Polygon",
        "coordinates": [[[10, 10], [12, 10], [12, 12], [10, 12], [10, 10]]]
      },
      "properties": {"objectType": "detection",
                     "classification": {"name": "Tumor", "color": [200, 0, 0]}}
    },
    {
      "type": "Feature",
      "id": "5e0c3f8d-7d2b-4a9b-8f13-0c2a6b1d9e77",
      "geometry": {
        "type": "Polygon",
        "coordinates": [[[5000, 5000], [5100, 5000], [5100, 5100], [5000, 5100], [5000, 5000]]]
      },
      "properties": {"objectType": "annotation", "isLocked": true}
    }
  ]
}
"""

# An ASAP 1.9 file as ASAP itself writes it: no Id/Role attributes, a tumour outline with an
# exclusion region cut out of it, and a small normal island inside that exclusion.
ASAP_NATIVE = """<?xml version="1.0"?>
<ASAP_Annotations>
\t<Annotations>
\t\t<Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="Tumor" Color="#F4FA58">
\t\t\t<Coordinates>
\t\t\t\t<Coordinate Order="0" X="0" Y="0" />
\t\t\t\t<Coordinate Order="1" X="1000" Y="0" />
\t\t\t\t<Coordinate Order="2" X="1000" Y="1000" />
\t\t\t\t<Coordinate Order="3" X="0" Y="1000" />
\t\t\t</Coordinates>
\t\t</Annotation>
\t\t<Annotation Name="Annotation 1" Type="Polygon" PartOfGroup="Exclusion" Color="#64FE2E">
\t\t\t<Coordinates>
\t\t\t\t<Coordinate Order="0" X="200" Y="200" />
\t\t\t\t<Coordinate Order="1" X="600" Y="200" />
\t\t\t\t<Coordinate Order="2" X="600" Y="600" />
\t\t\t\t<Coordinate Order="3" X="200" Y="600" />
\t\t\t</Coordinates>
\t\t</Annotation>
\t\t<Annotation Name="Annotation 2" Type="Rectangle" PartOfGroup="Normal" Color="#00FF00">
\t\t\t<Coordinates>
\t\t\t\t<Coordinate Order="0" X="300" Y="300" />
\t\t\t\t<Coordinate Order="1" X="400" Y="300" />
\t\t\t\t<Coordinate Order="2" X="400" Y="400" />
\t\t\t\t<Coordinate Order="3" X="300" Y="400" />
\t\t\t</Coordinates>
\t\t</Annotation>
\t\t<Annotation Name="Annotation 3" Type="PointSet" PartOfGroup="None" Color="#F4FA58">
\t\t\t<Coordinates>
\t\t\t\t<Coordinate Order="0" X="5" Y="5" />
\t\t\t</Coordinates>
\t\t</Annotation>
\t</Annotations>
\t<AnnotationGroups>
\t\t<Group Name="Tumor" PartOfGroup="None" Color="#FF0000"><Attributes /></Group>
\t\t<Group Name="Exclusion" PartOfGroup="None" Color="#64FE2E"><Attributes /></Group>
\t\t<Group Name="Normal" PartOfGroup="None" Color="#00FF00"><Attributes /></Group>
\t</AnnotationGroups>
</ASAP_Annotations>
"""


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(content, str):
        p.write_text(content, encoding="utf-8")
    else:
        p.write_bytes(content)
    return p


def _feature(coords, cls="Normal", fid=None, name=None, gtype="Polygon", **props):
    p = {"objectType": "annotation", "classification": {"name": cls, "color": [1, 2, 3]}}
    if name is not None:
        p["name"] = name
    p.update(props)
    f = {"type": "Feature", "geometry": {"type": gtype, "coordinates": coords}, "properties": p}
    if fid is not None:
        f["id"] = fid
    return f


def _fc(*features) -> str:
    return json.dumps({"type": "FeatureCollection", "features": list(features)})


SQUARE = [[[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]]]


@pytest.fixture
def scheme() -> ClassScheme:
    return ClassScheme.paper()


def _by_name(res):
    return {a.name: a for a in res.annotations}


# --------------------------------------------------------------------------- model
def test_annotation_set_keeps_drawing_order_through_add_replace_and_remove():
    a, b, c = (Annotation.rectangle("normal", i * 10, 0, 5, 5) for i in range(3))
    s = AnnotationSet([a, b])
    s.add(c, index=1)
    assert s.ids == [a.id, c.id, b.id]
    s.replace(c.replace(class_id="adenoma"))
    assert s.ids == [a.id, c.id, b.id] and s.get(c.id).class_id == "adenoma"
    assert s.remove(a.id) is a
    assert s.ids == [c.id, b.id]


def test_annotation_set_refuses_a_duplicate_id():
    a = Annotation.rectangle("normal", 0, 0, 5, 5)
    s = AnnotationSet([a])
    with pytest.raises(AnnotationError, match="already"):
        s.add(a.replace(class_id="adenoma"))


def test_classes_in_use_and_areas_per_class():
    s = AnnotationSet(
        [
            Annotation.rectangle("normal", 0, 0, 10, 10),
            Annotation.rectangle("normal", 100, 0, 10, 20),
            Annotation.rectangle("adenoma", 0, 100, 5, 5),
        ]
    )
    assert s.classes_in_use() == {"normal", "adenoma"}
    assert s.total_area() == 325
    assert s.area_by_class() == {"normal": 300, "adenoma": 25}
    assert s.count_by_class() == {"normal": 2, "adenoma": 1}


def test_at_point_returns_the_topmost_annotation_first():
    low = Annotation.rectangle("normal", 0, 0, 100, 100)
    high = Annotation.rectangle("adenoma", 40, 40, 20, 20)
    s = AnnotationSet([low, high])
    assert [a.id for a in s.at_point(50, 50)] == [high.id, low.id]


def test_new_annotation_has_a_uuid4_and_a_repaired_freehand_outline():
    a = Annotation.polygon("normal", [(0, 0), (10, 10), (10, 0), (0, 10)])
    assert uuid.UUID(a.id).version == 4
    assert a.geometry.is_valid and a.area == pytest.approx(50)


def test_polygon_with_fewer_than_three_distinct_points_is_refused():
    with pytest.raises(AnnotationError, match="three distinct points"):
        Annotation.polygon("normal", [(0, 0), (5, 5), (0, 0)])


def test_annotation_refuses_a_point_geometry():
    with pytest.raises(AnnotationError, match="Polygon or MultiPolygon"):
        Annotation(str(uuid.uuid4()), "normal", shapely.Point(1, 1))


# --------------------------------------------------------------------------- QuPath GeoJSON read
def test_qupath_05_export_loads_annotations_with_ids_classes_names_and_holes(tmp_path, scheme):
    res = load_annotations(_write(tmp_path, "qp.geojson", QUPATH_05), scheme)
    anns = list(res.annotations)
    assert len(anns) == 5  # the point annotation and the detection are skipped
    rect = anns[0]
    assert rect.id == "2f1d3c8e-61b5-4f2a-9a6e-4b1f0f7f3a10"
    assert (rect.class_id, rect.name, rect.area) == ("normal", "Rectangle 1", 512 * 512)
    holed = anns[1]
    assert holed.class_id == "adc-moderate"
    assert len(holed.geometry.interiors) == 1
    assert holed.area == pytest.approx(999.5 * 1000 - 200 * 200)
    assert holed.properties["measurements"] == {"Area px^2": 959500.0}
    assert isinstance(anns[2].geometry, MultiPolygon) and anns[2].name == "Two glands"


def test_qupath_derived_class_names_are_joined_and_added_to_the_scheme(tmp_path, scheme):
    res = load_annotations(_write(tmp_path, "qp.geojson", QUPATH_05), scheme)
    assert res.added_classes == ["Tumor: Positive", "Unclassified"]
    assert scheme.get("Tumor: Positive").color == (200, 50, 50)
    assert any("'Tumor: Positive' is not in the class scheme" in w for w in res.warnings)


def test_qupath_points_and_detections_are_skipped_with_warnings(tmp_path, scheme):
    res = load_annotations(_write(tmp_path, "qp.geojson", QUPATH_05), scheme)
    assert any("feature #4" in w and "MultiPoint" in w and "skipped" in w for w in res.warnings)
    assert any("1 QuPath detection object" in w for w in res.warnings)


def test_qupath_list_of_features_export_loads(tmp_path, scheme):
    features = json.loads(QUPATH_05)["features"]
    res = load_annotations(_write(tmp_path, "list.geojson", json.dumps(features)), scheme)
    assert len(res.annotations) == 5


def test_a_bare_feature_loads(tmp_path, scheme):
    res = load_annotations(
        _write(tmp_path, "one.json", json.dumps(_feature(SQUARE, "Adenoma"))), scheme
    )
    assert [a.class_id for a in res.annotations] == ["adenoma"]


def test_qupath_02_legacy_colorRGB_and_object_ids_are_understood(tmp_path, scheme):
    legacy = [
        {
            "type": "Feature",
            "id": "PathAnnotationObject",
            "geometry": {"type": "Polygon", "coordinates": SQUARE},
            "properties": {
                "classification": {"name": "Stroma", "colorRGB": -3670016},
                "isLocked": False,
            },
        },
        {
            "type": "Feature",
            "id": "PathAnnotationObject",
            "geometry": {"type": "Polygon", "coordinates": SQUARE},
            "properties": {"classification": {"name": "Stroma", "colorRGB": -3670016}},
        },
        {
            "type": "Feature",
            "id": "PathDetectionObject",
            "geometry": {"type": "Polygon", "coordinates": SQUARE},
            "properties": {},
        },
    ]
    res = load_annotations(_write(tmp_path, "old.json", json.dumps(legacy)), scheme)
    ids = res.annotations.ids
    assert len(ids) == 2 and len(set(ids)) == 2
    assert all(uuid.UUID(i).version == 4 for i in ids)
    assert scheme.get("Stroma").color == (200, 0, 0)


# --------------------------------------------------------------------------- round trips
def _rich_set() -> AnnotationSet:
    holed = Polygon(
        [(0, 0), (1000, 0), (1000, 1000), (0, 1000)],
        [[(100, 100), (300, 100), (300, 300), (100, 300)], [(600, 600), (800, 600), (700, 800)]],
    )
    multi = MultiPolygon(
        [box(2000, 0, 2100, 100), Polygon([(2200, 0), (2300.25, 0), (2250, 80.5)])]
    )
    return AnnotationSet(
        [
            Annotation(
                str(uuid.uuid4()),
                "adc-poor",
                holed,
                name="Holed",
                notes="check margin",
                properties={"isLocked": True},
            ),
            Annotation(str(uuid.uuid4()), "adenoma", multi, name="Parts"),
            Annotation.rectangle("normal", 5000, 5000, 300, 200),
        ]
    )


@pytest.mark.parametrize("suffix", [".geojson", ".xml"])
def test_round_trip_keeps_ids_classes_names_notes_and_exact_geometry(tmp_path, scheme, suffix):
    original = _rich_set()
    path = tmp_path / f"out{suffix}"
    save_annotations(original, path, scheme)
    res = load_annotations(path, scheme)
    assert res.warnings == [] and res.added_classes == []
    assert res.annotations.ids == original.ids
    for a, b in zip(original, res.annotations, strict=True):
        assert (b.class_id, b.name, b.notes) == (a.class_id, a.name, a.notes)
        assert b.geometry.equals(a.geometry)
        assert b.geometry.geom_type == a.geometry.geom_type


def test_geojson_round_trip_keeps_extra_properties(tmp_path, scheme):
    original = _rich_set()
    path = tmp_path / "out.geojson"
    save_annotations(original, path, scheme)
    res = load_annotations(path, scheme)
    assert res.annotations.get(original.ids[0]).properties["isLocked"] is True


@pytest.mark.parametrize("suffix", [".geojson", ".xml"])
def test_non_ascii_class_names_and_names_round_trip(tmp_path, suffix):
    scheme = ClassScheme.from_names(["Adénome", "腺癌", "Normal"])
    aset = AnnotationSet(
        [
            Annotation.rectangle(scheme.get("腺癌").id, 0, 0, 10, 10, name="Drüse №1 — ☂"),
            Annotation.rectangle(scheme.get("Adénome").id, 20, 0, 10, 10, name="ø"),
        ]
    )
    path = tmp_path / f"uni{suffix}"
    save_annotations(aset, path, scheme)
    fresh = ClassScheme.paper()
    res = load_annotations(path, fresh)
    assert res.added_classes == ["腺癌", "Adénome"]
    assert [a.name for a in res.annotations] == ["Drüse №1 — ☂", "ø"]
    assert [fresh.get(a.class_id).name for a in res.annotations] == ["腺癌", "Adénome"]


def test_done_when_qupath_rectangle_hole_and_bow_tie_convert_to_xml_and_back(tmp_path):
    """Issue 2 'Done when': same classes and areas after GeoJSON -> XML -> GeoJSON; bow-tie
    repaired."""
    src = _write(
        tmp_path,
        "in.geojson",
        _fc(
            _feature([[[0, 0], [400, 0], [400, 300], [0, 300], [0, 0]]], "Normal", name="rect"),
            _feature(
                [
                    [[1000, 1000], [2000, 1000], [2000, 2000], [1000, 2000], [1000, 1000]],
                    [[1200, 1200], [1400, 1200], [1400, 1400], [1200, 1400], [1200, 1200]],
                ],
                "Adenoma",
                name="holed",
            ),
            _feature(
                [[[3000, 3000], [3100, 3100], [3100, 3000], [3000, 3100], [3000, 3000]]],
                "Adenocarcinoma well differentiated",
                fid=str(uuid.uuid4()),
                name="bowtie",
            ),
        ),
    )
    scheme = ClassScheme.paper()
    first = load_annotations(src, scheme)
    assert any(
        "feature #3" in w and "bowtie" in w and "self-intersection" in w for w in first.warnings
    )
    save_annotations(first.annotations, tmp_path / "mid.xml", scheme)
    mid = load_annotations(tmp_path / "mid.xml", ClassScheme.paper())
    save_annotations(mid.annotations, tmp_path / "out.geojson", scheme)
    back = load_annotations(tmp_path / "out.geojson", ClassScheme.paper())
    assert back.warnings == []
    got = {a.name: (a.class_id, a.area) for a in back.annotations}
    assert got == {
        "rect": ("normal", 120000.0),
        "holed": ("adenoma", 1000000.0 - 40000.0),
        "bowtie": ("adc-well", pytest.approx(5000.0)),
    }


def test_written_geojson_has_the_structure_qupath_imports(tmp_path, scheme):
    path = tmp_path / "out.geojson"
    save_annotations(_rich_set(), path, scheme)
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["type"] == "FeatureCollection"
    for f in doc["features"]:
        assert f["type"] == "Feature" and uuid.UUID(f["id"])
        assert f["geometry"]["type"] in ("Polygon", "MultiPolygon")
        assert f["properties"]["objectType"] == "annotation"
        cls = f["properties"]["classification"]
        assert isinstance(cls["name"], str) and len(cls["color"]) == 3
        assert all(isinstance(c, int) for c in cls["color"])
    holed = doc["features"][0]["geometry"]["coordinates"]
    assert len(holed) == 3 and holed[0][0] == holed[0][-1]


def test_written_asap_xml_has_a_group_per_class_and_an_exclusion_group_for_holes(tmp_path, scheme):
    import xml.etree.ElementTree as ET

    path = tmp_path / "out.xml"
    save_annotations(_rich_set(), path, scheme)
    root = ET.parse(path).getroot()
    assert root.tag == "ASAP_Annotations"
    groups = {g.get("Name"): g.get("Color") for g in root.iter("Group")}
    assert groups["Adenocarcinoma poorly differentiated"] == "#B71C1C"
    assert "Exclusion" in groups
    els = root.find("Annotations").findall("Annotation")
    assert [e.get("Role") for e in els].count("hole") == 2
    assert {e.get("Type") for e in els} == {"Polygon", "Rectangle"}
    first = els[0].find("Coordinates").findall("Coordinate")
    assert len(first) == 4  # ASAP rings are not closed


def test_asap_native_exclusion_is_cut_from_the_outline_that_contains_it(tmp_path, scheme):
    res = load_annotations(_write(tmp_path, "asap.xml", ASAP_NATIVE), scheme)
    by = _by_name(res)
    assert set(by) == {"Annotation 0", "Annotation 2"}
    assert by["Annotation 0"].area == 1000 * 1000 - 400 * 400
    assert by["Annotation 2"].class_id == "normal" and by["Annotation 2"].area == 100 * 100


def test_asap_point_sets_are_skipped_with_a_warning(tmp_path, scheme):
    res = load_annotations(_write(tmp_path, "asap.xml", ASAP_NATIVE), scheme)
    assert any("Annotation 3" in w and "PointSet" in w and "skipped" in w for w in res.warnings)


def test_asap_resave_without_our_attributes_keeps_areas(tmp_path, scheme):
    """ASAP drops unknown attributes when it saves: holes must still come back as holes."""
    path = tmp_path / "ours.xml"
    original = _rich_set()
    save_annotations(original, path, scheme)
    stripped = path.read_text(encoding="utf-8")
    for attr in ("Id", "Role", "AutoName", "Notes"):
        stripped = __import__("re").sub(rf' {attr}="[^"]*"', "", stripped)
    res = load_annotations(_write(tmp_path, "asap-saved.xml", stripped), ClassScheme.paper())
    assert res.annotations.total_area() == pytest.approx(original.total_area())
    assert res.annotations.area_by_class() == pytest.approx(original.area_by_class())


def test_asap_coordinates_are_ordered_by_their_order_attribute(tmp_path, scheme):
    xml = (
        '<ASAP_Annotations><Annotations><Annotation Name="a" Type="Polygon" PartOfGroup="Normal">'
        '<Coordinates><Coordinate Order="2" X="10" Y="10"/><Coordinate Order="0" X="0" Y="0"/>'
        '<Coordinate Order="3" X="0" Y="10"/><Coordinate Order="1" X="10" Y="0"/></Coordinates>'
        "</Annotation></Annotations><AnnotationGroups/></ASAP_Annotations>"
    )
    res = load_annotations(_write(tmp_path, "o.xml", xml), scheme)
    assert res.warnings == []
    assert list(res.annotations)[0].area == 100


def test_asap_decimal_comma_coordinates_are_read(tmp_path, scheme):
    xml = (
        '<ASAP_Annotations><Annotations><Annotation Name="a" Type="Polygon" PartOfGroup="Normal">'
        '<Coordinates><Coordinate Order="0" X="0,5" Y="0"/><Coordinate Order="1" X="10,5" Y="0"/>'
        '<Coordinate Order="2" X="10,5" Y="10"/></Coordinates>'
        "</Annotation></Annotations></ASAP_Annotations>"
    )
    res = load_annotations(_write(tmp_path, "c.xml", xml), scheme)
    assert list(res.annotations)[0].bounds == (0.5, 0.0, 10.5, 10.0)


# --------------------------------------------------------------------------- repairs
def test_self_intersection_is_repaired_with_a_warning_naming_the_feature(tmp_path, scheme):
    fid = str(uuid.uuid4())
    bow = [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]
    res = load_annotations(
        _write(tmp_path, "b.geojson", _fc(_feature(SQUARE), _feature(bow, fid=fid))), scheme
    )
    a = res.annotations.get(fid)
    assert a.geometry.is_valid and a.area == pytest.approx(50)
    assert any(f"feature #2 (id {fid})" in w and "self-intersection" in w for w in res.warnings)


def test_unclosed_ring_is_closed_with_a_warning(tmp_path, scheme):
    res = load_annotations(
        _write(
            tmp_path,
            "u.geojson",
            _fc(_feature([[[0, 0], [100, 0], [100, 100], [0, 100]]], name="open")),
        ),
        scheme,
    )
    assert list(res.annotations)[0].area == 10000
    assert any("'open'" in w and "unclosed" in w for w in res.warnings)


def test_repeated_points_are_removed_with_a_warning(tmp_path, scheme):
    ring = [[0, 0], [0, 0], [100, 0], [100, 0], [100, 100], [0, 100], [0, 0]]
    res = load_annotations(_write(tmp_path, "d.geojson", _fc(_feature([ring]))), scheme)
    a = list(res.annotations)[0]
    assert len(a.geometry.exterior.coords) == 5
    assert any("removed 2 repeated point" in w for w in res.warnings)


def test_degenerate_hole_is_dropped_with_a_warning(tmp_path, scheme):
    coords = SQUARE + [[[10, 10], [20, 20], [10, 10]]]
    res = load_annotations(_write(tmp_path, "h.geojson", _fc(_feature(coords))), scheme)
    assert list(res.annotations)[0].area == 10000
    assert any("dropped 1 hole" in w for w in res.warnings)


def test_outline_crossing_the_slide_edge_is_clipped_with_a_warning(tmp_path, scheme):
    coords = [[[-50, -50], [50, -50], [50, 50], [-50, 50], [-50, -50]]]
    res = load_annotations(
        _write(tmp_path, "c.geojson", _fc(_feature(coords, name="edge"))),
        scheme,
        slide_size=(1000, 800),
    )
    a = list(res.annotations)[0]
    assert a.bounds == (0, 0, 50, 50)
    assert any("'edge'" in w and "clipped to the slide (75.0%" in w for w in res.warnings)


def test_outline_entirely_outside_the_slide_is_skipped_with_a_warning(tmp_path, scheme):
    far = [[[5000, 5000], [5100, 5000], [5100, 5100], [5000, 5000]]]
    res = load_annotations(
        _write(tmp_path, "o.geojson", _fc(_feature(SQUARE), _feature(far, name="far"))),
        scheme,
        slide_size=(1000, 800),
    )
    assert len(res.annotations) == 1 and res.skipped == 1
    assert any("'far'" in w and "outside the slide" in w for w in res.warnings)


def test_unknown_class_is_added_to_the_scheme_with_its_colour(tmp_path, scheme):
    f = _feature(SQUARE, "Serrated adenoma")
    f["properties"]["classification"]["color"] = [9, 8, 7]
    res = load_annotations(_write(tmp_path, "k.geojson", _fc(f)), scheme)
    assert res.added_classes == ["Serrated adenoma"]
    assert scheme.get("Serrated adenoma").color == (9, 8, 7)
    assert list(res.annotations)[0].class_id == scheme.get("Serrated adenoma").id


def test_feature_without_classification_gets_the_unclassified_class(tmp_path, scheme):
    f = _feature(SQUARE)
    del f["properties"]["classification"]
    res = load_annotations(_write(tmp_path, "n.geojson", _fc(f)), scheme)
    assert scheme.get(list(res.annotations)[0].class_id).name == "Unclassified"


def test_geometry_collection_keeps_its_polygons_and_drops_lines(tmp_path, scheme):
    f = _feature(None)
    f["geometry"] = {
        "type": "GeometryCollection",
        "geometries": [
            {"type": "Polygon", "coordinates": SQUARE},
            {"type": "LineString", "coordinates": [[0, 0], [5, 5]]},
        ],
    }
    res = load_annotations(_write(tmp_path, "g.geojson", _fc(f)), scheme)
    assert list(res.annotations)[0].area == 10000
    assert any("dropped 1 point/line" in w for w in res.warnings)


# --------------------------------------------------------------------------- refusals
def test_fewer_than_three_distinct_points_is_refused_naming_the_feature(tmp_path, scheme):
    fid = str(uuid.uuid4())
    line = [[[0, 0], [10, 10], [0, 0], [10, 10]]]
    path = _write(tmp_path, "l.geojson", _fc(_feature(SQUARE), _feature(line, fid=fid)))
    with pytest.raises(
        AnnotationError, match=rf"feature #2 \(id {fid}\) has fewer than three distinct"
    ):
        load_annotations(path, scheme)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_coordinates_are_refused(tmp_path, scheme, token):
    text = (
        '{"type":"FeatureCollection","features":[{"type":"Feature","geometry":{"type":"Polygon",'
        f'"coordinates":[[[0,0],[10,0],[10,{token}],[0,10],[0,0]]]}},"properties":{{"name":"bad"}}}}]}}'
    )
    with pytest.raises(AnnotationError, match="feature #1 \\(name 'bad'\\).*NaN or infinite"):
        load_annotations(_write(tmp_path, "nan.geojson", text), scheme)


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"type": "FeatureCollection", "features": "none"}, "'features' is a string"),
        ({"type": "FeatureCollection", "features": [42]}, "feature #1 is a number"),
        (
            {"type": "Feature", "geometry": "square", "properties": {}},
            "'geometry' of type a string",
        ),
        (
            {
                "type": "Feature",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[["0", "0"], ["1", "0"], ["1", "1"]]],
                },
                "properties": {},
            },
            "number pairs",
        ),
        (
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": 5},
                "properties": {},
            },
            "list of rings",
        ),
        (
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": SQUARE},
                "properties": [],
            },
            "'properties' of type a list",
        ),
        (
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": SQUARE},
                "properties": {"classification": 7},
            },
            "'classification' of type a number",
        ),
        (
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": SQUARE},
                "properties": {"name": 7},
            },
            "'name' of type a number",
        ),
        (
            {
                "type": "Feature",
                "geometry": {"type": "Circle", "coordinates": SQUARE},
                "properties": {},
            },
            "unknown geometry type 'Circle'",
        ),
        ({"type": "Topology"}, "'type' is 'Topology'"),
        ("just a string", "top level is a string"),
    ],
)
def test_wrong_json_types_are_refused_with_a_message_naming_them(tmp_path, scheme, doc, needle):
    with pytest.raises(AnnotationError) as err:
        load_annotations(_write(tmp_path, "w.geojson", json.dumps(doc)), scheme)
    assert needle in str(err.value)


def test_text_that_is_not_json_is_refused(tmp_path, scheme):
    with pytest.raises(AnnotationError, match="not valid JSON \\(line 1"):
        load_annotations(_write(tmp_path, "x.geojson", "<html>not json</html>"), scheme)


@pytest.mark.parametrize("content", [b"", b"  \n"])
def test_empty_file_is_refused(tmp_path, scheme, content):
    with pytest.raises(AnnotationError, match="empty"):
        load_annotations(_write(tmp_path, "e.geojson", content), scheme)


def test_empty_feature_collection_gives_no_annotations(tmp_path, scheme):
    res = load_annotations(_write(tmp_path, "e.geojson", _fc()), scheme)
    assert len(res.annotations) == 0 and res.warnings == []


def test_deeply_nested_json_is_refused(tmp_path, scheme):
    with pytest.raises(AnnotationError, match="not usable JSON|too large or too deeply nested"):
        load_annotations(_write(tmp_path, "deep.json", "[" * 200_000 + "]" * 200_000), scheme)


def test_file_that_is_not_utf8_is_refused(tmp_path, scheme):
    with pytest.raises(AnnotationError, match="not UTF-8"):
        load_annotations(_write(tmp_path, "latin.geojson", b'{"name": "\xe9"}'), scheme)


def test_million_vertex_polygon_is_refused_naming_the_limit(tmp_path, scheme):
    # A freehand-like outline of 1,000 vertices traced 1,000 times: the text is built without
    # a million Python lists so the test stays quick.
    t = np.linspace(0, 2 * np.pi, 1000, endpoint=False)
    loop = ",".join(
        f"[{x:.1f},{y:.1f}]"
        for x, y in zip(5e4 + 4e4 * np.cos(t), 5e4 + 4e4 * np.sin(t), strict=True)
    )
    ring = "[" + ",".join([loop] * 1000) + ",[90000.0,50000.0]]"
    text = (
        '{"type":"FeatureCollection","features":[{"type":"Feature","geometry":{"type":"Polygon",'
        '"coordinates":[' + ring + ']},"properties":{"name":"huge"}}]}'
    )
    path = _write(tmp_path, "big.geojson", text)
    with pytest.raises(AnnotationError, match="'huge'\\) has 1,000,001 vertices; at most 500,000"):
        load_annotations(path, scheme)


def test_file_above_the_size_limit_is_refused_before_reading(tmp_path, scheme, monkeypatch):
    path = _write(tmp_path, "big.geojson", _fc(*[_feature(SQUARE) for _ in range(50)]))
    monkeypatch.setattr(annmod.io, "MAX_FILE_BYTES", 1024)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("file was read"))
    with pytest.raises(AnnotationError, match="larger than"):
        load_annotations(path, scheme)


def test_skip_invalid_turns_a_refusal_into_a_skip_with_a_warning(tmp_path, scheme):
    line = [[[0, 0], [10, 10], [0, 0]]]
    path = _write(tmp_path, "s.geojson", _fc(_feature(SQUARE), _feature(line, name="thin")))
    res = load_annotations(path, scheme, skip_invalid=True)
    assert len(res.annotations) == 1 and res.skipped == 1
    assert any("'thin'" in w and "skipped" in w for w in res.warnings)


def test_unknown_extension_is_refused(tmp_path, scheme):
    with pytest.raises(AnnotationError, match="unknown annotation file type '.txt'"):
        load_annotations(_write(tmp_path, "a.txt", _fc()), scheme)


def test_missing_file_is_refused(tmp_path, scheme):
    with pytest.raises(AnnotationError, match="not found"):
        load_annotations(tmp_path / "gone.geojson", scheme)


def test_xml_with_an_external_entity_is_refused_and_the_file_not_read(tmp_path, scheme):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    xxe = (
        f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret}">]>'
        '<ASAP_Annotations><Annotations><Annotation Name="&x;" Type="Polygon" PartOfGroup="Normal">'
        '<Coordinates><Coordinate Order="0" X="0" Y="0"/><Coordinate Order="1" X="9" Y="0"/>'
        '<Coordinate Order="2" X="9" '
        'Y="9"/></Coordinates></Annotation></Annotations></ASAP_Annotations>'
    )
    with pytest.raises(AnnotationError, match="refused: the XML declares a DTD") as err:
        load_annotations(_write(tmp_path, "xxe.xml", xxe), scheme)
    assert "TOP-SECRET" not in str(err.value)


def test_xml_billion_laughs_is_refused_without_expanding(tmp_path, scheme):
    lol = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">' for i in range(1, 10)
    ]
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE ASAP_Annotations [' + "".join(lol) + "]>"
        '<ASAP_Annotations><Annotations><Annotation '
        'Name="&lol9;"/></Annotations></ASAP_Annotations>'
    )
    with pytest.raises(AnnotationError, match="refused"):
        load_annotations(_write(tmp_path, "lol.xml", bomb), scheme)


def test_xml_that_is_not_well_formed_is_refused(tmp_path, scheme):
    with pytest.raises(AnnotationError, match="not well-formed XML"):
        load_annotations(_write(tmp_path, "t.xml", "<ASAP_Annotations><Annotations>"), scheme)


def test_xml_of_another_kind_is_refused(tmp_path, scheme):
    with pytest.raises(AnnotationError, match="expected <ASAP_Annotations>"):
        load_annotations(_write(tmp_path, "svg.xml", "<svg><rect/></svg>"), scheme)


def test_xml_coordinate_that_is_not_a_number_is_refused_naming_the_annotation(tmp_path, scheme):
    xml = (
        '<ASAP_Annotations><Annotations><Annotation Name="Tumour 7" Type="Polygon" '
        'PartOfGroup="Normal">'
        '<Coordinates><Coordinate Order="0" X="zero" Y="0"/></Coordinates>'
        "</Annotation></Annotations></ASAP_Annotations>"
    )
    with pytest.raises(
        AnnotationError, match="annotation #1 \\(name 'Tumour 7'\\) coordinate 1 X 'zero'"
    ):
        load_annotations(_write(tmp_path, "n.xml", xml), scheme)


def test_xml_nan_coordinate_is_refused(tmp_path, scheme):
    xml = (
        '<ASAP_Annotations><Annotations><Annotation Name="a" Type="Polygon" PartOfGroup="Normal">'
        '<Coordinates><Coordinate Order="0" X="nan" Y="0"/><Coordinate Order="1" X="1" Y="0"/>'
        '<Coordinate Order="2" X="1" '
        'Y="1"/></Coordinates></Annotation></Annotations></ASAP_Annotations>'
    )
    with pytest.raises(AnnotationError, match="NaN or infinite"):
        load_annotations(_write(tmp_path, "n.xml", xml), scheme)


# --------------------------------------------------------------------------- atomic saves
def test_failure_mid_save_leaves_the_previous_file_whole(tmp_path, scheme, monkeypatch):
    path = tmp_path / "slide.geojson"
    first = _rich_set()
    save_annotations(first, path, scheme)
    before = path.read_bytes()

    import crc_core.atomic as atomic

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(
        atomic.os, "fsync", crash
    )  # the new content is written, then the disk fails
    bigger = _rich_set()
    bigger.add(Annotation.rectangle("normal", 0, 0, 1, 1))
    with pytest.raises(OSError):
        save_annotations(bigger, path, scheme)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["slide.geojson"]  # no temporary file left behind


def test_unserialisable_properties_fail_before_anything_is_written(tmp_path, scheme):
    path = tmp_path / "slide.geojson"
    save_annotations(_rich_set(), path, scheme)
    before = path.read_bytes()
    bad = AnnotationSet(
        [Annotation.rectangle("normal", 0, 0, 5, 5).replace(properties={"x": object()})]
    )
    with pytest.raises(AnnotationError, match="not plain JSON"):
        save_annotations(bad, path, scheme)
    assert path.read_bytes() == before


def test_qupath_nan_measurements_load_and_save_as_null(tmp_path, scheme):
    text = (
        '{"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[9,0],[9,9],[0,0]]]},'
        '"properties":{"objectType":"annotation","measurements":{"Mean":NaN,"Area":40.5}}}'
    )
    res = load_annotations(_write(tmp_path, "m.geojson", text), scheme)
    out = tmp_path / "out.geojson"
    save_annotations(res.annotations, out, scheme)
    saved = json.loads(out.read_text(encoding="utf-8"))  # strict JSON: no NaN token
    assert saved["features"][0]["properties"]["measurements"] == {"Mean": None, "Area": 40.5}


def test_colour_that_is_not_a_colour_is_ignored_not_fatal(tmp_path, scheme):
    text = (
        '{"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[9,0],[9,9],[0,0]]]},'
        '"properties":{"classification":{"name":"Odd","color":[Infinity,-4,"x"]}}}'
    )
    load_annotations(_write(tmp_path, "c.geojson", text), scheme)
    odd = scheme.get("Odd")
    assert odd.color not in ClassScheme.paper().colors  # a palette colour, not the file's
    assert all(0 <= c <= 255 for c in odd.color)


# --------------------------------------------------------------------------- property tests
_num = st.one_of(
    st.integers(-(10**20), 10**20), st.floats(), st.booleans(), st.none(), st.text(max_size=2)
)
_ring = st.one_of(st.lists(st.lists(_num, max_size=3), max_size=6), _num)
_geom = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["Polygon", "MultiPolygon", "Point", "GeometryCollection", "Nope"]),
        "coordinates": st.one_of(
            st.lists(_ring, max_size=3), st.lists(st.lists(_ring, max_size=2), max_size=2)
        ),
    }
)
_props = st.one_of(
    st.none(),
    _num,
    st.dictionaries(
        st.sampled_from(["objectType", "classification", "name", "notes"]),
        st.one_of(
            _num,
            st.dictionaries(
                st.sampled_from(["name", "color", "colorRGB", "names"]),
                st.one_of(_num, st.lists(_num, max_size=4)),
            ),
        ),
    ),
)
_feat = st.fixed_dictionaries(
    {
        "type": st.just("Feature"),
        "geometry": st.one_of(_geom, _num),
        "properties": _props,
        "id": st.one_of(_num, st.uuids().map(str)),
    }
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.one_of(_feat, _num), max_size=4), st.booleans())
def test_any_geojson_gives_annotations_or_an_annotation_error(features, skip):
    data = json.dumps({"type": "FeatureCollection", "features": features}).encode()
    try:
        res = annmod.read_annotations_bytes(
            data, "geojson", ClassScheme.paper(), (500, 500), skip_invalid=skip
        )
    except AnnotationError:
        return
    for a in res.annotations:
        assert a.geometry.is_valid and a.area > 0


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=200), st.sampled_from(["geojson", "asap"]))
def test_any_bytes_give_annotations_or_an_annotation_error(data, fmt):
    try:
        annmod.read_annotations_bytes(data, fmt, ClassScheme.paper())
    except AnnotationError:
        pass


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(
        st.tuples(
            st.integers(0, 900),
            st.integers(0, 900),
            st.integers(1, 300),
            st.integers(1, 300),
            st.sampled_from(["normal", "adenoma", "adc-well"]),
        ),
        min_size=1,
        max_size=5,
    ),
    st.sampled_from([".geojson", ".xml"]),
)
def test_saved_annotations_read_back_with_the_same_classes_and_areas(
    tmp_path_factory, rects, suffix
):
    scheme = ClassScheme.paper()
    aset = AnnotationSet(Annotation.rectangle(c, x, y, w, h) for x, y, w, h, c in rects)
    path = tmp_path_factory.mktemp("rt") / f"a{suffix}"
    save_annotations(aset, path, scheme)
    back = load_annotations(path, scheme).annotations
    assert [(a.id, a.class_id, a.area) for a in back] == [(a.id, a.class_id, a.area) for a in aset]


def test_asap_outline_above_the_vertex_limit_is_refused_naming_it(tmp_path, scheme, monkeypatch):
    monkeypatch.setattr(annmod.geometry, "MAX_VERTICES_PER_ANNOTATION", 1000)
    coords = "".join(f'<Coordinate Order="{k}" X="{k % 97}" Y="{k % 89}"/>' for k in range(5000))
    xml = (
        '<ASAP_Annotations><Annotations><Annotation Name="freehand" Type="Polygon" '
        'PartOfGroup="Normal">'
        f"<Coordinates>{coords}</Coordinates></Annotation></Annotations></ASAP_Annotations>"
    )
    with pytest.raises(AnnotationError, match="'freehand'\\) has more than 1,000 vertices"):
        load_annotations(_write(tmp_path, "big.xml", xml), scheme)


def test_asap_outline_above_the_vertex_limit_is_skipped_with_skip_invalid(
    tmp_path, scheme, monkeypatch
):
    monkeypatch.setattr(annmod.geometry, "MAX_VERTICES_PER_ANNOTATION", 1000)
    coords = "".join(f'<Coordinate Order="{k}" X="{k % 97}" Y="{k % 89}"/>' for k in range(5000))
    small = (
        '<Coordinate Order="0" X="0" Y="0"/><Coordinate Order="1" X="9" Y="0"/>'
        '<Coordinate Order="2" X="9" Y="9"/>'
    )
    xml = (
        '<ASAP_Annotations><Annotations><Annotation Name="freehand" Type="Polygon" '
        'PartOfGroup="Normal">'
        f'<Coordinates>{coords}</Coordinates></Annotation><Annotation Name="ok" Type="Polygon" '
        f'PartOfGroup="Normal"><Coordinates>{small}</Coordinates></Annotation></Annotations></ASAP_Annotations>'
    )
    res = load_annotations(_write(tmp_path, "big.xml", xml), scheme, skip_invalid=True)
    assert [a.name for a in res.annotations] == ["ok"]
    assert any("'freehand'" in w and "5,000 vertices" in w for w in res.warnings)


def test_cached_encoding_gives_the_same_bytes_and_follows_every_kind_of_change():
    scheme = ClassScheme.paper()
    aset = _rich_set()
    cache = annmod.GeoJsonCache()
    assert annmod.annotations_to_bytes(
        aset, "geojson", scheme, cache
    ) == annmod.annotations_to_bytes(aset, "geojson", scheme)
    first = list(aset)[0]
    first.properties["isLocked"] = False  # an in-place change
    aset.replace(list(aset)[1].replace(name="renamed"))
    scheme.recolor("normal", "#010203")
    assert annmod.annotations_to_bytes(
        aset, "geojson", scheme, cache
    ) == annmod.annotations_to_bytes(aset, "geojson", scheme)


def test_names_with_control_characters_are_written_as_readable_xml(tmp_path, scheme):
    aset = AnnotationSet(
        [Annotation.rectangle("normal", 0, 0, 5, 5, name="bell\x07 tab\t line\nend")]
    )
    path = tmp_path / "ctl.xml"
    save_annotations(aset, path, scheme)
    [back] = load_annotations(path, scheme).annotations
    assert back.name == "bell tab\t line\nend"


def test_lone_surrogates_in_geojson_text_are_replaced_so_saving_works(tmp_path, scheme):
    text = (
        '{"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[9,0],[9,9],[0,0]]]},'
        '"properties":{"name":"a\\ud800b","classification":{"name":"X\\udfff"}}}'
    )
    res = load_annotations(_write(tmp_path, "s.geojson", text), scheme)
    out = tmp_path / "out.geojson"
    save_annotations(res.annotations, out, scheme)
    [back] = load_annotations(out, scheme).annotations
    assert back.name == "a\ufffdb"
    assert scheme.get(back.class_id).name == "X\ufffd"


def test_camelyon16_exclusion_group_2_is_cut_from_tumour_outlines(tmp_path, scheme):
    def el(name, group, x0, y0, x1, y1):
        pts = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        coords = "".join(
            f'<Coordinate Order="{k}" X="{x}" Y="{y}"/>' for k, (x, y) in enumerate(pts)
        )
        return (
            f'<Annotation Name="{name}" Type="Polygon" PartOfGroup="{group}" Color="#F4FA58">'
            f"<Coordinates>{coords}</Coordinates></Annotation>"
        )

    xml = (
        "<ASAP_Annotations><Annotations>"
        + el("_0", "_0", 0, 0, 100, 100)
        + el("_1", "_2", 10, 10, 30, 30)
        + "</Annotations></ASAP_Annotations>"
    )
    res = load_annotations(_write(tmp_path, "camelyon.xml", xml), scheme)
    [tumour] = res.annotations
    assert tumour.area == 100 * 100 - 20 * 20
    assert res.added_classes == ["_0"]
