"""One way to tell the user something went wrong: a modal message box with a one-line message.

Tests replace :func:`show_error` (monkeypatch ``app.dialogs.errors.show_error``) to record the
message instead of blocking; every caller goes through the module attribute, so the patch applies
everywhere.
"""

from __future__ import annotations

import logging

from PySide6.QtWidgets import QMessageBox, QWidget

log = logging.getLogger(__name__)


def show_error(parent: QWidget | None, title: str, message: str) -> None:
    """Show ``message`` in a modal error box titled ``title`` (also logged)."""
    log.error("%s: %s", title, message)
    box = QMessageBox(
        QMessageBox.Icon.Critical, title, message, QMessageBox.StandardButton.Ok, parent
    )
    box.exec()


def report(parent: QWidget | None, title: str, message: str) -> None:
    """Call the current :func:`show_error` (looked up at call time, so a test patch applies)."""
    import app.dialogs.errors as mod

    mod.show_error(parent, title, message)
