"""Prediction on whole slides: tissue -> windows -> batches -> probability grid and CAM heatmap.

:func:`predict` is a job generator (see :mod:`crc_core.jobs`): it yields a :class:`~crc_core.jobs.Progress`
whose payload is :class:`~crc_core.jobs.PredictionStarted` before the first batch and
:class:`~crc_core.jobs.BatchPredicted` (cells, probabilities, CAM tiles) after every batch, so a viewer
can paint progressively, a :class:`~crc_core.jobs.JobWarning` per note the user should know (never a
Python warning), and it *returns* a :class:`Prediction`. Closing the generator cancels: reader
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

Backends. The model runs on PyTorch or ONNX Runtime (:mod:`crc_core.inference.backends`); ``auto``
picks ONNX Runtime on the CPU when it is installed. ``crc evaluate`` scores with the same scorer.

Modules: :mod:`~crc_core.inference.model` (checkpoint -> :class:`LoadedModel`, class mapping),
:mod:`~crc_core.inference.grid` (:class:`GridSpec`, :func:`plan_grid`, tissue),
:mod:`~crc_core.inference.backends` (:func:`make_scorer`), :mod:`~crc_core.inference.job`
(:func:`predict`) and :mod:`~crc_core.inference.result` (:class:`Prediction` and its file). The
public names are re-exported here.
"""

from __future__ import annotations

from crc_core.inference.backends import (
    BACKENDS,
    QUANTIZE,
    OnnxScorer,
    cache_dir,
    choose_backend,
    export_onnx,
    make_scorer,
)
from crc_core.inference.grid import (
    CAM_PX_PER_WINDOW,
    MAX_HEATMAP_PX,
    GridSpec,
    _Plan,
    _tissue_fraction_grid,
    plan_grid,
)
from crc_core.inference.job import _read_windows, predict, scale_statement
from crc_core.inference.model import LoadedModel, _file_fingerprint, load_model, map_scheme
from crc_core.inference.result import (
    PREDICTION_FORMAT,
    Prediction,
    PredictionError,
    load_prediction,
    save_prediction,
)
from crc_core.runtime import resolve_device

__all__ = [
    "BACKENDS",
    "CAM_PX_PER_WINDOW",
    "MAX_HEATMAP_PX",
    "PREDICTION_FORMAT",
    "QUANTIZE",
    "GridSpec",
    "LoadedModel",
    "OnnxScorer",
    "Prediction",
    "PredictionError",
    "cache_dir",
    "choose_backend",
    "export_onnx",
    "load_model",
    "load_prediction",
    "make_scorer",
    "map_scheme",
    "plan_grid",
    "predict",
    "resolve_device",
    "save_prediction",
    "scale_statement",
]
# Private names kept importable for the tools and benchmarks that use them.
_PRIVATE = (_Plan, _file_fingerprint, _read_windows, _tissue_fraction_grid)
