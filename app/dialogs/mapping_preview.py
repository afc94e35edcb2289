"""The Predict dialog's *Classes* line: how the chosen model's classes map onto the project's,
stated as soon as a model is chosen (before Predict is pressed).

The check (:func:`crc_core.scheme_map.check_job`: the checkpoint's class list read memory-mapped, no
weights) runs in a :class:`app.job_runner.JobRunner`, 250 ms after the last change of the choice; a
choice made while one check runs is checked when it ends. A refusal is stated in the line (the
error dialog comes only if Predict is pressed). Closing the dialog cancels a running check
without waiting. GUI thread only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QLabel

from app.job_runner import JobRunner
from app.widgets.labels import fit_height
from crc_core.scheme_map import check_job

DELAY_MS = 250


def mapping_text(smap: Any, summary: Any) -> str:
    said = smap.statement() or "The model's classes are the project's."
    return f"{said} (classes read in {summary.seconds:.2f} s, before loading the weights)"


class MappingPreview(QObject):
    """Keeps ``label`` telling how the model at ``path_text()`` maps onto ``scheme()``."""

    def __init__(self, label: QLabel, path_text: Callable[[], str],
                 scheme: Callable[[], Any], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.label, self.path_text, self.scheme = label, path_text, scheme
        self.runner = JobRunner(self, controls=False)  # the label is the only display
        self.runner.succeeded.connect(self._on_runner_succeeded)
        self.runner.failed.connect(self._on_runner_failed)
        self.runner.idle.connect(self._on_runner_idle)
        self._checking = Path()
        self._again = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DELAY_MS)
        self._timer.timeout.connect(self._start)

    @property
    def worker(self) -> Any:
        """The running check's worker (None when idle)."""
        return self.runner.worker

    def request(self) -> None:
        """The choice changed: check it shortly."""
        self.label.setText("")
        self._timer.start()

    def _start(self) -> None:
        if self.runner.running:
            self._again = True
            return
        path = Path(self.path_text().strip())
        if not path.name or not path.is_file():
            return
        scheme = self.scheme()
        self._checking = path
        self.runner.start(lambda: check_job(path, scheme))

    def _on_runner_succeeded(self, res: Any) -> None:
        self._on_checked(self._checking, mapping_text(*res))

    def _on_runner_failed(self, message: str) -> None:
        self._on_checked(self._checking, f"Refused: {message}")

    def _on_checked(self, path: Path, text: str) -> None:
        if path.name and Path(self.path_text().strip()) == path:
            self.label.setText(text)
            fit_height(self.label)  # the dialog grows to every line of the statement

    def _on_runner_idle(self) -> None:
        if self._again:
            self._again = False
            self._start()

    def hold(self) -> None:
        """No check pending (the prediction's own check states the mapping)."""
        self._timer.stop()
        self._again = False

    def stop(self) -> None:
        """The dialog closes: no check pending, a running one cancelled (never waited for)."""
        self.hold()
        self.runner.close()
