"""View > Brightness / Contrast: a non-modal dialog with two sliders and Reset.

Changes only how the slide is shown (:class:`app.viewer.display.DisplayAdjust`); overlays, saved
files, datasets and predictions never see it. The setting lasts for the session.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QWidget,
)

from app.viewer.display import DisplayAdjust, contrast_from_slider, slider_from_contrast


class DisplayAdjustDialog(QDialog):
    """Brightness -100..100 (% of full scale / 100) and contrast -100..100 (×0.25..×4)."""

    def __init__(self, view: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.view = view
        self.setWindowTitle("Brightness / Contrast")
        self.setModal(False)
        form = QFormLayout(self)
        note = QLabel("Changes only how the slide is shown, not the files, annotations or "
                      "predictions.")
        note.setWordWrap(True)
        form.addRow(note)
        adj = view.display_adjust
        self.brightness = self._slider(int(round(adj.brightness * 100)))
        self.contrast = self._slider(slider_from_contrast(adj.contrast))
        self.brightness_value = QLabel()
        self.contrast_value = QLabel()
        for name, slider, value in (("Brightness", self.brightness, self.brightness_value),
                                    ("Contrast", self.contrast, self.contrast_value)):
            row = QHBoxLayout()
            row.addWidget(slider, 1)
            value.setMinimumWidth(48)
            row.addWidget(value)
            form.addRow(name, row)
        self.reset_button = QPushButton("&Reset")
        self.reset_button.clicked.connect(self.reset)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.addButton(self.reset_button, QDialogButtonBox.ButtonRole.ResetRole)
        buttons.rejected.connect(self.close)
        form.addRow(buttons)
        self._apply()
        self.resize(380, self.sizeHint().height())

    def _slider(self, value: int) -> QSlider:
        s = QSlider(Qt.Orientation.Horizontal)
        s.setRange(-100, 100)
        s.setValue(value)
        s.setPageStep(10)
        s.setMinimumWidth(180)
        s.valueChanged.connect(lambda _v: self._apply())
        return s

    def adjust(self) -> DisplayAdjust:
        return DisplayAdjust(self.brightness.value() / 100.0,
                             contrast_from_slider(self.contrast.value()))

    def _apply(self) -> None:
        adj = self.adjust()
        self.brightness_value.setText(f"{self.brightness.value():+d}")
        self.contrast_value.setText(f"×{adj.contrast:.2g}")
        self.view.set_display_adjust(adj)

    def reset(self) -> None:
        """Back to the slide as scanned."""
        self.brightness.setValue(0)
        self.contrast.setValue(0)
