"""The Qt-free session (project, open slide, annotations, predictions, events) and the project's
folder layout (datasets, models, predictions), as the viewer's panels and dialogs use them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crc_core.annotations import Annotation, AnnotationSet
from crc_core.classes import ClassScheme
from crc_core.inference import GridSpec, Prediction, load_prediction
from crc_core.project import Project
from crc_core.project_folders import safe_file_name
from crc_core.session import EVENTS, Session
from crc_core.slide import open_slide


@dataclass
class Doc:
    """The least an annotation document is for the session."""

    scheme: ClassScheme
    annotations: AnnotationSet = field(default_factory=AnnotationSet)


def _prediction(scheme: ClassScheme) -> Prediction:
    probs = np.full((len(scheme), 2, 3), np.nan, dtype=np.float32)
    probs[:, 0, 0] = np.linspace(0.9, 0.1, len(scheme))
    g = GridSpec((100, 200), 50, 50, 2, 3, 0, 50, 64, 4, 4)
    return Prediction(probs=probs, selected=~np.isnan(probs[0]), grid=g, scheme=scheme.copy())


@pytest.fixture
def project(tmp_path: Path) -> Project:
    proj = Project.create(tmp_path / "proj", scheme=ClassScheme.three_class())
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(tmp_path / name)
        proj.add_slide(tmp_path / name)
    proj.save()
    return proj


def _record(session: Session) -> list[tuple]:
    seen: list[tuple] = []
    for name in sorted(EVENTS):
        session.on(name, lambda *args, n=name: seen.append((n, *args)))
    return seen


def _open(session: Session, project: Project, i: int) -> Doc:
    entry = project.slides[i]
    doc = Doc(project.scheme, AnnotationSet([Annotation.rectangle("normal", 0, 0, 10, 10)]))
    session.open_slide(open_slide(project.slide_path(entry)), project, entry, doc)
    return doc


def test_events_fire_on_project_and_slide_change_in_order(project: Project) -> None:
    session: Session[Doc] = Session()
    seen = _record(session)
    doc = _open(session, project, 0)
    assert [e[0] for e in seen] == ["project_changed", "slide_changed"]
    assert seen[0][1] is project and seen[1][1] is session.reader
    assert session.document is doc and session.entry is project.slides[0]
    assert session.slide_path == project.slide_path(project.slides[0])
    assert session.scheme is project.scheme and len(session.annotations) == 1

    first = session.reader
    seen.clear()
    _open(session, project, 1)  # same project: only the slide changes; the old reader closed
    assert [e[0] for e in seen] == ["slide_changed"]
    assert first is not None and first is not session.reader
    assert first.closed

    seen.clear()
    reader = session.reader
    session.close_slide()
    assert seen == [("slide_closed",)]
    assert session.reader is None and session.document is None and session.project is project
    assert reader is not None and reader.closed
    session.close_slide()  # nothing open: nothing emitted
    assert seen == [("slide_closed",)]


def test_unsubscribe_and_unknown_events(project: Project) -> None:
    session: Session[Doc] = Session(project)
    calls: list[object] = []
    off = session.on("slide_changed", calls.append)
    _open(session, project, 0)
    off()
    _open(session, project, 1)
    assert len(calls) == 1
    with pytest.raises(ValueError, match="unknown session event"):
        session.on("slideOpened", calls.append)


def test_prediction_added_saved_in_the_project_and_dropped_with_the_slide(
    project: Project,
) -> None:
    session: Session[Doc] = Session()
    assert session.save_prediction("m", _prediction(project.scheme)) is None  # no slide: nowhere
    _open(session, project, 0)
    seen = _record(session)
    pred = _prediction(project.scheme)
    path = session.save_prediction("resnet50 (current view)", pred)
    assert path == project.prediction_path(project.slides[0], "resnet50 (current view)")
    assert path.parent == session.prediction_folder() == project.prediction_folder("a")
    assert path.name == "resnet50_current_view.npz"
    assert load_prediction(path).model["display_name"] == "resnet50 (current view)"
    session.add_prediction("resnet50 (current view)", pred, path)
    assert seen == [("prediction_added", "resnet50 (current view)", pred)]
    assert session.prediction_files["resnet50 (current view)"] == path
    session.remove_prediction("resnet50 (current view)")
    session.remove_prediction("never added")  # nothing emitted
    assert seen[1:] == [("prediction_removed", "resnet50 (current view)")]

    session.add_prediction("again", pred)
    _open(session, project, 1)
    assert session.predictions == {}  # they belonged to the other slide
    assert project.prediction_paths(project.slides[0]) == [path]  # the file stays
    assert project.prediction_paths(project.slides[1]) == []


def test_open_annotation_sets_are_copies_of_the_document(project: Project) -> None:
    session: Session[Doc] = Session(project)
    assert session.open_annotation_sets() == {}
    doc = _open(session, project, 0)
    sets = session.open_annotation_sets()
    assert list(sets) == [project.slides[0].id] and len(sets["a"]) == 1
    assert sets["a"] is not doc.annotations
    session.annotation_file = project.root / "elsewhere.geojson"  # annotations of their own
    assert session.open_annotation_sets() == {}


def test_project_lists_its_datasets_and_models_without_creating_folders(
    project: Project,
) -> None:
    assert project.list_datasets() == [] and project.list_models() == []
    assert not (project.root / "datasets").exists() and not (project.root / "models").exists()
    for name, complete in (("b-set", True), ("a-set", True), ("partial", False)):
        d = project.dataset_path(name)
        d.mkdir(parents=True)
        if complete:
            (d / "manifest.csv").write_text("path,label\n")
    assert project.list_datasets() == [project.root / "datasets" / n for n in ("a-set", "b-set")]
    old = project.models_dir / "run1" / "best.pt"
    new = project.models_dir / "run2" / "best.pt"
    for i, p in enumerate((old, new)):
        p.parent.mkdir(parents=True)
        p.write_bytes(b"x")
        os.utime(p, (1_000_000 + i, 1_000_000 + i))
    (project.models_dir / "run2" / "notes.txt").write_text("not a model")
    assert project.list_models() == [new, old]
    assert project.list_models(limit=1) == [new]


def test_safe_file_names() -> None:
    assert safe_file_name("resnet50 (slide)") == "resnet50_slide"
    assert safe_file_name("../..") == "prediction"
    assert safe_file_name("a/b\\c") == "a_b_c"
