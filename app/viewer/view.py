"""The slide view: a widget that paints pyramid tiles and overlay layers in level-0 coordinates.

Frames: the view state is ``center`` (level-0 px at the widget centre) and ``scale`` (screen px per
level-0 px; 1.0 is 1:1 at level 0). ``widget_to_l0`` / ``l0_to_widget`` convert points.

Painting never waits on I/O. Each frame draws, bottom to top: the slide thumbnail (the last-resort
stand-in, so nothing is blank once it has arrived), cached tiles of neighbouring levels where a
tile of
the target level is still missing, the target-level tiles (the pyramid level nearest the zoom, never
coarser than the screen), the overlay layers (:mod:`app.viewer.layers`), the active tool's preview,
and
the scale bar with the magnification. Missing target tiles are requested from the
:class:`~app.viewer.tiles.TileLoader`, which reads them in a thread pool and drops requests for
tiles
that have left the view.

Mouse and keys go to the active tool first (:mod:`app.annotate.tools`); what it does not take
navigates: drag to pan (left button in the pan/select tools, middle button always), wheel to zoom
about the cursor, arrows/WASD to pan, +/- to zoom. A right click the tool does not take (or the
Menu key) emits ``contextMenuRequested``.

Zooming in stops at the scan's resolution (scale 1: one screen pixel per level-0 pixel) unless
``allow_overzoom`` is on (View > Zoom Past Scan Resolution) or Shift is held with the wheel;
``zoomCapped`` tells the window to say so. Explicit ``set_view(..., scale)`` (``--view``) is
not capped. Magnification and the brightness/contrast of the slide: :mod:`app.viewer.display`.
"""

from __future__ import annotations

import math
import time
from typing import Any

from PySide6.QtCore import QPoint, QPointF, QRect, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import (
    QColor,
    QContextMenuEvent,
    QFont,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QWheelEvent,
)
from PySide6.QtWidgets import QSizePolicy, QWidget

from app.viewer.display import DisplayAdjust, magnification_readout, native_magnification
from app.viewer.layers import LayerStack, PaintContext
from app.viewer.tiles import TileKey, TileLoader

BACKGROUND = QColor(58, 58, 62)
NICE_STEPS = (1, 2, 5)


def nice_length(target: float) -> float:
    """The largest 1/2/5 x 10^k not above ``target`` (for scale bars)."""
    if target <= 0:
        return 1.0
    k = math.floor(math.log10(target))
    best = 10.0**k
    for s in NICE_STEPS:
        if s * 10.0**k <= target:
            best = s * 10.0**k
    return best


def format_length_um(um: float) -> str:
    if um >= 1000:
        v = um / 1000
        return f"{v:g} mm"
    return f"{um:g} µm"


class SlideView(QWidget):
    """Tile-pyramid slide view with overlay layers and pluggable tools.

    Signals
    -------
    viewChanged(): centre or scale changed.
    cursorMoved(object): level-0 ``QPointF`` under the mouse, or ``None`` when it left the slide.
    renderComplete(): a frame was painted with every visible tile at its final resolution.
    contextMenuRequested(QPoint, object): right click (widget px) not taken by the tool, with the
        level-0 ``QPointF`` under it.
    zoomCapped(): a zoom-in stopped at the scan's resolution.
    """

    viewChanged = Signal()
    cursorMoved = Signal(object)
    renderComplete = Signal()
    contextMenuRequested = Signal(QPoint, object)
    zoomCapped = Signal()

    MIN_SCALE_FACTOR = 0.25  # of the fit scale
    MAX_SCALE = 16.0  # 16 screen px per level-0 px
    NATIVE_SCALE = 1.0  # the scan's resolution: interactive zoom stops here unless allowed
    #: keys and gestures the view handles itself (listed by Help > Keyboard Shortcuts)
    KEYS = (
        ("Arrows / W A S D", "Pan"),
        ("+ / -", "Zoom in / out (stops at the scan's resolution)"),
        ("Wheel", "Zoom about the cursor"),
        ("Shift+Wheel", "Zoom past the scan's resolution"),
        ("Drag (middle button: any tool)", "Pan"),
        ("Right click, Menu key", "Annotation menu: rename, class, lock, hide, delete, zoom to"),
        ("Double-click an annotation", "Its properties (Pan and Select tools)"),
    )

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(True)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent, True)
        self.setMinimumSize(200, 150)
        self.source: Any = None
        self.loader: TileLoader | None = None
        self.layers = LayerStack(self)
        self.layers.changed.connect(self.update)
        self.center = QPointF(0, 0)
        self.scale = 1.0
        self.mpp: tuple[float, float] | None = None
        self.objective_power: float | None = None
        self.tool: Any = None
        self._drag_pan: QPointF | None = None
        self._fit_pending = True
        self._last_wanted: frozenset[TileKey] = frozenset()
        self._last_requested: frozenset[TileKey] = frozenset()
        self._complete = False
        self.last_frame_ms = 0.0
        self.last_frame_cpu_ms = 0.0  # GUI-thread CPU time of the last paint (load-independent)
        self.frame_times_ms: list[float] = []  # appended by every paint (benchmark reads it)
        self.show_scale_bar = True
        self.tile_threads: int | None = None  # reader threads (None: TileLoader's default)
        self._cursor_l0: QPointF | None = None
        self._right_press: QPointF | None = None
        self.allow_overzoom = False  # zoom past the scan's resolution (View menu toggle)
        self.display_adjust = DisplayAdjust()
        self._frame: QImage | None = None

    # ----------------------------------------------------------------- source
    def set_source(
        self, source: Any, tile_size: int = 256, cache_bytes: int = 256 * 1024 * 1024
    ) -> None:
        """Show ``source`` (a SlideReader or any TileSource); ``None`` clears the view."""
        self.close_source()
        self.source = source
        self._complete = False
        self._last_wanted = frozenset()
        self._last_requested = frozenset()
        if source is None:
            self.mpp = None
            self.objective_power = None
            self.update()
            return
        self.mpp = getattr(source, "mpp", None)
        self.objective_power = getattr(source, "objective_power", None)
        self.loader = TileLoader(
            source,
            tile_size=tile_size,
            cache_bytes=cache_bytes,
            threads=self.tile_threads,
            parent=self,
        )
        self.loader.tileReady.connect(self._on_loader_tileReady)
        self.loader.thumbnailReady.connect(self.update)
        self.loader.request_thumbnail()
        self._fit_pending = True
        if self.width() > 0 and self.height() > 0:
            self.fit()
        self.update()

    def close_source(self) -> None:
        if self.loader is not None:
            self.loader.close()
            self.loader.deleteLater()
            self.loader = None
        self.source = None

    def _on_loader_tileReady(self, key: TileKey) -> None:
        if key in self._last_wanted:
            self.update()

    # ----------------------------------------------------------------- geometry
    @property
    def slide_size(self) -> tuple[int, int]:
        return tuple(self.source.dimensions) if self.source is not None else (0, 0)  # type: ignore[return-value]

    def widget_to_l0(self, p: QPointF) -> QPointF:
        return QPointF(
            self.center.x() + (p.x() - self.width() / 2) / self.scale,
            self.center.y() + (p.y() - self.height() / 2) / self.scale,
        )

    def l0_to_widget(self, p: QPointF) -> QPointF:
        return QPointF(
            (p.x() - self.center.x()) * self.scale + self.width() / 2,
            (p.y() - self.center.y()) * self.scale + self.height() / 2,
        )

    def visible_rect_l0(self) -> QRectF:
        tl = self.widget_to_l0(QPointF(0, 0))
        return QRectF(tl.x(), tl.y(), self.width() / self.scale, self.height() / self.scale)

    def fit_scale(self) -> float:
        w, h = self.slide_size
        if w <= 0 or h <= 0:
            return 1.0
        return min(self.width() / w, self.height() / h) * 0.98

    def _clamp(self) -> None:
        lo = self.fit_scale() * self.MIN_SCALE_FACTOR
        self.scale = min(self.MAX_SCALE, max(min(lo, 1.0), self.scale))
        w, h = self.slide_size
        self.center = QPointF(
            min(max(self.center.x(), 0.0), float(w)), min(max(self.center.y(), 0.0), float(h))
        )

    def set_view(self, cx: float, cy: float, scale: float | None = None) -> None:
        """Centre the view on level-0 ``(cx, cy)`` at ``scale`` (screen px per level-0 px)."""
        self._fit_pending = False
        self.center = QPointF(float(cx), float(cy))
        if scale is not None:
            self.scale = float(scale)
        self._clamp()
        self._view_changed()

    def fit(self) -> None:
        """Show the whole slide (and keep fitting on resize until the user navigates)."""
        w, h = self.slide_size
        self._fit_pending = True
        self.scale = self.fit_scale()
        self.center = QPointF(w / 2, h / 2)
        self._view_changed()

    def one_to_one(self) -> None:
        """One screen pixel per level-0 pixel, keeping the centre."""
        self.set_view(self.center.x(), self.center.y(), 1.0)

    def capped_scale(self, scale: float, overzoom: bool = False) -> float:
        """``scale`` limited to the scan's resolution unless over-zoom is allowed (or already
        past it); emits ``zoomCapped`` when it limits."""
        limit = max(self.NATIVE_SCALE, self.scale)
        if overzoom or self.allow_overzoom or scale <= limit * (1 + 1e-9):
            return scale
        self.zoomCapped.emit()
        return limit

    def zoom_by(
        self, factor: float, anchor: QPointF | None = None, overzoom: bool = False
    ) -> None:
        """Zoom by ``factor`` keeping the slide point under ``anchor`` (widget px) in place;
        zooming in stops at the scan's resolution unless ``overzoom`` or ``allow_overzoom``."""
        if anchor is None:
            anchor = QPointF(self.width() / 2, self.height() / 2)
        before = self.widget_to_l0(anchor)
        self.scale = self.capped_scale(self.scale * factor, overzoom)
        self._clamp()
        # keep `before` under the anchor
        self.center = QPointF(
            before.x() - (anchor.x() - self.width() / 2) / self.scale,
            before.y() - (anchor.y() - self.height() / 2) / self.scale,
        )
        self._fit_pending = False
        self._clamp()
        self._view_changed()

    def pan_by(self, dx: float, dy: float) -> None:
        """Move the content by ``(dx, dy)`` screen pixels (drag direction)."""
        self._fit_pending = False
        self.center = QPointF(self.center.x() - dx / self.scale, self.center.y() - dy / self.scale)
        self._clamp()
        self._view_changed()

    def zoom_to_rect(self, r: QRectF, margin: float = 0.15) -> None:
        """Show the level-0 rectangle ``r`` with a margin."""
        if r.width() <= 0 and r.height() <= 0:
            self.set_view(r.center().x(), r.center().y())
            return
        s = min(self.width() / max(r.width(), 1.0), self.height() / max(r.height(), 1.0)) * (
            1 - margin
        )
        s = min(s, max(self.NATIVE_SCALE, self.scale)) if not self.allow_overzoom else s
        self.set_view(r.center().x(), r.center().y(), s)

    # ----------------------------------------------------------------- magnification
    def native_magnification(self) -> float | None:
        """Magnification at scale 1 (objective power, else from mpp; ``None``: unknown)."""
        return native_magnification(self.objective_power, self.mpp)[0]

    def magnification(self) -> float | None:
        native = self.native_magnification()
        return None if native is None else native * self.scale

    def set_magnification(self, mag: float, overzoom: bool = False) -> bool:
        """Zoom about the centre to ``mag``×; ``False`` when it is unknown or was capped at the
        scan's resolution (then the view shows the scan's own)."""
        native = self.native_magnification()
        if native is None or self.source is None:
            return False
        want = mag / native
        self._fit_pending = False
        self.scale = self.capped_scale(want, overzoom)
        self._clamp()
        self._view_changed()
        return abs(self.scale - want) < 1e-9 * want

    def _view_changed(self) -> None:
        self._complete = False
        self.request_visible()
        self.update()
        self.viewChanged.emit()

    def resizeEvent(self, ev: Any) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(ev)
        if self._fit_pending and self.source is not None:
            self.fit()
        else:
            self._clamp()
            self._view_changed()

    # ----------------------------------------------------------------- levels and tiles
    #: a level may be magnified up to this factor on screen before the next finer one is used
    LEVEL_TOLERANCE = 1.25

    def target_level(self) -> int:
        """The pyramid level nearest the zoom: the coarsest one magnified by at most 1.25x."""
        if self.source is None:
            return 0
        ds = 1.0 / self.scale
        best = 0
        for i, d in enumerate(self.source.level_downsamples):
            if d <= ds * self.LEVEL_TOLERANCE:
                best = i
        return best

    def visible_tiles(self, level: int | None = None) -> list[TileKey]:
        """Target-level tiles on screen, centre first."""
        if self.loader is None:
            return []
        level = self.target_level() if level is None else level
        v = self.visible_rect_l0()
        keys = self.loader.tiles_in_rect(level, v.left(), v.top(), v.right(), v.bottom())
        c = self.center
        ds = self.source.level_downsamples[level] * self.loader.tile_size

        def dist(k: TileKey) -> float:
            return ((k[1] + 0.5) * ds - c.x()) ** 2 + ((k[2] + 0.5) * ds - c.y()) ** 2

        keys.sort(key=dist)
        return keys

    def is_complete(self, with_thumbnail: bool = False) -> bool:
        """Every visible tile is loaded at its final resolution (and the thumbnail, if asked)."""
        if self.loader is None:
            return self.source is None
        if with_thumbnail and self.loader.thumbnail is None and self.loader._thumb_pending:
            return False
        return all(self.loader.has(k) for k in self.visible_tiles())

    def _tile_widget_rect(self, key: TileKey) -> QRect:
        assert self.loader is not None
        x, y, w, h = self.loader.tile_rect_l0(key)
        a = self.l0_to_widget(QPointF(x, y))
        b = self.l0_to_widget(QPointF(x + w, y + h))
        # integer edges shared by neighbours: no seams between tiles
        x0, y0, x1, y1 = round(a.x()), round(a.y()), round(b.x()), round(b.y())
        return QRect(x0, y0, max(1, x1 - x0), max(1, y1 - y0))

    # ----------------------------------------------------------------- painting
    def paintEvent(self, ev: QPaintEvent) -> None:  # noqa: N802 - Qt API
        t0 = time.perf_counter()
        c0 = time.thread_time()
        p = QPainter(self)
        p.fillRect(self.rect(), BACKGROUND)
        complete = self.source is None
        if self.source is not None and self.loader is not None:
            if self.display_adjust.is_identity:
                complete = self._paint_slide(p)
            else:  # brightness/contrast: paint the slide into a frame, adjust it, show it
                complete = self._paint_adjusted_slide(p)
            self._paint_layers(p)
        if self.tool is not None:
            p.save()
            self._apply_l0_transform(p)
            self.tool.paint(p, self)
            p.restore()
        if self.show_scale_bar and self.source is not None:
            self._paint_scale_bar(p)
        p.end()
        self.last_frame_ms = (time.perf_counter() - t0) * 1000
        self.last_frame_cpu_ms = (time.thread_time() - c0) * 1000
        self.frame_times_ms.append(self.last_frame_ms)
        if len(self.frame_times_ms) > 10000:
            del self.frame_times_ms[:5000]
        if complete:
            self._complete = True
            self.renderComplete.emit()

    def _paint_adjusted_slide(self, p: QPainter) -> bool:
        dpr = self.devicePixelRatioF()
        size = self.size() * dpr
        if self._frame is None or self._frame.size() != size:
            self._frame = QImage(size, QImage.Format.Format_RGB32)
            self._frame.setDevicePixelRatio(dpr)
        self._frame.fill(BACKGROUND)
        fp = QPainter(self._frame)
        complete = self._paint_slide(fp)
        fp.end()
        self.display_adjust.apply(self._frame)
        p.drawImage(0, 0, self._frame)
        return complete

    def set_display_adjust(self, adjust: DisplayAdjust) -> None:
        """View-only brightness/contrast of the slide (layers are drawn unchanged)."""
        self.display_adjust = adjust
        if adjust.is_identity:
            self._frame = None
        self.update()

    def _apply_l0_transform(self, p: QPainter) -> None:
        p.translate(self.width() / 2, self.height() / 2)
        p.scale(self.scale, self.scale)
        p.translate(-self.center.x(), -self.center.y())

    def _paint_slide(self, p: QPainter) -> bool:
        loader = self.loader
        assert loader is not None
        w, h = self.slide_size
        a = self.l0_to_widget(QPointF(0, 0))
        b = self.l0_to_widget(QPointF(w, h))
        slide_rect = QRectF(a, b)
        p.fillRect(slide_rect.intersected(QRectF(self.rect())), QColor(255, 255, 255))
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        thumb = loader.thumbnail
        if thumb is not None:
            vis = slide_rect.intersected(QRectF(self.rect()))
            if not vis.isEmpty():
                sx, sy = thumb.width() / slide_rect.width(), thumb.height() / slide_rect.height()
                src = QRectF(
                    (vis.left() - slide_rect.left()) * sx,
                    (vis.top() - slide_rect.top()) * sy,
                    vis.width() * sx,
                    vis.height() * sy,
                )
                p.drawImage(vis, thumb, src)
        level = self.target_level()
        wanted = self.visible_tiles(level)
        missing = [k for k in wanted if not loader.has(k)]
        if missing:
            # stand-ins: cached tiles of neighbouring levels under the missing area, coarsest first
            xs, ys, xe, ye = math.inf, math.inf, -math.inf, -math.inf
            for k in missing:
                x, y, tw, th = loader.tile_rect_l0(k)
                xs, ys, xe, ye = min(xs, x), min(ys, y), max(xe, x + tw), max(ye, y + th)
            order = list(range(min(self.source.level_count - 1, level + 4), level, -1))
            if level > 0:
                order.append(level - 1)  # finer tiles cached from before a zoom-out
            for lv in order:
                keys = loader.tiles_in_rect(lv, xs, ys, xe, ye)
                if len(keys) > 256:
                    continue
                for k in keys:
                    img = loader.get(k)
                    if img is not None:
                        p.drawImage(self._tile_widget_rect(k), img)
        for k in wanted:
            img = loader.get(k)
            if img is not None:
                p.drawImage(self._tile_widget_rect(k), img)
        self._last_wanted = frozenset(wanted)
        self._request(missing)
        return not missing

    def _request(self, missing: list[TileKey]) -> None:
        loader = self.loader
        if loader is None:
            return
        missing_set = frozenset(missing)
        if missing_set != self._last_requested or (missing and not loader.busy):
            self._last_requested = missing_set
            loader.request(missing)

    def request_visible(self) -> None:
        """Ask the loader for the missing visible tiles now (navigation calls it before paint)."""
        if self.loader is None:
            return
        wanted = self.visible_tiles()
        self._last_wanted = frozenset(wanted)
        self._request([k for k in wanted if not self.loader.has(k)])

    def _paint_layers(self, p: QPainter) -> None:
        ctx = PaintContext(self.visible_rect_l0(), self.scale, self.width(), self.height())
        for layer in self.layers:
            if not layer.visible or layer.opacity <= 0:
                continue
            p.save()
            self._apply_l0_transform(p)
            p.setOpacity(layer.opacity)
            layer.paint(p, ctx)
            p.restore()

    def magnification_text(self) -> str:
        """The one magnification readout (status bar and scale bar): ``"20×"``, ``"≈7.7×"``
        (estimated from mpp) or ``"zoom 12% (magnification unknown)"``."""
        return magnification_readout(self.scale, self.objective_power, self.mpp)[0]

    def magnification_tooltip(self) -> str:
        """How the readout is known, in a sentence."""
        return magnification_readout(self.scale, self.objective_power, self.mpp)[1]

    def scale_bar_label(self, target_px: float = 150.0) -> tuple[float, str]:
        """Scale bar length (screen px) and text (µm from mpp; level-0 px when uncalibrated)."""
        if self.mpp:
            um_per_screen_px = self.mpp[0] / self.scale
            length_um = nice_length(target_px * um_per_screen_px)
            return length_um / um_per_screen_px, format_length_um(length_um)
        l0_per_screen = 1.0 / self.scale
        length = nice_length(target_px * l0_per_screen)
        return length / l0_per_screen, f"{length:g} px (uncalibrated)"

    def _paint_scale_bar(self, p: QPainter) -> None:
        p.save()
        p.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        font = QFont(self.font())
        font.setPointSizeF(max(8.0, font.pointSizeF()))
        p.setFont(font)
        bar_px, label = self.scale_bar_label()
        label = f"{label}   {self.magnification_text()}"
        fm = p.fontMetrics()
        tw = fm.horizontalAdvance(label)
        pad = 6
        box = QRect(
            10,
            self.height() - 10 - (fm.height() + 16 + 2 * pad),
            int(max(bar_px, tw)) + 2 * pad,
            fm.height() + 16 + 2 * pad,
        )
        p.fillRect(box, QColor(255, 255, 255, 210))
        x0 = box.left() + pad
        yb = box.bottom() - pad - 4
        pen = QPen(QColor(180, 0, 0) if not self.mpp else QColor(0, 0, 0), 3)
        p.setPen(pen)
        p.drawLine(x0, yb, int(x0 + bar_px), yb)
        p.drawLine(x0, yb - 5, x0, yb + 2)
        p.drawLine(int(x0 + bar_px), yb - 5, int(x0 + bar_px), yb + 2)
        p.setPen(QColor(0, 0, 0) if self.mpp else QColor(160, 0, 0))
        p.drawText(x0, box.top() + pad + fm.ascent(), label)
        p.restore()

    # ----------------------------------------------------------------- input
    def set_tool(self, tool: Any) -> None:
        if self.tool is not None and hasattr(self.tool, "deactivate"):
            self.tool.deactivate()
        self.tool = tool
        if tool is not None and hasattr(tool, "activate"):
            tool.activate(self)
            self.setCursor(tool.cursor)
        else:
            self.unsetCursor()
        self.update()

    def _tool_call(self, name: str, ev: Any) -> bool:
        if self.tool is None or self.source is None:
            return False
        fn = getattr(self.tool, name, None)
        if fn is None:
            return False
        return bool(fn(ev, self))

    def mousePressEvent(self, ev: QMouseEvent) -> None:  # noqa: N802
        self.setFocus()
        self._right_press = None
        if ev.button() == Qt.MouseButton.MiddleButton or not self._tool_call("mouse_press", ev):
            if ev.button() in (Qt.MouseButton.LeftButton, Qt.MouseButton.MiddleButton):
                self._drag_pan = ev.position()
                self.setCursor(Qt.CursorShape.ClosedHandCursor)
            elif ev.button() == Qt.MouseButton.RightButton and self.source is not None:
                self._right_press = ev.position()

    def mouseMoveEvent(self, ev: QMouseEvent) -> None:  # noqa: N802
        pos = ev.position()
        if self.source is not None:
            pt = self.widget_to_l0(pos)
            w, h = self.slide_size
            inside = 0 <= pt.x() < w and 0 <= pt.y() < h
            self._cursor_l0 = pt if inside else None
            self.cursorMoved.emit(self._cursor_l0)
        if self._drag_pan is not None:
            d = pos - self._drag_pan
            self._drag_pan = pos
            self.pan_by(d.x(), d.y())
            return
        self._tool_call("mouse_move", ev)

    def mouseReleaseEvent(self, ev: QMouseEvent) -> None:  # noqa: N802
        if ev.button() == Qt.MouseButton.RightButton and self._right_press is not None:
            moved = ev.position() - self._right_press
            self._right_press = None
            if abs(moved.x()) + abs(moved.y()) < 6:
                self.contextMenuRequested.emit(
                    ev.position().toPoint(), self.widget_to_l0(ev.position())
                )
            return
        if self._drag_pan is not None:
            self._drag_pan = None
            if self.tool is not None:
                self.setCursor(self.tool.cursor)
            else:
                self.unsetCursor()
            return
        self._tool_call("mouse_release", ev)

    def mouseDoubleClickEvent(self, ev: QMouseEvent) -> None:  # noqa: N802
        if not self._tool_call("mouse_double_click", ev):
            self.mousePressEvent(ev)

    def leaveEvent(self, ev: Any) -> None:  # noqa: N802
        self.cursorMoved.emit(None)
        super().leaveEvent(ev)

    def contextMenuEvent(self, ev: QContextMenuEvent) -> None:  # noqa: N802
        # mouse right clicks are handled in mouseReleaseEvent (the tool may take them); the Menu
        # key asks at the cursor when it is over the view, else at the centre
        ev.accept()
        if ev.reason() != QContextMenuEvent.Reason.Mouse and self.source is not None:
            pos = ev.pos() if self.rect().contains(ev.pos()) else self.rect().center()
            self.contextMenuRequested.emit(pos, self.widget_to_l0(QPointF(pos)))

    def wheelEvent(self, ev: QWheelEvent) -> None:  # noqa: N802
        if self.source is None:
            return
        d = ev.angleDelta()
        steps = (d.y() or d.x()) / 120.0  # Shift+wheel arrives as horizontal on some systems
        if steps == 0:
            return
        shift = bool(ev.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        self.zoom_by(1.25**steps, ev.position(), overzoom=shift)

    def keyPressEvent(self, ev: QKeyEvent) -> None:  # noqa: N802
        if self._tool_call("key_press", ev):
            return
        k = ev.key()
        step = max(self.width(), self.height()) * 0.2
        if k in (Qt.Key.Key_Left, Qt.Key.Key_A):
            self.pan_by(step, 0)
        elif k in (Qt.Key.Key_Right, Qt.Key.Key_D):
            self.pan_by(-step, 0)
        elif k in (Qt.Key.Key_Up, Qt.Key.Key_W):
            self.pan_by(0, step)
        elif k in (Qt.Key.Key_Down, Qt.Key.Key_S):
            self.pan_by(0, -step)
        elif k in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.zoom_by(1.5)
        elif k == Qt.Key.Key_Minus:
            self.zoom_by(1 / 1.5)
        else:
            super().keyPressEvent(ev)

    def wait_complete_timer(self, callback: Any, interval_ms: int = 20) -> QTimer:
        """Poll until the view is complete, then call ``callback()`` once (screenshot mode)."""
        timer = QTimer(self)

        def check() -> None:
            if self.is_complete(with_thumbnail=True) and self._complete:
                timer.stop()
                callback()
            else:
                self.update()

        timer.timeout.connect(check)
        timer.start(interval_ms)
        return timer
