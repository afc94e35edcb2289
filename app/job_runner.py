"""One job runner for the dialogs: a job in a worker, its progress bar, status line and Cancel.

A :class:`JobRunner` runs one :mod:`crc_core.jobs` generator at a time in an
:class:`app.workers.JobWorker` and drives the standard controls of a dialog that runs jobs:

* ``runner.progress`` (``QProgressBar``): busy (0, 0) until an event gives a total, then
  ``done / total``; full when the job succeeds, empty when it is cancelled or fails;
* ``runner.status`` (``QLabel``, word-wrapped): each event's message, ``Cancelling…``,
  ``Failed: <message>``, ``Cancelled.`` (the dialog may write its own text from its slots;
  ``event_status=False`` leaves the events' messages out, for a dialog that words its status line
  itself from ``progressed``, as the Train dialog does);
* ``runner.cancel_button`` (``QPushButton`` "Cancel"): enabled only while a job runs;
* the *busy widgets* (``busy=`` or :meth:`set_busy_widgets`): disabled while a job runs, each given
  back the enabled state it had when the job started.

The dialog lays the three controls out wherever it likes (``controls=False`` creates none, for a
helper that only wants the worker handling) and listens to the runner's signals, never to the
worker's::

    self.runner = JobRunner(self, busy=[self.run_button, self.options])
    self.runner.succeeded.connect(self._on_done)       # the job's return value
    self.runner.failed.connect(self._on_failed)        # one-line message (status says it already)
    self.runner.cancelled.connect(self._on_cancelled)
    layout.addWidget(self.runner.progress); layout.addWidget(self.runner.status)
    buttons.addWidget(self.runner.cancel_button)
    ...
    self.runner.start(lambda: my_job(...), "Reading…")  # False when one is running already
    ...
    def closeEvent(self, ev): self.runner.close(); super().closeEvent(ev)

Signals, on the GUI thread: ``progressed(Progress)`` (after the bar and status were updated),
``warned(str)`` (a ``JobWarning``: the job goes on; the runner has logged it on the ``app``
logger already, so it reaches the window's status bar, its Messages panel and the log file through
:mod:`app.messages`, never the terminal), then exactly one of ``succeeded(object)``,
``failed(str)`` (``failed_with(object)``, the exception itself, just before it),
``cancelled()``, and last ``idle()`` when the worker's thread has ended and the widgets are
enabled again (:attr:`running` is False from then on).

Closing: :meth:`close` (call it from the dialog's ``closeEvent`` / ``reject``) asks the job to stop
and returns at once; it never waits on the GUI thread. The worker has no Qt parent, so deleting
the dialog cannot destroy a running thread: :mod:`app.workers` keeps every live worker referenced
until its thread ends, and the application's quit waits for them
(:func:`app.workers.cancel_all_workers`). A job cancelled this way still emits ``cancelled`` (and
the dialog's slots run) if the dialog is still alive when the thread ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterable
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton, QWidget

from app.workers import JobWorker
from crc_core.jobs import Event, Progress

JobFactory = Callable[[], Generator[Event, None, Any]]
log = logging.getLogger(__name__)


class JobRunner(QObject):
    """Run one job at a time for a dialog (see the module docstring)."""

    progressed = Signal(object)  # Progress
    warned = Signal(str)
    succeeded = Signal(object)  # the job's return value
    failed_with = Signal(object)  # the exception (before failed)
    failed = Signal(str)  # one-line message
    cancelled = Signal()
    idle = Signal()  # the worker's thread ended; widgets enabled again

    def __init__(
        self,
        parent: QObject | None = None,
        *,
        busy: Iterable[QWidget] = (),
        controls: bool = True,
        cancel_text: str = "Cancel",
        event_status: bool = True,
    ) -> None:
        super().__init__(parent)
        self.worker: JobWorker | None = None
        self._event_status = event_status
        self._busy: list[QWidget] = list(busy)
        self._was_enabled: list[tuple[QWidget, bool]] = []
        self.progress: QProgressBar | None = None
        self.status: QLabel | None = None
        self.cancel_button: QPushButton | None = None
        if controls:
            self.progress = QProgressBar()
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self.status = QLabel("")
            self.status.setWordWrap(True)
            self.cancel_button = QPushButton(cancel_text)
            self.cancel_button.setEnabled(False)
            self.cancel_button.clicked.connect(self.cancel)

    # ------------------------------------------------------------------ API
    @property
    def running(self) -> bool:
        """A job's thread is running (from :meth:`start` until ``idle``)."""
        return self.worker is not None

    def set_busy_widgets(self, widgets: Iterable[QWidget]) -> None:
        """The widgets disabled while a job runs (takes effect at the next start)."""
        self._busy = list(widgets)

    def set_status(self, text: str) -> None:
        if self.status is not None:
            self.status.setText(text)

    def set_progress(self, done: int, total: int) -> None:
        """Show ``done / total``; ``total == 0`` is busy (an indeterminate bar)."""
        if self.progress is not None:
            self.progress.setRange(0, int(total))
            self.progress.setValue(int(done))

    def start(self, factory: JobFactory, message: str = "") -> bool:
        """Run ``factory()`` (a job generator) in a worker; False when a job is running already."""
        if self.worker is not None:
            return False
        self._was_enabled = [
            (w, not w.testAttribute(Qt.WidgetAttribute.WA_ForceDisabled)) for w in self._busy
        ]
        for w in self._busy:
            w.setEnabled(False)
        if self.cancel_button is not None:
            self.cancel_button.setEnabled(True)
        self.set_progress(0, 0)
        self.set_status(message)
        worker = JobWorker(factory)  # no parent: a closed or deleted dialog never ends its thread
        worker.progressed.connect(self._on_progressed)
        worker.warned.connect(self._on_warned)
        worker.finished_ok.connect(self._on_finished_ok)
        worker.failed_with.connect(self.failed_with)
        worker.failed.connect(self._on_failed)
        worker.cancelled.connect(self._on_cancelled)
        worker.finished.connect(self._on_thread_finished)
        self.worker = worker
        worker.start()
        return True

    def cancel(self) -> None:
        """Ask the running job to stop at its next event (returns at once)."""
        if self.worker is None:
            return
        self.set_status("Cancelling…")
        if self.cancel_button is not None:
            self.cancel_button.setEnabled(False)
        self.worker.cancel()

    def close(self) -> None:
        """The dialog closes: cancel without waiting (the thread ends on its own)."""
        self.cancel()

    # ------------------------------------------------------------------ worker signals
    def _on_progressed(self, ev: Progress) -> None:
        if ev.total:
            self.set_progress(int(ev.done), int(ev.total))
        if ev.message and self._event_status:
            self.set_status(ev.message)
        self.progressed.emit(ev)

    def _on_warned(self, message: str) -> None:
        log.warning("%s", message)  # to the window's messages (app.messages)
        self.warned.emit(message)

    def _on_finished_ok(self, result: Any) -> None:
        self.set_progress(1, 1)
        self.succeeded.emit(result)

    def _on_failed(self, message: str) -> None:
        self.set_progress(0, 1)
        self.set_status(f"Failed: {message}")
        self.failed.emit(message)

    def _on_cancelled(self) -> None:
        self.set_progress(0, 1)
        self.set_status("Cancelled.")
        self.cancelled.emit()

    def _on_thread_finished(self) -> None:
        self.worker = None
        for w, enabled in self._was_enabled:
            w.setEnabled(enabled)
        self._was_enabled = []
        if self.cancel_button is not None:
            self.cancel_button.setEnabled(False)
        self.idle.emit()
