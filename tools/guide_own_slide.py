"""The guide's "Your own slide, step by step" screenshots (docs/USER_GUIDE.md, section 8b): issue
13's new-user flow on ``cmu-1-small-region.svs``, driven through the real widgets as
``tests/app/test_review_flow_own_slide.py`` drives them.

The slide is opened alone (the five-class default scheme) in a fresh
:class:`app.main_window.MainWindow`; Analysis > Predict runs the shipped three-class model over the
whole slide (stride a quarter window, no CAM); Analysis > Prediction to Annotations… turns the
model's Adenocarcinoma into a chosen grade; the Review list is stepped through with N, the second
and fourth items corrected with number keys, the others accepted with Enter; Analysis > Build
Dataset builds a small dataset of the reviewed areas; and the Train dialog fine-tunes the shipped
model ("Start from a model", one epoch on the CPU) and shows the old/new comparison. Each shot is
``guide-<name>.png`` for the names in :data:`OWN_SHOTS` (``--only own-slide`` takes them all),
written by :func:`guide_common.save_small` (256 colours) so the committed images stay small.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from guide_common import pump, save_small, settle, wait_until

OWN_SHOTS = (
    "own-open", "own-predict", "own-classmap", "own-legend", "own-convert", "own-review-next",
    "own-review-corrected", "own-build-dataset", "own-train-start", "own-train-compare",
    "own-train-report",
)
GRADE = "adc-moderate"  # what the model's Adenocarcinoma becomes (the test's choice)
DOCK_WIDTH = 430  # the right-hand docks, wide enough for the review list's lines
TIMEOUT = 600.0


def _click(widget) -> None:
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    QTest.mouseClick(widget, Qt.MouseButton.LeftButton)


def _key(widget, key) -> None:
    from PySide6.QtTest import QTest

    QTest.keyClick(widget, key)


def _shot(win, widget, path: Path, colours: int = 256) -> None:
    """:func:`guide_common.save_small` keeping the class colours of the project's scheme and of
    the prediction shown exact."""
    keep = [c.color for c in win.document.scheme]
    entry = win.results_panel.current_entry()
    if entry is not None and entry.pred is not None:
        keep += [c.color for c in entry.pred.scheme]
    save_small(widget, path, keep=keep, colours=colours)


def open_alone(qapp, slide: Path):
    """The main window on ``slide`` opened alone (File > Open's path), fitted."""
    from PySide6.QtCore import Qt

    from app.main_window import MainWindow

    win = MainWindow()
    win.resize(1400, 900)
    win.show()
    if not win.open_path(slide):
        raise SystemExit(f"cannot open {slide}")
    win.resizeDocks([win.docks["annotations"]], [DOCK_WIDTH], Qt.Orientation.Horizontal)
    win.view.fit()
    settle(qapp, win)
    return win


def predict(qapp, win, model: Path, take: Callable[[str], bool], out) -> None:
    """Analysis > Predict…: the shipped model over the whole slide; the dialog once finished."""
    win.analysis_actions["predict"].trigger()
    dlg = win.analysis_dialogs["predict"]
    i = dlg.ckpt.findText(str(model))
    if i >= 0:
        dlg.ckpt.setCurrentIndex(i)
    else:
        dlg.ckpt.setCurrentText(str(model))
    wait_until(qapp, lambda: bool(dlg.mapping.text()), 60)  # the mapping stated, then Predict
    wait_until(qapp, lambda: False, 0.5)
    _click(dlg.scope_buttons["slide"])
    dlg.stride.setValue(56)  # a quarter of the model's 224 px window
    if dlg.cam.isChecked():
        dlg.cam.setChecked(False)
    _click(dlg.run_button)
    wait_until(qapp, lambda: not dlg.running, TIMEOUT)
    if dlg.result is None:
        raise SystemExit("own-slide: the prediction did not finish")
    wait_until(qapp, lambda: False, 0.5)
    if take("own-predict"):
        _shot(win, dlg, out("own-predict"))
    _click(dlg.close_button)
    if take("own-classmap"):
        win.docks["results"].raise_()
        win.view.fit()
        settle(qapp, win)
        _shot(win, win, out("own-classmap"))
    if take("own-legend"):
        legend_shot(qapp, win, out("own-legend"))


def legend_shot(qapp, win, path: Path) -> None:
    """The Results panel floated out of its dock (double-click its title) and made tall enough
    for its controls, legend and the empty region table; docked again afterwards. In the window
    (900 px high) the table's eight rows leave the legend a scrolling strip."""
    dock = win.docks["results"]
    dock.setFloating(True)
    dock.resize(DOCK_WIDTH + 90, 800)
    dock.move(win.x() + 200, win.y() + 40)
    panel = win.results_panel
    sp = panel.splitter
    wait_until(qapp, lambda: False, 0.5)
    need = sp.widget(0).widget().sizeHint().height()
    sp.setSizes([need, max(sum(sp.sizes()) - need, 0)])
    wait_until(qapp, lambda: False, 0.5)
    _shot(win, dock, path)
    dock.setFloating(False)
    pump(qapp)


def convert(qapp, win, take: Callable[[str], bool], out) -> None:
    """Analysis > Prediction to Annotations…: Adenocarcinoma (model) becomes :data:`GRADE`."""
    from PySide6.QtCore import Qt

    doc = win.document
    win.analysis_actions["convert"].trigger()
    dlg = win.analysis_dialogs["convert"]
    combo = dlg.group_boxes["adenocarcinoma"]
    combo.setFocus()
    while combo.currentData() != GRADE:
        _key(combo, Qt.Key.Key_Down)
    wait_until(qapp, lambda: False, 0.3)
    if take("own-convert"):
        _shot(win, dlg, out("own-convert"))
    _click(dlg.convert_button)
    if not wait_until(qapp, lambda: len(doc) > 0, 120):
        raise SystemExit("own-slide: the conversion added nothing")


def _correction(doc, it, second: bool) -> int:
    """The number key of the test's corrections: the second item becomes Adenocarcinoma poorly
    differentiated (a grade the model cannot tell), the fourth Normal or Adenoma."""
    was = doc.get(it.ann_id).class_id if it.ann_id else it.predicted
    grade = second and was != "adc-poor"
    return next(k for k, c in enumerate(doc.scheme, 1)
                if c.id != was and (c.id == "adc-poor" if grade else k < 3))


def review(qapp, win, take: Callable[[str], bool], out) -> None:
    """N through the five most uncertain items, number keys on the second and fourth, Enter on
    the others; a shot after N, Enter, N and one after the five and P (back on a correction)."""
    from PySide6.QtCore import Qt

    win.docks["review"].raise_()
    panel, doc = win.review_panel, win.document
    if not wait_until(qapp, lambda: len(panel.items) >= 5, 10):
        raise SystemExit(f"own-slide: {len(panel.items)} review items, not 5")
    panel.list.setFocus()
    for i in range(5):
        _key(panel.list, Qt.Key.Key_N)
        pump(qapp)
        if i == 1 and take("own-review-next"):
            settle(qapp, win)
            _shot(win, win, out("own-review-next"), colours=128)  # zoomed tissue
        if i in (1, 3):
            k = _correction(doc, panel.current_item(), i == 1)
            _key(panel.list, getattr(Qt.Key, f"Key_{k}"))
        else:
            _key(panel.list, Qt.Key.Key_Return)
        wait_until(qapp, lambda n=i + 1: panel.reviewed_count()[0] == n, 5)
    _key(panel.list, Qt.Key.Key_P)
    settle(qapp, win)
    if take("own-review-corrected"):
        _shot(win, win, out("own-review-corrected"))
    if not doc.flush():
        raise SystemExit("own-slide: the reviewed annotations were not saved")


def build_dataset(qapp, win, take: Callable[[str], bool], out) -> Path:
    """Analysis > Build Dataset: the reviewed areas, 224 px patches, 30 % of the areas for test."""
    dlg = win.open_analysis("build")
    dlg.resize(860, dlg.height())  # the class lists' names whole
    dlg.name_edit.setText("reviewed")
    dlg.patch_size.setValue(224)
    dlg.overlap.setValue(0)
    dlg.random.setValue(0)
    dlg.min_tissue.setValue(0)
    dlg.min_gland.setValue(0)
    dlg.test_fraction.setValue(0.3)
    dlg.cap.setValue(8)
    done: list[object] = []
    dlg.buildFinished.connect(done.append)
    _click(dlg.build_button)
    if not wait_until(qapp, lambda: bool(done), TIMEOUT):
        raise SystemExit("own-slide: the dataset build did not finish")
    wait_until(qapp, lambda: False, 1.0)
    if take("own-build-dataset"):
        _shot(win, dlg, out("own-build-dataset"))
    dlg.close()
    return Path(win.project.datasets_dir) / "reviewed"


def fine_tune(qapp, win, data: Path, model: Path, take: Callable[[str], bool], out) -> None:
    """Analysis > Train with "Start from a model": one epoch on the CPU; the dialog before the
    run, its log with the old/new comparison, and its Report tab."""
    dlg = win.open_analysis("train")
    dlg.resize(1400, 860)
    dlg.dataset_combo.setCurrentText(str(data))
    dlg.start_from.combo.setCurrentText(str(model))
    dlg.epochs_spin.setValue(1)
    dlg.batch_spin.setValue(8)
    dlg.device_combo.setCurrentText("cpu")
    wait_until(qapp, lambda: not dlg.summary_pending(), TIMEOUT)  # the data check, in a worker
    wait_until(qapp, lambda: False, 0.3)
    if take("own-train-start"):
        _shot(win, dlg, out("own-train-start"))
    state: list[str] = []
    dlg.allFinished.connect(lambda: state.append("done"))
    dlg.runFailed.connect(lambda msg: state.append(f"failed: {msg}"))
    _click(dlg.start_button)
    wait_until(qapp, lambda: bool(state), TIMEOUT)
    if state != ["done"]:
        raise SystemExit(f"own-slide: the fine-tuning run did not finish ({state})")
    dlg.tabs.setCurrentIndex(0)
    dlg.log.parentWidget().setSizes([420, 330])  # the log's splitter dragged up: every line
    wait_until(qapp, lambda: False, 1.0)
    if take("own-train-compare"):
        _shot(win, dlg, out("own-train-compare"))
    if take("own-train-report"):
        dlg.tabs.setCurrentWidget(dlg.report)
        wait_until(qapp, lambda: False, 1.5)
        _shot(win, dlg, out("own-train-report"))
    dlg.close()


def own_slide_shots(qapp, take: Callable[[str], bool], out, slide: Path, model: Path) -> None:
    """The whole flow in a window of its own; only the shots ``take`` names are saved."""
    if not any(take(n) for n in OWN_SHOTS):
        return
    if not slide.is_file() or not model.is_file():
        print(f"own-slide shots skipped: {slide} or {model} is missing", file=sys.stderr)
        return
    win = open_alone(qapp, slide)
    if take("own-open"):
        _shot(win, win, out("own-open"))
    predict(qapp, win, model, take, out)
    convert(qapp, win, take, out)
    review(qapp, win, take, out)
    data = build_dataset(qapp, win, take, out)
    fine_tune(qapp, win, data, model, take, out)
    win.close()
    pump(qapp)
