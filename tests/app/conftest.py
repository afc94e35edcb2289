"""Fixtures of the GUI tests: fresh settings per test, leftover windows closed, error dialogs
recorded instead of shown, and an in-memory slide whose tile reads can be slowed down."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")


@pytest.fixture(autouse=True)
def viewer_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings and implicit projects under tmp_path (never the user's)."""
    home = tmp_path / "viewer-home"
    monkeypatch.setenv("CRC_VIEWER_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def close_leftover_windows(qapp):
    yield
    from PySide6.QtWidgets import QApplication

    for w in QApplication.topLevelWidgets():
        if w.isVisible():
            w.close()
        w.deleteLater()
    QApplication.processEvents()


@pytest.fixture
def errors_seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Error dialogs recorded as (title, message) instead of blocking."""
    seen: list[tuple[str, str]] = []
    import app.dialogs.errors as errs

    monkeypatch.setattr(errs, "show_error", lambda parent, title, msg: seen.append((title, msg)))
    return seen


class ArraySlide:
    """A numpy image served as a 2-level slide (the viewer's TileSource), optionally slow."""

    def __init__(self, width: int = 4096, height: int = 3072, delay: float = 0.0, seed: int = 0):
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:height, 0:width]
        img = np.empty((height, width, 3), np.uint8)
        img[..., 0] = (xx * 255 // max(1, width - 1)).astype(np.uint8)
        img[..., 1] = (yy * 255 // max(1, height - 1)).astype(np.uint8)
        img[..., 2] = rng.integers(60, 120, dtype=np.uint8)
        self.levels = [img, img[::4, ::4].copy()]
        self.level_count = 2
        self.level_dimensions = [(a.shape[1], a.shape[0]) for a in self.levels]
        self.level_downsamples = [1.0, width / self.levels[1].shape[1]]
        self.dimensions = self.level_dimensions[0]
        self.mpp = (0.5, 0.5)
        self.objective_power = 20.0
        self.delay = delay
        self.reads: list[tuple[int, int, int]] = []
        self._lock = threading.Lock()

    def best_level_for_downsample(self, ds: float) -> int:
        return max(i for i, d in enumerate(self.level_downsamples) if d <= ds * 1.001 or i == 0)

    def read_tile(self, level: int, col: int, row: int, tile_size: int = 256) -> np.ndarray:
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            self.reads.append((level, col, row))
        a = self.levels[level]
        return a[row * tile_size : (row + 1) * tile_size, col * tile_size : (col + 1) * tile_size]

    def thumbnail(self, max_px: int) -> np.ndarray:
        a = self.levels[-1]
        step = max(1, int(np.ceil(max(a.shape[:2]) / max_px)))
        return a[::step, ::step].copy()


@pytest.fixture
def make_array_slide():
    return ArraySlide


class Canvas:
    """Real mouse events on a main window's slide view, addressed in level-0 pixels."""

    def __init__(self, qtbot, win) -> None:
        self.qtbot, self.win = qtbot, win

    def point(self, x: float, y: float):
        from PySide6.QtCore import QPoint, QPointF

        p = self.win.view.l0_to_widget(QPointF(x, y))
        return QPoint(round(p.x()), round(p.y()))

    def drag(self, pts, button=None) -> None:
        from PySide6.QtCore import Qt

        button = button or Qt.MouseButton.LeftButton
        view = self.win.view
        self.qtbot.mousePress(view, button, pos=self.point(*pts[0]))
        for p in pts[1:]:
            self.qtbot.mouseMove(view, self.point(*p))
        self.qtbot.mouseRelease(view, button, pos=self.point(*pts[-1]))

    def click(self, x: float, y: float, button=None, double: bool = False) -> None:
        from PySide6.QtCore import Qt

        button = button or Qt.MouseButton.LeftButton
        fn = self.qtbot.mouseDClick if double else self.qtbot.mouseClick
        fn(self.win.view, button, pos=self.point(x, y))


@pytest.fixture
def cmu_window(qtbot, slides_dir):
    """The main window on cmu-1-small-region.svs (real slide), at half resolution."""
    from app.main_window import MainWindow

    w = MainWindow()
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    qtbot.waitExposed(w)
    assert w.open_path(slides_dir / "cmu-1-small-region.svs")
    w.view.set_view(1100, 1500, 0.5)
    return w


@pytest.fixture
def canvas(qtbot, cmu_window) -> Canvas:
    return Canvas(qtbot, cmu_window)


@pytest.fixture
def canvas_of(qtbot):
    """``canvas_of(window)``: a :class:`Canvas` on any main window."""
    return lambda win: Canvas(qtbot, win)


@pytest.fixture
def one_torch_thread():
    """One torch thread for a test that trains on the CPU (two cores, shared with other tests)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
