"""Analysis > Prediction to Annotations…: the class map of the whole slide, of the selected
annotations or of the visible area becomes annotations marked "proposed", in one undoable command.

The dialog reads the predictions of the Results panel (:mod:`app.panels.results`), runs
:func:`crc_core.proposals.conversion_job` in a :class:`app.workers.JobWorker` (never on the GUI
thread) and pushes the result onto the document's undo stack as one change ("Convert prediction:
N proposed areas"), autosaved like any edit. The minimum area is in µm² when the prediction knows
the slide's pixel size, else in level-0 px² (the field's unit says which). The prediction's
classes are matched to the project's by id or name (:func:`crc_core.proposals.class_targets`),
else through the model's class groups (:func:`crc_core.scheme_map.target_mapping`): a coarse
model's class that covers several project classes (its "Adenocarcinoma" for the three grades) cannot
tell them apart, so the dialog offers a "<class> (model) becomes" choice of its members (the first
by default), states that the grade was not predicted, and each such proposal's review record keeps
that note and the chosen grade for review (Enter on a window of that class in the Review panel
gives it the same grade). A class with no counterpart at all is refused with one message. Closing
the dialog cancels a running conversion.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QRectF
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from app.annotate.document import AnnotationDocument
from app.dialogs import errors
from app.viewer.view import SlideView
from app.workers import JobWorker
from crc_core.errors import CrcError
from crc_core.inference import Prediction
from crc_core.proposals import conversion_job, prediction_mpp
from crc_core.scheme_map import scheme_map, target_mapping
from crc_core.session import Session

TITLE = "Prediction to Annotations"


def push_added(doc: Any, anns: list[Any], text: str) -> None:
    """Add ``anns`` to the document as one undoable command named ``text``."""
    doc.push_change({a.id: None for a in anns}, {a.id: a for a in anns}, text)
SCOPES = ("Whole slide", "Selected annotations", "Visible area")


class ConvertPredictionDialog(QDialog):
    """See the module docstring: ``session``'s finished predictions (``current`` first) into
    proposed areas of its document; ``view`` gives the visible area, ``status(text, ms)`` the
    status line."""

    def __init__(
        self, session: Session[AnnotationDocument], view: SlideView,
        status: Callable[[str, int], None] | None = None, current: str | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.session, self.view = session, view
        self._status = status or (lambda _text, _ms: None)
        self.setWindowTitle(TITLE)
        self.preds: dict[str, Prediction] = dict(session.predictions)
        if session.document is None or not self.preds:
            raise CrcError("there is no prediction of this slide to convert: run Analysis > "
                           "Predict… first (or open a slide with a saved prediction)")
        self.worker: JobWorker | None = None
        self.model = QComboBox()
        self.model.addItems(list(self.preds))
        if current in self.preds:
            self.model.setCurrentText(current)
        self.model.currentTextChanged.connect(self._on_model_currentTextChanged)
        self.scope = QComboBox()
        self.scope.addItems(SCOPES)
        if session.document.selection:
            self.scope.setCurrentText("Selected annotations")
        self.min_conf = QDoubleSpinBox()
        self.min_conf.setRange(0.0, 1.0)
        self.min_conf.setSingleStep(0.05)
        self.min_conf.setValue(0.5)
        self.min_conf.setToolTip("Cells whose top probability is below this are left out")
        self.min_area = QDoubleSpinBox()
        self.min_area.setRange(0.0, 1e12)
        self.min_area.setDecimals(0)
        self.min_area.setSingleStep(1000)
        self.class_row = QHBoxLayout()
        self.class_boxes: list[QCheckBox] = []
        self.group_form = QFormLayout()
        self.group_boxes: dict[str, QComboBox] = {}  # model class id -> the member it becomes
        self.group_note = QLabel("")
        self.group_note.setWordWrap(True)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.convert_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.convert_button.setText("Convert")
        self.buttons.accepted.connect(self.start)
        self.buttons.rejected.connect(self.reject)
        form = QFormLayout()
        form.addRow("Model", self.model)
        form.addRow("Area", self.scope)
        form.addRow("Classes", self.class_row)
        form.addRow("Min. confidence", self.min_conf)
        form.addRow("Min. area", self.min_area)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(self.group_form)
        lay.addWidget(self.group_note)
        lay.addWidget(self.status)
        lay.addWidget(self.buttons)
        self._on_model_currentTextChanged(self.model.currentText())

    # ------------------------------------------------------------------ inputs
    def _document(self) -> AnnotationDocument:
        doc = self.session.document
        if doc is None:
            raise CrcError("the slide was closed: open it again to convert its prediction")
        return doc

    def prediction(self) -> Prediction:
        return self.preds[self.model.currentText()]

    def _on_model_currentTextChanged(self, _name: str) -> None:
        pred = self.prediction()
        while self.class_boxes:
            w: QWidget = self.class_boxes.pop()
            self.class_row.removeWidget(w)
            w.deleteLater()
        for c in pred.scheme:
            b = QCheckBox(c.name)
            b.setChecked(True)
            self.class_row.addWidget(b)
            self.class_boxes.append(b)
        self._fill_groups(pred)
        mpp = prediction_mpp(pred)
        self.min_area.setSuffix(" µm²" if mpp else " px²")
        self.min_area.setToolTip("Smaller areas are left out" + (
            "" if mpp else " (the slide has no pixel size: level-0 pixels squared)"))

    def _fill_groups(self, pred: Prediction) -> None:
        """One "<class> (model) becomes" choice per model class that covers project classes."""
        while self.group_form.rowCount():
            self.group_form.removeRow(0)
        self.group_boxes = {}
        try:
            links = scheme_map(pred.scheme, self._document().scheme).links
        except CrcError:  # refused with its message on Convert
            links = []
        for k in (k for k in links if k.kind == "group"):
            combo = QComboBox()
            for p in k.project:
                combo.addItem(p.name, p.id)
            combo.setToolTip(f"The model does not predict the grade within {k.model.name}: its "
                             f"areas are proposed as this class, to be corrected in review")
            combo.currentIndexChanged.connect(self._state_groups)
            self.group_form.addRow(f"{k.model.name} (model) becomes", combo)
            self.group_boxes[k.model.id] = combo
        self._state_groups()

    def _state_groups(self) -> None:
        names = {m: c.currentText() for m, c in self.group_boxes.items()}
        self.group_note.setText(" ".join(
            f"The model predicts {self.prediction().scheme.get(m).name}, not its grade: its areas "
            f"are proposed as {n} and each says so in its review record; set the grade in review."
            for m, n in names.items()))

    def mapping(self) -> tuple[dict[str, str] | None, dict[str, str]]:
        """(prediction class -> project class, notes) for :func:`conversion_job`; ``None`` when
        the prediction's classes are the project's."""
        choices = {m: str(c.currentData()) for m, c in self.group_boxes.items()}
        return target_mapping(self.prediction().scheme, self._document().scheme, choices)

    def region(self) -> BaseGeometry | None:
        """The area to convert (level-0 px); ``None`` = the whole slide."""
        scope = self.scope.currentText()
        if scope == "Selected annotations":
            sel = self._document().selected()
            if not sel:
                raise CrcError("no annotation is selected: select the areas to convert, or "
                               "choose Whole slide")
            from shapely import union_all

            return union_all([a.geometry for a in sel])
        if scope == "Visible area":
            r: QRectF = self.view.visible_rect_l0()
            return box(r.left(), r.top(), r.right(), r.bottom())
        return None

    def options(self) -> dict[str, Any]:
        classes = [b.text() for b in self.class_boxes if b.isChecked()]
        if not classes:
            raise CrcError("no class is chosen: tick at least one class to convert")
        mapping, notes = self.mapping()
        return {"min_confidence": self.min_conf.value(), "min_area": self.min_area.value(),
                "classes": classes, "region": self.region(), "mapping": mapping, "notes": notes,
                "chosen": list(self.group_boxes)}  # the grades were chosen here (for review)

    # ------------------------------------------------------------------ running
    def start(self) -> None:
        if self.worker is not None:
            return
        doc = self._document()
        try:
            pred, opts = self.prediction(), self.options()
        except CrcError as exc:
            errors.report(self, TITLE, str(exc))
            return
        self.convert_button.setEnabled(False)
        self.status.setText("Converting…")
        # no Qt parent: a dialog replaced while converting must not take the thread with it
        w = JobWorker(lambda: conversion_job(pred, doc.scheme, **opts))
        self.worker = w
        w.progressed.connect(lambda ev: self.status.setText(f"{ev.message}…"))
        w.finished_ok.connect(lambda res, w=w: self._on_worker_finished(w, doc, res))
        w.failed.connect(lambda msg, w=w: self._on_worker_failed(w, msg))
        w.start()

    def _on_worker_finished(self, w: JobWorker, doc: AnnotationDocument, res: Any) -> None:
        if w is not self.worker:  # cancelled (dialog closed): nothing is added
            return
        self.worker = None
        self.convert_button.setEnabled(True)
        if doc is not self.session.document:  # the slide changed meanwhile
            self.status.setText("The slide changed: nothing was added")
            return
        n = len(res.annotations)
        if n:
            push_added(doc, res.annotations, f"Convert prediction: {n} proposed areas")
        msg = (f"{n} proposed area{'s' if n != 1 else ''} added from {self.model.currentText()}"
               + "".join(f"; {note}" for note in res.notes))
        self._status(msg, 15000)
        self.status.setText(msg)
        if n:
            self.accept()

    def _on_worker_failed(self, w: JobWorker, msg: str) -> None:
        if w is not self.worker:
            return
        self.worker = None
        self.convert_button.setEnabled(True)
        self.status.setText("")
        errors.report(self, TITLE, msg)

    def done(self, result: int) -> None:  # noqa: D102 - closing cancels a running conversion
        if self.worker is not None:
            self.worker.cancel()
            self.worker = None
        super().done(result)
