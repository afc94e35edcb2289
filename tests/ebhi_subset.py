"""Small real EBHI subsets for training tests (shared by tests/core and tests/app; imports no
Qt)."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path


def write_subset(ebhi: Path, out: Path, classes: list[str], per_class: int,
                 per_case: int = 2) -> Path:
    """A CSV of ``per_class`` real EBHI tiles per class (absolute paths), at most ``per_case`` per
    case, so that the split by case has several groups on each side."""
    with open(ebhi / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    by: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        by[r["ebhi_class"]].append(r)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "ebhi_class", "case_id"])
        for c in classes:
            seen: Counter[str] = Counter()
            for r in by[c]:
                if seen[r["case_id"]] < per_case and sum(seen.values()) < per_class:
                    seen[r["case_id"]] += 1
                    w.writerow([str(ebhi / r["image"]), c, r["case_id"]])
    return out
