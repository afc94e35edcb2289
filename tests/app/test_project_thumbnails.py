"""Project panel: slide thumbnails, read off the GUI thread."""

from __future__ import annotations

import threading

import app.panels.project_panel as pp
from app.main_window import MainWindow
from crc_core.project import Project


def test_project_list_shows_slide_thumbnails_read_in_a_worker(
    qtbot, slides_dir, tmp_path, monkeypatch
):
    pp._cache.clear()
    proj = Project.create(tmp_path / "proj")
    for name in ("cmu-1-small-region.svs", "kidney-48-5.tif"):
        proj.add_slide(slides_dir / name)
    missing = tmp_path / "gone.svs"
    missing.write_bytes((slides_dir / "cmu-1-small-region.svs").read_bytes()[:4096])
    proj.add_slide(missing)  # a damaged file: listed, no thumbnail, no error
    proj.save()
    threads: list[bool] = []
    real_open = pp.open_slide

    def recording_open(path, *a, **k):
        threads.append(threading.current_thread() is threading.main_thread())
        return real_open(path, *a, **k)

    monkeypatch.setattr(pp, "open_slide", recording_open)
    w = MainWindow()
    qtbot.addWidget(w)
    assert w.open_path(tmp_path / "proj")
    panel = w.project_panel
    ids = [e.id for e in proj.slides]
    qtbot.waitUntil(lambda: all(panel.thumbnail(i) is not None for i in ids[:2]), timeout=20000)
    qtbot.waitUntil(lambda: panel._worker is None)
    assert threads and not any(threads)  # every thumbnail was read off the GUI thread
    tree = panel.tree
    for row in range(2):
        icon = tree.topLevelItem(row).icon(0)
        pix = icon.pixmap(64, 64)
        assert not icon.isNull() and max(pix.width(), pix.height()) == 64
        img = pix.toImage()
        c = img.pixelColor(img.width() // 2, img.height() // 2)
        assert (c.red(), c.green(), c.blue()) != (0, 0, 0)
    assert panel.thumbnail(ids[2]) is None and tree.topLevelItemCount() == 3
    # a save refreshes the list: the icons stay, nothing is read again
    n = len(threads)
    w.ctl.add_shape(__import__("shapely").box(10, 10, 100, 100), "x")
    assert w.document.flush()
    assert not tree.topLevelItem(0).icon(0).isNull() and len(threads) == n
    w.close()
