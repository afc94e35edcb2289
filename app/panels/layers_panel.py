"""Layers panel: each overlay layer of the view with a visibility box and an opacity slider.

Rebuilt whenever a layer is added or removed (``LayerStack.layersChanged``), so layers added later
by
other parts of the application (class map, heatmap) appear here without further wiring.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QGridLayout, QLabel, QSlider, QVBoxLayout, QWidget

from app.viewer.layers import Layer, LayerStack


class LayersPanel(QWidget):
    def __init__(self, stack: LayerStack, parent: QWidget | None = None):
        super().__init__(parent)
        self.stack = stack
        self.grid = QGridLayout()
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(self.grid)
        lay.addStretch(1)
        self.controls: dict[str, tuple[QCheckBox, QSlider]] = {}
        stack.layersChanged.connect(self.rebuild)
        self.rebuild()

    def rebuild(self) -> None:
        while self.grid.count():
            w = self.grid.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        self.controls.clear()
        layers = list(self.stack)
        if not layers:
            self.grid.addWidget(QLabel("No layers"), 0, 0)
        for row, layer in enumerate(reversed(layers)):  # top layer first
            box = QCheckBox(layer.name)
            box.setChecked(layer.visible)
            box.toggled.connect(lambda on, lay=layer: setattr(lay, "visible", on))
            slider = QSlider(Qt.Orientation.Horizontal)
            slider.setRange(0, 100)
            slider.setValue(int(round(layer.opacity * 100)))
            slider.setToolTip("Opacity")
            slider.valueChanged.connect(lambda v, lay=layer: setattr(lay, "opacity", v / 100))
            self.grid.addWidget(box, row, 0)
            self.grid.addWidget(slider, row, 1)
            self.controls[layer.name] = (box, slider)

    def layer_controls(self, layer: Layer) -> tuple[QCheckBox, QSlider] | None:
        return self.controls.get(layer.name)
