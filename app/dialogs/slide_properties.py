"""Slide properties: file facts, every OpenSlide property, label and macro images, stain; mpp entry.

:func:`ask_mpp` asks the user for the slide's µm per pixel (for slides whose file has none); the
main
window stores the answer in the project (``Project.set_mpp``) and applies it to the reader.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.viewer.tiles import array_to_qimage
from crc_core.errors import error_message
from crc_core.slide import SlideReader


class SlidePropertiesDialog(QDialog):
    """Read-only view of a slide's facts, properties and associated images."""

    def __init__(self, slide: SlideReader, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle(f"Slide properties — {slide.path.name}")
        tabs = QTabWidget()
        w, h = slide.dimensions
        mpp = slide.mpp
        facts = [
            ("File", str(slide.path)),
            ("Reader", f"{slide.backend} ({getattr(slide, 'format', '')})"),
            ("Vendor", slide.vendor or "—"),
            ("Size (level 0)", f"{w:,} x {h:,} px"),
            (
                "Levels",
                ", ".join(
                    f"{lw}x{lh} (÷{ds:g})"
                    for (lw, lh), ds in zip(
                        slide.level_dimensions, slide.level_downsamples, strict=False
                    )
                ),
            ),
            (
                "µm per pixel",
                f"{mpp[0]:.4g} x {mpp[1]:.4g}"
                + (" (set by user)" if getattr(slide, "mpp_source", "") == "user" else "")
                if mpp
                else "unknown (uncalibrated)",
            ),
            ("Objective", f"{slide.objective_power:g}×" if slide.objective_power else "unknown"),
        ]
        form_w = QWidget()
        form = QFormLayout(form_w)
        for k, v in facts:
            lab = QLabel(v)
            lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            lab.setWordWrap(True)
            form.addRow(k + ":", lab)
        tabs.addTab(form_w, "Summary")
        props = sorted(slide.properties.items())
        table = QTableWidget(len(props), 2)
        table.setHorizontalHeaderLabels(["Property", "Value"])
        for i, (k, v) in enumerate(props):
            table.setItem(i, 0, QTableWidgetItem(k))
            table.setItem(i, 1, QTableWidgetItem(str(v)))
        table.horizontalHeader().setStretchLastSection(True)
        table.resizeColumnToContents(0)
        tabs.addTab(table, f"Properties ({len(props)})")
        self.image_labels: dict[str, QLabel] = {}
        images = QWidget()
        row = QHBoxLayout(images)
        for name in slide.associated_names:
            box = QVBoxLayout()
            lab = QLabel()
            try:
                img = array_to_qimage(slide.associated_image(name))
                pm = QPixmap.fromImage(img).scaled(
                    320,
                    320,
                    Qt.AspectRatioMode.KeepAspectRatio,
                    Qt.TransformationMode.SmoothTransformation,
                )
                lab.setPixmap(pm)
            except Exception as exc:  # a broken associated image is shown as text
                lab.setText(f"cannot read: {error_message(exc)}")
            self.image_labels[name] = lab
            box.addWidget(QLabel(f"<b>{name}</b>"))
            box.addWidget(lab)
            box.addStretch(1)
            row.addLayout(box)
        if not slide.associated_names:
            row.addWidget(QLabel("This slide has no label, macro or other associated images."))
        tabs.addTab(images, "Label and macro")
        from app.dialogs.stain_tab import StainTab

        self.stain_tab = StainTab(slide)
        self.finished.connect(self.stain_tab.cancel)
        tabs.addTab(self.stain_tab, "Stain")
        bb = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        bb.rejected.connect(self.reject)
        bb.accepted.connect(self.accept)
        lay = QVBoxLayout(self)
        lay.addWidget(tabs)
        lay.addWidget(bb)
        self.resize(720, 480)


class MppDialog(QDialog):
    """Ask for µm per level-0 pixel (x = y); 'Clear' returns to the file's value."""

    def __init__(self, current: tuple[float, float] | None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Set pixel size")
        self.cleared = False
        self.spin = QDoubleSpinBox()
        self.spin.setDecimals(4)
        self.spin.setRange(0.01, 100.0)
        self.spin.setSingleStep(0.05)
        self.spin.setSuffix(" µm/px")
        self.spin.setValue(current[0] if current else 0.25)
        form = QFormLayout()
        form.addRow("Level-0 pixel size:", self.spin)
        hint = QLabel("Typical: 0.25 µm/px at 40×, 0.5 µm/px at 20×. Stored in the project.")
        hint.setWordWrap(True)
        bb = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok
            | QDialogButtonBox.StandardButton.Cancel
            | QDialogButtonBox.StandardButton.Reset
        )
        bb.accepted.connect(self.accept)
        bb.rejected.connect(self.reject)
        bb.button(QDialogButtonBox.StandardButton.Reset).setText("Use file's value")
        bb.button(QDialogButtonBox.StandardButton.Reset).clicked.connect(self._clear)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(hint)
        lay.addWidget(bb)

    def _clear(self) -> None:
        self.cleared = True
        self.accept()

    def value(self) -> tuple[float, float] | None:
        if self.cleared:
            return None
        v = float(self.spin.value())
        return (v, v)
