"""Train dialog: pick a dataset, architectures and a schedule; train in a worker with live curves.

The settings column (:mod:`app.dialogs.train_form`) gives one :class:`crc_core.train_eval.RunPlan`
per chosen architecture; Start runs :func:`crc_core.train_eval.train_and_evaluate` (the job ``crc
train --evaluate`` runs too) in the dialogs' :class:`app.job_runner.JobRunner` (its status line,
Cancel button and whole-job progress bar; the settings disabled while it runs), so the GUI thread
never waits on it. With "Start from a model", the worker first reads the checkpoint
(:func:`crc_core.train_eval.finetune_plans`); the data summary's check runs in a worker too
(:mod:`app.dialogs.train_form`). The job trains the architectures one after another and evaluates
each run's ``best.pt`` on the test split, else the validation split, into ``<run>/eval``; a fine-
tuning run then compares the old and the new model. Its typed events drive the widgets: each
epoch's history row extends the live loss/accuracy curves and the images-per-second readout,
per-batch steps move the progress bars, each evaluation adds the run to the report panel (Tables 3
and 4, ROC, confusion matrix, curves), and its warnings go to the log.

Cancel stops after the current batch: every completed epoch is already in ``<run>/last.pt``
(written atomically at each epoch's end), so a cancelled run can be continued with
``crc train --resume``. Errors (no images, a single class, an unreadable CSV, a bad option) are
shown in an error dialog and the dialog stays usable. Closing the dialog cancels the job and
returns at once; the worker ends in the background.

``allFinished`` is emitted whenever the job ends: all runs done, a run failed (after
``runFailed``) or cancelled (after ``runCancelled``); :attr:`TrainDialog.outcome` says which. It
comes when the worker's thread has ended and the settings are enabled again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.dialogs import errors
from app.dialogs.train_form import ARCHS, TrainForm
from app.job_runner import JobRunner
from app.panels.report import ReportPanel
from app.widgets.plots import CurvesCanvas
from crc_core.errors import CrcError
from crc_core.jobs import Event, Progress
from crc_core.project import Project
from crc_core.train_eval import (
    EpochEnded,
    EvalOptions,
    PhaseEnded,
    PhaseStarted,
    PhaseStep,
    PlansReady,
    RunInfo,
    RunPlan,
    finetune_plans,
    train_and_evaluate,
)

__all__ = ["ARCHS", "CANCEL_NOTE", "TrainDialog"]

CANCEL_NOTE = ("Cancel stops after the current batch. Every completed epoch is already saved in "
               "the run's last.pt, so nothing finished is lost (continue it with "
               "crc train --resume).")
STOPPING = "Stopping after the current batch…"
FAILED = {"train": "Training failed", "evaluate": "Evaluation failed",
          "compare": "Comparison failed", "prepare": "Cannot start training"}
SPLIT_NAMES = {"test": "test", "val": "validation", "all": "whole"}

#: ``job(data, plans, options)`` -> a job generator (default: the core train-and-evaluate job).
JobFactory = Callable[[str, list[RunPlan], EvalOptions], Generator[Any, None, Any]]


def _prepared(job: JobFactory, data: str, plans: list[RunPlan], options: EvalOptions,
              checkpoint: Path | None) -> Generator[Event, None, Any]:
    """Job: ``plans`` set up to fine-tune ``checkpoint`` (read here, in the worker), then
    ``job``."""
    if checkpoint is not None:
        plans = yield from finetune_plans(plans, checkpoint)
    return (yield from job(data, plans, options))


class TrainDialog(TrainForm, QDialog):
    """Train one or several architectures on a dataset, with live curves and an evaluation report.

    Parameters
    ----------
    project
        The open :class:`crc_core.project.Project` (datasets offered from ``datasets/``, runs
        written to ``models/``), or ``None`` (pick a dataset folder or CSV; runs go under the
        user's data folder).
    job
        The job Start runs, called as ``job(data, plans, options)`` (default
        :func:`crc_core.train_eval.train_and_evaluate`; tests pass small fakes).
    """

    busyChanged = Signal(bool)
    epochFinished = Signal(str, object)      # arch, history row
    runFinished = Signal(str)                # run folder (training and evaluation done)
    allFinished = Signal()                   # the job ended: done, failed or cancelled
    runCancelled = Signal(str)               # run folder
    runFailed = Signal(str)                  # message

    def __init__(self, project: Project | None = None, parent: QWidget | None = None,
                 job: JobFactory | None = None) -> None:
        super().__init__(parent)
        self.project = project
        self.job: JobFactory = job or train_and_evaluate
        self.outcome = ""             # how the last job ended: done | failed | cancelled
        self.setWindowTitle("Train")
        self.setModal(False)
        self.resize(1320, 820)
        self.runner = JobRunner(self, cancel_text="Cancel training", event_status=False)
        self.runner.progressed.connect(self._on_runner_progressed)
        self.runner.warned.connect(self._on_runner_warned)
        self.runner.succeeded.connect(self._on_runner_succeeded)
        self.runner.failed.connect(self._on_runner_failed)
        self.runner.cancelled.connect(self._on_runner_cancelled)
        self.runner.idle.connect(self._on_runner_idle)
        self._run: RunInfo | None = None     # the run under way
        self._phase = ""                     # its phase: train | evaluate | compare
        self._epochs_done = 0
        self._subsets: list[str] = []        # what each evaluation of this start ran on
        self._init_form()

        self.tabs = QTabWidget()
        self.tabs.addTab(self._build_live_tab(), "Training")
        self.report = ReportPanel()
        self.tabs.addTab(self.report, "Report")
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self._build_settings_column())
        split.addWidget(self.tabs)
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 1)
        lay = QVBoxLayout(self)
        lay.addWidget(split)

        # Return in a field must never start a run or open a file chooser: no default button.
        for b in self.findChildren(QPushButton):
            b.setAutoDefault(False)
            b.setDefault(False)
        self.runner.set_busy_widgets([  # disabled while a job runs, then as they were
            self.start_button, self.dataset_combo, self.image_column, self.label_column,
            self.group_column, self.group_pattern_edit, self.balance_combo, self.best_combo,
            self.augment_check, self.tta_check, self.classes_edit, self.map_edit, self.val_spin,
            self.test_spin, self.preset_combo, self.epochs_spin, self.batch_spin, self.lr_spin,
            self.size_spin, self.device_combo, self.out_edit, self.stain_combo, self.start_from,
            *self.arch_boxes.values()])
        self._populate_datasets()
        self._on_preset_changed(self.preset_combo.currentText())
        self._update_data_summary()

    # ------------------------------------------------------------------ building
    def _build_settings_column(self) -> QWidget:
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self._build_data_box())
        ll.addWidget(self._build_model_box())
        ll.addWidget(self._build_output_box())
        note = QLabel(CANCEL_NOTE)
        note.setWordWrap(True)
        note.setStyleSheet("color: palette(mid)")
        self.cancel_note = note
        ll.addWidget(note)
        ll.addStretch(1)
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start training")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = self.runner.cancel_button  # the runner cancels; the text is ours
        self.cancel_button.setToolTip(CANCEL_NOTE)
        self.cancel_button.clicked.connect(self._on_cancel_button_clicked)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.close)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        buttons.addWidget(self.close_button)
        left.setMinimumWidth(400)
        left.setMaximumWidth(520)
        # the settings column scrolls rather than squeezing its rows (a long data warning was cut)
        left_scroll = QScrollArea()
        left_scroll.setWidget(left)
        left_scroll.setWidgetResizable(True)
        left_scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        left_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        panel = QWidget()  # the scrolling settings, and the buttons always in sight
        lp = QVBoxLayout(panel)
        lp.setContentsMargins(0, 0, 0, 0)
        lp.addWidget(left_scroll, 1)
        lp.addLayout(buttons)
        panel.setMinimumWidth(left.minimumWidth() + 16)
        panel.setMaximumWidth(left.maximumWidth() + 16)
        return panel

    def _build_live_tab(self) -> QWidget:
        w = QWidget()
        lay = QVBoxLayout(w)
        self.status_label = self.runner.status
        self.status_label.setText("Ready.")
        self.status_label.setStyleSheet("font-weight: bold")
        self.epoch_bar = QProgressBar()
        self.epoch_bar.setRange(0, 1000)
        self.epoch_bar.setValue(0)
        self.epoch_bar.setFormat("epoch")
        self.overall_bar = self.runner.progress  # the whole job: every run and its phases
        self.overall_bar.setFormat("all runs: %p%")
        self.ips_label = QLabel("Images/s: –")
        self.metrics_label = QLabel("")
        grid = QFormLayout()
        grid.addRow("This epoch", self.epoch_bar)
        grid.addRow("All runs", self.overall_bar)
        self.curves = CurvesCanvas()
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(2000)
        self.log.setPlaceholderText("Messages and warnings")
        vs = QSplitter(Qt.Orientation.Vertical)
        vs.addWidget(self.curves)
        vs.addWidget(self.log)
        vs.setStretchFactor(0, 4)
        vs.setStretchFactor(1, 1)
        lay.addWidget(self.status_label)
        lay.addLayout(grid)
        row = QHBoxLayout()
        row.addWidget(self.ips_label)
        row.addStretch(1)
        row.addWidget(self.metrics_label)
        lay.addLayout(row)
        lay.addWidget(vs, 1)
        return w


    # ------------------------------------------------------------------ run
    def is_running(self) -> bool:
        return self.runner.running

    def start(self) -> None:
        """Start training the selected architectures (errors go to an error dialog). Refused
        while the data summary's check of the current fields is pending or found a problem."""
        if self.is_running() or self.summary_pending() or not self._data_ok:
            return
        try:
            data, plans = self.dataset(), self.make_plans()
        except CrcError as exc:
            self._fail("Cannot start training", str(exc))
            return
        options = EvalOptions(device=self.device_combo.currentText(),
                              batch_size=max(2, self.batch_spin.value()),
                              tta=self.tta_check.isChecked())
        ckpt, job = self.start_from.checkpoint(), self.job
        self._run, self._subsets, self.outcome = None, [], ""
        self._phase = "prepare" if ckpt is not None else ""
        self.curves.clear()
        self.report.clear()
        self.log.clear()
        self.tabs.setCurrentIndex(0)
        self.runner.start(lambda: _prepared(job, data, plans, options, ckpt),
                          f"Reading {ckpt.name}…" if ckpt is not None else "Starting…")
        self.busyChanged.emit(True)

    def cancel(self) -> None:
        """Stop after the current batch; completed epochs stay in ``last.pt``. Returns at once."""
        if self.is_running():
            self.runner.cancel()
            self.status_label.setText(STOPPING)

    def _on_cancel_button_clicked(self) -> None:
        if self.is_running():  # the runner has asked the job to stop
            self.status_label.setText(STOPPING)

    def reject(self) -> None:
        """Closing the dialog cancels a running job (and a data check) and returns at once: the
        worker stops after its current batch in the background (``allFinished`` follows);
        completed epochs stay in last.pt. The application waits for it only when it quits."""
        self.cancel()
        self.runner.close()
        self.checks.close()
        super().reject()

    # ------------------------------------------------------------------ job events
    def _on_runner_progressed(self, ev: Progress) -> None:
        p = ev.payload
        if isinstance(p, PhaseStarted):
            self._on_phase_started(p)
        elif isinstance(p, PhaseStep):
            self._on_phase_step(p)
        elif isinstance(p, EpochEnded):
            self._on_epoch_ended(p)
        elif isinstance(p, PhaseEnded):
            self._on_phase_ended(p)
        elif isinstance(p, PlansReady) and p.plans:
            self.start_from.show_config(p.plans[0].config)  # the note with the exact rate

    def _on_phase_started(self, p: PhaseStarted) -> None:
        run = self._run = p.run
        self._phase = p.phase
        if p.phase == "train":
            self._epochs_done = 0
            self.curves.start_run(run.arch)
            self.epoch_bar.setValue(0)
            self.ips_label.setText("Images/s: –")
            self.metrics_label.setText("")
            self.status_label.setText(f"Training {run.label} into {run.out}")
            self._log(f"{run.arch}: training into {run.out}")
        elif p.phase == "evaluate":
            self.status_label.setText(f"Evaluating {run.arch} on the {run.held_out} split…")
        else:
            self.status_label.setText(f"Comparing the old and the new {run.arch} on the same "
                                      f"held-out test images…")

    def _on_phase_step(self, p: PhaseStep) -> None:
        run, step = p.run, p.step
        if p.phase != "train":
            what = "evaluating" if p.phase == "evaluate" else "comparing"
            self._set_bar(self.epoch_bar, step.fraction, f"{what} {run.arch}: %p%")
            return
        if p.epoch is not None and step.total:
            per_epoch = step.total / max(1, run.epochs)
            within = (step.done - (p.epoch - 1) * per_epoch) / per_epoch
            self._set_bar(self.epoch_bar, within, f"epoch {p.epoch}/{run.epochs}: %p%")
            # the header follows the epoch (it kept "decoding images 108/108" before)
            self.status_label.setText(f"Training {run.label}: epoch {p.epoch} of {run.epochs}")
        else:
            self._set_bar(self.epoch_bar, None, step.message or "preparing")
            if step.message:
                self.status_label.setText(f"{run.arch}: {step.message}")

    def _on_epoch_ended(self, p: EpochEnded) -> None:
        run, row = p.run, p.row
        self._epochs_done = int(row["epoch"])
        self.curves.add_row(row, run.arch)
        ips = row.get("images_per_s")
        self.ips_label.setText(f"Images/s: {ips:,.1f} (training, epoch {self._epochs_done})"
                               if ips is not None else "Images/s: –")
        parts = [f"train loss {row['train_loss']:.3f} acc {row['train_acc']:.3f}"]
        if row.get("val_loss") is not None:
            parts.append(f"val loss {row['val_loss']:.3f} acc {row['val_acc']:.3f}")
        self.metrics_label.setText(" · ".join(parts))
        self._log(f"{run.arch} epoch {self._epochs_done}/{run.epochs}: " + ", ".join(parts)
                  + (f", {ips:,.1f} images/s" if ips is not None else ""))
        self.epochFinished.emit(run.arch, dict(row))
        self._set_bar(self.epoch_bar, 1.0, f"epoch {self._epochs_done}/{run.epochs} done")

    def _on_phase_ended(self, p: PhaseEnded) -> None:
        run, res = p.run, p.result
        if p.phase == "train":
            score = res.get("best_score", res.get("best_val_acc"))
            what = "balanced accuracy" if res.get("best_metric") == "balanced_acc" \
                else "accuracy"
            self._log(f"{run.arch}: training done"
                      + (f", best {'validation' if res.get('val_images') else 'training'} "
                         f"{what} {score:.3f} at epoch {res['best_epoch']}"
                         if score is not None and res.get("best_epoch") else ""))
        elif p.phase == "evaluate":
            self._show_evaluation(run, res)
        else:  # fine-tuned: old and new model on the same test images
            self.start_from.show_comparison(res, run.out, self.report, self._log)
        if p.phase == run.phases[-1]:
            self.runFinished.emit(str(run.out))

    def _show_evaluation(self, run: RunInfo, m: dict[str, Any]) -> None:
        try:
            self.report.add_folder(run.out)
        except CrcError as exc:
            self._log(f"error: the report of {run.arch} cannot be shown: {exc}")
            errors.report(self, "Cannot show the report", str(exc))
        if m.get("subset"):
            self._subsets.append(str(m["subset"]))
        if m.get("accuracy") is not None:
            self._log(f"{run.arch}: {m.get('subset', '')} accuracy {m['accuracy']:.3f}, mAP "
                      f"{(m.get('macro') or {}).get('map') or 0:.3f} ({run.out / 'eval'})")

    def _on_runner_warned(self, message: str) -> None:
        self._log(f"warning: {message}")

    def _on_runner_succeeded(self, _results: Any) -> None:
        self.outcome = "done"
        self._set_bar(self.epoch_bar, 1.0, "done")
        parts = sorted({SPLIT_NAMES.get(x, x) for x in self._subsets})
        self.status_label.setText("Done. " + (f"The report shows the {' and '.join(parts)} "
                                              f"split." if self.report.results and parts
                                              else ""))
        if self.report.results:
            self.tabs.setCurrentWidget(self.report)

    def _on_runner_failed(self, message: str) -> None:
        self.outcome = "failed"
        self._fail(FAILED.get(self._phase, "Training failed"), message)

    def _on_runner_cancelled(self) -> None:
        run, phase = self._run, self._phase
        self.outcome = "cancelled"
        if run is None:
            msg = "Cancelled before training started."
        elif phase != "train":
            msg = f"{phase.capitalize()} of {run.arch} cancelled; the trained run is in {run.out}."
        elif (run.out / "last.pt").is_file():
            msg = (f"Cancelled. {run.arch}: {self._epochs_done} completed epoch(s) kept in "
                   f"{run.out / 'last.pt'} (continue with crc train --resume --out {run.out} "
                   f"...).")
        else:
            msg = f"Cancelled before the first epoch ended: nothing was saved for {run.arch}."
        self.status_label.setText(msg)
        self._log(msg)
        self._set_bar(self.epoch_bar, 0.0, "cancelled")
        self.runCancelled.emit(str(run.out) if run is not None else "")

    def _on_runner_idle(self) -> None:
        """The worker's thread ended and the settings are enabled again: the job is over."""
        self._run = None
        if self.epoch_bar.maximum() == 0:
            self.epoch_bar.setRange(0, 1000)
        self.start_button.setEnabled(self._data_ok and not self.summary_pending())
        self.busyChanged.emit(False)
        self.allFinished.emit()

    # ------------------------------------------------------------------ helpers
    def _fail(self, title: str, message: str) -> None:
        """One error dialog (``allFinished`` follows when a job was under way)."""
        self.status_label.setText(f"{title}: {message}")
        self._log(f"error: {message}")
        self.runFailed.emit(message)
        errors.report(self, title, message)

    def _log(self, text: str) -> None:
        self.log.appendPlainText(f"{time.strftime('%H:%M:%S')}  {text}")

    @staticmethod
    def _set_bar(bar: QProgressBar, fraction: float | None, fmt: str) -> None:
        if fraction is None:
            bar.setRange(0, 0)          # busy indicator: no total known
        else:
            if bar.maximum() == 0:
                bar.setRange(0, 1000)
            bar.setValue(int(round(1000 * max(0.0, min(1.0, fraction)))))
        bar.setFormat(fmt)
