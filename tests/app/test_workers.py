"""JobWorker: a job's progress, warnings and result reach the GUI thread as their own signals."""

from __future__ import annotations

from app.workers import JobWorker
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
