"""Help menu: the keyboard shortcuts (generated from the window's actions) and the user guide.

:func:`shortcut_rows` walks the menu bar, so every menu action with a shortcut is listed as it is
bound now; to these it adds the class keys of the open scheme (1-9, Shift+1-9) and the keys that
widgets handle themselves: the slide view's navigation (``SlideView.KEYS``) and each tool's
(``Tool.keys``). Help > User Guide shows ``docs/USER_GUIDE.md`` (shipped with the app and in the
repository) in a window that renders its Markdown and screenshots, with a button to open it in
the system's viewer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices, QKeySequence, QTextDocument
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from app.demo import bundle_root

if TYPE_CHECKING:
    from app.main_window import MainWindow

#: Property of an action whose text changes (Undo <what>): the name to list instead.
BASE_TEXT = "base_text"


def user_guide_path() -> Path:
    return bundle_root() / "docs" / "USER_GUIDE.md"


def _clean(text: str) -> str:
    return text.replace("&&", "\0").replace("&", "").replace("\0", "&").rstrip("…").strip()


def _walk(menu: QMenu, where: str, rows: list[tuple[str, str, str]]) -> None:
    for a in menu.actions():
        if a.menu() is not None:
            _walk(a.menu(), f"{where} > {_clean(a.text())}", rows)
        elif not a.isSeparator() and not a.shortcut().isEmpty():
            text = a.property(BASE_TEXT) or a.text()
            keys = a.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
            rows.append((where, _clean(text), keys))


def shortcut_rows(window: MainWindow) -> list[tuple[str, str, str]]:
    """``(where, what, keys)`` for every keyboard shortcut of ``window`` (a MainWindow)."""
    rows: list[tuple[str, str, str]] = []
    for top in window.menuBar().actions():
        if top.menu() is not None:
            _walk(top.menu(), _clean(top.text()), rows)
    scheme = window.document.scheme if window.document is not None else None
    if scheme is not None:
        for c in scheme:
            if c.key:
                rows.append(("Classes", f"New shapes get {c.name}", c.key))
                rows.append(("Classes", f"Selection becomes {c.name}", f"Shift+{c.key}"))
    else:
        rows.append(("Classes", "Class of new shapes (as listed in Classes)", "1-9"))
        rows.append(("Classes", "Give the selection that class", "Shift+1-9"))
    for keys, what in window.view.KEYS:
        rows.append(("Slide view", what, keys))
    for tool in window.ctl.tools.values():
        for keys, what in getattr(tool, "keys", ()):
            rows.append((f"{tool.label} tool", what, keys))
    for keys, what in getattr(getattr(window, "review_panel", None), "KEYS", ()):
        rows.append(("Review list (focused)", what, keys))
    return rows


class ShortcutsDialog(QDialog):
    """Help > Keyboard Shortcuts: a filterable table of :func:`shortcut_rows`."""

    def __init__(self, window: MainWindow, parent: QWidget | None = None) -> None:
        super().__init__(parent or window)
        self.setWindowTitle("Keyboard shortcuts")
        self.rows = shortcut_rows(window)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter, e.g. zoom or Ctrl")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self._on_filter_textChanged)
        self.table = QTableWidget(len(self.rows), 3)
        self.table.setHorizontalHeaderLabels(["Keys", "Does", "Where"])
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        for r, (where, what, keys) in enumerate(self.rows):
            for c, text in enumerate((keys, what, where)):
                self.table.setItem(r, c, QTableWidgetItem(text))
        hdr = self.table.horizontalHeader()
        hdr.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        hdr.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        hdr.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        lay = QVBoxLayout(self)
        lay.addWidget(self.filter)
        lay.addWidget(self.table, 1)
        lay.addWidget(buttons)
        self.resize(640, 620)

    def _on_filter_textChanged(self, text: str) -> None:
        t = text.strip().lower()
        for r, row in enumerate(self.rows):
            self.table.setRowHidden(r, bool(t) and not any(t in x.lower() for x in row))

    def visible_rows(self) -> list[tuple[str, str, str]]:
        return [row for r, row in enumerate(self.rows) if not self.table.isRowHidden(r)]


class UserGuideWindow(QDialog):
    """Help > User Guide: the Markdown guide with its screenshots, in the app."""

    def __init__(self, path: Path | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("CRC Workbench user guide")
        self.path = path or user_guide_path()
        self.browser = QTextBrowser()
        self.browser.setOpenExternalLinks(True)
        lay = QVBoxLayout(self)
        if self.path.is_file():
            self.browser.setSearchPaths([str(self.path.parent)])
            self.browser.setSource(QUrl.fromLocalFile(str(self.path)),
                                   QTextDocument.ResourceType.MarkdownResource)
        else:
            self.browser.setPlainText(f"The user guide is not part of this build ({self.path}).")
        lay.addWidget(self.browser, 1)
        row = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.external_button = QPushButton("Open in the system viewer")
        self.external_button.setEnabled(self.path.is_file())
        self.external_button.clicked.connect(self.open_external)
        row.addButton(self.external_button, QDialogButtonBox.ButtonRole.ActionRole)
        row.rejected.connect(self.close)
        where = QLabel(str(self.path))
        where.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        where.setStyleSheet("color: palette(mid)")
        lay.addWidget(where)
        lay.addWidget(row)
        self.resize(900, 800)

    def open_external(self) -> bool:
        return QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.path)))
