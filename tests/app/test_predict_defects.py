"""Issue 13's defects of the prediction review, on small models: a new prediction keeps the display
settings, names survive a relaunch, warnings are apart, the table shows whole class names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PySide6.QtCore import QPoint, Qt

from app.main_window import MainWindow
from app.panels.results import TABLE_MIN_ROWS, install_results_panel
from crc_core.classes import ClassScheme

torch.set_num_threads(2)


def _checkpoint(folder: Path, name: str, scheme: ClassScheme, patch_size: int | None) -> Path:
    from crc_core.models import build_model, save_checkpoint

    torch.manual_seed(0)
    path = folder / f"{name}.pt"
    save_checkpoint(path, build_model("densenet121", len(scheme)), arch="densenet121",
                    classes=scheme, input_size=64, patch_size=patch_size, mpp=0.5)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "three": _checkpoint(folder, "three", ClassScheme.three_class(), 224),
        "five": _checkpoint(folder, "five", ClassScheme.paper(), 224),
        "no-patch": _checkpoint(folder, "nopatch", ClassScheme.three_class(), None),
    }


def _window(qtbot, path: Path) -> MainWindow:
    w = MainWindow()
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    qtbot.waitExposed(w)
    assert w.open_path(path)
    return w


def _tick(qtbot, box) -> None:
    qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=QPoint(6, box.height() // 2))


def _predict(qtbot, win, ckpt: Path, dlg=None):
    if dlg is None:
        win.analysis_actions["predict"].trigger()
        dlg = win.analysis_dialogs["predict"]
        dlg.ckpt.lineEdit().clear()
        qtbot.keyClicks(dlg.ckpt.lineEdit(), str(ckpt))
        qtbot.mouseClick(dlg.scope_buttons["view"], Qt.MouseButton.LeftButton)
        if dlg.cam.isChecked():
            _tick(qtbot, dlg.cam)
    qtbot.mouseClick(dlg.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not dlg.running, timeout=240000)
    assert dlg.result is not None, dlg.status.text()
    return dlg


def test_new_prediction_keeps_the_threshold_and_the_hidden_classes(
        qtbot, slides_dir: Path, models) -> None:
    win = _window(qtbot, slides_dir / "cmu-1-small-region.svs")
    win.view.set_view(1100, 1500, 0.9)
    dlg = _predict(qtbot, win, models["three"])
    panel = win.results_panel
    panel.threshold.setFocus()
    qtbot.keyClick(panel.threshold, Qt.Key.Key_PageUp)
    assert panel.threshold.value() == panel.threshold.pageStep()
    _tick(qtbot, panel.class_boxes[0])
    assert not panel.class_boxes[0].isChecked()
    _predict(qtbot, win, models["three"], dlg)  # the same again: a new entry replaces it
    layer = panel.current_entry().class_layer
    assert panel.threshold.value() == panel.threshold.pageStep()
    assert layer.threshold == pytest.approx(panel.threshold.pageStep() / 100)
    assert not panel.class_boxes[0].isChecked() and layer.class_visible == [False, True, True]


def test_prediction_name_survives_a_relaunch(qtbot, slides_dir: Path, models) -> None:
    win = _window(qtbot, slides_dir / "cmu-1-small-region.svs")
    win.view.set_view(1100, 1500, 1.5)
    dlg = _predict(qtbot, win, models["three"])
    assert win.results_panel.current == "three (current view)"
    dlg.close()
    win.close()
    again = _window(qtbot, slides_dir / "cmu-1-small-region.svs")
    panel = install_results_panel(again)
    names = [panel.model_combo.itemText(i) for i in range(panel.model_combo.count())]
    assert names == ["three (current view)"]


def test_two_warnings_are_on_lines_of_their_own(qtbot, slides_dir: Path, models) -> None:
    win = _window(qtbot, slides_dir / "kidney-48-5.tif")  # no pixel size in the file
    win.view.set_view(700, 450, 2.0)
    dlg = _predict(qtbot, win, models["no-patch"])
    lines = dlg.status.text().splitlines()
    bullets = [ln for ln in lines if ln.startswith("• ")]
    assert len(bullets) >= 2, lines
    assert any("no mpp" in b for b in bullets)
    assert any("does not record its patch size" in b for b in bullets)


def test_results_table_shows_whole_class_names_and_eight_rows(
        qtbot, slides_dir: Path, models) -> None:
    from shapely.geometry import box

    win = _window(qtbot, slides_dir / "cmu-1-small-region.svs")
    win.view.set_view(1100, 1500, 1.5)
    r = win.view.visible_rect_l0()
    win.document.add("adc-moderate", box(r.left(), r.top(), r.right(), r.bottom()))
    _predict(qtbot, win, models["five"])
    table = win.results_panel.table
    assert table.rowCount() == 1
    fm = table.horizontalHeader().fontMetrics()
    for col in range(table.columnCount()):
        text = table.horizontalHeaderItem(col).text()
        assert table.columnWidth(col) >= fm.horizontalAdvance(text), text
        item = table.item(0, col)
        if item is not None:
            assert table.columnWidth(col) >= table.fontMetrics().horizontalAdvance(item.text())
    assert "Adenocarcinoma moderately differentiated share" in [
        table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    rows_room = table.viewport().height() // table.verticalHeader().defaultSectionSize()
    # room for every row it has, up to eight (tests/app/test_results_legend_layout.py: eight of
    # nine; an empty or short table leaves the rest to the legend)
    assert rows_room >= min(table.rowCount(), TABLE_MIN_ROWS)
