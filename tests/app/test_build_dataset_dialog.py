"""Build Dataset dialog on a small real-slide project: build with progress, results, cancel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crc_core.annotations import Annotation, AnnotationSet
from crc_core.classes import ClassScheme


@pytest.fixture
def project(slides_dir: Path, tmp_path: Path):
    from crc_core.project import Project

    proj = Project.create(tmp_path / "proj", scheme=ClassScheme.three_class())
    entry = proj.add_slide(slides_dir / "cmu-1-small-region.svs")
    proj.save_annotations(
        entry,
        AnnotationSet(
            [
                Annotation.rectangle("normal", 300, 400, 1000, 680),
                Annotation.rectangle("adenoma", 300, 1500, 1000, 680),
            ]
        ),
    )
    proj.save()
    return proj


def make_dialog(qtbot, project, **values):
    from app.dialogs.build_dataset import BuildDatasetDialog
    from crc_core.session import Session

    dlg = BuildDatasetDialog(Session(project))
    qtbot.addWidget(dlg)
    dlg.name_edit.setText("ds")
    dlg.random.setValue(0)
    dlg.min_gland.setValue(0)
    dlg.min_tissue.setValue(0)
    dlg.test_fraction.setValue(0)
    for k, v in values.items():
        getattr(dlg, k).setValue(v)
    dlg.show()
    return dlg


def test_build_shows_counts_and_sample_patches(qtbot, project, errors_seen):
    from PySide6.QtCore import Qt

    dlg = make_dialog(qtbot, project)
    with qtbot.waitSignal(dlg.buildFinished, timeout=60000):
        qtbot.mouseClick(dlg.build_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dlg.build_button.isEnabled(), timeout=10000)
    assert not errors_seen
    cells = {
        dlg.table.item(r, 0).text(): dlg.table.item(r, 5).text()
        for r in range(dlg.table.rowCount())
    }
    assert cells == {"Normal": "8", "Adenoma": "8", "Adenocarcinoma": "0", "Total": "16"}
    assert len(dlg.sample_labels["normal"]) == 6 and len(dlg.sample_labels["adenoma"]) == 6
    assert all(not lab.pixmap().isNull() for lab in dlg.sample_labels["normal"])
    assert (Path(project.datasets_dir) / "ds" / "manifest.csv").is_file()


def test_cancel_leaves_a_resumable_incomplete_dataset(qtbot, project, errors_seen):
    from PySide6.QtCore import Qt

    dlg = make_dialog(qtbot, project, patch_size=32, workers=1)
    dlg.overlap.setValue(0.5)
    started: list[int] = []
    dlg.progress.valueChanged.connect(lambda v: started.append(v))
    qtbot.mouseClick(dlg.build_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: any(v > 0 for v in started), timeout=30000)
    with qtbot.waitSignal(dlg.buildCancelled, timeout=30000):
        qtbot.mouseClick(dlg.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dlg.build_button.isEnabled(), timeout=10000)
    assert not errors_seen
    assert "incomplete" in dlg.status_label.text()
    doc = json.loads((Path(project.datasets_dir) / "ds" / "dataset.json").read_text())
    assert doc["complete"] is False
    assert not (Path(project.datasets_dir) / "ds" / "manifest.csv").exists()


def test_stain_preview_shows_normalised_samples(qtbot, project, errors_seen):
    import numpy as np
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QImage

    def pixels(lab) -> np.ndarray:
        img = lab.pixmap().toImage().convertToFormat(QImage.Format.Format_RGB888)
        arr = np.frombuffer(img.constBits(), np.uint8, img.sizeInBytes())
        return arr.reshape(img.height(), img.bytesPerLine())[:, : img.width() * 3].copy()

    dlg = make_dialog(qtbot, project)
    with qtbot.waitSignal(dlg.buildFinished, timeout=60000):
        qtbot.mouseClick(dlg.build_button, Qt.MouseButton.LeftButton)
    labs = dlg.sample_labels["normal"] + dlg.sample_labels["adenoma"]
    before = [pixels(lab) for lab in labs]
    with qtbot.waitSignal(dlg.stain_preview.previewShown, timeout=60000) as sig:
        dlg.stain_preview.combo.setCurrentText("reinhard")
    assert sig.args[0].startswith("Reinhard stain normalisation fitted on")
    assert "Reinhard" in dlg.stain_preview.note.text()
    changed = [np.abs(pixels(lab).astype(int) - b.astype(int)).mean() > 1
               for lab, b in zip(labs, before, strict=True)]
    assert sum(changed) >= len(labs) // 2      # glass-only patches pass through unchanged
    with qtbot.waitSignal(dlg.stain_preview.previewShown, timeout=10000):
        dlg.stain_preview.combo.setCurrentText("none")
    assert all(np.array_equal(pixels(lab), b) for lab, b in zip(labs, before, strict=True))
    assert not errors_seen


def test_a_banner_says_which_scale_the_gland_filter_assumes(qtbot, slides_dir: Path,
                                                            tmp_path: Path):
    from crc_core.project import Project

    proj = Project.create(tmp_path / "p", scheme=ClassScheme.three_class())
    tcga = proj.add_slide(slides_dir / "tcga-cr-7395-01a-01-ts1.svs")
    proj.add_slide(slides_dir / "cmu-1-small-region.svs")
    proj.save()
    dlg = make_dialog(qtbot, proj)   # gland filter off: nothing assumed
    qtbot.wait(400)
    assert not dlg.scale_banner.isVisible()
    dlg.min_gland.setValue(0.5)
    qtbot.waitUntil(dlg.scale_banner.isVisible, timeout=10000)
    text = dlg.scale_banner.text()
    assert text.count("states no pixel size") == 1 and tcga.id in text and "1.3 µm/px" in text
    proj.set_mpp(tcga, 0.5)          # the user states it: the banner goes
    dlg.patch_size.setValue(224)
    qtbot.waitUntil(lambda: not dlg.scale_banner.isVisible(), timeout=10000)


def test_an_area_drawn_and_built_at_once_is_in_the_dataset(
    qtbot, slides_dir, tmp_path, monkeypatch, errors_seen
):
    """Build Dataset takes the open document's areas from memory: an area drawn with the tool
    and built before any autosave reached the disk is in the dataset's manifest."""
    from PySide6.QtCore import QPoint, QPointF, Qt

    from app.main_window import MainWindow
    from crc_core.patches import read_manifest
    from crc_core.project import Project

    proj = Project.create(tmp_path / "proj", scheme=ClassScheme.three_class())
    proj.add_slide(slides_dir / "cmu-1-small-region.svs")
    proj.save()
    autosaved: list[int] = []  # the autosave pause never ends in this test: nothing on disk
    monkeypatch.setattr(Project, "autosave", lambda self, entry, aset: autosaved.append(len(aset)))
    win = MainWindow()
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    qtbot.waitExposed(win)
    assert win.open_path(proj.root)
    assert win.entry is not None and not Path(proj.annotations_path(win.entry)).exists()
    win.view.set_view(1100, 1500, 0.5)

    def at(x: float, y: float) -> QPoint:
        p = win.view.l0_to_widget(QPointF(x, y))
        return QPoint(round(p.x()), round(p.y()))

    win.ctl.set_tool("rectangle")
    qtbot.mousePress(win.view, Qt.MouseButton.LeftButton, pos=at(900, 1300))
    qtbot.mouseMove(win.view, at(1100, 1500))
    qtbot.mouseRelease(win.view, Qt.MouseButton.LeftButton, pos=at(1300, 1700))
    (drawn,) = list(win.document)

    win.analysis_actions["build"].trigger()
    dlg = win.analysis_dialogs["build"]
    dlg.name_edit.setText("ds")
    for spin, value in ((dlg.random, 0), (dlg.min_gland, 0), (dlg.min_tissue, 0),
                        (dlg.test_fraction, 0), (dlg.patch_size, 128)):
        spin.setValue(value)
    with qtbot.waitSignal(dlg.buildFinished, timeout=60000):
        qtbot.mouseClick(dlg.build_button, Qt.MouseButton.LeftButton)
    assert not errors_seen
    assert not Path(proj.annotations_path(win.entry)).exists()
    rows = read_manifest(Path(proj.datasets_dir) / "ds" / "manifest.csv")
    assert rows and {r["area_id"] for r in rows} == {drawn.id}
    assert {r["label"] for r in rows} == {drawn.class_id}


def test_poorly_differentiated_skips_the_gland_filter_unless_unticked(qtbot, tmp_path: Path):
    from PySide6.QtCore import Qt

    from crc_core.project import Project

    proj = Project.create(tmp_path / "p5", scheme=ClassScheme.paper())
    dlg = make_dialog(qtbot, proj, min_gland=0.5)
    lst = dlg.gland_exempt_list
    ticked = [lst.item(i).text() for i in range(lst.count())
              if lst.item(i).checkState() == Qt.CheckState.Checked]
    assert ticked == ["Adenocarcinoma poorly differentiated"]
    assert dlg.config().gland_exempt == ["adc-poor"]
    lst.setFocus()
    lst.setCurrentRow(ticked and [lst.item(i).text() for i in range(lst.count())].index(ticked[0]))
    qtbot.keyClick(lst, Qt.Key.Key_Space)     # untick: every class filtered
    assert dlg.config().gland_exempt == []
