"""The one bridge from core job generators to Qt threads.

A :class:`JobWorker` runs a :mod:`crc_core.jobs` generator in a ``QThread`` and turns each yielded
``Progress`` into the ``progressed`` signal, each ``JobWarning`` into ``warned``, the return value
into ``finished_ok``, an exception into ``failed_with`` (the exception object, for a caller that
tells failures apart by type) and then ``failed`` (the one line of
:func:`crc_core.errors.error_message`, for a dialog; ``"unexpected error: "`` before it, and the
traceback logged, for an exception that is a bug) and cancellation into ``cancelled``. Worker code
never touches widgets; the GUI never waits on a worker except :meth:`JobWorker.cancel_and_wait` at
quit. Modelled on superqt's GeneratorWorker: the quit flag is checked between yields and the
generator is closed, so its ``finally`` blocks clean up.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Generator
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal

from crc_core.errors import Cancelled, CrcError, error_message
from crc_core.jobs import Event, JobWarning

log = logging.getLogger(__name__)

_live: set[JobWorker] = set()


class JobWorker(QThread):
    """Run ``factory()`` (which returns a job generator) in a background thread."""

    progressed = Signal(object)  # Progress
    warned = Signal(str)  # a JobWarning's message: the job goes on
    finished_ok = Signal(object)  # the job's return value
    failed_with = Signal(object)  # the exception, emitted just before failed
    failed = Signal(str)  # one-line message for the user
    cancelled = Signal()

    def __init__(
        self, factory: Callable[[], Generator[Event, None, Any]], parent: QObject | None = None
    ):
        super().__init__(parent)
        self._factory = factory
        self._abort = False
        _live.add(self)
        self.finished.connect(lambda: _live.discard(self))

    def cancel(self) -> None:
        """Ask the job to stop at its next yield (non-blocking)."""
        self._abort = True

    def cancel_and_wait(self, msecs: int = 30000) -> bool:
        self.cancel()
        return self.wait(msecs)

    def run(self) -> None:  # noqa: D401 - QThread API
        gen = None
        try:
            gen = self._factory()
            while True:
                if self._abort:
                    gen.close()
                    self.cancelled.emit()
                    return
                try:
                    ev = next(gen)
                except StopIteration as stop:
                    self.finished_ok.emit(stop.value)
                    return
                if isinstance(ev, JobWarning):
                    self.warned.emit(ev.message)
                else:
                    self.progressed.emit(ev)
        except Cancelled:
            self.cancelled.emit()
        except (CrcError, MemoryError, OSError) as exc:
            self.failed_with.emit(exc)
            self.failed.emit(error_message(exc))
        except Exception as exc:  # a bug: log the traceback, tell the user in one line
            log.error("job failed:\n%s", traceback.format_exc())
            self.failed_with.emit(exc)
            self.failed.emit(f"unexpected error: {error_message(exc)}")
        finally:
            if gen is not None:
                gen.close()


def cancel_all_workers(msecs: int = 30000) -> None:
    """Cancel and join every live worker (called when the application quits)."""
    for w in list(_live):
        w.cancel_and_wait(msecs)
