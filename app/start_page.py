"""The start page: what the window shows while no slide is open.

Instead of an empty grey view it offers the next step: open a slide, a project, the demo project,
or one of the recent files, and says why the last open failed ("Could not open X: ..."), so a
failed start (``crc-viewer BROKEN.svs``) leaves a window that explains itself. Drag and drop onto
the window works here too (the main window accepts drops).
"""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QTextDocumentFragment
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)


class StartPage(QWidget):
    """Buttons and recent files; signals say what the user chose.

    Signals
    -------
    openSlideRequested(), openProjectRequested(), demoRequested(): the buttons.
    recentActivated(str): a recent file or folder was chosen.
    """

    openSlideRequested = Signal()
    openProjectRequested = Signal()
    demoRequested = Signal()
    recentActivated = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("start-page")
        self.setAutoFillBackground(True)
        title = QLabel("<h2>CRC Workbench</h2>")
        sub = QLabel("Open a whole-slide image to view and annotate it, or try the demo project "
                     "(a slide of EBHI-Seg tiles with annotations and a model's prediction).")
        sub.setWordWrap(True)
        self.problem = QLabel("")
        self.problem.setObjectName("start-problem")
        self.problem.setWordWrap(True)
        self.problem.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.problem.setStyleSheet(
            "QLabel { color: #8b0000; background: #fdecea; border: 1px solid #e0b4b4;"
            " border-radius: 4px; padding: 8px; }"
        )
        self.problem.hide()
        self.open_slide_button = QPushButton("Open Slide…")
        self.open_slide_button.clicked.connect(self.openSlideRequested)
        self.open_project_button = QPushButton("Open Project…")
        self.open_project_button.clicked.connect(self.openProjectRequested)
        self.demo_button = QPushButton("Open the Demo Project")
        self.demo_button.clicked.connect(self.demoRequested)
        buttons = QHBoxLayout()
        for b in (self.open_slide_button, self.open_project_button, self.demo_button):
            b.setMinimumHeight(32)
            buttons.addWidget(b)
        buttons.addStretch(1)
        self.recent = QListWidget()
        self.recent.setMaximumHeight(160)
        self.recent.itemActivated.connect(self._on_recent_itemActivated)
        self.recent_label = QLabel("<b>Recent</b> (double-click to open)")
        hint = QLabel("You can also drop a slide file or a project folder on this window. "
                      "Help > User Guide explains each step; Help > Keyboard Shortcuts lists "
                      "the keys.")
        hint.setWordWrap(True)
        hint.setStyleSheet("color: palette(mid)")
        box = QFrame()
        box.setMaximumWidth(720)
        inner = QVBoxLayout(box)
        for w in (title, sub, self.problem):
            inner.addWidget(w)
        inner.addLayout(buttons)
        inner.addSpacing(12)
        inner.addWidget(self.recent_label)
        inner.addWidget(self.recent)
        inner.addWidget(hint)
        outer = QHBoxLayout(self)
        outer.addStretch(1)
        col = QVBoxLayout()
        col.addStretch(1)
        col.addWidget(box)
        col.addStretch(2)
        outer.addLayout(col, 4)
        outer.addStretch(1)

    def set_recent(self, paths: list[str]) -> None:
        self.recent.clear()
        for p in paths:
            item = QListWidgetItem(f"{Path(p).name or p}    ({Path(p).parent})")
            item.setToolTip(p)
            item.setData(Qt.ItemDataRole.UserRole, p)
            self.recent.addItem(item)
        self.recent.setVisible(bool(paths))
        self.recent_label.setVisible(bool(paths))

    def set_problem(self, text: str, title: str = "") -> None:
        """Show why the last open failed (empty: hide); ``title`` in bold above it."""
        body = html.escape(text).replace("\n", "<br>")
        self.problem.setText(f"<b>{html.escape(title)}</b><br>{body}" if title else body)
        self.problem.setVisible(bool(text))

    def problem_text(self) -> str:
        """The problem shown, as plain text."""
        return self.problem.text() and QTextDocumentFragment.fromHtml(
            self.problem.text()).toPlainText()

    def _on_recent_itemActivated(self, item: QListWidgetItem) -> None:
        self.recentActivated.emit(item.data(Qt.ItemDataRole.UserRole))
