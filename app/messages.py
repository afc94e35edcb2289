"""Messages for the user that are not errors: Python warnings and logged warnings, in the window.

Python warnings (``warnings.warn`` of a library, from any thread; the core's jobs never warn so:
they yield ``JobWarning`` events, which :class:`app.job_runner.JobRunner` logs) and log records
of level WARNING and above would otherwise go to the terminal, which a person using the GUI does
not watch. :func:`install` routes both to a :class:`MessageLog`: each
message is shown in the status bar, listed in the Messages panel (View > Messages) and appended to
a log file, ``data_home()/logs/crc-viewer.log`` (rotated at 1 MiB, 3 kept).

Threading: :meth:`MessageLog.post` may be called from any thread (workers warn from theirs); the
message reaches the GUI thread by a queued signal. The warnings hook keeps only a weak reference
to the log: once the window is gone, warnings go back to Python's default output.
"""

from __future__ import annotations

import logging
import logging.handlers
import time
import warnings
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

if TYPE_CHECKING:
    from app.main_window import MainWindow

log = logging.getLogger(__name__)

MAX_ENTRIES = 2000
_FILE_HANDLER: logging.Handler | None = None


def log_file() -> Path:
    """Where the messages are also written."""
    from app.settings import data_home

    return data_home() / "logs" / "crc-viewer.log"


def _file_handler() -> logging.Handler | None:
    """The rotating log file handler (one per process, opened on first use)."""
    global _FILE_HANDLER
    path = log_file()
    if _FILE_HANDLER is not None and getattr(_FILE_HANDLER, "baseFilename", "") == str(path):
        return _FILE_HANDLER
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=1 << 20, backupCount=3, encoding="utf-8"
        )
    except OSError:
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    if _FILE_HANDLER is not None:
        _FILE_HANDLER.close()
    _FILE_HANDLER = handler
    return handler


class MessageLog(QObject):
    """Warnings and notes for the user, in order; ``messageAdded(level, text)`` on the GUI
    thread for each."""

    messageAdded = Signal(str, str)
    _posted = Signal(str, str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.entries: list[tuple[float, str, str]] = []
        self._posted.connect(self._on_posted, Qt.ConnectionType.QueuedConnection)

    def post(self, level: str, text: str) -> None:
        """Add a message (any thread); ``level`` is ``"warning"``, ``"error"`` or ``"info"``."""
        self._posted.emit(level, text)

    def _on_posted(self, level: str, text: str) -> None:
        self.entries.append((time.time(), level, text))
        del self.entries[:-MAX_ENTRIES]
        handler = _file_handler()
        if handler is not None:
            record = logging.LogRecord(
                "crc-viewer", getattr(logging, level.upper(), logging.INFO), "", 0, text, None,
                None,
            )
            handler.handle(record)
        self.messageAdded.emit(level, text)


class _LogHandler(logging.Handler):
    """Log records (WARNING and above) of the application into a MessageLog."""

    def __init__(self, target: MessageLog) -> None:
        super().__init__(logging.WARNING)
        self.target = weakref.ref(target)

    def emit(self, record: logging.LogRecord) -> None:
        t = self.target()
        if t is None or record.name == __name__:
            return
        try:
            t.post(record.levelname.lower(), record.getMessage())
        except RuntimeError:  # the log's C++ object is gone (window closed)
            pass


def install(target: MessageLog) -> None:
    """Route Python warnings and app/core log warnings to ``target`` from now on."""
    ref = weakref.ref(target)
    fallback = warnings.showwarning
    if getattr(fallback, "_crc_messages", False):
        fallback = fallback._crc_fallback  # type: ignore[attr-defined]

    def showwarning(message: Any, category: type, filename: str, lineno: int,
                    file: Any = None, line: str | None = None) -> None:
        t = ref()
        if t is not None:
            try:
                t.post("warning", f"{category.__name__}: {message}")
                return
            except RuntimeError:
                pass
        fallback(message, category, filename, lineno, file, line)

    showwarning._crc_messages = True  # type: ignore[attr-defined]
    showwarning._crc_fallback = fallback  # type: ignore[attr-defined]
    warnings.showwarning = showwarning
    for name in ("app", "crc_core"):
        lg = logging.getLogger(name)
        for h in [h for h in lg.handlers if isinstance(h, _LogHandler)]:
            lg.removeHandler(h)
        lg.addHandler(_LogHandler(target))


class MessagesPanel(QWidget):
    """The messages of a :class:`MessageLog`, newest last, with the log file's path."""

    def __init__(self, messages: MessageLog, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.messages = messages
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(MAX_ENTRIES)
        self.text.setPlaceholderText("Warnings and notes appear here (and in the status bar).")
        self.path_label = QLabel(f"Also written to {log_file()}")
        self.path_label.setWordWrap(True)
        self.path_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.path_label.setStyleSheet("color: palette(mid)")
        clear = QPushButton("Clear")
        clear.clicked.connect(self.text.clear)
        row = QHBoxLayout()
        row.addWidget(self.path_label, 1)
        row.addWidget(clear)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.text, 1)
        lay.addLayout(row)
        messages.messageAdded.connect(self._on_messages_messageAdded)

    def _on_messages_messageAdded(self, level: str, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.text.appendPlainText(f"{stamp}  {level}: {text}")


def attach_to_window(window: MainWindow, messages: MessageLog) -> QToolButton:
    """Show ``messages`` in ``window``'s status bar: each warning for 15 s, and a permanent
    "⚠ N" button (warnings since start) that opens the Messages dock (``window.docks``)."""
    button = QToolButton()
    button.setAutoRaise(True)
    button.hide()

    def show_dock() -> None:
        window.docks["messages"].show()
        window.docks["messages"].raise_()

    def added(level: str, text: str) -> None:
        if level not in ("warning", "error"):
            return
        window.statusBar().showMessage(f"⚠ {text}", 15000)
        n = sum(1 for _t, lv, _x in messages.entries if lv in ("warning", "error"))
        button.setText(f"⚠ {n}")
        button.setToolTip(f"{n} warning(s) since start: show them (View > Messages)")
        button.show()

    button.clicked.connect(show_dock)
    messages.messageAdded.connect(added)
    window.statusBar().addPermanentWidget(button)
    return button
