"""Metrics against hand-computed confusion matrices; tables, plots, report and comparison files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from crc_core.errors import DatasetError
from crc_core.evaluation import compare, compute_metrics, table3, table4, write_tables

NAMES = ["Normal", "Adenoma", "Adenocarcinoma"]


def one_hot_probs(pred: list[int], k: int = 3) -> np.ndarray:
    p = np.full((len(pred), k), 0.1)
    p[np.arange(len(pred)), pred] = 0.8
    return p


@pytest.fixture()
def hand_case() -> tuple[list[int], list[int]]:
    # Confusion matrix (rows true, columns predicted):
    #            N  A  C
    #   Normal   3  1  0
    #   Adenoma  1  4  1
    #   Adenoca  0  2  8
    cm = [[3, 1, 0], [1, 4, 1], [0, 2, 8]]
    y, pred = [], []
    for t in range(3):
        for p in range(3):
            y += [t] * cm[t][p]
            pred += [p] * cm[t][p]
    return y, pred


def test_confusion_matrix_matches(hand_case) -> None:
    y, pred = hand_case
    m = compute_metrics(y, one_hot_probs(pred), NAMES)
    assert m["confusion"] == [[3, 1, 0], [1, 4, 1], [0, 2, 8]]
    assert m["accuracy"] == pytest.approx(15 / 20)


def test_per_class_metrics_match_hand_computation(hand_case) -> None:
    y, pred = hand_case
    m = compute_metrics(y, one_hot_probs(pred), NAMES)["per_class"]
    # Adenoma: TP 4, FP 1 + 2 = 3, FN 1 + 1 = 2, TN 20 - 4 - 3 - 2 = 11.
    assert m["Adenoma"]["precision"] == pytest.approx(4 / 7)
    assert m["Adenoma"]["recall"] == pytest.approx(4 / 6)
    assert m["Adenoma"]["specificity"] == pytest.approx(11 / 14)
    assert m["Adenoma"]["npv"] == pytest.approx(11 / 13)
    assert m["Adenoma"]["support"] == 6
    # Normal: TP 3, FP 1, FN 1, TN 15.
    assert m["Normal"]["specificity"] == pytest.approx(15 / 16)
    assert m["Normal"]["npv"] == pytest.approx(15 / 16)
    # Adenocarcinoma: TP 8, FP 1, FN 2, TN 9.
    assert m["Adenocarcinoma"]["specificity"] == pytest.approx(9 / 10)
    assert m["Adenocarcinoma"]["npv"] == pytest.approx(9 / 11)


def test_macro_values_are_means_of_the_per_class_values(hand_case) -> None:
    y, pred = hand_case
    m = compute_metrics(y, one_hot_probs(pred), NAMES)
    spec = [15 / 16, 11 / 14, 9 / 10]
    npv = [15 / 16, 11 / 13, 9 / 11]
    assert m["macro"]["specificity"] == pytest.approx(np.mean(spec))
    assert m["macro"]["npv"] == pytest.approx(np.mean(npv))
    assert m["macro"]["map"] == pytest.approx(np.mean([v["ap"] for v in m["per_class"].values()]))


def test_perfect_scores_give_ap_and_auroc_of_one() -> None:
    y = [0, 0, 1, 1, 2, 2]
    m = compute_metrics(y, one_hot_probs(y), NAMES)
    assert m["macro"]["map"] == pytest.approx(1.0) and m["macro"]["auroc"] == pytest.approx(1.0)


def test_class_absent_from_labels_has_null_ap_and_auroc() -> None:
    y = [0, 0, 1, 1]
    m = compute_metrics(y, one_hot_probs([0, 1, 1, 2]), NAMES)
    assert m["per_class"]["Adenocarcinoma"]["ap"] is None
    assert m["per_class"]["Adenocarcinoma"]["auroc"] is None
    assert m["per_class"]["Adenocarcinoma"]["support"] == 0
    assert m["macro"]["map"] == pytest.approx(
        np.mean([m["per_class"][n]["ap"] for n in NAMES[:2]]))


def test_metrics_json_layout_is_the_issues(hand_case) -> None:
    y, pred = hand_case
    m = compute_metrics(y, one_hot_probs(pred), NAMES)
    assert set(m["macro"]) == {"map", "precision", "recall", "specificity", "npv", "auroc"}
    assert set(m["per_class"]["Normal"]) == {"precision", "recall", "specificity", "npv", "ap",
                                             "auroc", "support"}
    json.dumps(m)


def test_tables_have_the_papers_layout(hand_case, tmp_path: Path) -> None:
    y, pred = hand_case
    res = {"resnet50": compute_metrics(y, one_hot_probs(pred), NAMES),
           "densenet121": compute_metrics(y, one_hot_probs(y), NAMES)}
    h3, r3 = table3(res)
    assert h3[:6] == ["Model", "mAP", "Precision", "Recall", "Specificity", "NPV"]
    assert [r[0] for r in r3] == ["resnet50", "densenet121"]
    h4, r4 = table4(res)
    assert h4[:6] == ["Class", "Model", "Precision", "Recall", "Specificity", "NPV"]
    assert [(r[0], r[1]) for r in r4[:2]] == [("Normal", "resnet50"), ("Normal", "densenet121")]
    texts = write_tables(res, tmp_path)
    assert "| densenet121 | 1.0000 |" in texts["table3"]
    assert (tmp_path / "table4.csv").read_text().startswith("Class,Model,Precision")


def test_compare_rejects_a_folder_without_metrics(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="metrics.json"):
        compare([tmp_path], tmp_path / "cmp")


def test_compare_writes_side_by_side_tables_and_a_report(hand_case, tmp_path: Path) -> None:
    y, pred = hand_case
    for name, p in (("resnet50", pred), ("inception_v3", y)):
        d = tmp_path / name
        d.mkdir()
        m = compute_metrics(y, one_hot_probs(p), NAMES)
        m["model"] = name
        (d / "metrics.json").write_text(json.dumps(m))
    res = compare([tmp_path / "resnet50", tmp_path / "inception_v3"], tmp_path / "cmp")
    assert res["models"] == ["resnet50", "inception_v3"]
    page = (tmp_path / "cmp" / "report.html").read_text()
    assert "inception_v3" in page and not re.search(r'src="(?!data:)', page)
