"""The event-loop and grabbing helpers of the guide's screenshot scripts (tools/screenshot_guide.py
and tools/guide_own_slide.py): pump the Qt event loop, wait for a condition or for every visible
slide tile, and save a grab of a live widget (or of the screen under a window) as a PNG.

:func:`save_small` writes a palette PNG (256 colours, optimised, the class colours kept exactly)
for the shots committed to docs/screenshots, where each image should stay under about 250 KB.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path


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


def save_screen(qapp, widget, path: Path) -> None:
    """Grab the screen under ``widget``'s window: includes popup menus and dialogs over it."""
    pump(qapp)
    g = widget.window().frameGeometry()
    img = qapp.primaryScreen().grabWindow(0, g.x(), g.y(), g.width(), g.height())
    if not img.save(str(path), "PNG"):
        raise SystemExit(f"cannot write {path}")
    print(f"wrote {path} ({img.width()}x{img.height()})")


def save_small(widget, path: Path, keep: Sequence[tuple[int, int, int]] = (),
               colours: int = 256) -> None:
    """Save ``widget.grab()`` as an optimised palette PNG of ``colours`` colours. ``keep``: colours
    mapped exactly (the class colours: a legend's swatch is too small for the median cut to keep
    its colour)."""
    import io

    from PIL import Image
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice

    data = QByteArray()
    buf = QBuffer(data)
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    widget.grab().save(buf, "PNG")
    buf.close()
    img = Image.open(io.BytesIO(bytes(data))).convert("RGB")
    keep = list(dict.fromkeys(tuple(c) for c in keep))
    n = colours - len(keep)
    base = img.quantize(colors=n, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    pal = (base.getpalette() or [])[: 3 * n]
    pal += [0] * (3 * n - len(pal)) + [v for c in keep for v in c]
    ref = Image.new("P", (1, 1))
    ref.putpalette(pal)
    img = img.quantize(palette=ref, dither=Image.Dither.NONE)
    img.save(path, "PNG", optimize=True)
    print(f"wrote {path} ({img.width}x{img.height}, {path.stat().st_size // 1024} KB)")
