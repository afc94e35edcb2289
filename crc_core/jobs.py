"""Long jobs as generators: progress events, cancellation, and a plain driver.

Each long job in the core is a generator that yields :class:`Progress` and *returns* its result
(``StopIteration.value``). Closing the generator (``gen.close()``) is cancellation: the job's
``try/finally`` blocks clean up and no half-written result is left behind. The CLI drives jobs with
a progress bar (:func:`crc_core.cli_progress.drive_with_bar`), tests with :func:`run_job`, and the
GUI from a QThread (``app/workers.py``). Nothing here is tied to a thread.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class Progress:
    """One progress event.

    Parameters
    ----------
    done, total
        Units of work done and expected (``total`` is ``None`` when unknown).
    message
        Short human text ("epoch 3/10", "reading windows").
    payload
        Optional data for live displays (a batch of predictions, a history row, ...).
    """

    done: float
    total: float | None = None
    message: str = ""
    payload: Any = None

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return max(0.0, min(1.0, self.done / self.total))


@dataclass(frozen=True)
class JobWarning:
    """A non-fatal problem a job reports and goes on: one line naming the file, image or option.

    Jobs yield it among their :class:`Progress` events. ``app.workers.JobWorker`` emits it as its
    ``warned`` signal (never as ``progressed``), the CLI's
    :func:`crc_core.cli_progress.drive_with_bar` prints it as a ``crc: warning:`` line, and
    :func:`run_job` hands it to ``on_progress`` like any event.
    """

    message: str


#: What a job yields.
Event = Progress | JobWarning


def run_job(
    job: Generator[Event, None, T],
    on_progress: Callable[[Event], None] | None = None,
) -> T:
    """Drive ``job`` to completion and return its result; ``on_progress`` sees every event.

    The generator is closed at the end, also when ``on_progress`` raises (its ``finally`` blocks
    run). To cancel a job, close it: drivers (``app/workers.py``, the CLI) do so between events.
    """
    try:
        while True:
            try:
                event = next(job)
            except StopIteration as stop:
                return stop.value
            if on_progress is not None:
                on_progress(event)
    finally:
        job.close()
