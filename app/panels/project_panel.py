"""Project panel: the project's slides with their annotation counts; double-click opens one.

Missing slide files are listed greyed with the reason as a tooltip (the project keeps them).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QHeaderView,
    QLabel,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)


class ProjectPanel(QWidget):
    """Slides of a project. Emits ``slideActivated(entry_id)``."""

    slideActivated = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.project: Any = None
        self.title = QLabel("No project")
        self.title.setWordWrap(True)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Slide", "Annotations"])
        self.tree.setRootIsDecorated(False)
        hdr = self.tree.header()
        hdr.setStretchLastSection(False)
        hdr.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for i in range(1, self.tree.columnCount()):
            hdr.setSectionResizeMode(i, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.itemActivated.connect(self._on_tree_itemActivated)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.title)
        lay.addWidget(self.tree, 1)

    def set_project(self, project: Any, current_id: str | None = None) -> None:
        self.project = project
        self.refresh(current_id)

    def refresh(self, current_id: str | None = None) -> None:
        self.tree.clear()
        p = self.project
        if p is None:
            self.title.setText("No project")
            return
        self.title.setText(f"<b>{p.name}</b><br><small>{p.root}</small>")
        counts = p.annotation_counts()
        for e in p.slides:
            item = QTreeWidgetItem([e.name, str(counts.get(e.id, 0))])
            item.setData(0, Qt.ItemDataRole.UserRole, e.id)
            item.setTextAlignment(1, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            if not e.exists:
                item.setForeground(0, QBrush(QColor(150, 150, 150)))
                item.setToolTip(0, e.problem or "slide file missing")
            else:
                item.setToolTip(0, str(e.path))
            if e.id == current_id:
                f = item.font(0)
                f.setBold(True)
                item.setFont(0, f)
                item.setFont(1, f)
            self.tree.addTopLevelItem(item)

    def set_count(self, entry_id: str, n: int) -> None:
        """Show ``n`` annotations for one slide (the open slide's live count)."""
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            if item.data(0, Qt.ItemDataRole.UserRole) == entry_id:
                item.setText(1, str(n))

    def count_of(self, entry_id: str) -> int | None:
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            if item.data(0, Qt.ItemDataRole.UserRole) == entry_id:
                return int(item.text(1))
        return None

    def _on_tree_itemActivated(self, item: QTreeWidgetItem, col: int) -> None:
        self.slideActivated.emit(item.data(0, Qt.ItemDataRole.UserRole))
