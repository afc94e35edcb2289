"""Progress bars for the CLI: drive a core job generator with tqdm on stderr.

A job's :class:`~crc_core.jobs.JobWarning` is printed as one ``crc: warning: ...`` line on stderr
(:func:`warning_line`, as :func:`crc_core.cli.warn` prints), each message once, above the bar.
"""

from __future__ import annotations

import sys
from collections.abc import Generator
from typing import TypeVar

from crc_core.jobs import Event, JobWarning

T = TypeVar("T")


def warning_line(message: str) -> str:
    """The one stderr line of a warning (line breaks inside the message folded)."""
    return "crc: warning: " + " ".join(message.splitlines()) + "\n"


def drive_with_bar(job: Generator[Event, None, T], desc: str = "", quiet: bool = False) -> T:
    """Run ``job`` to completion showing a progress bar; return its result.

    The bar is hidden when ``quiet`` is set or stderr is not a terminal and ``CRC_PROGRESS`` is
    unset (then one line per 10% is printed instead, so logs stay short). Ctrl-C closes the job,
    whose ``finally`` blocks clean up.
    """
    import os

    from tqdm import tqdm

    show_bar = not quiet and (sys.stderr.isatty() or os.environ.get("CRC_PROGRESS") == "1")
    bar = tqdm(total=None, desc=desc, unit="", file=sys.stderr, dynamic_ncols=True,
               disable=not show_bar, leave=True)
    last_decile = -1
    said: set[str] = set()
    try:
        while True:
            try:
                ev = next(job)
            except StopIteration as stop:
                return stop.value
            if isinstance(ev, JobWarning):
                if ev.message not in said:
                    said.add(ev.message)
                    bar.write(warning_line(ev.message), file=sys.stderr, end="")
                continue
            if ev.total is not None and bar.total != ev.total:
                bar.total = ev.total
            bar.n = ev.done
            if ev.message:
                bar.set_postfix_str(ev.message, refresh=False)
            bar.refresh()
            if not show_bar and not quiet and ev.fraction is not None:
                decile = int(ev.fraction * 10)
                if decile > last_decile:
                    last_decile = decile
                    sys.stderr.write(f"{desc}: {decile * 10}% {ev.message}\n")
    finally:
        job.close()
        bar.close()
