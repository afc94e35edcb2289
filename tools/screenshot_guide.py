"""Screenshots of the user guide (docs/USER_GUIDE.md) and the README, taken of the real application.

Usage (under a virtual X server, so fonts and window decorations render as on a desktop)::

    xvfb-run -a -s "-screen 0 1400x900x24" .venv/bin/python tools/screenshot_guide.py \\
        --out docs/screenshots [--only main-prediction about ...]

The script installs the demo project (:mod:`app.demo`) into a temporary ``CRC_VIEWER_HOME``, opens
it in the real :class:`app.main_window.MainWindow`, drives the real widgets (tools, mouse events on
the view, the results panel's controls, the dialogs of the Analysis and Edit menus) and grabs each
window once every visible slide tile is painted. Nothing is drawn or faked: each PNG is
``QWidget.grab()`` of a live widget, or (for popup menus and dialogs over the window) a grab of the
virtual screen under the window. Shots: ``guide-<name>.png`` for the names in :data:`SHOTS`.

``--only own-slide`` takes the "Your own slide, step by step" shots (``guide-own-*.png``,
:mod:`guide_own_slide`): issue 13's flow on ``cmu-1-small-region.svs`` opened alone, from the shared
data folder (``CRC_SHARED_DATA``, as the tests find it) or ``--slide``; about two minutes on a CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from guide_common import pump, save, save_screen, settle, wait_until
from guide_own_slide import OWN_SHOTS, own_slide_shots

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's app/ and crc_core/, not an installed copy
DATA = Path(os.environ.get("CRC_SHARED_DATA", ROOT.parent / "shared" / "data"))
SLIDE = DATA / "slides" / "cmu-1-small-region.svs"  # as tests/conftest.py finds it


def viewer_shots(qapp, win, take: Callable[[str], bool], out: Callable[[str], Path]) -> None:
    """Start page, annotation menu and properties, measure, brightness/contrast, shortcuts."""
    from PySide6.QtCore import QPointF, QRectF, Qt
    from PySide6.QtTest import QTest

    from app.main_window import MainWindow

    v = win.view
    if take("start-page"):  # what a failed start leaves: the reason, the demo, recent files
        other = MainWindow(win.settings)
        other.resize(1400, 900)
        other.move(win.pos())
        other.show()
        other.open_path(Path.home() / "slides" / "biopsy-17.svs")
        wait_until(qapp, lambda: False, 0.5)
        save(other, out("start-page"))
        other.close()
    for e in win.results_panel.entries.values():  # annotations alone for these shots
        e.class_layer.visible = False
    win.layers_panel.rebuild()
    win.docks["annotations"].raise_()
    if take("annotation-menu") or take("annotation-properties"):
        ann = list(win.document)[1]  # "Adenoma A"
        x0, y0, x1, y1 = ann.bounds
        v.zoom_to_rect(QRectF(x0 - 600, y0 - 400, x1 - x0 + 1200, y1 - y0 + 800))
        settle(qapp, win)
        win.ctl.set_tool("select")
        c = ann.geometry.representative_point()
        p = v.l0_to_widget(QPointF(c.x, c.y)).toPoint()
        if take("annotation-menu"):
            QTest.mouseClick(v, Qt.MouseButton.RightButton, Qt.KeyboardModifier.NoModifier, p)
            menu = win.ann_actions.menu
            wait_until(qapp, lambda: menu is not None and menu.isVisible(), 5)
            sc = next(a for a in menu.actions() if a.text() == "Set Class")
            QTest.mouseMove(menu, menu.actionGeometry(sc).center())  # hover: the submenu opens
            sub = sc.menu()
            wait_until(qapp, sub.isVisible, 3)
            wait_until(qapp, lambda: False, 0.3)
            save_screen(qapp, win, out("annotation-menu"))
            sub.close()
            menu.close()
        if take("annotation-properties"):
            QTest.mouseDClick(v, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, p)
            dlg = win.ann_actions.dialog
            wait_until(qapp, lambda: dlg is not None and dlg.isVisible(), 5)
            dlg.move(win.x() + 420, win.y() + 220)
            dlg.notes_edit.setPlainText(ann.notes + "\nTubular; check the margin at 5 o'clock.")
            wait_until(qapp, lambda: False, 0.5)
            save_screen(qapp, win, out("annotation-properties"))
            dlg.reject()
        win.ctl.set_tool("pan")
    if take("measure"):
        v.set_view(3300, 950, 0.9)  # inside "Adenoma A"
        settle(qapp, win)
        win.ctl.set_tool("measure")
        a, b = v.l0_to_widget(QPointF(3020, 640)), v.l0_to_widget(QPointF(3560, 1180))
        QTest.mousePress(v, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, a.toPoint())
        for t in (0.3, 0.6, 1.0):
            QTest.mouseMove(v, (a + (b - a) * t).toPoint())
        QTest.mouseRelease(v, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                           b.toPoint())
        settle(qapp, win)
        save(win, out("measure"))
        win.ctl.set_tool("pan")
    if take("brightness"):
        dlg = win.view_actions.show_adjust()
        dlg.move(win.x() + 900, win.y() + 120)
        dlg.brightness.setValue(12)
        dlg.contrast.setValue(30)
        settle(qapp, win)
        save_screen(qapp, win, out("brightness"))
        dlg.reset()
        dlg.close()
    if take("shortcuts"):
        dlg = win.show_shortcuts()
        dlg.resize(640, 760)
        wait_until(qapp, lambda: False, 0.5)
        save(dlg, out("shortcuts"))
        dlg.close()
    win.results_panel._apply_visibility()
    win.layers_panel.rebuild()


def demo_shots(qapp, win, take: Callable[[str], bool], out: Callable[[str], Path]) -> None:
    """Shots 1-3: the project as it opens, drawing a polygon, the class scheme editor."""
    from PySide6.QtCore import QPoint, Qt
    from PySide6.QtTest import QTest

    panel = win.results_panel

    # 1. the project as it opens: slide, annotations, project panel (prediction hidden)
    if take("open-project"):
        for e in panel.entries.values():
            e.class_layer.visible = False
        win.layers_panel.rebuild()  # its check boxes follow the layers' visibility
        win.docks["annotations"].raise_()
        win.view.fit()
        settle(qapp, win)
        save(win, out("open-project"))
        panel._apply_visibility()
        win.layers_panel.rebuild()

    # 2. annotating: a polygon being drawn with the Polygon tool (real mouse events on the view)
    if take("annotate"):
        for e in panel.entries.values():
            e.class_layer.visible = False
        win.layers_panel.rebuild()  # its check boxes follow the layers' visibility
        win.view.fit()
        settle(qapp, win)
        win.select_class_by_key("3")
        win.ctl.set_tool("polygon")
        v = win.view
        pts = [(0.40, 0.60), (0.47, 0.55), (0.55, 0.62), (0.56, 0.74), (0.45, 0.78)]
        for fx, fy in pts:
            p = QPoint(int(v.width() * fx), int(v.height() * fy))
            QTest.mouseMove(v, p)
            QTest.mouseClick(v, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, p)
            qapp.processEvents()
        QTest.mouseMove(v, QPoint(int(v.width() * 0.38), int(v.height() * 0.70)))
        settle(qapp, win)
        save(win, out("annotate"))
        win.view.tool.cancel()
        win.ctl.set_tool("pan")
        panel._apply_visibility()
        win.layers_panel.rebuild()

    # 3. the class scheme editor (Edit > Edit Class Scheme)
    if take("class-scheme"):
        from app.dialogs.class_scheme import ClassSchemeDialog

        dlg = ClassSchemeDialog(win.project.scheme, win.document.annotations.classes_in_use(), win)
        dlg.show()
        wait_until(qapp, lambda: False, 0.5)
        save(dlg, out("class-scheme"))
        dlg.reject()



def analysis_shots(
    qapp, win, args, take: Callable[[str], bool], out: Callable[[str], Path]
) -> None:
    """Shots 4-8: Build Dataset, Predict, the class map, the CAM heatmap, the report."""
    panel = win.results_panel

    # 4. Analysis > Build Dataset: a real build of the demo project (224 px, as the EBHI tiles)
    if take("build-dataset"):
        dlg = win.open_analysis("build")
        dlg.name_edit.setText("demo-224")
        dlg.patch_size.setValue(224)
        dlg.overlap.setValue(0.0)
        dlg.workers.setValue(2)
        dlg.build_button.click()
        ok = wait_until(qapp, lambda: dlg.worker is None, 900) and dlg.result is not None
        if not ok:
            print("build-dataset: the build did not finish", file=sys.stderr)
        wait_until(qapp, lambda: False, 1.0)
        save(dlg, out("build-dataset"))
        dlg.close()

    # 5. Analysis > Predict (the demo model is in the project's models/ folder)
    if take("predict"):
        dlg = win.open_analysis("predict")
        if "slide" in getattr(dlg, "scope_buttons", {}):
            dlg.scope_buttons["slide"].setChecked(True)
        wait_until(qapp, lambda: False, 0.5)
        save(dlg, out("predict"))
        dlg.close()

    # 6. the prediction: class map over the slide, Results tab with the region table
    if take("main-prediction"):
        win.docks["results"].raise_()
        panel._apply_visibility()
        win.view.fit()
        settle(qapp, win)
        save(win, out("main-prediction"))

    # 7. the CAM heatmap, zoomed on a region picked in the table
    if take("heatmap"):
        from PySide6.QtCore import Qt

        win.docks["results"].raise_()
        # the right docks wide enough for the CAM controls (class, Smoothed, colour bar, statement)
        win.resizeDocks([win.docks["results"]], [430], Qt.Orientation.Horizontal)
        panel.heat_box.setChecked(True)
        panel.cam_controls.smooth_box.setChecked(True)  # one stitched heatmap, not a patchwork
        if panel.table.rowCount():
            panel._on_table_cellClicked(0, 0)
        settle(qapp, win)
        controls = panel.splitter.widget(0)
        controls.ensureWidgetVisible(panel.cam_controls)  # its colour bar and statement
        controls.horizontalScrollBar().setValue(0)
        settle(qapp, win)
        save(win, out("heatmap"))
        panel.cam_controls.smooth_box.setChecked(False)
        panel.heat_box.setChecked(False)

    # 8. the evaluation report of a model (e.g. the demo model's `crc evaluate` folder)
    if take("report") and args.eval is not None:
        from app.panels.report import ReportPanel

        rep = ReportPanel()
        rep.resize(1200, 860)
        rep.show()
        rep.open_folder(args.eval)
        wait_until(qapp, lambda: False, 1.5)
        save(rep, out("report"))
        rep.close()



def review_shots(qapp, win, take: Callable[[str], bool], out: Callable[[str], Path]) -> None:
    """Shots 16-17: Analysis > Prediction to Annotations, then the Review dock after N, N, N."""
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    if not (take("convert") or take("review")):
        return
    win.analysis_actions["convert"].trigger()
    dlg = win.analysis_dialogs["convert"]
    dlg.min_conf.setValue(0.0)
    wait_until(qapp, lambda: False, 0.5)
    if take("convert"):
        save(dlg, out("convert"))
    n0 = len(win.document)
    dlg.convert_button.click()
    wait_until(qapp, lambda: len(win.document) > n0, 60)
    dlg.close()
    if take("review"):
        win.docks["review"].raise_()
        panel = win.review_panel
        wait_until(qapp, lambda: len(panel.items) >= 3, 10)
        panel.list.setFocus()
        for key in (Qt.Key.Key_N, Qt.Key.Key_N, Qt.Key.Key_Return, Qt.Key.Key_N):
            QTest.keyClick(panel.list, key)
            pump(qapp)
        settle(qapp, win)
        save(win, out("review"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    ap.add_argument("--only", nargs="*", default=None, help="names of the shots to take")
    ap.add_argument(
        "--eval",
        type=Path,
        default=None,
        help="a `crc evaluate` folder shown in the report panel (shot 'report')",
    )
    ap.add_argument("--slide", type=Path, default=SLIDE,
                    help="the slide of the own-slide shots ('own-slide': all of them)")
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "demo_densenet121_3class.pt",
                    help="the shipped three-class model of the own-slide shots")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="crc-guide-shots-"))
    os.environ["CRC_VIEWER_HOME"] = str(home)

    import torch

    torch.set_num_threads(1)
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    import app  # noqa: F401  (PySide6 workaround)
    import app.dialogs.errors as errs
    from app.demo import bundle_root, install_demo
    from app.main_window import MainWindow

    def show_error(_parent: object, title: str, msg: str) -> None:  # never a modal box here
        print(f"error dialog: {title}: {msg}", file=sys.stderr)

    errs.show_error = show_error
    qapp = QApplication.instance() or QApplication(["crc-viewer"])
    qapp.setApplicationName("CRC Workbench")
    qapp.setWindowIcon(QIcon(str(bundle_root() / "resources" / "icon.png")))
    root = install_demo(home)
    win = MainWindow()
    win.resize(1400, 900)
    win.show()
    win.open_path(root, quiet=True)
    settle(qapp, win)
    want = set(args.only) if args.only else None

    def take(name: str) -> bool:
        return want is None or name in want or ("own-slide" in want and name in OWN_SHOTS)

    def out(name: str) -> Path:
        return args.out / f"guide-{name}.png"

    demo_shots(qapp, win, take, out)
    analysis_shots(qapp, win, args, take, out)

    # 9-14. the viewer's own tools: start page, annotation menu and properties, measure,
    # brightness/contrast, keyboard shortcuts
    viewer_shots(qapp, win, take, out)

    # 16-17. the review loop: prediction to proposed annotations, the Review dock mid-review
    review_shots(qapp, win, take, out)

    # 18. issue 13's flow on a slide of one's own (cmu-1 opened alone), step by step
    own_slide_shots(qapp, take, out, args.slide, args.model)

    # 15. Help > About
    if take("about"):
        dlg = win.about()
        wait_until(qapp, lambda: False, 0.5)
        save(dlg, out("about"))
        dlg.close()

    win.close()
    qapp.processEvents()
    return 0


if __name__ == "__main__":
    sys.exit(main())
