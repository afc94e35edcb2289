"""The whole review loop in the GUI on a copy of the demo project: the shipped prediction becomes
proposed annotations, the five most uncertain are stepped through with N (two corrected with
number keys, three accepted with Enter), a dataset is built from the project (unreviewed proposals
left out) and the shipped demo model is fine-tuned on it from the Train dialog, which compares it
with the old model. Small settings throughout (a few patches per class, 1 epoch, CPU)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from app.demo import shipped_demo_model
from app.main_window import MainWindow
from crc_core.finetune import comparison_text
from crc_core.proposals import is_proposed, is_reviewed, review_info

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"
TIMEOUT_MS = 300_000


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/app/conftest.py


@pytest.fixture
def win(qtbot, tmp_path: Path) -> MainWindow:
    if not list((DEMO / "predictions").rglob("*.npz")) or not shipped_demo_model().is_file():
        pytest.skip("resources/demo with a saved prediction, or models/ demo model, is absent")
    shutil.copytree(DEMO, tmp_path / "demo")
    w = MainWindow()
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    qtbot.waitExposed(w)
    assert w.open_path(tmp_path / "demo")
    qtbot.waitUntil(lambda: w.document is not None and w.results_panel.current_entry() is not None,
                    timeout=30000)
    return w


def _convert(qtbot, win: MainWindow) -> None:
    doc = win.document
    n0 = len(doc)
    win.analysis_actions["convert"].trigger()
    dlg = win.analysis_dialogs["convert"]
    dlg.min_conf.setValue(0.0)
    qtbot.mouseClick(dlg.convert_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(doc) > n0, timeout=20000)


def _review_five(qtbot, win: MainWindow) -> list[str]:
    """N through the five first items: Enter on three, a number key (another class) on two."""
    panel, doc = win.review_panel, win.document
    qtbot.waitUntil(lambda: len(panel.items) >= 5, timeout=5000)
    panel.list.setFocus()
    corrected = []
    for i in range(5):
        qtbot.keyClick(panel.list, Qt.Key.Key_N)
        it = panel.current_item()
        assert it is panel.items[i] or it.key == panel.items[i].key
        if i in (1, 3):
            ann = doc.get(it.ann_id)
            k = next(k for k, c in enumerate(doc.scheme, 1) if c.id != ann.class_id)
            qtbot.keyClick(panel.list, getattr(Qt.Key, f"Key_{k}"))
            corrected.append(it.ann_id)
        else:
            qtbot.keyClick(panel.list, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda n=i + 1: panel.reviewed_count()[0] == n, timeout=3000)
    assert panel.counter.text().startswith("5 of ")
    return corrected


def _build_dataset(qtbot, win: MainWindow) -> Path:
    dlg = win.open_analysis("build")
    dlg.name_edit.setText("reviewed")
    dlg.patch_size.setValue(224)
    dlg.overlap.setValue(0)
    dlg.random.setValue(0)
    dlg.min_tissue.setValue(0)
    dlg.min_gland.setValue(0)
    dlg.test_fraction.setValue(0.3)
    dlg.cap.setValue(8)
    with qtbot.waitSignal(dlg.buildFinished, timeout=120_000):
        qtbot.mouseClick(dlg.build_button, Qt.MouseButton.LeftButton)
    # the unreviewed proposals were left out, and View > Messages says so
    qtbot.waitUntil(lambda: any("proposed area(s) converted from a prediction" in text
                                for _, _, text in win.messages.entries), timeout=3000)
    return Path(win.project.datasets_dir) / "reviewed"


def test_convert_review_and_fine_tune_the_demo_model(qtbot, win: MainWindow, errors_seen):
    doc = win.document
    _convert(qtbot, win)
    corrected = _review_five(qtbot, win)
    for ann_id in corrected:
        a = doc.get(ann_id)
        assert is_reviewed(a) and review_info(a)["status"] == "corrected"
    assert any(is_proposed(a) for a in doc)  # the rest stays proposed (and out of the dataset)
    assert doc.flush()
    data = _build_dataset(qtbot, win)
    assert (data / "manifest.csv").is_file()
    dlg = win.open_analysis("train")
    dlg.dataset_combo.setCurrentText(str(data))
    qtbot.waitUntil(lambda: not dlg.summary_pending(), timeout=60_000)  # checked in a worker
    model = shipped_demo_model()
    listed = [dlg.start_from.combo.itemText(i) for i in range(dlg.start_from.combo.count())]
    assert str(model) in listed  # the shipped model is offered
    dlg.start_from.combo.setCurrentText(str(model))
    from crc_core.models import load_checkpoint

    arch = load_checkpoint(model)["arch"]  # whichever model the demo ships: its arch is ticked
    assert [n for n, cb in dlg.arch_boxes.items() if cb.isChecked()] == [arch]
    dlg.epochs_spin.setValue(1)
    dlg.batch_spin.setValue(8)
    dlg.device_combo.setCurrentText("cpu")
    with qtbot.waitSignal(dlg.allFinished, timeout=TIMEOUT_MS):
        qtbot.mouseClick(dlg.start_button, Qt.MouseButton.LeftButton)
    assert errors_seen == []
    run = next(Path(win.project.models_dir).rglob("compare.json")).parent
    assert json.loads((run / "config.json").read_text())["init"] == str(model.resolve())
    result = json.loads((run / "compare.json").read_text())
    assert comparison_text(result).splitlines()[0] in dlg.log.toPlainText()
