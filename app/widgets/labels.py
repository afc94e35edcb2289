"""A word-wrapped label that keeps the height its text needs.

Qt lays out a word-wrapped ``QLabel`` from its one-line size hint in several places (form layouts in
a scroll area, squeezed columns), so a long warning is cut to its first line. :class:`WrapLabel`
sets its minimum height to ``heightForWidth`` of its current width whenever its text or width
changes, so the layout gives it every line. :func:`fit_height` does the same once for a plain
``QLabel`` another module creates (call it again when the text changes).
"""

from __future__ import annotations

from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QLabel, QWidget


def fit_height(label: QLabel) -> None:
    """Give a word-wrapped ``label`` the minimum height its text needs at its current width."""
    h = label.heightForWidth(max(1, label.width())) if label.width() > 0 else -1
    if h > 0 and h != label.minimumHeight():
        label.setMinimumHeight(h)


class WrapLabel(QLabel):
    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self.setWordWrap(True)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt API
        super().setText(text)
        self._fit()

    def resizeEvent(self, ev: QResizeEvent) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(ev)
        self._fit()

    def _fit(self) -> None:
        fit_height(self)
