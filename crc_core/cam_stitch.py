"""One continuous CAM heatmap from per-window CAMs, and the CAM of another class after a prediction.

A prediction's heatmap (:attr:`crc_core.inference.Prediction.cam`) holds each window's CAM
scaled to its own maximum and overlap-averaged on a common grid (heatmap pixels,
``GridSpec.cam_scale`` level-0 px each): every window has its own hotspot, so the slide looks like a
patchwork. :func:`smooth_cam` weights each window's map by the window's probability of the
explained class (the predicted class when none was chosen), so windows that do not show the class
fade, then blurs it with a NaN-aware Gaussian (``sigma`` in windows, half a window by default;
scipy) and rescales it to [0, 1]: one continuous map of where the class is. Pixels outside predicted
windows stay NaN.

:func:`class_cam_job` computes the CAM of a chosen class on the cells a prediction predicted, by
running :func:`crc_core.inference.predict` again on exactly those cells (tiny regions at their
centres, no tissue filter) with ``cam_class`` set; the model is loaded once per checkpoint and kept
in the caller's ``cache``. Qt-free.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from crc_core.cam import HeatmapAccumulator
from crc_core.errors import CheckpointError
from crc_core.jobs import Progress

#: Gaussian sigma of the smoothed heatmap, in windows.
SMOOTH_SIGMA_WINDOWS = 0.5


def class_weight_grid(pred: Any, class_index: int | None) -> np.ndarray:
    """(rows, cols) each predicted cell's probability of ``class_index`` (its top probability when
    ``None``); NaN where not predicted."""
    if class_index is None:
        return pred.confidence()
    out = np.full(pred.grid.shape, np.nan, dtype=np.float32)
    ok = pred.predicted
    out[ok] = pred.probs[class_index][ok]
    return out


def _weights_on_heatmap(pred: Any, weights: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The per-cell weights painted on the heatmap grid (overlapping windows averaged)."""
    g = pred.grid
    acc = HeatmapAccumulator(shape)
    for r, c in np.argwhere(~np.isnan(weights)):
        acc.add(int(r) * g.cam_step, int(c) * g.cam_step,
                np.full((g.cam_tile, g.cam_tile), weights[r, c], dtype=np.float32))
    return acc.result()


def smooth_cam(pred: Any, cam: np.ndarray | None = None, class_index: int | None = None,
               sigma_windows: float = SMOOTH_SIGMA_WINDOWS) -> np.ndarray:
    """The stitched, smoothed heatmap of ``cam`` (default ``pred.cam``), shape of ``cam``, in
    [0, 1], NaN outside predicted windows (see module docstring)."""
    from scipy.ndimage import gaussian_filter

    heat = pred.cam if cam is None else cam
    if heat is None or heat.size == 0:
        return np.zeros((0, 0), dtype=np.float32)
    heat = np.asarray(heat, dtype=np.float32)
    w = _weights_on_heatmap(pred, class_weight_grid(pred, class_index), heat.shape)
    valid = ~np.isnan(heat)
    v = np.where(valid, heat * np.nan_to_num(w, nan=0.0), 0.0).astype(np.float32)
    sigma = max(0.5, sigma_windows * pred.grid.cam_tile)
    num = gaussian_filter(v, sigma, mode="constant")
    den = gaussian_filter(valid.astype(np.float32), sigma, mode="constant")
    out = np.full(heat.shape, np.nan, dtype=np.float32)
    out[valid] = num[valid] / np.maximum(den[valid], 1e-6)
    top = float(np.nanmax(out)) if valid.any() else 0.0
    if top > 0:
        out[valid] /= top
    return out


def _centre_regions(pred: Any) -> list[Any]:
    """A tiny square at the centre of each predicted cell: predict() selects exactly those cells."""
    from shapely.geometry import box

    xs, ys = pred.grid.cell_centers()
    ok = pred.predicted
    return [box(x - 1, y - 1, x + 1, y + 1) for x, y in zip(xs[ok], ys[ok], strict=True)]


def class_cam_job(slide: Any, pred: Any, class_id: str | None, cache: dict[str, Any],
                  device: str = "auto", batch_size: int = 16) -> Generator[Progress, None, Any]:
    """The prediction re-run on its own cells with the CAM of ``class_id`` (``None``: each window's
    predicted class); returns the new :class:`~crc_core.inference.Prediction` (its ``cam``).

    Raises
    ------
    CheckpointError
        The prediction does not name its checkpoint, or the file is gone.
    """
    from crc_core.inference import load_model, predict

    path = pred.model.get("checkpoint")
    if not path or not Path(path).is_file():
        raise CheckpointError(f"the model of this prediction ({path or 'not recorded'}) is not "
                              f"available; predict again to compute another class's CAM")
    if path not in cache:
        yield Progress(0, None, "loading the model")
        cache.clear()  # one model at a time
        cache[path] = load_model(path)
    res = pred.resolution
    return (yield from predict(
        slide, cache[path], regions=_centre_regions(pred), stride=res.get("stride_px"), cam=True,
        batch_size=batch_size, device=device, cam_class=class_id, tissue=False,
        scheme=pred.scheme, patch_size=res.get("patch_size")))
