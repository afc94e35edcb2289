"""Class palette: one row per class of the scheme (colour, name, key, visibility), fill opacity,
brush size and erase mode. Clicking a class (or pressing its key 1-9 in the main window) makes it
the
class of new shapes; 'Set class of selection' applies it to the selected annotations."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QSlider,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.annotate.controller import AnnotationController
from app.dialogs.class_scheme import color_icon


class ClassPalette(QWidget):
    """Classes with colours and keys, per-class show/hide, fill opacity, brush settings."""

    def __init__(self, ctl: AnnotationController, parent: QWidget | None = None):
        super().__init__(parent)
        self.ctl = ctl
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Class", "Key"])
        self.tree.setRootIsDecorated(False)
        hdr = self.tree.header()
        hdr.setStretchLastSection(False)
        hdr.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        hdr.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.itemClicked.connect(self._on_tree_itemClicked)
        self.tree.itemChanged.connect(self._on_tree_itemChanged)
        self.apply_button = QPushButton("Set class of selection")
        self.apply_button.clicked.connect(self._apply_to_selection)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(int(ctl.layer.fill_opacity * 100))
        self.opacity.valueChanged.connect(lambda v: setattr(ctl.layer, "fill_opacity", v / 100))
        self.brush = QSlider(Qt.Orientation.Horizontal)
        self.brush.setRange(2, 200)
        self.brush.setValue(int(ctl.brush_radius_px))
        self.brush.valueChanged.connect(self._on_brush_valueChanged)
        self.erase = QCheckBox("Brush erases")
        self.erase.toggled.connect(self._on_erase_toggled)
        form = QFormLayout()
        form.addRow("Fill opacity", self.opacity)
        form.addRow("Brush radius", self.brush)
        row = QHBoxLayout()
        row.addWidget(self.erase)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.tree, 1)
        lay.addWidget(self.apply_button)
        lay.addLayout(form)
        lay.addLayout(row)
        ctl.currentClassChanged.connect(lambda _: self._sync_current())
        self._updating = False
        self.refresh()

    def refresh(self) -> None:
        """Rebuild from the document's scheme."""
        self._updating = True
        self.tree.clear()
        doc = self.ctl.document
        if doc is not None:
            for c in doc.scheme:
                item = QTreeWidgetItem([c.name, c.key or ""])
                item.setIcon(0, color_icon(c.color))
                item.setData(0, Qt.ItemDataRole.UserRole, c.id)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(
                    0,
                    Qt.CheckState.Checked
                    if self.ctl.layer.is_class_visible(c.id)
                    else Qt.CheckState.Unchecked,
                )
                item.setToolTip(
                    0, "Checkbox: show or hide this class. Click: draw with this class."
                )
                self.tree.addTopLevelItem(item)
        self._updating = False
        self._fit_rows()
        self._sync_current()

    def _fit_rows(self) -> None:
        """Room for every class without scrolling, up to the nine of the number keys (the
        five-class default scheme of a slide opened alone showed four and a half)."""
        t = self.tree
        n = t.topLevelItemCount()
        row = t.sizeHintForRow(0) if n else t.fontMetrics().height() + 4
        t.setMinimumHeight(t.header().sizeHint().height() + min(max(n, 3), 9) * row
                           + 2 * t.frameWidth() + 2)

    def _sync_current(self) -> None:
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            if item.data(0, Qt.ItemDataRole.UserRole) == self.ctl.current_class_id:
                self.tree.setCurrentItem(item)

    def _on_tree_itemClicked(self, item: QTreeWidgetItem, col: int) -> None:
        self.ctl.set_current_class(item.data(0, Qt.ItemDataRole.UserRole))

    def _on_tree_itemChanged(self, item: QTreeWidgetItem, col: int) -> None:
        if self._updating:
            return
        cid = item.data(0, Qt.ItemDataRole.UserRole)
        self.ctl.layer.set_class_visible(cid, item.checkState(0) == Qt.CheckState.Checked)

    def _apply_to_selection(self) -> None:
        if self.ctl.current_class_id:
            self.ctl.set_selection_class(self.ctl.current_class_id)

    def _on_brush_valueChanged(self, v: int) -> None:
        self.ctl.brush_radius_px = float(v)
        self.ctl.view.update()

    def _on_erase_toggled(self, on: bool) -> None:
        self.ctl.brush_erase = on
        self.ctl.view.update()
