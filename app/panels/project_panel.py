"""Project panel: the project's slides with a thumbnail and their annotation counts;
double-click opens one.

Missing slide files are listed greyed with the reason as a tooltip (the project keeps them).
Thumbnails are read in a :class:`app.workers.JobWorker` (never on the GUI thread: a slide on a
network share can take seconds to open) by :func:`thumbnail_job`, and kept in memory per file
(path, size, modification time), so refreshing the list does not read them again.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QHeaderView,
    QLabel,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from crc_core.errors import CrcError
from crc_core.jobs import Progress
from crc_core.project import Project
from crc_core.slide import open_slide

THUMB_PX = 64
_cache: dict[tuple[str, int, int], np.ndarray] = {}


def _key(path: Path) -> tuple[str, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (str(path), st.st_size, st.st_mtime_ns)


def thumbnail_job(
    items: list[tuple[str, Path]], max_px: int = THUMB_PX
) -> Generator[Progress, None, int]:
    """Read the thumbnail of each ``(entry id, slide path)``; yields ``Progress`` whose payload is
    ``(entry id, (h, w, 3) uint8 array)``; a slide that cannot be read is skipped. Returns how
    many were read."""
    done = 0
    for i, (entry_id, path) in enumerate(items):
        key = _key(path)
        img = _cache.get(key) if key is not None else None
        if img is None and key is not None:
            try:
                with open_slide(path) as reader:
                    img = np.ascontiguousarray(reader.thumbnail(max_px)[..., :3])
            except (CrcError, OSError):
                img = None
            if img is not None:
                _cache[key] = img
        if img is not None:
            done += 1
        yield Progress(i + 1, len(items), path.name, (entry_id, img))
    return done


class ProjectPanel(QWidget):
    """Slides of a project. Emits ``slideActivated(entry_id)``."""

    slideActivated = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.project: Project | None = None
        self.title = QLabel("No project")
        self.title.setWordWrap(True)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Slide", "Annotations"])
        self.tree.setRootIsDecorated(False)
        self.tree.setIconSize(QSize(THUMB_PX, THUMB_PX))
        self.tree.setWordWrap(True)  # names wrap beside the thumbnail instead of "Demo slide..."
        self._thumbs: dict[str, QIcon] = {}  # entry id -> icon (this project)
        self._tried: set[str] = set()  # entry ids already read (or found unreadable)
        self._worker: Any = None
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

    def set_project(self, project: Project | None, current_id: str | None = None) -> None:
        if project is not self.project:
            self._thumbs.clear()
            self._tried.clear()
        self.project = project
        self.refresh(current_id)

    def load_thumbnails(self) -> None:
        """Read the missing thumbnails in a worker thread; each appears when read."""
        from app.workers import JobWorker

        p = self.project
        if p is None or self._worker is not None:
            return
        items = []
        for e in p.slides:
            if e.exists and e.id not in self._tried:
                try:
                    items.append((e.id, Path(p.slide_path(e))))
                except CrcError:
                    continue
        if not items:
            return
        self._tried.update(i for i, _p in items)
        w = JobWorker(lambda: thumbnail_job(items), self)
        w.progressed.connect(lambda ev, p=p: self._on_worker_progressed(ev, p))
        w.finished.connect(self._on_worker_finished)
        self._worker = w
        w.start()

    def _on_worker_progressed(self, ev: Progress, project: Project | None) -> None:
        entry_id, img = ev.payload
        if img is None or project is not self.project:  # another project opened meanwhile
            return
        from app.viewer.tiles import array_to_qimage

        self._thumbs[entry_id] = QIcon(QPixmap.fromImage(array_to_qimage(img)))
        item = self._item(entry_id)
        if item is not None:
            item.setIcon(0, self._thumbs[entry_id])

    def _on_worker_finished(self) -> None:
        w, self._worker = self._worker, None  # unreadable slides stay without a thumbnail
        if w is not None:
            w.deleteLater()
        self.load_thumbnails()  # slides added while it ran

    def thumbnail(self, entry_id: str) -> QIcon | None:
        return self._thumbs.get(entry_id)

    def _item(self, entry_id: str) -> QTreeWidgetItem | None:
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            if item.data(0, Qt.ItemDataRole.UserRole) == entry_id:
                return item
        return None

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
            if e.id in self._thumbs:
                item.setIcon(0, self._thumbs[e.id])
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
        self.load_thumbnails()

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
