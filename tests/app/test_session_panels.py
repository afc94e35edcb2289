"""The Results and Review panels on a Session, without a main window (issue 16: panels take the
session, not the window): a prediction is saved into the project's layout and recorded in the
session, reloaded when the session's slide changes, and the region table's row selects its
annotation when clicked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt

from app.annotate.document import AnnotationDocument
from app.panels.results import ResultsPanel
from app.panels.review import ReviewPanel
from app.viewer.view import SlideView
from crc_core.annotations import Annotation, AnnotationSet
from crc_core.classes import ClassScheme
from crc_core.inference import GridSpec, Prediction
from crc_core.project import Project
from crc_core.session import Session
from crc_core.slide import open_slide


def _prediction(scheme: ClassScheme) -> Prediction:
    """A 4 x 4 grid of 100 px cells over the slide's top-left 400 px, all 'normal' (index 0)."""
    n = len(scheme)
    probs = np.zeros((n, 4, 4), np.float32)
    probs[0] = 0.8
    probs[1:] = 0.2 / (n - 1)
    g = GridSpec((0, 0), 100, 100, 4, 4, 0, 100, 64)
    return Prediction(probs=probs, selected=np.ones((4, 4), bool), grid=g, scheme=scheme.copy())


@pytest.fixture
def session(qtbot, tmp_path: Path):
    path = tmp_path / "small.png"
    Image.fromarray(np.full((512, 512, 3), 180, np.uint8)).save(path)
    project = Project.create(tmp_path / "proj", scheme=ClassScheme.three_class())
    entry = project.add_slide(path)
    project.save()
    session: Session[AnnotationDocument] = Session(project)
    view = SlideView()
    qtbot.addWidget(view)
    statuses: list[str] = []
    results = ResultsPanel(session, view, lambda text, _ms: statuses.append(text))
    qtbot.addWidget(results)
    review = ReviewPanel(session, view, results, lambda text, _ms: statuses.append(text))
    qtbot.addWidget(review)

    def open_again() -> AnnotationDocument:
        reader = open_slide(path)
        doc = AnnotationDocument(project.scheme, AnnotationSet(
            [Annotation.rectangle("normal", 50, 50, 200, 200)]), saver=None)
        view.set_source(reader)
        session.open_slide(reader, project, entry, doc)
        return doc

    yield session, results, review, open_again
    session.close_slide()


def test_results_panel_saves_into_the_project_and_reloads_with_the_slide(qtbot, session) -> None:
    s, results, review, open_again = session
    added: list[str] = []
    s.on("prediction_added", lambda name, _pred: added.append(name))
    doc = open_again()
    assert results.entries == {} and s.predictions == {}

    pred = _prediction(s.project.scheme)
    results.finish("m1 (current view)", pred)
    saved = s.project.prediction_paths(s.entry)
    assert [p.name for p in saved] == ["m1_current_view.npz"]
    assert s.predictions == {"m1 (current view)": pred} and added == ["m1 (current view)"]
    assert results.table.rowCount() == 1
    assert results.table.item(0, 2).text() == "Normal"  # the region's predicted class

    # a click on the region's row selects its annotation in the session's document
    rect = results.table.visualItemRect(results.table.item(0, 0))
    qtbot.mouseClick(results.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert doc.selection == [next(iter(doc.annotations)).id]

    # the Review panel reads the same session and the panel's shown prediction
    qtbot.waitUntil(lambda: review.items != [], timeout=5000)

    # the slide opened again: the saved prediction comes back from the project's folder
    open_again()
    assert list(results.entries) == ["m1 (current view)"]
    assert list(s.predictions) == ["m1 (current view)"]
    assert s.prediction_files["m1 (current view)"] == saved[0]

    results.remove("m1 (current view)")
    assert s.predictions == {}
