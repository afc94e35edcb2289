"""Bad files opened in the GUI: one error dialog naming the problem, and the window stays usable.

The same kinds of files as ``tests/core/test_reliability_corpus.py`` (made here, small): broken and
hostile slides, annotation files, project folders and checkpoints. After each refusal the slide
that was open is still open and a rectangle can still be drawn on it.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import pytest
import tifffile
from PySide6.QtCore import QPoint, QPointF, Qt

from app.main_window import MainWindow
from crc_core.project import PROJECT_FILE, Project
from crc_testkit.synthetic import write_pyramid_tiff

CMU = "cmu-1-small-region.svs"
L = Qt.MouseButton.LeftButton


@pytest.fixture
def win(qtbot, slides_dir: Path) -> MainWindow:
    w = MainWindow()
    qtbot.addWidget(w)
    w.resize(1000, 700)
    w.show()
    qtbot.waitExposed(w)
    assert w.open_path(slides_dir / CMU)
    w.view.set_view(1100, 1500, 0.5)
    return w


def _wpt(w: MainWindow, x: float, y: float) -> QPoint:
    p = w.view.l0_to_widget(QPointF(x, y))
    return QPoint(round(p.x()), round(p.y()))


def assert_still_usable(qtbot, w: MainWindow) -> None:
    """The cmu slide is still open and a rectangle drawn with the mouse becomes an annotation."""
    assert w.slide is not None and w.slide.path.name == CMU
    n = len(w.document)
    w.ctl.set_tool("rectangle")
    qtbot.mousePress(w.view, L, pos=_wpt(w, 900, 1300))
    qtbot.mouseMove(w.view, _wpt(w, 1100, 1500))
    qtbot.mouseRelease(w.view, L, pos=_wpt(w, 1200, 1600))
    assert len(w.document) == n + 1


def _png_bomb(side: int) -> bytes:
    comp = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + tag + payload
                + struct.pack(">I", zlib.crc32(tag + payload) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body)
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def bad_slides(slides_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("gui-bad-slides")
    svs = (slides_dir / CMU).read_bytes()
    write_pyramid_tiff(d / "ok.tif", 1024, 768, levels=1)
    tif = (d / "ok.tif").read_bytes()
    enormous = bytearray(tif)
    with tifffile.TiffFile(d / "ok.tif") as tf:
        for code in (256, 257):
            tag = tf.pages[0].tags[code]
            struct.pack_into("<I" if int(tag.dtype) == 4 else "<H", enormous, tag.valueoffset,
                             3_000_000)
    made = {
        "zero-byte.svs": b"",
        "truncated.svs": svs[: len(svs) // 2],
        "truncated.tif": tif[: len(tif) // 2],
        "not-an-image.svs": b"Patient list, do not share\n" * 40,
        "enormous.tif": bytes(enormous),
        "bomb.png": _png_bomb(20_000),
    }
    for name, data in made.items():
        (d / name).write_bytes(data)
    return {name: d / name for name in made}


@pytest.mark.parametrize("name", ["zero-byte.svs", "truncated.svs", "truncated.tif",
                                  "not-an-image.svs", "enormous.tif", "bomb.png"])
def test_bad_slide_gives_one_dialog_and_the_window_stays_usable(
        qtbot, win: MainWindow, bad_slides: dict[str, Path], errors_seen, name: str) -> None:
    assert not win.open_path(bad_slides[name])
    assert len(errors_seen) == 1
    title, message = errors_seen[0]
    assert name in message and "Traceback" not in message and "\n" not in message.strip()
    assert_still_usable(qtbot, win)


def test_bad_slide_opened_from_the_menu_path_reports_from_the_worker(
        qtbot, win: MainWindow, bad_slides: dict[str, Path], errors_seen) -> None:
    win.open_path_async(bad_slides["truncated.svs"])  # what File > Open and drops use
    qtbot.waitUntil(lambda: len(errors_seen) == 1, timeout=30000)
    assert "truncated" in errors_seen[0][1]
    assert_still_usable(qtbot, win)


XXE = """<?xml version="1.0"?>
<!DOCTYPE ASAP_Annotations [<!ENTITY secret SYSTEM "file:///etc/hostname">]>
<ASAP_Annotations><Annotations>
<Annotation Name="&secret;" Type="Polygon" PartOfGroup="Normal"><Coordinates>
<Coordinate Order="0" X="0" Y="0"/><Coordinate Order="1" X="500" Y="0"/>
<Coordinate Order="2" X="500" Y="500"/></Coordinates></Annotation>
</Annotations></ASAP_Annotations>
"""

LAUGHS = ('<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">\n'
          + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n'
                    for i in range(1, 10))
          + ']>\n<ASAP_Annotations><Annotations><Annotation Name="&lol9;"/></Annotations>'
            '</ASAP_Annotations>\n')

ANNOTATIONS = {
    "not-json.geojson": "Name,Class\nA,Normal\n",
    "wrong-types.geojson": json.dumps({"type": "FeatureCollection", "features": {"a": 1}}),
    "nan.geojson": json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"classification": {"name": "Normal"}},
        "geometry": {"type": "Polygon",
                     "coordinates": [[[0, 0], [float("nan"), 0], [5, 5], [0, 0]]]}}]}),
    "empty.geojson": "",
    "xxe.xml": XXE,
    "laughs.xml": LAUGHS,
}


@pytest.mark.parametrize("name", list(ANNOTATIONS))
def test_bad_annotation_file_gives_one_dialog_and_keeps_the_open_slide(
        qtbot, win: MainWindow, slides_dir: Path, tmp_path: Path, errors_seen,
        name: str) -> None:
    bad = tmp_path / name
    bad.write_text(ANNOTATIONS[name], encoding="utf-8")
    assert not win.open_path(slides_dir / "tcga-cr-7395-01a-01-ts1.svs", annotations=bad)
    assert len(errors_seen) == 1 and name in errors_seen[0][1]
    host = Path("/etc/hostname")
    if name == "xxe.xml" and host.is_file() and host.read_text().strip():
        assert host.read_text().strip() not in errors_seen[0][1]
    assert_still_usable(qtbot, win)


def _project(root: Path, edit) -> Path:
    p = Project.create(root)
    p.save()
    f = root / PROJECT_FILE
    doc = json.loads(f.read_text(encoding="utf-8"))
    edit(doc)
    f.write_text(json.dumps(doc), encoding="utf-8")
    return root


PROJECTS = {
    "escaping-path": (lambda d: d["slides"].append({"id": "evil", "path": "../../etc/hostname"}),
                      "leaves the project folder"),
    "newer-format": (lambda d: d.update(version=99), "newer CRC Workbench"),
    "not-json": (None, "project.json"),
}


@pytest.mark.parametrize("case", list(PROJECTS))
def test_bad_project_gives_one_dialog_and_keeps_the_open_slide(
        qtbot, win: MainWindow, tmp_path: Path, errors_seen, case: str) -> None:
    edit, words = PROJECTS[case]
    root = tmp_path / "proj"
    if edit is None:
        root.mkdir()
        (root / PROJECT_FILE).write_text("{ not json", encoding="utf-8")
    else:
        _project(root, edit)
    before = (root / PROJECT_FILE).read_bytes()
    assert not win.open_path(root)
    assert len(errors_seen) == 1 and words in errors_seen[0][1]
    assert (root / PROJECT_FILE).read_bytes() == before
    assert_still_usable(qtbot, win)


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("kind", ["truncated", "text", "hostile"])
def test_bad_checkpoint_in_the_predict_dialog_gives_one_dialog_and_runs_nothing(
        qtbot, win: MainWindow, tmp_path: Path, errors_seen, kind: str) -> None:
    import torch

    from app.dialogs.predict import PredictDialog

    marker = tmp_path / "code-ran"
    ckpt = tmp_path / f"{kind}.pt"
    if kind == "hostile":
        torch.save({"format": 1, "arch": "densenet121", "model": _RunsCode(str(marker))}, ckpt)
    elif kind == "text":
        ckpt.write_text("not weights\n")
    else:
        torch.save({"w": torch.zeros(1000)}, ckpt)
        ckpt.write_bytes(ckpt.read_bytes()[:300])
    dlg = PredictDialog(win.session, win.view, win.settings, win.results_panel, win)
    qtbot.addWidget(dlg)
    dlg.ckpt.setCurrentText(str(ckpt))
    dlg.set_scope("view")
    if dlg.start():
        qtbot.waitUntil(lambda: not dlg.running, timeout=60000)
    assert len(errors_seen) == 1 and ckpt.name in errors_seen[0][1]
    assert "Traceback" not in errors_seen[0][1]
    assert not marker.exists()
    assert_still_usable(qtbot, win)


@pytest.mark.parametrize("exc, said", [
    (OSError(28, "No space left on device", "/p/annotations/s.geojson"),
     "/p/annotations/s.geojson: No space left on device"),
    (OSError(28, "No space left on device"), "No space left on device"),   # no file named
])
def test_a_failed_autosave_says_the_line_of_error_message(qtbot, exc: OSError, said: str):
    from app.annotate.document import AnnotationDocument
    from crc_core.classes import ClassScheme
    from crc_core.errors import error_message

    def saver(_annotations: object) -> None:
        raise exc

    doc = AnnotationDocument(ClassScheme.paper(), saver=saver)
    told: list[str] = []
    doc.saveFailed.connect(told.append)
    doc.dirty = True
    assert doc.flush() is False
    assert told == [f"Annotations could not be saved: {said}"]
    assert said == error_message(exc)
