"""A word-wrapped label that keeps the height its text needs.

Qt lays out a word-wrapped ``QLabel`` from its one-line size hint in several places (form layouts in
a scroll area, squeezed columns), so a long warning is cut to its first line. :class:`WrapLabel`
sets its minimum height to ``heightForWidth`` of its current width whenever its text or width
changes, so the layout gives it every line.
"""

from __future__ import annotations

from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QLabel, QWidget


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
        h = self.heightForWidth(max(1, self.width())) if self.width() > 0 else -1
        if h > 0 and h != self.minimumHeight():
            self.setMinimumHeight(h)
