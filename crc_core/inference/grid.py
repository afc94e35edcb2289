"""The prediction grid: window scale, cells, tissue selection (all lengths level-0 px unless named).

See :mod:`crc_core.inference` for the frames and units.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crc_core.errors import ConfigError, SlideError
from crc_core.inference.model import LoadedModel

#: Longest side of the CAM heatmap (pixels).
MAX_HEATMAP_PX = 4096
#: CAM heatmap pixels along one window side, when the heatmap size allows.
CAM_PX_PER_WINDOW = 16


@dataclass(frozen=True)
class GridSpec:
    """Geo-reference of a prediction grid (all lengths in level-0 pixels unless named otherwise).

    Attributes
    ----------
    origin : (x, y) level-0 top-left of cell (0, 0)
    stride : level-0 pixels between neighbouring cells
    window : level-0 side of each cell's window
    rows, cols : grid shape
    level : pyramid level the windows are read from
    read_size : window side in pixels of ``level``
    input_size : side the windows are resized to for the network
    cam_step : heatmap pixels per ``stride`` (heatmap pixel = ``stride / cam_step`` level-0 px)
    cam_tile : heatmap pixels per window side
    """

    origin: tuple[int, int]
    stride: int
    window: int
    rows: int
    cols: int
    level: int
    read_size: int
    input_size: int
    cam_step: int = 1
    cam_tile: int = 1

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.cols)

    @property
    def cam_scale(self) -> float:
        """Level-0 pixels per heatmap pixel."""
        return self.stride / self.cam_step

    @property
    def cam_shape(self) -> tuple[int, int]:
        if self.rows == 0 or self.cols == 0:
            return (0, 0)
        return (
            (self.rows - 1) * self.cam_step + self.cam_tile,
            (self.cols - 1) * self.cam_step + self.cam_tile,
        )

    def cell_rect(self, row: int, col: int) -> tuple[int, int, int, int]:
        """Level-0 ``(x, y, w, h)`` of cell ``(row, col)``'s window."""
        return (
            self.origin[0] + col * self.stride,
            self.origin[1] + row * self.stride,
            self.window,
            self.window,
        )

    def cell_centers(self) -> tuple[np.ndarray, np.ndarray]:
        """Level-0 centres ``(xs, ys)`` of all cells, each ``(rows, cols)`` float64."""
        cs = self.origin[0] + np.arange(self.cols) * self.stride + self.window / 2
        rs = self.origin[1] + np.arange(self.rows) * self.stride + self.window / 2
        xs, ys = np.meshgrid(cs, rs)
        return xs, ys

    def axis_cells(self, v: np.ndarray, axis: int) -> np.ndarray:
        """Cell index along ``axis`` (0: rows, from y; 1: columns, from x) of level-0 coordinates
        ``v``: the cell whose stride-square around its centre holds the coordinate (edge cells
        extend to their window's outer edges), ``-1`` where no window holds it."""
        origin = self.origin[1] if axis == 0 else self.origin[0]
        n = self.rows if axis == 0 else self.cols
        v = np.asarray(v, dtype=np.float64)
        half = (self.window - self.stride) / 2
        i = np.clip(np.floor((v - origin - half) / self.stride).astype(np.int64), 0, max(n - 1, 0))
        inside = (v >= origin + i * self.stride) & (v < origin + i * self.stride + self.window)
        return np.where(inside & (n > 0), i, -1)

    def cells_at(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised :meth:`cell_at`: ``(rows, cols)`` of level-0 points, both ``-1`` off the
        grid. The one rule for "which cell is here" (the viewer's hover, region results, the CLI's
        overlay images)."""
        r, c = self.axis_cells(ys, 0), self.axis_cells(xs, 1)
        off = (r < 0) | (c < 0)
        return np.where(off, -1, r), np.where(off, -1, c)

    def cell_at(self, x: float, y: float) -> tuple[int, int] | None:
        """The cell nearest level-0 point ``(x, y)`` whose window holds it (``None`` off the grid).

        With overlapping windows this is the cell whose stride-square around its centre holds the
        point (edge cells extend to their window's outer edges).
        """
        r, c = self.cells_at(np.array([x]), np.array([y]))
        return None if r[0] < 0 else (int(r[0]), int(c[0]))

    def to_array(self) -> np.ndarray:
        return np.array(
            [
                self.origin[0],
                self.origin[1],
                self.stride,
                self.window,
                self.rows,
                self.cols,
                self.level,
                self.read_size,
                self.input_size,
                self.cam_step,
                self.cam_tile,
            ],
            dtype=np.int64,
        )

    @classmethod
    def from_array(cls, a: np.ndarray) -> GridSpec:
        v = [int(x) for x in a]
        return cls((v[0], v[1]), *v[2:])


@dataclass
class _Plan:
    grid: GridSpec
    selected: np.ndarray  # (rows, cols) bool: cells to predict
    resolution: dict[str, Any]
    notes: list[str]


def _geometries(regions: Iterable[Any]) -> list[Any]:
    from shapely.geometry.base import BaseGeometry

    out = []
    for r in regions:
        g = getattr(r, "geometry", r)
        if not isinstance(g, BaseGeometry):
            raise ConfigError(
                f"a region must be a shapely geometry or an annotation, got {type(r).__name__}"
            )
        if not g.is_empty:
            out.append(g)
    return out


def _window_level(slide: Any, lm: LoadedModel, name: str, notes: list[str]
                  ) -> tuple[int, float, str]:
    """Pyramid level, its downsample and the mode (``mpp`` or ``level``) windows are cut at;
    what the user should know is appended to ``notes``."""
    if lm.mpp is not None and slide.mpp is not None:
        slide_mpp = (slide.mpp[0] + slide.mpp[1]) / 2
        ds = lm.mpp / slide_mpp
        level = slide.best_level_for_downsample(ds)
        mode = "mpp"
    else:
        level = lm.level if lm.level is not None else 0
        if level >= slide.level_count:
            notes.append(
                f"{name}: the checkpoint's level {level} does not exist (levels "
                f"0..{slide.level_count - 1}); using level {slide.level_count - 1}"
            )
            level = slide.level_count - 1
        ds = float(slide.level_downsamples[level])
        mode = "level"
        if slide.mpp is None:
            notes.append(
                f"{name} has no mpp: windows are cut at pyramid level {level} (downsample "
                f"{ds:g}) with the checkpoint's patch size, not at a physical scale"
                + (f" (the checkpoint was trained at {lm.mpp:g} µm/px)" if lm.mpp else "")
                + "; set the slide's mpp to predict at the trained scale"
            )
    return int(level), ds, mode


def _too_small(name: str, w: int, h: int, window: int, slide: Any, lm: LoadedModel,
               mode: str) -> str:
    """The refusal of an image smaller than one window, in µm when the scale is known, with the
    way to score such tiles."""
    if mode == "mpp":
        um = (slide.mpp[0] + slide.mpp[1]) / 2
        return (f"{name} ({w}x{h} px, {w * um:.0f}x{h * um:.0f} µm) is smaller than one window "
                f"({window} px, {window * um:.0f} µm at the model's {lm.mpp:g} µm/px); score "
                f"tiles this small with crc evaluate (it mirrors them to fill the window and "
                f"says so)")
    return f"{name} ({w}x{h} px) is smaller than one window ({window} level-0 px)"


def plan_grid(
    slide: Any,
    lm: LoadedModel,
    regions: Sequence[Any] | None = None,
    stride: int | None = None,
    tissue: bool = True,
    min_tissue: float = 0.25,
    patch_size: int | None = None,
) -> _Plan:
    """Window scale, grid and the cells to predict (see module docstring).

    ``patch_size`` overrides the checkpoint's patch size (pixels at its level or mpp).
    """
    notes: list[str] = []
    if patch_size is not None and int(patch_size) <= 0:
        raise ConfigError(f"patch size must be a positive number of pixels, got {patch_size}")
    patch = int(patch_size) if patch_size is not None else int(lm.patch_size)
    W, H = slide.dimensions
    name = Path(str(slide.path)).name
    if patch_size is None and not lm.patch_known:
        notes.append(
            f"the checkpoint does not record its patch size: windows are {patch} px (its input "
            f"size); set the patch size to that of the training patches if it differed"
        )
    level, ds, mode = _window_level(slide, lm, name, notes)
    window = max(1, int(round(patch * ds)))
    read_size = max(1, int(round(window / slide.level_downsamples[level])))
    step_px = patch if stride is None else int(stride)
    if step_px <= 0:
        raise ConfigError(f"stride must be a positive number of pixels, got {stride}")
    step = max(1, int(round(step_px * ds)))
    gcols = (W - window) // step + 1 if W >= window else 0
    grows = (H - window) // step + 1 if H >= window else 0
    if gcols <= 0 or grows <= 0:
        raise SlideError(_too_small(name, W, H, window, slide, lm, mode))
    c0, c1, r0, r1 = 0, gcols - 1, 0, grows - 1
    union = None
    if regions is not None:
        import shapely

        geoms = _geometries(regions)
        if not geoms:
            raise ConfigError("no region to predict (the region list is empty)")
        union = shapely.union_all(geoms)
        minx, miny, maxx, maxy = union.bounds
        half = window / 2
        c0 = max(0, math.ceil((minx - half) / step))
        c1 = min(gcols - 1, math.floor((maxx - half) / step))
        r0 = max(0, math.ceil((miny - half) / step))
        r1 = min(grows - 1, math.floor((maxy - half) / step))
        if c1 < c0 or r1 < r0:
            raise ConfigError(
                "the regions hold no whole window inside the slide; draw a larger region"
            )
    rows, cols = r1 - r0 + 1, c1 - c0 + 1
    cam_step = max(1, int(round(CAM_PX_PER_WINDOW * step / window)))
    cam_step = min(cam_step, max(1, MAX_HEATMAP_PX // max(rows, cols)))
    cam_tile = max(1, int(round(window * cam_step / step)))
    grid = GridSpec(
        (c0 * step, r0 * step),
        step,
        window,
        rows,
        cols,
        int(level),
        read_size,
        int(lm.input_size),
        cam_step,
        cam_tile,
    )
    selected = np.ones((rows, cols), dtype=bool)
    if union is not None:
        import shapely

        xs, ys = grid.cell_centers()
        selected &= shapely.contains_xy(union, xs, ys)
    if tissue:
        selected &= _tissue_fraction_grid(slide, grid) >= min_tissue
    resolution = {
        "mode": mode,
        "level": int(level),
        "downsample": float(ds),
        "slide_mpp": None if slide.mpp is None else float((slide.mpp[0] + slide.mpp[1]) / 2),
        "checkpoint_mpp": lm.mpp,
        "checkpoint_level": lm.level,
        "patch_size": patch,
        "stride_px": step_px,
        "min_tissue": float(min_tissue) if tissue else None,
    }
    return _Plan(grid, selected, resolution, notes)


def _tissue_fraction_grid(slide: Any, grid: GridSpec) -> np.ndarray:
    """Tissue fraction of every cell's window, from a thumbnail's tissue mask (summed-area table)."""
    from crc_core.tissue import tissue_mask

    W, H = slide.dimensions
    max_px = int(min(4096, max(1024, math.ceil(4 * max(W, H) / grid.window))))
    thumb = slide.thumbnail(max_px)
    mask = tissue_mask(thumb)
    th, tw = mask.shape
    sx, sy = tw / W, th / H
    sat = np.zeros((th + 1, tw + 1), dtype=np.int64)
    sat[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    xs = grid.origin[0] + np.arange(grid.cols) * grid.stride
    ys = grid.origin[1] + np.arange(grid.rows) * grid.stride
    x0 = np.clip(np.floor(xs * sx).astype(int), 0, tw - 1)
    x1 = np.clip(np.ceil((xs + grid.window) * sx).astype(int), x0 + 1, tw)
    y0 = np.clip(np.floor(ys * sy).astype(int), 0, th - 1)
    y1 = np.clip(np.ceil((ys + grid.window) * sy).astype(int), y0 + 1, th)
    Y0, X0 = np.meshgrid(y0, x0, indexing="ij")
    Y1, X1 = np.meshgrid(y1, x1, indexing="ij")
    total = sat[Y1, X1] - sat[Y0, X1] - sat[Y1, X0] + sat[Y0, X0]
    return total / ((Y1 - Y0) * (X1 - X0))

