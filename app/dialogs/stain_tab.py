"""The Stain tab of the slide properties: Macenko stain vectors of the slide, estimated in a worker.

The estimate (:func:`crc_core.stain.slide_stain_job`: up to 32 level-0 tissue windows of 224 px)
runs in a :class:`app.workers.JobWorker` when the tab is made; the tab says "estimating" until it
arrives and shows H and E as RGB optical-density unit vectors with a colour swatch each (the
colour of one unit of the stain on white), and their 99th percentile concentrations. Closing the
dialog cancels the worker without waiting for it.
"""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtWidgets import QFormLayout, QLabel, QWidget

from crc_core.slide import SlideReader
from crc_core.stain import IO, slide_stain_job


def _swatch(vec: list[float]) -> str:
    """HTML colour of one unit of a stain with OD vector ``vec`` on white light."""
    rgb = [max(0, min(255, round(IO * math.exp(-v)))) for v in vec]
    return "#{:02x}{:02x}{:02x}".format(*rgb)


class StainTab(QWidget):
    """Slide stain vectors (see module docstring)."""

    def __init__(self, slide: SlideReader, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from app.workers import JobWorker

        self.form = QFormLayout(self)
        self.status = QLabel("Estimating the stain vectors of this slide…")
        self.status.setWordWrap(True)
        self.form.addRow(self.status)
        self.result: dict[str, Any] | None = None
        self.worker = JobWorker(lambda: slide_stain_job(slide))
        self.worker.finished_ok.connect(self._on_worker_finished)
        self.worker.failed.connect(self._on_worker_failed)
        self.worker.start()

    def cancel(self) -> None:
        """Stop the estimate (non-blocking)."""
        self.worker.cancel()

    def _on_worker_failed(self, message: str) -> None:
        self.status.setText(f"The stain vectors could not be estimated: {message}")

    def _on_worker_finished(self, res: dict[str, Any]) -> None:
        self.result = res
        if not res.get("ok"):
            self.status.setText(f"No stain vectors: {res.get('reason')} (looked at "
                                f"{res.get('windows', 0)} tissue windows).")
            return
        self.status.setText(f"Macenko estimate from {res['windows']} tissue windows of "
                            f"{res['window_px']} px at level 0 ({res['pixels']:,} tissue pixels). "
                            f"Stain vectors are RGB optical densities (unit length).")
        for name, key, k in (("Hematoxylin", "hematoxylin", 0), ("Eosin", "eosin", 1)):
            vec = res[key]
            lab = QLabel(f"<span style='background:{_swatch(vec)}'>&nbsp;&nbsp;&nbsp;&nbsp;"
                         f"</span>&nbsp; R {vec[0]:.3f}, G {vec[1]:.3f}, B {vec[2]:.3f}; "
                         f"max. concentration {res['max_concentrations'][k]:.2f}")
            lab.setObjectName(f"stain-{key}")
            self.form.addRow(name + ":", lab)
