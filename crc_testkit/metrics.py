"""Check helpers: recompute a report's metrics from the per-image predictions it wrote."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from crc_core.evaluation import compute_metrics


def metrics_from_predictions(path: str | Path) -> dict[str, Any]:
    """Recompute the metrics from a ``predictions.csv`` (label names + ``prob_<class>`` columns)."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = [c for c in (reader.fieldnames or []) if c.startswith("prob_")]
        names = [c[len("prob_"):] for c in cols]
        rows = list(reader)
    y = [names.index(r["label"]) for r in rows]
    probs = np.array([[float(r[c]) for c in cols] for r in rows])
    return compute_metrics(y, probs, names)
