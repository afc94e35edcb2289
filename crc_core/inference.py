"""Prediction on whole slides: tissue -> windows -> batches -> probability grid and CAM heatmap.

:func:`predict` is a job generator (see :mod:`crc_core.jobs`): it yields a :class:`~crc_core.jobs.Progress`
after every batch, whose ``payload`` carries that batch (cells, probabilities, CAM tiles) so a viewer can
paint progressively, and it *returns* a :class:`Prediction`. Closing the generator cancels: reader
threads are stopped and nothing is written (``out=`` is written atomically only at the very end).

Frames and units. The result is a grid of cells; cell ``(r, c)`` is the square window whose level-0
top-left corner is ``origin + (c * stride, r * stride)`` and whose side is ``window`` level-0 pixels
(:class:`GridSpec`). Windows are cut at the checkpoint's scale: its ``mpp`` when both the checkpoint and
the slide have one, else its pyramid ``level`` (a warning says so when the slide has no mpp). The
``stride`` argument is in pixels *at that scale* (the unit of the checkpoint's ``patch_size``); it
defaults to the patch size (no overlap). Only whole windows inside the slide are cells. A cell is
predicted when its window is at least ``min_tissue`` tissue (mask from a low-resolution thumbnail,
:func:`crc_core.tissue.tissue_mask`) and, when regions are given, its centre lies in one of them.
Probabilities are NaN in cells not predicted. The CAM heatmap covers the grid's extent at
``stride / cam_step`` level-0 px per heatmap pixel; each window's map is ``cam_tile`` px square.

Threading. Windows are read and decoded by a small thread pool a few batches ahead of the model
(bounded queue), so reading overlaps compute; the model runs in the calling thread. On CUDA
out-of-memory the batch is halved and retried (a progress message says so).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from collections import deque
from collections.abc import Generator, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from crc_core.atomic import atomic_path
from crc_core.cam import HeatmapAccumulator
from crc_core.classes import ClassDef, ClassScheme
from crc_core.errors import CheckpointError, ClassSchemeError, ConfigError, CrcError, SlideError
from crc_core.jobs import Progress
from crc_core.preprocess import Transform, resample
from crc_core.runtime import Scorer, describe, resolve_device

__all__ = [
    "GridSpec",
    "LoadedModel",
    "Prediction",
    "PredictionError",
    "PredictionWarning",
    "load_model",
    "load_prediction",
    "map_scheme",
    "plan_grid",
    "predict",
    "resolve_device",
    "save_prediction",
]

PREDICTION_FORMAT = 1
#: Longest side of the CAM heatmap (pixels).
MAX_HEATMAP_PX = 4096
#: CAM heatmap pixels along one window side, when the heatmap size allows.
CAM_PX_PER_WINDOW = 16


class PredictionError(CrcError):
    """A prediction file cannot be read or written (not a prediction, damaged, newer format)."""


class PredictionWarning(UserWarning):
    """Something about a prediction the user should know (no mpp, classes mapped, level clamped)."""


# ----------------------------------------------------------------------------------------- model
@dataclass
class LoadedModel:
    """A classifier ready for prediction, with what is needed to cut its windows.

    ``arch`` is the registry name (``resnet50`` ...) or ``None`` for a generic module with
    ``features`` and a linear ``classifier`` (see :mod:`crc_core.cam`). ``patch_size`` is the window
    side in pixels at ``level`` or at ``mpp`` µm/px; windows are resized to ``input_size``.
    """

    model: nn.Module
    arch: str | None
    scheme: ClassScheme
    input_size: int
    patch_size: int
    level: int | None = None
    mpp: float | None = None
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    identity: dict[str, Any] = field(default_factory=dict)
    patch_known: bool = True  # False: the checkpoint does not record its patch size
    stain: Any = None  # crc_core.stain.StainNormalizer the model was trained with, or None


def _file_fingerprint(path: Path) -> str:
    mib = 1 << 20
    size = path.stat().st_size
    h = hashlib.sha256(f"{size}:".encode())
    with open(path, "rb") as fh:
        h.update(fh.read(mib))
        if size > mib:
            fh.seek(max(mib, size - mib))
            h.update(fh.read(mib))
    return h.hexdigest()


def load_model(
    checkpoint_or_model: str | os.PathLike[str] | dict[str, Any] | LoadedModel,
    device: torch.device | str = "cpu",
) -> LoadedModel:
    """A :class:`LoadedModel` from a checkpoint path, a dict from ``load_checkpoint`` or itself.

    Raises
    ------
    CheckpointError
        Anything wrong with the checkpoint (see :func:`crc_core.models.load_checkpoint`).
    """
    if isinstance(checkpoint_or_model, LoadedModel):
        checkpoint_or_model.model.to(device).eval()
        return checkpoint_or_model
    from crc_core.models import load_checkpoint, model_from_checkpoint

    identity: dict[str, Any] = {}
    if isinstance(checkpoint_or_model, dict):
        ckpt = checkpoint_or_model
    elif isinstance(checkpoint_or_model, (str, os.PathLike)):
        path = Path(checkpoint_or_model)
        ckpt = load_checkpoint(path, map_location="cpu")
        identity = {
            "checkpoint": str(path.resolve()),
            "name": path.stem,
            "fingerprint": _file_fingerprint(path),
        }
    else:
        raise CheckpointError(
            f"expected a checkpoint path, a loaded checkpoint or a LoadedModel, "
            f"got {type(checkpoint_or_model).__name__}"
        )
    from crc_core.stain import from_checkpoint

    stain = from_checkpoint(ckpt)
    model, meta = model_from_checkpoint(ckpt, device=device)
    identity.update({"arch": meta["arch"], "epoch": meta.get("epoch")})
    identity.setdefault("name", meta["arch"])
    input_size = int(meta["input_size"])
    patch = meta.get("patch_size")
    return LoadedModel(
        model=model,
        arch=meta["arch"],
        scheme=meta["scheme"],
        input_size=input_size,
        patch_size=int(patch) if isinstance(patch, int) and patch > 0 else input_size,
        level=meta.get("level") if isinstance(meta.get("level"), int) else None,
        mpp=float(meta["mpp"])
        if isinstance(meta.get("mpp"), (int, float)) and meta["mpp"] > 0
        else None,
        mean=tuple(float(v) for v in meta["mean"]),  # type: ignore[arg-type]
        std=tuple(float(v) for v in meta["std"]),  # type: ignore[arg-type]
        identity=identity,
        patch_known=isinstance(patch, int) and patch > 0,
        stain=stain,
    )


def map_scheme(
    model_scheme: ClassScheme, project_scheme: ClassScheme | None
) -> tuple[ClassScheme, str | None]:
    """The classes of a model's outputs expressed in the project's scheme.

    Each model class is matched to a project class by id, else by name (case-insensitive). When all
    match, the returned scheme has the project's ids, names and colours in the *model's* output order,
    and a message describes any renaming, reordering or project class the model cannot predict. When
    ``project_scheme`` is ``None`` or identical, the model's scheme is returned with no message.

    Raises
    ------
    ClassSchemeError
        A model class has no counterpart in the project (the checkpoint is refused).
    """
    if project_scheme is None:
        return model_scheme.copy(), None
    same = [(c.id, c.name.casefold()) for c in model_scheme] == [
        (c.id, c.name.casefold()) for c in project_scheme
    ]
    if same:
        return project_scheme.copy(), None
    mapped: list[ClassDef] = []
    missing: list[str] = []
    renamed: list[str] = []
    for c in model_scheme:
        p = next((q for q in project_scheme if q.id == c.id), None) or next(
            (q for q in project_scheme if q.name.casefold() == c.name.strip().casefold()), None
        )
        if p is None:
            missing.append(c.name)
            continue
        if p.name != c.name:
            renamed.append(f"{c.name} -> {p.name}")
        mapped.append(ClassDef(p.id, p.name, p.color, p.key, p.description))
    if missing:
        raise ClassSchemeError(
            f"the checkpoint's classes {', '.join(missing)} are not in the project's class scheme "
            f"({', '.join(project_scheme.names)}); add them to the project or use a checkpoint "
            f"trained on this scheme"
        )
    if len({c.id for c in mapped}) != len(mapped):
        raise ClassSchemeError(
            f"the checkpoint's classes ({', '.join(model_scheme.names)}) map onto the same project "
            f"class twice; the scheme cannot be mapped"
        )
    parts = [f"checkpoint classes ({', '.join(model_scheme.names)}) mapped to the project's scheme"]
    if renamed:
        parts.append("renamed " + ", ".join(renamed))
    unused = [q.name for q in project_scheme if q.id not in {c.id for c in mapped}]
    if unused:
        parts.append("never predicted: " + ", ".join(unused))
    return ClassScheme(mapped), "; ".join(parts)


# ------------------------------------------------------------------------------------------ grid
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

    def cell_at(self, x: float, y: float) -> tuple[int, int] | None:
        """The cell nearest level-0 point ``(x, y)`` whose window holds it (``None`` off the grid).

        With overlapping windows this is the cell whose stride-square around its centre holds the
        point (edge cells extend to their window's outer edges).
        """
        if self.rows == 0 or self.cols == 0:
            return None
        half = (self.window - self.stride) / 2
        c = min(max(math.floor((x - self.origin[0] - half) / self.stride), 0), self.cols - 1)
        r = min(max(math.floor((y - self.origin[1] - half) / self.stride), 0), self.rows - 1)
        cx, cy, w, h = self.cell_rect(r, c)
        if cx <= x < cx + w and cy <= y < cy + h:
            return (r, c)
        return None

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
    window = max(1, int(round(patch * ds)))
    read_size = max(1, int(round(window / slide.level_downsamples[level])))
    step_px = patch if stride is None else int(stride)
    if step_px <= 0:
        raise ConfigError(f"stride must be a positive number of pixels, got {stride}")
    step = max(1, int(round(step_px * ds)))
    gcols = (W - window) // step + 1 if W >= window else 0
    grows = (H - window) // step + 1 if H >= window else 0
    if gcols <= 0 or grows <= 0:
        raise SlideError(f"{name} ({W}x{H} px) is smaller than one window ({window} level-0 px)")
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


# ---------------------------------------------------------------------------------------- result
@dataclass
class Prediction:
    """A slide's prediction: probability grid, its geo-reference, the CAM heatmap and identities.

    Attributes
    ----------
    probs : (C, rows, cols) float32, NaN where not predicted
    selected : (rows, cols) bool, the cells that were to be predicted (tissue and regions)
    grid : :class:`GridSpec`
    scheme : the classes of the model's outputs (in the project's scheme when mapped)
    cam : (h, w) float32 heatmap in [0, 1] (NaN outside predicted windows) or ``None``
    cam_info : ``{"method", "class"}`` (class id, or ``None`` for each patch's predicted class)
    model, slide, resolution : identity and scale details (plain JSON)
    warnings : what the user was told while predicting
    """

    probs: np.ndarray
    selected: np.ndarray
    grid: GridSpec
    scheme: ClassScheme
    cam: np.ndarray | None = None
    cam_info: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    slide: dict[str, Any] = field(default_factory=dict)
    resolution: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    created: str = ""

    @property
    def predicted(self) -> np.ndarray:
        """(rows, cols) bool: cells with probabilities."""
        return (
            ~np.isnan(self.probs).any(axis=0)
            if self.probs.size
            else np.zeros(self.grid.shape, bool)
        )

    def class_map(self, threshold: float = 0.0) -> np.ndarray:
        """(rows, cols) int16 class index, -1 where not predicted or the top probability < ``threshold``."""
        out = np.full(self.grid.shape, -1, dtype=np.int16)
        ok = self.predicted
        if ok.any():
            p = self.probs[:, ok]
            idx = p.argmax(axis=0)
            keep = p.max(axis=0) >= threshold
            vals = np.where(keep, idx, -1)
            out[ok] = vals
        return out

    def confidence(self) -> np.ndarray:
        """(rows, cols) float32 top probability (NaN where not predicted)."""
        out = np.full(self.grid.shape, np.nan, dtype=np.float32)
        ok = self.predicted
        if ok.any():
            out[ok] = self.probs[:, ok].max(axis=0)
        return out

    def probabilities_at(self, x: float, y: float) -> dict[str, float] | None:
        """Class name -> probability of the cell at level-0 ``(x, y)``; ``None`` off the prediction."""
        cell = self.grid.cell_at(x, y)
        if cell is None or not self.predicted[cell]:
            return None
        return {c.name: float(self.probs[i, cell[0], cell[1]]) for i, c in enumerate(self.scheme)}


def save_prediction(pred: Prediction, path: str | os.PathLike[str]) -> Path:
    """Write ``pred`` as a compressed ``.npz`` atomically (plain arrays and JSON text; no pickles)."""
    meta = {
        "format": PREDICTION_FORMAT,
        "classes": pred.scheme.to_json(),
        "cam_info": pred.cam_info,
        "model": pred.model,
        "slide": pred.slide,
        "resolution": pred.resolution,
        "warnings": pred.warnings,
        "created": pred.created,
    }
    arrays = {
        "probs": pred.probs.astype(np.float32),
        "selected": pred.selected.astype(bool),
        "grid": pred.grid.to_array(),
        "cam": (pred.cam if pred.cam is not None else np.zeros((0, 0))).astype(np.float32),
        "colors": np.array(pred.scheme.colors, dtype=np.uint8).reshape(-1, 3),
        "meta": np.array(json.dumps(meta, default=_json_default)),
    }
    target = Path(path)
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return target


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def load_prediction(path: str | os.PathLike[str]) -> Prediction:
    """Read a ``prediction.npz`` (``allow_pickle=False``).

    Raises
    ------
    PredictionError
        Missing, not a prediction, damaged, or of a newer format.
    """
    p = Path(path)
    if not p.is_file():
        raise PredictionError(f"prediction file {p} not found")
    try:
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise PredictionError(f"{p} is not a prediction file ({exc})") from None
    need = {"probs", "selected", "grid", "cam", "meta"}
    if not need <= set(data):
        raise PredictionError(
            f"{p} is not a prediction file (missing {', '.join(sorted(need - set(data)))})"
        )
    try:
        meta = json.loads(str(data["meta"]))
        fmt = int(meta["format"])
        scheme = ClassScheme.from_json(meta["classes"], where=f"{p} classes")
        grid = GridSpec.from_array(data["grid"])
    except (ValueError, KeyError, TypeError, IndexError, ClassSchemeError) as exc:
        raise PredictionError(f"{p}: damaged prediction metadata ({exc})") from None
    if fmt > PREDICTION_FORMAT:
        raise PredictionError(
            f"{p} has prediction format {fmt}; this version reads "
            f"{PREDICTION_FORMAT} or older: update CRC Workbench"
        )
    probs = data["probs"].astype(np.float32)
    if probs.shape != (len(scheme), grid.rows, grid.cols):
        raise PredictionError(
            f"{p}: probability grid {probs.shape} does not match its "
            f"{len(scheme)} classes and {grid.rows}x{grid.cols} grid"
        )
    cam = data["cam"] if data["cam"].size else None
    return Prediction(
        probs=probs,
        selected=data["selected"].astype(bool),
        grid=grid,
        scheme=scheme,
        cam=cam,
        cam_info=meta.get("cam_info") or {},
        model=meta.get("model") or {},
        slide=meta.get("slide") or {},
        resolution=meta.get("resolution") or {},
        warnings=list(meta.get("warnings") or []),
        created=str(meta.get("created", "")),
    )


# ------------------------------------------------------------------------------------- execution
def make_scorer(lm: LoadedModel, device: torch.device, batch_size: int, amp: bool | None = None,
                tta: bool = False) -> Scorer:
    """The :class:`crc_core.runtime.Scorer` of a loaded model (shared with ``crc evaluate``); the
    checkpoint's stain normalisation is applied where windows are read (:func:`_read_windows`)."""
    return Scorer(lm.model, lm.arch, lm.mean, lm.std, device, batch_size, amp=amp, tta=tta)


def scale_statement(resolution: dict[str, Any], input_size: int | None = None) -> str:
    """One sentence on the scale a prediction's windows were cut at (from ``Prediction.resolution``).
    """
    r = resolution
    patch, level, ds = r.get("patch_size"), r.get("level"), float(r.get("downsample") or 1.0)
    into = f", resampled to {input_size} px" if input_size else ""
    if r.get("mode") == "mpp":
        return (f"windows of {patch} px at the model's {r.get('checkpoint_mpp'):g} µm/px (slide "
                f"{r.get('slide_mpp'):.4g} µm/px; read at level {level}{into})")
    why = ("the slide has no pixel size" if r.get("slide_mpp") is None
           else "the model's scale is unknown")
    return (f"windows of {patch} px at pyramid level {level} (downsample {ds:g}){into}: {why}, "
            f"so not at a physical scale")


def _stain_resolution(lm: LoadedModel) -> dict[str, Any]:
    """What the prediction states about stain normalisation (``resolution["stain"]``)."""
    if lm.stain is None:
        return {"method": "none", "statement": "no stain normalisation (the checkpoint has none)"}
    return {"method": lm.stain.method, "statement": lm.stain.statement("windows"),
            "counts": dict(lm.stain.counts), "normalizer": lm.stain.to_json()}


def _stain_notes(lm: LoadedModel) -> list[str]:
    """A warning when windows were passed through unnormalised (background, ink, unestimable)."""
    if lm.stain is None or not lm.stain.passed_through:
        return []
    return [lm.stain.statement("windows")]


def _read_windows(slide: Any, grid: GridSpec, cells: np.ndarray,
                  transform: Transform | None = None) -> np.ndarray:
    """(N, input, input, 3) uint8 windows of ``cells`` ((N, 2) rows/cols), resampled to the input
    size; ``transform`` (the stain normalisation) first, at the read resolution."""
    s, rs = grid.input_size, grid.read_size
    raw = np.empty((len(cells), rs, rs, 3), dtype=np.uint8)
    for i, (r, c) in enumerate(cells):
        x, y, _, _ = grid.cell_rect(int(r), int(c))
        raw[i] = slide.read_region((x, y), grid.level, (rs, rs))
    if transform is not None and len(cells):
        raw = transform(raw)
    if rs == s:
        return raw
    return np.stack([resample(a, s) for a in raw]) if len(cells) else np.empty((0, s, s, 3),
                                                                                  np.uint8)


def _slide_identity(slide: Any) -> dict[str, Any]:
    W, H = slide.dimensions
    mpp = slide.mpp
    return {
        "path": str(Path(str(slide.path)).resolve()),
        "name": Path(str(slide.path)).name,
        "fingerprint": slide.fingerprint(),
        "width": int(W),
        "height": int(H),
        "mpp": None if mpp is None else float((mpp[0] + mpp[1]) / 2),
    }


def predict(
    slide: Any,
    checkpoint_or_model: str | os.PathLike[str] | dict[str, Any] | LoadedModel,
    regions: Sequence[Any] | None = None,
    stride: int | None = None,
    cam: bool = False,
    batch_size: int = 32,
    device: str | torch.device = "auto",
    *,
    workers: int = 2,
    cam_class: str | int | None = None,
    cam_method: str = "cam",
    scheme: ClassScheme | None = None,
    tissue: bool = True,
    min_tissue: float = 0.25,
    amp: bool | None = None,
    out: str | os.PathLike[str] | None = None,
    patch_size: int | None = None,
    tta: bool = False,
) -> Generator[Progress, None, Prediction]:
    """Predict a slide window by window (a job generator; see module docstring).

    Parameters
    ----------
    slide
        A :class:`crc_core.slide.SlideReader` or a path (opened and closed here).
    checkpoint_or_model
        Checkpoint path, a dict from :func:`crc_core.models.load_checkpoint`, or a :class:`LoadedModel`.
    regions
        Shapely geometries or annotations (level-0); ``None``: the whole slide.
    stride
        Pixels between windows at the checkpoint's scale (default: the patch size).
    cam
        Also compute the CAM heatmap.
    batch_size
        Windows per forward pass (halved automatically on CUDA out-of-memory).
    device
        ``auto``, ``cpu`` or ``cuda[:N]``.
    workers
        Reader threads (windows are read up to ``2 * workers`` batches ahead).
    cam_class
        Class (id, name or index) whose CAM is drawn; ``None``: each window's predicted class.
    cam_method
        ``cam`` or ``gradcam``.
    scheme
        The project's class scheme: the checkpoint's classes are mapped onto it or refused
        (:func:`map_scheme`).
    tissue, min_tissue
        Skip windows with less than ``min_tissue`` tissue (set ``tissue=False`` to predict every window).
    amp
        Mixed precision on CUDA (default on there, never on the CPU).
    out
        When given, the result is saved there (``prediction.npz``) atomically once complete.
    patch_size
        Window side in pixels at the checkpoint's level or mpp, overriding the checkpoint's (needed
        for checkpoints trained on tile manifests, which do not record one).
    tta
        Average the eight flips and rotations of each window (8x the compute; see
        :mod:`crc_core.runtime`). CAM maps come from the unaugmented pass.

    Yields
    ------
    Progress
        ``payload`` is ``{"kind": "start", "grid", "selected", "classes"}`` first, then per batch
        ``{"kind": "batch", "grid", "cells" (N, 2) int32 rows/cols, "probs" (N, C) float32,
        "cam" (N, cam_tile, cam_tile) float32 or None}``.

    Returns
    -------
    Prediction
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if not 0.0 <= min_tissue <= 1.0:
        raise ConfigError(f"min_tissue must be in [0, 1], got {min_tissue}")
    dev = resolve_device(device)
    own_slide = False
    if isinstance(slide, (str, os.PathLike)):
        from crc_core.slide import open_slide

        slide = open_slide(slide)
        own_slide = True
    pool: ThreadPoolExecutor | None = None
    pending: deque[tuple[np.ndarray, Future[np.ndarray]]] = deque()
    try:
        yield Progress(0, None, "loading model")
        lm = load_model(checkpoint_or_model, dev)
        out_scheme, map_msg = map_scheme(lm.scheme, scheme)
        notes: list[str] = []
        if map_msg:
            notes.append(map_msg)
        cam_idx: int | None = None
        if cam_class is not None:
            if isinstance(cam_class, int):
                if not 0 <= cam_class < len(out_scheme):
                    raise ConfigError(
                        f"CAM class {cam_class} is out of range 0..{len(out_scheme) - 1}"
                    )
                cam_idx = cam_class
            else:
                cam_idx = out_scheme.index(cam_class)
        yield Progress(0, None, "finding tissue")
        plan = plan_grid(slide, lm, regions, stride, tissue, min_tissue, patch_size)
        notes.extend(plan.notes)
        for n in notes:
            warnings.warn(n, PredictionWarning, stacklevel=2)
        grid = plan.grid
        cells = np.argwhere(plan.selected).astype(np.int32)  # (N, 2) row-major
        total = int(len(cells))
        C = len(out_scheme)
        probs = np.full((C, grid.rows, grid.cols), np.nan, dtype=np.float32)
        heat = HeatmapAccumulator(grid.cam_shape) if cam else None
        runner = make_scorer(lm, dev, batch_size, amp, tta)
        if lm.stain is not None:
            lm.stain.reset_counts()
        yield Progress(
            0,
            total,
            "; ".join(notes) if notes else f"{total} windows to predict",
            {"kind": "start", "grid": grid, "selected": plan.selected, "classes": out_scheme},
        )
        batches = [cells[i : i + batch_size] for i in range(0, total, batch_size)]
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="crc-predict-read")
        ahead = 2 * workers
        nxt = 0
        done = 0
        t0 = time.perf_counter()
        while nxt < len(batches) or pending:
            while nxt < len(batches) and len(pending) < ahead:
                b = batches[nxt]
                pending.append((b, pool.submit(_read_windows, slide, grid, b, lm.stain)))
                nxt += 1
            b, fut = pending.popleft()
            imgs = fut.result()
            n_msgs = len(runner.messages)
            p, tiles = runner.run(imgs, cam, cam_idx, cam_method, grid.cam_tile, C)
            probs[:, b[:, 0], b[:, 1]] = p.T
            if heat is not None and tiles is not None:
                for (r, c), t in zip(b, tiles, strict=True):
                    heat.add(int(r) * grid.cam_step, int(c) * grid.cam_step, t)
            done += len(b)
            msg = "; ".join(runner.messages[n_msgs:]) or (
                f"{done / max(time.perf_counter() - t0, 1e-9):.1f} windows/s"
            )
            yield Progress(
                done,
                total,
                msg,
                {"kind": "batch", "grid": grid, "cells": b, "probs": p, "cam": tiles},
            )
        notes.extend(runner.messages)
        notes.extend(_stain_notes(lm))
        pred = Prediction(
            probs=probs,
            selected=plan.selected,
            grid=grid,
            scheme=out_scheme,
            cam=heat.result() if heat is not None else None,
            cam_info={
                "method": cam_method,
                "class": None if cam_idx is None else out_scheme.classes[cam_idx].id,
            }
            if cam
            else {},
            model={
                **lm.identity,
                "input_size": lm.input_size,
                "patch_size": lm.patch_size,
                "level": lm.level,
                "mpp": lm.mpp,
                "classes": lm.scheme.names,
            },
            slide=_slide_identity(slide),
            resolution={**plan.resolution, "scoring": describe(runner),
                        "stain": _stain_resolution(lm)},
            warnings=notes,
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        if out is not None:
            save_prediction(pred, out)
        return pred
    finally:
        for _, fut in pending:
            fut.cancel()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if own_slide:
            slide.close()
