"""The measure (ruler) tool: drag a line over the slide and read its length on the canvas.

The length is in µm (or mm) when the slide has a pixel size (``view.mpp``, x and y apart), else in
level-0 pixels marked "uncalibrated". The line stays until the next measurement, Esc or another
tool; it is not an annotation and is not saved. Each finished line is also announced through
``AnnotationController.measured`` (the window puts it in the status bar).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QKeyEvent, QMouseEvent, QPainter, QPen

from app.annotate.tools import LEFT, Tool, _l0

if TYPE_CHECKING:
    from app.viewer.view import SlideView


def measure_text(
    p0: tuple[float, float], p1: tuple[float, float], mpp: tuple[float, float] | None
) -> str:
    """Length of the level-0 segment ``p0``-``p1``: ``"123.4 µm"``, ``"1.234 mm"`` or
    ``"456 px (uncalibrated)"``."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    if not mpp:
        return f"{math.hypot(dx, dy):,.0f} px (uncalibrated)"
    um = math.hypot(dx * mpp[0], dy * mpp[1])
    return f"{um / 1000:,.3f} mm" if um >= 1000 else f"{um:,.1f} µm"


class MeasureTool(Tool):
    name, label, shortcut = "measure", "Measure", "M"
    cursor = Qt.CursorShape.CrossCursor
    keys = (("Drag", "Measure a line (µm when calibrated)"), ("Esc", "Clear the line"))

    def __init__(self, ctl):  # type: ignore[no-untyped-def]
        super().__init__(ctl)
        self.start: tuple[float, float] | None = None
        self.end: tuple[float, float] | None = None
        self.dragging = False

    def cancel(self) -> None:
        self.start = self.end = None
        self.dragging = False
        if self.view is not None:
            self.view.update()

    def text(self, view: SlideView) -> str:
        if self.start is None or self.end is None:
            return ""
        return measure_text(self.start, self.end, view.mpp)

    def mouse_press(self, ev: QMouseEvent, view: SlideView) -> bool:
        if ev.button() != LEFT:
            return False
        self.start = self.end = _l0(view, ev)
        self.dragging = True
        view.update()
        return True

    def mouse_move(self, ev: QMouseEvent, view: SlideView) -> bool:
        if not self.dragging:
            return False
        self.end = _l0(view, ev)
        view.update()
        return True

    def mouse_release(self, ev: QMouseEvent, view: SlideView) -> bool:
        if not self.dragging:
            return False
        self.end = _l0(view, ev)
        self.dragging = False
        view.update()
        if self.start is not None and self.end != self.start:
            self.ctl.measured.emit(f"Measured {self.text(view)}")
        return True

    def key_press(self, ev: QKeyEvent, view: SlideView) -> bool:
        if ev.key() == Qt.Key.Key_Escape and self.start is not None:
            self.cancel()
            return True
        return False

    def paint(self, painter: QPainter, view: SlideView) -> None:
        if self.start is None or self.end is None or self.start == self.end:
            return
        a, b = QPointF(*self.start), QPointF(*self.end)
        for color, width in ((QColor(0, 0, 0, 180), 5), (QColor(255, 230, 0), 2)):
            pen = QPen(color, width)
            pen.setCosmetic(True)
            pen.setCapStyle(Qt.PenCapStyle.FlatCap)
            painter.setPen(pen)
            painter.drawLine(a, b)
        # the label in screen pixels, beside the line's end
        painter.save()
        painter.resetTransform()
        end = view.l0_to_widget(b)
        font = QFont(view.font())
        font.setBold(True)
        painter.setFont(font)
        text = self.text(view)
        fm = painter.fontMetrics()
        box = QRectF(end.x() + 10, end.y() - fm.height() - 8, fm.horizontalAdvance(text) + 12,
                     fm.height() + 6)
        # keep the label on screen: to the left of the end, or below, when there is no room
        if box.right() > view.width() - 4:
            box.moveRight(end.x() - 10)
        if box.top() < 4:
            box.moveTop(end.y() + 10)
        box.moveLeft(max(4.0, min(box.left(), view.width() - 4 - box.width())))
        painter.fillRect(box, QColor(0, 0, 0, 190))
        painter.setPen(QColor(255, 255, 255))
        painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)
        painter.restore()
