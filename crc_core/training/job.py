"""The ``fit`` job: prepare, then per epoch train, validate and checkpoint (phases joined with
``yield from``), then the summary."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from crc_core.atomic import atomic_write_text
from crc_core.data import TileTable
from crc_core.distributed import DistInfo, init_distributed
from crc_core.image_scale import table_stated
from crc_core.jobs import EpochEnded, Event, Progress, with_warnings
from crc_core.models import get_spec
from crc_core.preprocess import RESAMPLING
from crc_core.runtime import resolve_device
from crc_core.stain import from_checkpoint
from crc_core.training.checkpoints import restore, resume_config, save_epoch
from crc_core.training.config import TrainConfig, lr_at, validate_config
from crc_core.training.data import (
    load_data,
    prepare_batches,
    record_split,
    resolve_balance,
    scale_of,
    uniform_tile_size,
)
from crc_core.training.loop import train_epoch, validate
from crc_core.training.model import build_run_model
from crc_core.training.state import TrainingRun


def _quiet(msg: str) -> None:
    """The ``warn`` of every rank but 0 under ``torchrun``."""


def fit(
    data: str | Path | TileTable,
    out: str | Path,
    config: TrainConfig,
    resume: bool = False,
) -> Generator[Event, None, dict[str, Any]]:
    """Train ``config.arch`` on ``data`` into the run folder ``out`` (a job generator).

    Parameters
    ----------
    data
        Dataset folder, CSV manifest (with ``config.data`` column options) or a loaded table.
    out
        Run folder: ``last.pt``, ``best.pt``, ``history.csv``, ``config.json``, ``split.csv``,
        ``summary.json``.
    config
        Options (see :func:`make_config`).
    resume
        Continue from ``out/last.pt`` (same architecture and classes; the stored configuration is
        used, except ``epochs``, ``device``, ``workers`` and ``compile`` which may change).

    Yields
    ------
    Progress, JobWarning
        Progress per batch; after each epoch one whose payload is
        :class:`~crc_core.jobs.EpochEnded` (the history row). A :class:`~crc_core.jobs.JobWarning`
        per non-fatal problem (skipped images, OOM retries, no validation), each once.

    Returns
    -------
    dict
        Run summary: paths, epochs, best epoch and validation accuracy, history, skipped images.
    """
    return (yield from with_warnings(lambda warn: _fit(data, Path(out), config, resume, warn)))


def _fit(data: str | Path | TileTable, out: Path, config: TrainConfig, resume: bool,
         warn_fn: Callable[[str], None]) -> Generator[Progress, None, dict[str, Any]]:
    """:func:`fit`, its warnings passed to ``warn_fn``."""
    cfg, ckpt = resume_config(config, out, resume)
    validate_config(cfg)
    info = init_distributed(cfg.device)
    if info.world > 1 and not info.main:
        warn_fn = _quiet  # one set of messages, from rank 0
    try:
        run = yield from _prepare(data, out, cfg, ckpt, info, warn_fn)
        for epoch in range(run.start_epoch, cfg.epochs):
            yield from _epoch(run, epoch)
        return _finish(run)
    finally:
        if info.created and dist.is_initialized():
            dist.destroy_process_group()


def _prepare(data: str | Path | TileTable, out: Path, cfg: TrainConfig,
             ckpt: dict[str, Any] | None, info: DistInfo, warn: Callable[[str], None]
             ) -> Generator[Progress, None, TrainingRun]:
    """Device, data, split record, decoded batches, balance, model (resumed state), config.json."""
    device = resolve_device(cfg.device, info.local_rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed)
    cfg.notes = []
    table, split = load_data(cfg, data, ckpt, out, warn)
    cfg.notes += split.notes
    run = TrainingRun(cfg, out, info, device, warn, table, split)
    run.stain = from_checkpoint(ckpt) if ckpt is not None else None
    record = yield from record_split(run)
    yield from prepare_batches(run)
    resolve_balance(run)
    stated = yield from table_stated(table)
    mpp, mpp_source = scale_of(cfg.mpp, table, warn, stated)
    build_run_model(run, ckpt)
    if ckpt is not None:
        restore(run, ckpt)
    run.per_rank_batch = max(2, math.ceil(cfg.batch_size / info.world))
    run.micro = run.per_rank_batch
    assert run.train_b is not None
    run.steps_per_epoch = max(1, math.ceil(math.ceil(len(run.train_b) / info.world)
                                           / run.per_rank_batch))
    run.meta = {"arch": cfg.arch, "classes": table.scheme, "input_size": run.size,
                "patch_size": table.patch_size or uniform_tile_size(table),
                "level": table.level, "mpp": mpp,
                "extra": {"split": record, "mpp_source": mpp_source,
                          "preprocess": {"resampling": RESAMPLING, "stain": (
                              run.stain.to_json() if run.stain else {"method": "none"})}}}
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(cfg.to_json(), indent=2))
    if run.start_epoch >= cfg.epochs:
        warn(f"{out / 'last.pt'} has already trained {run.start_epoch} epochs (--epochs "
             f"{cfg.epochs})")
    return run


def _epoch(run: TrainingRun, epoch: int) -> Generator[Progress, None, None]:
    """One epoch: train, validate, checkpoint; then the history row (:class:`EpochEnded`)."""
    cfg = run.cfg
    t0 = time.perf_counter()
    train_loss, train_acc, n = yield from train_epoch(run, epoch)
    train_seconds = time.perf_counter() - t0
    val_loss, val_acc, val_bal = _validation_scores(run)
    row = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
           "val_loss": val_loss, "val_acc": val_acc, "val_bal_acc": val_bal,
           "lr": lr_at(cfg, epoch), "seconds": time.perf_counter() - t0,
           "images_per_s": n / max(1e-9, train_seconds)}
    run.history.append(row)
    save_epoch(run, epoch, row)
    yield Progress((epoch + 1) * run.steps_per_epoch, cfg.epochs * run.steps_per_epoch,
                   f"epoch {epoch + 1}/{cfg.epochs} done", EpochEnded(dict(row)))


def _validation_scores(run: TrainingRun) -> tuple[float | None, float | None, float | None]:
    """Validation loss, accuracy and balanced accuracy (``None`` without a validation set)."""
    if not run.has_val:
        return None, None, None
    assert run.model is not None and run.val_b is not None
    spec = get_spec(run.cfg.arch)
    vl, vc, vn, per_class = validate(run.eval_model, run.val_b, run.info, spec.mean, spec.std,
                                     run.autocast, run.per_rank_batch * 2, run.device,
                                     len(run.table.scheme))
    recalls = [c / k for c, k in per_class if k > 0]
    return vl / max(1.0, vn), vc / max(1.0, vn), sum(recalls) / len(recalls) if recalls else None


def _finish(run: TrainingRun) -> dict[str, Any]:
    """The run summary (returned, and ``summary.json`` on rank 0)."""
    assert run.train_b is not None and run.val_b is not None
    cfg, table, split = run.cfg, run.table, run.split
    summary = {
        "out": str(run.out), "arch": cfg.arch, "classes": table.scheme.names,
        "epochs": cfg.epochs, "image_size": run.size, "best_epoch": run.best_epoch,
        "best_val_acc": run.best_val_acc,
        "best_metric": cfg.best_metric if run.has_val else "last epoch (no validation)",
        "best_score": run.best[0] if run.has_val and run.best[0] >= 0 else None,
        "history": run.history, "last": str(run.out / "last.pt"),
        "best": str(run.out / "best.pt"), "skipped": len(run.skipped),
        "train_images": len(run.train_b), "val_images": len(run.val_b),
        "test_images": len(split.test), "world_size": run.info.world, "cache": run.cache,
        "device": str(run.device), "micro_batch": run.micro, "notes": list(cfg.notes),
        "counts": {"train": table.counts(run.train_b.indices),
                   "val": table.counts(run.val_b.indices), "test": table.counts(split.test)},
    }
    if run.info.main:
        atomic_write_text(run.out / "summary.json", json.dumps(summary, indent=2))
    return summary
