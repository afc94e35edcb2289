"""What the Results panel says about its overlays: the class map's legend and the CAM heatmap's
colour bar, the class it explains (chosen here) and the smoothed, stitched option.

:class:`ClassLegend` lists each class of the shown class map with its colour and share of the cells
shown (only the classes present, or all of the model's with "All classes"), and states how the
model's classes map onto the project's (class groups, :mod:`crc_core.scheme_map`).
:class:`CamControls` holds the CAM class combobox ("each window's predicted class" or one class),
the "Smoothed" box, the colour bar and a sentence on what the heatmap shows. Computing another
class's CAM runs :func:`crc_core.cam_stitch.class_cam_job` in a :class:`app.workers.JobWorker`
(the checkpoint stays loaded for the next class); smoothing is
:func:`crc_core.cam_stitch.smooth_cam`.
GUI thread only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QLinearGradient, QPainter, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from app.workers import JobWorker
from crc_core.cam_stitch import class_cam_job, smooth_cam

EACH_WINDOW = "Each window's predicted class"
SWATCH_PX = 14


def _swatch(color: tuple[int, int, int]) -> QLabel:
    pix = QPixmap(SWATCH_PX, SWATCH_PX)
    pix.fill(QColor(*color))
    label = QLabel()
    label.setPixmap(pix)
    label.setFixedSize(SWATCH_PX, SWATCH_PX)
    return label


class ClassLegend(QWidget):
    """Colour and name of each class of a class map (see module docstring)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.all_box = QCheckBox("All classes of the model")
        self.all_box.setToolTip("Also list the model's classes absent from the map shown")
        self.all_box.toggled.connect(self._fill)
        self.grid = QGridLayout()
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setHorizontalSpacing(6)
        self.grid.setVerticalSpacing(2)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(self.grid)
        lay.addWidget(self.all_box)
        lay.addWidget(self.note)
        self._scheme: Any = None
        self._counts: np.ndarray = np.zeros(0)
        self.rows: list[tuple[str, tuple[int, int, int]]] = []

    def set_map(self, scheme: Any, class_map: np.ndarray | None, note: str = "") -> None:
        """Show the classes of ``scheme`` found in ``class_map`` ((rows, cols), -1 = not shown)."""
        self._scheme = scheme
        n = len(scheme) if scheme is not None else 0
        cm = np.zeros(0, np.int64) if class_map is None else np.asarray(class_map).ravel()
        self._counts = np.bincount(cm[cm >= 0], minlength=n) if n else np.zeros(0)
        self.note.setText(note)
        self.note.setVisible(bool(note))
        self._fill()

    def _fill(self) -> None:
        while self.grid.count():
            w = self.grid.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        self.rows = []
        if self._scheme is None:
            return
        total = max(int(self._counts.sum()), 1)
        for k, c in enumerate(self._scheme):
            count = int(self._counts[k]) if k < len(self._counts) else 0
            if count == 0 and not self.all_box.isChecked():
                continue
            text = f"{c.name} — {count / total:.0%}" if count else f"{c.name} — absent"
            name = QLabel(text)
            name.setToolTip(f"{c.name}: {count} cells shown, colour {c.hex}")
            row = len(self.rows)
            self.grid.addWidget(_swatch(c.color), row, 0)
            self.grid.addWidget(name, row, 1)
            self.rows.append((c.name, c.color))
        if not self.rows:
            self.grid.addWidget(QLabel("No cell shown"), 0, 1)

    def shown_names(self) -> list[str]:
        return [n for n, _ in self.rows]


class ColorBar(QWidget):
    """A horizontal colour bar of a matplotlib colour map, 0 (left) to 1 (right)."""

    def __init__(self, cmap: str = "jet", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.cmap = cmap
        self.setMinimumHeight(30)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_colormap(self, name: str) -> None:
        self.cmap = name
        self.update()

    def color_at(self, value: float) -> tuple[int, int, int]:
        from matplotlib import colormaps

        r, g, b, _ = colormaps[self.cmap](float(np.clip(value, 0.0, 1.0)))
        return (round(r * 255), round(g * 255), round(b * 255))

    def paintEvent(self, _ev: Any) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        bar = QRectF(4, 2, max(1, self.width() - 8), 12)
        grad = QLinearGradient(bar.left(), 0, bar.right(), 0)
        for i in range(11):
            grad.setColorAt(i / 10, QColor(*self.color_at(i / 10)))
        p.fillRect(bar, grad)
        p.setPen(self.palette().text().color())
        p.drawRect(bar)
        text_rect = QRectF(bar.left(), bar.bottom() + 1, bar.width(), 14)
        p.drawText(text_rect, Qt.AlignmentFlag.AlignLeft, "0 low")
        p.drawText(text_rect, Qt.AlignmentFlag.AlignHCenter, "0.5")
        p.drawText(text_rect, Qt.AlignmentFlag.AlignRight, "1 high")
        p.end()


class CamControls(QWidget):
    """The CAM heatmap's class, smoothing, colour bar and statement, for the panel's current entry.

    ``panel`` is the :class:`app.panels.results.ResultsPanel`; its current entry's heat layer is
    repainted here. ``cache`` keeps the last checkpoint loaded for another class's CAM.
    """

    statementChanged = Signal(str)

    def __init__(self, panel: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.panel = panel
        self.class_combo = QComboBox()
        self.class_combo.setToolTip("The class the CAM heatmap explains (computed on demand)")
        self.class_combo.activated.connect(self._on_class_combo_activated)
        self.smooth_box = QCheckBox("Smoothed")
        self.smooth_box.setToolTip("One continuous heatmap: each window's CAM weighted by its "
                                   "probability of the class, stitched and blurred")
        self.smooth_box.toggled.connect(lambda _on: self.repaint_heat())
        self.bar = ColorBar()
        self.statement = QLabel("")
        self.statement.setWordWrap(True)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.class_combo, 1)
        row.addWidget(self.smooth_box)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row)
        lay.addWidget(self.bar)
        lay.addWidget(self.statement)
        self.cache: dict[str, Any] = {}
        self.worker: JobWorker | None = None

    # ------------------------------------------------------------------ state of the entry
    def sync(self) -> None:
        """Fill the combobox and the statement for the panel's current entry."""
        entry = self.panel.current_entry()
        has = entry is not None and entry.heat_layer is not None
        self.setEnabled(has and self.worker is None)
        self.class_combo.blockSignals(True)
        self.class_combo.clear()
        if has:
            self.class_combo.addItem(EACH_WINDOW, None)
            for c in entry.class_layer.scheme:
                self.class_combo.addItem(c.name, c.id)
            i = self.class_combo.findData(self._cam_class(entry))
            self.class_combo.setCurrentIndex(max(0, i))
        self.class_combo.blockSignals(False)
        self._state_text(entry)

    def _cam_pred(self, entry: Any) -> Any:
        return getattr(entry, "cam_pred", None) or entry.pred

    def _cam_class(self, entry: Any) -> str | None:
        pred = self._cam_pred(entry) if entry is not None else None
        return (pred.cam_info or {}).get("class") if pred is not None else None

    def _state_text(self, entry: Any) -> None:
        if entry is None or entry.heat_layer is None:
            text = "No CAM heatmap: predict with “Class activation map” checked."
        else:
            cid = self._cam_class(entry)
            scheme = entry.class_layer.scheme
            what = "each window's predicted class" if cid is None else scheme.get(cid).name
            text = (f"The CAM heatmap explains {what}: where in each window the model saw it "
                    f"(0 low, 1 high; each window scaled to its own maximum)")
            if self.smooth_box.isChecked():
                text += ("; smoothed: weighted by each window's probability of that class, "
                         "stitched and blurred over half a window")
            text += ". Shown with “Show CAM heatmap”."
        self.statement.setText(text)
        self.statementChanged.emit(text)

    # ------------------------------------------------------------------ painting
    def repaint_heat(self) -> None:
        entry = self.panel.current_entry()
        if entry is None or entry.heat_layer is None:
            return
        pred = self._cam_pred(entry)
        if pred is None or pred.cam is None:
            return
        values = pred.cam
        if self.smooth_box.isChecked():
            cid = self._cam_class(entry)
            values = smooth_cam(pred, class_index=None if cid is None else pred.scheme.index(cid))
        entry.heat_layer.show_values(values, pred.grid)
        self._state_text(entry)

    def set_colormap(self, name: str) -> None:
        self.bar.set_colormap(name)

    # ------------------------------------------------------------------ another class
    def _on_class_combo_activated(self, index: int) -> None:
        entry = self.panel.current_entry()
        if entry is None or entry.pred is None or self.worker is not None:
            return
        cid = self.class_combo.itemData(index)
        if cid == self._cam_class(entry):
            return
        slide, pred = self.panel.session.reader, entry.pred
        cache = self.cache
        self.worker = JobWorker(lambda: class_cam_job(slide, pred, cid, cache), self)
        self.worker.progressed.connect(self._on_worker_progressed)
        self.worker.finished_ok.connect(lambda p, e=entry: self._on_worker_finished_ok(e, p))
        self.worker.failed.connect(self._on_worker_failed)
        self.worker.finished.connect(self._on_worker_finished)
        self.setEnabled(False)
        self.statement.setText(f"Computing the CAM of {self.class_combo.itemText(index)}…")
        self.worker.start()

    def _on_worker_progressed(self, ev: Any) -> None:
        if ev.total:
            self.statement.setText(f"Computing the CAM: {ev.done} of {ev.total} windows…")

    def _on_worker_finished_ok(self, entry: Any, pred: Any) -> None:
        entry.cam_pred = pred
        if entry is self.panel.current_entry():
            self.repaint_heat()

    def _on_worker_failed(self, message: str) -> None:
        from app.dialogs import errors

        errors.report(self, "CAM heatmap", message)

    def _on_worker_finished(self) -> None:
        self.worker = None
        self.sync()

    def cancel(self) -> None:
        """Stop computing a CAM (the slide changed); never waits."""
        if self.worker is not None:
            self.worker.cancel()
