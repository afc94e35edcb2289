"""Train dialog, "Start from a model": fine-tuning a checkpoint from the dialog (kept classes and
size, lower rate, old/new comparison in the log and the report; fake phases through the real job
and worker, tests/train_fakes.py) and the one-line refusal of other classes (the real job, which
refuses before training). The real fine-tuning run is tested in tests/core/test_finetune.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PySide6.QtCore import Qt
from train_fakes import FakePhases, write_tiles_csv

from app.dialogs.train import TrainDialog
from crc_core.classes import ClassScheme

TIMEOUT_MS = 240_000
CLASSES = ["Normal", "Adenocarcinoma"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/app/conftest.py


def _checkpoint(path: Path, names: list[str], stain: str | None = None) -> Path:
    from crc_core.models import build_model, save_checkpoint

    torch.manual_seed(0)
    params = {"lab_mean": [60.0, 20.0, -10.0], "lab_std": [12.0, 6.0, 5.0]}  # a Reinhard fit
    extra = {"preprocess": {"stain": {"method": stain, "params": params}}} if stain else None
    save_checkpoint(path, build_model("resnet50", len(names)), arch="resnet50",
                    classes=ClassScheme.from_names(names), input_size=64, config={"lr": 1e-3},
                    extra=extra)
    return path


@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiles_csv(tmp_path_factory.mktemp("ftgui"))


def _dialog(qtbot, data: Path, out: Path, model: Path, phases: FakePhases | None = None
            ) -> TrainDialog:
    dlg = TrainDialog(None, job=phases.job if phases is not None else None)
    qtbot.addWidget(dlg)
    dlg.show()
    line = dlg.dataset_combo.lineEdit()
    line.clear()
    qtbot.keyClicks(line, str(data))
    qtbot.waitUntil(lambda: not dlg.summary_pending(), timeout=30000)  # checked in a worker
    dlg.epochs_spin.setValue(1)
    dlg.batch_spin.setValue(8)
    dlg.test_spin.setValue(0.3)
    dlg.device_combo.setCurrentText("cpu")
    dlg.out_edit.setText(str(out / "{arch}"))
    assert dlg.start_from.checkpoint() is None  # a new model unless one is chosen
    for name, cb in dlg.arch_boxes.items():
        cb.setChecked(name == "densenet121")
    qtbot.keyClicks(dlg.start_from.combo.lineEdit(), str(model))
    assert dlg.start_from.checkpoint() == model
    # the model's architecture is ticked, alone
    assert [n for n, cb in dlg.arch_boxes.items() if cb.isChecked()] == ["resnet50"]
    assert "tenth of its learning rate" in dlg.start_from.note.text()
    return dlg


def test_fine_tune_from_the_dialog_compares_old_and_new(qtbot, tiny_csv: Path, tmp_path: Path,
                                                        errors_seen):
    from crc_core.finetune import comparison_text

    model = _checkpoint(tmp_path / "old.pt", CLASSES)
    phases = FakePhases()
    dlg = _dialog(qtbot, tiny_csv, tmp_path, model, phases)
    finished: list[str] = []
    dlg.runFinished.connect(finished.append)
    with qtbot.waitSignal(dlg.allFinished, timeout=TIMEOUT_MS):
        qtbot.mouseClick(dlg.start_button, Qt.MouseButton.LeftButton)
    assert errors_seen == []
    run = tmp_path / "resnet50"
    assert phases.calls == ["fit resnet50", "evaluate resnet50", "compare resnet50"]
    assert finished == [str(run)]  # after the comparison
    cfg = phases.configs[0]
    assert cfg.init == str(model.resolve()) and cfg.lr == pytest.approx(1e-4)
    assert cfg.image_size == 64  # the checkpoint's, whatever the Image size field says
    log = dlg.log.toPlainText()
    assert "on the same 6 held-out test images" in log
    res = {"images": 6, "old": {}, "new": {}, "seen_by_old": 0}
    assert comparison_text(res).splitlines()[0] in log
    assert "at learning rate 0.0001 (a tenth of its training rate 0.001)" in \
        dlg.start_from.note.text()
    shown = {r.folder.resolve() for r in dlg.report.results.values()}
    assert {(run / "compare" / s).resolve() for s in ("old", "new")} <= shown
    assert run.resolve() in shown


def test_a_model_of_other_classes_is_refused_in_one_line(qtbot, tiny_csv: Path, tmp_path: Path,
                                                         errors_seen):
    model = _checkpoint(tmp_path / "three.pt", ["Normal", "Adenoma", "Adenocarcinoma"])
    dlg = _dialog(qtbot, tiny_csv, tmp_path, model)
    qtbot.mouseClick(dlg.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(errors_seen), timeout=60_000)
    title, msg = errors_seen[-1]
    assert "\n" not in msg and "fine-tuning keeps the checkpoint's classes" in msg
    assert not (tmp_path / "resnet50" / "last.pt").exists()


def test_the_stain_field_shows_the_models_method_locked(qtbot, tiny_csv: Path, tmp_path: Path,
                                                         errors_seen):
    """Found taking the guide's fine-tune screenshots: the field said "none" while the run kept the
    model's method. It now shows the method the run uses, locked, and is the user's again when
    the model is cleared."""
    model = _checkpoint(tmp_path / "reinhard.pt", CLASSES, stain="reinhard")
    phases = FakePhases()
    dlg = TrainDialog(None, job=phases.job)
    qtbot.addWidget(dlg)
    dlg.show()
    dlg.set_dataset(tiny_csv)
    qtbot.waitUntil(lambda: not dlg.summary_pending(), timeout=30000)
    dlg.stain_combo.setCurrentIndex(dlg.stain_combo.findData("macenko"))  # the user's choice
    dlg.test_spin.setValue(0.3)
    dlg.out_edit.setText(str(tmp_path / "{arch}"))
    qtbot.keyClicks(dlg.start_from.combo.lineEdit(), str(model))
    assert dlg.stain_combo.currentData() == "reinhard" and not dlg.stain_combo.isEnabled()
    assert "Taken from the model" in dlg.stain_combo.toolTip()
    assert not dlg.lr_spin.isEnabled()  # fine-tuning sets its own rate: the field is locked too
    with qtbot.waitSignal(dlg.allFinished, timeout=TIMEOUT_MS):
        qtbot.mouseClick(dlg.start_button, Qt.MouseButton.LeftButton)
        assert not dlg.stain_combo.isEnabled()
    assert errors_seen == [] and phases.configs[0].stain_norm == "reinhard"  # what it showed
    assert not dlg.stain_combo.isEnabled()  # still locked after the run
    dlg.start_from.combo.lineEdit().clear()  # a new model: the user's choice is back
    assert dlg.stain_combo.currentData() == "macenko" and dlg.stain_combo.isEnabled()
    assert dlg.lr_spin.isEnabled()


def test_the_checkpoint_is_read_in_the_worker_at_start(qtbot, tiny_csv: Path, tmp_path: Path,
                                                       monkeypatch, errors_seen):
    """Start reads the whole checkpoint (finetune_config) in the job's worker, not on the GUI
    thread."""
    import threading

    import crc_core.finetune

    real = crc_core.finetune.finetune_config
    threads: list[threading.Thread] = []

    def spy(*args, **kwargs):
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(crc_core.finetune, "finetune_config", spy)
    model = _checkpoint(tmp_path / "old.pt", CLASSES)
    phases = FakePhases()
    dlg = _dialog(qtbot, tiny_csv, tmp_path, model, phases)
    with qtbot.waitSignal(dlg.allFinished, timeout=TIMEOUT_MS):
        qtbot.mouseClick(dlg.start_button, Qt.MouseButton.LeftButton)
    assert errors_seen == [] and dlg.outcome == "done"
    assert threads and threading.main_thread() not in threads
    assert phases.configs[0].init == str(model.resolve())
