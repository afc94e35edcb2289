"""The review loop in the viewer, on a copy of the demo project and its shipped prediction:
Analysis > Prediction to Annotations… (one undoable command), the Review panel's N/P stepping,
number keys and Enter, the counter, and the proposed state in the annotation list."""

from __future__ import annotations

import getpass
import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from shapely.geometry import Point

from app.dialogs.convert_prediction import push_added
from app.main_window import MainWindow
from crc_core.proposals import (
    is_proposed,
    is_reviewed,
    prediction_to_annotations,
    review_info,
)

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"


@pytest.fixture
def demo_win(qtbot, tmp_path: Path) -> MainWindow:
    """The main window on a copy of the demo project, its saved prediction loaded."""
    if not (DEMO / "project.json").is_file() or not list((DEMO / "predictions").rglob("*.npz")):
        pytest.skip("resources/demo with a saved prediction is not in this checkout")
    root = tmp_path / "demo"
    shutil.copytree(DEMO, root)
    w = MainWindow()
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    qtbot.waitExposed(w)
    assert w.open_path(root)
    qtbot.waitUntil(lambda: w.document is not None and w.results_panel.current_entry() is not None,
                    timeout=30000)
    return w


def _menu_action(win: MainWindow, menu: str, text: str):
    for top in win.menuBar().actions():
        if top.text().replace("&", "") == menu:
            for a in top.menu().actions():
                if a.text().replace("&", "") == text:
                    return a
    raise AssertionError(f"no {menu} > {text}")


def test_convert_prediction_in_the_viewer_and_undo(qtbot, demo_win: MainWindow):
    win, doc = demo_win, demo_win.document
    n0, undo0 = len(doc), doc.undo_stack.index()
    _menu_action(win, "Analysis", "Prediction to Annotations…").trigger()
    dlg = win.analysis_dialogs["convert"]
    assert dlg.isVisible() and dlg.scope.currentText() == "Whole slide"
    assert dlg.min_area.suffix() == " µm²"  # the demo slide has a pixel size
    dlg.min_conf.setValue(0.0)
    qtbot.mouseClick(dlg.convert_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(doc) > n0, timeout=20000)
    added = [a for a in doc if is_proposed(a)]
    pred = win.results_panel.current_entry().pred
    assert len(added) == len(prediction_to_annotations(pred, doc.scheme).annotations)
    assert len(doc) == n0 + len(added)
    assert doc.undo_stack.index() == undo0 + 1  # one command
    assert doc.undo_stack.text(undo0).startswith("Convert prediction")
    assert not dlg.isVisible()
    tree = win.annotation_list.tree
    row = next(tree.topLevelItem(i) for i in range(tree.topLevelItemCount())
               if tree.topLevelItem(i).data(0, Qt.ItemDataRole.UserRole) == added[0].id)
    assert row.text(3) == "proposed" and row.font(0).italic()
    assert not tree.isColumnHidden(3)
    win.act_undo.trigger()
    assert len(doc) == n0 and not any(is_proposed(a) for a in doc)
    win.act_redo.trigger()
    assert len(doc) == n0 + len(added)


def test_convert_selection_only(qtbot, demo_win: MainWindow, errors_seen):
    win, doc = demo_win, demo_win.document
    first = next(iter(doc))
    doc.set_selection([first.id])
    _menu_action(win, "Analysis", "Prediction to Annotations…").trigger()
    dlg = win.analysis_dialogs["convert"]
    assert dlg.scope.currentText() == "Selected annotations"
    for b in dlg.class_boxes:
        b.setChecked(False)
    qtbot.mouseClick(dlg.convert_button, Qt.MouseButton.LeftButton)
    assert errors_seen and "no class is chosen" in errors_seen[-1][1]
    for b in dlg.class_boxes:
        b.setChecked(True)
    dlg.min_conf.setValue(0.0)
    n0 = len(doc)
    qtbot.mouseClick(dlg.convert_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(doc) > n0, timeout=20000)
    area = first.geometry.buffer(1)
    assert all(a.geometry.within(area.buffer(224 * 0.71)) for a in doc if is_proposed(a))


def _convert(win: MainWindow) -> int:
    doc = win.document
    pred = win.results_panel.current_entry().pred
    res = prediction_to_annotations(pred, doc.scheme, min_confidence=0.0)
    push_added(doc, res.annotations, "Convert prediction")
    return len(res.annotations)


def test_review_steps_keys_and_counter(qtbot, demo_win: MainWindow):
    win, doc = demo_win, demo_win.document
    panel = win.review_panel
    _convert(win)
    qtbot.waitUntil(lambda: len(panel.items) > 2, timeout=5000)
    total = len(panel.items)
    assert panel.counter.text() == f"0 of {total} reviewed"
    win.docks["review"].raise_()
    panel.list.setFocus()
    tool = win.ctl.tool_name
    qtbot.keyClick(panel.list, Qt.Key.Key_N)
    first = panel.items[0]
    assert panel.list.currentRow() == 0 and panel.current == first.key
    assert doc.selection == [first.ann_id]
    c = win.view.visible_rect_l0().center()
    assert first.geometry.envelope.buffer(1).contains(Point(c.x(), c.y()))  # zoomed to it
    qtbot.keyClick(panel.list, Qt.Key.Key_N)
    qtbot.keyClick(panel.list, Qt.Key.Key_N)
    qtbot.keyClick(panel.list, Qt.Key.Key_P)
    assert panel.list.currentRow() == 1
    assert win.ctl.tool_name == tool  # P stayed with the list (not the Polygon tool)
    second = panel.items[1]
    before = doc.get(second.ann_id)
    target = next(k for k, cd in enumerate(doc.scheme, 1) if cd.id != before.class_id)
    qtbot.keyClick(panel.list, getattr(Qt.Key, f"Key_{target}"))
    after = doc.get(second.ann_id)
    assert after.class_id == doc.scheme.classes[target - 1].id
    info = review_info(after)
    assert info["status"] == "corrected" and info["reviewer"] == getpass.getuser()
    assert info["reviewed"].endswith("+00:00")
    qtbot.waitUntil(lambda: panel.counter.text() == f"1 of {total} reviewed", timeout=3000)
    assert panel.current == second.key  # the rebuilt queue keeps the current item ...
    qtbot.waitUntil(lambda: panel.list.currentItem().text().startswith("✓"), timeout=3000)
    assert panel.list.currentRow() == 1  # ... in its place
    qtbot.keyClick(panel.list, Qt.Key.Key_N)
    third = panel.items[panel.list.currentRow()]
    cls = doc.get(third.ann_id).class_id
    qtbot.keyClick(panel.list, Qt.Key.Key_Return)
    assert is_reviewed(doc.get(third.ann_id)) and doc.get(third.ann_id).class_id == cls
    assert review_info(doc.get(third.ann_id))["status"] == "accepted"
    qtbot.waitUntil(lambda: panel.counter.text() == f"2 of {total} reviewed", timeout=3000)
    qtbot.waitUntil(lambda: panel.list.currentItem().text().startswith("✓"), timeout=3000)
    assert not panel.list.currentItem().font().italic()
    win.act_undo.trigger()
    qtbot.waitUntil(lambda: panel.counter.text() == f"1 of {total} reviewed", timeout=3000)
    assert is_proposed(doc.get(third.ann_id))
    # autosaved: the project's annotation file holds the review record
    assert doc.flush()
    res = win.project.load_annotations(win.entry)
    assert review_info(res.annotations.get(second.ann_id))["reviewer"] == getpass.getuser()


def test_review_window_items_become_annotations(qtbot, demo_win: MainWindow):
    win, doc = demo_win, demo_win.document
    panel = win.review_panel
    for a in list(doc):  # no annotation: every predicted window is a candidate
        doc.remove([a.id])
    qtbot.waitUntil(lambda: bool(panel.items) and panel.items[0].kind == "window", timeout=5000)
    panel.list.setFocus()
    qtbot.keyClick(panel.list, Qt.Key.Key_N)
    it = panel.current_item()
    n0 = len(doc)
    qtbot.keyClick(panel.list, Qt.Key.Key_1)
    assert len(doc) == n0 + 1
    qtbot.waitUntil(lambda: panel.current_item().ann_id is not None, timeout=3000)
    assert panel.current_item().key == it.key  # the window's place in the queue is kept
    made = doc.get(panel.current_item().ann_id)
    assert made.class_id == doc.scheme.classes[0].id and is_reviewed(made)
    assert made.geometry.equals(it.geometry)
    assert panel.counter.text().startswith("1 of ")


def test_review_keys_are_listed_in_help(qtbot, demo_win: MainWindow):
    from app.help import shortcut_rows

    rows = [r for r in shortcut_rows(demo_win) if r[0] == "Review list (focused)"]
    assert {r[2] for r in rows} == {"N, Down", "P, Up", "1-9", "Enter"}
    assert any(a.text() == "Prediction to Annotations…" for a in demo_win.actions())
