"""Annotation list: class, name and area (µm² when the slide is calibrated, else px²) of every
annotation; selecting a row selects the annotation, double-clicking (or clicking) zooms to it;
double-clicking the name cell renames it (an undoable edit)."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QRectF, Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.annotate.controller import AnnotationController
from app.dialogs.class_scheme import color_icon


def format_area(area_px: float, mpp: tuple[float, float] | None) -> str:
    if mpp:
        um2 = area_px * mpp[0] * mpp[1]
        if um2 >= 1e6:
            return f"{um2 / 1e6:.3g} mm²"
        return f"{um2:,.0f} µm²"
    return f"{area_px:,.0f} px²"


class AnnotationList(QWidget):
    """The annotations of the open slide, kept in step with the document."""

    def __init__(
        self,
        ctl: AnnotationController,
        mpp: Callable[[], tuple[float, float] | None],
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.ctl = ctl
        self._mpp = mpp
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Class", "Name", "Area"])
        self.tree.setRootIsDecorated(False)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        hdr = self.tree.header()
        hdr.setStretchLastSection(False)
        hdr.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for i in range(1, self.tree.columnCount()):
            hdr.setSectionResizeMode(i, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.itemSelectionChanged.connect(self._on_tree_selectionChanged)
        self.tree.itemClicked.connect(self._on_tree_itemClicked)
        self.tree.itemChanged.connect(self._on_tree_itemChanged)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.tree)
        self._doc = None
        self._syncing = False
        self.refresh()

    def attach(self) -> None:
        """Follow the controller's current document."""
        doc = self.ctl.document
        if self._doc is not None:
            self._doc.changed.disconnect(self.refresh)
            self._doc.selectionChanged.disconnect(self._sync_selection)
        self._doc = doc
        if doc is not None:
            doc.changed.connect(self.refresh)
            doc.selectionChanged.connect(self._sync_selection)
        self.refresh()

    def refresh(self) -> None:
        self._syncing = True
        self.tree.clear()
        doc = self.ctl.document
        if doc is not None:
            mpp = self._mpp()
            for a in doc:
                c = doc.scheme.find(a.class_id)
                item = QTreeWidgetItem(
                    [c.name if c else a.class_id, a.name, format_area(a.area, mpp)]
                )
                if c is not None:
                    item.setIcon(0, color_icon(c.color))
                item.setData(0, Qt.ItemDataRole.UserRole, a.id)
                item.setData(2, Qt.ItemDataRole.UserRole, a.area)
                item.setTextAlignment(
                    2, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                )
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
                self.tree.addTopLevelItem(item)
        self._syncing = False
        self._sync_selection()

    def _sync_selection(self) -> None:
        doc = self.ctl.document
        if doc is None:
            return
        self._syncing = True
        sel = set(doc.selection)
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            item.setSelected(item.data(0, Qt.ItemDataRole.UserRole) in sel)
        self._syncing = False

    def _on_tree_selectionChanged(self) -> None:
        if self._syncing or self.ctl.document is None:
            return
        ids = [it.data(0, Qt.ItemDataRole.UserRole) for it in self.tree.selectedItems()]
        self.ctl.document.set_selection(ids)

    def _on_tree_itemClicked(self, item: QTreeWidgetItem, col: int) -> None:
        self.zoom_to(item.data(0, Qt.ItemDataRole.UserRole))

    def zoom_to(self, ann_id: str) -> None:
        doc = self.ctl.document
        ann = doc.get(ann_id) if doc is not None else None
        if ann is None:
            return
        x0, y0, x1, y1 = ann.bounds
        self.ctl.view.zoom_to_rect(QRectF(x0, y0, x1 - x0, y1 - y0))

    def _on_tree_itemChanged(self, item: QTreeWidgetItem, col: int) -> None:
        if self._syncing or col != 1 or self.ctl.document is None:
            return
        ann_id = item.data(0, Qt.ItemDataRole.UserRole)
        self.ctl.document.rename(ann_id, item.text(1).strip())
