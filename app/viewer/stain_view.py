"""View > Stain View: the slide shown through a model's stain normaliser.

:class:`StainedSource` wraps a slide (any ``TileSource``): its ``read_tile`` and ``thumbnail`` pass
the pixels through a :class:`crc_core.stain.StainNormalizer`. The view's :class:`TileLoader` calls
them in its pool threads, so normalising never runs on the GUI thread; switching swaps the
loader's source (:meth:`TileLoader.replace_source`) and keeps the view where it is. Each tile is
normalised on its own, as each prediction window is, and glass tiles pass through unchanged.

The normaliser is the current prediction's (stored in the prediction, ``resolution["stain"]``),
else one chosen with View > Choose Stain Normaliser (a checkpoint trained with ``--stain-norm``,
read in a :class:`app.workers.JobWorker`).
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog, QMenu

from crc_core.jobs import Progress
from crc_core.stain import StainNormalizer, from_checkpoint, normalizer_from_json

if TYPE_CHECKING:
    from app.main_window import MainWindow


class StainedSource:
    """A tile source whose tiles and thumbnail are stain-normalised (thread-safe as its slide)."""

    def __init__(self, source: Any, normalizer: StainNormalizer) -> None:
        self.base = source
        self.normalizer = normalizer

    def __getattr__(self, name: str) -> Any:     # geometry, mpp, path ... of the slide
        return getattr(self.base, name)

    def read_tile(self, level: int, col: int, row: int, tile_size: int = 256) -> np.ndarray:
        tile = np.ascontiguousarray(np.asarray(self.base.read_tile(level, col, row, tile_size))
                                    [..., :3])
        return self.normalizer(tile)

    def thumbnail(self, max_px: int) -> np.ndarray:
        return self.normalizer(np.ascontiguousarray(np.asarray(self.base.thumbnail(max_px))
                                                    [..., :3]))


def _load_normalizer(path: Path) -> Generator[Progress, None, StainNormalizer | None]:
    """The stain normaliser of a checkpoint file (a job: reading a checkpoint takes a moment)."""
    from crc_core.models import load_checkpoint

    yield Progress(0, 1, f"reading {path.name}")
    return from_checkpoint(load_checkpoint(path))


class StainViewController(QObject):
    """The View menu's stain actions and the state behind them.

    Signals
    -------
    normalizerChanged(str): the description of the normaliser now in use ("" for none).
    """

    normalizerChanged = Signal(str)

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.normalizer: StainNormalizer | None = None
        self.origin = ""                 # where the normaliser came from, for the status bar
        self._worker: Any = None
        self.act_toggle = QAction("&Stain View", self, checkable=True)
        self.act_toggle.setShortcut(QKeySequence("Ctrl+Shift+S"))
        self.act_toggle.setStatusTip("Show the slide through a model's stain normalisation")
        self.act_toggle.toggled.connect(self._on_toggle_toggled)
        self.act_choose = QAction("Choose Stain &Normaliser…", self)
        self.act_choose.setStatusTip("Use the stain normalisation of a checkpoint file")
        self.act_choose.triggered.connect(self.choose_checkpoint)
        window.slideOpened.connect(self._on_window_slideOpened)

    # ----------------------------------------------------------------- choosing
    def current_model_normalizer(self) -> tuple[StainNormalizer | None, str]:
        """The normaliser of the prediction shown in the Results panel, if it has one."""
        panel = getattr(self.window, "results_panel", None)
        entry = panel.current_entry() if panel is not None else None
        pred = getattr(entry, "pred", None)
        doc = ((pred.resolution or {}).get("stain") or {}).get("normalizer") if pred else None
        try:
            norm = normalizer_from_json(doc)
        except Exception:          # an old or damaged prediction file: no normaliser
            norm = None
        return norm, (f"model {entry.name}" if norm is not None and entry is not None else "")

    def choose_checkpoint(self) -> None:
        """Ask for a checkpoint and read its normaliser in a worker."""
        path, _ = QFileDialog.getOpenFileName(self.window, "Choose a checkpoint with stain "
                                              "normalisation", "", "Checkpoints (*.pt)")
        if not path:
            if self.normalizer is None:
                self.act_toggle.setChecked(False)
            return
        from app.workers import JobWorker

        worker = JobWorker(lambda: _load_normalizer(Path(path)))
        worker.finished_ok.connect(lambda norm: self._on_loaded(norm, Path(path)))
        worker.failed.connect(self._on_failed)
        self._worker = worker
        worker.start()

    def _on_loaded(self, norm: StainNormalizer | None, path: Path) -> None:
        if norm is None:
            self._on_failed(f"{path.name} was trained without stain normalisation "
                            f"(--stain-norm none): there is nothing to show")
            return
        self.set_normalizer(norm, f"checkpoint {path.name}")
        self.act_toggle.setChecked(True)

    def _on_failed(self, message: str) -> None:
        from app.dialogs.errors import show_error

        if self.normalizer is None:
            self.act_toggle.setChecked(False)
        show_error(self.window, "Stain view", message)

    def set_normalizer(self, norm: StainNormalizer | None, origin: str = "") -> None:
        self.normalizer, self.origin = norm, origin
        self.normalizerChanged.emit(norm.describe() if norm is not None else "")
        self._apply()

    # ----------------------------------------------------------------- showing
    def _on_toggle_toggled(self, on: bool) -> None:
        if on and self.normalizer is None:
            norm, origin = self.current_model_normalizer()
            if norm is None:
                self.choose_checkpoint()
                return
            self.normalizer, self.origin = norm, origin
        self._apply()

    def _on_window_slideOpened(self, _path: str) -> None:
        self._apply()

    def _apply(self) -> None:
        view = self.window.view
        loader = getattr(view, "loader", None)
        if loader is None or view.source is None:
            return
        on = self.act_toggle.isChecked() and self.normalizer is not None
        want = StainedSource(view.source, self.normalizer) if on else view.source
        current = loader.source
        if isinstance(current, StainedSource) == on and (
                not on or current.normalizer is self.normalizer):
            return
        loader.replace_source(want)
        view.update()
        bar = self.window.statusBar()
        bar.showMessage(f"Stain view: {self.normalizer.describe()} ({self.origin})" if on
                        else "Stain view off", 8000)


def install_stain_view(window: MainWindow, menu: QMenu) -> StainViewController:
    """Add the stain view's actions to ``menu`` (the View menu); returns the controller."""
    ctl = StainViewController(window)
    menu.addSeparator()
    menu.addAction(ctl.act_toggle)
    menu.addAction(ctl.act_choose)
    return ctl
