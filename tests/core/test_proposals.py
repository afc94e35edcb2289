"""Prediction -> proposed annotations -> class raster, the review record, the review queue, and
`crc annotations from-prediction` (on synthetic predictions and on the shipped demo prediction)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
import shapely

from crc_core.annotations import Annotation, AnnotationSet, load_annotations, save_annotations
from crc_core.classes import ClassScheme
from crc_core.cli import main
from crc_core.errors import ClassSchemeError, ConfigError
from crc_core.inference import GridSpec, Prediction, load_prediction, save_prediction
from crc_core.proposals import (
    cell_entropy,
    is_proposed,
    is_reviewed,
    mark_reviewed,
    prediction_to_annotations,
    rasterize,
    review_info,
    review_queue,
    reviewed_count,
    window_annotation,
)

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "resources" / "demo"


def _pred(labels: np.ndarray, conf: np.ndarray | None = None, mpp: float | None = 0.5,
          window: int = 100, stride: int = 100) -> Prediction:
    """A prediction whose top class per cell is ``labels`` (-1: not predicted)."""
    scheme = ClassScheme.three_class()
    rows, cols = labels.shape
    n = len(scheme)
    conf = np.full(labels.shape, 0.9, np.float32) if conf is None else conf.astype(np.float32)
    probs = np.full((n, rows, cols), np.nan, np.float32)
    ok = labels >= 0
    rest = (1 - conf) / (n - 1)
    for k in range(n):
        probs[k][ok] = np.where(labels[ok] == k, conf[ok], rest[ok])
    grid = GridSpec((10, 20), stride, window, rows, cols, 0, window, 64)
    return Prediction(probs, ok.copy(), grid, scheme, slide={"mpp": mpp} if mpp else {},
                      model={"name": "toy"})


def _ring() -> np.ndarray:
    lab = np.zeros((6, 7), np.int16)  # class 0 around
    lab[1:5, 1:5] = 1  # a class-1 square ...
    lab[2:4, 2:4] = 0  # ... with a class-0 hole (not connected to the outer class 0? it is not)
    lab[:, 6] = 2
    lab[5, 6] = -1
    return lab


def test_components_become_polygons_with_holes_and_round_trip():
    pred = _pred(_ring())
    res = prediction_to_annotations(pred)
    by_class = {c: [a for a in res.annotations if a.class_id == c] for c in pred.scheme.ids}
    ring = by_class[pred.scheme.ids[1]]
    assert len(ring) == 1 and len(ring[0].geometry.interiors) == 1  # the hole is kept
    assert ring[0].area == pytest.approx((16 - 4) * 100 * 100)
    assert len(by_class[pred.scheme.ids[0]]) == 2  # outer frame and the hole's filling
    assert all(a.geometry.is_valid and is_proposed(a) for a in res.annotations)
    info = review_info(ring[0])
    assert info["model"] == "toy" and info["cells"] == 12
    assert info["confidence"] == pytest.approx(0.9)
    assert ring[0].geometry.bounds == (110.0, 120.0, 510.0, 520.0)  # level-0: origin (10, 20)
    back = rasterize(res.annotations, pred.grid, pred.scheme.ids)
    assert np.array_equal(back, pred.class_map())


def test_overlapping_windows_tile_without_overlap():
    pred = _pred(_ring(), window=300, stride=100)
    res = prediction_to_annotations(pred)
    union_area = shapely.union_all([a.geometry for a in res.annotations]).area
    assert union_area == pytest.approx(sum(a.area for a in res.annotations))
    assert np.array_equal(rasterize(res.annotations, pred.grid, pred.scheme.ids), pred.class_map())


def test_thresholds_filters_and_units():
    lab = _ring()
    conf = np.full(lab.shape, 0.9)
    conf[:, 6] = 0.4
    pred = _pred(lab, conf)
    res = prediction_to_annotations(pred, min_confidence=0.5)
    assert not any(a.class_id == pred.scheme.ids[2] for a in res.annotations)
    # 100 px cells at 0.5 µm/px are 2500 µm²: the 4-cell hole filling (10,000 µm²) survives 10,000
    res = prediction_to_annotations(pred, min_area=10_000, classes=["Normal"])
    assert {a.class_id for a in res.annotations} == {pred.scheme.ids[0]}
    assert res.area_unit == "µm²" and len(res.annotations) == 2
    res = prediction_to_annotations(pred, min_area=10_001, classes=["normal"])
    assert len(res.annotations) == 1 and res.dropped_small == 1 and "10001 µm²" in res.notes[0]
    nompp = prediction_to_annotations(_pred(lab, mpp=None), min_area=40_001)
    assert nompp.area_unit == "px²" and "px²" in nompp.notes[0]
    assert all(a.area >= 40_001 for a in nompp.annotations)
    region = shapely.box(0, 0, 300, 300)
    inside = prediction_to_annotations(pred, region=region)
    assert all(a.geometry.within(shapely.box(0, 0, 400, 400)) for a in inside.annotations)
    with pytest.raises(ConfigError, match="choose from"):
        prediction_to_annotations(pred, classes=["Stroma"])
    with pytest.raises(ConfigError, match="between 0 and 1"):
        prediction_to_annotations(pred, min_confidence=2)


def test_mapping_onto_another_scheme():
    lab = _ring()
    lab[:5, 5] = 2  # the adenocarcinoma column now touches the adenoma ring
    pred = _pred(lab)
    with pytest.raises(ClassSchemeError, match="not in the class scheme"):
        prediction_to_annotations(pred, ClassScheme.from_names(["Normal", "Adenoma"]))
    target = ClassScheme.from_names(["Normal", "Tumour"])
    res = prediction_to_annotations(
        pred, target, mapping={"Adenoma": "Tumour", "Adenocarcinoma": "Tumour"})
    tumour = [a for a in res.annotations if a.class_id == target.find_name("Tumour").id]
    assert len(tumour) == 1  # adenoma and adenocarcinoma cells touch: merged into one area
    assert len(tumour[0].geometry.interiors) == 1


def test_review_record_and_geojson_round_trip(tmp_path: Path):
    pred = _pred(_ring())
    res = prediction_to_annotations(pred)
    a = res.annotations[0]
    when = dt.datetime(2026, 12, 7, 21, 0, tzinfo=dt.UTC)
    ok = mark_reviewed(a, reviewer="dr-a", when=when)
    assert review_info(ok)["status"] == "accepted" and is_reviewed(ok) and not is_proposed(ok)
    assert review_info(ok)["reviewed"] == "2026-12-07T21:00:00+00:00"
    fixed = mark_reviewed(a, pred.scheme.ids[2], reviewer="dr-a")
    assert fixed.class_id == pred.scheme.ids[2]
    assert review_info(fixed)["status"] == "corrected"
    assert review_info(fixed)["proposed_class"] == a.class_id
    assert is_proposed(a)  # the original is untouched
    out = tmp_path / "r.geojson"
    save_annotations(AnnotationSet([fixed, *res.annotations[1:]]), out, pred.scheme)
    back = load_annotations(out, pred.scheme).annotations
    assert review_info(back.get(fixed.id)) == review_info(fixed)
    assert reviewed_count(back) == (1, len(res.annotations))


def test_review_queue_ranks_uncertain_and_disagreeing_first():
    lab = _ring()
    conf = np.full(lab.shape, 0.95)
    conf[:, 6] = 0.4  # the adenocarcinoma column is the least certain
    pred = _pred(lab, conf)
    ent = cell_entropy(pred)
    assert np.nanmax(ent) <= 1 and ent[0, 6] > ent[0, 0]
    res = prediction_to_annotations(pred, min_confidence=0.5)
    q = review_queue(pred, res.annotations)
    assert [it.kind for it in q[:5]] == ["window"] * 5  # the uncovered uncertain windows first
    assert {it.cell for it in q[:5]} == {(r, 6) for r in range(5)}
    # a person's Normal drawn over the adenoma ring: both disagree, both come first
    person = Annotation.rectangle(pred.scheme.ids[0], 110, 120, 400, 400)
    q = review_queue(pred, [*res.annotations, person], max_windows=0)
    ring = next(a for a in res.annotations if a.class_id == pred.scheme.ids[1])
    assert {q[0].ann_id, q[1].ann_id} == {person.id, ring.id}
    assert next(it for it in q if it.ann_id == ring.id).disagreement == pytest.approx(1.0)
    assert next(it for it in q if it.ann_id == person.id).disagreement == pytest.approx(0.75)
    assert all(it.disagreement == 0 for it in q[2:])
    # reviews never reorder the queue (ranked by the class proposed, not the class corrected)
    keys = [it.key for it in q]
    fixed = [mark_reviewed(a, pred.scheme.ids[0], reviewer="dr-a") if a.id == ring.id else a
             for a in [*res.annotations, person]]
    assert [it.key for it in review_queue(pred, fixed, max_windows=0)] == keys
    # a reviewed window becomes an annotation and keeps its queue key
    win = review_queue(pred, res.annotations)[0]
    made = window_annotation(win, pred.scheme.ids[0], reviewer="dr-a")
    assert is_reviewed(made) and review_info(made)["status"] == "corrected"
    again = review_queue(pred, [*res.annotations, made])
    assert next(it for it in again if it.key == win.key).ann_id == made.id


def _demo_prediction() -> tuple[Prediction, Path]:
    files = sorted((DEMO / "predictions").rglob("*.npz"))
    if not files:
        pytest.skip("resources/demo/predictions holds no prediction in this checkout")
    return load_prediction(files[0]), files[0]


def test_demo_prediction_round_trips_through_polygons():
    pred, _ = _demo_prediction()
    res = prediction_to_annotations(pred)
    assert res.annotations and all(a.geometry.is_valid for a in res.annotations)
    back = rasterize(res.annotations, pred.grid, pred.scheme.ids)
    cells = pred.class_map()
    agreement = float((back[pred.predicted] == cells[pred.predicted]).mean())
    assert agreement >= 0.99
    assert (back[~pred.predicted] == -1).all()


def test_demo_true_areas_keep_their_predicted_majority(tmp_path: Path):
    """Issue 13 'Done when': the demo prediction through `crc annotations from-prediction`."""
    pred, npz = _demo_prediction()
    ann_files = sorted((DEMO / "annotations").glob("*.geojson"))
    if not ann_files:
        pytest.skip("resources/demo/annotations holds no annotations in this checkout")
    truth = load_annotations(ann_files[0], pred.scheme.copy()).annotations
    out = tmp_path / "proposed.geojson"
    assert main(["annotations", "from-prediction", str(npz), str(out)]) == 0
    polys = list(load_annotations(out, pred.scheme.copy()).annotations)
    assert polys and all(a.geometry.is_valid and is_proposed(a) for a in polys)
    back = rasterize(polys, pred.grid, pred.scheme.ids)
    cells = pred.class_map()
    xs, ys = pred.grid.cell_centers()
    checked = 0
    for area in truth:
        inside = shapely.contains_xy(area.geometry, xs, ys) & pred.predicted
        if not inside.any():
            continue
        want = np.bincount(cells[inside], minlength=len(pred.scheme)).argmax()
        got = np.bincount(back[inside][back[inside] >= 0], minlength=len(pred.scheme)).argmax()
        assert got == want, area.name
        checked += 1
    assert checked >= 1


def test_cli_from_prediction(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    pred = _pred(_ring())
    npz = save_prediction(pred, tmp_path / "p.npz")
    out = tmp_path / "p.geojson"
    rc = main(["annotations", "from-prediction", str(npz), str(out), "--min-area", "10001",
               "--min-confidence", "0.5", "--classes", "Normal", "Adenoma"])
    assert rc == 0
    assert "wrote 2 proposed annotations" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    for f in doc["features"]:
        geom = shapely.geometry.shape(f["geometry"])
        assert geom.is_valid
        assert f["properties"]["review"]["status"] == "proposed"
        assert f["properties"]["classification"]["name"] in ("Normal", "Adenoma")
    before = out.read_bytes()
    rc = main(["annotations", "from-prediction", str(npz), str(out), "--classes", "Stroma"])
    assert rc == 2 and out.read_bytes() == before
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Stroma" in err[0]


def test_coarse_prediction_on_the_finer_scheme_proposes_a_chosen_grade_with_a_note():
    from crc_core.scheme_map import target_mapping

    pred = _pred(_ring())
    paper = ClassScheme.paper()
    with pytest.raises(ClassSchemeError, match="Adenocarcinoma"):
        prediction_to_annotations(pred, paper)
    assert target_mapping(pred.scheme, ClassScheme.three_class()) == (None, {})
    mapping, notes = target_mapping(pred.scheme, paper)
    assert mapping == {"normal": "normal", "adenoma": "adenoma", "adenocarcinoma": "adc-well"}
    mapping, notes = target_mapping(pred.scheme, paper, {"adenocarcinoma": "adc-poor"})
    assert mapping["adenocarcinoma"] == "adc-poor"
    res = prediction_to_annotations(pred, paper, mapping=mapping, notes=notes)
    by_class = {a.class_id: review_info(a) for a in res.annotations}
    assert set(by_class) == {"normal", "adenoma", "adc-poor"}
    assert "not its grade: proposed as Adenocarcinoma poorly differentiated" in (
        by_class["adc-poor"]["note"])
    assert "note" not in by_class["normal"] and "note" not in by_class["adenoma"]
    with pytest.raises(ClassSchemeError, match="not one of the classes"):
        target_mapping(pred.scheme, paper, {"adenocarcinoma": "adenoma"})


def test_a_chosen_grade_is_recorded_and_read_back_for_the_group_windows():
    """Issue 13 review: the grade chosen for the model's Adenocarcinoma in Prediction to
    Annotations is recorded with its proposals (not only the default first member), read back by
    model, and the queue's windows name the prediction's own class (the group), not a grade."""
    from crc_core.proposals import grade_choices
    from crc_core.scheme_map import target_mapping

    lab = _ring()
    conf = np.full(lab.shape, 0.9, np.float32)
    conf[:, 6] = 0.4  # uncertain Adenocarcinoma cells: left out of the proposals, windows in review
    pred = _pred(lab, conf)
    paper = ClassScheme.paper()
    mapping, notes = target_mapping(pred.scheme, paper, {"adenocarcinoma": "adc-moderate"})
    default = prediction_to_annotations(pred, paper, mapping=mapping, notes=notes)
    group = [review_info(a) for a in default.annotations if a.class_id == "adc-moderate"]
    assert group and all(i["model_class"] == "adenocarcinoma" and i["grade_chosen"] is False
                         for i in group)
    assert grade_choices(default.annotations, "toy") == {}  # nobody chose: no grade to apply
    res = prediction_to_annotations(pred, paper, min_confidence=0.0, mapping=mapping,
                                    notes=notes, chosen=["adenocarcinoma"])
    infos = {a.class_id: review_info(a) for a in res.annotations}
    assert infos["adc-moderate"]["grade_chosen"] is True
    assert "model_class" not in infos["normal"] and "grade_chosen" not in infos["adenoma"]
    assert grade_choices(res.annotations, "toy") == {"adenocarcinoma": "adc-moderate"}
    assert grade_choices(res.annotations, "another model") == {}
    reviewed = [mark_reviewed(a, "adc-poor") if a.class_id == "adc-moderate" else a
                for a in res.annotations]  # a correction keeps what was chosen
    assert grade_choices(reviewed, "toy") == {"adenocarcinoma": "adc-moderate"}
    kept = prediction_to_annotations(pred, paper, min_confidence=0.5, mapping=mapping,
                                     notes=notes, chosen=["adenocarcinoma"]).annotations
    windows = [it for it in review_queue(pred, kept, paper, mapping) if it.kind == "window"]
    assert windows and {it.model_class for it in windows} == {"adenocarcinoma"}
    assert {it.predicted for it in windows} == {"adc-moderate"}
    made = window_annotation(windows[0], "adc-moderate", "toy", reviewer="pat", note="group")
    assert review_info(made)["note"] == "group" and review_info(made)["status"] == "accepted"
