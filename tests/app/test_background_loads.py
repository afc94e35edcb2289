"""Issue 16 item 7: a slide opened from the UI brings its saved predictions (.npz) from a worker,
never read on the GUI thread; the programmatic open_path still shows them at once."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from crc_core.classes import ClassScheme
from crc_core.inference import GridSpec, Prediction

SCHEME = ClassScheme.three_class()


def _prediction() -> Prediction:
    probs = np.full((3, 2, 3), np.nan, dtype=np.float32)
    probs[:, 0, 0] = (0.9, 0.05, 0.05)
    probs[:, 1, 2] = (0.3, 0.3, 0.4)
    g = GridSpec((100, 200), 50, 50, 2, 3, 0, 50, 64, 4, 4)
    return Prediction(probs=probs, selected=~np.isnan(probs[0]), grid=g, scheme=SCHEME.copy())


@pytest.fixture
def slide_with_saved_prediction(qtbot, tmp_path: Path) -> Path:
    """A small PNG slide whose implicit project holds one saved prediction ("saved")."""
    from PIL import Image

    from app.main_window import MainWindow
    from app.panels.results import install_results_panel

    path = tmp_path / "small.png"
    Image.fromarray(np.full((512, 512, 3), 180, np.uint8)).save(path)
    w = MainWindow()
    qtbot.addWidget(w)
    assert w.open_path(path)
    install_results_panel(w).finish("saved", _prediction())
    assert list((w.project.predictions_dir / w.entry.id).glob("*.npz"))
    w.close()
    return path


@pytest.fixture
def readers(monkeypatch: pytest.MonkeyPatch) -> list[threading.Thread]:
    """The threads that read a saved prediction."""
    import app.panels.results as results

    seen: list[threading.Thread] = []
    real = results.load_prediction

    def spy(path):
        seen.append(threading.current_thread())
        return real(path)

    monkeypatch.setattr(results, "load_prediction", spy)
    return seen


def test_a_slide_opened_from_the_ui_loads_its_predictions_in_a_worker(
    qtbot, slide_with_saved_prediction: Path, readers, errors_seen
) -> None:
    from app.main_window import MainWindow

    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    with qtbot.waitSignal(w.results_panel.savedLoaded, timeout=20000) as sig:
        w.open_path_async(slide_with_saved_prediction)
    assert sig.args == [1]
    assert readers and threading.main_thread() not in readers
    entry = w.results_panel.current_entry()
    assert entry is not None and entry.name == "saved"
    assert entry.class_layer in list(w.view.layers)
    assert not errors_seen


def test_open_path_still_shows_saved_predictions_at_once(
    qtbot, slide_with_saved_prediction: Path, readers
) -> None:
    from app.main_window import MainWindow

    w = MainWindow()
    qtbot.addWidget(w)
    assert w.open_path(slide_with_saved_prediction)
    assert list(w.results_panel.entries) == ["saved"]
    assert readers == [threading.main_thread()]
