"""A slide's prediction (:class:`Prediction`) and its file (``prediction.npz``, no pickles)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crc_core.atomic import atomic_path
from crc_core.classes import ClassScheme
from crc_core.errors import ClassSchemeError, CrcError
from crc_core.inference.grid import GridSpec

PREDICTION_FORMAT = 1


class PredictionError(CrcError):
    """A prediction file cannot be read or written (not a prediction, damaged, newer format)."""


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

