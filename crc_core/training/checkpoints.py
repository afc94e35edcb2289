"""Checkpoints and history of a run: what resuming takes from ``last.pt`` (and ``best.pt``), and
after each epoch the choice of ``best.pt``, ``last.pt`` and ``history.csv``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from crc_core.distributed import barrier
from crc_core.errors import CheckpointError, ConfigError
from crc_core.models import load_checkpoint, save_checkpoint
from crc_core.runs import read_history, write_history
from crc_core.training.config import TrainConfig
from crc_core.training.state import TrainingRun


def resume_config(config: TrainConfig, out: Path, resume: bool
                  ) -> tuple[TrainConfig, dict[str, Any] | None]:
    last_path = out / "last.pt"
    if not resume:
        if last_path.exists():
            raise ConfigError(f"{out} already holds a training run (last.pt); use --resume to "
                              f"continue it or another --out folder")
        return config, None
    if not last_path.is_file():
        raise CheckpointError(f"nothing to resume: {last_path} not found")
    ckpt = load_checkpoint(last_path, "cpu", expect_arch=config.arch)
    stored = TrainConfig.from_json(ckpt.get("config") or {})
    stored.epochs, stored.device, stored.workers = config.epochs, config.device, config.workers
    stored.compile, stored.save_every = config.compile, config.save_every
    # Data options given again override the stored ones (then the class check applies).
    stored.data = {**stored.data, **{k: v for k, v in config.data.items() if v is not None}}
    return stored, ckpt


def restore(run: TrainingRun, ckpt: dict[str, Any]) -> None:
    """Optimizer state, epoch and best score of a resumed run."""
    assert run.optimizer is not None
    if ckpt.get("optimizer"):
        run.optimizer.load_state_dict(ckpt["optimizer"])
    run.start_epoch = int(ckpt.get("epoch") or 0)
    m = ckpt.get("metrics") or {}
    best_path = run.out / "best.pt"
    if best_path.is_file():
        # With --save-every > 1, best.pt can be newer than last.pt: keep its score so a worse
        # epoch of the resumed run does not replace it.
        bm = load_checkpoint(best_path, "cpu").get("metrics") or {}
        if int(bm.get("epoch") or 0) > run.start_epoch:
            m = bm
    best_loss = m.get("best_val_loss")
    run.best = (float(m.get("best_score", m.get("best_val_acc", -1.0))),
                math.inf if best_loss is None else float(best_loss))
    run.best_epoch = int(m.get("best_epoch", 0))
    run.best_val_acc = m.get("best_val_acc")
    run.history = read_history(run.out / "history.csv", run.start_epoch)


def save_epoch(run: TrainingRun, epoch: int, row: dict[str, Any]) -> None:
    """Pick best.pt (validation score, else the last epoch), write checkpoints and history."""
    cfg = run.cfg
    val_score = row["val_bal_acc"] if cfg.best_metric == "balanced_acc" else row["val_acc"]
    if run.has_val and val_score is not None:
        score = (val_score, row["val_loss"])
        improved = score[0] > run.best[0] or (score[0] == run.best[0] and score[1] < run.best[1])
    else:
        score, improved = (-1.0, math.inf), True      # no validation: the last epoch is kept
    if improved:
        run.best, run.best_epoch, run.best_val_acc = score, epoch + 1, row["val_acc"]
    metrics = {"epoch": epoch + 1, **{k: row[k] for k in ("train_loss", "train_acc", "val_loss",
                                                          "val_acc", "val_bal_acc")},
               "best_metric": cfg.best_metric if run.has_val else "last epoch (no validation)",
               "best_score": run.best[0] if run.has_val else None,
               "best_val_acc": run.best_val_acc,
               "best_val_loss": run.best[1] if math.isfinite(run.best[1]) else None,
               "best_epoch": run.best_epoch}
    if run.info.main:
        assert run.model is not None and run.optimizer is not None
        sched = {"milestones": list(cfg.milestones), "gamma": cfg.gamma, "schedule": cfg.schedule,
                 "last_epoch": epoch + 1, "lr": row["lr"]}
        common = dict(**run.meta, config=cfg.to_json(), epoch=epoch + 1, scheduler=sched,
                      metrics=metrics)
        if improved:
            save_checkpoint(run.out / "best.pt", run.eval_model, **common,
                            half=cfg.half_checkpoint)
        if (epoch + 1) % cfg.save_every == 0 or epoch + 1 == cfg.epochs:
            save_checkpoint(run.out / "last.pt", run.model, **common,
                            optimizer=run.optimizer.state_dict(),
                            ema=None if run.ema is None else run.ema.state_dict())
        write_history(run.out / "history.csv", run.history)
    barrier(run.info)


