"""View > Stain View and the Stain tab of the slide properties, on the real skin slide."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtWidgets import QFileDialog

from app.main_window import MainWindow
from app.viewer.stain_view import StainedSource


def _grab(v) -> np.ndarray:
    img = v.grab().toImage().convertToFormat(v.grab().toImage().Format.Format_RGB888)
    arr = np.frombuffer(img.constBits(), np.uint8, img.sizeInBytes())
    arr = arr.reshape(img.height(), img.bytesPerLine())[:, : img.width() * 3]
    return arr.reshape(img.height(), img.width(), 3).copy()


def _wait_complete(qtbot, v) -> None:
    qtbot.waitUntil(lambda: (v.update() or True) and v.is_complete() and v._complete,
                    timeout=30000)


@pytest.fixture(scope="module")
def stain_checkpoint(ebhi_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A (random-weight) checkpoint carrying a Macenko normaliser fitted on EBHI tiles."""
    import torch

    from crc_core.classes import ClassScheme
    from crc_core.models import build_model, save_checkpoint
    from crc_core.stain import fit_images

    files = sorted(p for p in ebhi_dir.glob("adenocarcinoma/*.jpg") if "_glands" not in p.name)
    norm = fit_images([np.asarray(Image.open(p).convert("RGB")) for p in files[:8]], "macenko")
    scheme = ClassScheme.from_names(["Normal", "Adenocarcinoma"])
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ck") / "stained.pt"
    save_checkpoint(path, build_model("resnet50", 2), arch="resnet50", classes=scheme,
                    input_size=64, half=True, extra={"preprocess": {"stain": norm.to_json()}})
    return path


@pytest.fixture
def win(qtbot, slides_dir):
    w = MainWindow()
    qtbot.addWidget(w)
    w.resize(900, 700)
    w.show()
    qtbot.waitExposed(w)
    assert w.open_path(slides_dir / "cmu-1-small-region.svs")
    return w


def _view_action(w: MainWindow, text: str):
    view_menu = next(a.menu() for a in w.menuBar().actions() if a.text() == "&View")
    return next(a for a in view_menu.actions() if a.text() == text)


def test_stain_view_shows_the_normalised_slide_and_back(qtbot, win, stain_checkpoint,
                                                         monkeypatch):
    v = win.view
    _wait_complete(qtbot, v)
    plain = _grab(v)
    monkeypatch.setattr(QFileDialog, "getOpenFileName",
                        lambda *a, **k: (str(stain_checkpoint), "Checkpoints (*.pt)"))
    _view_action(win, "&Stain View").trigger()     # no prediction: asks for a checkpoint
    qtbot.waitUntil(lambda: isinstance(v.loader.source, StainedSource), timeout=60000)
    assert win.stain_view.act_toggle.isChecked()
    _wait_complete(qtbot, v)
    stained = _grab(v)
    diff = np.abs(stained.astype(int) - plain.astype(int)).sum(-1)
    assert (diff > 30).mean() > 0.2          # the tissue changed colour
    assert "Stain view: Macenko" in win.statusBar().currentMessage()
    _view_action(win, "&Stain View").trigger()
    qtbot.waitUntil(lambda: not isinstance(v.loader.source, StainedSource), timeout=10000)
    _wait_complete(qtbot, v)
    again = np.abs(_grab(v).astype(int) - plain.astype(int)).sum(-1)
    assert (again > 30).mean() < 0.01


def test_checkpoint_without_normaliser_is_one_message(qtbot, win, tmp_path, monkeypatch,
                                                      errors_seen):
    from crc_core.classes import ClassScheme
    from crc_core.models import build_model, save_checkpoint

    path = save_checkpoint(tmp_path / "plain.pt", build_model("resnet50", 2), arch="resnet50",
                           classes=ClassScheme.from_names(["A", "B"]), half=True)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(path), ""))
    _view_action(win, "&Stain View").trigger()
    qtbot.waitUntil(lambda: bool(errors_seen), timeout=60000)
    assert "without stain normalisation" in errors_seen[0][1]
    assert not win.stain_view.act_toggle.isChecked()
    assert not isinstance(win.view.loader.source, StainedSource)


def test_slide_properties_show_the_estimated_stain_vectors(qtbot, slides_dir):
    from app.dialogs.slide_properties import SlidePropertiesDialog
    from crc_core.slide import open_slide

    with open_slide(slides_dir / "cmu-1-small-region.svs") as slide:
        dlg = SlidePropertiesDialog(slide)
        qtbot.addWidget(dlg)
        dlg.show()
        tab = dlg.stain_tab
        assert "Estimating" in tab.status.text()
        qtbot.waitUntil(lambda: tab.result is not None, timeout=120000)
        assert tab.result["ok"], tab.result
        h = np.array(tab.result["hematoxylin"])
        # Hematoxylin absorbs red and green more than blue; a unit vector.
        assert abs(np.linalg.norm(h) - 1) < 1e-3 and h[1] > h[2] and h[0] > h[2]
        lab = tab.findChild(type(tab.status), "stain-hematoxylin")
        assert lab is not None and "max. concentration" in lab.text()
        dlg.close()
