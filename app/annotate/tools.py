"""Drawing and editing tools of the slide view.

A tool receives the view's mouse and key events (``mouse_press(ev, view)`` etc., returning ``True``
when it used the event; otherwise the view navigates) and paints its preview with ``paint(painter,
view)`` in level-0 px. Tools never change annotations directly: they call the
:class:`~app.annotate.document.AnnotationDocument` of their
:class:`~app.annotate.controller.AnnotationController`,
so every finished stroke is one undo step.

Tools: pan, select (click, shift-click, drag to move the selection; with both, a double-click on
an annotation asks for its properties through ``AnnotationController.annotationActivated``), edit
vertices (drag a vertex, double-click an edge to add one, right-click a vertex to delete it),
rectangle (drag), polygon (click points; double-click or Enter closes; Backspace removes the last
point; Esc cancels), freehand lasso (drag), brush (drag paints a round stroke into the annotation of
the current class under the stroke or a new one; with *erase* on, or with the right button, it cuts
the stroke out of every visible annotation it touches) and measure (drag a line: its length in µm
when the slide is calibrated, else in pixels, stays on the canvas until the next one or Esc).
Locked annotations are never moved, reshaped or erased.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import shapely
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QCursor, QKeyEvent, QMouseEvent, QPainter, QPen
from shapely import affinity
from shapely.geometry import Point, box

from app.annotate.geometry import (
    clean_polygonal,
    delete_vertex,
    insert_vertex,
    move_vertex,
    polygon_from_points,
    stroke_area,
    vertices,
)

if TYPE_CHECKING:
    from app.annotate.controller import AnnotationController
    from app.viewer.view import SlideView

LEFT = Qt.MouseButton.LeftButton
RIGHT = Qt.MouseButton.RightButton


def _l0(view: SlideView, ev: QMouseEvent) -> tuple[float, float]:
    p = view.widget_to_l0(ev.position())
    return (p.x(), p.y())


def _cosmetic(color: QColor, width: float = 2, style: Qt.PenStyle = Qt.PenStyle.SolidLine) -> QPen:
    pen = QPen(color, width, style)
    pen.setCosmetic(True)
    return pen


class Tool:
    """Base tool: takes no events (the view pans and zooms)."""

    name = "pan"
    label = "Pan"
    shortcut = "H"
    cursor: Any = Qt.CursorShape.OpenHandCursor
    keys: tuple[tuple[str, str], ...] = ()  # (keys, what) for Help > Keyboard Shortcuts

    def __init__(self, ctl: AnnotationController):
        self.ctl = ctl
        self.view: SlideView | None = None

    def activate(self, view: SlideView) -> None:
        self.view = view

    def deactivate(self) -> None:
        self.cancel()
        self.view = None

    def cancel(self) -> None:
        """Drop an unfinished shape."""

    def paint(self, painter: QPainter, view: SlideView) -> None:
        pass

    def _color(self) -> QColor:
        c = self.ctl.current_class()
        return QColor(*c.color) if c is not None else QColor(255, 255, 0)

    def _can_draw(self) -> bool:
        return self.ctl.document is not None and self.ctl.current_class() is not None


def _activate_at(tool: Tool, ev: QMouseEvent, view: SlideView) -> bool:
    """Double-click on an annotation: select it and ask for its properties (controller signal)."""
    doc = tool.ctl.document
    if doc is None or ev.button() != LEFT:
        return False
    hit = tool.ctl.annotation_at(_l0(view, ev), 4 / view.scale)
    if hit is None:
        return False
    doc.set_selection([hit.id])
    tool.ctl.annotationActivated.emit(hit.id)
    return True


class PanTool(Tool):
    def mouse_double_click(self, ev: QMouseEvent, view: SlideView) -> bool:
        return _activate_at(self, ev, view)


class RectangleTool(Tool):
    name, label, shortcut = "rectangle", "Rectangle", "R"
    cursor = Qt.CursorShape.CrossCursor

    def __init__(self, ctl: AnnotationController):
        super().__init__(ctl)
        self.start: tuple[float, float] | None = None
        self.end: tuple[float, float] | None = None

    def cancel(self) -> None:
        self.start = self.end = None

    def mouse_press(self, ev: QMouseEvent, view: SlideView) -> bool:
        if ev.button() != LEFT or not self._can_draw():
            return False
        self.start = self.end = _l0(view, ev)
        return True

    def mouse_move(self, ev: QMouseEvent, view: SlideView) -> bool:
        if self.start is None:
            return False
        self.end = _l0(view, ev)
        view.update()
        return True

    def mouse_release(self, ev: QMouseEvent, view: SlideView) -> bool:
        if self.start is None:
            return False
        self.end = _l0(view, ev)
        (x0, y0), (x1, y1) = self.start, self.end
        self.cancel()
        view.update()
        if abs(x1 - x0) * view.scale >= 3 and abs(y1 - y0) * view.scale >= 3:
            self.ctl.add_shape(
                box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), "Draw rectangle"
            )
        return True

    def paint(self, painter: QPainter, view: SlideView) -> None:
        if self.start is None or self.end is None:
            return
        painter.setPen(_cosmetic(self._color(), 2, Qt.PenStyle.DashLine))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(QRectF(QPointF(*self.start), QPointF(*self.end)).normalized())


class PolygonTool(Tool):
    name, label, shortcut = "polygon", "Polygon", "P"
    keys = (("Enter, double-click", "Close the polygon"), ("Backspace", "Remove the last point"),
            ("Esc", "Cancel the polygon"))
    cursor = Qt.CursorShape.CrossCursor

    def __init__(self, ctl: AnnotationController):
        super().__init__(ctl)
        self.points: list[tuple[float, float]] = []
        self.hover: tuple[float, float] | None = None

    def cancel(self) -> None:
        self.points = []
        self.hover = None
        if self.view is not None:
            self.view.update()

    def _near_last(self, view: SlideView, p: tuple[float, float]) -> bool:
        if not self.points:
            return False
        q = self.points[-1]
        return max(abs(p[0] - q[0]), abs(p[1] - q[1])) * view.scale < 4

    def mouse_press(self, ev: QMouseEvent, view: SlideView) -> bool:
        if ev.button() != LEFT or not self._can_draw():
            return False
        p = _l0(view, ev)
        if not self._near_last(view, p):
            self.points.append(p)
        view.update()
        return True

    def mouse_move(self, ev: QMouseEvent, view: SlideView) -> bool:
        if not self.points:
            return False
        self.hover = _l0(view, ev)
        view.update()
        return True

    def mouse_release(self, ev: QMouseEvent, view: SlideView) -> bool:
        return bool(self.points)

    def mouse_double_click(self, ev: QMouseEvent, view: SlideView) -> bool:
        if ev.button() != LEFT or not self.points:
            return False
        p = _l0(view, ev)
        if not self._near_last(view, p):
            self.points.append(p)
        self.finish()
        return True

    def key_press(self, ev: QKeyEvent, view: SlideView) -> bool:
        if not self.points:
            return False
        k = ev.key()
        if k in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.finish()
        elif k == Qt.Key.Key_Escape:
            self.cancel()
        elif k == Qt.Key.Key_Backspace:
            self.points.pop()
            view.update()
        else:
            return False
        return True

    def finish(self) -> None:
        pts = list(self.points)
        self.cancel()
        geom = polygon_from_points(pts)
        if geom is not None:
            self.ctl.add_shape(geom, "Draw polygon")

    def paint(self, painter: QPainter, view: SlideView) -> None:
        if not self.points:
            return
        pts = [QPointF(*p) for p in self.points]
        if self.hover is not None:
            pts.append(QPointF(*self.hover))
        painter.setPen(_cosmetic(self._color(), 2))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPolyline(pts)
        r = 3 / view.scale
        for p in self.points:
            painter.drawEllipse(QPointF(*p), r, r)


class LassoTool(Tool):
    name, label, shortcut = "lasso", "Freehand", "L"
    cursor = Qt.CursorShape.CrossCursor

    def __init__(self, ctl: AnnotationController):
        super().__init__(ctl)
        self.points: list[tuple[float, float]] = []
        self.drawing = False

    def cancel(self) -> None:
        self.points = []
        self.drawing = False

    def mouse_press(self, ev: QMouseEvent, view: SlideView) -> bool:
        if ev.button() != LEFT or not self._can_draw():
            return False
        self.drawing = True
        self.points = [_l0(view, ev)]
        return True

    def mouse_move(self, ev: QMouseEvent, view: SlideView) -> bool:
        if not self.drawing:
            return False
        p = _l0(view, ev)
        q = self.points[-1]
        if max(abs(p[0] - q[0]), abs(p[1] - q[1])) * view.scale >= 2:
            self.points.append(p)
            view.update()
        return True

    def mouse_release(self, ev: QMouseEvent, view: SlideView) -> bool:
        if not self.drawing:
            return False
        self.points.append(_l0(view, ev))
        pts = self.points
        self.cancel()
        view.update()
        geom = polygon_from_points(pts)
        if geom is not None and geom.area * view.scale**2 >= 9:
            self.ctl.add_shape(geom, "Draw freehand")
        return True

    def paint(self, painter: QPainter, view: SlideView) -> None:
        if len(self.points) > 1:
            painter.setPen(_cosmetic(self._color(), 2))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawPolyline([QPointF(*p) for p in self.points])


class BrushTool(Tool):
    name, label, shortcut = "brush", "Brush", "B"
    cursor = Qt.CursorShape.BlankCursor
    keys = (("Right drag", "Erase"),)

    def __init__(self, ctl: AnnotationController):
        super().__init__(ctl)
        self.points: list[tuple[float, float]] = []
        self.erasing = False
        self.drawing = False
        self.hover: tuple[float, float] | None = None

    def cancel(self) -> None:
        self.points = []
        self.drawing = False

    def radius_l0(self, view: SlideView) -> float:
        return self.ctl.brush_radius_px / view.scale

    def mouse_press(self, ev: QMouseEvent, view: SlideView) -> bool:
        if ev.button() not in (LEFT, RIGHT) or self.ctl.document is None:
            return False
        self.erasing = ev.button() == RIGHT or self.ctl.brush_erase
        if not self.erasing and self.ctl.current_class() is None:
            return False
        self.drawing = True
        self.points = [_l0(view, ev)]
        view.update()
        return True

    def mouse_move(self, ev: QMouseEvent, view: SlideView) -> bool:
        self.hover = _l0(view, ev)
        if self.drawing:
            q = self.points[-1]
            if max(abs(self.hover[0] - q[0]), abs(self.hover[1] - q[1])) * view.scale >= 1:
                self.points.append(self.hover)
        view.update()
        return self.drawing

    def mouse_release(self, ev: QMouseEvent, view: SlideView) -> bool:
        if not self.drawing:
            return False
        self.points.append(_l0(view, ev))
        stroke = stroke_area(self.points, self.radius_l0(view))
        erasing = self.erasing
        self.cancel()
        view.update()
        if stroke is not None:
            if erasing:
                self.ctl.erase_area(stroke)
            else:
                self.ctl.paint_area(
                    stroke, Point(self.points[0]) if self.points else stroke.centroid
                )
        return True

    def paint(self, painter: QPainter, view: SlideView) -> None:
        r = self.radius_l0(view)
        color = (
            QColor(255, 255, 255)
            if (self.erasing and self.drawing) or self.ctl.brush_erase
            else self._color()
        )
        if self.drawing and self.points:
            fill = QColor(color)
            fill.setAlphaF(0.35)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(fill)
            stroke = stroke_area(self.points, r)
            if stroke is not None:
                from app.annotate.geometry import to_painter_path

                painter.drawPath(to_painter_path(stroke))
        if self.hover is not None:
            painter.setPen(_cosmetic(color, 1.5))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawEllipse(QPointF(*self.hover), r, r)


class SelectTool(Tool):
    name, label, shortcut = "select", "Select / move", "V"
    keys = (("Shift+click", "Add to or remove from the selection"),
            ("Esc", "Clear the selection"))
    cursor = Qt.CursorShape.ArrowCursor

    def __init__(self, ctl: AnnotationController):
        super().__init__(ctl)
        self.drag_from: tuple[float, float] | None = None
        self.offset = (0.0, 0.0)

    def cancel(self) -> None:
        self.drag_from = None
        self.offset = (0.0, 0.0)
        self.ctl.layer.preview.clear()

    def mouse_press(self, ev: QMouseEvent, view: SlideView) -> bool:
        doc = self.ctl.document
        if ev.button() != LEFT or doc is None:
            return False
        p = _l0(view, ev)
        hit = self.ctl.annotation_at(p, 4 / view.scale)
        shift = bool(ev.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        if hit is None:
            if not shift:
                doc.set_selection([])
            return False  # empty space: the view pans
        if shift:
            sel = list(doc.selection)
            sel.remove(hit.id) if hit.id in sel else sel.append(hit.id)
            doc.set_selection(sel)
            return True
        if hit.id not in doc.selection:
            doc.set_selection([hit.id])
        self.drag_from = p
        self.offset = (0.0, 0.0)
        return True

    def mouse_move(self, ev: QMouseEvent, view: SlideView) -> bool:
        doc = self.ctl.document
        if self.drag_from is None or doc is None:
            return False
        p = _l0(view, ev)
        self.offset = (p[0] - self.drag_from[0], p[1] - self.drag_from[1])
        self.ctl.layer.preview = {
            a.id: affinity.translate(a.geometry, *self.offset)
            for a in doc.selected()
            if not a.locked  # locked ones stay put (the document refuses to move them)
        }
        self.ctl.layer.notify_changed()
        return True

    def mouse_release(self, ev: QMouseEvent, view: SlideView) -> bool:
        doc = self.ctl.document
        if self.drag_from is None or doc is None:
            return False
        dx, dy = self.offset
        self.cancel()
        if (dx or dy) and max(abs(dx), abs(dy)) * view.scale >= 1:
            doc.update(
                [
                    a.replace(geometry=affinity.translate(a.geometry, dx, dy))
                    for a in doc.selected()
                ],
                "Move annotation",
            )
        self.ctl.layer.notify_changed()
        return True

    def mouse_double_click(self, ev: QMouseEvent, view: SlideView) -> bool:
        self.cancel()
        return _activate_at(self, ev, view)

    def key_press(self, ev: QKeyEvent, view: SlideView) -> bool:
        if (
            ev.key() == Qt.Key.Key_Escape
            and self.ctl.document is not None
            and self.ctl.document.selection
        ):
            self.ctl.document.set_selection([])
            return True
        return False


class EditVerticesTool(Tool):
    name, label, shortcut = "vertices", "Edit vertices", "E"
    keys = (("Double-click an edge", "Add a vertex"), ("Right click a vertex", "Delete it"))
    cursor = Qt.CursorShape.PointingHandCursor

    def __init__(self, ctl: AnnotationController):
        super().__init__(ctl)
        self.ann_id: str | None = None
        self.vid: Any = None

    def activate(self, view: SlideView) -> None:
        super().activate(view)
        self.ctl.layer.show_vertices = True
        self.ctl.layer.notify_changed()

    def deactivate(self) -> None:
        self.ctl.layer.show_vertices = False
        self.ctl.layer.notify_changed()
        super().deactivate()

    def cancel(self) -> None:
        self.ann_id = None
        self.vid = None
        self.ctl.layer.preview.clear()

    def _vertex_at(self, p: tuple[float, float], tol: float) -> tuple[str, Any] | None:
        doc = self.ctl.document
        if doc is None:
            return None
        best = None
        for a in doc.selected():
            for vid, (x, y) in vertices(a.geometry):
                d = max(abs(x - p[0]), abs(y - p[1]))
                if d <= tol and (best is None or d < best[0]):
                    best = (d, a.id, vid)
        return None if best is None else (best[1], best[2])

    def mouse_press(self, ev: QMouseEvent, view: SlideView) -> bool:
        doc = self.ctl.document
        if doc is None or ev.button() not in (LEFT, RIGHT):
            return False
        p = _l0(view, ev)
        hit = self._vertex_at(p, 6 / view.scale)
        if hit is not None:
            if not doc.check_editable([hit[0]], "reshaped"):
                return True
            if ev.button() == RIGHT:
                ann = doc.get(hit[0])
                if ann is not None:
                    doc.set_geometry(ann.id, delete_vertex(ann.geometry, hit[1]), "Delete vertex")
                return True
            self.ann_id, self.vid = hit
            return True
        if ev.button() != LEFT:
            return False
        ann = self.ctl.annotation_at(p, 4 / view.scale)
        doc.set_selection([ann.id] if ann is not None else [])
        return ann is not None

    def mouse_move(self, ev: QMouseEvent, view: SlideView) -> bool:
        doc = self.ctl.document
        if self.ann_id is None or doc is None:
            return False
        ann = doc.get(self.ann_id)
        if ann is None:
            return False
        g = move_vertex(ann.geometry, self.vid, _l0(view, ev))
        self.ctl.layer.preview = {ann.id: g}
        self.ctl.layer.notify_changed()
        return True

    def mouse_release(self, ev: QMouseEvent, view: SlideView) -> bool:
        doc = self.ctl.document
        if self.ann_id is None or doc is None:
            return False
        ann_id, vid = self.ann_id, self.vid
        self.cancel()
        ann = doc.get(ann_id)
        if ann is not None:
            g = move_vertex(ann.geometry, vid, _l0(view, ev))
            if g is not None and not g.equals(ann.geometry):
                doc.set_geometry(ann_id, g, "Move vertex")
        self.ctl.layer.notify_changed()
        return True

    def mouse_double_click(self, ev: QMouseEvent, view: SlideView) -> bool:
        doc = self.ctl.document
        if doc is None or ev.button() != LEFT:
            return False
        p = _l0(view, ev)
        for a in doc.selected():
            g = insert_vertex(a.geometry, p, 6 / view.scale)
            if g is not None and doc.check_editable([a.id], "reshaped"):
                doc.set_geometry(a.id, g, "Add vertex")
                return True
        return False


TOOL_CLASSES: list[type[Tool]] = [
    PanTool,
    SelectTool,
    EditVerticesTool,
    RectangleTool,
    PolygonTool,
    LassoTool,
    BrushTool,
]

__all__ = [c.__name__ for c in TOOL_CLASSES] + [
    "Tool",
    "TOOL_CLASSES",
    "clean_polygonal",
    "shapely",
    "QCursor",
]
