"""Small fake phases for the Train dialog's tests (imports no Qt).

:class:`FakePhases` gives ``fit``/``evaluate``/``compare`` jobs with the signatures of
:func:`crc_core.training.fit`, :func:`crc_core.evaluation.evaluate` and
:func:`crc_core.finetune.compare_job`; :meth:`FakePhases.job` plugs them into the real
:func:`crc_core.train_eval.train_and_evaluate`, so the dialog under test gets the core job's real
events within milliseconds. The fakes write what the dialog reads back: ``history.csv``,
``best.pt``/``last.pt`` (placeholders) and report folders (``metrics.json`` from the real
:func:`crc_core.evaluation.compute_metrics`, ``predictions.csv``). Real training is tested in
``tests/core``.
"""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from crc_core.errors import CrcError
from crc_core.evaluation import compute_metrics
from crc_core.jobs import EpochEnded, JobWarning, Progress, TrainingStep
from crc_core.train_eval import train_and_evaluate

CLASSES = ["Normal", "Adenocarcinoma"]
HISTORY = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_bal_acc", "lr",
           "seconds", "images_per_s"]
STEPS_PER_EPOCH = 3


def write_tiles_csv(folder: Path, per_class: int = 6, cases: int = 3) -> Path:
    """A CSV of tiny real PNG tiles of two classes, ``cases`` cases each (absolute paths)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            p = folder / f"{name}-{i}.png"
            pixels = rng.integers(0, 60, (16, 16, 3)) + np.array([180, 80 + 60 * c, 140])
            Image.fromarray(pixels.astype(np.uint8)).save(p)  # each tile its own content
            rows.append([str(p), name, f"{name.lower()}-{i % cases}"])
    out = folder / "tiles.csv"
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "ebhi_class", "case_id"])
        w.writerows(rows)
    return out


def write_report(folder: Path, model: str, subset: str, seed: int = 0) -> dict[str, Any]:
    """A report folder as `crc evaluate` writes it (metrics.json, predictions.csv)."""
    rng = np.random.default_rng(seed)
    y = np.array([0, 0, 0, 1, 1, 1])
    probs = rng.dirichlet([1.0, 1.0], size=len(y))
    m = compute_metrics(y, probs, CLASSES)
    m.update({"model": model, "arch": model, "subset": subset})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(m))
    with open(folder / "predictions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "label", "predicted", *[f"prob_{c}" for c in CLASSES]])
        for i, (t, p) in enumerate(zip(y, probs, strict=True)):
            w.writerow([f"img{i}.png", CLASSES[t], CLASSES[int(p.argmax())], *p])
    return {**m, "out": str(folder)}


class FakePhases:
    """Fake phase jobs; ``fail`` = ``(phase, arch, message)`` raises there; ``gate`` (an Event)
    makes fit wait for it after each epoch, ``block`` (an Event) before its first step."""

    def __init__(self, fail: tuple[str, str, str] | None = None,
                 gate: threading.Event | None = None, block: threading.Event | None = None,
                 warning: str | None = None) -> None:
        self.fail, self.gate, self.block, self.warning = fail, gate, block, warning
        self.configs: list[Any] = []      # the TrainConfig of each fit, in order
        self.calls: list[str] = []        # "fit resnet50", "evaluate resnet50", ...
        self.closed: list[str] = []       # fits whose generator was closed (finally ran)

    def job(self, data: str, plans: list, options: Any):
        return train_and_evaluate(data, plans, options, fit_job=self.fit,
                                  evaluate_job=self.evaluate, compare_job=self.compare)

    def _maybe_fail(self, phase: str, arch: str) -> None:
        if self.fail and self.fail[:2] == (phase, arch):
            raise CrcError(self.fail[2])

    def fit(self, data: Any, out: Path, cfg: Any, resume: bool = False):
        self.configs.append(cfg)
        self.calls.append(f"fit {cfg.arch}")
        out = Path(out)
        try:
            if self.block is not None:
                self.block.wait(30)
            yield Progress(0, None, "decoding 12 images")
            if self.warning:
                yield JobWarning(self.warning)
            self._maybe_fail("train", cfg.arch)
            out.mkdir(parents=True, exist_ok=True)
            total = cfg.epochs * STEPS_PER_EPOCH
            rows = []
            for e in range(cfg.epochs):
                for s in range(STEPS_PER_EPOCH):
                    yield Progress(e * STEPS_PER_EPOCH + s + 1, total, f"batch {s + 1}",
                                   TrainingStep(e + 1, cfg.epochs))  # as fit yields them
                row = {"epoch": e + 1, "train_loss": 1.0 / (e + 1), "train_acc": 0.5 + e / 100,
                       "val_loss": 1.2 / (e + 1), "val_acc": 0.5, "val_bal_acc": 0.4 + e / 100,
                       "lr": cfg.lr, "seconds": 0.1, "images_per_s": 100.0 + e}
                rows.append(row)
                with open(out / "history.csv", "w", newline="") as fh:
                    w = csv.DictWriter(fh, HISTORY)
                    w.writeheader()
                    w.writerows(rows)
                (out / "last.pt").write_bytes(f"epoch {e + 1}".encode())
                yield Progress((e + 1) * STEPS_PER_EPOCH, total, f"epoch {e + 1} done",
                               EpochEnded(dict(row)))
                if self.gate is not None:
                    self.gate.wait(30)
            (out / "best.pt").write_bytes(b"best")
            (out / "config.json").write_text(json.dumps({"arch": cfg.arch,
                                                         "test_fraction": cfg.test_fraction}))
            return {"arch": cfg.arch, "best_epoch": cfg.epochs, "best_score": 0.5,
                    "best_metric": cfg.best_metric, "val_images": 4, "history": rows}
        finally:
            self.closed.append(cfg.arch)

    def evaluate(self, best: Path, data: Any, out: Path, **kw: Any):
        arch = json.loads((Path(best).parent / "config.json").read_text())["arch"]
        self.calls.append(f"evaluate {arch}")
        yield Progress(0, 6, "evaluating 6 images")
        self._maybe_fail("evaluate", arch)
        test = json.loads((Path(best).parent / "config.json").read_text())["test_fraction"] > 0
        yield Progress(6, 6, "evaluating 6 images")
        return write_report(Path(out), arch, "test" if test else "val")

    def compare(self, old: Any, new: Path, run_dir: Path, **kw: Any):
        arch = json.loads((Path(new).parent / "config.json").read_text())["arch"]
        self.calls.append(f"compare {arch}")
        yield Progress(0, None, "scoring the old model on 6 test images")
        scores = {side: write_report(Path(run_dir) / "compare" / side, arch, "all", i)
                  for i, side in enumerate(("old", "new"))}
        brief = {s: {"accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"],
                     "n": m["n"]} for s, m in scores.items()}
        return {"images": 6, **brief, "seen_by_old": 0, "old_checkpoint": str(old),
                "new_checkpoint": str(new)}
