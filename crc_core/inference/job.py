"""The prediction job: windows read in threads a few batches ahead, scored, stitched.

See :mod:`crc_core.inference` for frames, units and threading.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crc_core.cam import HeatmapAccumulator
from crc_core.classes import ClassScheme
from crc_core.errors import ConfigError
from crc_core.inference.backends import make_scorer
from crc_core.inference.grid import GridSpec, plan_grid
from crc_core.inference.model import LoadedModel, load_model, map_scheme
from crc_core.inference.result import Prediction, save_prediction
from crc_core.jobs import BatchPredicted, Event, JobWarning, PredictionStarted, Progress
from crc_core.preprocess import Transform, resample
from crc_core.runtime import Scorer, describe, resolve_device


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
    backend: str = "auto",
    threads: int = 0,
    quantize: str = "none",
) -> Generator[Event, None, Prediction]:
    """Predict a slide window by window (a job generator; see module docstring).

    Parameters
    ----------
    slide
        A :class:`crc_core.slide.SlideReader` or a path (opened and closed here).
    checkpoint_or_model
        Checkpoint path, a dict from :func:`crc_core.models.load_checkpoint`, or a
        :class:`LoadedModel`.
    regions
        Shapely geometries or annotations (level-0); ``None``: the whole slide.
    stride, cam
        Pixels between windows at the checkpoint's scale (default: the patch size); also compute
        the CAM heatmap.
    batch_size
        Windows per forward pass (halved automatically on CUDA out-of-memory).
    device, workers
        ``auto``, ``cpu`` or ``cuda[:N]``; reader threads (up to ``2 * workers`` batches ahead).
    cam_class, cam_method
        Class (id, name or index) whose CAM is drawn (``None``: each window's predicted class);
        ``cam`` or ``gradcam``.
    scheme
        The project's class scheme: the checkpoint's classes are mapped onto it or refused
        (:func:`map_scheme`).
    tissue, min_tissue
        Skip windows with less than ``min_tissue`` tissue (``tissue=False``: predict every window).
    amp, out
        Mixed precision on CUDA (default on there, never on the CPU); when given, the result is
        saved there (``prediction.npz``) atomically once complete.
    patch_size
        Window side in pixels at the checkpoint's level or mpp, overriding the checkpoint's (needed
        for checkpoints trained on tile manifests, which do not record one).
    tta
        Average the eight flips and rotations of each window (8x the compute; see
        :mod:`crc_core.runtime`). CAM maps come from the unaugmented pass.
    backend, threads, quantize
        ``auto``, ``torch`` or ``onnx``; CPU threads of the model (0: default); ``int8``
        quantisation (onnx only). See :mod:`crc_core.inference.backends`.

    Yields
    ------
    Progress, JobWarning
        Payload :class:`~crc_core.jobs.PredictionStarted` once, then
        :class:`~crc_core.jobs.BatchPredicted` per batch; a :class:`~crc_core.jobs.JobWarning` per
        note (no pixel size, classes mapped, a fallback, OOM retries, windows unnormalised), as it
        arises (:attr:`Prediction.warnings` keeps them all). Returns the :class:`Prediction`.
    """
    _check_options(batch_size, workers, min_tissue)
    dev = resolve_device(device)
    own_slide = isinstance(slide, (str, os.PathLike))
    if own_slide:
        slide = _open_slide(slide)
    try:
        run, plan, notes = yield from _setup(
            slide, checkpoint_or_model, dev, scheme, cam, cam_class, cam_method,
            (regions, stride, tissue, min_tissue, patch_size),
            (batch_size, amp, tta, backend, threads, quantize))
        cells = np.argwhere(plan.selected).astype(np.int32)  # (N, 2) row-major
        yield Progress(
            0, len(cells),
            "; ".join(notes + [f"{len(cells)} windows to predict with "
                               f"{run.scorer.backend_statement}"]),
            PredictionStarted(plan.grid, plan.selected, run.scheme),
        )
        yield from _stream(slide, run, cells, batch_size, workers)
        notes.extend(run.scorer.messages)
        for note in _stain_notes(run.lm):
            notes.append(note)
            yield JobWarning(note)
        pred = _assemble(run, plan, slide, notes)
        if out is not None:
            save_prediction(pred, out)
        return pred
    finally:
        if own_slide:
            slide.close()


def _open_slide(path: Any) -> Any:
    from crc_core.slide import open_slide

    return open_slide(path)


def _check_options(batch_size: int, workers: int, min_tissue: float) -> None:
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if not 0.0 <= min_tissue <= 1.0:
        raise ConfigError(f"min_tissue must be in [0, 1], got {min_tissue}")


def _setup(slide: Any, source: Any, dev: torch.device, scheme: ClassScheme | None, cam: bool,
           cam_class: str | int | None, cam_method: str, grid_args: tuple[Any, ...],
           scorer_args: tuple[Any, ...]) -> Generator[Event, None, tuple[_Run, Any, list[str]]]:
    """Model, class mapping, grid and scorer of a prediction; the notes the user is told."""
    yield Progress(0, None, "loading model")
    lm = load_model(source, dev)
    out_scheme, map_msg = map_scheme(lm.scheme, scheme)
    notes = [map_msg] if map_msg else []
    cam_idx = _cam_index(cam_class, out_scheme)
    yield Progress(0, None, "finding tissue")
    plan = plan_grid(slide, lm, *grid_args)
    notes.extend(plan.notes)
    batch_size, amp, tta, backend, threads, quantize = scorer_args
    yield Progress(0, None, f"preparing the {backend} backend")
    scorer = make_scorer(lm, dev, batch_size, amp, tta, backend, threads, quantize)
    if scorer.fallback:
        notes.append(scorer.fallback)
    yield from map(JobWarning, notes)
    run = _Run(lm, scorer, plan.grid, out_scheme, cam, cam_idx, cam_method)
    return run, plan, notes


def _cam_index(cam_class: str | int | None, scheme: ClassScheme) -> int | None:
    """Index of the CAM class in the output scheme (``None``: each window's predicted class)."""
    if cam_class is None:
        return None
    if isinstance(cam_class, int):
        if not 0 <= cam_class < len(scheme):
            raise ConfigError(f"CAM class {cam_class} is out of range 0..{len(scheme) - 1}")
        return cam_class
    return scheme.index(cam_class)


@dataclass
class _Run:
    """The state of one prediction while its batches are scored."""

    lm: LoadedModel
    scorer: Scorer
    grid: GridSpec
    scheme: ClassScheme  # of the outputs (the project's when mapped)
    cam: bool
    cam_idx: int | None
    cam_method: str

    def __post_init__(self) -> None:
        g = self.grid
        self.n_classes = len(self.scheme)
        self.probs = np.full((self.n_classes, g.rows, g.cols), np.nan, dtype=np.float32)
        self.heat = HeatmapAccumulator(g.cam_shape) if self.cam else None
        if self.lm.stain is not None:
            self.lm.stain.reset_counts()

    def score(self, b: np.ndarray, imgs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Score cells ``b`` ((N, 2) rows/cols) from their windows; fill the grid and heatmap."""
        g = self.grid
        p, tiles = self.scorer.run(imgs, self.cam, self.cam_idx, self.cam_method, g.cam_tile,
                                   self.n_classes)
        self.probs[:, b[:, 0], b[:, 1]] = p.T
        if self.heat is not None and tiles is not None:
            for (r, c), t in zip(b, tiles, strict=True):
                self.heat.add(int(r) * g.cam_step, int(c) * g.cam_step, t)
        return p, tiles


def _stream(slide: Any, run: _Run, cells: np.ndarray, batch_size: int, workers: int
            ) -> Generator[Event, None, None]:
    """Read windows in ``workers`` threads up to ``2 * workers`` batches ahead and score them in
    order; a progress event per batch (and a warning per new message of the scorer: an
    out-of-memory retry). Closing the generator stops the readers."""
    total = len(cells)
    batches = [cells[i : i + batch_size] for i in range(0, total, batch_size)]
    pending: deque[tuple[np.ndarray, Future[np.ndarray]]] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="crc-predict-read")
    nxt = done = 0
    t0 = time.perf_counter()
    try:
        while nxt < len(batches) or pending:
            while nxt < len(batches) and len(pending) < 2 * workers:
                b = batches[nxt]
                pending.append((b, pool.submit(_read_windows, slide, run.grid, b, run.lm.stain)))
                nxt += 1
            b, fut = pending.popleft()
            n_msgs = len(run.scorer.messages)
            p, tiles = run.score(b, fut.result())
            done += len(b)
            yield from map(JobWarning, run.scorer.messages[n_msgs:])
            msg = "; ".join(run.scorer.messages[n_msgs:]) or (
                f"{done / max(time.perf_counter() - t0, 1e-9):.1f} windows/s "
                f"({run.scorer.backend_statement})")
            yield Progress(done, total, msg, BatchPredicted(run.grid, b, p, tiles))
    finally:
        for _, fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _assemble(run: _Run, plan: Any, slide: Any, notes: list[str]) -> Prediction:
    """The :class:`Prediction` of a finished run."""
    lm, scheme = run.lm, run.scheme
    return Prediction(
        probs=run.probs,
        selected=plan.selected,
        grid=plan.grid,
        scheme=scheme,
        cam=run.heat.result() if run.heat is not None else None,
        cam_info={"method": run.cam_method,
                  "class": None if run.cam_idx is None else scheme.classes[run.cam_idx].id}
        if run.cam else {},
        model={**lm.identity, "input_size": lm.input_size, "patch_size": lm.patch_size,
               "level": lm.level, "mpp": lm.mpp, "classes": lm.scheme.names},
        slide=_slide_identity(slide),
        resolution={**plan.resolution, "scoring": describe(run.scorer),
                    "stain": _stain_resolution(lm)},
        warnings=notes,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
