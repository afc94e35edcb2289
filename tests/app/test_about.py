"""Help > About: version, the study, EBHI-Seg and OpenSlide credits, licences; the app icon."""

from __future__ import annotations

import crc_core
from app.main_window import MainWindow


def _about_action(win: MainWindow):
    help_menu = next(a.menu() for a in win.menuBar().actions() if a.text() == "&Help")
    return next(a for a in help_menu.actions() if a.text() == "&About")


def test_help_about_names_version_study_data_and_licences(qtbot) -> None:
    win = MainWindow()
    qtbot.addWidget(win)
    _about_action(win).trigger()
    dlg = win.analysis_dialogs["about"]
    assert dlg.isVisible()
    text = dlg.text.text()
    for needle in (
        crc_core.__version__,
        "Kim, Koh &amp; Lee",
        "Multimedia Tools and Applications",
        "EBHI-Seg",
        "Frontiers in Medicine",
        "CC BY 4.0",
        "OpenSlide",
        "LGPL",
        "MIT",
    ):
        assert needle in text, needle


def test_main_window_and_about_use_the_app_icon(qtbot) -> None:
    win = MainWindow()
    qtbot.addWidget(win)
    assert not win.windowIcon().isNull()
    dlg = win.about()
    assert dlg.icon_label.pixmap() is not None and not dlg.icon_label.pixmap().isNull()
