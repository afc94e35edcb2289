"""The bundled demo (resources/demo) belongs to the model shipped in models/: same fingerprint, no
absolute path of the machine that built it, and only the model's test cases on the slide."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crc_core.inference import _file_fingerprint, load_prediction

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "resources" / "demo"


@pytest.fixture(scope="module")
def demo_json() -> dict:
    return json.loads((DEMO / "demo.json").read_text(encoding="utf-8"))


def _shipped_predictions() -> list[Path]:
    return sorted((DEMO / "predictions").rglob("*.npz"))


def test_the_demo_names_a_model_that_is_shipped_in_models(demo_json):
    model = ROOT / demo_json["model"]["file"]
    assert model.parent == ROOT / "models" and model.is_file()
    assert demo_json["model"]["fingerprint"] == _file_fingerprint(model)


def test_the_shipped_prediction_was_made_by_the_shipped_model(demo_json):
    preds = _shipped_predictions()
    assert preds, "the demo ships no prediction"
    model = ROOT / demo_json["model"]["file"]
    for p in preds:
        pred = load_prediction(p)
        assert pred.model["fingerprint"] == _file_fingerprint(model), p.name
        assert pred.model["checkpoint"] == f"models/{model.name}"


def test_no_absolute_path_is_shipped(demo_json):
    texts = [(DEMO / "demo.json").read_text(encoding="utf-8"),
             (DEMO / "project.json").read_text(encoding="utf-8")]
    for p in _shipped_predictions():
        pred = load_prediction(p)
        texts.append(json.dumps({"model": pred.model, "slide": pred.slide}, default=str))
    for text in texts:
        for needle in (str(ROOT), "/work/", "/home/", "/root/", "/tmp/"):
            assert needle not in text


def test_every_annotated_area_is_drawn_from_test_cases_only(demo_json):
    assert "test split" in demo_json["tiles_used"]
    classes = {a["class"] for a in demo_json["areas"]}
    assert classes == {"Normal", "Adenoma", "Adenocarcinoma"}
    for cls in classes:   # enough areas per class for a crc extract split with validation
        assert sum(a["class"] == cls for a in demo_json["areas"]) >= 3


def test_the_shipped_prediction_gets_every_area_right(demo_json):
    for area in demo_json["shipped_prediction"]["areas"]:
        assert area["majority"] == area["class"], area["area"]
