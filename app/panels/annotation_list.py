"""Annotation list: class, name, area (µm² when the slide is calibrated, else px²) and state
(locked, hidden) of every annotation, kept in step with the document.

Selecting a row selects the annotation; clicking zooms to it. The name cell is edited in place
(double-click it, or F2 through the Edit menu's Rename): an undoable rename. An unnamed
annotation shows its automatic name ("Adenoma #2", greyed); editing starts from an empty name.
Double-clicking another cell opens the properties dialog; right-click opens the annotation menu
(rename, properties, class, lock, hide, delete, zoom to), built by
:class:`app.annotate.actions.AnnotationActions` (attached with :meth:`AnnotationList.set_actions`).
Hidden annotations are listed in grey italics; proposed ones (converted from a prediction and not
yet reviewed, :mod:`crc_core.proposals`) in italics, with "proposed" (later "reviewed") as state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QModelIndex, QPoint, QRectF, Qt, QTimer
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLineEdit,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.annotate.controller import AnnotationController
from app.dialogs.class_scheme import color_icon
from crc_core.proposals import is_proposed, is_reviewed, review_info

NAME_COL = 1
ID_ROLE = Qt.ItemDataRole.UserRole
NAME_ROLE = Qt.ItemDataRole.UserRole + 1  # the stored name ("" when automatic)


def format_area(area_px: float, mpp: tuple[float, float] | None) -> str:
    if mpp:
        um2 = area_px * mpp[0] * mpp[1]
        if um2 >= 1e6:
            return f"{um2 / 1e6:.3g} mm²"
        return f"{um2:,.0f} µm²"
    return f"{area_px:,.0f} px²"


class _NameDelegate(QStyledItemDelegate):
    """Only the name column is editable, and its editor starts from the stored name."""

    def createEditor(  # noqa: N802 - Qt API
        self, parent: QWidget, option: QStyleOptionViewItem, index: QModelIndex
    ) -> QWidget | None:
        if index.column() != NAME_COL:
            return None
        editor = QLineEdit(parent)
        editor.setPlaceholderText(index.data(Qt.ItemDataRole.DisplayRole) or "")
        return editor

    def setEditorData(self, editor: QWidget, index: QModelIndex) -> None:  # noqa: N802
        if isinstance(editor, QLineEdit):
            editor.setText(index.data(NAME_ROLE) or "")


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
        self.actions_: Any = None  # AnnotationActions (menus, properties), set by the window
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Class", "Name", "Area", "State"])
        self.tree.setRootIsDecorated(False)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.tree.setItemDelegate(_NameDelegate(self.tree))
        self.tree.setEditTriggers(QAbstractItemView.EditTrigger.DoubleClicked
                                  | QAbstractItemView.EditTrigger.EditKeyPressed)
        self.tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.tree.customContextMenuRequested.connect(self._on_tree_customContextMenuRequested)
        hdr = self.tree.header()
        hdr.setStretchLastSection(False)
        # names and areas are read in full; the class (its colour and, in a tooltip, its name)
        # takes what is left; the state column shows only when something is locked or hidden
        hdr.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for i in (NAME_COL, 2, 3):
            hdr.setSectionResizeMode(i, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.itemSelectionChanged.connect(self._on_tree_selectionChanged)
        self.tree.itemClicked.connect(self._on_tree_itemClicked)
        self.tree.itemDoubleClicked.connect(self._on_tree_itemDoubleClicked)
        self.tree.itemChanged.connect(self._on_tree_itemChanged)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.tree)
        self._doc = None
        self._syncing = False
        self.refresh()

    def set_actions(self, actions: Any) -> None:
        """Use ``actions`` (an AnnotationActions) for the context menu and properties."""
        self.actions_ = actions

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
            names = doc.annotations.display_names(doc.scheme)
            for a in doc:
                self.tree.addTopLevelItem(self._item(a, names[a.id], doc, mpp))
        self.tree.setColumnHidden(
            3, doc is None or not any(a.locked or a.hidden or review_info(a) for a in doc)
        )
        self._syncing = False
        self._sync_selection()

    def _item(self, a: Any, shown: str, doc: Any, mpp: Any) -> QTreeWidgetItem:
        c = doc.scheme.find(a.class_id)
        state = ", ".join(s for s, on in (("locked", a.locked), ("hidden", a.hidden),
                                          ("proposed", is_proposed(a)),
                                          ("reviewed", is_reviewed(a))) if on)
        item = QTreeWidgetItem([c.name if c else a.class_id, shown, format_area(a.area, mpp),
                                state])
        if c is not None:
            item.setIcon(0, color_icon(c.color))
            item.setToolTip(0, c.name)
        item.setData(0, ID_ROLE, a.id)
        item.setData(NAME_COL, NAME_ROLE, a.name)
        item.setData(2, ID_ROLE, a.area)
        item.setTextAlignment(2, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
        tip = a.notes or ""
        item.setToolTip(NAME_COL, tip if tip else ("" if a.name else "automatic name: "
                                                   "double-click or F2 to name it"))
        grey = QBrush(QColor(128, 128, 128))
        if not a.name:
            f = item.font(NAME_COL)
            f.setItalic(True)
            item.setFont(NAME_COL, f)
            item.setForeground(NAME_COL, grey)
        if a.hidden or is_proposed(a):  # proposed (from a prediction, not reviewed): italics
            for col in range(4):
                f = item.font(col)
                f.setItalic(True)
                item.setFont(col, f)
                if a.hidden:
                    item.setForeground(col, grey)
        return item

    def _item_of(self, ann_id: str) -> QTreeWidgetItem | None:
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            if item.data(0, ID_ROLE) == ann_id:
                return item
        return None

    def edit_name(self, ann_id: str) -> bool:
        """Start editing the name cell of ``ann_id`` in place."""
        item = self._item_of(ann_id)
        if item is None:
            return False
        self.tree.setFocus()
        self.tree.setCurrentItem(item, NAME_COL)
        self.tree.editItem(item, NAME_COL)
        return True

    def _sync_selection(self) -> None:
        doc = self.ctl.document
        if doc is None:
            return
        self._syncing = True
        sel = set(doc.selection)
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            item.setSelected(item.data(0, ID_ROLE) in sel)
        self._syncing = False

    def selected_ids(self) -> list[str]:
        return [it.data(0, ID_ROLE) for it in self.tree.selectedItems()]

    def _on_tree_selectionChanged(self) -> None:
        if self._syncing or self.ctl.document is None:
            return
        self.ctl.document.set_selection(self.selected_ids())

    def _on_tree_itemClicked(self, item: QTreeWidgetItem, col: int) -> None:
        self.zoom_to(item.data(0, ID_ROLE))

    def _on_tree_itemDoubleClicked(self, item: QTreeWidgetItem, col: int) -> None:
        if col != NAME_COL and self.actions_ is not None:
            self.actions_.show_properties(item.data(0, ID_ROLE))

    def _on_tree_customContextMenuRequested(self, pos: QPoint) -> None:
        item = self.tree.itemAt(pos)
        if item is None or self.actions_ is None:
            return
        if not item.isSelected():
            self.tree.setCurrentItem(item)  # selects it alone
        self.actions_.popup(self.selected_ids(), self.tree.viewport().mapToGlobal(pos), self)

    def zoom_to(self, ann_id: str) -> None:
        doc = self.ctl.document
        ann = doc.get(ann_id) if doc is not None else None
        if ann is None:
            return
        x0, y0, x1, y1 = ann.bounds
        self.ctl.view.zoom_to_rect(QRectF(x0, y0, x1 - x0, y1 - y0))

    def _on_tree_itemChanged(self, item: QTreeWidgetItem, col: int) -> None:
        if self._syncing or col != NAME_COL or self.ctl.document is None:
            return
        # applied after the edit has returned: the rename rebuilds the list (and its items)
        ann_id, text = item.data(0, ID_ROLE), item.text(NAME_COL)
        QTimer.singleShot(0, lambda: self._apply_rename(ann_id, text))

    def _apply_rename(self, ann_id: str, text: str) -> None:
        doc = self.ctl.document
        ann = doc.get(ann_id) if doc is not None else None
        if ann is None:
            return
        if text.strip() != ann.name:
            doc.rename(ann_id, text)
        else:
            self.refresh()  # no change (e.g. cleared an automatic name): show it again
