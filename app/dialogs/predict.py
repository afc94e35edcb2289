"""Analysis > Predict: run a trained checkpoint on the current view, the selected regions or the slide.

The job (:func:`crc_core.inference.predict`) runs in a :class:`app.workers.JobWorker`; the dialog shows
its progress and can cancel it. As batches finish, the class map (and the CAM heatmap) paint
progressively in the view through the results panel (:mod:`app.panels.results`), which saves the
finished prediction in the project and lists the annotated regions against it. A checkpoint whose
class scheme does not fit the project's is mapped onto it (the message says how) or refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from shapely.geometry import box

from app.dialogs import errors
from app.panels.results import install_results_panel
from app.workers import JobWorker
from crc_core.inference import BACKENDS, Prediction, predict
from crc_core.jobs import Progress

SCOPES = ("view", "selection", "slide")
SCOPE_TEXT = {"view": "Current view", "selection": "Selected regions", "slide": "Whole slide"}


class PredictDialog(QDialog):
    """Predict with a checkpoint (see module docstring). ``window`` is the main window."""

    def __init__(self, window: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent or window)
        self.window = window
        self.setWindowTitle("Predict")
        self.worker: JobWorker | None = None
        self.result: Prediction | None = None
        self._name = ""

        self.ckpt = QComboBox()
        self.ckpt.setEditable(True)
        self.ckpt.setMinimumWidth(380)
        for p in self._known_checkpoints():
            self.ckpt.addItem(str(p))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.ckpt, 1)
        row.addWidget(browse)

        self.scope_group = QButtonGroup(self)
        scope_row = QHBoxLayout()
        self.scope_buttons: dict[str, QRadioButton] = {}
        for i, key in enumerate(SCOPES):
            b = QRadioButton(SCOPE_TEXT[key])
            self.scope_group.addButton(b, i)
            scope_row.addWidget(b)
            self.scope_buttons[key] = b
        doc = window.document
        has_sel = doc is not None and bool(doc.selected())
        self.scope_buttons["selection"].setEnabled(has_sel)
        self.scope_buttons["selection" if has_sel else "view"].setChecked(True)

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
        form.addRow("Predict on", scope_row)
        form.addRow("Patch size", self.patch)
        form.addRow("Stride", self.stride)
        form.addRow("", self.cam)
        form.addRow("Batch size", self.batch)
        form.addRow("Device", self.device)
        form.addRow("Backend", self.backend)
        form.addRow("Min. tissue", self.min_tissue)

        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.run_button = QPushButton("Predict")
        self.run_button.setDefault(True)
        self.run_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for b in (self.run_button, self.cancel_button, close):
            buttons.addWidget(b)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        lay.addLayout(buttons)
        window.slideOpened.connect(self._on_window_slideOpened)

    # ------------------------------------------------------------------ options
    def _known_checkpoints(self) -> list[Path]:
        project = self.window.project
        if project is None:
            return []
        try:
            folder = project.models_dir
        except Exception:  # a project without a models folder yet
            return []
        return sorted(folder.rglob("*.pt"), key=lambda p: p.stat().st_mtime, reverse=True)[:20]

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Checkpoint", "", "Checkpoints (*.pt *.pth)")
        if path:
            self.ckpt.setCurrentText(path)

    def set_scope(self, scope: str) -> None:
        self.scope_buttons[scope].setChecked(True)

    def scope(self) -> str:
        return SCOPES[max(0, self.scope_group.checkedId())]

    def _regions(self) -> list[Any] | None:
        scope = self.scope()
        if scope == "slide":
            return None
        if scope == "view":
            r = self.window.view.visible_rect_l0()
            return [box(r.left(), r.top(), r.right(), r.bottom())]
        doc = self.window.document
        sel = doc.selected() if doc is not None else []
        if not sel:
            raise ValueError("select one or more annotated regions first")
        return [a.geometry for a in sel]

    # ------------------------------------------------------------------ running
    def start(self) -> bool:
        """Start the prediction; False (with a message) when it cannot start."""
        if self.worker is not None:
            return False
        w = self.window
        if w.slide is None:
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
        self.panel = install_results_panel(w)
        self.panel.window.docks["results"].show()
        slide, scheme = w.slide, w.project.scheme if w.project is not None else None
        opts = dict(
            regions=regions,
            stride=self.stride.value() or None,
            cam=self.cam.isChecked(),
            batch_size=self.batch.value(),
            device=self.device.currentText(),
            backend=self.backend.currentText(),
            scheme=scheme,
            min_tissue=self.min_tissue.value(),
            patch_size=self.patch.value() or None,
        )

        def factory() -> Any:
            return predict(slide, ckpt, **opts)

        self.result = None
        self.worker = JobWorker(factory, self)
        self.worker.progressed.connect(self._on_worker_progressed)
        self.worker.finished_ok.connect(self._on_worker_finished_ok)
        self.worker.failed.connect(self._on_worker_failed)
        self.worker.cancelled.connect(self._on_worker_cancelled)
        self.worker.finished.connect(self._on_worker_finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.status.setText("Loading the model…")
        self.worker.start()
        return True

    def cancel(self) -> None:
        if self.worker is not None:
            self.status.setText("Cancelling…")
            self.worker.cancel()

    @property
    def running(self) -> bool:
        return self.worker is not None

    def _on_worker_progressed(self, ev: Progress) -> None:
        payload = ev.payload if isinstance(ev.payload, dict) else {}
        if payload.get("kind") == "start":
            self.panel.begin(self._name, payload["grid"], payload["classes"], self.cam.isChecked())
        elif payload.get("kind") == "batch":
            self.panel.add_batch(self._name, payload)
        if ev.total:
            self.progress.setRange(0, int(ev.total))
            self.progress.setValue(int(ev.done))
        if ev.message:
            self.status.setText(ev.message)

    def _on_worker_finished_ok(self, pred: Prediction) -> None:
        self.result = pred
        self.panel.finish(self._name, pred)
        n = int(pred.predicted.sum())
        from crc_core.inference import scale_statement

        backend = (pred.resolution.get("scoring") or {}).get("backend_statement", "not recorded")
        text = (f"Done: {n} patches predicted with {backend}. Scale: "
                f"{scale_statement(pred.resolution, pred.grid.input_size)}. Stain: "
                f"{(pred.resolution.get('stain') or {}).get('statement', 'not recorded')}.")
        if pred.warnings:
            text += " " + " ".join(pred.warnings)
        self.status.setText(text)
        self.progress.setRange(0, 1)
        self.progress.setValue(1)

    def _on_worker_failed(self, message: str) -> None:
        self.panel.remove(self._name)
        self.status.setText(f"Failed: {message}")
        errors.report(self, "Predict", message)

    def _on_worker_cancelled(self) -> None:
        self.panel.remove(self._name)
        self.status.setText("Cancelled: nothing was saved.")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)

    def _on_worker_finished(self) -> None:
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _on_window_slideOpened(self, _path: str) -> None:
        # The prediction belongs to the slide it started on.
        self.cancel()

    def closeEvent(self, ev: Any) -> None:  # noqa: N802
        if self.worker is not None:
            self.worker.cancel_and_wait(10000)
        super().closeEvent(ev)
