"""crc_core.jobs: the plain driver and the CLI bar pass warnings on and return the job's result."""

from __future__ import annotations

from crc_core.cli_progress import drive_with_bar
from crc_core.jobs import JobWarning, Progress, run_job


def _job(closed: list[bool]):
    try:
        yield Progress(0, 2, "start")
        yield JobWarning("tile_7.png: unreadable, skipped")
        yield Progress(2, 2, "done")
        return "result"
    finally:
        closed.append(True)


def test_run_job_hands_warnings_to_on_progress_and_returns_the_result():
    seen: list = []
    closed: list[bool] = []
    assert run_job(_job(closed), seen.append) == "result"
    assert [type(e).__name__ for e in seen] == ["Progress", "JobWarning", "Progress"]
    assert seen[1].message == "tile_7.png: unreadable, skipped"
    assert closed == [True]


def test_drive_with_bar_prints_a_warning_line_and_returns_the_result(capsys):
    closed: list[bool] = []
    assert drive_with_bar(_job(closed), desc="job") == "result"
    err = capsys.readouterr().err
    assert "crc: warning: tile_7.png: unreadable, skipped" in err.splitlines()
    assert "job: 100% done" in err and closed == [True]


def test_drive_with_bar_prints_each_warning_once_as_one_line(capsys):
    def job():
        yield JobWarning("a.csv: no group column; each image is its own group")
        yield Progress(1, 2, "half")
        yield JobWarning("a.csv: no group column; each image is its own group")
        yield JobWarning("two\nlines")
        return 7

    assert drive_with_bar(job(), desc="job", quiet=True) == 7
    err = capsys.readouterr().err.splitlines()
    assert err == ["crc: warning: a.csv: no group column; each image is its own group",
                   "crc: warning: two lines"]


def test_run_job_logs_each_warning(caplog):
    with caplog.at_level("WARNING", logger="crc_core.jobs"):
        run_job(_job([]))
    assert [r.getMessage() for r in caplog.records] == ["tile_7.png: unreadable, skipped"]


def test_with_warnings_turns_a_callback_into_events_once_also_before_a_failure():
    from crc_core.jobs import with_warnings

    closed: list[bool] = []

    def make(warn):
        try:
            warn("no validation set")
            yield Progress(0, 1, "start")
            warn("no validation set")
            yield JobWarning("no validation set")
            warn("out of memory: batch halved to 4")
            raise RuntimeError("boom")
        finally:
            closed.append(True)

    seen: list = []
    try:
        run_job(with_warnings(make), seen.append)
    except RuntimeError:
        pass
    assert [e.message for e in seen] == [
        "no validation set", "start", "out of memory: batch halved to 4"]
    assert closed == [True]
