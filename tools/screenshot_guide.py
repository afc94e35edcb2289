"""Screenshots of the user guide (docs/USER_GUIDE.md) and the README, taken of the real application.

Usage (under a virtual X server, so fonts and window decorations render as on a desktop)::

    xvfb-run -a -s "-screen 0 1400x900x24" .venv/bin/python tools/screenshot_guide.py \\
        --out docs/screenshots [--only main-prediction about ...]

The script installs the demo project (:mod:`app.demo`) into a temporary ``CRC_VIEWER_HOME``, opens
it in the real :class:`app.main_window.MainWindow`, drives the real widgets (tools, mouse events on
the view, the results panel's controls, the dialogs of the Analysis and Edit menus) and grabs each
window once every visible slide tile is painted. Nothing is drawn or faked: each PNG is
``QWidget.grab()`` of a live widget. Shots: ``guide-<name>.png`` for the names in :data:`SHOTS`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pump(qapp) -> None:
    """One turn of the event loop, deferred deletes included (``processEvents`` alone skips them,
    so widgets a panel replaced with ``deleteLater`` would still be painted)."""
    from PySide6.QtCore import QCoreApplication, QEvent

    qapp.processEvents()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def wait_until(qapp, cond: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pump(qapp)
        if cond():
            return True
        time.sleep(0.02)
    return False


def settle(qapp, win, timeout: float = 60.0) -> None:
    """Process events until every visible tile of the view is loaded, then a little more."""
    win.view.update()
    wait_until(qapp, lambda: win.view.is_complete(with_thumbnail=True), timeout)
    for _ in range(20):
        pump(qapp)
        time.sleep(0.01)


def save(widget, path: Path) -> None:
    img = widget.grab()
    if not img.save(str(path), "PNG"):
        raise SystemExit(f"cannot write {path}")
    print(f"wrote {path} ({img.width()}x{img.height()})")


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
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="crc-guide-shots-"))
    os.environ["CRC_VIEWER_HOME"] = str(home)

    import torch

    torch.set_num_threads(1)
    from PySide6.QtCore import QPoint, Qt
    from PySide6.QtGui import QIcon
    from PySide6.QtTest import QTest
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
    panel = win.results_panel
    want = set(args.only) if args.only else None

    def take(name: str) -> bool:
        return want is None or name in want

    def out(name: str) -> Path:
        return args.out / f"guide-{name}.png"

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
        win.docks["results"].raise_()
        panel.heat_box.setChecked(True)
        if panel.table.rowCount():
            panel._on_table_cellClicked(0, 0)
        settle(qapp, win)
        save(win, out("heatmap"))
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

    # 9. Help > About
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
