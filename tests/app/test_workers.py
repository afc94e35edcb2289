"""JobWorker: a job's progress, warnings and result reach the GUI thread as their own signals;
a failure as the one line of ``crc_core.errors.error_message``."""

from __future__ import annotations

import errno
import logging

import pytest

from app.workers import JobWorker
from crc_core.errors import ConfigError, error_message
from crc_core.jobs import JobWarning, Progress


def _job():
    yield Progress(1, 3, "reading")
    yield JobWarning("slide b: no pixel size; 0.5 µm/px assumed")
    yield Progress(3, 3, "done")
    return {"patches": 3}


def test_warnings_are_warned_not_progressed_and_the_result_arrives(qtbot):
    w = JobWorker(_job)
    progressed: list = []
    warned: list[str] = []
    w.progressed.connect(progressed.append)
    w.warned.connect(warned.append)
    with qtbot.waitSignal(w.finished_ok, timeout=10000) as sig:
        w.start()
    w.wait(5000)
    assert sig.args == [{"patches": 3}]
    assert warned == ["slide b: no pixel size; 0.5 µm/px assumed"]
    assert [(p.done, p.message) for p in progressed] == [(1, "reading"), (3, "done")]


def _failing(exc: BaseException):
    def job():
        yield Progress(0, 1, "starting")
        raise exc

    return job


def _failure(qtbot, exc: BaseException) -> str:
    w = JobWorker(_failing(exc))
    with qtbot.waitSignal(w.failed, timeout=10000) as sig:
        w.start()
    w.wait(5000)
    return sig.args[0]


@pytest.mark.parametrize("exc", [
    ConfigError("--lr 20 must be a positive number below 10"),
    OSError(errno.ENOSPC, "No space left on device", "/data/run/last.pt"),
    MemoryError(),
])
def test_a_failed_job_says_what_crc_says(qtbot, exc: BaseException):
    assert _failure(qtbot, exc) == error_message(exc)


def test_an_unexpected_error_is_named_as_one_and_its_traceback_logged(qtbot, caplog):
    with caplog.at_level(logging.ERROR, logger="app.workers"):
        message = _failure(qtbot, KeyError("arch"))
    assert message == "unexpected error: KeyError: 'arch'"
    assert "Traceback" in caplog.text and "KeyError" in caplog.text


def test_a_failure_carries_the_exception_object_before_its_line(qtbot):
    exc = ConfigError("--lr 20 must be a positive number below 10")
    w = JobWorker(_failing(exc))
    order: list = []
    w.failed_with.connect(lambda e: order.append(("exception", e)))
    w.failed.connect(lambda m: order.append(("line", m)))
    with qtbot.waitSignal(w.failed, timeout=10000):
        w.start()
    w.wait(5000)
    assert order == [("exception", exc), ("line", error_message(exc))]
    assert order[0][1] is exc      # the object itself: its type and attributes, not a copy


def test_the_runner_passes_the_exception_on_and_logs_warnings(qtbot, caplog):
    from app.job_runner import JobRunner

    runner = JobRunner(controls=False)
    caught: list[BaseException] = []
    warned: list[str] = []
    runner.failed_with.connect(caught.append)
    runner.warned.connect(warned.append)

    def job():
        yield JobWarning("tile_7.png: unreadable, skipped")
        raise KeyError("arch")

    with caplog.at_level(logging.WARNING, logger="app.job_runner"), \
            qtbot.waitSignal(runner.idle, timeout=10000):
        assert runner.start(job)
    assert len(caught) == 1 and isinstance(caught[0], KeyError)
    assert warned == ["tile_7.png: unreadable, skipped"]
    # logged on the app logger, which app.messages routes to the window (not the terminal)
    assert "tile_7.png: unreadable, skipped" in caplog.text
