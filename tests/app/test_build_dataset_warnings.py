"""Build Dataset: each warning of a build on a line of its own (issue 13: they ran together)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt

from crc_core.annotations import Annotation, AnnotationSet
from crc_core.classes import ClassScheme


def test_warnings_of_a_build_are_on_lines_of_their_own(qtbot, slides_dir: Path, tmp_path: Path,
                                                       errors_seen) -> None:
    from app.dialogs.build_dataset import BuildDatasetDialog
    from crc_core.project import Project
    from crc_core.session import Session

    proj = Project.create(tmp_path / "proj", scheme=ClassScheme.three_class())
    entry = proj.add_slide(slides_dir / "cmu-1-small-region.svs")
    proj.save_annotations(entry, AnnotationSet([
        Annotation.rectangle("normal", 300, 400, 600, 600),
        Annotation.rectangle("adenoma", 1200, 400, 40, 40),  # too small for a window
        Annotation.rectangle("adenoma", 1200, 1500, 40, 40),  # and another
    ]))
    proj.save()
    dlg = BuildDatasetDialog(Session(proj))
    qtbot.addWidget(dlg)
    dlg.name_edit.setText("ds")
    for box, value in ((dlg.random, 0), (dlg.min_gland, 0), (dlg.min_tissue, 0),
                       (dlg.test_fraction, 0)):
        box.setValue(value)
    dlg.show()
    qtbot.mouseClick(dlg.build_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dlg.result is not None, timeout=180000)
    lines = dlg.status_label.text().splitlines()
    assert len(dlg.result.warnings) >= 2
    assert [ln for ln in lines if ln.startswith("• ")] == [
        f"• {w}" for w in dlg.result.warnings[:3]]
