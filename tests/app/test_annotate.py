"""Annotation tools in the main window with real mouse and key events; undo, autosave, export."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt

from app.main_window import MainWindow
from crc_core.annotations import load_annotations
from crc_core.classes import ClassScheme

ROOT = Path(__file__).resolve().parents[2]
L = Qt.MouseButton.LeftButton
R = Qt.MouseButton.RightButton


@pytest.fixture
def win(qtbot, slides_dir):
    w = MainWindow()
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    qtbot.waitExposed(w)
    assert w.open_path(slides_dir / "cmu-1-small-region.svs")
    w.view.set_view(1100, 1500, 0.5)
    return w


def wpt(w: MainWindow, x: float, y: float) -> QPoint:
    """Widget point of level-0 (x, y)."""
    p = w.view.l0_to_widget(QPointF(x, y))
    return QPoint(round(p.x()), round(p.y()))


def drag(qtbot, w: MainWindow, pts: list[tuple[float, float]], button=L) -> None:
    vp = w.view
    qtbot.mousePress(vp, button, pos=wpt(w, *pts[0]))
    for p in pts[1:]:
        qtbot.mouseMove(vp, wpt(w, *p))
    qtbot.mouseRelease(vp, button, pos=wpt(w, *pts[-1]))


def only(w: MainWindow):
    anns = list(w.document)
    assert len(anns) == 1
    return anns[0]


def test_draw_rectangle(qtbot, win):
    win.ctl.set_tool("rectangle")
    drag(qtbot, win, [(900, 1300), (1000, 1400), (1300, 1700)])
    a = only(win)
    x0, y0, x1, y1 = a.bounds
    assert (x0, y0, x1, y1) == pytest.approx((900, 1300, 1300, 1700), abs=2.5)
    assert a.class_id == "normal"
    assert a.geometry.area == pytest.approx(400 * 400, rel=0.03)


def test_draw_polygon_closed_by_double_click(qtbot, win):
    win.ctl.set_tool("polygon")
    vp = win.view
    for x, y in [(900, 1300), (1300, 1300), (1300, 1700)]:
        qtbot.mouseClick(vp, L, pos=wpt(win, x, y))
    qtbot.mouseDClick(vp, L, pos=wpt(win, 900, 1700))
    a = only(win)
    assert a.geometry.area == pytest.approx(400 * 400, rel=0.03)
    assert len(a.geometry.exterior.coords) == 5


def test_draw_polygon_closed_by_enter(qtbot, win):
    win.ctl.set_tool("polygon")
    vp = win.view
    for x, y in [(900, 1300), (1300, 1300), (900, 1700)]:
        qtbot.mouseClick(vp, L, pos=wpt(win, x, y))
    assert len(win.document) == 0  # still open
    qtbot.keyClick(vp, Qt.Key.Key_Return)
    assert only(win).geometry.area == pytest.approx(400 * 400 / 2, rel=0.03)


def test_draw_freehand_lasso(qtbot, win):
    win.ctl.set_tool("lasso")
    import math

    pts = [
        (1100 + 200 * math.cos(t / 20 * 2 * math.pi), 1500 + 200 * math.sin(t / 20 * 2 * math.pi))
        for t in range(21)
    ]
    drag(qtbot, win, pts)
    a = only(win)
    assert a.geometry.area == pytest.approx(math.pi * 200**2, rel=0.06)


def test_brush_paints_then_erases(qtbot, win):
    win.ctl.set_tool("brush")
    win.ctl.brush_radius_px = 10  # 20 level-0 px at scale 0.5
    drag(qtbot, win, [(900, 1500), (1000, 1500), (1100, 1500), (1300, 1500)])
    painted = only(win).geometry.area
    assert painted == pytest.approx(400 * 40 + 3.14159 * 20**2, rel=0.08)
    drag(qtbot, win, [(1100, 1400), (1100, 1600)], button=R)  # right button erases
    cut = only(win).geometry
    assert cut.geom_type == "MultiPolygon"
    assert cut.area < painted - 30 * 40 * 0.9


def test_brush_stroke_merges_into_same_class(qtbot, win):
    win.ctl.set_tool("brush")
    win.ctl.brush_radius_px = 10
    drag(qtbot, win, [(900, 1500), (1100, 1500)])
    drag(qtbot, win, [(1100, 1500), (1100, 1700)])
    assert only(win).geometry.geom_type == "Polygon"


def test_undo_and_redo(qtbot, win):
    win.ctl.set_tool("rectangle")
    drag(qtbot, win, [(900, 1300), (1300, 1700)])
    drag(qtbot, win, [(1400, 1300), (1600, 1500)])
    assert len(win.document) == 2
    qtbot.keyClick(win.view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert len(win.document) == 1
    win.act_redo.trigger()
    assert len(win.document) == 2


def test_change_class_of_selection_with_shift_key(qtbot, win):
    win.ctl.set_tool("rectangle")
    drag(qtbot, win, [(900, 1300), (1300, 1700)])
    win.ctl.set_tool("select")
    qtbot.mouseClick(win.view, L, pos=wpt(win, 1100, 1500))
    assert len(win.document.selection) == 1
    qtbot.keyClick(win.view, Qt.Key.Key_3, Qt.KeyboardModifier.ShiftModifier)
    assert only(win).class_id == "adc-well"
    assert win.ctl.current_class_id == "adc-well"
    win.undo()
    assert only(win).class_id == "normal"


def test_key_selects_class_for_new_shapes(qtbot, win):
    qtbot.keyClick(win.view, Qt.Key.Key_2)
    win.ctl.set_tool("rectangle")
    drag(qtbot, win, [(900, 1300), (1300, 1700)])
    assert only(win).class_id == "adenoma"


def test_delete_selection(qtbot, win):
    win.ctl.set_tool("rectangle")
    drag(qtbot, win, [(900, 1300), (1300, 1700)])
    win.ctl.set_tool("select")
    qtbot.mouseClick(win.view, L, pos=wpt(win, 1100, 1500))
    qtbot.keyClick(win.view, Qt.Key.Key_Delete)
    assert len(win.document) == 0
    win.undo()
    assert len(win.document) == 1


def test_move_selection_by_drag(qtbot, win):
    win.ctl.set_tool("rectangle")
    drag(qtbot, win, [(900, 1300), (1300, 1700)])
    win.ctl.set_tool("select")
    drag(qtbot, win, [(1100, 1500), (1150, 1550), (1200, 1600)])
    assert only(win).bounds == pytest.approx((1000, 1400, 1400, 1800), abs=3)


def test_edit_vertex_by_drag(qtbot, win):
    win.ctl.set_tool("rectangle")
    drag(qtbot, win, [(900, 1300), (1300, 1700)])
    x0, y0, x1, y1 = only(win).bounds
    win.ctl.set_tool("vertices")
    drag(qtbot, win, [(x1, y1), (x1 + 100, y1 + 100)])
    g = only(win).geometry
    assert g.bounds[2] == pytest.approx(x1 + 100, abs=3)
    assert g.area > (x1 - x0) * (y1 - y0)


def test_hidden_class_is_not_drawn_or_hit(qtbot, win):
    win.ctl.set_tool("rectangle")
    drag(qtbot, win, [(900, 1300), (1300, 1700)])
    win.ctl.layer.set_class_visible("normal", False)
    win.ctl.set_tool("select")
    qtbot.mouseClick(win.view, L, pos=wpt(win, 1100, 1500))
    assert win.document.selection == []


def test_annotation_list_shows_area_in_um2_and_click_zooms(qtbot, win):
    win.ctl.set_tool("rectangle")
    drag(qtbot, win, [(200, 200), (400, 400)])
    tree = win.annotation_list.tree
    assert tree.topLevelItemCount() == 1
    assert tree.topLevelItem(0).text(2).endswith("µm²")
    win.view.set_view(2000, 2800, 2.0)
    rect = tree.visualItemRect(tree.topLevelItem(0))
    qtbot.mouseClick(tree.viewport(), L, pos=rect.center())
    assert win.view.center.x() == pytest.approx(300, abs=3)
    assert win.view.center.y() == pytest.approx(300, abs=3)


def test_reopened_slide_has_equal_annotations(qtbot, win, slides_dir):
    win.ctl.set_tool("polygon")
    for x, y in [(900, 1300), (1300, 1350), (1250, 1700)]:
        qtbot.mouseClick(win.view, L, pos=wpt(win, x, y))
    qtbot.keyClick(win.view, Qt.Key.Key_Return)
    qtbot.keyClick(win.view, Qt.Key.Key_4)
    win.ctl.set_tool("rectangle")
    drag(qtbot, win, [(200, 200), (400, 400)])
    before = {a.id: (a.class_id, a.geometry.wkt) for a in win.document}
    win.close()
    w2 = MainWindow()
    qtbot.addWidget(w2)
    assert w2.open_path(slides_dir / "cmu-1-small-region.svs")
    after = {a.id: (a.class_id, a.geometry.wkt) for a in w2.document}
    assert after == before
    w2.close()


def test_polygon_saved_reopened_and_exported_as_geojson_keeps_geometry_and_class(
    qtbot, win, tmp_path
):
    qtbot.keyClick(win.view, Qt.Key.Key_5)
    win.ctl.set_tool("polygon")
    pts = [(900, 1300), (1300, 1350), (1250, 1700), (950, 1650)]
    for x, y in pts:
        qtbot.mouseClick(win.view, L, pos=wpt(win, x, y))
    qtbot.keyClick(win.view, Qt.Key.Key_Return)
    drawn = only(win)
    out = tmp_path / "export.geojson"
    assert win.export_annotations(out)
    res = load_annotations(out, ClassScheme.paper())
    (exported,) = list(res.annotations)
    assert exported.class_id == "adc-poor"
    assert exported.geometry.equals(drawn.geometry)
    assert exported.geometry.symmetric_difference(drawn.geometry).area < 1e-6


def test_corrupt_slide_shows_error_and_window_stays_usable(
    qtbot, win, tmp_path, errors_seen, slides_dir
):
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"II*\x00" + os.urandom(4000))
    assert not win.open_path(bad)
    assert len(errors_seen) == 1
    assert "broken.svs" in errors_seen[0][1]
    # the open slide is still there and editable
    assert win.slide is not None and win.slide.path.name == "cmu-1-small-region.svs"
    win.ctl.set_tool("rectangle")
    drag(qtbot, win, [(900, 1300), (1300, 1700)])
    assert len(win.document) == 1


def test_analysis_menu_without_the_dialog_module_shows_a_message(
    qtbot, win, errors_seen, monkeypatch
):
    import app.main_window as mw

    monkeypatch.setitem(
        mw.ANALYSIS_DIALOGS, "train", ("Train…", "app.dialogs.no_such_module", "X", "project")
    )
    win.analysis_actions["train"].trigger()
    assert errors_seen and "not available" in errors_seen[0][1]


def test_user_mpp_is_stored_in_the_project(qtbot, slides_dir):
    w = MainWindow()
    qtbot.addWidget(w)
    assert w.open_path(slides_dir / "tcga-cr-7395-01a-01-ts1.svs")
    assert w.view.mpp is None
    assert "uncalibrated" in w.view.scale_bar_label()[1]
    w.set_mpp((0.25, 0.25))
    assert "µm" in w.view.scale_bar_label()[1] or "mm" in w.view.scale_bar_label()[1]
    w.close()
    w2 = MainWindow()
    qtbot.addWidget(w2)
    assert w2.open_path(slides_dir / "tcga-cr-7395-01a-01-ts1.svs")
    assert w2.slide.mpp == (0.25, 0.25)
    w2.close()


def test_project_panel_lists_slides_with_annotation_counts(qtbot, slides_dir, tmp_path):
    from crc_core.project import Project

    proj = Project.create(tmp_path / "proj")
    proj.add_slide(slides_dir / "cmu-1-small-region.svs")
    proj.add_slide(slides_dir / "tcga-cr-7395-01a-01-ts1.svs")
    proj.save()
    w = MainWindow()
    qtbot.addWidget(w)
    assert w.open_path(tmp_path / "proj")
    assert w.project_panel.tree.topLevelItemCount() == 2
    first = w.entry.id
    w.ctl.set_tool("rectangle")
    w.ctl.add_shape(__import__("shapely").box(10, 10, 100, 100), "x")
    assert w.document.flush()
    assert w.project_panel.count_of(first) == 1
    w.close()


def test_autosave_survives_a_killed_process(qtbot, slides_dir, viewer_home):
    script = (
        "import sys, time\n"
        "from PySide6.QtWidgets import QApplication\n"
        "app = QApplication([])\n"
        "from app.main_window import MainWindow\n"
        "from shapely.geometry import box\n"
        "w = MainWindow(); w.show()\n"
        f"assert w.open_path({str(slides_dir / 'cmu-1-small-region.svs')!r})\n"
        "w.ctl.set_current_class('adenoma')\n"
        "w.ctl.add_shape(box(100, 200, 300, 500), 'x')\n"
        "print('EDITED', flush=True)\n"
        "app.exec()\n"  # runs until killed; never quits by itself
    )
    env = dict(os.environ, CRC_VIEWER_HOME=str(viewer_home), QT_QPA_PLATFORM="offscreen")
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "EDITED"
        files: list[Path] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            files = list(viewer_home.glob("slides/*/annotations/*.geojson"))
            if files and "adenoma" in files[0].read_text(encoding="utf-8").lower():
                break
            time.sleep(0.05)
        assert proc.poll() is None  # still running: nothing was saved by quitting
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    w = MainWindow()
    qtbot.addWidget(w)
    assert w.open_path(slides_dir / "cmu-1-small-region.svs")
    a = only(w)
    assert a.class_id == "adenoma"
    assert a.bounds == (100, 200, 300, 500)
    w.close()


def test_corrupt_annotation_file_shows_error_and_keeps_the_open_slide(
    qtbot, win, tmp_path, errors_seen, slides_dir
):
    win.ctl.set_tool("rectangle")
    drag(qtbot, win, [(900, 1300), (1300, 1700)])
    bad = tmp_path / "bad.geojson"
    bad.write_text('{"type": "FeatureCollection", "features": [', encoding="utf-8")
    assert not win.open_path(slides_dir / "tcga-cr-7395-01a-01-ts1.svs", annotations=bad)
    assert len(errors_seen) == 1 and "bad.geojson" in errors_seen[0][1]
    assert win.slide.path.name == "cmu-1-small-region.svs"
    assert len(win.document) == 1


def test_erasing_a_whole_annotation_removes_it_in_one_undo_step(qtbot, win):
    win.ctl.set_tool("rectangle")
    drag(qtbot, win, [(1000, 1400), (1060, 1460)])
    win.ctl.set_tool("brush")
    win.ctl.brush_radius_px = 40  # 80 level-0 px: covers the 60 px square
    drag(qtbot, win, [(1030, 1430), (1031, 1431)], button=R)
    assert len(win.document) == 0
    win.undo()
    assert len(win.document) == 1


def test_vertex_added_by_double_click_on_an_edge_and_deleted_by_right_click(qtbot, win):
    win.ctl.set_tool("rectangle")
    drag(qtbot, win, [(900, 1300), (1300, 1700)])
    win.ctl.set_tool("vertices")
    qtbot.mouseDClick(win.view, L, pos=wpt(win, 1100, 1300))  # middle of the top edge
    assert len(only(win).geometry.exterior.coords) == 6
    qtbot.mouseClick(win.view, R, pos=wpt(win, 1100, 1300))
    assert len(only(win).geometry.exterior.coords) == 5


def test_selftest_exits_0():
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    r = subprocess.run(
        [sys.executable, "-m", "app", "--selftest"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "selftest: ok" in r.stdout
