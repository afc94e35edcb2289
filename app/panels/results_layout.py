"""The Results panel's layout (:mod:`app.panels.results`): the controls, scrolling when the dock is
short, over the region table, in a splitter. The legend comes right after the model, across the
form's width; the table keeps room for its rows, at least one and up to :data:`TABLE_MIN_ROWS`, and
the controls get the rest, so in a 1400 x 900 main window the legend's rows show without scrolling
when the table has fewer than eight rows. GUI thread only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFormLayout,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

if TYPE_CHECKING:
    from app.panels.results import ResultsPanel

TABLE_MIN_ROWS = 8
QWIDGETSIZE_MAX = 16777215


def legend_first(panel: ResultsPanel, form: QFormLayout) -> None:
    """The legend right under the model, across the form's width (its names are not cut)."""
    row, _ = form.getWidgetPosition(panel.legend)
    if row < 0:
        return
    taken = form.takeRow(row)
    label = taken.labelItem.widget() if taken.labelItem is not None else None
    if label is not None:
        label.deleteLater()
    model_row, _ = form.getWidgetPosition(panel.model_combo)
    form.insertRow(model_row + 1, panel.legend)


def fit_table_room(panel: ResultsPanel) -> None:
    """The table's minimum: header and its rows, at least one and at most :data:`TABLE_MIN_ROWS`.
    With fewer rows its pane is held to that height and the controls get the rest (the legend is
    not squeezed behind an empty table); with more, the splitter shares the space as before."""
    t = panel.table
    t.verticalHeader().setDefaultSectionSize(t.fontMetrics().height() + 8)  # compact rows
    rows = min(max(t.rowCount(), 1), TABLE_MIN_ROWS)
    t.setMinimumHeight(t.horizontalHeader().sizeHint().height()  # header, rows, scroll bar, frame
                       + rows * t.verticalHeader().defaultSectionSize()
                       + t.horizontalScrollBar().sizeHint().height() + 2 * t.frameWidth() + 2)
    pane = t.parentWidget()
    if pane is not None:  # fewer rows than TABLE_MIN_ROWS: the pane is no taller than they need
        few = t.rowCount() < TABLE_MIN_ROWS
        pane.setMaximumHeight(pane.minimumSizeHint().height() if few else QWIDGETSIZE_MAX)


def keep_legend_in_view(panel: ResultsPanel) -> None:
    """The controls' pane never gets shorter than the summary, the model and the legend's class
    rows: with a long region table (eight rows kept) the legend still shows in a 900 px window;
    the mapping statement under it may scroll."""
    scroll = panel.splitter.widget(0) if panel.splitter.count() else None
    if scroll is None:
        return
    spacing = 3 * 6  # the form's row spacing, three rows
    need = (panel.summary.sizeHint().height() + panel.model_combo.sizeHint().height()
            + panel.legend.grid.sizeHint().height() + spacing)
    scroll.setMinimumHeight(min(need, 320))


def controls_over_table(panel: ResultsPanel, form: QFormLayout) -> QSplitter:
    """The controls (scrolling when the dock is short; the legend first after the model) over the
    region table, in a splitter: the table keeps room for its rows (:func:`fit_table_room`)."""
    legend_first(panel, form)
    controls = QWidget()
    top = QVBoxLayout(controls)
    top.setContentsMargins(0, 0, 0, 0)
    top.addWidget(panel.summary)
    top.addLayout(form)
    top.addWidget(panel.hover_label)
    top.addStretch(1)
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QScrollArea.Shape.NoFrame)
    scroll.setWidget(controls)
    bottom = QWidget()
    low = QVBoxLayout(bottom)
    low.setContentsMargins(0, 0, 0, 0)
    low.addWidget(panel.disagree_box)
    low.addWidget(panel.table, 1)
    fit_table_room(panel)  # once the table is in its pane
    splitter = QSplitter(Qt.Orientation.Vertical)
    splitter.addWidget(scroll)
    splitter.addWidget(bottom)
    splitter.setChildrenCollapsible(False)
    splitter.setStretchFactor(0, 1)
    splitter.setStretchFactor(1, 2)
    return splitter
