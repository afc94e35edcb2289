"""Magnification buttons and readout, the cap at the scan's resolution, the measure tool,
brightness/contrast, Help > Keyboard Shortcuts and User Guide: real slides, real clicks."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QTextDocument, QWheelEvent
from PySide6.QtWidgets import QApplication, QToolBar

from app.main_window import MainWindow

L = Qt.MouseButton.LeftButton
SHIFT = Qt.KeyboardModifier.ShiftModifier


@pytest.fixture
def window(qtbot):
    w = MainWindow()
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    qtbot.waitExposed(w)
    return w


def toolbar_button(win, action):
    tb = next(t for t in win.findChildren(QToolBar) if t.widgetForAction(action))
    return tb.widgetForAction(action)


def wheel(view, steps: int, modifiers=Qt.KeyboardModifier.NoModifier) -> None:
    pos = QPointF(view.width() / 2, view.height() / 2)
    ev = QWheelEvent(pos, view.mapToGlobal(pos), QPoint(0, 0), QPoint(0, 120 * steps),
                     Qt.MouseButton.NoButton, modifiers, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(view, ev)


@pytest.mark.parametrize(
    ("name", "readout", "buttons"),
    [
        ("cmu-1-small-region.svs", "10×", True),  # objective power 20 in the file
        ("tcga-cr-7395-01a-01-ts1.svs", "zoom 50% (magnification unknown)", False),
        ("kidney-48-5.tif", "zoom 50% (magnification unknown)", False),
    ],
)
def test_one_readout_for_every_slide(qtbot, window, slides_dir, name, readout, buttons):
    assert window.open_path(slides_dir / name)
    window.view.set_view(500, 500, 0.5)
    assert window.zoom_label.text().startswith(readout)
    assert window.view.magnification_text() == readout  # the scale bar shows the same text
    assert window.view_actions.mag_actions[20].isEnabled() is buttons
    tip = window.zoom_label.toolTip()
    assert ("objective power" in tip) if buttons else ("neither an objective power" in tip)


def test_readout_from_pixel_size_is_marked_as_estimated(qtbot, window, slides_dir):
    assert window.open_path(slides_dir / "tcga-cr-7395-01a-01-ts1.svs")
    window.set_mpp((0.25, 0.25))  # File > Set Pixel Size: 0.25 µm/px ~ 40x
    window.view.set_view(500, 500, 0.5)
    assert window.zoom_label.text().startswith("≈20×")
    assert "0.25 µm/px" in window.zoom_label.toolTip()
    qtbot.mouseClick(toolbar_button(window, window.view_actions.mag_actions[10]), L)
    assert window.view.scale == pytest.approx(0.25)


def test_magnification_buttons_stop_at_the_scan_resolution_unless_asked(
    qtbot, window, slides_dir
):
    assert window.open_path(slides_dir / "cmu-1-small-region.svs")
    v = window.view
    qtbot.mouseClick(toolbar_button(window, window.view_actions.mag_actions[5]), L)
    assert v.scale == pytest.approx(0.25) and v.magnification_text() == "5×"
    button40 = toolbar_button(window, window.view_actions.mag_actions[40])
    qtbot.mouseClick(button40, L)
    assert v.scale == pytest.approx(1.0)  # scanned at 20x: stops there
    assert "scan's resolution (20×)" in window.statusBar().currentMessage()
    qtbot.mouseClick(button40, L, SHIFT)  # on purpose
    assert v.scale == pytest.approx(2.0) and v.magnification_text() == "40×"


def test_wheel_zoom_stops_at_the_scan_resolution_shift_or_the_toggle_lift_it(
    qtbot, window, slides_dir
):
    assert window.open_path(slides_dir / "cmu-1-small-region.svs")
    v = window.view
    v.set_view(1000, 1000, 0.9)
    wheel(v, 3)
    assert v.scale == pytest.approx(1.0)
    wheel(v, 1, SHIFT)
    assert v.scale == pytest.approx(1.25)
    v.set_view(1000, 1000, 0.9)
    window.view_actions.act_overzoom.trigger()  # View > Zoom Past Scan Resolution
    wheel(v, 3)
    assert v.scale == pytest.approx(0.9 * 1.25**3)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("cmu-1-small-region.svs", "Measured 249.5 µm"),  # 500 px x 0.499 µm/px
     ("tcga-cr-7395-01a-01-ts1.svs", "Measured 500 px (uncalibrated)")],
)
def test_measure_tool_shows_the_length_on_the_canvas(
    qtbot, window, slides_dir, canvas_of, name, expected
):
    assert window.open_path(slides_dir / name)
    v = window.view
    v.set_view(1150, 1200, 1.0)
    qtbot.keyClick(v, Qt.Key.Key_M)
    assert window.ctl.tool_name == "measure"
    canvas = canvas_of(window)
    canvas.drag([(1000, 1000), (1200, 1250), (1300, 1400)])
    assert window.statusBar().currentMessage() == expected
    assert v.tool.text(v) == expected.removeprefix("Measured ")
    mid = canvas.point(1150, 1200)
    r, g, b, _ = v.grab().toImage().pixelColor(mid).getRgb()
    assert (r, g, b) == (255, 230, 0)  # the ruler is drawn
    qtbot.keyClick(v, Qt.Key.Key_Escape)
    assert v.grab().toImage().pixelColor(mid).getRgb()[:3] != (255, 230, 0)


def test_brightness_contrast_changes_the_view_only_and_resets(qtbot, window, slides_dir):
    assert window.open_path(slides_dir / "cmu-1-small-region.svs")
    v = window.view
    v.set_view(1100, 1500, 0.5)
    qtbot.waitUntil(lambda: v.is_complete(), timeout=20000)
    at = QPoint(v.width() // 2, v.height() // 2)

    def grey() -> int:
        c = v.grab().toImage().pixelColor(at)
        return c.red() + c.green() + c.blue()

    before = grey()
    window.view_actions.act_adjust.trigger()
    dlg = window.view_actions.dialog
    qtbot.waitUntil(dlg.isVisible)
    dlg.brightness.setFocus()
    for _ in range(3):
        qtbot.keyClick(dlg.brightness, Qt.Key.Key_PageDown)  # page step 10 each
    assert dlg.brightness.value() == -30
    darker = grey()
    assert darker < before - 3 * 60  # about 76 per channel darker
    qtbot.mouseClick(dlg.reset_button, L)
    assert grey() == before
    assert window.slide.read_region((1000, 1400), 0, (4, 4)).mean() > 0  # the file is untouched


def test_keyboard_shortcuts_are_generated_from_the_actions(qtbot, window, slides_dir):
    assert window.open_path(slides_dir / "cmu-1-small-region.svs")
    qtbot.keyClick(window.view, Qt.Key.Key_Slash, Qt.KeyboardModifier.ControlModifier)
    dlg = window.analysis_dialogs["shortcuts"]
    qtbot.waitUntil(dlg.isVisible)
    rows = {(where, what): keys for where, what, keys in dlg.rows}
    assert rows[("Edit", "Undo")] == "Ctrl+Z"
    assert rows[("Edit", "Rename Annotation")] == "F2"
    assert rows[("Tools", "Measure")] == "M"
    assert rows[("View", "Fit to Window")] == "F"
    assert rows[("Help", "Keyboard Shortcuts")] == "Ctrl+/"
    assert rows[("Classes", "New shapes get Adenoma")] == "2"
    assert rows[("Polygon tool", "Close the polygon")] == "Enter, double-click"
    # a shortcut changed at run time is listed as it is now
    window.act_fit.setShortcut("Ctrl+Shift+F")
    assert ("View", "Fit to Window", "Ctrl+Shift+F") in type(dlg)(window).rows
    qtbot.keyClicks(dlg.filter, "zoom")
    shown = dlg.visible_rows()
    assert shown and all("zoom" in " ".join(r).lower() for r in shown)


def test_user_guide_opens_in_the_app_with_its_screenshots(qtbot, window):
    qtbot.keyClick(window, Qt.Key.Key_F1)
    dlg = window.analysis_dialogs["guide"]
    qtbot.waitUntil(dlg.isVisible)
    doc = dlg.browser.document()
    assert doc.toPlainText().startswith("CRC Workbench user guide")
    img = doc.resource(QTextDocument.ResourceType.ImageResource,
                       QUrl("screenshots/guide-main-prediction.png"))
    assert img is not None and not img.isNull()
