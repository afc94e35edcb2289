"""Evaluation report panel: the paper's Tables 3 and 4, ROC curves, confusion matrix, curves.

Reads what :func:`crc_core.evaluation.evaluate` and :func:`crc_core.training.fit` write through
:mod:`crc_core.runs`, the reader ``crc compare`` uses too (a file is refused with the same message):
an evaluation folder (``metrics.json``, ``predictions.csv``), a run folder (``history.csv``, and its
evaluation in ``eval/``), or a folder of runs (each child added, as ``crc compare`` does). Several
models share the two tables (one row per model in Table 3, one per class and model in Table 4); the
plots show the model picked in the combo box. Reading is quick (small CSV/JSON files) and happens in
the GUI thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.dialogs import errors
from app.widgets.plots import ConfusionCanvas, CurvesCanvas, RocCanvas
from crc_core.errors import CrcError, error_message
from crc_core.evaluation import table3, table4
from crc_core.runs import RunResult, read_run, run_children


class ReportPanel(QWidget):
    """Tables in the layout of the paper's Tables 3 and 4 plus ROC, confusion and curve plots."""

    resultsChanged = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.results: dict[str, RunResult] = {}

        self.title = QLabel("No evaluation loaded")
        self.title.setStyleSheet("font-weight: bold")
        self.open_button = QPushButton("Open folder…")
        self.open_button.setToolTip("A run folder (history.csv, eval/), an evaluation folder "
                                    "(metrics.json) or a folder of runs such as the project's "
                                    "models/")
        self.open_button.clicked.connect(self._on_open_clicked)
        self.html_button = QPushButton("Open report.html")
        self.html_button.setEnabled(False)
        self.html_button.clicked.connect(self._on_html_clicked)
        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.open_button)
        top.addWidget(self.html_button)

        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.table3 = self._make_table()
        self.table4 = self._make_table()
        self.model_combo = QComboBox()
        self.model_combo.currentTextChanged.connect(self._on_model_combo_changed)
        self.roc = RocCanvas()
        self.confusion = ConfusionCanvas()
        self.curves = CurvesCanvas()
        roc_cm = QSplitter(Qt.Orientation.Horizontal)
        roc_cm.addWidget(self.roc)
        roc_cm.addWidget(self.confusion)
        self.plots = QTabWidget()
        self.plots.addTab(roc_cm, "ROC and confusion matrix")
        self.plots.addTab(self.curves, "Loss and accuracy")

        row = QHBoxLayout()
        row.addWidget(QLabel("Plots of"))
        row.addWidget(self.model_combo, 1)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addWidget(self.summary)
        lay.addWidget(QLabel("Overall (Table 3 layout; macro means over the classes)"))
        lay.addWidget(self.table3)
        lay.addWidget(QLabel("Per class (Table 4 layout)"))
        lay.addWidget(self.table4)
        lay.addLayout(row)
        lay.addWidget(self.plots, 1)

    @staticmethod
    def _make_table() -> QTableWidget:
        t = QTableWidget(0, 0)
        t.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        t.setAlternatingRowColors(True)
        t.verticalHeader().setVisible(False)
        t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        t.horizontalHeader().setStretchLastSection(False)
        t.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        return t

    # ------------------------------------------------------------------ loading
    def clear(self) -> None:
        self.results.clear()
        self._refresh()

    def open_folder(self, folder: str | Path) -> None:
        """Show ``folder`` alone: a run, an evaluation, or a folder of runs (each one added).

        Raises
        ------
        CrcError
            When nothing in ``folder`` can be read as a run or an evaluation.
        """
        path = Path(folder)
        try:
            results = [read_run(path)]
        except CrcError:
            children = run_children(path)
            if not children:
                raise
            results = [read_run(c) for c in children]
        self.results.clear()
        for r in results:
            self._insert(r)
        self._refresh()

    def add_folder(self, folder: str | Path) -> RunResult:
        """Add (or replace, same folder) the model of ``folder`` next to those already shown."""
        res = read_run(folder)
        self._insert(res)
        self._refresh(select=res.name)
        return res

    def _insert(self, res: RunResult) -> None:
        for key, old in list(self.results.items()):
            if old.folder.resolve() == res.folder.resolve():
                del self.results[key]
        name = res.name
        if name in self.results:
            name = f"{res.name} ({res.folder.name})"
        res.name = name
        self.results[name] = res

    def _on_open_clicked(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a run or evaluation folder")
        if not path:
            return
        try:
            self.open_folder(path)
        except CrcError as exc:
            errors.report(self, "Cannot open report", error_message(exc))

    def _on_html_clicked(self) -> None:
        res = self.results.get(self.model_combo.currentText())
        if res is not None and res.report_html is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(res.report_html)))

    # ------------------------------------------------------------------ display
    def evaluated(self) -> dict[str, dict[str, Any]]:
        """Metrics of the models that have an evaluation, by model name."""
        return {k: r.metrics for k, r in self.results.items() if r.metrics is not None}

    def _fill(self, table: QTableWidget, header: list[str], rows: list[list[Any]]) -> None:
        table.clear()
        table.setColumnCount(len(header))
        table.setRowCount(len(rows))
        table.setHorizontalHeaderLabels(header)
        for i, r in enumerate(rows):
            for j, v in enumerate(r):
                if v is None:
                    text = "–"
                elif isinstance(v, float):
                    text = f"{v:.4f}"
                else:
                    text = str(v)
                item = QTableWidgetItem(text)
                if isinstance(v, int | float) or v is None:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight
                                          | Qt.AlignmentFlag.AlignVCenter)
                table.setItem(i, j, item)
        table.resizeColumnsToContents()

    @staticmethod
    def _fit_height(table: QTableWidget, max_rows: int) -> None:
        """Make ``table`` as tall as its rows (at most ``max_rows``, then it scrolls)."""
        table.resizeRowsToContents()
        rows = sum(table.rowHeight(i) for i in range(min(table.rowCount(), max_rows)))
        rows = rows or table.verticalHeader().defaultSectionSize()
        table.setFixedHeight(table.horizontalHeader().sizeHint().height() + rows
                             + 2 * table.frameWidth() + 2)

    def _refresh(self, select: str | None = None) -> None:
        evaluated = self.evaluated()
        h3, r3 = table3(evaluated) if evaluated else ([], [])
        h4, r4 = table4(evaluated) if evaluated else ([], [])
        self._fill(self.table3, h3, r3)
        self._fill(self.table4, h4, r4)
        self._fit_height(self.table3, max_rows=6)
        self._fit_height(self.table4, max_rows=12)
        current = select or self.model_combo.currentText()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.model_combo.addItems(list(self.results))
        if current in self.results:
            self.model_combo.setCurrentText(current)
        self.model_combo.blockSignals(False)
        if not self.results:
            self.title.setText("No evaluation loaded")
        elif len(self.results) == 1:
            self.title.setText(f"Evaluation of {next(iter(self.results))}")
        else:
            self.title.setText(f"{len(self.results)} models: {', '.join(self.results)}")
        self._show_model(self.model_combo.currentText())
        self.resultsChanged.emit()

    def _on_model_combo_changed(self, name: str) -> None:
        self._show_model(name)

    def _show_model(self, name: str) -> None:
        res = self.results.get(name)
        self.html_button.setEnabled(res is not None and res.report_html is not None)
        self.curves.clear()
        if res is None:
            self.summary.setText("")
            self.roc.plot(np.zeros(0, dtype=int), np.zeros((0, 0)), [])
            self.confusion.plot(np.zeros((0, 0), dtype=int), [])
            return
        if res.history:
            self.curves.set_history(res.history, run=res.name)
        m = res.metrics
        if m is None:
            self.summary.setText(f"{res.folder}: training run with {len(res.history)} epoch(s), "
                                 f"not evaluated yet (crc evaluate --checkpoint "
                                 f"{res.folder / 'best.pt'} ...)")
            self.roc.plot(np.zeros(0, dtype=int), np.zeros((0, 0)), [])
            self.confusion.plot(np.zeros((0, 0), dtype=int), [])
            self.plots.setCurrentWidget(self.curves)
            return
        names = [str(n) for n in m.get("classes") or list(m["per_class"])]
        parts = [f"{res.name}", f"accuracy {m.get('accuracy', 0):.4f}"]
        if m.get("n") is not None:
            parts.append(f"{m['n']} images ({m.get('subset', '?')} subset)")
        if m.get("epoch") is not None:
            ck = Path(str(m.get("checkpoint") or "")).name or "checkpoint"
            parts.append(f"{ck} of epoch {m['epoch']}")
        if m.get("skipped"):
            parts.append(f"{m['skipped']} unreadable skipped")
        # What was scored and at which scale, as the report states them (never left unsaid).
        said = [f"Scored: {m['subset_how']}." if m.get("subset_how") else "",
                f"Scale: {m['scale']}." if m.get("scale") else ""]
        self.summary.setText("\n".join([" · ".join(parts), *[s for s in said if s],
                                        str(res.folder)]))
        if res.probs.size:
            self.roc.plot(res.y_true, res.probs, names, title=f"{res.name} ROC")
        else:
            self.roc.plot(np.zeros(0, dtype=int), np.zeros((0, 0)), [],
                          title="ROC (no predictions.csv)")
        if m.get("confusion") is not None:
            self.confusion.plot(m["confusion"], names, title=f"{res.name} confusion")
