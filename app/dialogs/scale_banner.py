"""A banner that says which scale the gland filter assumes for the project's slides without mpp.

The notes come from :func:`crc_core.scale_notes.gland_scale_notes`, run in a :class:`JobWorker`
(it opens each slide's header), again whenever the gland threshold or the patch size changes.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QWidget

from app.widgets.labels import WrapLabel
from app.workers import JobWorker
from crc_core.project import Project
from crc_core.scale_notes import gland_scale_notes


class GlandScaleBanner(WrapLabel):
    """Hidden while every slide states its pixel size or the gland filter is off."""

    def __init__(self, project: Project, parent: QWidget | None = None) -> None:
        super().__init__("", parent)
        self.project = project
        self.setStyleSheet("background: #fff3cd; color: #664d03; padding: 6px; "
                           "border: 1px solid #ffe69c; border-radius: 4px;")
        self.setVisible(False)
        self._worker: JobWorker | None = None
        self._wanted: tuple[float | None, int] | None = None
        self._timer = QTimer(self, singleShot=True, interval=150)
        self._timer.timeout.connect(self._start)

    def refresh(self, min_gland: float | None, patch_size: int) -> None:
        """Recompute the notes for these settings (debounced; one worker at a time)."""
        self._wanted = (min_gland or None, int(patch_size))
        self._timer.start()

    def _slides(self) -> list[Any]:
        out = []
        for e in self.project.slides:
            if getattr(e, "exists", True):
                out.append(SimpleNamespace(path=Path(self.project.slide_path(e)), name=e.id,
                                           mpp=getattr(e, "mpp", None)))
        return out

    def _start(self) -> None:
        if self._worker is not None or self._wanted is None:
            self._timer.start()   # the previous read is still running: try again shortly
            return
        min_gland, size = self._wanted
        self._wanted = None
        slides = self._slides()
        self._worker = JobWorker(lambda: gland_scale_notes(slides, min_gland, size), self)
        self._worker.finished_ok.connect(self._on_worker_finished_ok)
        self._worker.finished.connect(self._on_worker_finished)
        self._worker.start()

    def _on_worker_finished_ok(self, notes: list[str]) -> None:
        self.setText("Scale assumed: " + " ".join(notes) if notes else "")
        self.setVisible(bool(notes))

    def _on_worker_finished(self) -> None:
        self._worker = None

    def stop(self) -> None:
        """Cancel a read in progress (the dialog is closing)."""
        self._timer.stop()
        if self._worker is not None:
            self._worker.cancel()
