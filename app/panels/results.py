"""Prediction results panel: the models' maps of the open slide, their display, and region by region review.

One panel per main window (:func:`install_results_panel` adds it as the "Results" dock). It holds the
predictions of the open slide, each with a class map layer and (when computed) a CAM heatmap layer in
the view's layer stack. The panel chooses which model's layers are shown, optionally a second model to
compare with (its class map is shown too and the share of cells where both agree is given), the
classes shown, the confidence threshold and the heatmap's colour map. The class map has a legend and
the heatmap a colour bar, the class it explains (chosen here) and a smoothed option
(:mod:`app.panels.prediction_display`). A new prediction keeps the threshold and the classes
shown. Hovering the slide shows the probabilities of the patch under the cursor. The table has one
row per annotated region (label, predicted class, patches, mean confidence, share of patches
predicted as the label or as the model class that groups it, agreement and the share of each
class); it sorts by any column, can be limited to disagreements, and a click zooms the view to the
region and selects it. Its columns fit their class names, and the controls above it scroll, in a
splitter: the table keeps room for its rows, up to eight (one when it is empty), and the controls
get the rest, the legend first after the model, so the legend's rows show without scrolling in a
900 px high window.

The panel takes the window's :class:`crc_core.session.Session` (the project, the open slide, its
document; it records each finished prediction there), the :class:`app.viewer.view.SlideView` it
draws in and a status callback, not the window. Predictions are saved in the project
(:meth:`crc_core.project.Project.save_prediction`: ``predictions/<slide-id>/<name>.npz``) and
loaded again when the session's slide changes: read in a worker (:func:`saved_predictions_job` in
the panel's :class:`app.job_runner.JobRunner`) when the slide was opened from the UI, at once when
it was opened by :meth:`app.main_window.MainWindow.open_path`; ``savedLoaded`` says when they are
shown. GUI thread only; the prediction job itself runs in the Predict dialog's runner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDockWidget,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.annotate.document import AnnotationDocument
from app.job_runner import JobRunner
from app.panels.prediction_display import CamControls, ClassLegend
from app.panels.results_layout import TABLE_MIN_ROWS as TABLE_MIN_ROWS
from app.panels.results_layout import controls_over_table as _controls_over_table
from app.panels.results_layout import fit_table_room, keep_legend_in_view
from app.viewer.prediction_layers import COLORMAPS, ClassMapLayer, HeatmapLayer
from app.viewer.view import SlideView
from crc_core.annotations import Annotation
from crc_core.classes import ClassScheme
from crc_core.errors import CrcError, error_message
from crc_core.inference import GridSpec, Prediction, load_prediction
from crc_core.jobs import BatchPredicted, Event, Progress, run_job
from crc_core.regions import RegionResult, region_results
from crc_core.session import Session
from crc_core.slide import SlideReader

if TYPE_CHECKING:
    from app.main_window import MainWindow

log = logging.getLogger(__name__)

#: ``status(text, milliseconds)``: a line in the window's status bar (``QStatusBar.showMessage``)
StatusFn = Callable[[str, int], None]

FIXED_COLUMNS = ["Region", "Label", "Predicted", "Patches", "Confidence", "Label share",
                 "Agreement"]


@dataclass
class PredictionEntry:
    """One model's prediction of the open slide and its layers (``pred`` is None while running)."""

    name: str
    class_layer: ClassMapLayer
    heat_layer: HeatmapLayer | None
    pred: Prediction | None = None
    path: Path | None = None
    cam_pred: Prediction | None = None  # the CAM of another class, computed on demand


class _NumItem(QTableWidgetItem):
    """A table item that sorts by a number (empty cells last)."""

    def __init__(self, value: float | None, text: str) -> None:
        super().__init__(text)
        self.value = value

    def __lt__(self, other: QTableWidgetItem) -> bool:  # noqa: D105
        a = self.value if self.value is not None else float("inf")
        b = getattr(other, "value", None)
        b = b if b is not None else float("inf")
        return a < b


def classes_at(pred: Prediction, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Class index of ``pred`` at level-0 points (``-1`` off its predicted cells)."""
    r, c = pred.grid.cells_at(xs, ys)
    cmap = pred.class_map()
    if cmap.size == 0:
        return np.full(np.shape(r), -1)
    return np.where(r >= 0, cmap[np.maximum(r, 0), np.maximum(c, 0)], -1)


class ResultsPanel(QWidget):
    """See the module docstring: the predictions of ``session``'s slide, drawn in ``view``."""

    predictionsChanged = Signal()
    currentChanged = Signal(str)
    savedLoaded = Signal(int)  # the open slide's saved predictions are shown (how many)

    def __init__(
        self, session: Session[AnnotationDocument], view: SlideView,
        status: StatusFn | None = None, parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.session, self.view = session, view
        self._status = status or (lambda _text, _ms: None)
        self.loader = JobRunner(self, controls=False)  # saved predictions of a slide opened
        self.loader.succeeded.connect(self._on_loader_succeeded)  # from the UI
        self.loader.idle.connect(self._on_loader_idle)
        self._load_again = False
        self.entries: dict[str, PredictionEntry] = {}
        self.current: str | None = None
        self.compare: str | None = None
        self.results: list[RegionResult] = []

        self.model_combo = QComboBox()
        self.model_combo.currentTextChanged.connect(self._on_model_combo_changed)
        self.compare_combo = QComboBox()
        self.compare_combo.currentTextChanged.connect(self._on_compare_combo_changed)
        self.compare_label = QLabel("")
        self.class_boxes_row = QHBoxLayout()
        self.class_boxes: list[QCheckBox] = []
        self.threshold = QSlider(Qt.Orientation.Horizontal)
        self.threshold.setRange(0, 100)
        self.threshold.setToolTip("Hide cells whose top probability is below this value")
        self.threshold.valueChanged.connect(self._on_threshold_changed)
        self.threshold_label = QLabel("0.00")
        self.heat_box = QCheckBox("Show CAM heatmap")
        self.heat_box.toggled.connect(self._on_heat_box_toggled)
        self.cmap_combo = QComboBox()
        self.cmap_combo.addItems(list(COLORMAPS))
        self.cmap_combo.currentTextChanged.connect(self._on_cmap_changed)
        self.legend = ClassLegend()
        self.cam_controls = CamControls(self)
        self.hover_label = QLabel("")
        self.hover_label.setWordWrap(True)
        self.disagree_box = QCheckBox("Disagreements only")
        self.disagree_box.toggled.connect(self._apply_filter)
        self.table = QTableWidget(0, len(FIXED_COLUMNS))
        self.table.setHorizontalHeaderLabels(FIXED_COLUMNS)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.cellClicked.connect(self._on_table_cellClicked)
        self.summary = QLabel("No prediction for this slide: Analysis > Predict…")
        self.summary.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Model", self.model_combo)
        form.addRow("Compare with", self.compare_combo)
        form.addRow("", self.compare_label)
        form.addRow("Classes", self.class_boxes_row)
        thr = QHBoxLayout()
        thr.addWidget(self.threshold, 1)
        thr.addWidget(self.threshold_label)
        form.addRow("Min. confidence", thr)
        form.addRow("Legend", self.legend)
        form.addRow("", self.heat_box)
        form.addRow("CAM of", self.cam_controls)
        form.addRow("Heatmap colours", self.cmap_combo)
        self.splitter = _controls_over_table(self, form)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.splitter, 1)

        view.cursorMoved.connect(self._on_view_cursorMoved)
        session.on("slide_changed", self._on_session_slide_changed)
        self._document: AnnotationDocument | None = None
        self._refill_combos()

    # ------------------------------------------------------------------ entries and layers
    def begin(self, name: str, grid: GridSpec, scheme: ClassScheme, cam: bool) -> PredictionEntry:
        """Create (or replace) the entry ``name`` with empty layers, made current (progressive fill)."""
        previous = self.current_entry()
        self.remove(name)
        entry = PredictionEntry(
            name,
            ClassMapLayer(f"Class map — {name}", grid, scheme),
            HeatmapLayer(f"CAM — {name}", grid) if cam else None,
        )
        if previous is not None:
            _carry_display(previous.class_layer, entry.class_layer)
        self._add(entry)
        return entry

    def add_batch(self, name: str, batch: BatchPredicted) -> None:
        """Paint one :class:`~crc_core.jobs.BatchPredicted` of the running prediction ``name``."""
        entry = self.entries.get(name)
        if entry is None:
            return
        entry.class_layer.add_batch(batch.cells, batch.probs)
        if entry.heat_layer is not None:
            entry.heat_layer.add_batch(batch.cells, batch.cam)

    def finish(self, name: str, pred: Prediction, save: bool = True) -> PredictionEntry:
        """Install the final prediction of ``name`` (exact arrays) and save it in the project."""
        entry = self.entries.get(name)
        if entry is None:
            entry = self._entry_from_prediction(name, pred)
            self._add(entry)
        else:
            entry.class_layer.probs = pred.probs.copy()
            entry.class_layer.refresh()
            if entry.heat_layer is not None and pred.cam is not None:
                entry.heat_layer.show_values(pred.cam)
        entry.pred = pred
        if save:
            entry.path = self._save(name, pred)
        self.session.add_prediction(name, pred, entry.path)
        self._refill_combos()
        self._apply_visibility()
        self.cam_controls.repaint_heat()
        self.refresh_table()
        self.predictionsChanged.emit()
        return entry

    def add_prediction(
        self, name: str, pred: Prediction, path: Path | None = None, make_current: bool = True
    ) -> PredictionEntry:
        """Show an existing (loaded) prediction."""
        self.remove(name)
        entry = self._entry_from_prediction(name, pred)
        entry.path = path
        self._add(entry, make_current)
        self.session.add_prediction(name, pred, path)
        self.refresh_table()
        return entry

    def _entry_from_prediction(self, name: str, pred: Prediction) -> PredictionEntry:
        return PredictionEntry(
            name,
            ClassMapLayer.from_prediction(f"Class map — {name}", pred),
            HeatmapLayer(f"CAM — {name}", pred.grid, pred.cam) if pred.cam is not None else None,
            pred,
        )

    def _add(self, entry: PredictionEntry, make_current: bool = True) -> None:
        self.entries[entry.name] = entry
        stack = self.view.layers
        stack.add(entry.class_layer)
        if entry.heat_layer is not None:
            entry.heat_layer.visible = False  # shown with "Show CAM heatmap"
            stack.add(entry.heat_layer)
        if make_current or self.current is None:
            self.current = entry.name
        self._refill_combos()
        self._apply_visibility()

    def remove(self, name: str) -> None:
        entry = self.entries.pop(name, None)
        if entry is None:
            return
        self.session.remove_prediction(name)
        stack = self.view.layers
        stack.remove(entry.class_layer)
        if entry.heat_layer is not None:
            stack.remove(entry.heat_layer)
        if self.current == name:
            self.current = next(iter(self.entries), None)
        if self.compare == name:
            self.compare = None
        self._refill_combos()
        self._apply_visibility()
        self.refresh_table()

    def clear(self) -> None:
        for name in list(self.entries):
            self.remove(name)

    def current_entry(self) -> PredictionEntry | None:
        return self.entries.get(self.current) if self.current else None

    def set_current(self, name: str) -> None:
        if name in self.entries:
            self.current = name
            self._refill_combos()
            self._apply_visibility()
            self.refresh_table()
            self.currentChanged.emit(name)

    def set_compare(self, name: str | None) -> None:
        self.compare = name if name in self.entries and name != self.current else None
        self._refill_combos()
        self._apply_visibility()

    def _apply_visibility(self) -> None:
        for name, e in self.entries.items():
            show = name == self.current
            e.class_layer.visible = show or name == self.compare
            if e.heat_layer is not None and not show:
                e.heat_layer.visible = False
        cur = self.current_entry()
        has_heat = cur is not None and cur.heat_layer is not None
        self.heat_box.setEnabled(has_heat)
        if has_heat:
            cur.heat_layer.visible = self.heat_box.isChecked()  # type: ignore[union-attr]
        self._rebuild_class_boxes()
        self._update_legend()
        self.cam_controls.sync()
        self._update_compare_label()
        self._sync_layers_panel()

    def _sync_layers_panel(self) -> None:
        """Let the Layers panel show the visibility set here (it rebuilds on the stack's
        ``layersChanged``, emitted by add/remove only)."""
        self.view.layers.layersChanged.emit()

    def _refill_combos(self) -> None:
        names = list(self.entries)
        for combo, value, extra in (
            (self.model_combo, self.current, []),
            (self.compare_combo, self.compare, ["(none)"]),
        ):
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(extra + names)
            combo.setCurrentText(value if value else (extra[0] if extra else ""))
            combo.blockSignals(False)

    def _rebuild_class_boxes(self) -> None:
        while self.class_boxes_row.count():
            w = self.class_boxes_row.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        self.class_boxes = []
        cur = self.current_entry()
        if cur is None:
            return
        for i, c in enumerate(cur.class_layer.scheme):
            box = QCheckBox(c.name)
            box.setChecked(cur.class_layer.class_visible[i])
            box.setStyleSheet(f"QCheckBox {{ color: {c.hex}; font-weight: bold; }}")
            box.toggled.connect(lambda on, i=i: self._on_class_box_toggled(i, on))
            self.class_boxes_row.addWidget(box)
            self.class_boxes.append(box)
        self.threshold.blockSignals(True)
        self.threshold.setValue(int(round(cur.class_layer.threshold * 100)))
        self.threshold.blockSignals(False)
        self.threshold_label.setText(f"{cur.class_layer.threshold:.2f}")

    def _update_legend(self) -> None:
        cur = self.current_entry()
        if cur is None:
            self.legend.set_map(None, None)
            return
        note = (cur.pred.model.get("scheme_map", "") if cur.pred is not None else "") or ""
        self.legend.set_map(cur.class_layer.scheme, cur.class_layer.class_map(), note)
        keep_legend_in_view(self)

    def _update_compare_label(self) -> None:
        a, b = self.current_entry(), self.entries.get(self.compare) if self.compare else None
        if a is None or b is None or a.pred is None or b.pred is None:
            self.compare_label.setText("")
            return
        xs, ys = a.pred.grid.cell_centers()
        ca = a.pred.class_map()
        cb = classes_at(b.pred, xs, ys)
        both = (ca >= 0) & (cb >= 0)
        n = int(both.sum())
        if n == 0:
            self.compare_label.setText("the two predictions share no cell")
            return
        agree = float((ca[both] == cb[both]).mean())
        self.compare_label.setText(f"{agree:.0%} of {n} shared cells agree")

    # ------------------------------------------------------------------ saving and loading
    def predictions_folder(self) -> Path | None:
        return self.session.prediction_folder()

    def _save(self, name: str, pred: Prediction) -> Path | None:
        try:
            return self.session.save_prediction(name, pred)  # in the project, None without one
        except (CrcError, OSError) as exc:
            from app.dialogs import errors

            errors.report(self, "Cannot save prediction", error_message(exc))
            return None

    def load_saved(self, wait: bool = True) -> int:
        """Load the open slide's saved predictions (skipping damaged files, with a status message).

        ``wait``: here and now (a slide opened by :meth:`MainWindow.open_path`); else the files
        are read in a worker and the predictions appear when ``savedLoaded`` is emitted (0 is
        returned). Either way ``savedLoaded(n)`` says when they are shown."""
        self.clear()
        folder = self.predictions_folder()
        if folder is None or not folder.is_dir():
            self._update_summary()
            self.savedLoaded.emit(0)
            return 0
        slide = self.session.reader
        if wait:
            return self._show_saved(run_job(saved_predictions_job(folder, slide)))
        if self.loader.running:  # an older slide's files: cancelled, then this one's loaded
            self._load_again = True
            self.loader.cancel()
            return 0
        self.loader.start(lambda: saved_predictions_job(folder, slide))
        return 0

    def _on_loader_succeeded(self, loaded: SavedPredictions) -> None:
        if loaded.folder == self.predictions_folder() and loaded.slide is self.session.reader:
            self._show_saved(loaded)

    def _on_loader_idle(self) -> None:
        if self._load_again:
            self._load_again = False
            self.load_saved(wait=False)

    def _show_saved(self, loaded: SavedPredictions) -> int:
        for name, pred, path in loaded.predictions:
            self.add_prediction(name, pred, path, make_current=self.current is None)
        if loaded.skipped:
            self._status("Predictions skipped: " + "; ".join(loaded.skipped), 15000)
        self._update_summary()
        self.savedLoaded.emit(len(self.entries))
        return len(self.entries)

    # ------------------------------------------------------------------ table
    def _annotations(self) -> list[Annotation]:
        aset = self.session.annotations
        return list(aset) if aset is not None else []

    def refresh_table(self) -> None:
        cur = self.current_entry()
        self.table.setSortingEnabled(False)
        self.table.setRowCount(0)
        self.results = []
        if cur is None or cur.pred is None:
            self._update_summary()
            self.table.setSortingEnabled(True)
            return
        scheme = cur.pred.scheme
        label_scheme = self.session.scheme
        self.results = region_results(cur.pred, self._annotations(), label_scheme)
        headers = FIXED_COLUMNS + [f"{c.name} share" for c in scheme]
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        self.table.setRowCount(len(self.results))
        for row, r in enumerate(self.results):
            first = QTableWidgetItem(r.name or r.id[:8])
            first.setData(Qt.ItemDataRole.UserRole, r.id)
            agree = {True: "yes", False: "no", None: ""}[r.agreement]
            items = [
                first,
                QTableWidgetItem(r.label_name or ""),
                QTableWidgetItem(r.majority_name or "—"),
                _NumItem(r.n_patches, str(r.n_patches)),
                _NumItem(
                    r.mean_confidence,
                    "" if r.mean_confidence is None else f"{r.mean_confidence:.2f}",
                ),
                _NumItem(r.label_share, "" if r.label_share is None else f"{r.label_share:.0%}"),
                QTableWidgetItem(agree),
            ] + [
                _NumItem(r.shares.get(c.id, 0.0), f"{r.shares.get(c.id, 0.0):.0%}") for c in scheme
            ]
            for col, it in enumerate(items):
                self.table.setItem(row, col, it)
        self.table.setSortingEnabled(True)
        self._fit_columns(headers)
        self._apply_filter()
        self._update_summary()
        fit_table_room(self)

    def _fit_columns(self, headers: list[str]) -> None:
        """Columns wide enough for their header and cells: class names are never cut."""
        for col, text in enumerate(headers):
            item = self.table.horizontalHeaderItem(col)
            if item is not None:
                item.setToolTip(text)
        self.table.resizeColumnsToContents()

    def _apply_filter(self) -> None:
        only = self.disagree_box.isChecked()
        col = FIXED_COLUMNS.index("Agreement")
        for row in range(self.table.rowCount()):
            it = self.table.item(row, col)
            self.table.setRowHidden(row, only and (it is None or it.text() != "no"))

    def _update_summary(self) -> None:
        cur = self.current_entry()
        if cur is None:
            self.summary.setText("No prediction for this slide: Analysis > Predict…")
            return
        if cur.pred is None:
            self.summary.setText(f"{cur.name}: predicting…")
            return
        n = int(cur.pred.predicted.sum())
        known = [r for r in self.results if r.agreement is not None]
        agree = sum(1 for r in known if r.agreement)
        text = f"{cur.name}: {n} patches predicted"
        if known:
            text += f"; {agree} of {len(known)} labelled regions agree"
        self.summary.setText(text)

    # ------------------------------------------------------------------ handlers
    def _on_model_combo_changed(self, name: str) -> None:
        if name and name in self.entries and name != self.current:
            self.set_current(name)

    def _on_compare_combo_changed(self, name: str) -> None:
        self.set_compare(None if name in ("", "(none)") else name)

    def _on_class_box_toggled(self, index: int, on: bool) -> None:
        cur = self.current_entry()
        if cur is not None:
            cur.class_layer.set_class_visible(index, on)
            self._update_legend()

    def _on_threshold_changed(self, value: int) -> None:
        self.threshold_label.setText(f"{value / 100:.2f}")
        cur = self.current_entry()
        if cur is not None:
            cur.class_layer.set_threshold(value / 100)
            self._update_legend()

    def _on_heat_box_toggled(self, on: bool) -> None:
        cur = self.current_entry()
        if cur is not None and cur.heat_layer is not None:
            cur.heat_layer.visible = on
            self._sync_layers_panel()

    def _on_cmap_changed(self, name: str) -> None:
        self.cam_controls.set_colormap(name)
        for e in self.entries.values():
            if e.heat_layer is not None:
                e.heat_layer.set_colormap(name)

    def _on_view_cursorMoved(self, pt: QPointF | None) -> None:
        cur = self.current_entry()
        if pt is None or cur is None:
            self.hover_label.setText("")
            return
        probs = cur.class_layer.probabilities_at(pt.x(), pt.y())
        if probs is None:
            self.hover_label.setText("")
            return
        text = "  ".join(f"{k} {v:.2f}" for k, v in sorted(probs.items(), key=lambda kv: -kv[1]))
        self.hover_label.setText(f"Patch: {text}")

    def _on_table_cellClicked(self, row: int, _col: int) -> None:
        it = self.table.item(row, 0)
        if it is None:
            return
        rid = it.data(Qt.ItemDataRole.UserRole)
        r = next((x for x in self.results if x.id == rid), None)
        if r is None:
            return
        x0, y0, x1, y1 = r.geometry.bounds
        self.view.zoom_to_rect(QRectF(x0, y0, x1 - x0, y1 - y0))
        doc = self.session.document
        if doc is not None and doc.get(rid) is not None:
            doc.set_selection([rid])

    def reveal(self) -> None:
        """Show the panel's dock (when it is in one)."""
        dock = self.parentWidget()
        if isinstance(dock, QDockWidget):
            dock.show()

    def _on_session_slide_changed(self, _reader: SlideReader | None) -> None:
        self.cam_controls.cancel()  # its CAM belonged to the previous slide
        if self._document is not None:
            try:
                self._document.changed.disconnect(self.refresh_table)
            except (RuntimeError, TypeError):
                pass
        self._document = self.session.document
        if self._document is not None:
            self._document.changed.connect(self.refresh_table)
        self.load_saved(wait=not self.session.opened_in_background)


@dataclass
class SavedPredictions:
    """What :func:`saved_predictions_job` read: (name, prediction, path) each, and the skips."""

    folder: Path
    slide: SlideReader | None
    predictions: list[tuple[str, Prediction, Path]]
    skipped: list[str]


def saved_predictions_job(
    folder: Path, slide: SlideReader | None,
) -> Generator[Event, None, SavedPredictions]:
    """Read the saved predictions in ``folder`` (a slide's ``predictions/<slide-id>/``), skipping
    damaged files and those made on another file than ``slide`` (by fingerprint)."""
    fp = None
    if slide is not None:
        try:
            fp = slide.fingerprint()
        except CrcError:
            fp = None
    out = SavedPredictions(folder, slide, [], [])
    paths = sorted(folder.glob("*.npz"))
    for i, path in enumerate(paths):
        yield Progress(i, len(paths), f"Loading {path.name}")
        try:
            pred = load_prediction(path)
        except CrcError as exc:
            out.skipped.append(f"{path.name}: {exc}")
            continue
        if fp is not None and pred.slide.get("fingerprint") not in (None, fp):
            out.skipped.append(f"{path.name}: made on another file")
            continue
        out.predictions.append((str(pred.model.get("display_name") or path.stem), pred, path))
    return out


def _carry_display(old: ClassMapLayer, new: ClassMapLayer) -> None:
    """A new prediction keeps the threshold and the classes hidden (matched by class id)."""
    new.threshold = old.threshold
    hidden = {c.id for c, on in zip(old.scheme, old.class_visible, strict=True) if not on}
    new.class_visible = [c.id not in hidden for c in new.scheme]
    new.refresh()


def install_results_panel(window: MainWindow) -> ResultsPanel:
    """The window's results panel, created with its "Results" dock on first use."""
    panel = getattr(window, "results_panel", None)
    if isinstance(panel, ResultsPanel):
        return panel
    panel = ResultsPanel(window.session, window.view, window.statusBar().showMessage)
    dock = QDockWidget("Results", window)
    dock.setObjectName("dock-results")
    dock.setWidget(panel)
    window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
    window.docks["results"] = dock
    window.results_panel = panel
    if window.session.reader is not None:
        panel._on_session_slide_changed(window.session.reader)
    return panel
