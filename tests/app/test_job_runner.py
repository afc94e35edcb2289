"""The dialogs' one job runner (app/job_runner.py), driven through the real dialogs with small fake
jobs: the widgets are disabled while a job runs and given back after, Cancel stops it, and closing
a dialog during a job returns at once (the job's thread ends on its own)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QPushButton, QVBoxLayout, QWidget

from app.job_runner import JobRunner
from crc_core.annotations import Annotation, AnnotationSet
from crc_core.classes import ClassScheme
from crc_core.jobs import Progress

CLOSE_S = 0.5  # closing a dialog never waits on its job


class Gate:
    """A fake job blocking until released (or 20 s); it ends at its next yield if cancelled."""

    def __init__(self, result: object = "done") -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.threads: list[threading.Thread] = []
        self.result = result

    def job(self, *_args, **_kwargs):
        self.threads.append(threading.current_thread())
        yield Progress(1, 4, "working")
        self.started.set()
        self.release.wait(20)
        yield Progress(3, 4, "almost")
        return self.result


def _wait_ended(qtbot, worker) -> None:
    qtbot.waitUntil(lambda: not worker.isRunning(), timeout=10000)


def _close_at_once(qtbot, dlg, gate: Gate) -> None:
    """Close ``dlg`` while ``gate``'s job blocks: the close returns at once, the job cancelled."""
    worker = dlg.worker
    assert worker is not None and worker.isRunning()
    t0 = time.perf_counter()
    dlg.close()
    took = time.perf_counter() - t0
    assert took < CLOSE_S, f"closing waited {took:.2f} s on the job"
    assert worker.isRunning()  # still blocked in the job: nobody waited for it
    gate.release.set()
    _wait_ended(qtbot, worker)


# ----------------------------------------------------------------------------- the runner alone
def test_runner_disables_the_busy_widgets_and_gives_back_their_state(qtbot) -> None:
    host = QWidget()
    qtbot.addWidget(host)
    run, opt, off = QPushButton("Run"), QCheckBox("option"), QCheckBox("was off")
    off.setEnabled(False)
    runner = JobRunner(host, busy=[run, opt, off])
    lay = QVBoxLayout(host)
    for w in (run, opt, off, runner.progress, runner.status, runner.cancel_button):
        lay.addWidget(w)
    host.show()
    gate = Gate(result={"n": 3})
    got: list[object] = []
    runner.succeeded.connect(got.append)
    assert runner.start(gate.job, "starting")
    assert not runner.start(gate.job)  # one at a time
    assert gate.started.wait(10)
    assert not run.isEnabled() and not opt.isEnabled() and runner.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: runner.status.text() == "working", timeout=5000)
    assert (runner.progress.value(), runner.progress.maximum()) == (1, 4)
    with qtbot.waitSignal(runner.idle, timeout=10000):
        gate.release.set()
    assert got == [{"n": 3}] and not runner.running
    assert run.isEnabled() and opt.isEnabled() and not off.isEnabled()  # as before the job
    assert not runner.cancel_button.isEnabled()
    assert runner.progress.value() == runner.progress.maximum() == 1


def test_runner_cancel_button_stops_the_job(qtbot) -> None:
    host = QWidget()
    qtbot.addWidget(host)
    runner = JobRunner(host)
    QVBoxLayout(host).addWidget(runner.cancel_button)
    host.show()
    gate = Gate()
    runner.start(gate.job)
    assert gate.started.wait(10)
    with qtbot.waitSignal(runner.cancelled, timeout=10000):
        qtbot.mouseClick(runner.cancel_button, Qt.MouseButton.LeftButton)
        assert runner.status.text() == "Cancelling…"
        gate.release.set()
    qtbot.waitUntil(lambda: not runner.running, timeout=10000)
    assert runner.status.text() == "Cancelled."


def test_runner_without_event_status_leaves_the_status_line_to_the_dialog(qtbot) -> None:
    """event_status=False (the Train dialog words its own status line from ``progressed``): the
    events' messages are not written, the bar still follows them, failure is still said."""
    host = QWidget()
    qtbot.addWidget(host)
    runner = JobRunner(host, event_status=False)
    seen: list[str] = []
    runner.progressed.connect(lambda ev: seen.append(runner.status.text()))
    gate = Gate()
    gate.release.set()
    with qtbot.waitSignal(runner.idle, timeout=10000):
        runner.start(gate.job, "starting")
    assert seen == ["starting", "starting"]  # never "working" / "almost"
    assert runner.progress.value() == runner.progress.maximum() == 1


# ----------------------------------------------------------------------------- Build Dataset
@pytest.fixture
def project(tmp_path: Path):
    """A project with one small PNG slide and one annotated area on disk."""
    from PIL import Image

    from crc_core.project import Project

    img = np.full((600, 800, 3), 200, np.uint8)
    img[100:500, 100:700] = (180, 90, 160)
    Image.fromarray(img).save(tmp_path / "slide.png")
    proj = Project.create(tmp_path / "proj", scheme=ClassScheme.three_class())
    entry = proj.add_slide(tmp_path / "slide.png")
    area = Annotation.rectangle("normal", 100, 100, 300, 300)
    proj.save_annotations(entry, AnnotationSet([area]))
    proj.save()
    return proj


def _build_dialog(qtbot, project):
    from app.dialogs.build_dataset import BuildDatasetDialog
    from crc_core.session import Session

    dlg = BuildDatasetDialog(Session(project))
    qtbot.addWidget(dlg)
    dlg.name_edit.setText("ds")
    dlg.show()
    return dlg


def test_build_dataset_disables_its_settings_while_building_and_closes_at_once(
    qtbot, project, monkeypatch, errors_seen
) -> None:
    import crc_core.patches

    gate = Gate()
    monkeypatch.setattr(crc_core.patches, "extract", gate.job)
    dlg = _build_dialog(qtbot, project)
    settings = [dlg.name_edit, dlg.patch_size, dlg.class_list, dlg.gland_exempt_list, dlg.level]
    qtbot.mouseClick(dlg.build_button, Qt.MouseButton.LeftButton)
    assert gate.started.wait(10)
    assert not dlg.build_button.isEnabled() and dlg.cancel_button.isEnabled()
    assert not any(w.isEnabled() for w in settings) and not dlg.mpp.isEnabled()
    _close_at_once(qtbot, dlg, gate)
    qtbot.waitUntil(lambda: dlg.build_button.isEnabled(), timeout=10000)
    assert all(w.isEnabled() for w in settings)
    assert not dlg.mpp.isEnabled()  # level, not µm/px, was chosen: stays so
    assert "incomplete" in dlg.status_label.text() and dlg.result is None
    assert not errors_seen


def test_build_dataset_cancel_click(qtbot, project, monkeypatch, errors_seen) -> None:
    import crc_core.patches

    gate = Gate()
    monkeypatch.setattr(crc_core.patches, "extract", gate.job)
    dlg = _build_dialog(qtbot, project)
    qtbot.mouseClick(dlg.build_button, Qt.MouseButton.LeftButton)
    assert gate.started.wait(10)
    with qtbot.waitSignal(dlg.buildCancelled, timeout=10000):
        qtbot.mouseClick(dlg.cancel_button, Qt.MouseButton.LeftButton)
        gate.release.set()
    qtbot.waitUntil(lambda: dlg.build_button.isEnabled(), timeout=10000)
    assert not dlg.cancel_button.isEnabled() and not errors_seen


def test_build_dataset_reads_annotation_files_in_the_worker(
    qtbot, project, monkeypatch, errors_seen
) -> None:
    """Issue 16 item 7: the other slides' annotation files are read off the GUI thread, with a
    copy of the scheme (the project is left as it is)."""
    import crc_core.annotations
    import crc_core.patches
    from crc_core.project import Project

    readers: list[threading.Thread] = []
    real = crc_core.annotations.load_annotations

    def spy(*args, **kwargs):
        readers.append(threading.current_thread())
        return real(*args, **kwargs)

    def no_project_read(self, *args, **kwargs):
        raise AssertionError("Project.load_annotations called by the build")

    monkeypatch.setattr(crc_core.annotations, "load_annotations", spy)
    monkeypatch.setattr(Project, "load_annotations", no_project_read)
    sources_seen: list[list] = []

    def fake_extract(sources, out, scheme, cfg):
        from crc_core.errors import DatasetError

        sources_seen.append(sources)
        yield Progress(0, 1, "extracting")
        raise DatasetError("stopped by the test")

    monkeypatch.setattr(crc_core.patches, "extract", fake_extract)
    dlg = _build_dialog(qtbot, project)
    with qtbot.waitSignal(dlg.buildFailed, timeout=10000):
        qtbot.mouseClick(dlg.build_button, Qt.MouseButton.LeftButton)
    assert readers and threading.main_thread() not in readers
    assert [len(s.annotations) for s in sources_seen[0]] == [1]
    assert errors_seen == [("Build Dataset", "stopped by the test")]
    assert dlg.status_label.text() == "Failed: stopped by the test"


# ----------------------------------------------------------------------------- Predict
@pytest.fixture
def win(qtbot, tmp_path: Path):
    from PIL import Image

    from app.main_window import MainWindow

    Image.fromarray(np.full((512, 512, 3), 180, np.uint8)).save(tmp_path / "small.png")
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    assert w.open_path(tmp_path / "small.png")
    return w


def _predict_dialog(qtbot, win, tmp_path: Path, monkeypatch, gate: Gate, check: Gate | None = None):
    import app.dialogs.mapping_preview as mp
    import app.dialogs.predict as predict

    monkeypatch.setattr(predict, "checked_predict", gate.job)
    quick = Gate(result=None)
    quick.release.set()
    monkeypatch.setattr(mp, "check_job", (check or quick).job)
    monkeypatch.setattr(mp, "mapping_text", lambda *a: "mapped")
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"not read: the job is a fake")
    dlg = win.open_analysis("predict")
    dlg.ckpt.setCurrentText(str(ckpt))
    dlg.set_scope("slide")
    return dlg


def test_predict_disables_its_options_while_running_and_cancel_click(
    qtbot, win, tmp_path, monkeypatch, errors_seen
) -> None:
    gate = Gate()
    dlg = _predict_dialog(qtbot, win, tmp_path, monkeypatch, gate)
    options = [dlg.ckpt, dlg.browse_button, dlg.batch, dlg.cam, dlg.device, dlg.backend,
               dlg.scope_buttons["slide"], dlg.scope_buttons["view"]]
    assert not dlg.scope_buttons["selection"].isEnabled()  # nothing selected
    qtbot.mouseClick(dlg.run_button, Qt.MouseButton.LeftButton)
    assert dlg.running and gate.started.wait(10)
    assert not dlg.run_button.isEnabled() and not any(w.isEnabled() for w in options)
    qtbot.mouseClick(dlg.cancel_button, Qt.MouseButton.LeftButton)
    gate.release.set()
    qtbot.waitUntil(lambda: not dlg.running, timeout=10000)
    assert dlg.status.text() == "Cancelled: nothing was saved."
    assert dlg.run_button.isEnabled() and all(w.isEnabled() for w in options)
    assert not dlg.scope_buttons["selection"].isEnabled()  # as it was
    assert not errors_seen


def test_closing_predict_during_a_prediction_returns_at_once(
    qtbot, win, tmp_path, monkeypatch, errors_seen
) -> None:
    gate = Gate()
    dlg = _predict_dialog(qtbot, win, tmp_path, monkeypatch, gate)
    qtbot.mouseClick(dlg.run_button, Qt.MouseButton.LeftButton)
    assert gate.started.wait(10)
    _close_at_once(qtbot, dlg, gate)
    qtbot.waitUntil(lambda: not dlg.running, timeout=10000)
    assert dlg.result is None and not win.results_panel.entries
    assert not errors_seen


def test_closing_predict_during_the_class_check_returns_at_once(
    qtbot, win, tmp_path, monkeypatch
) -> None:
    check = Gate(result=None)
    dlg = _predict_dialog(qtbot, win, tmp_path, monkeypatch, Gate(), check=check)
    qtbot.waitUntil(check.started.is_set, timeout=10000)  # 250 ms after the choice
    worker = dlg.preview.worker
    t0 = time.perf_counter()
    dlg.close()
    assert time.perf_counter() - t0 < CLOSE_S
    assert worker.isRunning()
    check.release.set()
    _wait_ended(qtbot, worker)
