"""`crc-viewer`: the desktop application's entry point.

Usage::

    crc-viewer [SLIDE | PROJECT_DIR | --demo] [--annotations FILE] [--view X,Y,ZOOM]
               [--screenshot OUT.png] [--size WxH] [--selftest]

``--demo`` opens the demo project (a slide of EBHI-Seg validation tiles, its six ground-truth
annotations and the demo model's class map and CAM heatmap), first copying it from
``resources/demo`` into the user data folder when it is not there yet or the shipped version changed
(:mod:`app.demo`); the shipped files are never written.

Without ``--screenshot`` the window opens at once and the slide follows from a worker thread. When
it cannot be opened, the window says why (a message box, then the start page with the reason, the
recent files and the demo) and stays usable; the one-line reason also goes to stderr, and the exit
status when the window is closed is **2** unless a slide was opened meanwhile (0), so a script
that starts ``crc-viewer FILE`` learns that FILE did not open. Python warnings are shown in the
window (status bar, View > Messages) and written to ``data_home()/logs/crc-viewer.log``, not to
the terminal.

``--view X,Y,ZOOM`` centres the view on level-0 pixel (X, Y) at ZOOM screen pixels per level-0 pixel
(1 = 1:1 at level 0; 0.25 = a quarter). ``--screenshot OUT.png`` opens the window, waits until every
visible tile is painted at its final resolution, saves the window as PNG and exits 0; a slide that
cannot be opened prints one line on stderr and exits 2 (as does a bad option). ``--selftest`` opens
the window, draws and undoes an annotation on a generated in-memory slide, and exits 0 when all
went well, then installs the demo project into a temporary folder and opens it (when the build ships
it): a smoke test for packaged builds.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

GUI_SWITCH_INTERVAL_S = 0.001


def _parse_view(text: str) -> tuple[float, float, float]:
    try:
        x, y, z = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--view {text!r}: expected X,Y,ZOOM (three numbers)"
        ) from None
    if z <= 0:
        raise argparse.ArgumentTypeError(f"--view {text!r}: ZOOM must be > 0")
    return x, y, z


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size {text!r}: expected WxH, e.g. 1400x900") from None
    return w, h


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="crc-viewer", description="CRC Workbench slide viewer and annotator"
    )
    ap.add_argument("path", nargs="?", help="slide file or project folder")
    ap.add_argument(
        "--demo",
        action="store_true",
        help="open the demo project (copied into the user data folder on first use)",
    )
    ap.add_argument(
        "--annotations", metavar="FILE", help="GeoJSON/ASAP XML annotation file to open (autosaved)"
    )
    ap.add_argument(
        "--view", type=_parse_view, metavar="X,Y,ZOOM", help="centre (level-0 px) and zoom"
    )
    ap.add_argument(
        "--screenshot", metavar="OUT.png", help="save the window once fully painted, then exit"
    )
    ap.add_argument("--size", type=_parse_size, default=None, metavar="WxH", help="window size")
    ap.add_argument(
        "--timeout", type=float, default=120.0, help="screenshot: seconds to wait for tiles"
    )
    ap.add_argument(
        "--selftest", action="store_true", help="open, draw, undo, exit 0 when all works"
    )
    return ap


def _fail(msg: str) -> int:
    print(f"crc-viewer: error: {msg}", file=sys.stderr)
    return 2


def _open_error(path: str, exc: Exception) -> str:
    """The line for ``path`` that did not open: :func:`crc_core.errors.error_message`, with the
    path in front when the error names no file of its own."""
    from crc_core.errors import CrcError, error_message

    if isinstance(exc, CrcError) or getattr(exc, "filename", None):
        return error_message(exc)
    return f"{path}: {error_message(exc)}"


def _selftest(app: object, win: object) -> int:
    """Open a generated slide, draw, undo, redo, wait for the autosave; 0 when everything worked."""
    import tempfile
    import time

    import numpy as np
    from PIL import Image
    from shapely.geometry import box

    with tempfile.TemporaryDirectory(prefix="crc-viewer-selftest-") as tmp:
        os.environ["CRC_VIEWER_HOME"] = str(Path(tmp) / "home")
        img = np.full((600, 800, 3), 235, np.uint8)
        img[150:450, 200:600] = (180, 60, 140)
        Image.fromarray(img).save(Path(tmp) / "selftest.png")
        win.show()  # type: ignore[attr-defined]
        try:
            win.open_path(Path(tmp) / "selftest.png", quiet=True)  # type: ignore[attr-defined]
            doc = win.document  # type: ignore[attr-defined]
            win.ctl.add_shape(box(100, 100, 300, 250), "Draw rectangle")  # type: ignore[attr-defined]
            doc.undo_stack.undo()
            doc.undo_stack.redo()
            ok = len(doc) == 1 and doc.flush()
            deadline = time.monotonic() + 30
            while not win.view.is_complete() and time.monotonic() < deadline:  # type: ignore[attr-defined]
                app.processEvents()  # type: ignore[attr-defined]
                time.sleep(0.01)
            ok = ok and win.view.is_complete()  # type: ignore[attr-defined]
            if ok:
                ok = _selftest_demo(win, Path(tmp) / "home")
        except Exception as exc:  # report, never hang
            from crc_core.errors import error_message

            print(f"crc-viewer: selftest failed: {error_message(exc)}", file=sys.stderr)
            ok = False
        win.close()  # type: ignore[attr-defined]
    print("crc-viewer selftest: " + ("ok" if ok else "FAILED"))
    return 0 if ok else 1


def _selftest_demo(win: object, home: Path) -> bool:
    """Install the shipped demo into ``home`` and open it: slide, annotations, prediction layers."""
    from app.demo import install_demo, shipped_demo_dir

    if not (shipped_demo_dir() / "project.json").is_file():
        print("crc-viewer selftest: no demo project in this build (skipped)")
        return True
    root = install_demo(home)
    win.open_path(root, quiet=True)  # type: ignore[attr-defined]
    n = len(win.document) if win.document is not None else 0  # type: ignore[attr-defined]
    project, entry = win.project, win.entry  # type: ignore[attr-defined]
    shipped = bool(project is not None and entry is not None and project.prediction_paths(entry))
    layers = len(win.results_panel.entries)  # type: ignore[attr-defined]
    ok = win.slide is not None and n > 0 and (layers > 0 or not shipped)  # type: ignore[attr-defined]
    print(f"crc-viewer selftest: demo {n} annotations, {layers} prediction(s)")
    return ok


def _watch_outcome(win: object) -> dict[str, bool]:
    """Whether a slide opened, and whether an open failed (its reason printed on stderr)."""
    outcome = {"failed": False, "opened": False}

    def failed(_path: str, message: str) -> None:
        if not outcome["opened"] and not outcome["failed"]:
            print(f"crc-viewer: error: {message}", file=sys.stderr)
        outcome["failed"] = True

    win.openFailed.connect(failed)  # type: ignore[attr-defined]
    win.slideOpened.connect(lambda _p: outcome.update(opened=True))  # type: ignore[attr-defined]
    return outcome


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.demo:
        if args.path or args.annotations:
            return _fail("--demo opens the demo project: give no PATH or --annotations with it")
        from app.demo import install_demo
        from crc_core.errors import CrcError, error_message

        try:
            args.path = str(install_demo())
        except CrcError as exc:
            return _fail(error_message(exc))
    if args.screenshot and not args.path:
        return _fail("--screenshot needs a SLIDE or PROJECT_DIR (or --demo)")
    if (
        (args.screenshot or args.selftest)
        and "QT_QPA_PLATFORM" not in os.environ
        and not os.environ.get("DISPLAY")
    ):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"

    if args.screenshot and not Path(args.path).is_dir():
        # check the slide before any window exists: a bad one is one stderr line and exit 2
        from crc_core.errors import CrcError, error_message
        from crc_core.slide import open_slide

        try:
            open_slide(args.path).close()
        except CrcError as exc:
            return _fail(error_message(exc))

    from PySide6.QtCore import QtMsgType, qInstallMessageHandler
    from PySide6.QtWidgets import QApplication

    def _qt_messages(kind: QtMsgType, _ctx: object, msg: str) -> None:
        if "propagateSizeHints" in msg:  # offscreen platform noise, not a problem
            return
        print(msg, file=sys.stderr)

    qInstallMessageHandler(_qt_messages)

    # hand the GIL back to the GUI thread sooner while tile readers run (default 5 ms)
    sys.setswitchinterval(GUI_SWITCH_INTERVAL_S)

    app = QApplication.instance() or QApplication(["crc-viewer"])
    app.setApplicationName("CRC Workbench")
    app.setOrganizationName("crc-workbench")
    from app.demo import bundle_root

    icon = bundle_root() / "resources" / "icon.png"
    if icon.is_file():
        from PySide6.QtGui import QIcon

        app.setWindowIcon(QIcon(str(icon)))

    from app.main_window import MainWindow

    win = MainWindow()
    if args.size:
        win.resize(*args.size)
    elif args.screenshot:
        win.resize(1400, 900)
    if args.selftest:
        return _selftest(app, win)
    outcome = _watch_outcome(win)
    win.show()
    app.processEvents()
    if args.path:
        if args.screenshot:
            try:
                win.open_path(args.path, annotations=args.annotations, quiet=True)
            except Exception as exc:
                return _fail(_open_error(args.path, exc))
        else:  # interactive: the window is up at once, the slide follows from a worker thread
            _open_interactive(win, args)
    if args.demo and getattr(win, "results_panel", None) is not None:
        def show_results(_path: str = "") -> None:
            if win.results_panel.entries:  # the demo model's prediction: its region table
                win.docks["results"].raise_()

        show_results()
        # interactive: the slide arrives from a worker, its saved predictions from another
        win.results_panel.savedLoaded.connect(show_results)
    if not args.screenshot:
        rc = app.exec()
        if args.path and outcome["failed"] and not outcome["opened"]:
            return 2  # the slide asked for on the command line never opened
        return rc
    return _shoot(app, win, args)


def _open_interactive(win: Any, args: argparse.Namespace) -> None:
    """Open ``args.path`` in a worker thread; ``--view`` applies to the first slide shown."""
    if args.view:
        pending = [args.view]

        def apply_view(_path: str) -> None:
            if pending:
                win.view.set_view(*pending.pop())

        win.slideOpened.connect(apply_view)
    win.open_path_async(args.path, annotations=args.annotations)


def _shoot(app: Any, win: Any, args: argparse.Namespace) -> int:
    """``--screenshot``: save the window once every visible tile is painted; the exit status."""
    from PySide6.QtCore import QTimer

    if args.view:
        app.processEvents()
        win.view.set_view(*args.view)
    out = Path(args.screenshot)
    result = {"rc": 1}

    def shoot() -> None:
        app.processEvents()
        img = win.grab()
        if not img.save(str(out), "PNG"):
            print(f"crc-viewer: error: cannot write {out}", file=sys.stderr)
            result["rc"] = 2
        else:
            result["rc"] = 0
        win.close()
        app.quit()

    def give_up() -> None:
        print(
            f"crc-viewer: error: tiles not painted within {args.timeout:g} s; no screenshot",
            file=sys.stderr,
        )
        win.close()
        app.quit()

    app.processEvents()
    win.view.wait_complete_timer(shoot)
    QTimer.singleShot(int(args.timeout * 1000), give_up)
    app.exec()
    return result["rc"]


if __name__ == "__main__":
    raise SystemExit(main())
