"""Annotation names, descriptions, lock and hide flags: file round trips and human display names."""

from __future__ import annotations

import json

import pytest
from shapely.geometry import box

from crc_core.annotations import Annotation, AnnotationSet, load_annotations, save_annotations
from crc_core.classes import ClassScheme


@pytest.fixture
def scheme() -> ClassScheme:
    return ClassScheme.paper()


def _set() -> AnnotationSet:
    a = Annotation.new("adc-moderate", box(0, 0, 100, 100), name="Tumour front",
                       notes="budding at the margin")
    b = Annotation.new("adc-moderate", box(200, 0, 300, 100)).with_flags(locked=True)
    c = Annotation.new("normal", box(400, 0, 500, 100)).with_flags(hidden=True)
    return AnnotationSet([a, b, c])


@pytest.mark.parametrize("suffix", [".geojson", ".xml"])
def test_name_description_lock_and_hide_survive_a_round_trip(tmp_path, scheme, suffix):
    original = _set()
    path = tmp_path / f"slide{suffix}"
    save_annotations(original, path, scheme)
    back = load_annotations(path, scheme).annotations
    for a, b in zip(original, back, strict=True):
        assert (b.name, b.notes, b.locked, b.hidden) == (a.name, a.notes, a.locked, a.hidden)
    assert [a.locked for a in back] == [False, True, False]
    assert [a.hidden for a in back] == [False, False, True]


def test_geojson_uses_qupath_conventions(tmp_path, scheme):
    path = tmp_path / "slide.geojson"
    save_annotations(_set(), path, scheme)
    feats = json.loads(path.read_text())["features"]
    p0, p1, p2 = (f["properties"] for f in feats)
    assert p0["name"] == "Tumour front"
    # QuPath reads an annotation's description from metadata.ANNOTATION_DESCRIPTION
    assert p0["metadata"] == {"ANNOTATION_DESCRIPTION": "budding at the margin"}
    assert p0["isLocked"] is False and p1["isLocked"] is True
    assert "isHidden" not in p0 and p2["isHidden"] is True
    assert "name" not in p1  # unnamed: no name written, QuPath shows its own default


def test_a_qupath_description_is_read_and_other_metadata_kept(tmp_path, scheme):
    feature = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [50, 0], [50, 50], [0, 0]]]},
        "properties": {
            "objectType": "annotation",
            "name": "Crypt",
            "metadata": {"ANNOTATION_DESCRIPTION": "check with IHC", "reviewer": "AB"},
        },
    }
    path = tmp_path / "q.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    ann = next(iter(load_annotations(path, scheme).annotations))
    assert (ann.name, ann.notes) == ("Crypt", "check with IHC")
    assert ann.properties["metadata"] == {"reviewer": "AB"}
    save_annotations(AnnotationSet([ann]), path, scheme)
    props = json.loads(path.read_text())["features"][0]["properties"]
    assert props["metadata"] == {"reviewer": "AB", "ANNOTATION_DESCRIPTION": "check with IHC"}


def test_display_names_use_the_name_else_class_name_and_number(scheme):
    aset = _set()
    names = aset.display_names(scheme)
    ids = aset.ids
    assert names[ids[0]] == "Tumour front"
    assert names[ids[1]] == "Adenocarcinoma moderately differentiated #2"
    assert names[ids[2]] == "Normal #1"
    assert aset.display_name(ids[2], scheme) == "Normal #1"
    for n in names.values():  # never a UUID or a class id
        assert not any(part in n for part in (ids[1][:8], "adc-moderate"))


def test_with_flags_changes_only_the_flags():
    a = Annotation.new("normal", box(0, 0, 10, 10), name="x")
    b = a.with_flags(locked=True)
    assert (b.locked, b.hidden, b.id, b.name) == (True, False, a.id, "x")
    assert a.locked is False  # a copy, the original is unchanged
    assert b.with_flags(hidden=True).locked is True
