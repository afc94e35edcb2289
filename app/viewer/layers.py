"""Overlay layers of the slide view: annotations, class maps and heatmaps drawn over the slide.

Layer API
---------
A layer is a :class:`Layer` (a ``QObject``) with a ``name``, an ``opacity`` in 0..1 and a
``visible``
flag. The view keeps an ordered :class:`LayerStack`; after the slide tiles it calls
``layer.paint(painter, ctx)`` for each visible layer, bottom to top, with

* ``painter`` already transformed so that **one unit is one level-0 pixel** (draw in slide
  coordinates; use a cosmetic pen for lines that should stay one screen pixel wide), its opacity
  already set to ``layer.opacity``;
* ``ctx`` a :class:`PaintContext`: the visible level-0 rectangle (for culling), the scale (screen
  pixels per level-0 pixel) and the widget size.

A layer calls :meth:`Layer.notify_changed` (emits ``changed``) when its content changes; the view
repaints. Setting ``opacity`` or ``visible`` does this for you.

Adding a layer is two lines::

    layer = RasterLayer("Class map", rgba, origin=(x0, y0), scale=stride_l0)  # rgba: (h, w, 4)
    uint8
    main_window.view.layers.add(layer)           # appears in View > Layers with opacity and
    visibility

:class:`RasterLayer` draws a georeferenced RGBA image: pixel ``(i, j)`` of the array covers the
level-0 square ``origin + (j, i) * scale`` of side ``scale`` (for a prediction grid, ``origin`` is
the
first window's corner and ``scale`` the stride in level-0 pixels). Use ``smooth=False`` for class
maps
(hard cell edges) and ``smooth=True`` for heatmaps. Replace the image with
:meth:`RasterLayer.set_image`
(for example while a prediction job streams rows in).

Threading: layers live in the GUI thread; build the numpy arrays anywhere, hand them over by signal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QObject, QRectF, Signal
from PySide6.QtGui import QImage, QPainter

from app.viewer.tiles import array_to_qimage


@dataclass
class PaintContext:
    """What a layer needs to paint one frame."""

    visible_l0: QRectF  # the part of the slide on screen, level-0 px
    scale: float  # screen px per level-0 px
    widget_width: int
    widget_height: int


class Layer(QObject):
    """Base class of overlay layers (see the module docstring for the contract)."""

    changed = Signal()

    def __init__(
        self, name: str, opacity: float = 1.0, visible: bool = True, parent: QObject | None = None
    ):
        super().__init__(parent)
        self.name = name
        self._opacity = float(opacity)
        self._visible = bool(visible)

    @property
    def opacity(self) -> float:
        return self._opacity

    @opacity.setter
    def opacity(self, value: float) -> None:
        value = min(1.0, max(0.0, float(value)))
        if value != self._opacity:
            self._opacity = value
            self.notify_changed()

    @property
    def visible(self) -> bool:
        return self._visible

    @visible.setter
    def visible(self, value: bool) -> None:
        if bool(value) != self._visible:
            self._visible = bool(value)
            self.notify_changed()

    def notify_changed(self) -> None:
        self.changed.emit()

    def bounds_l0(self) -> QRectF | None:
        """Level-0 bounds of the content (``None``: unknown or empty); used by 'zoom to layer'."""
        return None

    def paint(self, painter: QPainter, ctx: PaintContext) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class RasterLayer(Layer):
    """A georeferenced RGBA image over the slide (class map, CAM heatmap, tissue mask...)."""

    def __init__(
        self,
        name: str,
        rgba: np.ndarray,
        origin: tuple[float, float] = (0.0, 0.0),
        scale: float = 1.0,
        opacity: float = 0.5,
        smooth: bool = False,
        visible: bool = True,
        parent: QObject | None = None,
    ):
        super().__init__(name, opacity, visible, parent)
        self.smooth = smooth
        self._image = QImage()
        self.origin = (float(origin[0]), float(origin[1]))
        self.scale = float(scale)
        self.set_image(rgba, origin, scale)

    def set_image(
        self,
        rgba: np.ndarray,
        origin: tuple[float, float] | None = None,
        scale: float | None = None,
    ) -> None:
        """Replace the image (``(h, w, 4)`` or ``(h, w, 3)`` uint8) and optionally its placement."""
        arr = np.asarray(rgba)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.dtype != np.uint8:
            raise ValueError(
                f"RasterLayer needs an (h, w, 3|4) uint8 array, got {arr.shape} {arr.dtype}"
            )
        self._image = array_to_qimage(arr)
        if origin is not None:
            self.origin = (float(origin[0]), float(origin[1]))
        if scale is not None:
            if scale <= 0:
                raise ValueError("RasterLayer scale must be > 0 (level-0 px per image pixel)")
            self.scale = float(scale)
        self.notify_changed()

    @property
    def image(self) -> QImage:
        return self._image

    def bounds_l0(self) -> QRectF | None:
        if self._image.isNull():
            return None
        return QRectF(
            self.origin[0],
            self.origin[1],
            self._image.width() * self.scale,
            self._image.height() * self.scale,
        )

    def paint(self, painter: QPainter, ctx: PaintContext) -> None:
        b = self.bounds_l0()
        if b is None or not b.intersects(ctx.visible_l0):
            return
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self.smooth)
        # draw only the source sub-rectangle on screen (cheap at any zoom)
        vis = b.intersected(ctx.visible_l0)
        sx = (vis.left() - self.origin[0]) / self.scale
        sy = (vis.top() - self.origin[1]) / self.scale
        src = QRectF(sx, sy, vis.width() / self.scale, vis.height() / self.scale)
        # snap the source to whole pixels so nearest-neighbour cells keep their place
        src = QRectF(
            np.floor(src.left()),
            np.floor(src.top()),
            np.ceil(src.right()) - np.floor(src.left()),
            np.ceil(src.bottom()) - np.floor(src.top()),
        )
        dst = QRectF(
            self.origin[0] + src.left() * self.scale,
            self.origin[1] + src.top() * self.scale,
            src.width() * self.scale,
            src.height() * self.scale,
        )
        painter.drawImage(dst, self._image, src)


class LayerStack(QObject):
    """The ordered overlay layers of a view (bottom first)."""

    changed = Signal()  # content, order, opacity or visibility changed
    layersChanged = Signal()  # a layer was added or removed

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._layers: list[Layer] = []

    def add(self, layer: Layer, index: int | None = None) -> Layer:
        if layer in self._layers:
            return layer
        if index is None:
            self._layers.append(layer)
        else:
            self._layers.insert(index, layer)
        layer.changed.connect(self.changed)
        self.layersChanged.emit()
        self.changed.emit()
        return layer

    def remove(self, layer: Layer) -> None:
        if layer in self._layers:
            self._layers.remove(layer)
            layer.changed.disconnect(self.changed)
            self.layersChanged.emit()
            self.changed.emit()

    def find(self, name: str) -> Layer | None:
        return next((lay for lay in self._layers if lay.name == name), None)

    def __iter__(self):
        return iter(list(self._layers))

    def __len__(self) -> int:
        return len(self._layers)
