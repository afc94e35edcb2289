"""Train dialog: its widgets driven by clicks while small fake phases run through the real core job
(crc_core.train_eval) and the real JobWorker, and the form's rules.

The job runs through the dialogs' JobRunner (app/job_runner.py); the data summary's check runs in a
worker too. The fakes (tests/train_fakes.py) take milliseconds; real training is tested in
tests/core (test_train_eval, test_training) and once through this dialog in
test_train_dialog_extract and test_train_cli_parity.
"""

from __future__ import annotations

import csv
import threading
import time
from pathlib import Path

import pytest
import torch
from PySide6.QtCore import Qt
from train_fakes import FakePhases, write_tiles_csv

from app.dialogs.train import CANCEL_NOTE, TrainDialog
from crc_core.train_eval import train_and_evaluate

TIMEOUT_MS = 20_000


def make_dialog(qtbot, data: Path, out: Path, epochs: int,
                phases: FakePhases | None = None) -> TrainDialog:
    dlg = TrainDialog(None, job=phases.job if phases is not None else None)
    qtbot.addWidget(dlg)
    dlg.show()
    line = dlg.dataset_combo.lineEdit()
    line.clear()
    qtbot.keyClicks(line, str(data))
    # the summary follows the typing once it pauses (a debounce timer): wait for it
    qtbot.waitUntil(lambda: not dlg.summary_pending(), timeout=30000)
    dlg.epochs_spin.setValue(epochs)
    dlg.batch_spin.setValue(8)
    dlg.size_spin.setValue(64)
    dlg.device_combo.setCurrentText("cpu")
    dlg.out_edit.setText(str(out / "{arch}"))
    return dlg


def click(qtbot, button) -> None:
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiles_csv(tmp_path_factory.mktemp("tiles"))


def test_the_dialog_runs_the_core_train_and_evaluate_job_by_default(qtbot):
    dlg = TrainDialog(None)
    qtbot.addWidget(dlg)
    assert dlg.job is train_and_evaluate


def test_dialog_guesses_label_and_group_columns(qtbot, tiny_csv: Path, tmp_path: Path):
    dlg = make_dialog(qtbot, tiny_csv, tmp_path, 1)
    assert dlg.label_column.currentText() == "ebhi_class"
    assert dlg.group_column.currentText() == "case_id"
    assert "12 images" in dlg.data_summary.text()


def test_training_shows_live_curves_and_the_report(qtbot, tiny_csv: Path, tmp_path: Path,
                                                   errors_seen):
    phases = FakePhases(warning="3 unreadable image(s) skipped")
    dlg = make_dialog(qtbot, tiny_csv, tmp_path, 2, phases)
    rows: list[dict] = []
    headers: list[str] = []
    dlg.epochFinished.connect(lambda arch, row: rows.append(row))
    dlg.epochFinished.connect(lambda arch, row: headers.append(dlg.status_label.text()))
    with qtbot.waitSignal(dlg.allFinished, timeout=TIMEOUT_MS):
        click(qtbot, dlg.start_button)
        assert dlg.is_running() and not dlg.start_button.isEnabled()
        assert not dlg.epochs_spin.isEnabled() and dlg.cancel_button.isEnabled()
    assert errors_seen == [] and dlg.outcome == "done"
    assert phases.calls == ["fit resnet50", "evaluate resnet50"]
    cfg = phases.configs[0]
    assert (cfg.epochs, cfg.batch_size, cfg.image_size, cfg.device) == (2, 8, 64, "cpu")
    # the header follows the epochs (it kept "decoding images 24/24" before)
    assert headers == ["Training resnet50 (1 of 1): epoch 1 of 2",
                       "Training resnet50 (1 of 1): epoch 2 of 2"]
    # Live curves: one point per epoch for training and validation loss and accuracy.
    assert dlg.curves.series("train_loss", "resnet50") == [r["train_loss"] for r in rows]
    assert len(dlg.curves.series("val_acc", "resnet50")) == 2
    assert dlg.curves.series("val_bal_acc", "resnet50") == pytest.approx(
        [float(r["val_bal_acc"]) for r in rows])
    labels = [ln.get_label() for ln in dlg.curves.ax_acc.get_lines()]
    assert "resnet50 val balanced" in labels
    assert dlg.ips_label.text() == "Images/s: 101.0 (training, epoch 2)"
    # The report: Table 3 row of the model, Table 4 rows per class, ROC and confusion plotted.
    assert list(dlg.report.evaluated()) == ["resnet50"]
    assert dlg.report.table3.rowCount() == 1
    assert dlg.report.table3.item(0, 0).text() == "resnet50"
    assert dlg.report.table4.rowCount() == 2
    assert int(dlg.report.confusion.matrix.sum()) == dlg.report.evaluated()["resnet50"]["n"]
    assert dlg.tabs.currentWidget() is dlg.report
    assert dlg.start_button.isEnabled() and dlg.epochs_spin.isEnabled()
    assert not dlg.cancel_button.isEnabled()
    assert dlg.status_label.text() == "Done. The report shows the validation split."
    # the job's warning reached the log (a JobWarning through the worker's warned signal)
    assert "warning: 3 unreadable image(s) skipped" in dlg.log.toPlainText()


def test_with_a_test_share_the_report_is_on_the_test_cases(qtbot, tiny_csv: Path, tmp_path: Path,
                                                         errors_seen):
    phases = FakePhases()
    dlg = make_dialog(qtbot, tiny_csv, tmp_path, 1, phases)
    dlg.test_spin.setValue(0.25)
    dlg.best_combo.setCurrentIndex(dlg.best_combo.findData("balanced_acc"))
    dlg.tta_check.setChecked(True)
    statuses: list[str] = []
    dlg.runFinished.connect(lambda _out: statuses.append(dlg.status_label.text()))
    with qtbot.waitSignal(dlg.allFinished, timeout=TIMEOUT_MS):
        click(qtbot, dlg.start_button)
    assert errors_seen == []
    cfg = phases.configs[0]
    assert cfg.test_fraction == pytest.approx(0.25) and cfg.best_metric == "balanced_acc"
    assert statuses == ["Evaluating resnet50 on the test split…"]
    assert dlg.report.evaluated()["resnet50"]["subset"] == "test"
    assert dlg.status_label.text() == "Done. The report shows the test split."
    log = dlg.log.toPlainText()
    assert "best validation balanced accuracy" in log and "resnet50: test accuracy" in log


def test_two_architectures_train_one_after_another_into_one_report(qtbot, tiny_csv: Path,
                                                                   tmp_path: Path, errors_seen):
    phases = FakePhases()
    dlg = make_dialog(qtbot, tiny_csv, tmp_path, 1, phases)
    click(qtbot, dlg.arch_boxes["densenet121"])
    finished: list[str] = []
    dlg.runFinished.connect(finished.append)
    with qtbot.waitSignal(dlg.allFinished, timeout=TIMEOUT_MS):
        click(qtbot, dlg.start_button)
    assert errors_seen == []
    assert phases.calls == ["fit resnet50", "evaluate resnet50", "fit densenet121",
                            "evaluate densenet121"]
    assert [c.arch for c in phases.configs] == ["resnet50", "densenet121"]
    assert finished == [str(tmp_path / "resnet50"), str(tmp_path / "densenet121")]
    assert list(dlg.curves.runs) == ["resnet50", "densenet121"]
    assert sorted(dlg.report.evaluated()) == ["densenet121", "resnet50"]
    assert dlg.report.table3.rowCount() == 2


def test_cancel_mid_run_keeps_the_last_checkpoint(qtbot, tiny_csv: Path, tmp_path: Path):
    gate = threading.Event()
    phases = FakePhases(gate=gate)
    dlg = make_dialog(qtbot, tiny_csv, tmp_path, 20, phases)
    assert "last.pt" in CANCEL_NOTE and dlg.cancel_note.text() == CANCEL_NOTE
    cancelled: list[str] = []
    dlg.runCancelled.connect(cancelled.append)
    with qtbot.waitSignal(dlg.epochFinished, timeout=TIMEOUT_MS):
        click(qtbot, dlg.start_button)
    with qtbot.waitSignal(dlg.allFinished, timeout=TIMEOUT_MS):
        click(qtbot, dlg.cancel_button)
        assert dlg.status_label.text() == "Stopping after the current batch…"
        gate.set()
    last = tmp_path / "resnet50" / "last.pt"
    assert cancelled == [str(tmp_path / "resnet50")] and dlg.outcome == "cancelled"
    assert phases.closed == ["resnet50"] and "evaluate resnet50" not in phases.calls
    assert last.read_bytes() == b"epoch 1"
    assert f"1 completed epoch(s) kept in {last}" in dlg.status_label.text()
    assert not dlg.is_running() and dlg.start_button.isEnabled()


def test_a_failed_run_says_why_and_ends_the_job(qtbot, tiny_csv: Path, tmp_path: Path,
                                                errors_seen):
    phases = FakePhases(fail=("train", "densenet121", "tiles.csv: no images of class Normal"),
                        warning="no training images of class(es) Normal")
    dlg = make_dialog(qtbot, tiny_csv, tmp_path, 1, phases)
    click(qtbot, dlg.arch_boxes["densenet121"])
    failed: list[str] = []
    finished: list[str] = []
    dlg.runFailed.connect(failed.append)
    dlg.runFinished.connect(finished.append)
    with qtbot.waitSignal(dlg.allFinished, timeout=TIMEOUT_MS):
        click(qtbot, dlg.start_button)
    assert errors_seen == [("Training failed", "tiles.csv: no images of class Normal")]
    assert failed == ["tiles.csv: no images of class Normal"] and dlg.outcome == "failed"
    assert finished == [str(tmp_path / "resnet50")]       # the first run is kept and shown
    assert list(dlg.report.evaluated()) == ["resnet50"]
    assert "warning: no training images of class(es) Normal" in dlg.log.toPlainText()
    assert not dlg.is_running() and dlg.start_button.isEnabled()
    assert dlg.status_label.text().startswith("Training failed: ")


def test_a_failed_evaluation_is_named_as_such(qtbot, tiny_csv: Path, tmp_path: Path,
                                              errors_seen):
    phases = FakePhases(fail=("evaluate", "resnet50", "best.pt: truncated file"))
    dlg = make_dialog(qtbot, tiny_csv, tmp_path, 1, phases)
    with qtbot.waitSignal(dlg.allFinished, timeout=TIMEOUT_MS):
        click(qtbot, dlg.start_button)
    assert errors_seen == [("Evaluation failed", "best.pt: truncated file")]
    assert dlg.outcome == "failed" and not dlg.is_running()


def test_closing_during_a_run_returns_at_once_and_cancels_it(qtbot, tiny_csv: Path,
                                                             tmp_path: Path):
    block = threading.Event()
    phases = FakePhases(block=block)
    dlg = make_dialog(qtbot, tiny_csv, tmp_path, 1, phases)
    with qtbot.waitSignal(dlg.busyChanged, timeout=TIMEOUT_MS):
        click(qtbot, dlg.start_button)
    qtbot.waitUntil(lambda: dlg.status_label.text().startswith("Training resnet50"))
    t0 = time.perf_counter()
    click(qtbot, dlg.close_button)           # the job is blocked inside fit
    assert time.perf_counter() - t0 < 0.5
    assert not dlg.isVisible()
    with qtbot.waitSignal(dlg.allFinished, timeout=TIMEOUT_MS):
        block.set()                          # the batch under way ends; the job stops there
    assert dlg.outcome == "cancelled" and phases.closed == ["resnet50"]
    assert not (tmp_path / "resnet50" / "best.pt").exists()
    assert not dlg.is_running()


def test_data_that_cannot_train_disables_start_and_says_why(qtbot, tmp_path: Path, errors_seen,
                                                            tiny_csv: Path):
    empty = tmp_path / "empty.csv"
    empty.write_text("image,ebhi_class,case_id\n")
    dlg = make_dialog(qtbot, empty, tmp_path, 1)
    assert "no images" in dlg.data_summary.toolTip()
    assert not dlg.start_button.isEnabled()
    assert "no images" in dlg.start_button.toolTip()
    qtbot.mouseClick(dlg.start_button, Qt.MouseButton.LeftButton)
    assert not dlg.is_running() and errors_seen == []  # no "Training failed" later
    # a one-class CSV: the same, with a long path that still wraps and is readable in full
    one = tmp_path / ("a-rather-long-folder-name_" * 4) / "one.csv"
    one.parent.mkdir()
    one.write_text("".join(tiny_csv.read_text().splitlines(keepends=True)[:7]))
    dlg.dataset_combo.setCurrentText(str(one))
    dlg.resize(1320, 820)
    qtbot.waitUntil(lambda: "one class" in dlg.data_summary.toolTip())
    label = dlg.data_summary
    assert not dlg.start_button.isEnabled()
    qtbot.waitUntil(lambda: label.height() >= label.heightForWidth(label.width()))
    assert label.width() <= label.parentWidget().width()  # wrapped, not cut at the right
    # good data again: Start is back
    dlg.dataset_combo.setCurrentText(str(tiny_csv))
    qtbot.waitUntil(dlg.start_button.isEnabled)


def test_csv_without_the_label_column_disables_start(qtbot, tmp_path: Path, errors_seen,
                                                    tiny_csv: Path):
    dlg = make_dialog(qtbot, tiny_csv, tmp_path, 1)
    assert dlg.start_button.isEnabled()
    dlg.label_column.setCurrentText("diagnosis")
    assert not dlg.start_button.isEnabled()  # at once: the new fields are not checked yet
    qtbot.waitUntil(lambda: not dlg.summary_pending())
    assert not dlg.start_button.isEnabled()
    assert "diagnosis" in dlg.data_summary.toolTip()
    qtbot.mouseClick(dlg.start_button, Qt.MouseButton.LeftButton)
    assert not dlg.is_running() and errors_seen == []


def test_the_data_check_runs_in_a_worker_and_a_newer_edit_wins(qtbot, tmp_path: Path,
                                                               tiny_csv: Path, monkeypatch):
    """Issue 16 item 7: load_table never runs on the GUI thread; the check of an older edit,
    ending after a newer edit, is dropped (its summary never shown, Start stays disabled) and the
    newer edit's check decides."""
    import crc_core.data

    real = crc_core.data.load_table
    threads: list[threading.Thread] = []
    gates = {str(tiny_csv): threading.Event()}
    entered: list[str] = []

    def spy(data, **kw):
        threads.append(threading.current_thread())
        entered.append(str(data))
        gate = gates.get(str(data))
        if gate is not None:
            assert gate.wait(20)
        return real(data, **kw)

    monkeypatch.setattr(crc_core.data, "load_table", spy)
    six = tmp_path / "six.csv"
    lines = tiny_csv.read_text().splitlines(keepends=True)
    six.write_text("".join(lines[:4] + lines[7:10]))
    gates[str(six)] = threading.Event()
    dlg = TrainDialog(None)
    qtbot.addWidget(dlg)
    dlg.show()
    dlg.set_dataset(tiny_csv)
    qtbot.waitUntil(lambda: entered == [str(tiny_csv)], timeout=10000)  # blocked in the worker
    assert dlg.summary_pending() and not dlg.start_button.isEnabled()
    dlg.set_dataset(six)                                  # a newer edit while the old check runs
    qtbot.wait(400)                                       # its debounce has passed
    gates[str(tiny_csv)].set()                            # the old check ends now, stale
    qtbot.waitUntil(lambda: entered[-1:] == [str(six)], timeout=10000)
    qtbot.wait(50)
    assert "12 images" not in dlg.data_summary.toolTip()  # the stale result was dropped
    assert dlg.summary_pending() and not dlg.start_button.isEnabled()
    gates[str(six)].set()
    qtbot.waitUntil(lambda: not dlg.summary_pending(), timeout=10000)
    assert dlg.data_summary.toolTip().startswith("6 images in 6 groups")
    assert dlg.start_button.isEnabled()
    assert threads and threading.main_thread() not in threads


def test_closing_during_a_data_check_returns_at_once(qtbot, tiny_csv: Path, monkeypatch):
    import crc_core.data

    real, gate = crc_core.data.load_table, threading.Event()
    monkeypatch.setattr(crc_core.data, "load_table",
                        lambda data, **kw: (gate.wait(20), real(data, **kw))[1])
    dlg = TrainDialog(None)
    qtbot.addWidget(dlg)
    dlg.show()
    dlg.set_dataset(tiny_csv)
    qtbot.waitUntil(lambda: dlg.checks.running, timeout=10000)
    qtbot.wait(100)
    worker = dlg.checks.worker
    t0 = time.perf_counter()
    click(qtbot, dlg.close_button)
    assert time.perf_counter() - t0 < 0.5 and worker.isRunning()
    gate.set()
    qtbot.waitUntil(lambda: not worker.isRunning(), timeout=10000)


def test_no_architecture_selected_is_refused_at_start(qtbot, tiny_csv: Path, tmp_path: Path,
                                                      errors_seen):
    dlg = make_dialog(qtbot, tiny_csv, tmp_path, 1)
    for cb in dlg.arch_boxes.values():
        cb.setChecked(False)
    qtbot.mouseClick(dlg.start_button, Qt.MouseButton.LeftButton)
    assert errors_seen and "architecture" in errors_seen[0][1]
    assert not dlg.is_running()


def test_group_pattern_and_class_balance_reach_the_training_config(qtbot, ebhi_dir: Path,
                                                                  tmp_path: Path):
    dlg = make_dialog(qtbot, ebhi_dir / "labels.csv", tmp_path, 1)
    # The real labels.csv: the GTDC rows' case_id is a file name, and the summary says so.
    assert "look like file names" in dlg.data_summary.text()
    assert "1559 images in 254 groups" in dlg.data_summary.text()
    qtbot.keyClicks(dlg.group_pattern_edit, r"\d{7}")
    qtbot.waitUntil(lambda: not dlg.summary_pending(), timeout=30000)
    assert "1559 images in 239 groups" in dlg.data_summary.text()
    assert "file names" not in dlg.data_summary.text()
    dlg.balance_combo.setCurrentIndex(dlg.balance_combo.findData("sampler"))
    dlg.best_combo.setCurrentIndex(dlg.best_combo.findData("balanced_acc"))
    dlg.test_spin.setValue(0.2)
    (run,) = dlg.make_plans()
    assert run.config.test_fraction == pytest.approx(0.2)
    assert run.config.balance == "sampler" and run.config.best_metric == "balanced_acc"
    assert run.config.data["group_pattern"] == r"\d{7}"
    assert run.config.stain_norm == "none"
    dlg.stain_combo.setCurrentIndex(dlg.stain_combo.findData("macenko"))
    (run,) = dlg.make_plans()
    assert run.config.stain_norm == "macenko"


def test_paper_preset_fills_the_schedule(qtbot, tmp_path: Path):
    dlg = TrainDialog(None)
    qtbot.addWidget(dlg)
    dlg.preset_combo.setCurrentText("paper")
    assert (dlg.epochs_spin.value(), dlg.batch_spin.value()) == (200, 32)
    assert dlg.lr_spin.value() == pytest.approx(1e-3)


def test_several_architectures_get_one_run_folder_each(qtbot, tmp_path: Path):
    dlg = TrainDialog(None)
    qtbot.addWidget(dlg)
    dlg.out_edit.setText(str(tmp_path / "runs-{time}"))
    for cb in dlg.arch_boxes.values():
        cb.setChecked(True)
    folders = dlg.run_folders("T")
    assert folders == [(a, tmp_path / "runs-T" / a)
                       for a in ("resnet50", "densenet121", "inception_v3")]


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_device_is_disabled_without_a_gpu(qtbot):
    dlg = TrainDialog(None)
    qtbot.addWidget(dlg)
    item = dlg.device_combo.model().item(dlg.device_combo.findText("cuda"))
    assert not item.isEnabled()


def test_project_datasets_are_offered_and_runs_go_to_models(qtbot, tmp_path: Path,
                                                           tiny_csv: Path):
    from crc_core.project import Project

    project = Project.create(tmp_path / "proj")
    ds = Path(project.datasets_dir) / "glands-2026"
    ds.mkdir(parents=True)
    rows = list(csv.DictReader(open(tiny_csv, newline="")))
    with open(ds / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "slide"])
        for r in rows:
            w.writerow([r["image"], r["ebhi_class"], r["case_id"]])
    dlg = TrainDialog(project)
    qtbot.addWidget(dlg)
    assert dlg.dataset_combo.currentText() == str(ds)
    (arch, out), = dlg.run_folders("T")
    assert (arch, out) == ("resnet50", Path(project.models_dir) / "resnet50-T")
    assert dlg.label_column.currentText() == "label"


def test_learning_rate_box_takes_scientific_notation_and_steps_tenfold(qtbot, errors_seen):
    dlg = TrainDialog(None)
    qtbot.addWidget(dlg)
    dlg.show()
    box = dlg.lr_spin
    box.lineEdit().selectAll()
    qtbot.keyClicks(box, "1e-4")
    qtbot.keyClick(box, Qt.Key.Key_Return)
    assert box.value() == pytest.approx(1e-4)
    assert not dlg.is_running() and errors_seen == []     # Return did not start a run
    qtbot.keyClick(box, Qt.Key.Key_Up)
    assert box.value() == pytest.approx(1e-3)
    assert box.text() == "0.001"


def test_train_opens_from_the_main_window_without_a_project(qtbot) -> None:
    """Training needs no slide: Analysis > Train… opens with no project, asking for a dataset."""
    from app.main_window import MainWindow

    win = MainWindow()
    qtbot.addWidget(win)
    assert win.project is None
    dlg = win.open_analysis("train")
    assert isinstance(dlg, TrainDialog)
    dlg.close()


def test_augmentation_resolution_alone_does_not_count_as_augmenting():
    from app.dialogs.train_form import _augments
    from crc_core.training import NO_AUGMENT

    assert _augments(None) and _augments({**NO_AUGMENT, "flip": True})
    assert not _augments({**NO_AUGMENT, "resolution": 1})
    assert not _augments({**NO_AUGMENT, "resolution": 2})


def test_the_pixel_size_is_said_in_the_data_summary_and_reaches_the_config(
        qtbot, tiny_csv: Path, tmp_path: Path):
    """Issue 14 item 3 in the dialog: tiles without a pixel size are said to train at an unknown
    scale; a Pixel size typed in is shown and recorded; tiles whose tags state one use it."""
    from PIL import Image

    dlg = make_dialog(qtbot, tiny_csv, tmp_path, 1)
    assert "pixel size is unknown" in dlg.data_summary.toolTip()
    assert "Scale:" not in dlg.data_summary.toolTip()
    (run,) = dlg.make_plans()
    assert run.config.mpp is None
    dlg.mpp_spin.setFocus()
    dlg.mpp_spin.lineEdit().selectAll()
    qtbot.keyClicks(dlg.mpp_spin.lineEdit(), "0.5")
    qtbot.waitUntil(lambda: not dlg.summary_pending(), timeout=10000)
    assert "Scale: 0.5 µm/px (as given)" in dlg.data_summary.toolTip()
    assert "unknown" not in dlg.data_summary.toolTip()
    (run,) = dlg.make_plans()
    assert run.config.mpp == pytest.approx(0.5)
    # tiles that state 0.25 µm/px in their PNG tags: used when the field says "from the data"
    tagged = tmp_path / "tagged"
    tagged.mkdir()
    rows = list(csv.reader(open(tiny_csv)))
    for r in rows[1:]:
        dst = tagged / Path(r[0]).name
        Image.open(r[0]).save(dst, dpi=(25400 / 0.25, 25400 / 0.25))
        r[0] = str(dst)
    with open(tagged / "tiles.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    dlg.mpp_spin.setValue(0)
    dlg.dataset_combo.setCurrentText(str(tagged / "tiles.csv"))
    qtbot.waitUntil(lambda: not dlg.summary_pending(), timeout=10000)
    assert ("Scale: 0.25 µm/px (stated in the resolution tags of all 12 images)"
            in dlg.data_summary.toolTip())
