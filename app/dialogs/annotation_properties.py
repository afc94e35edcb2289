"""The properties of one annotation: name, class, description, locked, hidden (and its size).

OK applies every change as one undoable command
(:meth:`app.annotate.document.AnnotationDocument.set_properties`); Cancel changes nothing.
The name is saved as GeoJSON ``name`` (QuPath shows it) and ASAP ``Name``; the description as
``description`` and QuPath's ``metadata.ANNOTATION_DESCRIPTION``; the flags as ``isLocked`` and
``isHidden`` (see :mod:`crc_core.annotations`).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QWidget,
)

from app.dialogs.class_scheme import color_icon
from app.panels.annotation_list import format_area


def format_length(px: float, mpp: tuple[float, float] | None) -> str:
    if mpp:
        um = px * (mpp[0] + mpp[1]) / 2
        return f"{um / 1000:,.2f} mm" if um >= 1000 else f"{um:,.0f} µm"
    return f"{px:,.0f} px"


class AnnotationPropertiesDialog(QDialog):
    """Edit one annotation of ``doc`` (an :class:`AnnotationDocument`)."""

    def __init__(
        self,
        doc: Any,
        ann_id: str,
        mpp: tuple[float, float] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.doc = doc
        self.ann_id = ann_id
        ann = doc.get(ann_id)
        self.setWindowTitle(f"Annotation: {doc.display_name(ann_id)}")
        form = QFormLayout(self)
        self.name_edit = QLineEdit(ann.name)
        self.name_edit.setPlaceholderText(doc.display_name(ann_id) if not ann.name else "")
        self.name_edit.setToolTip("Shown in the list, in messages and in QuPath/ASAP exports; "
                                  "empty: the class name and a number")
        form.addRow("&Name", self.name_edit)
        self.class_combo = QComboBox()
        for c in doc.scheme:
            self.class_combo.addItem(color_icon(c.color), c.name, c.id)
        self.class_combo.setCurrentIndex(max(0, self.class_combo.findData(ann.class_id)))
        form.addRow("&Class", self.class_combo)
        self.notes_edit = QPlainTextEdit(ann.notes)
        self.notes_edit.setPlaceholderText("Free text, e.g. what to check")
        self.notes_edit.setTabChangesFocus(True)
        self.notes_edit.setMinimumHeight(70)
        form.addRow("&Description", self.notes_edit)
        self.locked_box = QCheckBox("&Locked: cannot be moved, reshaped or deleted")
        self.locked_box.setChecked(ann.locked)
        self.hidden_box = QCheckBox("&Hidden: not drawn on the slide (still saved and used)")
        self.hidden_box.setChecked(ann.hidden)
        form.addRow(self.locked_box)
        form.addRow(self.hidden_box)
        geom = ann.geometry
        form.addRow("Area", QLabel(format_area(ann.area, mpp)))
        form.addRow("Perimeter", QLabel(format_length(geom.length, mpp)))
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.buttons = buttons
        form.addRow(buttons)
        self.resize(440, self.sizeHint().height())

    def accept(self) -> None:
        if self.doc.get(self.ann_id) is not None:
            self.doc.set_properties(
                self.ann_id,
                name=self.name_edit.text(),
                notes=self.notes_edit.toPlainText(),
                class_id=self.class_combo.currentData(),
                locked=self.locked_box.isChecked(),
                hidden=self.hidden_box.isChecked(),
            )
        super().accept()
