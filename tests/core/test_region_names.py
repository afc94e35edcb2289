"""Region results name each region as a person knows it: its name, else "<label> #<n>"."""

from __future__ import annotations

import re
from pathlib import Path

from crc_core.annotations import AnnotationSet, load_annotations
from crc_core.inference import load_prediction
from crc_core.project import Project
from crc_core.regions import region_results, regions_to_geojson

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"


def test_unnamed_regions_get_class_name_and_number_never_an_id():
    project = Project.open(DEMO)
    pred = load_prediction(next((DEMO / "predictions" / "demo_slide").glob("*.npz")))
    anns = load_annotations(DEMO / "annotations" / "demo_slide.geojson", project.scheme)
    aset = AnnotationSet(a.replace(name="") for a in anns.annotations)  # as if never named
    results = region_results(pred, list(aset), project.scheme)
    expected = aset.display_names(project.scheme)  # the annotation list's names
    assert [r.name for r in results] == [expected[a.id] for a in aset]
    assert all(re.fullmatch(r"(Normal|Adenoma|Adenocarcinoma) #\d", r.name) for r in results)
    feats = regions_to_geojson(results, pred.scheme, project.scheme)["features"]
    assert [f["properties"]["name"] for f in feats] == [r.name for r in results]
    named = region_results(pred, list(anns.annotations), project.scheme)
    assert [r.name for r in named] == [a.name or expected[a.id] for a in anns.annotations]
