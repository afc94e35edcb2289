"""Build Dataset dialog: cut a patch dataset from the open project's annotated areas.

The settings of :class:`crc_core.patches.ExtractConfig` (patch size, overlap, random windows,
filters, split, seed, level or mpp, caps, format) and the classes to include; Build runs
:func:`build_job` (the slides' annotations read, then :func:`crc_core.patches.extract`) in the
dialogs' :class:`app.job_runner.JobRunner` with a progress bar and Cancel; closing the dialog
cancels without waiting.
When done the dialog shows the Table-1 style counts and a grid of sample patches per class (through
a stain normalisation when one is chosen: :mod:`app.dialogs.stain_preview`). A
cancelled build leaves an incomplete dataset that Build (same settings, same name) resumes.
The dataset goes to the project's :meth:`~crc_core.project.Project.dataset_path`
(``datasets/<name>``).

The dialog takes the window's :class:`crc_core.session.Session`: the open slide's annotations come
from its document, in memory (an area drawn a moment ago, inside the autosave pause, is in the
dataset); the other slides' files are read in the worker,
with a copy of the project's class scheme, so the GUI thread never reads them.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.dialogs import errors
from app.dialogs.scale_banner import GlandScaleBanner
from app.job_runner import JobRunner
from crc_core.annotations import AnnotationSet
from crc_core.classes import ClassScheme
from crc_core.errors import CrcError, ProjectError
from crc_core.jobs import Event, JobWarning, Progress
from crc_core.project import Project
from crc_core.session import AnnotationHolder, Session

if TYPE_CHECKING:
    from crc_core.patches import ExtractConfig, ExtractResult

SAMPLES_PER_CLASS = 6
THUMB_PX = 96


def build_job(
    project: Project,
    open_sets: Mapping[str, AnnotationSet] | None,
    out: Path,
    scheme: ClassScheme,
    cfg: ExtractConfig,
) -> Generator[Event, None, ExtractResult]:
    """Read the annotated slides (``open_sets``: {slide id: annotations in memory}, the others from
    their files with ``scheme``, a copy of the project's), leave unreviewed proposals out, then
    :func:`crc_core.patches.extract` into ``out``. Runs in the worker."""
    from crc_core.finetune import exclude_proposed
    from crc_core.patches import extract, sources_from_project

    yield Progress(0, 0, "Reading annotations and planning windows…")
    sources, warns = sources_from_project(project, open_sets, scheme=scheme)
    sources, left_out = exclude_proposed(sources)  # unreviewed proposals never train
    warns = [*warns, *left_out]
    yield from map(JobWarning, warns)  # to View > Messages (the runner logs them)
    if warns:
        yield Progress(0, 0, f"Reading annotations and planning windows… ({len(warns)} warnings)")
    return (yield from extract(sources, out, scheme, cfg))


def _spin(lo: int, hi: int, val: int, special: str | None = None) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(val)
    if special:
        s.setSpecialValueText(special)
    return s


def _dspin(
    lo: float,
    hi: float,
    val: float,
    step: float = 0.05,
    special: str | None = None,
    decimals: int = 2,
) -> QDoubleSpinBox:
    s = QDoubleSpinBox()
    s.setDecimals(decimals)
    s.setRange(lo, hi)
    s.setSingleStep(step)
    s.setValue(val)
    if special:
        s.setSpecialValueText(special)
    return s


class BuildDatasetDialog(QDialog):
    """Settings, progress, cancel and results of one dataset build for ``session``'s project.

    Signals
    -------
    buildFinished(object)
        The :class:`crc_core.patches.ExtractResult` of a finished build.
    buildCancelled()
        The user cancelled; the dataset folder is left incomplete and resumable.
    buildFailed(str)
        One-line error message.
    """

    buildFinished = Signal(object)
    buildCancelled = Signal()
    buildFailed = Signal(str)

    def __init__(
        self, session: Session[AnnotationHolder], parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        if session.project is None:
            raise ProjectError("Build Dataset needs a project: open a project or a slide first")
        # the open slide's annotations are taken from the session, in memory, when Build is pressed
        self.session = session
        project = self.project = session.project
        self.result: Any = None
        self.sample_labels: dict[str, list[QLabel]] = {}
        self.setWindowTitle("Build Dataset")
        top = QHBoxLayout()
        top.addLayout(self._make_settings(), 3)
        top.addWidget(self._make_class_list(project), 2)
        buttons = self._make_run_controls()
        self.runner.set_busy_widgets([
            self.build_button, self.name_edit, self.patch_size, self.overlap, self.random,
            self.min_inside, self.min_tissue, self.min_gland, self.test_fraction, self.split_by,
            self.seed, self.use_mpp, self.level, self.mpp, self.cap, self.workers, self.format,
            self.class_list, self.gland_exempt_list,
        ])
        scroll = self._make_results()
        # Which scale the gland filter assumes for slides without a pixel size, said up front.
        self.scale_banner = GlandScaleBanner(project, self)
        for w in (self.min_gland, self.patch_size):
            w.valueChanged.connect(self._on_scale_settings_changed)
        self._on_scale_settings_changed()

        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.scale_banner)
        lay.addWidget(self.progress)
        lay.addWidget(self.status_label)
        lay.addLayout(buttons)
        lay.addWidget(QLabel("Patches per class (Table 1):"))
        lay.addWidget(self.table)
        lay.addWidget(QLabel("Sample patches:"))
        lay.addWidget(self.stain_preview.note)
        lay.addWidget(scroll, 1)

    def _make_settings(self) -> QFormLayout:
        """The extraction settings (one widget each) in a form."""
        self.name_edit = QLineEdit(time.strftime("dataset-%Y%m%d-%H%M"))
        self.patch_size = _spin(16, 4096, 400)
        self.overlap = _dspin(0.0, 0.95, 0.3)
        self.random = _spin(0, 1000, 10)
        self.min_inside = _dspin(0.05, 1.0, 0.75)
        self.min_tissue = _dspin(0.0, 1.0, 0.5, special="off")
        self.min_gland = _dspin(0.0, 1.0, 0.5, special="off")
        self.test_fraction = _dspin(0.0, 0.9, 0.2)
        self.split_by = QComboBox()
        self.split_by.addItems(["area", "slide"])
        self.seed = _spin(0, 2**31 - 1, 0)
        self.level = _spin(0, 16, 0)
        self.use_mpp = QCheckBox("target µm/px instead of a level")
        self.mpp = _dspin(0.05, 20.0, 0.5, step=0.05, decimals=3)
        self.mpp.setEnabled(False)
        self.use_mpp.toggled.connect(self.mpp.setEnabled)
        self.use_mpp.toggled.connect(lambda on: self.level.setEnabled(not on))
        self.cap = _spin(0, 10_000_000, 0, special="none")
        self.workers = _spin(1, 32, 4)
        self.format = QComboBox()
        self.format.addItems(["jpeg", "png"])

        form = QFormLayout()
        form.addRow("Dataset name:", self.name_edit)
        form.addRow("Patch size (px):", self.patch_size)
        form.addRow("Overlap:", self.overlap)
        form.addRow("Random windows per area:", self.random)
        form.addRow("Min. inside area:", self.min_inside)
        form.addRow("Min. tissue fraction:", self.min_tissue)
        form.addRow("Min. gland fraction:", self.min_gland)
        form.addRow("Test fraction:", self.test_fraction)
        form.addRow("Split by:", self.split_by)
        form.addRow("Seed:", self.seed)
        form.addRow("Level:", self.level)
        form.addRow(self.use_mpp, self.mpp)
        form.addRow("Max. patches per class:", self.cap)
        form.addRow("Reader threads:", self.workers)
        form.addRow("Patch format:", self.format)
        from app.dialogs.stain_preview import StainPreview

        self.stain_preview = StainPreview(self)
        form.addRow("Stain preview:", self.stain_preview.combo)
        return form

    def _make_class_list(self, project: Project) -> QGroupBox:
        self.class_list = QListWidget()
        for c in project.scheme:
            item = QListWidgetItem(c.name)
            item.setData(Qt.ItemDataRole.UserRole, c.id)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked)
            self.class_list.addItem(item)
        classes_box = QGroupBox("Classes to include")
        box = QVBoxLayout(classes_box)
        box.addWidget(self.class_list)
        # Classes the gland filter leaves alone (poorly differentiated carcinoma has few glands
        # by definition: the filter would strip it), the core's default checked.
        self.gland_exempt_list = QListWidget()
        self.gland_exempt_list.setToolTip("Patches of the checked classes skip the gland filter "
                                          "(crc extract --gland-exempt)")
        from crc_core.patches import ExtractConfig

        default = ExtractConfig().exempt_ids(project.scheme)
        for c in project.scheme:
            item = QListWidgetItem(c.name)
            item.setData(Qt.ItemDataRole.UserRole, c.id)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            checked = c.id in default
            item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
            self.gland_exempt_list.addItem(item)
        box.addWidget(QLabel("No gland filter for:"))
        box.addWidget(self.gland_exempt_list)
        return classes_box

    def _make_run_controls(self) -> QHBoxLayout:
        """Progress bar, status line (the runner's) and the Build / Cancel / Close buttons."""
        self.runner = JobRunner(self)
        self.runner.succeeded.connect(self._on_runner_succeeded)
        self.runner.failed.connect(self._on_runner_failed)
        self.runner.cancelled.connect(self._on_runner_cancelled)
        self.progress, self.status_label = self.runner.progress, self.runner.status
        self.cancel_button = self.runner.cancel_button
        self.build_button = QPushButton("Build")
        self.close_button = QPushButton("Close")
        self.build_button.clicked.connect(self.start)
        self.close_button.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for b in (self.build_button, self.cancel_button, self.close_button):
            buttons.addWidget(b)
        return buttons

    def _make_results(self) -> QScrollArea:
        """Table 1 and the scroll area of sample patches."""
        self.table = QTableWidget(0, 6)
        self.table.setHorizontalHeaderLabels(["Class", "Slides", "Areas", "Train", "Test", "Total"])
        self.table.verticalHeader().setVisible(False)
        self.samples = QWidget()
        self.samples_grid = QGridLayout(self.samples)
        self.samples_grid.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.samples)
        scroll.setMinimumHeight(2 * THUMB_PX + 40)
        return scroll

    # ---------------------------------------------------------------------------------- settings
    def selected_classes(self) -> list[str]:
        return self._checked(self.class_list)

    @staticmethod
    def _checked(lst: QListWidget) -> list[str]:
        """Class ids of the checked items of a class list."""
        items = (lst.item(i) for i in range(lst.count()))
        return [str(it.data(Qt.ItemDataRole.UserRole)) for it in items
                if it.checkState() == Qt.CheckState.Checked]

    def config(self) -> Any:
        """The :class:`crc_core.patches.ExtractConfig` of the current settings (validated)."""
        from crc_core.errors import ConfigError
        from crc_core.patches import ExtractConfig

        classes = self.selected_classes()
        if not classes:
            raise ConfigError("no class selected; tick at least one class to include")
        return ExtractConfig(
            patch_size=self.patch_size.value(),
            overlap=round(self.overlap.value(), 4),
            level=None if self.use_mpp.isChecked() else self.level.value(),
            mpp=self.mpp.value() if self.use_mpp.isChecked() else None,
            min_inside=round(self.min_inside.value(), 4),
            random=self.random.value(),
            min_tissue=self.min_tissue.value() or None,
            min_gland=self.min_gland.value() or None,
            gland_exempt=self._checked(self.gland_exempt_list),
            test_fraction=round(self.test_fraction.value(), 4),
            split_by=self.split_by.currentText(),
            seed=self.seed.value(),
            classes=None if len(classes) == len(self.project.scheme) else classes,
            cap=self.cap.value() or None,
            workers=self.workers.value(),
            format=self.format.currentText(),
        ).validate()

    def out_dir(self) -> Path:
        from crc_core.errors import ConfigError

        name = self.name_edit.text().strip()
        if not name or name in (".", "..") or any(ch in name for ch in "/\\:"):
            raise ConfigError(f"dataset name {name!r} must be a plain folder name (no / \\ :)")
        return self.project.dataset_path(name)

    # ---------------------------------------------------------------------------------- run
    def start(self) -> None:
        """Start the build in a background thread: the open slide's annotations as they are in
        memory (taken now), the other slides' read from their files in the worker."""
        if self.runner.running:
            return
        try:
            cfg = self.config()
            out = self.out_dir()
        except CrcError as exc:
            errors.report(self, "Build Dataset", str(exc))
            return
        in_memory = self.session.open_annotation_sets()  # {slide id: annotations}, as edited
        project, scheme = self.project, self.project.scheme.copy()
        self.result = None
        self._clear_results()
        self.runner.start(lambda: build_job(project, in_memory, out, scheme, cfg),
                          "Reading annotations and planning windows…")

    def cancel(self) -> None:
        self.runner.cancel()

    @property
    def worker(self) -> Any:
        """The running build's :class:`app.workers.JobWorker` (None when idle)."""
        return self.runner.worker

    def _on_runner_succeeded(self, result: Any) -> None:
        self.result = result
        msg = (
            f"{result.patches} patches in {result.out_dir} "
            f"({result.written} written, {result.reused} reused)."
        )
        if result.warnings:
            msg += "".join(f"\n• {w}" for w in result.warnings[:3])  # one line each
            if len(result.warnings) > 3:
                msg += f" (+{len(result.warnings) - 3} more warnings in dataset.json)"
        self.status_label.setText(msg)
        self._show_table(result.table, result.totals)
        self._show_samples(result)
        self.stain_preview.refresh()
        self.buildFinished.emit(result)

    def _on_runner_failed(self, message: str) -> None:
        errors.report(self, "Build Dataset", message)
        self.buildFailed.emit(message)

    def _on_runner_cancelled(self) -> None:
        self.status_label.setText(
            "Cancelled: the dataset is incomplete. Build again with the same name and settings "
            "to resume."
        )
        self.buildCancelled.emit()

    # ---------------------------------------------------------------------------------- results
    def _clear_results(self) -> None:
        self.table.setRowCount(0)
        while self.samples_grid.count():
            item = self.samples_grid.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.sample_labels = {}

    def _show_table(self, table: list[dict[str, Any]], totals: dict[str, Any]) -> None:
        from crc_core.patches import table_rows

        rows = table_rows(table, totals, total_label="Total")
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for j, v in enumerate(row):
                it = QTableWidgetItem(str(v))
                if j:
                    it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(i, j, it)
        self.table.resizeColumnsToContents()
        self.table.resizeRowsToContents()
        visible = min(len(rows), 8)
        height = self.table.horizontalHeader().height() + 4
        height += sum(self.table.rowHeight(i) for i in range(visible))
        self.table.setFixedHeight(height)

    def _show_samples(self, result: Any) -> None:
        """Up to SAMPLES_PER_CLASS patches per class, spread over the manifest."""
        from crc_core.patches import read_manifest

        by_class: dict[str, list[str]] = {}
        for r in read_manifest(result.manifest):
            by_class.setdefault(r["label"], []).append(r["path"])
        row = 0
        for c in self.project.scheme:
            paths = by_class.get(c.id, [])
            if not paths:
                continue
            step = max(1, len(paths) // SAMPLES_PER_CLASS)
            picks = paths[::step][:SAMPLES_PER_CLASS]
            name = QLabel(c.name)
            name.setStyleSheet(f"color: {c.hex}; font-weight: bold")
            self.samples_grid.addWidget(name, row, 0)
            labels = []
            for j, rel in enumerate(picks):
                lab = QLabel()
                lab.setFixedSize(THUMB_PX, THUMB_PX)
                pix = QPixmap(str(Path(result.out_dir) / rel))
                if not pix.isNull():
                    lab.setPixmap(
                        pix.scaled(
                            THUMB_PX,
                            THUMB_PX,
                            Qt.AspectRatioMode.KeepAspectRatio,
                            Qt.TransformationMode.SmoothTransformation,
                        )
                    )
                lab.setToolTip(rel)
                self.samples_grid.addWidget(lab, row, j + 1)
                labels.append(lab)
            self.sample_labels[c.id] = labels
            row += 1

    # ---------------------------------------------------------------------------------- closing
    def _on_scale_settings_changed(self, *_args: Any) -> None:
        self.scale_banner.refresh(self.min_gland.value() or None, self.patch_size.value())

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self.scale_banner.stop()
        self.runner.close()  # cancels; never waits (the folder is left resumable)
        super().closeEvent(event)

    def reject(self) -> None:
        self.scale_banner.stop()
        self.runner.close()
        super().reject()
