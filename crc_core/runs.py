"""Run and evaluation folders on disk: the one reader of what ``crc train``
(:func:`crc_core.training.fit`) and ``crc evaluate`` (:func:`crc_core.evaluation.evaluate`) write,
and the writer of ``history.csv``.

A run folder holds ``history.csv`` (one row per epoch), ``config.json`` (every option), ``last.pt``,
``best.pt``, ``split.csv``, ``summary.json`` and, once evaluated, ``eval/``; an evaluation folder
holds ``metrics.json``, ``predictions.csv`` and ``report.html``. Training (resume), the evaluation
report (curves), ``crc compare``, fine-tuning's comparison and the GUI's report panel all read them
here, so a file reads the same everywhere and is refused with the same message.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crc_core.atomic import atomic_write_text
from crc_core.errors import ConfigError, DatasetError

__all__ = ["HISTORY_COLUMNS", "RunResult", "history_for", "read_history", "read_metrics",
           "read_predictions", "read_run", "read_run_config", "run_children", "write_history"]

HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_bal_acc", "lr",
                   "seconds", "images_per_s"]


def read_history(path: str | Path, upto: int | None = None) -> list[dict[str, Any]]:
    """The rows of a ``history.csv`` (numbers as ``float``, ``epoch`` as ``int``, empty cells
    ``None``), up to epoch ``upto`` when given; a missing file is no rows, a row that does not parse
    is left out. :class:`DatasetError` when the file cannot be read."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                try:
                    row = {k: (float(v) if v not in ("", None) else None) for k, v in r.items()}
                    row["epoch"] = int(row["epoch"] or 0)
                except (TypeError, ValueError, KeyError):
                    continue
                if upto is None or row["epoch"] <= upto:
                    rows.append(row)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: not a readable history.csv ({exc})") from None
    return rows


def write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    """``history.csv`` (atomic): the epoch as an integer, other numbers to 6 significant digits."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else
                        (r[k] if k == "epoch" else f"{r[k]:.6g}")) for k in HISTORY_COLUMNS})
    atomic_write_text(path, buf.getvalue())


def read_metrics(path: str | Path) -> dict[str, Any]:
    """A ``metrics.json`` (the file, or the folder holding it) written by ``crc evaluate``.

    Raises :class:`DatasetError` naming the file when it is missing, unreadable or not one.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: not found (give folders written by `crc evaluate`)"
                           ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not a readable metrics.json ({exc})") from None
    if not isinstance(m, dict) or not isinstance(m.get("macro"), dict) \
            or not isinstance(m.get("per_class"), dict):
        raise DatasetError(f"{path}: not a metrics.json written by `crc evaluate` (no "
                           f"macro/per_class)")
    return m


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """A run folder's ``config.json``; :class:`ConfigError` when it is missing or not an object."""
    path = Path(run_dir) / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{run_dir}: not a training run folder ({exc})") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{run_dir}: not a training run folder (config.json is no object)")
    return cfg


def read_predictions(path: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(y_true, probs)`` of an evaluation's ``predictions.csv``, in the class order ``names``."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: not a readable predictions.csv ({exc})") from None
    try:
        y = np.array([names.index(r["label"]) for r in rows], dtype=int)
        p = np.array([[float(r[f"prob_{n}"]) for n in names] for r in rows], dtype=float)
    except (KeyError, ValueError) as exc:
        raise DatasetError(f"{path}: rows do not match the classes of metrics.json ({exc})"
                           ) from None
    return y, p.reshape(-1, len(names))


def history_for(eval_dir: Path, metrics: dict[str, Any] | None) -> Path | None:
    """The ``history.csv`` of an evaluation: in its folder, the run folder above it, or next to
    the evaluated checkpoint."""
    candidates = [eval_dir / "history.csv", eval_dir.parent / "history.csv"]
    if metrics and metrics.get("checkpoint"):
        candidates.append(Path(str(metrics["checkpoint"])).parent / "history.csv")
    return next((c for c in candidates if c.is_file()), None)


@dataclass
class RunResult:
    """One model's run and evaluation as read from disk (``metrics`` is ``None`` for an
    unevaluated run)."""

    name: str
    folder: Path
    metrics: dict[str, Any] | None = None
    y_true: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    probs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    history: list[dict[str, Any]] = field(default_factory=list)
    report_html: Path | None = None


def read_run(folder: str | Path) -> RunResult:
    """A run folder (``history.csv``, its evaluation in ``eval/``) or an evaluation folder
    (``metrics.json``, or that file itself).

    Raises :class:`DatasetError` when the folder holds neither ``metrics.json`` (itself or in
    ``eval/``) nor ``history.csv``, or when those files are unreadable.
    """
    path = Path(folder)
    if path.is_file() and path.name == "metrics.json":
        path = path.parent
    if not path.is_dir():
        raise DatasetError(f"{path}: folder not found")
    eval_dir = next((d for d in (path, path / "eval") if (d / "metrics.json").is_file()), None)
    metrics = read_metrics(eval_dir) if eval_dir is not None else None
    hist = history_for(eval_dir, metrics) if eval_dir is not None else path / "history.csv"
    if metrics is None and not hist.is_file():
        raise DatasetError(f"{path}: neither an evaluation folder (metrics.json) nor a training "
                           f"run (history.csv)")
    run_dir = eval_dir.parent if eval_dir is not None and eval_dir.name == "eval" else path
    res = RunResult(str((metrics or {}).get("model") or run_dir.name), run_dir, metrics,
                    history=read_history(hist) if hist is not None else [])
    if metrics is None:
        try:
            res.name = str(read_run_config(run_dir).get("arch") or res.name)
        except ConfigError:
            pass
        return res
    names = [str(n) for n in metrics.get("classes") or list(metrics["per_class"])]
    assert eval_dir is not None
    if (eval_dir / "predictions.csv").is_file():
        res.y_true, res.probs = read_predictions(eval_dir / "predictions.csv", names)
    html = eval_dir / "report.html"
    res.report_html = html if html.is_file() else None
    return res


def run_children(path: Path) -> list[Path]:
    """Child folders of ``path`` that are runs or evaluations (a project's ``models/``)."""
    if not path.is_dir():
        return []
    return sorted(c for c in path.iterdir() if c.is_dir() and (
        (c / "metrics.json").is_file() or (c / "eval" / "metrics.json").is_file()
        or (c / "history.csv").is_file()))
