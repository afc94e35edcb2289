"""Prediction overlays: the class map and the CAM heatmap, both raster layers over the slide.

:class:`ClassMapLayer` paints one square per prediction cell in its class colour (hard edges). With
overlapping windows each square is the ``stride`` square centred on its window, so squares tile the
slide. Per-class visibility and a confidence threshold hide cells; :meth:`ClassMapLayer.probabilities_at`
answers hover queries. :class:`HeatmapLayer` paints the stitched CAM heatmap through a matplotlib
colour map (smooth), transparent where no window was predicted.

Both layers are filled progressively: :meth:`add_batch` takes the arrays of a
:class:`crc_core.jobs.BatchPredicted` of :func:`crc_core.inference.predict` (cells, probabilities,
CAM tiles). Re-rendering is coalesced
(at most every ``REDRAW_MS``) so painting never slows the GUI thread while a job streams batches in.
GUI thread only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import QObject, QTimer

from app.viewer.layers import RasterLayer
from crc_core.cam import HeatmapAccumulator
from crc_core.classes import ClassScheme
from crc_core.inference import GridSpec, Prediction

REDRAW_MS = 150
COLORMAPS = ("jet", "inferno", "viridis", "magma", "turbo")


class _Coalesced:
    """Calls ``fn`` once, at most every ``REDRAW_MS``, after one or more :meth:`request` calls."""

    def __init__(self, parent: QObject, fn: Any) -> None:
        self._timer = QTimer(parent)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(fn)

    def request(self) -> None:
        if not self._timer.isActive():
            self._timer.start()


class ClassMapLayer(RasterLayer):
    """The class of each prediction cell in its class colour.

    Parameters
    ----------
    name
        Layer name (shown in the Layers panel).
    grid, scheme
        The prediction's geo-reference and classes.
    probs
        ``(C, rows, cols)`` probabilities (NaN: not predicted); ``None`` starts empty (progressive).
    """

    def __init__(
        self,
        name: str,
        grid: GridSpec,
        scheme: ClassScheme,
        probs: np.ndarray | None = None,
        opacity: float = 0.45,
        parent: QObject | None = None,
    ) -> None:
        self.grid = grid
        self.scheme = scheme
        self.probs = (
            np.full((len(scheme), grid.rows, grid.cols), np.nan, dtype=np.float32)
            if probs is None
            else np.asarray(probs, dtype=np.float32).copy()
        )
        self.class_visible = [True] * len(scheme)
        self.threshold = 0.0
        shift = (grid.window - grid.stride) / 2
        super().__init__(
            name,
            self._render(),
            origin=(grid.origin[0] + shift, grid.origin[1] + shift),
            scale=float(grid.stride),
            opacity=opacity,
            smooth=False,
            parent=parent,
        )
        self._redraw = _Coalesced(self, self.refresh)

    @classmethod
    def from_prediction(cls, name: str, pred: Prediction, opacity: float = 0.45) -> ClassMapLayer:
        return cls(name, pred.grid, pred.scheme, pred.probs, opacity)

    def class_map(self) -> np.ndarray:
        """(rows, cols) int class index, -1 where hidden (not predicted, below threshold, toggled off)."""
        ok = ~np.isnan(self.probs).any(axis=0)
        out = np.full(ok.shape, -1, dtype=np.int64)
        if ok.any():
            p = self.probs[:, ok]
            idx = p.argmax(axis=0)
            keep = (p.max(axis=0) >= self.threshold) & np.array(self.class_visible)[idx]
            out[ok] = np.where(keep, idx, -1)
        return out

    def _render(self) -> np.ndarray:
        cmap = self.class_map()
        colors = np.zeros((len(self.scheme) + 1, 4), dtype=np.uint8)
        colors[:-1, :3] = np.array(self.scheme.colors, dtype=np.uint8).reshape(-1, 3)
        colors[:-1, 3] = 255
        return colors[cmap]  # index -1 -> the transparent last row

    def refresh(self) -> None:
        """Re-render the image from the probabilities and the display settings."""
        self.set_image(self._render())

    def add_batch(self, cells: np.ndarray, probs: np.ndarray) -> None:
        """Fill ``cells`` ((N, 2) rows/cols) with ``probs`` ((N, C)); the image follows shortly."""
        cells = np.asarray(cells)
        if len(cells):
            self.probs[:, cells[:, 0], cells[:, 1]] = np.asarray(probs, dtype=np.float32).T
            self._redraw.request()

    def set_threshold(self, value: float) -> None:
        self.threshold = float(value)
        self.refresh()

    def set_class_visible(self, index: int, visible: bool) -> None:
        self.class_visible[index] = bool(visible)
        self.refresh()

    def probabilities_at(self, x: float, y: float) -> dict[str, float] | None:
        """Class name -> probability of the cell under level-0 ``(x, y)``; ``None`` off the map."""
        cell = self.grid.cell_at(x, y)
        if cell is None:
            return None
        p = self.probs[:, cell[0], cell[1]]
        if np.isnan(p).any():
            return None
        return {c.name: float(p[i]) for i, c in enumerate(self.scheme)}


class HeatmapLayer(RasterLayer):
    """The stitched CAM heatmap through a colour map; transparent where nothing was predicted."""

    def __init__(
        self,
        name: str,
        grid: GridSpec,
        cam: np.ndarray | None = None,
        cmap: str = "jet",
        opacity: float = 0.5,
        parent: QObject | None = None,
    ) -> None:
        self.grid = grid
        self.cmap = cmap
        self._acc = HeatmapAccumulator(grid.cam_shape) if cam is None else None
        self.values = (
            np.full(grid.cam_shape, np.nan, dtype=np.float32)
            if cam is None
            else np.asarray(cam, dtype=np.float32)
        )
        super().__init__(
            name,
            self._render(),
            origin=grid.origin,
            scale=grid.cam_scale,
            opacity=opacity,
            smooth=True,
            parent=parent,
        )
        self._redraw = _Coalesced(self, self.refresh)

    def _render(self) -> np.ndarray:
        from matplotlib import colormaps

        v = self.values
        if v.size == 0:
            return np.zeros((1, 1, 4), dtype=np.uint8)
        rgba = (colormaps[self.cmap](np.nan_to_num(v, nan=0.0)) * 255).astype(np.uint8)
        rgba[..., 3] = np.where(np.isnan(v), 0, 255).astype(np.uint8)
        return rgba

    def refresh(self) -> None:
        if self._acc is not None:
            self.values = self._acc.result()
        self.set_image(self._render())

    def add_batch(self, cells: np.ndarray, tiles: np.ndarray | None) -> None:
        """Add the CAM tiles ``(N, s, s)`` of ``cells`` ((N, 2) rows/cols)."""
        if tiles is None or self._acc is None:
            return
        g = self.grid
        for (r, c), t in zip(np.asarray(cells), tiles, strict=True):
            self._acc.add(int(r) * g.cam_step, int(c) * g.cam_step, t)
        self._redraw.request()

    def show_values(self, values: np.ndarray, grid: GridSpec | None = None) -> None:
        """Paint ``values`` (a finished heatmap) instead, placed on ``grid`` when given."""
        self._acc = None
        self.values = np.asarray(values, dtype=np.float32)
        if grid is not None:
            self.grid = grid
        self.set_image(self._render(), origin=self.grid.origin, scale=self.grid.cam_scale)

    def set_colormap(self, name: str) -> None:
        if name not in COLORMAPS:
            raise ValueError(f"unknown colour map {name!r}; choose one of {', '.join(COLORMAPS)}")
        self.cmap = name
        self.set_image(self._render())
