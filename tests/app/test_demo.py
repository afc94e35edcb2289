"""`crc-viewer --demo`: the shipped demo project is copied into the user data folder and opened with
its slide, its nine ground-truth annotations and the demo model's prediction layers; resources/ is
never written; a changed shipped version is installed again."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication

from app import __main__ as viewer_main
from app.demo import VERSION_FILE, install_demo, shipped_demo_dir
from app.main_window import MainWindow
from app.viewer.prediction_layers import ClassMapLayer, HeatmapLayer
from crc_core.errors import ProjectError

RESOURCES = shipped_demo_dir().parent


def _tree_state(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``root``: (size, mtime_ns, sha256)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[p.relative_to(root).as_posix()] = (
                st.st_size,
                st.st_mtime_ns,
                hashlib.sha256(p.read_bytes()).hexdigest(),
            )
    return out


@pytest.fixture
def run_demo(monkeypatch: pytest.MonkeyPatch, qapp, qtbot):
    """Run ``crc-viewer --demo`` up to the event loop; return (rc, the main window)."""
    if not (shipped_demo_dir() / "project.json").is_file():
        pytest.skip("resources/demo is not in this checkout")
    windows: list[MainWindow] = []

    def fake_exec(*_args: object) -> int:  # the real start-up ran; stop before the event loop
        QApplication.processEvents()
        windows.extend(
            w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()
        )
        return 0

    monkeypatch.setattr(QApplication, "exec", fake_exec)

    def run(*extra: str) -> tuple[int, MainWindow | None]:
        rc = viewer_main.main(["--demo", *extra])
        win = windows[-1] if windows else None
        if win is not None:  # the window is up at once; the slide arrives from a worker thread
            qtbot.waitUntil(lambda: win.slide is not None and win.document is not None,
                            timeout=30000)
            QApplication.processEvents()
        return rc, win

    return run


def test_demo_opens_slide_annotations_and_class_map(qtbot, run_demo, viewer_home: Path) -> None:
    rc, win = run_demo()
    assert rc == 0 and win is not None
    assert win.project is not None and win.project.root == viewer_home / "demo"
    assert win.slide is not None and win.slide.path.name == "demo_slide.tiff"
    assert win.slide.level_count >= 3
    areas = json.loads((shipped_demo_dir() / "demo.json").read_text())["areas"]
    assert len(win.document) == len(areas) == 9   # three areas per class
    # the saved prediction is read in a worker after the slide (opened from the UI) is shown
    qtbot.waitUntil(lambda: any(isinstance(ly, ClassMapLayer) for ly in win.view.layers),
                    timeout=30000)
    layers = list(win.view.layers)
    class_maps = [ly for ly in layers if isinstance(ly, ClassMapLayer)]
    assert class_maps and class_maps[0].visible  # the demo model's class map, shown
    heat = [ly for ly in layers if isinstance(ly, HeatmapLayer)]
    assert heat and not heat[0].visible  # the CAM heatmap is there, ready to toggle
    assert not win.docks["results"].visibleRegion().isEmpty()  # its region table is in front
    win.results_panel.heat_box.setChecked(True)
    assert heat[0].visible


def test_demo_never_writes_into_resources(run_demo, viewer_home: Path) -> None:
    before = _tree_state(RESOURCES)
    rc, win = run_demo()
    assert rc == 0 and win is not None
    from shapely.geometry import box

    win.ctl.add_shape(box(100, 100, 400, 300), "Draw rectangle")  # an edit autosaves
    assert win.document.flush()
    win.close()
    assert _tree_state(RESOURCES) == before
    copy = viewer_home / "demo" / "annotations" / "demo_slide.geojson"
    shipped = shipped_demo_dir() / "annotations" / "demo_slide.geojson"
    assert copy.read_bytes() != shipped.read_bytes()


def test_demo_copy_is_reused_while_the_shipped_version_is_unchanged(viewer_home: Path) -> None:
    if not (shipped_demo_dir() / "project.json").is_file():
        pytest.skip("resources/demo is not in this checkout")
    root = install_demo(viewer_home)
    marker = root / "user-note.txt"
    marker.write_text("kept")
    assert install_demo(viewer_home) == root
    assert marker.read_text() == "kept"


def test_changed_shipped_demo_is_installed_again(tmp_path: Path, viewer_home: Path) -> None:
    if not (shipped_demo_dir() / "project.json").is_file():
        pytest.skip("resources/demo is not in this checkout")
    src = tmp_path / "shipped"
    shutil.copytree(shipped_demo_dir(), src)
    no_model = tmp_path / "absent.pt"
    root = install_demo(viewer_home, src=src, model=no_model)
    first = (root / VERSION_FILE).read_text()
    (src / "demo.json").write_text((src / "demo.json").read_text() + "\n")  # a new release
    root = install_demo(viewer_home, src=src, model=no_model)
    assert (root / VERSION_FILE).read_text() != first
    assert (root / "demo.json").read_bytes() == (src / "demo.json").read_bytes()
    assert (viewer_home / "demo.previous" / "project.json").is_file()  # the old copy kept aside


def test_demo_with_a_path_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    rc = viewer_main.main(["--demo", "some-slide.svs"])
    assert rc == 2
    assert "--demo" in capsys.readouterr().err


def test_a_demo_that_cannot_be_written_names_the_file_and_the_problem(tmp_path: Path) -> None:
    if not (shipped_demo_dir() / "project.json").is_file():
        pytest.skip("resources/demo is not in this checkout")
    home = tmp_path / "home"
    home.write_text("a file where the data folder should be")
    with pytest.raises(ProjectError) as err:
        install_demo(home, model=tmp_path / "absent.pt")
    assert str(err.value) == (f"cannot install the demo project into {home / 'demo'}: "
                              f"{home}: File exists")
