"""Class groups: a coarser model on a finer project scheme and back, checked before weights load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from crc_core.classes import ClassScheme
from crc_core.errors import CheckpointError, ClassSchemeError
from crc_core.inference import GridSpec, Prediction
from crc_core.regions import region_results
from crc_core.scheme_map import (
    checked_predict,
    model_classes_for_label,
    read_checkpoint_summary,
    scheme_map,
)
from crc_core.slide import open_array

PAPER, THREE = ClassScheme.paper(), ClassScheme.three_class()
GRADES = ["adc-well", "adc-moderate", "adc-poor"]


def _fake_checkpoint(path: Path, scheme: ClassScheme) -> Path:
    """A checkpoint's metadata with a token weight (enough for the class check)."""
    torch.save({"kind": "crc-workbench-checkpoint", "format": 1, "arch": "resnet50",
                "classes": scheme.to_json(), "input_size": 64,
                "model": {"fc.weight": torch.zeros(len(scheme), 4)}}, path)
    return path


def test_coarse_model_class_covers_the_three_grades() -> None:
    m = scheme_map(THREE, PAPER)
    assert m.project_classes("Adenocarcinoma") == GRADES
    assert m.project_classes("normal") == ["normal"]
    text = m.statement()
    assert ("model class Adenocarcinoma covers the project's classes Adenocarcinoma well "
            "differentiated, Adenocarcinoma moderately differentiated and Adenocarcinoma poorly "
            "differentiated") in text
    assert "painted in the group's colour #d32f2f" in text


def test_a_group_in_a_grade_s_colour_is_painted_in_a_colour_of_no_project_class() -> None:
    """Issue 13 review: the shipped model's Adenocarcinoma is #ffc107, the five-class scheme's
    "Adenocarcinoma well differentiated": the class map must not read as that grade."""
    import math

    from crc_core.classes import ClassDef

    for colour in ((255, 193, 7), (250, 190, 12)):  # the same colour, and very nearly it
        shipped = ClassScheme(THREE.classes[:2] + [ClassDef("adenocarcinoma", "Adenocarcinoma",
                                                            colour, "3")])
        m = scheme_map(shipped, PAPER)
        shown = m.display_scheme().get("adenocarcinoma").color
        assert all(math.dist(shown, p.color) > 72 for p in PAPER), shown  # far from all
        assert scheme_map(shipped, PAPER).display_scheme().get("adenocarcinoma").color == shown
        hex_ = "#{:02x}{:02x}{:02x}".format(*shown)
        assert (f"(painted in {hex_}, a colour of no project class: the model's own "
                f"{shipped.get('adenocarcinoma').hex} is the project's colour for Adenocarcinoma "
                f"well differentiated)") in m.statement()
        assert m.display_scheme().get("normal").color == PAPER.get("normal").color
    summary = Path(__file__).resolve().parents[2] / "models" / "demo_densenet121_3class.pt"
    if summary.is_file():  # the shipped checkpoint itself (read, never re-saved)
        from crc_core.scheme_map import check_checkpoint

        m, _ = check_checkpoint(summary, PAPER)
        assert m.display_scheme().get("adenocarcinoma").color not in {p.color for p in PAPER}


def test_back_from_the_finer_scheme_each_grade_is_the_coarse_class() -> None:
    m = scheme_map(THREE, PAPER)
    for g in GRADES:
        assert m.model_classes(g) == ["adenocarcinoma"]
    assert m.model_classes("Adenoma") == ["adenoma"]


def test_finer_model_on_a_coarser_project_merges_the_grades() -> None:
    m = scheme_map(PAPER, THREE)
    assert [k.kind for k in m.links] == ["same", "same", "member", "member", "member"]
    assert m.model_classes("adenocarcinoma") == GRADES
    shown = m.display_scheme()
    assert shown.ids == PAPER.ids
    assert {shown.get(g).color for g in GRADES} == {THREE.get("adenocarcinoma").color}
    assert "is counted as the project's class Adenocarcinoma" in m.statement()


def test_display_scheme_keeps_the_model_order_and_ids_with_the_group_colour() -> None:
    shown = scheme_map(THREE, PAPER).display_scheme()
    assert shown.ids == THREE.ids and shown.names == THREE.names
    assert shown.get("normal").color == PAPER.get("normal").color


def test_identical_schemes_state_nothing() -> None:
    assert scheme_map(PAPER, PAPER.copy()).statement() == ""


def test_qualified_names_join_a_group_without_the_known_ids() -> None:
    project = ClassScheme.from_names(["Normal", "Adenoma", "Adenocarcinoma, mucinous",
                                      "Adenocarcinoma (signet ring)"])
    m = scheme_map(THREE, project)
    assert len(m.project_classes("adenocarcinoma")) == 2
    assert "Adenoma" not in [project.get(i).name for i in m.project_classes("adenocarcinoma")]


def test_model_class_without_counterpart_is_refused_by_name() -> None:
    model = ClassScheme.from_names(["Normal", "Stroma"])
    with pytest.raises(ClassSchemeError, match="Stroma has no counterpart in the project's "
                                               "class scheme"):
        scheme_map(model, PAPER)


def test_refusal_comes_before_the_weights_load(tmp_path: Path, monkeypatch) -> None:
    import crc_core.inference as inference

    def no_load(*_a, **_k):
        raise AssertionError("the weights were loaded")

    monkeypatch.setattr(inference, "load_model", no_load)
    ckpt = _fake_checkpoint(tmp_path / "stroma.pt", ClassScheme.from_names(["Normal", "Stroma"]))
    slide = open_array(np.full((512, 512, 3), 200, np.uint8), mpp=0.5)
    job = checked_predict(slide, ckpt, PAPER)
    assert "reading the model's classes" in next(job).message
    with pytest.raises(ClassSchemeError, match="Stroma"):
        next(job)


def test_checkpoint_summary_reads_the_classes_without_the_weights(tmp_path: Path) -> None:
    s = read_checkpoint_summary(_fake_checkpoint(tmp_path / "c.pt", THREE))
    assert s.arch == "resnet50" and s.scheme.names == THREE.names and s.input_size == 64


def test_checkpoint_summary_of_a_non_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "notes.pt"
    bad.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable CRC Workbench checkpoint"):
        read_checkpoint_summary(bad)
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint_summary(tmp_path / "missing.pt")


def test_label_of_a_grade_agrees_with_the_coarse_model_class() -> None:
    assert model_classes_for_label(PAPER.get("adc-moderate"), THREE) == ["adenocarcinoma"]
    assert model_classes_for_label(THREE.get("adenocarcinoma"), PAPER) == GRADES
    assert model_classes_for_label(PAPER.get("adenoma"), THREE) == ["adenoma"]


def test_region_annotated_moderately_differentiated_agrees_with_adenocarcinoma() -> None:
    from shapely.geometry import box

    probs = np.zeros((3, 2, 2), np.float32)
    probs[2] = 0.8
    probs[0] = 0.2
    grid = GridSpec((0, 0), 100, 100, 2, 2, 0, 100, 64)
    pred = Prediction(probs, np.ones((2, 2), bool), grid, scheme_map(THREE, PAPER).display_scheme())
    region = {"id": "a", "name": "", "geometry": box(0, 0, 200, 200), "label": "adc-moderate"}
    (r,) = region_results(pred, [region], PAPER)
    assert r.majority_name == "Adenocarcinoma"
    assert r.label_name == "Adenocarcinoma moderately differentiated"
    assert r.agreement is True and r.label_share == pytest.approx(1.0)
