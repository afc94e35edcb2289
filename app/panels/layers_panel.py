"""Layers panel: each overlay layer of the view with a visibility box and an opacity slider.

Rebuilt whenever a layer is added or removed (``LayerStack.layersChanged``), so layers added later
by other parts of the application (class map, heatmap) appear here without further wiring.

Layout: one block per layer, its name on one line (elided in the middle when the panel is narrow,
the whole name in the tooltip) and its opacity slider with the value in percent on the next, so a
long layer name never squeezes the slider (it keeps at least :data:`SLIDER_MIN_WIDTH` px and the
row's remaining width). The blocks scroll when there are many layers.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QSlider,
    QStyle,
    QStyleOptionButton,
    QVBoxLayout,
    QWidget,
)

from app.viewer.layers import Layer, LayerStack

SLIDER_MIN_WIDTH = 100


class ElidedCheckBox(QCheckBox):
    """A check box whose text is elided in the middle to the width it is given."""

    def __init__(self, text: str, parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self.full_text = text
        self.setToolTip(text)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)

    def minimumSizeHint(self):  # noqa: N802 - Qt API
        hint = super().minimumSizeHint()
        hint.setWidth(60)
        return hint

    def resizeEvent(self, ev: QResizeEvent) -> None:  # noqa: N802 - Qt API
        opt = QStyleOptionButton()
        opt.initFrom(self)
        indicator = self.style().pixelMetric(QStyle.PixelMetric.PM_IndicatorWidth, opt, self)
        spacing = self.style().pixelMetric(QStyle.PixelMetric.PM_CheckBoxLabelSpacing, opt, self)
        room = max(10, ev.size().width() - indicator - spacing - 4)
        self.setText(self.fontMetrics().elidedText(self.full_text, Qt.TextElideMode.ElideMiddle,
                                                   room))
        super().resizeEvent(ev)


class LayersPanel(QWidget):
    def __init__(self, stack: LayerStack, parent: QWidget | None = None):
        super().__init__(parent)
        self.stack = stack
        self.body = QWidget()
        self.rows = QVBoxLayout(self.body)
        self.rows.setContentsMargins(4, 4, 4, 4)
        self.rows.setSpacing(6)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(self.body)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(scroll)
        self.controls: dict[str, tuple[QCheckBox, QSlider]] = {}
        stack.layersChanged.connect(self.rebuild)
        self.rebuild()

    def rebuild(self) -> None:
        while self.rows.count():
            item = self.rows.takeAt(0)
            if item.widget() is not None:
                item.widget().hide()
                item.widget().deleteLater()
        self.controls.clear()
        layers = list(self.stack)
        if not layers:
            self.rows.addWidget(QLabel("No layers"))
        for layer in reversed(layers):  # top layer first
            self.rows.addWidget(self._block(layer))
        self.rows.addStretch(1)

    def _block(self, layer: Layer) -> QWidget:
        block = QWidget()
        v = QVBoxLayout(block)
        v.setContentsMargins(0, 0, 0, 0)
        v.setSpacing(1)
        box = ElidedCheckBox(layer.name)
        box.setChecked(layer.visible)
        box.toggled.connect(lambda on, lay=layer: setattr(lay, "visible", on))
        slider = QSlider(Qt.Orientation.Horizontal)
        slider.setRange(0, 100)
        slider.setValue(int(round(layer.opacity * 100)))
        slider.setMinimumWidth(SLIDER_MIN_WIDTH)
        slider.setToolTip(f"Opacity of {layer.name}")
        value = QLabel(f"{slider.value()} %")
        value.setMinimumWidth(value.fontMetrics().horizontalAdvance("100 %") + 4)
        value.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

        def on_value(v: int, lay: Layer = layer, label: QLabel = value) -> None:
            lay.opacity = v / 100
            label.setText(f"{v} %")

        slider.valueChanged.connect(on_value)
        row = QHBoxLayout()
        row.setContentsMargins(20, 0, 0, 0)  # under the name, past the check box
        row.addWidget(slider, 1)
        row.addWidget(value)
        v.addWidget(box)
        v.addLayout(row)
        self.controls[layer.name] = (box, slider)
        return block

    def layer_controls(self, layer: Layer) -> tuple[QCheckBox, QSlider] | None:
        return self.controls.get(layer.name)
