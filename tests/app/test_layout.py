"""Layout faults a new user hit: layer sliders squeezed by long names (and jumping to 0), the
toolbar resizing with the undo text, empty plots with meaningless axes."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QStyle, QStyleOptionSlider, QToolBar

from app.main_window import MainWindow
from app.panels.layers_panel import SLIDER_MIN_WIDTH, LayersPanel
from app.viewer.layers import LayerStack, RasterLayer
from app.widgets.plots import ConfusionCanvas, CurvesCanvas, RocCanvas

L = Qt.MouseButton.LeftButton
LONG = "Class map: demo_resnet50_3class fine-tuned on the corrections of 2026-03-01 (current view)"


def handle_center(slider) -> QPoint:
    opt = QStyleOptionSlider()
    opt.initFrom(slider)
    opt.orientation = slider.orientation()
    opt.minimum, opt.maximum = slider.minimum(), slider.maximum()
    opt.sliderPosition = opt.sliderValue = slider.value()
    opt.singleStep, opt.pageStep = slider.singleStep(), slider.pageStep()
    opt.subControls = QStyle.SubControl.SC_SliderHandle | QStyle.SubControl.SC_SliderGroove
    return slider.style().subControlRect(QStyle.ComplexControl.CC_Slider, opt,
                                         QStyle.SubControl.SC_SliderHandle, slider).center()


def test_long_layer_names_do_not_squeeze_the_opacity_slider_and_dragging_follows_the_mouse(
    qtbot,
):
    stack = LayerStack()
    layer = stack.add(RasterLayer(LONG, np.zeros((4, 4, 4), np.uint8), opacity=0.5))
    stack.add(RasterLayer("Annotations", np.zeros((4, 4, 4), np.uint8), opacity=1.0))
    panel = LayersPanel(stack)
    qtbot.addWidget(panel)
    panel.resize(240, 300)  # a narrow dock
    panel.show()
    qtbot.waitExposed(panel)
    box, slider = panel.layer_controls(layer)
    qtbot.waitUntil(lambda: slider.width() >= SLIDER_MIN_WIDTH)
    assert slider.width() >= 0.5 * panel.width()
    assert box.toolTip() == LONG and "…" in box.text() and box.width() <= panel.width()
    # drag the handle three quarters of the way: the value follows, it does not jump to 0
    start = handle_center(slider)
    end = QPoint(round(slider.width() * 0.75), start.y())
    qtbot.mousePress(slider, L, pos=start)
    for x in np.linspace(start.x(), end.x(), 6)[1:]:
        qtbot.mouseMove(slider, QPoint(int(x), start.y()))
    qtbot.mouseRelease(slider, L, pos=end)
    assert 60 <= slider.value() <= 90
    assert layer.opacity == pytest.approx(slider.value() / 100)
    # a layer added later (a new prediction) rebuilds the panel; the values stay
    stack.add(RasterLayer("Heatmap", np.zeros((4, 4, 4), np.uint8), opacity=0.3))
    assert panel.layer_controls(layer)[1].value() == round(layer.opacity * 100)


def test_the_toolbar_does_not_resize_when_the_undo_text_grows(qtbot, slides_dir, canvas_of):
    win = MainWindow()
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    qtbot.waitExposed(win)
    assert win.open_path(slides_dir / "cmu-1-small-region.svs")
    win.view.set_view(1100, 1500, 0.5)
    tb = next(t for t in win.findChildren(QToolBar) if t.widgetForAction(win.tb_undo))
    button = tb.widgetForAction(win.tb_undo)
    width, fit_x = button.width(), tb.widgetForAction(win.act_fit).x()
    win.ctl.set_tool("rectangle")
    canvas_of(win).drag([(900, 1300), (1300, 1700)])
    win.document.set_class([list(win.document)[0].id], "adc-moderate")
    assert win.act_undo.text().replace("&", "") == (
        "Undo Set Normal #1 to Adenocarcinoma moderately differentiated")  # the menu says what
    assert button.text() == "Undo" and button.width() == width  # the toolbar does not move
    assert tb.widgetForAction(win.act_fit).x() == fit_x
    assert "Adenocarcinoma moderately differentiated" in button.toolTip()
    qtbot.mouseClick(button, L)
    assert list(win.document)[0].class_id == "normal"


def test_empty_plots_say_so_instead_of_drawing_empty_axes(qtbot):
    curves = CurvesCanvas()
    qtbot.addWidget(curves)
    curves.start_run("resnet50")  # a run has started, no epoch has ended
    assert curves.empty_message.startswith("No epochs yet")
    assert not curves.ax_loss.get_visible() and not curves.ax_acc.get_visible()
    curves.add_row({"epoch": 1, "train_loss": 0.9, "train_acc": 0.5, "val_loss": 1.0,
                    "val_acc": 0.4})
    assert curves.empty_message == "" and curves.ax_loss.get_visible()
    lo, hi = curves.ax_loss.get_ylim()
    assert lo < 0.9 < hi and hi - lo > 0.05  # data limits, not -0.04..0.04
    curves.clear()
    assert curves.empty_message

    roc = RocCanvas()
    qtbot.addWidget(roc)
    assert "nothing evaluated yet" in roc.empty_message and not roc.ax.get_visible()
    roc.plot(np.array([0, 1, 1]), np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6]]), ["A", "B"])
    assert roc.empty_message == "" and roc.ax.get_visible()
    cm = ConfusionCanvas()
    qtbot.addWidget(cm)
    assert "nothing evaluated yet" in cm.empty_message
    cm.plot([[3, 1], [0, 4]], ["A", "B"])
    assert cm.empty_message == ""
