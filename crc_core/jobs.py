"""Long jobs as generators: typed events, warnings as events, cancellation, and a plain driver.

Each long job in the core is a generator that yields events and *returns* its result
(``StopIteration.value``). Closing the generator (``gen.close()``) is cancellation: the job's
``try/finally`` blocks clean up and no half-written result is left behind. The CLI drives jobs with
a progress bar (:func:`crc_core.cli_progress.drive_with_bar`), tests and scripts with
:func:`run_job`, and the GUI from a QThread (``app/workers.py``). Nothing here is tied to a thread.

A job yields two kinds of event (:data:`Event`):

:class:`Progress`
    ``done``/``total``/``message``, and a typed ``payload`` for live displays
    (:data:`Payload`): :class:`TrainingStep` and :class:`EpochEnded` (``fit``),
    :class:`PredictionStarted` and
    :class:`BatchPredicted` (``predict``); some jobs add their own (``crc_core.train_eval``'s
    phase events, ``crc_core.scheme_map.MappingChosen``). Consumers tell payloads apart with
    ``isinstance``, never by dict keys.
:class:`JobWarning`
    a non-fatal problem: the job goes on. Warnings are events, the one channel for them: jobs take
    no ``warn=`` callback and never call :func:`warnings.warn`. Helpers deep inside a job that
    report through a callback are run with :func:`with_warnings`, which turns the callback's
    messages into events. Functions that are not jobs (reading a table, an annotation file) return
    their warnings in their result (or take a callback from the job that calls them).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, Union

if TYPE_CHECKING:
    import numpy as np

    from crc_core.classes import ClassScheme
    from crc_core.inference.grid import GridSpec

T = TypeVar("T")
log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- typed payloads
@dataclass(frozen=True)
class TrainingStep:
    """A training batch of epoch ``epoch`` (1-based) of ``epochs`` (yielded by
    :func:`crc_core.training.fit` with each per-batch :class:`Progress`), so a display names the
    epoch under way without working it out from step counts."""

    epoch: int
    epochs: int


@dataclass(frozen=True)
class EpochEnded:
    """A training epoch ended (yielded by :func:`crc_core.training.fit`).

    ``row`` is the epoch's history row (``epoch`` 1-based, ``train_loss``, ``train_acc``,
    ``val_loss``, ``val_acc``, ``val_bal_acc``, ``lr``, ``seconds``, ``images_per_s``; the
    validation values ``None`` without a validation set). ``run`` is ``None`` from ``fit``;
    :func:`crc_core.train_eval.train_and_evaluate` sets it to the
    :class:`~crc_core.train_eval.RunInfo` of the run the epoch belongs to.
    """

    row: dict[str, Any]
    run: Any = None


@dataclass(frozen=True)
class PredictionStarted:
    """A prediction is about to score its windows (yielded once by
    :func:`crc_core.inference.predict`, before any :class:`BatchPredicted`).

    ``grid`` is the window grid (:class:`~crc_core.inference.GridSpec`), ``selected`` the
    (rows, cols) bool array of the cells to predict, ``classes`` the
    :class:`~crc_core.classes.ClassScheme` of the outputs (the project's when mapped).
    """

    grid: GridSpec
    selected: np.ndarray
    classes: ClassScheme


@dataclass(frozen=True)
class BatchPredicted:
    """One batch of windows was scored (yielded by :func:`crc_core.inference.predict`).

    ``cells`` (N, 2) int32 grid rows/cols, ``probs`` (N, C) float32 class probabilities,
    ``cam`` (N, cam_tile, cam_tile) float32 CAM tiles or ``None`` (no CAM asked).
    """

    grid: GridSpec
    cells: np.ndarray
    probs: np.ndarray
    cam: np.ndarray | None = None


#: The typed payloads of the core's jobs (a job may define its own, e.g. train_eval's phases).
Payload = Union[TrainingStep, EpochEnded, PredictionStarted, BatchPredicted, Any]  # noqa: UP007


# ----------------------------------------------------------------------------- events
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
        Typed data for live displays (:data:`Payload`), or ``None``.
    """

    done: float
    total: float | None = None
    message: str = ""
    payload: Payload = None

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return max(0.0, min(1.0, self.done / self.total))


@dataclass(frozen=True)
class JobWarning:
    """A non-fatal problem a job reports and goes on: one line naming the file, image or option.

    Jobs yield it among their :class:`Progress` events. ``app.workers.JobWorker`` emits it as its
    ``warned`` signal (never as ``progressed``; the dialogs' runner also logs it, so it reaches the
    window's status bar and Messages panel), the CLI's
    :func:`crc_core.cli_progress.drive_with_bar` prints it as one ``crc: warning:`` line on stderr,
    and :func:`run_job` logs it (logger ``crc_core.jobs``, level WARNING) and hands it to
    ``on_progress`` like any event.
    """

    message: str


#: What a job yields.
Event = Progress | JobWarning


def with_warnings(make: Callable[[Callable[[str], None]], Generator[Event, None, T]]
                  ) -> Generator[Event, None, T]:
    """Job: ``make(warn)``, each message passed to ``warn`` yielded as a :class:`JobWarning`
    before the job's next event (also those said just before a failure: they often say why).

    Each message is yielded once, also when ``make``'s job yields the same :class:`JobWarning`
    twice (a comparison reads one table once per model). Closing this job closes ``make``'s.
    ``with_warnings(lambda _warn: job)`` only drops repeated warnings of ``job``.
    """
    pending: deque[str] = deque()
    said: set[str] = set()

    def flush() -> Iterator[JobWarning]:
        while pending:
            message = pending.popleft()
            if message not in said:
                said.add(message)
                yield JobWarning(message)

    job = make(pending.append)
    try:
        while True:
            try:
                ev = next(job)
            except StopIteration as stop:
                yield from flush()
                return stop.value
            except Exception:
                yield from flush()
                raise
            yield from flush()
            if isinstance(ev, JobWarning):
                pending.append(ev.message)
                yield from flush()
            else:
                yield ev
    finally:
        job.close()


def run_job(
    job: Generator[Event, None, T],
    on_progress: Callable[[Event], None] | None = None,
) -> T:
    """Drive ``job`` to completion and return its result; ``on_progress`` sees every event.

    Each :class:`JobWarning` is also logged (logger ``crc_core.jobs``, WARNING), so a script or
    benchmark that passes no ``on_progress`` still shows it; collect them with ``on_progress``.
    The generator is closed at the end, also when ``on_progress`` raises (its ``finally`` blocks
    run). To cancel a job, close it: drivers (``app/workers.py``, the CLI) do so between events.
    """
    try:
        while True:
            try:
                event = next(job)
            except StopIteration as stop:
                return stop.value
            if isinstance(event, JobWarning):
                log.warning("%s", event.message)
            if on_progress is not None:
                on_progress(event)
    finally:
        job.close()
