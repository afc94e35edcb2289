"""Slide view: tiles in background threads, stand-ins, dropped requests, navigation, layers."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt, QTimer

from app.viewer.layers import RasterLayer
from app.viewer.view import SlideView


def _view(qtbot, source, w=640, h=480):
    v = SlideView()
    qtbot.addWidget(v)
    v.resize(w, h)
    v.show()
    qtbot.waitExposed(v)
    v.set_source(source)
    return v


def _wait_complete(qtbot, v):
    qtbot.waitUntil(lambda: (v.update() or True) and v.is_complete() and v._complete, timeout=20000)


def _grab(v: SlideView) -> np.ndarray:
    img = v.grab().toImage().convertToFormat(v.grab().toImage().Format.Format_RGB888)
    ptr = img.constBits()
    arr = np.frombuffer(ptr, np.uint8, img.sizeInBytes()).reshape(img.height(), img.bytesPerLine())
    return arr[:, : img.width() * 3].reshape(img.height(), img.width(), 3).copy()


def test_real_slide_is_painted_not_blank(qtbot, slides_dir):
    from crc_core.slide import open_slide

    v = _view(qtbot, open_slide(slides_dir / "cmu-1-small-region.svs"))
    _wait_complete(qtbot, v)
    img = _grab(v)
    cx, cy = v.width() // 2, v.height() // 2
    centre = img[cy - 100 : cy + 100, cx - 60 : cx + 60]
    assert centre.std() > 20  # tissue texture, not a flat fill
    v.close_source()


def test_gui_thread_serves_events_while_tiles_load(qtbot, make_array_slide):
    slide = make_array_slide(delay=0.15)
    ticks: list[int] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(len(slide.reads)))
    timer.start(5)
    v = _view(qtbot, slide)
    v.set_view(2000, 1500, 1.0)
    qtbot.waitUntil(lambda: len(slide.reads) >= 1, timeout=10000)
    timer.stop()
    # the timer kept firing while the first (slow) tile was being read
    assert ticks.count(0) >= 5
    _wait_complete(qtbot, v)
    v.close_source()


def test_requests_for_tiles_that_left_the_view_are_dropped(qtbot, make_array_slide):
    slide = make_array_slide(delay=0.05)
    v = _view(qtbot, slide)
    v.set_view(300, 300, 1.0)
    first = set(v.visible_tiles())
    v.set_view(3800, 2800, 1.0)  # far away before most of the first tiles were read
    _wait_complete(qtbot, v)
    read_first = first & set(slide.reads)
    assert v.loader.dropped > 0
    assert len(read_first) < len(first)
    v.close_source()


def test_lower_resolution_stands_in_after_zoom(qtbot, make_array_slide):
    slide = make_array_slide(delay=0.3)
    v = _view(qtbot, slide)
    _wait_complete(qtbot, v)
    assert v.target_level() == 1
    v.set_view(2048, 1536, 2.0)  # level 0 now; its tiles take a while
    img = _grab(v)
    assert not v.is_complete()
    cx, cy = v.width() // 2, v.height() // 2
    # the slide's colours (from the level-1 tiles / thumbnail), not the grey background
    px = img[cy, cx].astype(int)
    assert abs(px[0] - 127) < 40 and abs(px[1] - 127) < 40
    v.close_source()


def test_wheel_zoom_keeps_the_point_under_the_cursor(qtbot, make_array_slide):
    v = _view(qtbot, make_array_slide())
    pos = QPointF(150, 120)
    before = v.widget_to_l0(pos)
    from PySide6.QtGui import QWheelEvent

    ev = QWheelEvent(
        pos,
        v.mapToGlobal(pos),
        QPoint(0, 0),
        QPoint(0, 240),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    scale0 = v.scale
    v.wheelEvent(ev)
    after = v.widget_to_l0(pos)
    assert v.scale > scale0
    assert after.x() == pytest.approx(before.x(), abs=1e-6)
    assert after.y() == pytest.approx(before.y(), abs=1e-6)
    v.close_source()


def test_drag_pans_and_keys_zoom(qtbot, make_array_slide):
    v = _view(qtbot, make_array_slide())
    v.set_view(2000, 1500, 0.5)
    qtbot.mousePress(v, Qt.MouseButton.LeftButton, pos=QPoint(300, 200))
    qtbot.mouseMove(v, QPoint(250, 180))
    qtbot.mouseRelease(v, Qt.MouseButton.LeftButton, pos=QPoint(250, 180))
    assert v.center.x() == pytest.approx(2100)
    assert v.center.y() == pytest.approx(1540)
    qtbot.keyClick(v, Qt.Key.Key_Plus)
    assert v.scale == pytest.approx(0.75)
    v.one_to_one()
    assert v.scale == 1.0
    v.close_source()


def test_raster_layer_draws_over_the_slide(qtbot, make_array_slide):
    v = _view(qtbot, make_array_slide())
    v.set_view(2000, 1500, 0.5)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 2] = 255
    rgba[..., 3] = 255
    layer = v.layers.add(
        RasterLayer("class map", rgba, origin=(1800, 1300), scale=100, opacity=1.0)
    )
    _wait_complete(qtbot, v)
    img = _grab(v)
    p = v.l0_to_widget(QPointF(2000, 1500))
    assert tuple(img[int(p.y()), int(p.x())]) == (0, 0, 255)
    layer.visible = False
    img = _grab(v)
    assert tuple(img[int(p.y()), int(p.x())]) != (0, 0, 255)
    v.close_source()


def test_scale_bar_is_uncalibrated_without_mpp(qtbot, make_array_slide):
    slide = make_array_slide()
    slide.mpp = None
    v = _view(qtbot, slide)
    assert "uncalibrated" in v.scale_bar_label()[1]
    slide2 = make_array_slide()
    v.set_source(slide2)
    assert "µm" in v.scale_bar_label()[1] or "mm" in v.scale_bar_label()[1]
    v.close_source()


def test_magnification_shown_when_objective_known(qtbot, make_array_slide):
    v = _view(qtbot, make_array_slide())
    v.set_view(100, 100, 0.5)
    assert v.magnification_text() == "10×"
    v.close_source()
