"""Prediction in the GUI: dialog and worker, progressive class map and heatmap, results panel, reopening."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PySide6.QtCore import QPointF, Qt

from app.main_window import MainWindow
from app.panels.results import install_results_panel
from app.viewer.prediction_layers import ClassMapLayer, HeatmapLayer
from crc_core.classes import ClassScheme
from crc_core.inference import GridSpec, Prediction
from crc_core.jobs import BatchPredicted

torch.set_num_threads(2)
SCHEME = ClassScheme.three_class()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small densenet121 checkpoint (64 px input) in the project class scheme."""
    from crc_core.models import build_model, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "dn121.pt"
    save_checkpoint(
        path,
        build_model("densenet121", 3),
        arch="densenet121",
        classes=SCHEME,
        input_size=64,
        patch_size=224,
        mpp=0.5,
    )
    return path


@pytest.fixture
def win(qtbot, slides_dir):
    w = MainWindow()
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    qtbot.waitExposed(w)
    assert w.open_path(slides_dir / "cmu-1-small-region.svs")
    w.project.scheme.classes[:] = SCHEME.copy().classes
    return w


def _grid_pred(probs: np.ndarray, cam: bool = False) -> Prediction:
    C, rows, cols = probs.shape
    g = GridSpec((100, 200), 50, 50, rows, cols, 0, 50, 64, 4, 4)
    return Prediction(
        probs=probs.astype(np.float32),
        selected=~np.isnan(probs[0]),
        grid=g,
        scheme=SCHEME.copy(),
        cam=np.linspace(0, 1, g.cam_shape[0] * g.cam_shape[1], dtype=np.float32).reshape(
            g.cam_shape
        )
        if cam
        else None,
    )


def _probs() -> np.ndarray:
    p = np.full((3, 2, 3), np.nan, dtype=np.float32)
    p[:, 0, 0] = (0.9, 0.05, 0.05)
    p[:, 0, 1] = (0.1, 0.8, 0.1)
    p[:, 1, 2] = (0.3, 0.3, 0.4)
    return p


def _start(qtbot, win, checkpoint: Path, scope: str = "selection", cam: bool = True):
    dlg = win.open_analysis("predict")
    assert dlg is not None
    dlg.ckpt.setCurrentText(str(checkpoint))
    dlg.set_scope(scope)
    dlg.cam.setChecked(cam)
    dlg.batch.setValue(2)
    return dlg


def _add_region(
    win, x: float, y: float, w: float, h: float, cls: str = "normal", select: bool = True
):
    from shapely.geometry import box

    ann = win.document.add(cls, box(x, y, x + w, y + h), name=f"r{x:.0f}")
    if select:
        win.document.set_selection([ann.id])
    return ann


# ---------------------------------------------------------------------------------------- layers
def test_class_map_layer_paints_class_colours_in_the_grid_cells(qapp) -> None:
    layer = ClassMapLayer.from_prediction("m", _grid_pred(_probs()))
    img = layer.image
    assert (img.width(), img.height()) == (3, 2)
    assert img.pixelColor(0, 0).getRgb()[:3] == SCHEME.classes[0].color
    assert img.pixelColor(1, 0).getRgb()[:3] == SCHEME.classes[1].color
    assert img.pixelColor(2, 0).alpha() == 0  # not predicted
    assert layer.bounds_l0().getRect() == (100, 200, 150, 100)


def test_threshold_and_class_toggle_hide_cells(qapp) -> None:
    layer = ClassMapLayer.from_prediction("m", _grid_pred(_probs()))
    layer.set_threshold(0.5)
    assert layer.image.pixelColor(2, 1).alpha() == 0 and layer.image.pixelColor(0, 0).alpha() == 255
    layer.set_class_visible(0, False)
    assert layer.image.pixelColor(0, 0).alpha() == 0 and layer.image.pixelColor(1, 0).alpha() == 255


def test_hover_probabilities_come_from_the_cell_under_the_point(qapp) -> None:
    layer = ClassMapLayer.from_prediction("m", _grid_pred(_probs()))
    p = layer.probabilities_at(160, 210)  # cell (0, 1)
    assert p is not None and p["Adenoma"] == pytest.approx(0.8)
    assert layer.probabilities_at(210, 210) is None  # cell (0, 2): not predicted


def test_heatmap_layer_is_transparent_where_nothing_was_predicted(qapp) -> None:
    pred = _grid_pred(_probs(), cam=True)
    pred.cam[0, 0] = np.nan
    layer = HeatmapLayer("h", pred.grid, pred.cam)
    assert layer.image.pixelColor(0, 0).alpha() == 0 and layer.image.pixelColor(1, 0).alpha() == 255
    before = layer.image.pixelColor(5, 5).getRgb()
    layer.set_colormap("viridis")
    assert layer.image.pixelColor(5, 5).getRgb() != before


# ---------------------------------------------------------------------------------- dialog + job
def test_prediction_paints_progressively_and_lists_the_regions(
    qtbot, win, checkpoint: Path
) -> None:
    ann = _add_region(win, 600, 900, 700, 500)
    dlg = _start(qtbot, win, checkpoint)
    painted: list[int] = []

    def on_progress(ev) -> None:
        if isinstance(ev.payload, BatchPredicted):
            entry = win.results_panel.current_entry()
            painted.append(int((~np.isnan(entry.class_layer.probs[0])).sum()))

    assert dlg.start()
    dlg.worker.progressed.connect(on_progress)
    qtbot.waitUntil(lambda: not dlg.running, timeout=120000)
    panel = win.results_panel
    entry = panel.current_entry()
    assert dlg.result is not None and entry.pred is dlg.result
    n = int(dlg.result.predicted.sum())
    assert n >= 4 and len(painted) >= 2 and painted[0] < n  # filled batch by batch
    assert entry.class_layer in list(win.view.layers) and entry.heat_layer in list(win.view.layers)
    assert panel.table.rowCount() == 1
    assert panel.table.item(0, 0).text() == ann.name
    assert int(panel.table.item(0, 3).text()) == n
    saved = list((win.project.predictions_dir / win.entry.id).glob("*.npz"))
    assert len(saved) == 1
    # The scale and the stain normalisation used are stated where the user looks.
    assert "Scale: windows of" in dlg.status.text() and "Stain: " in dlg.status.text()


def _predict_by_clicks(qtbot, dlg) -> str:
    """Click Predict, wait for the end; the status line at the first batch and at the end."""
    seen: list[str] = []

    def on_progress(ev) -> None:
        if isinstance(ev.payload, BatchPredicted) and not seen:
            seen.append(dlg.status.text())

    qtbot.mouseClick(dlg.run_button, Qt.MouseButton.LeftButton)
    assert dlg.running
    dlg.worker.progressed.connect(on_progress)
    qtbot.waitUntil(lambda: not dlg.running, timeout=120000)
    assert dlg.result is not None, dlg.status.text()
    return " | ".join(seen + [dlg.status.text()])


def test_backend_choice_runs_onnx_and_the_status_line_says_so(
    qtbot, win, checkpoint: Path
) -> None:
    pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed: no onnx backend")
    _add_region(win, 600, 900, 500, 500)
    dlg = _start(qtbot, win, checkpoint)
    assert dlg.backend.currentText() == "auto"  # the fast path by default
    qtbot.keyClicks(dlg.backend, "onnx")
    assert dlg.backend.currentText() == "onnx"
    text = _predict_by_clicks(qtbot, dlg)
    assert "ONNX Runtime" in text and "on the CPU" in text
    assert dlg.result.resolution["scoring"]["backend"] == "onnx"


def test_without_onnxruntime_auto_falls_back_to_torch_and_says_why(
    qtbot, win, checkpoint: Path, monkeypatch: pytest.MonkeyPatch, capfd, recwarn
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    _add_region(win, 600, 900, 500, 500)
    dlg = _start(qtbot, win, checkpoint)
    capfd.readouterr()
    text = _predict_by_clicks(qtbot, dlg)
    assert "with PyTorch" in text
    assert "ONNX Runtime cannot be imported" in text
    assert dlg.result.resolution["scoring"]["backend"] == "torch"
    # The fallback is a JobWarning: it is in the window (status bar, View > Messages) ...
    qtbot.waitUntil(lambda: any("ONNX Runtime cannot be imported" in t and lv == "warning"
                                for _, lv, t in win.messages.entries), timeout=5000)
    assert "ONNX Runtime cannot be imported" in win.statusBar().currentMessage()
    # ... and neither a Python warning nor a line on the terminal
    assert not [w for w in recwarn if "crc_core" in str(w.filename)]
    captured = capfd.readouterr()
    assert "ONNX Runtime" not in captured.err + captured.out
    assert "Warning" not in captured.err


def test_cancel_removes_the_layers_and_saves_nothing(qtbot, win, checkpoint: Path) -> None:
    dlg = _start(qtbot, win, checkpoint, scope="slide", cam=False)
    dlg.batch.setValue(1)
    assert dlg.start()
    qtbot.waitUntil(lambda: win.results_panel.current_entry() is not None, timeout=60000)
    dlg.cancel()
    qtbot.waitUntil(lambda: not dlg.running, timeout=60000)
    assert "Cancelled" in dlg.status.text()
    assert not win.results_panel.entries
    folder = win.project.predictions_dir / win.entry.id
    assert not folder.exists() or not list(folder.iterdir())


def test_saved_prediction_reopens_with_the_slide(
    qtbot, win, checkpoint: Path, slides_dir: Path
) -> None:
    _add_region(win, 600, 900, 500, 500)
    dlg = _start(qtbot, win, checkpoint)
    assert dlg.start()
    qtbot.waitUntil(lambda: not dlg.running, timeout=120000)
    probs = dlg.result.probs
    dlg.close()
    win.close()
    w2 = MainWindow()
    qtbot.addWidget(w2)
    assert w2.open_path(slides_dir / "cmu-1-small-region.svs")
    panel = install_results_panel(w2)
    entry = panel.current_entry()
    assert entry is not None and np.array_equal(entry.pred.probs, probs, equal_nan=True)
    assert entry.class_layer in list(w2.view.layers)
    assert panel.table.rowCount() == 1


def test_disagreement_filter_hover_and_click_to_zoom(qtbot, win, checkpoint: Path) -> None:
    a = _add_region(win, 700, 1200, 500, 500, cls="normal")
    b = _add_region(win, 1000, 2000, 500, 500, cls="normal", select=False)
    win.document.set_selection([a.id, b.id])
    dlg = _start(qtbot, win, checkpoint, cam=False)
    assert dlg.start()
    qtbot.waitUntil(lambda: not dlg.running, timeout=120000)
    panel = win.results_panel
    assert panel.table.rowCount() == 2
    # Relabel: b as its predicted majority (agrees), a as another class (disagrees); the table follows.
    res = {r.id: r for r in panel.results}
    assert res[a.id].majority and res[b.id].majority
    other = next(c.id for c in SCHEME if c.id != res[a.id].majority)
    win.document.set_class([a.id], other)
    win.document.set_class([b.id], res[b.id].majority)
    agreement = {
        panel.table.item(r, 0).data(0x0100): panel.table.item(r, 6).text() for r in range(2)
    }
    assert agreement == {a.id: "no", b.id: "yes"}
    panel.disagree_box.setChecked(True)
    shown = [r for r in range(2) if not panel.table.isRowHidden(r)]
    assert [panel.table.item(r, 0).data(0x0100) for r in shown] == [a.id]
    # hover over a predicted patch
    pred = panel.current_entry().pred
    r, c = map(int, np.argwhere(pred.predicted)[0])
    x, y, w, h = pred.grid.cell_rect(r, c)
    win.view.set_view(x + w / 2, y + h / 2, 0.25)  # the patch in view, then the mouse over it
    qtbot.mouseMove(win.view, win.view.l0_to_widget(QPointF(x + w / 2, y + h / 2)).toPoint())
    qtbot.waitUntil(lambda: panel.hover_label.text().startswith("Patch:"), timeout=3000)
    # click a row: the view zooms to that region
    row = shown[0]
    cell = panel.table.visualItemRect(panel.table.item(row, 0)).center()
    qtbot.mouseClick(panel.table.viewport(), Qt.MouseButton.LeftButton, pos=cell)
    rid = panel.table.item(row, 0).data(0x0100)
    region = win.document.get(rid)
    vis = win.view.visible_rect_l0()
    x0, y0, x1, y1 = region.geometry.bounds
    assert vis.contains(QPointF((x0 + x1) / 2, (y0 + y1) / 2)) and vis.width() < 2500
    assert win.document.selection == [rid] or list(win.document.selection) == [rid]


def test_two_models_can_be_switched_and_compared(qtbot, win, checkpoint: Path) -> None:
    panel = install_results_panel(win)
    p1 = _grid_pred(_probs())
    p2 = _grid_pred(_probs()[:, :, ::-1].copy())
    panel.add_prediction("A", p1)
    panel.add_prediction("B", p2)
    assert panel.current == "B"
    panel.model_combo.setCurrentText("A")
    assert panel.current == "A"
    assert panel.entries["A"].class_layer.visible and not panel.entries["B"].class_layer.visible
    panel.compare_combo.setCurrentText("B")
    assert panel.entries["B"].class_layer.visible
    assert "shared cells agree" in panel.compare_label.text()


def test_current_view_scope_predicts_only_windows_centred_in_the_view(
    qtbot, win, checkpoint: Path
) -> None:
    win.view.set_view(1100, 1500, 0.9)
    vis = win.view.visible_rect_l0()
    dlg = _start(qtbot, win, checkpoint, scope="view", cam=False)
    assert dlg.start()
    qtbot.waitUntil(lambda: not dlg.running, timeout=120000)
    pred = dlg.result
    assert pred is not None and pred.predicted.any()
    xs, ys = pred.grid.cell_centers()
    ok = pred.predicted
    assert (xs[ok] >= vis.left()).all() and (xs[ok] <= vis.right()).all()
    assert (ys[ok] >= vis.top()).all() and (ys[ok] <= vis.bottom()).all()
    assert win.results_panel.current.endswith("(current view)")


def test_layers_panel_follows_model_switch_and_heatmap_box(qtbot, win) -> None:
    panel = install_results_panel(win)
    panel.add_prediction("A", _grid_pred(_probs(), cam=True))
    panel.add_prediction("B", _grid_pred(_probs(), cam=True))
    panel.heat_box.setChecked(True)
    boxes = win.layers_panel.controls
    assert boxes["CAM — B"][0].isChecked() and not boxes["CAM — A"][0].isChecked()
    panel.model_combo.setCurrentText("A")
    boxes = win.layers_panel.controls
    assert boxes["Class map — A"][0].isChecked() and not boxes["Class map — B"][0].isChecked()
    assert boxes["CAM — A"][0].isChecked() and not boxes["CAM — B"][0].isChecked()
