"""Screenshots of the Train dialog and the report panel after a short real training run.

Usage (under a virtual X server)::

    xvfb-run -a .venv/bin/python tools/screenshot_train.py --out docs/screenshots

Trains ResNet50 for a few epochs at 64 px on a small case-split subset of the EBHI tiles (Normal,
Adenoma = low- and high-grade IN merged, Adenocarcinoma), driven by the dialog's own Start
button, then saves ``train_dialog.png`` (the Training tab with the live curves) and
``report_panel.png`` (the evaluation report).
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_subset(ebhi: Path, out: Path, classes: list[str], per_class: int, per_case: int) -> Path:
    with open(ebhi / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    by: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        by[r["ebhi_class"]].append(r)
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "gland_mask", "ebhi_class", "case_id"])
        for c in classes:
            seen: Counter[str] = Counter()
            for r in by[c]:
                if seen[r["case_id"]] < per_case and sum(seen.values()) < per_class:
                    seen[r["case_id"]] += 1
                    w.writerow([str(ebhi / r["image"]), r["gland_mask"], c, r["case_id"]])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    ap.add_argument("--ebhi", type=Path, default=ROOT.parent / "shared" / "data" / "ebhi")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--per-class", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from PySide6.QtCore import QEventLoop, Qt, QTimer
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    import app  # noqa: F401  (installs the PySide6 workaround)
    from app.dialogs.train import TrainDialog

    qapp = QApplication.instance() or QApplication(sys.argv)
    work = Path(tempfile.mkdtemp(prefix="crc-shot-"))
    data = write_subset(args.ebhi, work / "ebhi-subset.csv",
                        ["Normal", "Low-grade IN", "High-grade IN", "Adenocarcinoma"],
                        args.per_class, 4)
    dlg = TrainDialog(None)
    dlg.resize(1400, 860)
    dlg.show()
    dlg.set_dataset(data)
    # The paper-like classes: Normal / Adenoma (low- and high-grade IN) / Adenocarcinoma.
    dlg.map_edit.setText("Low-grade IN=Adenoma,High-grade IN=Adenoma")
    dlg.epochs_spin.setValue(args.epochs)
    dlg.batch_spin.setValue(8)
    dlg.size_spin.setValue(64)
    dlg.device_combo.setCurrentText("cpu")
    # Split by case number (the GTDC rows' case_id is a file name), the rare Normal class drawn as
    # often as the others, best.pt by balanced accuracy, a test share for the report.
    dlg.group_pattern_edit.setText(r"\d{7}")
    dlg.balance_combo.setCurrentIndex(dlg.balance_combo.findData("sampler"))
    dlg.best_combo.setCurrentIndex(dlg.best_combo.findData("balanced_acc"))
    dlg.val_spin.setValue(0.25)
    dlg.test_spin.setValue(0.25)
    dlg.out_edit.setText(str(work / "models" / "{arch}-{time}"))
    while dlg.summary_pending():  # the data check runs in a worker; Start waits for it
        qapp.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.02)
    loop = QEventLoop()
    failures: list[str] = []
    dlg.allFinished.connect(loop.quit)
    dlg.runFailed.connect(lambda msg: (failures.append(msg), loop.quit()))
    QTimer.singleShot(300, lambda: QTest.mouseClick(dlg.start_button, Qt.MouseButton.LeftButton))
    loop.exec()
    if failures:
        print("training failed:", failures[0], file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    dlg.tabs.setCurrentIndex(0)
    for _ in range(5):
        qapp.processEvents()
    dlg.grab().save(str(args.out / "train_dialog.png"))
    dlg.tabs.setCurrentWidget(dlg.report)
    for _ in range(5):
        qapp.processEvents()
    dlg.report.grab().save(str(args.out / "report_panel.png"))
    print(args.out / "train_dialog.png", args.out / "report_panel.png")
    dlg.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
