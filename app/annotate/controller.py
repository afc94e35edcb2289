"""Glue between the slide view, the annotation document, the annotation layer and the tools.

The :class:`AnnotationController` owns the annotation layer (added to the view's layer stack), the
tool instances and the drawing state the tools share: current class, brush radius (screen px) and
brush erase mode. The main window's palette, toolbar and panels talk to it.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal
from shapely.geometry import Point
from shapely.geometry.base import BaseGeometry

from app.annotate.document import AnnotationDocument
from app.annotate.geometry import clean_polygonal
from app.annotate.layer import AnnotationLayer
from app.annotate.measure import MeasureTool
from app.annotate.tools import TOOL_CLASSES, Tool
from app.viewer.view import SlideView
from crc_core.annotations import Annotation
from crc_core.classes import ClassDef


class AnnotationController(QObject):
    """Current class, tools and edits on the annotation document shown in ``view``.

    Signals
    -------
    currentClassChanged(str): the id of the class new shapes get.
    toolChanged(str): the name of the active tool.
    annotationActivated(str): an annotation was double-clicked on the canvas (its id).
    measured(str): the measure tool finished a line ("Measured 123.4 µm").
    """

    currentClassChanged = Signal(str)
    toolChanged = Signal(str)
    annotationActivated = Signal(str)
    measured = Signal(str)

    def __init__(self, view: SlideView, parent: QObject | None = None):
        super().__init__(parent)
        self.view = view
        self.document: AnnotationDocument | None = None
        self.layer = AnnotationLayer()
        view.layers.add(self.layer)
        self.current_class_id: str | None = None
        self.brush_radius_px = 20.0
        self.brush_erase = False
        self.tools: dict[str, Tool] = {
            cls.name: cls(self) for cls in (*TOOL_CLASSES, MeasureTool)
        }
        self.tool_name = "pan"
        view.set_tool(self.tools["pan"])

    # ----------------------------------------------------------------- state
    def set_document(self, doc: AnnotationDocument | None) -> None:
        if self.view.tool is not None:
            self.view.tool.cancel()
        self.document = doc
        self.layer.set_document(doc)
        if doc is not None and (
            self.current_class_id is None or doc.scheme.find(self.current_class_id) is None
        ):
            self.set_current_class(doc.scheme.classes[0].id if len(doc.scheme) else None)

    def current_class(self) -> ClassDef | None:
        if self.document is None or self.current_class_id is None:
            return None
        return self.document.scheme.find(self.current_class_id)

    def set_current_class(self, class_id: str | None) -> None:
        if class_id != self.current_class_id:
            self.current_class_id = class_id
            self.currentClassChanged.emit(class_id or "")
            self.view.update()

    def set_tool(self, name: str) -> None:
        tool = self.tools[name]
        if self.view.tool is not tool:
            self.view.set_tool(tool)
        self.tool_name = name
        self.toolChanged.emit(name)

    # ----------------------------------------------------------------- queries for tools
    def visible_annotations(self) -> list[Annotation]:
        """Annotations drawn on the canvas: not hidden, of a visible class."""
        if self.document is None:
            return []
        return [
            a for a in self.document if not a.hidden and self.layer.is_class_visible(a.class_id)
        ]

    def annotation_at(self, p: tuple[float, float], tol: float) -> Annotation | None:
        """Topmost visible annotation containing ``p`` or with its outline within ``tol``."""
        pt = Point(p)
        for a in reversed(self.visible_annotations()):
            x0, y0, x1, y1 = a.bounds
            if p[0] < x0 - tol or p[0] > x1 + tol or p[1] < y0 - tol or p[1] > y1 + tol:
                continue
            if a.geometry.intersects(pt) or a.geometry.boundary.distance(pt) <= tol:
                return a
        return None

    # ----------------------------------------------------------------- edits from tools
    def add_shape(self, geometry: BaseGeometry, text: str) -> Annotation | None:
        if self.document is None or self.current_class_id is None:
            return None
        geom = clean_polygonal(geometry)
        if geom is None:
            return None
        return self.document.add(self.current_class_id, geom, text=text)

    def paint_area(self, stroke: BaseGeometry, start: Point) -> None:
        """Brush: add ``stroke`` to the current-class annotation under it (the one under ``start``
        first), or make it a new annotation."""
        doc = self.document
        if doc is None or self.current_class_id is None:
            return
        same = [
            a
            for a in reversed(self.visible_annotations())
            if a.class_id == self.current_class_id
            and not a.locked  # a locked outline keeps its shape: the stroke becomes its own
            and a.geometry.intersects(stroke)
        ]
        if not same:
            self.add_shape(stroke, "Brush")
            return
        target = next((a for a in same if a.geometry.intersects(start)), same[0])
        merged = clean_polygonal(target.geometry.union(stroke))
        doc.set_geometry(target.id, merged, "Brush")
        doc.set_selection([target.id])

    def erase_area(self, stroke: BaseGeometry) -> None:
        """Brush eraser: cut ``stroke`` out of every visible annotation it touches (one undo)."""
        doc = self.document
        if doc is None:
            return
        before, after = {}, {}
        for a in self.visible_annotations():
            if not a.geometry.intersects(stroke):
                continue
            rest = clean_polygonal(a.geometry.difference(stroke))
            before[a.id] = a
            after[a.id] = None if rest is None else a.replace(geometry=rest)
        if before:
            doc.push_change(before, after, "Erase")

    def delete_selection(self) -> None:
        if self.document is not None and self.document.selection:
            self.document.remove(list(self.document.selection))

    def set_selection_class(self, class_id: str) -> None:
        if self.document is not None and self.document.selection:
            self.document.set_class(list(self.document.selection), class_id)
