"""Start-up: an unreadable file leaves a useful window and a non-zero exit status; the start page;
Python warnings go to the window and the log file, not the terminal."""

from __future__ import annotations

import threading
import warnings

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from app import __main__ as viewer_main
from app.main_window import MainWindow
from app.messages import log_file

L = Qt.MouseButton.LeftButton


@pytest.fixture
def broken_slide(tmp_path):
    p = tmp_path / "broken.svs"
    p.write_bytes(b"II*\x00" + b"\x13" * 5000)  # a TIFF header and then nothing usable
    return p


def run_main(monkeypatch, qtbot, argv, until, then=None):
    """Run ``crc-viewer ARGV`` in-process; its event loop runs until ``until(window)``, then
    ``then(window)`` (default: close it). Returns (exit status, window)."""
    seen: list[MainWindow] = []

    def fake_exec(*_args: object) -> int:
        win = next(w for w in QApplication.topLevelWidgets()
                   if isinstance(w, MainWindow) and w.isVisible())
        seen.append(win)
        qtbot.waitUntil(lambda: until(win), timeout=30000)
        (then or (lambda w: w.close()))(win)
        return 0

    monkeypatch.setattr(QApplication, "exec", fake_exec)
    return viewer_main.main(argv), seen[0]


def test_unreadable_slide_leaves_a_start_page_and_exits_2(
    monkeypatch, qtbot, capsys, errors_seen, broken_slide
):
    def until(win):
        return win.start_page.problem.isVisible()

    shown = {}

    def then(win):
        shown["page"] = win.pages.currentWidget() is win.start_page
        shown["problem"] = win.start_page.problem_text()
        shown["demo"] = win.start_page.demo_button.isVisible()
        win.close()

    rc, _win = run_main(monkeypatch, qtbot, [str(broken_slide)], until, then)
    assert rc == 2
    assert errors_seen and errors_seen[0][0] == "Cannot open"  # the message box
    assert shown["page"] and shown["demo"]
    assert shown["problem"].startswith("Could not open broken.svs\n")
    assert str(broken_slide) in shown["problem"]  # the reason names the file
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("crc-viewer: error: ") and "broken.svs" in err[0]


def test_exit_status_is_0_when_a_slide_opens_after_a_failed_start(
    monkeypatch, qtbot, errors_seen, broken_slide, slides_dir
):
    def then(win):
        win.open_path(slides_dir / "cmu-1-small-region.svs")
        assert win.pages.currentWidget() is win.view
        win.close()

    rc, _win = run_main(monkeypatch, qtbot, [str(broken_slide)],
                        lambda w: w.start_page.problem.isVisible(), then)
    assert rc == 0


def test_start_page_opens_recent_files_and_the_demo(qtbot, slides_dir, errors_seen):
    from app.settings import Settings

    settings = Settings()
    settings.add_recent(slides_dir / "kidney-48-5.tif")
    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    page = win.start_page
    assert win.pages.currentWidget() is page
    assert page.recent.count() == 1
    assert page.recent.item(0).text().startswith("kidney-48-5.tif")
    rect = page.recent.visualItemRect(page.recent.item(0))
    qtbot.mouseClick(page.recent.viewport(), L, pos=rect.center())
    qtbot.mouseDClick(page.recent.viewport(), L, pos=rect.center())
    qtbot.waitUntil(lambda: win.slide is not None, timeout=20000)
    assert win.pages.currentWidget() is win.view and win.slide.path.name == "kidney-48-5.tif"
    qtbot.keyClick(win.view, Qt.Key.Key_W, Qt.KeyboardModifier.ControlModifier)  # Close Slide
    assert win.pages.currentWidget() is page and win.slide is None
    assert not win.act_close.isEnabled()
    qtbot.mouseClick(page.demo_button, L)
    qtbot.waitUntil(lambda: win.slide is not None and win.document is not None, timeout=30000)
    assert win.project is not None and win.project.root.name == "demo"
    assert errors_seen == []


def test_python_warnings_go_to_the_window_and_the_log_not_the_terminal(qtbot, capfd):
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)

    def worker():  # a library warns from a worker thread (the core's jobs yield JobWarning)
        warnings.warn("the slide has no pixel size: windows cut at level 0", UserWarning,
                      stacklevel=1)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        t = threading.Thread(target=worker)
        t.start()
        t.join()
        qtbot.waitUntil(lambda: bool(win.messages.entries))
    level, text = win.messages.entries[-1][1:]
    assert level == "warning" and text.startswith("UserWarning: the slide has no pixel")
    assert "no pixel size" in win.statusBar().currentMessage()
    assert win.warn_button.isVisible() and win.warn_button.text() == "⚠ 1"
    qtbot.mouseClick(win.warn_button, L)
    dock = win.docks["messages"]
    assert dock.isVisible() and "UserWarning" in dock.widget().text.toPlainText()
    assert "UserWarning: the slide" in log_file().read_text(encoding="utf-8")
    captured = capfd.readouterr()
    assert "UserWarning" not in captured.err + captured.out


def test_a_path_that_did_not_open_is_told_in_the_one_line_of_error_message():
    from crc_core.errors import SlideError, error_message

    def line(exc: Exception) -> str:
        return viewer_main._open_error("/data/a.svs", exc)

    slide = SlideError("/data/a.svs: not a slide OpenSlide or Pillow can read")
    assert line(slide) == error_message(slide)
    own = OSError(13, "Permission denied", "/data/a.geojson")   # names its own file
    assert line(own) == "/data/a.geojson: Permission denied" == error_message(own)
    assert line(OSError(5, "Input/output error")) == "/data/a.svs: Input/output error"
    assert line(ValueError("bad level")) == "/data/a.svs: ValueError: bad level"
