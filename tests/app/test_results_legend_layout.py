"""Issue 13 review layout defect: in a 1400 x 900 main window the Results panel's legend was
squeezed into a ~100 px scrolling strip (controls ~430 px, the region table keeping eight rows even
when empty). The legend now comes right after the model and the table keeps room only for the rows
it has (up to eight), so every legend row shows, unclipped, without scrolling or floating the
panel; a table of eight or more rows still has room for eight."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QPoint
from PySide6.QtWidgets import QLabel, QScrollArea
from shapely.geometry import box
from test_review_groups import _shipped_like_prediction

from app.main_window import MainWindow
from app.panels.results import TABLE_MIN_ROWS
from crc_core.classes import ClassScheme
from crc_core.scheme_map import scheme_map


@pytest.fixture
def win(qtbot, slides_dir: Path) -> MainWindow:
    w = MainWindow()
    qtbot.addWidget(w)
    w.resize(1400, 900)
    w.show()
    qtbot.waitExposed(w)
    assert w.open_path(slides_dir / "cmu-1-small-region.svs")
    assert w.size().height() == 900
    pred = _shipped_like_prediction()  # the shipped model's classes on the five-class scheme
    smap = scheme_map(ClassScheme.three_class(), ClassScheme.paper())
    pred.model["scheme_map"] = smap.statement()  # shown under the legend, as Predict does
    w.results_panel.add_prediction("demo_densenet121_3class", pred)
    w.docks["results"].raise_()
    qtbot.waitUntil(lambda: w.results_panel.isVisible(), timeout=3000)
    return w


def _scroll(win: MainWindow) -> QScrollArea:
    scroll = win.results_panel.splitter.widget(0)
    assert isinstance(scroll, QScrollArea)
    return scroll


def _clipped_rows(qtbot, win: MainWindow) -> list[str]:
    """Legend rows (swatch and name) not wholly inside the controls' visible area."""
    legend, viewport = win.results_panel.legend, _scroll(win).viewport()
    qtbot.wait(50)  # the layouts settle
    out = []
    for k in range(legend.grid.count()):
        w = legend.grid.itemAt(k).widget()
        if w is None or not w.isVisible():
            continue
        width = (w.fontMetrics().horizontalAdvance(w.text()) if isinstance(w, QLabel) and w.text()
                 else w.width())
        top_left = w.mapTo(viewport, QPoint(0, 0))
        inside = (top_left.x() >= 0 and top_left.y() >= 0
                  and top_left.x() + width <= viewport.width()
                  and top_left.y() + w.height() <= viewport.height())
        if not inside:
            out.append(w.text() if isinstance(w, QLabel) and w.text() else "swatch")
    return out


def test_legend_rows_show_unclipped_in_a_900_px_window(qtbot, win: MainWindow) -> None:
    panel = win.results_panel
    assert panel.legend.shown_names() == ["Normal", "Adenoma", "Adenocarcinoma"]
    assert panel.table.rowCount() == 0  # no annotation yet: the guide's step 3
    assert _scroll(win).verticalScrollBar().value() == 0
    assert _clipped_rows(qtbot, win) == []
    assert _scroll(win).viewport().height() >= 200  # not a ~100 px strip
    for i in range(3):  # a few regions: the table grows to show them, the legend still shows
        win.document.add("normal", box(10 + 300 * i, 10, 200 + 300 * i, 200))
    qtbot.waitUntil(lambda: panel.table.rowCount() == 3, timeout=5000)
    t = panel.table
    qtbot.waitUntil(lambda: t.viewport().height() >= 3 * t.verticalHeader().defaultSectionSize(),
                    timeout=3000)
    assert _clipped_rows(qtbot, win) == []


def test_a_long_table_still_keeps_room_for_eight_rows(qtbot, win: MainWindow) -> None:
    panel = win.results_panel
    for i in range(TABLE_MIN_ROWS + 1):
        x, y = 10 + 220 * (i % 6), 10 + 300 * (i // 6)
        win.document.add("adenoma", box(x, y, x + 200, y + 200))
    qtbot.waitUntil(lambda: panel.table.rowCount() == TABLE_MIN_ROWS + 1, timeout=5000)
    t = panel.table
    qtbot.waitUntil(lambda: t.viewport().height() // t.verticalHeader().defaultSectionSize()
                    >= TABLE_MIN_ROWS, timeout=3000)
    assert _clipped_rows(qtbot, win) == []  # and the legend's class rows still show beside it
