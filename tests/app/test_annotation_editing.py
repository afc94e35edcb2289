"""Naming, describing, locking and hiding annotations in the list and on the canvas, with real
clicks, keys and right-click menus; every edit is undoable, names persist, messages name things."""

from __future__ import annotations

import re

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QContextMenuEvent
from PySide6.QtWidgets import QApplication, QLineEdit, QMenu

from crc_core.annotations import load_annotations

L = Qt.MouseButton.LeftButton
R = Qt.MouseButton.RightButton
UUID_PART = re.compile(r"\b[0-9a-f]{8}\b")


def draw_rect(win, canvas, x0=900, y0=1300, x1=1300, y1=1700):
    win.ctl.set_tool("rectangle")
    canvas.drag([(x0, y0), (x1, y1)])
    return list(win.document)[-1]


def menu_click(qtbot, menu: QMenu, text: str) -> None:
    """Click the menu entry ``text`` (``"Set Class/Adenoma"`` for a submenu entry)."""
    qtbot.waitUntil(menu.isVisible)
    head, _, rest = text.partition("/")
    action = next(a for a in menu.actions() if a.text().replace("&", "") == head)
    assert action.isEnabled(), f"{head} is disabled"
    qtbot.mouseClick(menu, L, pos=menu.actionGeometry(action).center())
    if rest:
        sub = action.menu()
        qtbot.waitUntil(sub.isVisible)
        menu_click(qtbot, sub, rest)


def cell_center(tree, row: int, col: int) -> QPoint:
    item = tree.topLevelItem(row)
    r = tree.visualItemRect(item)
    x = tree.header().sectionViewportPosition(col) + tree.columnWidth(col) // 2
    return QPoint(x, r.center().y())


def name_editor(tree) -> QLineEdit | None:
    """The open in-place editor of the list, if any."""
    ed = tree.viewport().findChild(QLineEdit)
    return ed if ed is not None and ed.isVisible() else None


def list_context_menu(qtbot, win, row: int) -> QMenu:
    """Right-click a row of the annotation list (the event Qt sends for a right click)."""
    tree = win.annotation_list.tree
    pos = cell_center(tree, row, 0)
    ev = QContextMenuEvent(QContextMenuEvent.Reason.Mouse, pos, tree.viewport().mapToGlobal(pos))
    QApplication.sendEvent(tree.viewport(), ev)
    menu = win.ann_actions.menu
    assert menu is not None
    return menu


def test_renaming_in_the_list_by_double_click_is_undoable(qtbot, cmu_window, canvas):
    win = cmu_window
    a = draw_rect(win, canvas)
    tree = win.annotation_list.tree
    assert tree.topLevelItem(0).text(1) == "Normal #1"  # the automatic name, never an id
    qtbot.mouseClick(tree.viewport(), L, pos=cell_center(tree, 0, 1))  # a double-click: press,
    qtbot.mouseDClick(tree.viewport(), L, pos=cell_center(tree, 0, 1))  # release, press again
    qtbot.waitUntil(lambda: name_editor(tree) is not None)
    editor = name_editor(tree)
    assert editor.text() == ""  # starts from the stored (empty) name
    qtbot.keyClicks(editor, "Crypt")
    qtbot.keyClick(editor, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: win.document.get(a.id).name == "Crypt")
    qtbot.waitUntil(lambda: tree.topLevelItem(0).text(1) == "Crypt")
    assert win.act_undo.text().replace("&", "") == "Undo Rename Normal #1"
    qtbot.keyClick(win.view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert win.document.get(a.id).name == ""
    assert tree.topLevelItem(0).text(1) == "Normal #1"


def test_f2_edits_the_name_in_the_list_and_opens_properties_from_the_canvas(
    qtbot, cmu_window, canvas
):
    win = cmu_window
    a = draw_rect(win, canvas)
    tree = win.annotation_list.tree
    qtbot.mouseClick(tree.viewport(), L, pos=cell_center(tree, 0, 0))
    qtbot.keyClick(tree, Qt.Key.Key_F2)
    qtbot.waitUntil(lambda: name_editor(tree) is not None)
    qtbot.keyClick(name_editor(tree), Qt.Key.Key_Escape)
    qtbot.mouseClick(win.view, L, pos=canvas.point(2000, 2000))  # focus the canvas
    win.document.set_selection([a.id])
    qtbot.keyClick(win.view, Qt.Key.Key_F2)
    dlg = win.ann_actions.dialog
    qtbot.waitUntil(lambda: dlg is not None and dlg.isVisible())
    assert dlg.ann_id == a.id and dlg.name_edit.placeholderText() == "Normal #1"
    qtbot.keyClicks(dlg.name_edit, "Margin")
    qtbot.keyClick(dlg.name_edit, Qt.Key.Key_Return)  # Return is OK
    assert win.document.get(a.id).name == "Margin"


def test_canvas_double_click_opens_properties_and_ok_is_one_undo_step(
    qtbot, cmu_window, canvas, tmp_path
):
    win = cmu_window
    a = draw_rect(win, canvas)
    qtbot.keyClick(win.view, Qt.Key.Key_V)  # select tool
    canvas.click(1100, 1500, double=True)
    dlg = win.ann_actions.dialog
    qtbot.waitUntil(lambda: dlg is not None and dlg.isVisible())
    qtbot.keyClicks(dlg.name_edit, "Tumour front")
    qtbot.keyClicks(dlg.notes_edit, "budding at the margin")
    dlg.class_combo.setFocus()
    qtbot.keyClick(dlg.class_combo, Qt.Key.Key_Down)  # Normal -> Adenoma
    qtbot.mouseClick(dlg.locked_box, L, pos=QPoint(6, dlg.locked_box.height() // 2))
    ok = dlg.buttons.button(dlg.buttons.StandardButton.Ok)
    qtbot.mouseClick(ok, L)
    got = win.document.get(a.id)
    assert (got.name, got.notes, got.class_id, got.locked) == (
        "Tumour front", "budding at the margin", "adenoma", True)
    assert win.document.undo_stack.count() == 2  # draw + one edit
    win.undo()
    got = win.document.get(a.id)
    assert (got.name, got.notes, got.class_id, got.locked) == ("", "", "normal", False)
    win.redo()
    # saved the QuPath way and read back the same
    assert win.export_annotations(tmp_path / "out.geojson")
    back = next(iter(load_annotations(tmp_path / "out.geojson", win.document.scheme).annotations))
    assert (back.name, back.notes, back.locked) == ("Tumour front", "budding at the margin", True)


def test_canvas_menu_sets_class_locks_and_locked_cannot_be_deleted_or_moved(
    qtbot, cmu_window, canvas
):
    win = cmu_window
    a = draw_rect(win, canvas)
    win.ctl.set_tool("select")
    canvas.click(1100, 1500, R)
    menu_click(qtbot, win.ann_actions.menu, "Set Class/Adenoma")
    assert win.document.get(a.id).class_id == "adenoma"
    canvas.click(1100, 1500, R)
    menu_click(qtbot, win.ann_actions.menu, "Lock")
    assert win.document.get(a.id).locked
    assert win.annotation_list.tree.topLevelItem(0).text(3) == "locked"
    geom = win.document.get(a.id).geometry
    # Delete key: refused, with the annotation's name in the status bar
    qtbot.keyClick(win.view, Qt.Key.Key_Delete)
    assert a.id in win.document.annotations
    msg = win.statusBar().currentMessage()
    assert "Adenoma #1 is locked" in msg and not UUID_PART.search(msg)
    # the menu's Delete is disabled; a drag does not move it; vertices cannot be dragged
    canvas.click(1100, 1500, R)
    menu = win.ann_actions.menu
    qtbot.waitUntil(menu.isVisible)
    assert not next(x for x in menu.actions() if x.text() == "Delete").isEnabled()
    menu.close()
    canvas.drag([(1100, 1500), (1200, 1550), (1300, 1600)])
    assert win.document.get(a.id).geometry is geom
    win.ctl.set_tool("vertices")
    canvas.drag([(900, 1300), (850, 1250)])
    assert win.document.get(a.id).geometry is geom
    # unlocked again: it moves
    win.ctl.set_tool("select")
    canvas.click(1100, 1500, R)
    menu_click(qtbot, win.ann_actions.menu, "Unlock")
    canvas.drag([(1100, 1500), (1200, 1550), (1300, 1600)])
    assert win.document.get(a.id).bounds[0] == pytest.approx(1100, abs=3)


def test_hidden_annotation_is_not_drawn_or_hit_but_saved_and_listed(qtbot, cmu_window, canvas):
    win = cmu_window
    a = draw_rect(win, canvas)
    win.ctl.set_tool("select")
    qtbot.waitUntil(lambda: win.view.is_complete())
    edge = canvas.point(900, 1500)  # on the left outline

    def edge_pixel():
        return win.view.grab().toImage().pixelColor(edge).getRgb()[:3]

    drawn = edge_pixel()
    canvas.click(1100, 1500, R)
    menu_click(qtbot, win.ann_actions.menu, "Hide")
    assert win.document.get(a.id).hidden
    assert edge_pixel() != drawn  # the outline is gone
    canvas.click(1100, 1500)  # clicking where it was selects nothing
    assert win.document.selection == []
    tree = win.annotation_list.tree
    assert tree.topLevelItem(0).text(3) == "hidden"
    assert win.document.flush()
    res = win.project.load_annotations(win.entry)
    assert next(iter(res.annotations)).hidden  # saved, with its flag
    # Show from the list's menu (the canvas cannot reach it)
    menu_click(qtbot, list_context_menu(qtbot, win, 0), "Show")
    assert not win.document.get(a.id).hidden
    assert edge_pixel() == drawn


def test_list_menu_zooms_to_and_deletes_several(qtbot, cmu_window, canvas):
    win = cmu_window
    draw_rect(win, canvas, 900, 1300, 1000, 1400)
    b = draw_rect(win, canvas, 1500, 1500, 1700, 1600)
    tree = win.annotation_list.tree
    menu_click(qtbot, list_context_menu(qtbot, win, 1), "Zoom To")
    c = win.view.center
    assert (c.x(), c.y()) == (pytest.approx(1600, abs=2), pytest.approx(1550, abs=2))
    assert win.document.selection == [b.id]
    tree.selectAll()
    menu_click(qtbot, list_context_menu(qtbot, win, 0), "Delete")
    assert len(win.document) == 0
    # undo stays available with no annotation left (an empty document is falsy)
    assert win.act_undo.text().replace("&", "") == "Undo Delete 2 annotations"
    assert win.act_undo.isEnabled() and win.tb_undo.isEnabled()


def test_lock_and_hide_persist_when_the_slide_is_opened_again(qtbot, cmu_window, canvas):
    win = cmu_window
    a = draw_rect(win, canvas)
    b = draw_rect(win, canvas, 1500, 1500, 1700, 1600)
    win.document.set_selection([a.id])
    qtbot.keyClick(win.view, Qt.Key.Key_L, Qt.KeyboardModifier.ControlModifier)
    win.document.set_selection([b.id])
    qtbot.keyClick(win.view, Qt.Key.Key_H, Qt.KeyboardModifier.ControlModifier)
    path = win.slide.path
    assert win.open_path(path)  # closes (saving) and opens again
    got = {x.id: (x.locked, x.hidden) for x in win.document}
    assert got == {a.id: (True, False), b.id: (False, True)}


def test_locked_messages_name_annotations_not_ids(qtbot, cmu_window, canvas):
    win = cmu_window
    a = draw_rect(win, canvas)
    b = draw_rect(win, canvas, 1500, 1500, 1700, 1600)
    win.document.set_selection([a.id, b.id])
    qtbot.keyClick(win.view, Qt.Key.Key_L, Qt.KeyboardModifier.ControlModifier)
    assert win.act_undo.text().replace("&", "") == "Undo Lock 2 annotations"
    qtbot.keyClick(win.view, Qt.Key.Key_Delete)
    msg = win.statusBar().currentMessage()
    assert msg.startswith("Normal #1 and Normal #2 are locked"), msg
    assert not UUID_PART.search(msg) and "normal" not in msg.replace("Normal", "")
