"""Class-scheme editor: add, rename, recolour, set the key of, reorder and remove classes.

Edits a copy of the scheme; OK returns it (the caller stores it in the project). A class that
annotations still use cannot be removed (``in_use`` ids); a class keeps its id across renames.
"""

from __future__ import annotations

from collections.abc import Iterable

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QColorDialog,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.dialogs import errors
from crc_core.classes import ClassScheme
from crc_core.errors import ClassSchemeError


def color_icon(rgb: tuple[int, int, int], size: int = 14) -> QIcon:
    pm = QPixmap(size, size)
    pm.fill(QColor(*rgb))
    return QIcon(pm)


class ClassSchemeDialog(QDialog):
    """Edit a class scheme; ``result_scheme()`` after ``exec()`` returns the edited copy."""

    def __init__(
        self, scheme: ClassScheme, in_use: Iterable[str] = (), parent: QWidget | None = None
    ):
        super().__init__(parent)
        self.setWindowTitle("Class scheme")
        self.scheme = scheme.copy()
        self.in_use = set(in_use)
        self.list = QListWidget()
        self.list.itemDoubleClicked.connect(lambda _: self._rename())
        buttons = QVBoxLayout()
        for text, fn in [
            ("Add…", self._add),
            ("Rename…", self._rename),
            ("Colour…", self._recolor),
            ("Key…", self._set_key),
            ("Up", lambda: self._move(-1)),
            ("Down", lambda: self._move(1)),
            ("Remove", self._remove),
        ]:
            b = QPushButton(text)
            b.clicked.connect(fn)
            buttons.addWidget(b)
        buttons.addStretch(1)
        row = QHBoxLayout()
        row.addWidget(self.list, 1)
        row.addLayout(buttons)
        box = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        box.accepted.connect(self.accept)
        box.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Classes (the order is the label index of datasets and models):"))
        lay.addLayout(row)
        lay.addWidget(box)
        self._refresh()
        self.resize(460, 320)

    def _refresh(self, select: str | None = None) -> None:
        self.list.clear()
        for c in self.scheme:
            key = f"  [{c.key}]" if c.key else ""
            used = "  (in use)" if c.id in self.in_use else ""
            item = QListWidgetItem(color_icon(c.color), f"{c.name}{key}{used}")
            item.setData(Qt.ItemDataRole.UserRole, c.id)
            self.list.addItem(item)
            if c.id == select:
                self.list.setCurrentItem(item)

    def _current(self) -> str | None:
        item = self.list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def _try(self, fn, select: str | None = None) -> None:  # type: ignore[no-untyped-def]
        try:
            out = fn()
        except ClassSchemeError as exc:
            errors.report(self, "Class scheme", str(exc))
            return
        self._refresh(select or (out.id if hasattr(out, "id") else self._current()))

    def _add(self) -> None:
        name, ok = QInputDialog.getText(self, "Add class", "Name:")
        if ok and name.strip():
            self._try(lambda: self.scheme.add(name))

    def _rename(self) -> None:
        cid = self._current()
        if cid is None:
            return
        name, ok = QInputDialog.getText(
            self, "Rename class", "Name:", text=self.scheme.get(cid).name
        )
        if ok:
            self._try(lambda: self.scheme.rename(cid, name), cid)

    def _recolor(self) -> None:
        cid = self._current()
        if cid is None:
            return
        c = QColorDialog.getColor(QColor(*self.scheme.get(cid).color), self, "Class colour")
        if c.isValid():
            self._try(lambda: self.scheme.recolor(cid, (c.red(), c.green(), c.blue())), cid)

    def _set_key(self) -> None:
        cid = self._current()
        if cid is None:
            return
        cur = self.scheme.get(cid).key or ""
        key, ok = QInputDialog.getText(self, "Shortcut key", "Key 1-9 (empty: none):", text=cur)
        if ok:
            key = key.strip()
            if key and key not in "123456789":
                errors.report(self, "Class scheme", f"key {key!r} is not one of 1-9")
                return
            self._try(lambda: self.scheme.set_key(cid, key or None), cid)

    def _move(self, d: int) -> None:
        cid = self._current()
        if cid is not None:
            self._try(lambda: self.scheme.move(cid, self.scheme.index(cid) + d), cid)

    def _remove(self) -> None:
        cid = self._current()
        if cid is not None:
            self._try(lambda: self.scheme.remove(cid, in_use=self.in_use))

    def result_scheme(self) -> ClassScheme:
        return self.scheme
