"""Stain preview of the Build Dataset dialog: the sample patches as training would see them.

With a method chosen (``none``, ``macenko``, ``reinhard``), a normaliser is fitted exactly as
``crc train --stain-norm METHOD`` fits it (:func:`crc_core.stain.fit_from_table`: up to 64 of the
dataset's training patches, seed 0, at the patch size) and applied to the sample patches shown;
``none`` shows the patches as written. Fitting runs in a :class:`app.workers.JobWorker`.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QComboBox, QLabel

from app.viewer.tiles import array_to_qimage
from crc_core.jobs import Progress
from crc_core.stain import DEFAULT_TILES, METHODS, fit_from_table


def preview_job(out_dir: Path, rel_paths: list[str], method: str, seed: int = 0
                ) -> Generator[Progress, None, tuple[str, dict[str, np.ndarray]]]:
    """Normalised copies of ``rel_paths`` (dataset-relative) and the normaliser's description."""
    from crc_core.tables import load_table

    table = load_table(out_dir)
    train = [i for i, s in enumerate(table.samples) if s.split in (None, "train")]
    size = table.patch_size or 224
    norm = yield from fit_from_table(table, train or list(range(len(table))), method, size,
                                     DEFAULT_TILES, seed)
    out = {}
    for rel in rel_paths:
        with Image.open(out_dir / rel) as im:
            out[rel] = norm(np.asarray(im.convert("RGB")))
    return norm.describe(), out


class StainPreview(QObject):
    """The dialog's "Stain preview" combobox and what it does to the sample grid.

    Signals
    -------
    previewShown(str): the samples now show this ("" = as written).
    """

    previewShown = Signal(str)

    def __init__(self, dialog: Any) -> None:
        super().__init__(dialog)
        self.dialog = dialog
        self.combo = QComboBox()
        self.combo.addItems(list(METHODS))
        self.combo.setToolTip("Show the sample patches through the stain normalisation that "
                              "`crc train --stain-norm` would fit on this dataset's training "
                              "patches (the dataset itself is written unnormalised)")
        self.combo.currentTextChanged.connect(self._on_combo_changed)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.worker: Any = None

    def refresh(self) -> None:
        """Apply the chosen method to the samples on show (after a build or a change)."""
        self._on_combo_changed(self.combo.currentText())

    def _labels(self) -> list[QLabel]:
        return [lab for labs in self.dialog.sample_labels.values() for lab in labs]

    def _on_combo_changed(self, method: str) -> None:
        result = self.dialog.result
        if result is None or not self._labels():
            return
        if self.worker is not None:
            self.worker.cancel()
        out_dir = Path(result.out_dir)
        if method == "none":
            self._show(out_dir, {lab.toolTip(): None for lab in self._labels()}, "")
            return
        from app.workers import JobWorker

        rels = [lab.toolTip() for lab in self._labels()]
        self.note.setText(f"Fitting {method} stain normalisation on training patches…")
        worker = JobWorker(lambda: preview_job(out_dir, rels, method))
        worker.finished_ok.connect(lambda res: self._on_fitted(out_dir, res))
        worker.failed.connect(lambda msg: self.note.setText(f"No stain preview: {msg}"))
        self.worker = worker
        worker.start()

    def _on_fitted(self, out_dir: Path, res: tuple[str, dict[str, np.ndarray]]) -> None:
        self._show(out_dir, res[1], res[0])

    def _show(self, out_dir: Path, images: dict[str, np.ndarray | None], what: str) -> None:
        for lab in self._labels():
            rel = lab.toolTip()
            if rel not in images:
                continue
            arr = images[rel]
            pix = QPixmap(str(out_dir / rel)) if arr is None else QPixmap.fromImage(
                array_to_qimage(arr))
            if not pix.isNull():
                lab.setPixmap(pix.scaled(lab.width(), lab.height(),
                                         Qt.AspectRatioMode.KeepAspectRatio,
                                         Qt.TransformationMode.SmoothTransformation))
        self.note.setText(f"Samples shown through {what}." if what else "")
        self.previewShown.emit(what)
