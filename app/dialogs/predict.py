"""Analysis > Predict: run a trained checkpoint on the current view, the selected regions or the slide.

The job (:func:`crc_core.inference.predict`) runs in the dialogs' :class:`app.job_runner.JobRunner`;
the dialog shows its progress and can cancel it (closing the dialog cancels, without waiting). As batches finish, the class map (and the CAM heatmap) paint
progressively in the view through the results panel (:mod:`app.panels.results`), which saves the
finished prediction in the project and lists the annotated regions against it.

The checkpoint list offers the models used recently (the last one preselected), the project's and
the shipped ones (:mod:`app.dialogs.model_choice`). The job is
:func:`crc_core.scheme_map.checked_predict`: the checkpoint's classes are read first (memory-mapped,
no weights) and mapped onto the project's scheme, a coarser model's class covering the project's
finer ones (Adenocarcinoma for its three grades); the dialog states the mapping, or the refusal,
before any weight is loaded: as soon as a model is chosen (:mod:`app.dialogs.mapping_preview`) and
again when the prediction starts.

The dialog takes the window's :class:`crc_core.session.Session` (the open slide, its project and
document), the view (for "Current view"), the settings (recent models) and the Results panel,
not the window; a change of the session's slide cancels a running prediction.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from app.annotate.document import AnnotationDocument
from app.dialogs import errors
from app.dialogs.mapping_preview import MappingPreview, mapping_text
from app.dialogs.model_choice import ORIGIN_TEXT, known_models, remember_model
from app.job_runner import JobRunner
from app.panels.results import ResultsPanel
from app.settings import Settings
from app.viewer.view import SlideView
from app.workers import JobWorker
from crc_core.classes import ClassScheme
from crc_core.inference import BACKENDS, Prediction
from crc_core.jobs import BatchPredicted, Event, PredictionStarted, Progress
from crc_core.scheme_map import MappingChosen, checked_predict
from crc_core.session import Session
from crc_core.slide import SlideReader

SCOPES = ("view", "selection", "slide")
SCOPE_TEXT = {"view": "Current view", "selection": "Selected regions", "slide": "Whole slide"}


class PredictDialog(QDialog):
    """Predict with a checkpoint on ``session``'s slide (see module docstring); the maps are drawn
    by ``results``."""

    def __init__(
        self, session: Session[AnnotationDocument], view: SlideView, settings: Settings,
        results: ResultsPanel, parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.session, self.view, self.settings = session, view, settings
        self.panel = results
        self.setWindowTitle("Predict")
        self.result: Prediction | None = None
        self._name = ""
        self._statement = ""
        self._ckpt_path: Path | None = None

        self.ckpt = QComboBox()
        self.ckpt.setEditable(True)
        self.ckpt.setMinimumWidth(380)
        self.ckpt_origin = QLabel("")
        self.mapping = QLabel("")
        self.mapping.setWordWrap(True)
        self.preview = MappingPreview(self.mapping, self.ckpt.currentText, self._project_scheme,
                                      self)
        self.ckpt.currentTextChanged.connect(self._on_ckpt_changed)
        for choice in known_models(session.project, settings):
            self.ckpt.addItem(str(choice.path), choice.origin)
            self.ckpt.setItemData(self.ckpt.count() - 1, choice.text, Qt.ItemDataRole.ToolTipRole)
        self.browse_button = QPushButton("Browse…")
        self.browse_button.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.ckpt, 1)
        row.addWidget(self.browse_button)

        scope_row = self._make_scope_row()

        self.stride = QSpinBox()
        self.stride.setRange(0, 4096)
        self.stride.setSpecialValueText("patch size")
        self.stride.setSuffix(" px")
        self.stride.setToolTip("Pixels between windows at the checkpoint's scale (0: no overlap)")
        self.patch = QSpinBox()
        self.patch.setRange(0, 8192)
        self.patch.setSpecialValueText("from checkpoint")
        self.patch.setSuffix(" px")
        self.patch.setToolTip(
            "Window side at the checkpoint's scale; set it for checkpoints that do not record one"
        )
        self.cam = QCheckBox("Class activation map (CAM heatmap)")
        self.cam.setChecked(True)
        self.batch = QSpinBox()
        self.batch.setRange(1, 1024)
        self.batch.setValue(32)
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda"])
        self.backend = QComboBox()
        self.backend.addItems(list(BACKENDS))
        self.backend.setToolTip(
            "What runs the model: onnx = ONNX Runtime on the CPU (about twice PyTorch's speed; the "
            "checkpoint is exported once and cached), torch = PyTorch, auto = onnx on the CPU when "
            "ONNX Runtime is installed, torch on a GPU. The status line says which one runs."
        )
        self.min_tissue = QDoubleSpinBox()
        self.min_tissue.setRange(0.0, 1.0)
        self.min_tissue.setSingleStep(0.05)
        self.min_tissue.setValue(0.25)

        form = QFormLayout()
        form.addRow("Checkpoint", row)
        form.addRow("", self.ckpt_origin)
        form.addRow("Classes", self.mapping)
        form.addRow("Predict on", scope_row)
        form.addRow("Patch size", self.patch)
        form.addRow("Stride", self.stride)
        form.addRow("", self.cam)
        form.addRow("Batch size", self.batch)
        form.addRow("Device", self.device)
        form.addRow("Backend", self.backend)
        form.addRow("Min. tissue", self.min_tissue)

        buttons = self._make_run_controls()
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        lay.addLayout(buttons)
        self.runner.set_busy_widgets([  # the options stay as the running prediction took them
            self.run_button, self.ckpt, self.browse_button, *self.scope_buttons.values(),
            self.stride, self.patch, self.cam, self.batch, self.device, self.backend,
            self.min_tissue,
        ])
        unsubscribe = session.on("slide_changed", self._on_session_slide_changed)
        self.destroyed.connect(lambda *_: unsubscribe())

    def _make_scope_row(self) -> QHBoxLayout:
        """The scope's radio buttons: "Selected regions" first when annotations are selected."""
        self.scope_group = QButtonGroup(self)
        scope_row = QHBoxLayout()
        self.scope_buttons: dict[str, QRadioButton] = {}
        for i, key in enumerate(SCOPES):
            b = QRadioButton(SCOPE_TEXT[key])
            self.scope_group.addButton(b, i)
            scope_row.addWidget(b)
            self.scope_buttons[key] = b
        doc = self.session.document
        has_sel = doc is not None and bool(doc.selected())
        self.scope_buttons["selection"].setEnabled(has_sel)
        self.scope_buttons["selection" if has_sel else "view"].setChecked(True)
        return scope_row

    def _make_run_controls(self) -> QHBoxLayout:
        """Progress bar, status line (the runner's) and the Predict / Cancel / Close buttons."""
        self.run_button = QPushButton("Predict")
        self.run_button.setDefault(True)
        self.run_button.clicked.connect(self.start)
        self.runner = JobRunner(self)  # its busy widgets: __init__ sets them once the options exist
        self.runner.progressed.connect(self._on_runner_progressed)
        self.runner.succeeded.connect(self._on_runner_succeeded)
        self.runner.failed.connect(self._on_runner_failed)
        self.runner.cancelled.connect(self._on_runner_cancelled)
        self.progress, self.status = self.runner.progress, self.runner.status
        self.cancel_button = self.runner.cancel_button
        close = self.close_button = QPushButton("Close")
        close.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for b in (self.run_button, self.cancel_button, close):
            buttons.addWidget(b)
        return buttons

    # ------------------------------------------------------------------ options
    def _on_ckpt_changed(self, text: str) -> None:
        i = self.ckpt.findText(text)
        origin = self.ckpt.itemData(i) if i >= 0 else None
        self.ckpt_origin.setText(ORIGIN_TEXT.get(origin, "") if isinstance(origin, str) else "")
        self.preview.request()

    def _project_scheme(self) -> ClassScheme | None:
        return self.session.scheme

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Checkpoint", "", "Checkpoints (*.pt *.pth)")
        if path:
            self.ckpt.setCurrentText(path)

    def set_scope(self, scope: str) -> None:
        self.scope_buttons[scope].setChecked(True)

    def scope(self) -> str:
        return SCOPES[max(0, self.scope_group.checkedId())]

    def _regions(self) -> list[BaseGeometry] | None:
        scope = self.scope()
        if scope == "slide":
            return None
        if scope == "view":
            r = self.view.visible_rect_l0()
            return [box(r.left(), r.top(), r.right(), r.bottom())]
        doc = self.session.document
        sel = doc.selected() if doc is not None else []
        if not sel:
            raise ValueError("select one or more annotated regions first")
        return [a.geometry for a in sel]

    # ------------------------------------------------------------------ running
    def start(self) -> bool:
        """Start the prediction; False (with a message) when it cannot start."""
        if self.runner.running:
            return False
        slide = self.session.reader
        if slide is None:
            errors.report(self, "Predict", "open a slide first (File > Open Slide)")
            return False
        ckpt = Path(self.ckpt.currentText().strip())
        if not ckpt.name or not ckpt.is_file():
            errors.report(
                self, "Predict", f"checkpoint {ckpt} not found; choose a .pt file from `crc train`"
            )
            return False
        try:
            regions = self._regions()
        except ValueError as exc:
            errors.report(self, "Predict", str(exc))
            return False
        scope = self.scope()
        self._name = ckpt.stem if scope == "slide" else f"{ckpt.stem} ({SCOPE_TEXT[scope].lower()})"
        self.panel.reveal()
        scheme = self._project_scheme()
        opts = dict(
            regions=regions,
            stride=self.stride.value() or None,
            cam=self.cam.isChecked(),
            batch_size=self.batch.value(),
            device=self.device.currentText(),
            backend=self.backend.currentText(),
            min_tissue=self.min_tissue.value(),
            patch_size=self.patch.value() or None,
        )
        self._ckpt_path = ckpt
        self.preview.hold()

        def factory(s: SlideReader = slide) -> Generator[Event, None, Prediction]:
            return checked_predict(s, ckpt, scheme, **opts)

        self.result = None
        return self.runner.start(factory, "Reading the model's classes…")

    def cancel(self) -> None:
        self.runner.cancel()

    @property
    def worker(self) -> JobWorker | None:
        """The running job's :class:`app.workers.JobWorker` (None when idle)."""
        return self.runner.worker

    @property
    def running(self) -> bool:
        return self.runner.running

    def _on_runner_progressed(self, ev: Progress) -> None:
        p = ev.payload
        if isinstance(p, MappingChosen):
            self._on_mapping(p.map, p.summary)
        elif isinstance(p, PredictionStarted):
            self.panel.begin(self._name, p.grid, p.classes, self.cam.isChecked())
        elif isinstance(p, BatchPredicted):
            self.panel.add_batch(self._name, p)

    def _on_mapping(self, smap: Any, summary: Any) -> None:
        """The checkpoint was accepted for the project's classes: state how, remember the model."""
        self._statement = smap.statement()
        self.mapping.setText(mapping_text(smap, summary))
        remember_model(self.settings, self._ckpt_path)

    def _on_runner_succeeded(self, pred: Prediction) -> None:
        self.result = pred
        if self._statement:
            pred.model["scheme_map"] = self._statement
        self.panel.finish(self._name, pred)
        n = int(pred.predicted.sum())
        from crc_core.inference import scale_statement

        backend = (pred.resolution.get("scoring") or {}).get("backend_statement", "not recorded")
        text = (f"Done: {n} patches predicted with {backend}. Scale: "
                f"{scale_statement(pred.resolution, pred.grid.input_size)}. Stain: "
                f"{(pred.resolution.get('stain') or {}).get('statement', 'not recorded')}.")
        self.status.setText("\n".join([text, *(f"• {m}" for m in pred.warnings)]))

    def _on_runner_failed(self, message: str) -> None:
        self.panel.remove(self._name)
        errors.report(self, "Predict", message)

    def _on_runner_cancelled(self) -> None:
        self.panel.remove(self._name)
        self.status.setText("Cancelled: nothing was saved.")

    def _on_session_slide_changed(self, _reader: SlideReader | None) -> None:
        # The prediction belongs to the slide it started on.
        self.cancel()

    def closeEvent(self, ev: QCloseEvent) -> None:  # noqa: N802
        # never waits: a running prediction is cancelled and its layers go when its thread ends
        self.preview.stop()
        self.runner.close()
        super().closeEvent(ev)
