"""Overview: the slide thumbnail with the visible rectangle; click or drag to move the view there.

Uses the thumbnail the view's tile loader reads in the background (nothing is read on the GUI
thread); until it arrives the widget shows the slide outline only.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from app.viewer.view import SlideView


class OverviewWidget(QWidget):
    """Thumbnail navigator for a :class:`SlideView`."""

    def __init__(self, view: SlideView, parent: QWidget | None = None):
        super().__init__(parent)
        self.view = view
        self.setMinimumSize(120, 100)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        view.viewChanged.connect(self.update)
        self._hooked = None

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(240, 200)

    def _hook_loader(self) -> None:
        loader = self.view.loader
        if loader is not None and loader is not self._hooked:
            loader.thumbnailReady.connect(self.update)
            self._hooked = loader

    def _image_rect(self) -> QRectF:
        w, h = self.view.slide_size
        if w <= 0 or h <= 0:
            return QRectF()
        s = min((self.width() - 8) / w, (self.height() - 8) / h)
        return QRectF((self.width() - w * s) / 2, (self.height() - h * s) / 2, w * s, h * s)

    def paintEvent(self, ev: QPaintEvent) -> None:  # noqa: N802
        self._hook_loader()
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(40, 40, 44))
        r = self._image_rect()
        if r.isEmpty():
            p.end()
            return
        p.fillRect(r, QColor(255, 255, 255))
        loader = self.view.loader
        if loader is not None and loader.thumbnail is not None:
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            p.drawImage(r, loader.thumbnail)
        w, _ = self.view.slide_size
        s = r.width() / w
        v = self.view.visible_rect_l0()
        vr = QRectF(
            r.left() + v.left() * s, r.top() + v.top() * s, v.width() * s, v.height() * s
        ).intersected(r.adjusted(-1, -1, 1, 1))
        p.setPen(QPen(QColor(230, 30, 30), 2))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(vr)
        p.end()

    def _move_to(self, pos: QPointF) -> None:
        r = self._image_rect()
        if r.isEmpty():
            return
        w, _ = self.view.slide_size
        s = r.width() / w
        self.view.set_view((pos.x() - r.left()) / s, (pos.y() - r.top()) / s)

    def mousePressEvent(self, ev: QMouseEvent) -> None:  # noqa: N802
        if ev.button() == Qt.MouseButton.LeftButton:
            self._move_to(ev.position())

    def mouseMoveEvent(self, ev: QMouseEvent) -> None:  # noqa: N802
        if ev.buttons() & Qt.MouseButton.LeftButton:
            self._move_to(ev.position())
