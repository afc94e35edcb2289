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
