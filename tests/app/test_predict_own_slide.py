"""A new user's own slide: cmu-1-small-region.svs opened alone (the five-class default scheme),
Analysis > Predict with a three-class model from the repository's models/ folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PySide6.QtCore import QPoint, Qt

from app.dialogs.model_choice import shipped_models_dir
from app.main_window import MainWindow
from crc_core.classes import ClassScheme
from crc_core.scheme_map import read_checkpoint_summary

torch.set_num_threads(2)
COVERS = ("model class Adenocarcinoma covers the project's classes Adenocarcinoma well "
          "differentiated, Adenocarcinoma moderately differentiated and Adenocarcinoma poorly "
          "differentiated")


@pytest.fixture(scope="module")
def shipped_model() -> Path:
    """A three-class model of models/ (whichever demo model is there)."""
    for p in sorted(shipped_models_dir().glob("*.pt")):
        if read_checkpoint_summary(p).scheme.names == ClassScheme.three_class().names:
            return p
    pytest.skip("no three-class model in models/")


@pytest.fixture
def win(cmu_window):
    """cmu-1 opened alone (tests/app/conftest.py): the five-class default scheme."""
    assert cmu_window.project.scheme.ids == ClassScheme.paper().ids
    cmu_window.view.set_view(1100, 1500, 0.6)  # a few windows (224 px at 1.3 µm/px = 583 px here)
    return cmu_window


def _tick(qtbot, box) -> None:
    """Click a check box on its indicator (a click past its text does nothing)."""
    was = box.isChecked()
    qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=QPoint(6, box.height() // 2))
    assert box.isChecked() != was


def _open_predict(win):
    win.analysis_actions["predict"].trigger()  # Analysis > Predict…
    return win.analysis_dialogs["predict"]


def _predict_view(qtbot, win, model: Path, cam: bool = True):
    dlg = _open_predict(win)
    i = dlg.ckpt.findText(str(model))
    assert i >= 0, "the shipped model is offered"
    dlg.ckpt.setCurrentIndex(i)
    qtbot.mouseClick(dlg.scope_buttons["view"], Qt.MouseButton.LeftButton)
    if dlg.cam.isChecked() != cam:
        _tick(qtbot, dlg.cam)
    qtbot.mouseClick(dlg.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not dlg.running, timeout=240000)
    return dlg


def test_shipped_model_is_accepted_and_the_mapping_stated(
        qtbot, win, shipped_model: Path, errors_seen) -> None:
    dlg = _predict_view(qtbot, win, shipped_model, cam=False)
    assert errors_seen == [] and dlg.result is not None
    assert COVERS in dlg.mapping.text()
    assert "before loading the weights" in dlg.mapping.text()
    assert dlg.ckpt_origin.text() == "shipped with CRC Workbench (models/)"
    panel = win.results_panel
    entry = panel.current_entry()
    assert entry.pred is dlg.result and entry.class_layer in list(win.view.layers)
    assert int(dlg.result.predicted.sum()) >= 4
    # The class map's legend: the classes present, in the colours painted; the group is stated.
    shown = panel.legend.shown_names()
    assert shown and set(shown) <= {"Normal", "Adenoma", "Adenocarcinoma"}
    model_colour = read_checkpoint_summary(shipped_model).scheme.get("adenocarcinoma").color
    assert model_colour == win.document.scheme.get("adc-well").color  # #ffc107: a grade's colour
    painted = entry.class_layer.scheme.get("adenocarcinoma").color  # so another one is painted
    assert painted not in {c.color for c in win.document.scheme}
    assert COVERS in panel.legend.note.text()
    assert "a colour of no project class" in panel.legend.note.text()
    _tick(qtbot, panel.legend.all_box)
    assert panel.legend.shown_names() == ["Normal", "Adenoma", "Adenocarcinoma"]


def test_dialog_remembers_the_model_used_last(qtbot, win, shipped_model: Path, tmp_path) -> None:
    dlg = _predict_view(qtbot, win, shipped_model, cam=False)
    qtbot.mouseClick(dlg.close_button, Qt.MouseButton.LeftButton)
    assert not dlg.isVisible()
    again = _open_predict(win)
    assert again is not dlg
    assert again.ckpt.currentText() == str(shipped_model.absolute())
    assert again.ckpt_origin.text() == "used recently"
    # The mapping is stated as soon as the model is chosen, before Predict is pressed.
    qtbot.waitUntil(lambda: COVERS in again.mapping.text(), timeout=60000)
    # The choice is in the settings file: a new window offers it first too.
    other = MainWindow()
    qtbot.addWidget(other)
    assert other.settings.get("recent_models")[0] == str(shipped_model.absolute())


def test_model_class_without_counterpart_is_refused_before_loading(
        qtbot, win, tmp_path: Path, errors_seen) -> None:
    bad = tmp_path / "stroma.pt"
    torch.save({"kind": "crc-workbench-checkpoint", "format": 1, "arch": "resnet50",
                "classes": ClassScheme.from_names(["Normal", "Stroma"]).to_json(),
                "model": {"fc.weight": torch.zeros(2, 4)}}, bad)
    dlg = _open_predict(win)
    dlg.ckpt.lineEdit().clear()
    qtbot.keyClicks(dlg.ckpt.lineEdit(), str(bad))
    qtbot.waitUntil(lambda: dlg.mapping.text().startswith("Refused:"), timeout=60000)
    assert "Stroma has no counterpart" in dlg.mapping.text() and errors_seen == []
    qtbot.mouseClick(dlg.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not dlg.running, timeout=60000)
    assert len(errors_seen) == 1
    msg = errors_seen[0][1]
    assert "Stroma has no counterpart in the project's class scheme" in msg
    assert "before loading its weights" in msg
    assert not win.results_panel.entries and dlg.run_button.isEnabled()


def test_region_annotated_with_a_grade_is_compared_with_the_coarse_class(
        qtbot, win, shipped_model: Path) -> None:
    from shapely.geometry import box

    r = win.view.visible_rect_l0()
    win.document.add("adc-moderate", box(r.left(), r.top(), r.right(), r.bottom()), name="tumour")
    _predict_view(qtbot, win, shipped_model, cam=False)
    table = win.results_panel.table
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    assert table.rowCount() == 1
    assert table.item(0, headers.index("Label")).text() == (
        "Adenocarcinoma moderately differentiated")
    share = table.item(0, headers.index("Label share")).text()
    assert share and share == table.item(0, headers.index("Adenocarcinoma share")).text()
    assert table.item(0, headers.index("Agreement")).text() in ("yes", "no")


def test_cam_class_switch_and_smoothing_change_the_heatmap(
        qtbot, win, shipped_model: Path, errors_seen) -> None:
    _predict_view(qtbot, win, shipped_model, cam=True)
    panel = win.results_panel
    _tick(qtbot, panel.heat_box)
    heat = panel.current_entry().heat_layer
    assert heat.visible and "explains each window's predicted class" in (
        panel.cam_controls.statement.text())
    before = heat.image.copy()
    combo = panel.cam_controls.class_combo
    assert combo.isEnabled() and combo.currentText() == "Each window's predicted class"
    combo.setFocus()
    qtbot.keyClick(combo, Qt.Key.Key_Down)  # the next entry: the model's first class
    assert combo.currentText() == "Normal"
    qtbot.waitUntil(lambda: panel.cam_controls.worker is None
                    and "explains Normal" in panel.cam_controls.statement.text(), timeout=240000)
    assert errors_seen == []
    switched = heat.image.copy()
    assert switched != before
    _tick(qtbot, panel.cam_controls.smooth_box)
    assert "smoothed" in panel.cam_controls.statement.text()
    assert heat.image != switched
    assert panel.cam_controls.bar.color_at(1.0) != panel.cam_controls.bar.color_at(0.0)
