"""The annotation overlay layer: outlines and translucent fills in class colours, selection handles.

Draws in level-0 px (see :mod:`app.viewer.layers`). Painter paths are cached per annotation and
rebuilt only when its geometry object changes; annotations outside the visible rectangle are culled
by
their bounds. ``fill_opacity`` (0..1) is the fill's alpha; outlines stay opaque; the layer's own
``opacity`` scales everything. Hidden classes and hidden annotations are skipped.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QPainter, QPainterPath, QPen

from app.annotate.document import AnnotationDocument
from app.annotate.geometry import to_painter_path, vertices
from app.viewer.layers import Layer, PaintContext


class AnnotationLayer(Layer):
    """Annotations of an :class:`AnnotationDocument` as a view layer."""

    def __init__(self, doc: AnnotationDocument | None = None, name: str = "Annotations"):
        super().__init__(name, opacity=1.0)
        self.doc: AnnotationDocument | None = None
        self.hidden_classes: set[str] = set()
        self._fill_opacity = 0.25
        self.show_vertices = False
        self.preview: dict[str, object] = {}  # id -> geometry drawn instead while a tool drags
        self._paths: dict[str, tuple[int, QPainterPath]] = {}
        if doc is not None:
            self.set_document(doc)

    def set_document(self, doc: AnnotationDocument | None) -> None:
        if self.doc is not None:
            self.doc.changed.disconnect(self.notify_changed)
            self.doc.selectionChanged.disconnect(self.notify_changed)
        self.doc = doc
        self._paths.clear()
        if doc is not None:
            doc.changed.connect(self.notify_changed)
            doc.selectionChanged.connect(self.notify_changed)
        self.notify_changed()

    @property
    def fill_opacity(self) -> float:
        return self._fill_opacity

    @fill_opacity.setter
    def fill_opacity(self, v: float) -> None:
        self._fill_opacity = min(1.0, max(0.0, float(v)))
        self.notify_changed()

    def set_class_visible(self, class_id: str, visible: bool) -> None:
        if visible:
            self.hidden_classes.discard(class_id)
        else:
            self.hidden_classes.add(class_id)
        self.notify_changed()

    def is_class_visible(self, class_id: str) -> bool:
        return class_id not in self.hidden_classes

    def _path(self, ann_id: str, geom: object) -> QPainterPath:
        hit = self._paths.get(ann_id)
        if hit is not None and hit[0] == id(geom):
            return hit[1]
        path = to_painter_path(geom)  # type: ignore[arg-type]
        self._paths[ann_id] = (id(geom), path)
        return path

    def bounds_l0(self) -> QRectF | None:
        if self.doc is None or len(self.doc) == 0:
            return None
        r = QRectF()
        for a in self.doc:
            x0, y0, x1, y1 = a.bounds
            r = r.united(QRectF(x0, y0, x1 - x0, y1 - y0))
        return r

    def paint(self, painter: QPainter, ctx: PaintContext) -> None:
        doc = self.doc
        if doc is None:
            return
        vis = ctx.visible_l0
        selected = set(doc.selection)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        live = set()
        for ann in doc:
            live.add(ann.id)
            if ann.hidden or ann.class_id in self.hidden_classes:
                continue
            geom = self.preview.get(ann.id, ann.geometry)
            if geom is None:
                continue
            x0, y0, x1, y1 = geom.bounds  # type: ignore[attr-defined]
            if x1 < vis.left() or x0 > vis.right() or y1 < vis.top() or y0 > vis.bottom():
                continue
            cdef = doc.scheme.find(ann.class_id)
            rgb = cdef.color if cdef is not None else (128, 128, 128)
            color = QColor(*rgb)
            path = self._path(ann.id, geom) if geom is ann.geometry else to_painter_path(geom)  # type: ignore[arg-type]
            fill = QColor(color)
            fill.setAlphaF(self._fill_opacity)
            painter.setBrush(QBrush(fill) if self._fill_opacity > 0 else Qt.BrushStyle.NoBrush)
            if ann.id in selected:
                pen = QPen(QColor(255, 255, 255), 4)
                pen.setCosmetic(True)
                painter.setPen(pen)
                painter.drawPath(path)
                painter.setBrush(Qt.BrushStyle.NoBrush)
                pen = QPen(color, 2, Qt.PenStyle.DashLine)
            else:
                pen = QPen(color, 2)
            pen.setCosmetic(True)
            painter.setPen(pen)
            painter.drawPath(path)
            if ann.id in selected and self.show_vertices:
                self._paint_vertices(painter, geom, ctx.scale, color)
        for stale in set(self._paths) - live:
            del self._paths[stale]

    @staticmethod
    def _paint_vertices(painter: QPainter, geom: object, scale: float, color: QColor) -> None:
        r = 4.0 / scale
        pen = QPen(QColor(0, 0, 0), 1)
        pen.setCosmetic(True)
        painter.setPen(pen)
        painter.setBrush(QColor(255, 255, 255))
        for _, (x, y) in vertices(geom):  # type: ignore[arg-type]
            painter.drawRect(QRectF(QPointF(x - r, y - r), QPointF(x + r, y + r)))
