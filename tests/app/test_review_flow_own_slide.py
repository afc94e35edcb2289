"""Issue 13's done-when flow on a new user's own slide: cmu-1-small-region.svs opened alone (the
five-class default scheme), Analysis > Predict with the shipped three-class model over the whole
slide (stride a quarter window), Analysis > Prediction to Annotations… (the model's Adenocarcinoma
becomes a chosen grade, stated), the five most uncertain items stepped through with N in the Review
dock (two corrected with number keys), a dataset built and a model fine-tuned from the shipped one
from the Train dialog's "Start from a model". Small settings throughout (1 epoch, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from test_predict_own_slide import shipped_model  # noqa: F401 - the fixture
from test_review_flow import _build_dataset

from app.main_window import MainWindow
from crc_core.classes import ClassScheme
from crc_core.finetune import comparison_text
from crc_core.proposals import is_proposed, is_reviewed, review_info

TIMEOUT_MS = 300_000
GRADES = ("adc-well", "adc-moderate", "adc-poor")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/app/conftest.py


@pytest.fixture
def win(cmu_window) -> MainWindow:
    """cmu-1 opened alone (tests/app/conftest.py): the five-class default scheme."""
    assert cmu_window.project.scheme.ids == ClassScheme.paper().ids
    return cmu_window


def _predict_whole_slide(qtbot, win: MainWindow, model: Path) -> None:
    win.analysis_actions["predict"].trigger()  # Analysis > Predict…
    dlg = win.analysis_dialogs["predict"]
    dlg.ckpt.setCurrentIndex(dlg.ckpt.findText(str(model)))
    qtbot.mouseClick(dlg.scope_buttons["slide"], Qt.MouseButton.LeftButton)
    dlg.stride.setValue(56)  # a quarter of the model's 224 px window
    if dlg.cam.isChecked():
        dlg.cam.setChecked(False)
    qtbot.mouseClick(dlg.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not dlg.running, timeout=TIMEOUT_MS)
    assert dlg.result is not None and int(dlg.result.predicted.sum()) >= 20
    entry = win.results_panel.current_entry()
    assert entry.pred is dlg.result and entry.class_layer in list(win.view.layers)
    assert entry.class_layer.visible  # the class map is shown
    qtbot.mouseClick(dlg.close_button, Qt.MouseButton.LeftButton)


def _convert_as(qtbot, win: MainWindow, grade: str) -> None:
    """Analysis > Prediction to Annotications…: the model's Adenocarcinoma becomes ``grade``."""
    doc = win.document
    win.analysis_actions["convert"].trigger()
    dlg = win.analysis_dialogs["convert"]
    combo = dlg.group_boxes["adenocarcinoma"]  # "Adenocarcinoma (model) becomes"
    assert combo.currentData() == "adc-well"  # the group's first member by default
    combo.setFocus()
    while combo.currentData() != grade:
        qtbot.keyClick(combo, Qt.Key.Key_Down)
    name = doc.scheme.get(grade).name
    assert f"not its grade: its areas are proposed as {name}" in dlg.group_note.text()
    assert dlg.min_conf.value() == 0.5  # less certain windows stay out, for review
    qtbot.mouseClick(dlg.convert_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(doc) > 0, timeout=60000)


def _review_five(qtbot, win: MainWindow) -> list[tuple[str, str]]:
    """N through the five most uncertain items (proposed areas or uncovered windows): a number
    key (another class) on the second and fourth, Enter on the others; (key, class) corrected."""
    panel, doc = win.review_panel, win.document
    qtbot.waitUntil(lambda: len(panel.items) >= 5, timeout=5000)
    panel.list.setFocus()
    corrected = []
    for i in range(5):
        qtbot.keyClick(panel.list, Qt.Key.Key_N)
        it = panel.current_item()
        assert it.key == panel.items[i].key
        if i in (1, 3):
            was = doc.get(it.ann_id).class_id if it.ann_id else it.predicted
            grade = i == 1 and was != "adc-poor"  # one becomes a grade the model cannot tell
            k = next(k for k, c in enumerate(doc.scheme, 1)
                     if c.id != was and (c.id == "adc-poor" if grade else k < 3))
            qtbot.keyClick(panel.list, getattr(Qt.Key, f"Key_{k}"))
            corrected.append((it.key, doc.scheme.classes[k - 1].id))
        else:
            qtbot.keyClick(panel.list, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda n=i + 1: panel.reviewed_count()[0] == n, timeout=3000)
    return corrected


def test_own_slide_predict_convert_review_and_fine_tune(
        qtbot, win: MainWindow, shipped_model: Path, errors_seen) -> None:  # noqa: F811
    doc = win.document
    _predict_whole_slide(qtbot, win, shipped_model)
    _convert_as(qtbot, win, "adc-moderate")
    assert errors_seen == []
    assert all(is_proposed(a) for a in doc)
    classes = {a.class_id for a in doc}
    assert classes <= {"normal", "adenoma", "adc-moderate"}, classes
    for a in doc:  # a proposal of the group says the grade was not predicted
        assert ("set the grade in review" in review_info(a).get("note", "")) == (
            a.class_id == "adc-moderate")
    panel = win.review_panel
    qtbot.waitUntil(lambda: panel.counter.text() == f"0 of {len(panel.items)} reviewed",
                    timeout=5000)
    corrected = _review_five(qtbot, win)
    for key, class_id in corrected:
        a = doc.get(next(it for it in panel.items if it.key == key).ann_id)
        assert a.class_id == class_id and review_info(a)["status"] == "corrected"
        assert is_reviewed(a) and review_info(a)["proposed_class"] != class_id
    assert panel.counter.text() == f"5 of {len(panel.items)} reviewed"
    assert doc.flush()
    data = _build_dataset(qtbot, win)
    assert (data / "manifest.csv").is_file()
    dlg = win.open_analysis("train")
    dlg.dataset_combo.setCurrentText(str(data))
    dlg.start_from.combo.setCurrentText(str(shipped_model))
    dlg.epochs_spin.setValue(1)
    dlg.batch_spin.setValue(8)
    dlg.device_combo.setCurrentText("cpu")
    qtbot.waitUntil(lambda: not dlg.summary_pending(), timeout=60_000)  # checked in a worker
    # allFinished comes however the job ends (done, failed after runFailed, or cancelled)
    with qtbot.waitSignal(dlg.allFinished, timeout=TIMEOUT_MS):
        qtbot.mouseClick(dlg.start_button, Qt.MouseButton.LeftButton)
    assert errors_seen == [] and dlg.outcome == "done"
    run = next(Path(win.project.models_dir).rglob("compare.json")).parent
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()
    result = json.loads((run / "compare.json").read_text())
    log = dlg.log.toPlainText()
    assert "left out, not classes of the model" not in log  # the grades count as their group
    if "warning" in result:
        assert "nothing was held out for testing" in log
    else:
        assert comparison_text(result).splitlines()[0] in log
