"""Report panel: reads real run and evaluation folders (a one-epoch ResNet50 run on EBHI tiles)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from ebhi_subset import write_subset
from PySide6.QtCore import Qt

import app.dialogs.errors as error_box
from app.panels import report as report_module
from app.panels.report import ReportPanel
from crc_core.cli import main as crc_main
from crc_core.errors import CrcError, DatasetError
from crc_core.evaluation import evaluate
from crc_core.jobs import run_job
from crc_core.runs import read_run
from crc_core.training import fit, make_config
from crc_testkit.metrics import metrics_from_predictions

CLASSES = ["Normal", "Low-grade IN", "Adenocarcinoma"]


@pytest.fixture(scope="module")
def run_dir(ebhi_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run folder: history.csv, last.pt, best.pt and eval/ from crc_core's fit/evaluate."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("report")
    data = write_subset(ebhi_dir, root / "sub.csv", CLASSES, 8, per_case=2)
    cfg = make_config("resnet50", "quick", epochs=1, batch_size=8, image_size=64, device="cpu",
                      val_fraction=0.25,
                      data={"label_column": "ebhi_class", "group_column": "case_id"})
    run = root / "runs" / "resnet50-a"
    try:
        run_job(fit(data, run, cfg))
        run_job(evaluate(run / "best.pt", data, run / "eval", device="cpu"))
    finally:
        torch.set_num_threads(before)
    return run


@pytest.fixture
def panel(qtbot) -> ReportPanel:
    p = ReportPanel()
    qtbot.addWidget(p)
    p.resize(1100, 700)
    p.show()
    return p


def _metrics(run: Path) -> dict:
    return json.loads((run / "eval" / "metrics.json").read_text())


def _cell(table, row: int, header: str) -> str:
    cols = [table.horizontalHeaderItem(j).text() for j in range(table.columnCount())]
    return table.item(row, cols.index(header)).text()


def test_run_folder_fills_table3_in_the_papers_layout(panel: ReportPanel, run_dir: Path):
    panel.open_folder(run_dir)
    m = _metrics(run_dir)
    t3 = panel.table3
    header = [t3.horizontalHeaderItem(j).text() for j in range(t3.columnCount())]
    assert header == ["Model", "mAP", "Precision", "Recall", "Specificity", "NPV", "AUROC",
                      "Accuracy"]
    assert t3.rowCount() == 1
    assert float(_cell(t3, 0, "Accuracy")) == pytest.approx(m["accuracy"], abs=5e-5)
    assert float(_cell(t3, 0, "mAP")) == pytest.approx(m["macro"]["map"], abs=5e-5)


def test_table4_specificity_and_npv_follow_the_confusion_matrix(panel: ReportPanel,
                                                                run_dir: Path):
    panel.open_folder(run_dir)
    m = _metrics(run_dir)
    cm = np.array(m["confusion"])
    t4 = panel.table4
    assert t4.rowCount() == len(CLASSES)
    for row in range(t4.rowCount()):
        i = m["classes"].index(_cell(t4, row, "Class"))   # the confusion matrix's order
        tp = cm[i, i]
        fp, fn = cm[:, i].sum() - tp, cm[i, :].sum() - tp
        tn = cm.sum() - tp - fp - fn
        spec = tn / (tn + fp) if tn + fp else 0.0
        npv = tn / (tn + fn) if tn + fn else 0.0
        assert float(_cell(t4, row, "Specificity")) == pytest.approx(spec, abs=5e-5)
        assert float(_cell(t4, row, "NPV")) == pytest.approx(npv, abs=5e-5)
        assert int(_cell(t4, row, "Support")) == cm[i].sum()


def test_plots_show_roc_confusion_and_history(panel: ReportPanel, run_dir: Path):
    panel.open_folder(run_dir)
    m = _metrics(run_dir)
    assert panel.confusion.matrix.tolist() == m["confusion"]
    # AUCs from predictions.csv (probabilities as written, 6 decimals), as crc_core recomputes them.
    again = metrics_from_predictions(run_dir / "eval" / "predictions.csv")
    present = [c for c, v in again["per_class"].items() if v["auroc"] is not None]
    assert present and sorted(panel.roc.curves) == sorted(present)
    for c in present:
        assert panel.roc.curves[c] == pytest.approx(again["per_class"][c]["auroc"])
    with open(run_dir / "history.csv", newline="") as fh:
        hist = list(csv.DictReader(fh))
    assert panel.curves.series("train_loss", "resnet50") == pytest.approx(
        [float(r["train_loss"]) for r in hist])


def test_evaluation_folder_opens_alone(panel: ReportPanel, run_dir: Path):
    panel.open_folder(run_dir / "eval")
    assert list(panel.evaluated()) == ["resnet50"]
    assert len(panel.curves.series("val_loss", "resnet50")) == 1   # history found next to it
    # which images were scored and at which scale, said beside the figures as in report.html
    m = _metrics(run_dir)
    text = panel.summary.text()
    assert f"Scored: {m['subset_how']}." in text and f"Scale: {m['scale']}." in text
    assert "the model's scale is unknown" in text           # trained without --mpp


def test_unevaluated_run_shows_curves_without_tables(panel: ReportPanel, run_dir: Path,
                                                     tmp_path: Path):
    run = tmp_path / "plain"
    run.mkdir()
    for f in ("history.csv", "config.json"):
        shutil.copy(run_dir / f, run / f)
    panel.open_folder(run)
    assert panel.evaluated() == {}
    assert panel.table3.rowCount() == 0
    assert "not evaluated" in panel.summary.text()
    assert len(panel.curves.series("train_acc", "resnet50")) == 1


def test_folder_of_runs_compares_the_models(panel: ReportPanel, run_dir: Path, tmp_path: Path):
    runs = tmp_path / "models"
    shutil.copytree(run_dir, runs / "resnet50-a", ignore=shutil.ignore_patterns("*.pt"))
    shutil.copytree(run_dir, runs / "resnet50-b", ignore=shutil.ignore_patterns("*.pt"))
    panel.open_folder(runs)
    assert panel.table3.rowCount() == 2
    assert panel.table4.rowCount() == 2 * len(CLASSES)
    assert panel.model_combo.count() == 2


def test_folder_without_results_is_refused(panel: ReportPanel, tmp_path: Path):
    with pytest.raises(CrcError, match="neither an evaluation folder"):
        panel.open_folder(tmp_path)


def test_corrupt_metrics_json_is_refused_with_its_name(tmp_path: Path):
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(DatasetError, match="metrics.json"):
        read_run(tmp_path)


def test_the_panel_reads_folders_with_crc_core_runs():
    from crc_core import runs

    assert report_module.read_run is runs.read_run
    assert report_module.run_children is runs.run_children


def test_a_history_row_that_does_not_parse_is_left_out(panel: ReportPanel, run_dir: Path,
                                                      tmp_path: Path):
    run = tmp_path / "plain"
    run.mkdir()
    for f in ("history.csv", "config.json"):
        shutil.copy(run_dir / f, run / f)
    with open(run / "history.csv", "a", encoding="utf-8") as fh:
        fh.write("two,x,,,,,,,\n")                       # a torn or hand-edited row
    panel.open_folder(run)
    assert len(panel.curves.series("train_loss", "resnet50")) == 1
    assert "1 epoch(s)" in panel.summary.text()


def test_unreadable_metrics_json_reads_the_same_in_the_panel_and_crc_compare(
        panel: ReportPanel, qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]):
    bad = tmp_path / "eval"
    bad.mkdir()
    (bad / "metrics.json").write_text("{not json", encoding="utf-8")
    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(error_box, "show_error", lambda _p, title, msg: shown.append((title, msg)))
    monkeypatch.setattr(report_module.QFileDialog, "getExistingDirectory",
                        staticmethod(lambda *_a, **_k: str(bad)))
    qtbot.mouseClick(panel.open_button, Qt.MouseButton.LeftButton)
    assert len(shown) == 1 and shown[0][0] == "Cannot open report"
    message = shown[0][1]
    assert message.startswith(f"{bad / 'metrics.json'}: not a readable metrics.json (")
    assert "\n" not in message

    assert crc_main(["compare", str(bad), "--out", str(tmp_path / "cmp"), "--quiet"]) == 2
    assert capsys.readouterr().err == f"crc: error: {message}\n"
