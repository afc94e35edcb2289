"""`crc train --arch resnet50,densenet121 --evaluate` and the Train dialog run the same core job
(crc_core.train_eval) and write the same run and report folders: one tiny real run of each
(16 px tiles at 32 px, one epoch, one torch thread), compared file name by file name."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from train_fakes import write_tiles_csv

from app.dialogs.train import TrainDialog
from crc_core.cli import main as crc_main

TIMEOUT_MS = 240_000
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/app/conftest.py


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_cli_and_dialog_write_the_same_run_and_report_folders(qtbot, tmp_path: Path,
                                                              errors_seen, capsys):
    data = write_tiles_csv(tmp_path / "tiles", per_class=8, cases=4)
    rc = crc_main(["train", "--data", str(data), "--label-column", "ebhi_class",
                   "--group-column", "case_id", "--arch", "resnet50,densenet121", "--evaluate",
                   "--epochs", "1", "--batch-size", "8", "--image-size", "32", "--device", "cpu",
                   "--out", str(tmp_path / "cli" / "{arch}"), "--quiet"])
    assert rc == 0, capsys.readouterr().err

    dlg = TrainDialog(None)
    qtbot.addWidget(dlg)
    dlg.show()
    dlg.set_dataset(data)
    qtbot.waitUntil(lambda: not dlg.summary_pending(), timeout=30000)
    assert (dlg.label_column.currentText(), dlg.group_column.currentText()) == (
        "ebhi_class", "case_id")
    dlg.epochs_spin.setValue(1)
    dlg.batch_spin.setValue(8)
    dlg.size_spin.setValue(32)
    dlg.device_combo.setCurrentText("cpu")
    qtbot.mouseClick(dlg.arch_boxes["densenet121"], Qt.MouseButton.LeftButton)
    dlg.out_edit.setText(str(tmp_path / "gui" / "{arch}"))
    with qtbot.waitSignal(dlg.allFinished, timeout=TIMEOUT_MS):
        qtbot.mouseClick(dlg.start_button, Qt.MouseButton.LeftButton)
    assert errors_seen == [] and dlg.outcome == "done"

    cli, gui = _files(tmp_path / "cli"), _files(tmp_path / "gui")
    assert cli == gui
    for arch in ("resnet50", "densenet121"):
        for name in ("best.pt", "last.pt", "history.csv", "eval/metrics.json",
                     "eval/report.html"):
            assert f"{arch}/{name}" in cli
