"""The paper's workflow in the GUI: a `crc extract` dataset of the demo project (train/test split by
area) trained from the Train dialog validates on training *areas* and keeps best.pt on them.

One real run: ResNet50 at 32 px, 3 epochs, a few dozen patches, one torch thread.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from app.demo import shipped_demo_dir
from app.dialogs.train import TrainDialog
from crc_core.cli import main as crc_main
from crc_core.models import load_checkpoint

TIMEOUT_MS = 240_000


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/app/conftest.py


@pytest.fixture(scope="module")
def demo_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = shipped_demo_dir()
    if not (src / "project.json").is_file():
        pytest.skip("resources/demo is not in this checkout")
    root = tmp_path_factory.mktemp("demo-extract")
    shutil.copytree(src, root / "demo")
    out = root / "dataset"
    rc = crc_main(["extract", "--project", str(root / "demo"), "--out", str(out),
                   "--patch-size", "224", "--overlap", "0", "--random", "0", "--cap", "24",
                   "--quiet"])
    assert rc == 0
    return out


def test_a_demo_extract_dataset_validates_on_training_areas_and_keeps_best_on_them(
        qtbot, demo_dataset: Path, tmp_path: Path, errors_seen):
    dlg = TrainDialog(None)
    qtbot.addWidget(dlg)
    dlg.show()
    line = dlg.dataset_combo.lineEdit()
    line.clear()
    qtbot.keyClicks(line, str(demo_dataset))
    qtbot.keyClick(line, Qt.Key.Key_Return)
    # The dataset is split by area: its areas are the groups, not its one slide.
    qtbot.waitUntil(lambda: dlg.group_column.currentText() == "area_id", timeout=5000)
    dlg.epochs_spin.setValue(3)
    dlg.batch_spin.setValue(8)
    dlg.size_spin.setValue(32)
    dlg.device_combo.setCurrentText("cpu")
    dlg.out_edit.setText(str(tmp_path / "{arch}"))
    # the data summary (debounced, read in the background) names the dataset and enables Start
    qtbot.waitUntil(dlg.start_button.isEnabled, timeout=30000)
    assert "72 images" in dlg.data_summary.text()
    with qtbot.waitSignal(dlg.allFinished, timeout=TIMEOUT_MS):
        qtbot.mouseClick(dlg.start_button, Qt.MouseButton.LeftButton)
    assert errors_seen == []
    run = tmp_path / "resnet50"
    history = list(csv.DictReader(open(run / "history.csv", newline="")))
    assert len(history) == 3 and all(r["val_bal_acc"] not in ("", "nan") for r in history)
    # the validation curves are drawn, one point per epoch
    assert len(dlg.curves.series("val_acc", "resnet50")) == 3
    assert len(dlg.curves.series("val_bal_acc", "resnet50")) == 3
    # validation areas come from the training areas, never from the test areas
    manifest = list(csv.DictReader(open(demo_dataset / "manifest.csv", newline="")))
    test_areas = {r["area_id"] for r in manifest if r["split"] == "test"}
    splits = list(csv.DictReader(open(run / "split.csv", newline="")))
    by_path = {r["path"]: r["area_id"] for r in manifest}
    val_areas = {by_path[r["path"]] for r in splits if r["split"] == "val"}
    assert val_areas and not val_areas & test_areas
    # best.pt is the epoch of the best validation balanced accuracy (the recommended preset)
    scores = [float(r["val_bal_acc"]) for r in history]
    best = load_checkpoint(run / "best.pt")
    assert best["epoch"] == scores.index(max(scores)) + 1
    config = json.loads((run / "config.json").read_text())
    assert config["best_metric"] == "balanced_acc"
    # the report is on the dataset's own test areas
    assert dlg.report.evaluated()["resnet50"]["subset"] == "test"
