"""Train dialog: pick a dataset, architectures and a schedule; train in a worker with live curves.

The dialog builds one :class:`crc_core.training.TrainConfig` per chosen architecture and runs
:func:`crc_core.training.fit` for each, one after another, in a :class:`app.workers.JobWorker`
(the GUI thread never waits on it). Each epoch's history row (the ``payload`` of fit's per-epoch
``Progress``) extends the live loss/accuracy curves and the images-per-second readout; per-batch
events move the progress bar within the epoch. When a run ends its ``best.pt`` is evaluated on the
test split, else the validation split (:func:`crc_core.evaluation.evaluate`, also in a worker),
into ``<run>/eval`` and added to the report panel (Tables 3 and 4, ROC, confusion matrix, curves).

Cancel stops after the current batch: every completed epoch is already in ``<run>/last.pt``
(written atomically at each epoch's end), so a cancelled run can be continued with
``crc train --resume``. Errors (no images, a single class, an unreadable CSV, a bad option) are
shown in an error dialog and the dialog stays usable.
"""

from __future__ import annotations

import csv
import functools
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.dialogs import errors
from app.panels.report import ReportPanel
from app.widgets.labels import WrapLabel
from app.widgets.plots import CurvesCanvas
from app.workers import JobWorker
from crc_core.errors import ConfigError, CrcError
from crc_core.tables import GROUP_COLUMNS, IMAGE_COLUMNS, LABEL_COLUMNS, default_group_columns

ARCHS = ("resnet50", "densenet121", "inception_v3")
CANCEL_NOTE = ("Cancel stops after the current batch. Every completed epoch is already saved in "
               "the run's last.pt, so nothing finished is lost (continue it with "
               "crc train --resume).")
_GUESS_LABEL = ("label", "class")
_GUESS_GROUP = ("case", "slide", "patient", "group", "subject")


class _LrSpinBox(QDoubleSpinBox):
    """A learning-rate box shown as ``0.001`` / ``1e-05``; the arrows multiply or divide by 10."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setDecimals(12)
        self.setRange(1e-9, 9.99)
        self.setValue(1e-3)
        self.setKeyboardTracking(False)

    def textFromValue(self, value: float) -> str:  # noqa: N802 - Qt API
        return f"{value:.3g}"

    def valueFromText(self, text: str) -> float:  # noqa: N802 - Qt API
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int) -> object:
        try:
            v = float(text)
        except ValueError:
            ok = all(c in "0123456789.eE-+" for c in text)
            return (QValidator.State.Intermediate if ok else QValidator.State.Invalid), text, pos
        ok = self.minimum() <= v <= self.maximum()
        return (QValidator.State.Acceptable if ok else QValidator.State.Intermediate), text, pos

    def stepBy(self, steps: int) -> None:  # noqa: N802 - Qt API
        self.setValue(min(self.maximum(), max(self.minimum(), self.value() * 10.0 ** steps)))


class _Bridge(QObject):
    """Carries warnings from the worker thread to the GUI thread (queued signal)."""

    warned = Signal(str)


def _csv_of(path: Path) -> Path | None:
    if path.is_file():
        return path
    for name in ("manifest.csv", "labels.csv"):
        if (path / name).is_file():
            return path / name
    return None


def _header(path: Path) -> list[str]:
    csv_path = _csv_of(path)
    if csv_path is None:
        return []
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            return [c for c in next(csv.reader(fh), []) if c]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


class _Run:
    def __init__(self, arch: str, out: Path, config: Any, index: int, count: int) -> None:
        self.arch, self.out, self.config, self.index, self.count = arch, out, config, index, count
        self.epochs_done = 0
        self.summary: dict[str, Any] | None = None


class TrainDialog(QDialog):
    """Train one or several architectures on a dataset, with live curves and an evaluation report.

    Parameters
    ----------
    project
        The open :class:`crc_core.project.Project` (datasets offered from ``datasets/``, runs
        written to ``models/``), or ``None`` (pick a dataset folder or CSV; runs go under the
        user's data folder).
    """

    busyChanged = Signal(bool)
    epochFinished = Signal(str, object)      # arch, history row
    runFinished = Signal(str)                # run folder (training and evaluation done)
    allFinished = Signal()                   # every queued architecture done
    runCancelled = Signal(str)               # run folder
    runFailed = Signal(str)                  # message

    def __init__(self, project: Any = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.project = project
        self.setWindowTitle("Train")
        self.setModal(False)
        self.resize(1320, 820)
        self._worker: JobWorker | None = None
        self._queue: list[_Run] = []
        self._subsets: list[str] = []            # what each evaluation of this start ran on
        self._run: _Run | None = None
        self._phase = "idle"          # idle | train | eval
        self._data: str = ""
        self._data_ok = False         # the data summary found data that can train
        self._bridge = _Bridge(self)
        self._bridge.warned.connect(self._on_bridge_warned)
        self._summary_timer = QTimer(self)
        self._summary_timer.setSingleShot(True)
        self._summary_timer.setInterval(250)
        self._summary_timer.timeout.connect(self._update_data_summary)

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
        self.cancel_button = QPushButton("Cancel training")
        self.cancel_button.setEnabled(False)
        self.cancel_button.setToolTip(CANCEL_NOTE)
        self.cancel_button.clicked.connect(self.cancel)
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
        left_panel = QWidget()  # the scrolling settings, and the buttons always in sight
        lp = QVBoxLayout(left_panel)
        lp.setContentsMargins(0, 0, 0, 0)
        lp.addWidget(left_scroll, 1)
        lp.addLayout(buttons)
        left_panel.setMinimumWidth(left.minimumWidth() + 16)
        left_panel.setMaximumWidth(left.maximumWidth() + 16)

        self.tabs = QTabWidget()
        self.tabs.addTab(self._build_live_tab(), "Training")
        self.report = ReportPanel()
        self.tabs.addTab(self.report, "Report")

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left_panel)
        split.addWidget(self.tabs)
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 1)
        lay = QVBoxLayout(self)
        lay.addWidget(split)

        # Return in a field must never start a run or open a file chooser: no default button.
        for b in self.findChildren(QPushButton):
            b.setAutoDefault(False)
            b.setDefault(False)
        self._populate_datasets()
        self._on_preset_changed(self.preset_combo.currentText())
        self._update_data_summary()
        self._set_busy(False)

    # ------------------------------------------------------------------ building
    def _build_data_box(self) -> QGroupBox:
        box = QGroupBox("Data")
        form = QFormLayout(box)
        self.dataset_combo = QComboBox()
        self.dataset_combo.setEditable(True)
        self.dataset_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.dataset_combo.lineEdit().setPlaceholderText("dataset folder (crc extract) or CSV file")
        self.dataset_combo.setToolTip("A dataset folder written by crc extract (manifest.csv), or "
                                      "any CSV whose image paths are relative to the CSV")
        self.dataset_combo.currentTextChanged.connect(self._on_dataset_changed)
        folder_btn = QPushButton("Folder…")
        folder_btn.clicked.connect(self._on_folder_clicked)
        csv_btn = QPushButton("CSV…")
        csv_btn.clicked.connect(self._on_csv_clicked)
        self.dataset_combo.currentTextChanged.connect(self.dataset_combo.setToolTip)
        form.addRow("Dataset", self.dataset_combo)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(folder_btn)
        row.addWidget(csv_btn)
        form.addRow("", row)

        def column_combo(tip: str) -> QComboBox:
            c = QComboBox()
            c.setEditable(True)
            c.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
            c.lineEdit().setPlaceholderText("default")
            c.setToolTip(tip)
            c.currentTextChanged.connect(lambda _t: self._summary_timer.start())
            return c

        self.image_column = column_combo("CSV column with image paths (default: path or image)")
        self.label_column = column_combo("CSV column with the class labels (default: label)")
        self.group_column = column_combo("CSV column with the slide or case: the validation split "
                                         "takes whole groups, never single tiles")
        form.addRow("Image column", self.image_column)
        form.addRow("Label column", self.label_column)
        form.addRow("Group column", self.group_column)
        self.group_pattern_edit = QLineEdit()
        self.group_pattern_edit.setPlaceholderText(r"whole value (or e.g. \d{7})")
        self.group_pattern_edit.setToolTip(
            "Regular expression whose first match in the group value is the group, e.g. \\d{7} "
            "for EBHI case numbers inside GTDC file names (crc train --group-pattern)")
        self.group_pattern_edit.textChanged.connect(lambda _t: self._summary_timer.start())
        form.addRow("Group pattern", self.group_pattern_edit)
        self.classes_edit = QLineEdit()
        self.classes_edit.setPlaceholderText("all labels (or e.g. Normal,Adenocarcinoma)")
        self.classes_edit.setToolTip("Keep only these labels, comma-separated "
                                     "(crc train --classes)")
        self.map_edit = QLineEdit()
        self.map_edit.setPlaceholderText("e.g. Low-grade IN=Adenoma,High-grade IN=Adenoma")
        self.map_edit.setToolTip("Merge labels OLD=NEW, comma-separated (crc train --map)")
        for e in (self.classes_edit, self.map_edit):
            e.textChanged.connect(lambda _t: self._summary_timer.start())
        form.addRow("Keep classes", self.classes_edit)
        form.addRow("Merge labels", self.map_edit)
        self.val_spin = QDoubleSpinBox()
        self.val_spin.setRange(0.0, 0.9)
        self.val_spin.setSingleStep(0.05)
        self.val_spin.setValue(0.2)
        self.val_spin.setToolTip("Share of groups held out for validation: picks best.pt (and "
                                 "is the report's data when there is no test share)")
        form.addRow("Validation share", self.val_spin)
        self.test_spin = QDoubleSpinBox()
        self.test_spin.setRange(0.0, 0.5)
        self.test_spin.setSingleStep(0.05)
        self.test_spin.setValue(0.0)
        self.test_spin.setToolTip("Share of groups kept out of training and of the choice of "
                                  "best.pt; the report is computed on them (crc train "
                                  "--test-fraction)")
        form.addRow("Test share", self.test_spin)
        self.data_summary = WrapLabel("")  # keeps every line of a long warning
        self.data_summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow(self.data_summary)
        return box

    def _build_model_box(self) -> QGroupBox:
        box = QGroupBox("Models and schedule")
        form = QFormLayout(box)
        archs = QHBoxLayout()
        self.arch_boxes: dict[str, QCheckBox] = {}
        for a in ARCHS:
            cb = QCheckBox(a)
            cb.setChecked(a == "resnet50")
            cb.toggled.connect(lambda _on: self._update_out_preview())
            self.arch_boxes[a] = cb
            archs.addWidget(cb)
        form.addRow("Architectures", archs)
        from app.dialogs.start_from_model import StartFromModel  # fine-tuning (crc train --init)

        self.start_from = StartFromModel([self._models_dir()])
        self.start_from.archChosen.connect(  # fine-tuning keeps the model's architecture
            lambda a: [cb.setChecked(n == a) for n, cb in self.arch_boxes.items()])
        form.addRow("Start from a model", self.start_from)
        from crc_core.training import DEFAULT_PRESET, PRESET_HELP, PRESETS

        self.preset_combo = QComboBox()
        self.preset_combo.addItems(list(PRESETS))
        for i, name in enumerate(PRESETS):
            self.preset_combo.setItemData(i, f"{name}: {PRESET_HELP[name]}", Qt.ItemDataRole.ToolTipRole)
        self.preset_combo.setCurrentText(DEFAULT_PRESET)
        self.preset_combo.setToolTip("; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items()))
        self.preset_combo.currentTextChanged.connect(self._on_preset_changed)
        form.addRow("Preset", self.preset_combo)
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 10000)
        form.addRow("Epochs", self.epochs_spin)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(2, 4096)
        form.addRow("Batch size", self.batch_spin)
        self.lr_spin = _LrSpinBox()
        self.lr_spin.setToolTip("Initial learning rate (arrows: ×10 / ÷10)")
        form.addRow("Learning rate", self.lr_spin)
        self.size_spin = QSpinBox()
        self.size_spin.setRange(0, 2048)
        self.size_spin.setSingleStep(32)
        self.size_spin.setSpecialValueText("auto")
        self.size_spin.setSuffix(" px")
        self.size_spin.setToolTip("Network input side; auto = the dataset's patch size, else the "
                                  "model's native size (224, InceptionV3 299)")
        form.addRow("Image size", self.size_spin)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda"])
        import torch

        self.cuda_available = bool(torch.cuda.is_available())
        if not self.cuda_available:
            item = self.device_combo.model().item(2)
            item.setEnabled(False)
            item.setToolTip("no CUDA GPU is available here")
        form.addRow("Device", self.device_combo)
        self.balance_combo = QComboBox()
        for label, mode in (("auto (balanced sampling when classes are >= 3x apart)", "auto"),
                            ("none (as the paper)", "none"), ("weighted loss", "loss"),
                            ("balanced sampling", "sampler")):
            self.balance_combo.addItem(label, mode)
        self.balance_combo.setToolTip(
            "Rare classes: weighted loss gives each class the same total weight in the "
            "cross-entropy; balanced sampling draws every class equally often (crc train "
            "--balance)")
        form.addRow("Class balance", self.balance_combo)
        self.best_combo = QComboBox()
        self.best_combo.addItem("validation accuracy", "acc")
        self.best_combo.addItem("balanced accuracy", "balanced_acc")
        self.best_combo.setToolTip("Which validation score picks best.pt; balanced accuracy (mean "
                                   "per-class recall) does not reward ignoring a rare class")
        form.addRow("Best model by", self.best_combo)
        self.augment_check = QCheckBox("flips, rotations, zoom, colour and stain jitter")
        self.augment_check.setToolTip("Training augmentation (the paper preset has none; crc train "
                                      "--augment / --no-augment)")
        form.addRow("Augmentation", self.augment_check)
        self.tta_check = QCheckBox("average 8 flips and rotations in the report (8x slower)")
        self.tta_check.setToolTip("Test-time augmentation when each trained model is evaluated "
                                  "(crc evaluate --tta)")
        form.addRow("Report", self.tta_check)
        self.stain_combo = QComboBox()
        for label, method in (("none", "none"), ("Macenko", "macenko"), ("Reinhard", "reinhard")):
            self.stain_combo.addItem(label, method)
        self.stain_combo.setToolTip(
            "Stain normalisation (crc train --stain-norm): fitted on up to 64 training images, "
            "stored in the checkpoint and applied wherever the model sees pixels (training, "
            "evaluation, prediction)")
        form.addRow("Stain normalisation", self.stain_combo)
        return box

    def _build_output_box(self) -> QGroupBox:
        box = QGroupBox("Output")
        form = QFormLayout(box)
        self.out_edit = QLineEdit(str(self._models_dir() / "{arch}-{time}"))
        self.out_edit.setToolTip("Run folder; {arch} and {time} are filled in at start (several "
                                 "architectures without {arch} go into subfolders)")
        self.out_edit.textChanged.connect(lambda _t: self._update_out_preview())
        browse = QPushButton("…")
        browse.setMaximumWidth(32)
        browse.clicked.connect(self._on_out_browse_clicked)
        row = QHBoxLayout()
        row.addWidget(self.out_edit, 1)
        row.addWidget(browse)
        form.addRow("Run folder", row)
        self.out_preview = QLabel("")
        self.out_preview.setWordWrap(True)
        self.out_preview.setStyleSheet("color: palette(mid)")
        form.addRow(self.out_preview)
        return box

    def _build_live_tab(self) -> QWidget:
        w = QWidget()
        lay = QVBoxLayout(w)
        self.status_label = QLabel("Ready.")
        self.status_label.setWordWrap(True)
        self.status_label.setStyleSheet("font-weight: bold")
        self.epoch_bar = QProgressBar()
        self.epoch_bar.setRange(0, 1000)
        self.epoch_bar.setValue(0)
        self.epoch_bar.setFormat("epoch")
        self.overall_bar = QProgressBar()
        self.overall_bar.setRange(0, 1000)
        self.overall_bar.setValue(0)
        self.overall_bar.setFormat("run")
        self.ips_label = QLabel("Images/s: –")
        self.metrics_label = QLabel("")
        grid = QFormLayout()
        grid.addRow("This epoch", self.epoch_bar)
        grid.addRow("This run", self.overall_bar)
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

    # ------------------------------------------------------------------ data fields
    def _models_dir(self) -> Path:
        if self.project is not None:
            return Path(self.project.models_dir)
        from app.settings import data_home

        return data_home() / "models"

    def _populate_datasets(self) -> None:
        items: list[str] = []
        if self.project is not None:
            try:
                root = Path(self.project.datasets_dir)
                items = [str(d) for d in sorted(root.iterdir())
                         if d.is_dir() and (d / "manifest.csv").is_file()]
            except OSError:
                items = []
        self.dataset_combo.blockSignals(True)
        self.dataset_combo.clear()
        self.dataset_combo.addItems(items)
        self.dataset_combo.setCurrentText(items[0] if items else "")
        self.dataset_combo.blockSignals(False)
        self._on_dataset_changed(self.dataset_combo.currentText())

    def set_dataset(self, path: str | Path) -> None:
        """Choose the dataset folder or CSV ``path`` (as the Folder…/CSV… buttons do)."""
        self.dataset_combo.setCurrentText(str(path))

    def _on_folder_clicked(self) -> None:
        start = str(self.project.datasets_dir) if self.project is not None else ""
        path = QFileDialog.getExistingDirectory(self, "Dataset folder", start)
        if path:
            self.set_dataset(path)

    def _on_csv_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "CSV manifest", "",
                                              "CSV files (*.csv);;All (*)")
        if path:
            self.set_dataset(path)

    def _on_out_browse_clicked(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder for the runs",
                                                str(self._models_dir()))
        if path:
            self.out_edit.setText(str(Path(path) / "{arch}-{time}"))

    def _on_dataset_changed(self, text: str) -> None:
        cols = _header(Path(text)) if text.strip() else []
        path_like = [c for c in cols if c.lower() in IMAGE_COLUMNS]
        # The columns load_table takes by default (a crc extract dataset split by area groups
        # by area_id, so validation is carved out of its training areas).
        groups = default_group_columns(text) if text.strip() else GROUP_COLUMNS
        for combo, defaults, words in ((self.image_column, IMAGE_COLUMNS, ()),
                                       (self.label_column, LABEL_COLUMNS, _GUESS_LABEL),
                                       (self.group_column, groups, _GUESS_GROUP)):
            old = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItem("")
            combo.addItems(cols)
            if old in cols:
                pick = old
            else:
                # The column load_table would take by default, else a likely one (EBHI:
                # ebhi_class, case_id), shown explicitly so the user sees what is used.
                pick = next((c for d in defaults for c in cols if c == d), "")
                if not pick:
                    pick = next((c for c in cols if c not in path_like and "mask" not in c.lower()
                                 and any(g in c.lower() for g in words)), "")
            combo.setCurrentText(pick)
            combo.blockSignals(False)
        self._summary_timer.start()
        self._update_out_preview()

    def data_options(self) -> dict[str, Any]:
        """The CSV options as :func:`crc_core.data.load_table` takes them (empty -> None)."""
        def val(w: QComboBox | QLineEdit) -> str | None:
            t = (w.currentText() if isinstance(w, QComboBox) else w.text()).strip()
            return t or None

        return {"image_column": val(self.image_column), "label_column": val(self.label_column),
                "group_column": val(self.group_column),
                "group_pattern": val(self.group_pattern_edit), "classes": val(self.classes_edit),
                "map": val(self.map_edit)}

    def _update_data_summary(self) -> None:
        text = self.dataset_combo.currentText().strip()
        if not text:
            self._set_summary("Choose a dataset folder or a CSV file.", ok=True, ready=False)
            return
        from crc_core.data import load_table

        opts = self.data_options()
        notes: list[str] = []
        try:
            table = load_table(text, image_column=opts["image_column"],
                               label_column=opts["label_column"],
                               group_column=opts["group_column"], classes=opts["classes"],
                               mapping=opts["map"], group_pattern=opts["group_pattern"],
                               warn=notes.append)
        except CrcError as exc:
            self._set_summary(str(exc), ok=False)
            return
        groups = len({s.group for s in table.samples})
        counts = ", ".join(f"{k} {v}" for k, v in table.counts().items())
        text = (f"{len(table)} images in {groups} groups, {len(table.scheme)} classes: "
                f"{counts}")
        if notes:
            text += "\n⚠ " + "\n⚠ ".join(notes)
        self._set_summary(text, ok=True)

    def _set_summary(self, text: str, ok: bool, ready: bool | None = None) -> None:
        """Show the data summary (red when not ``ok``); Start is enabled only when ``ready``
        (default: ``ok``), and its tooltip then says what to fix."""
        # long paths have no spaces: let them break after / and _ instead of being cut
        self.data_summary.setText(text.replace("/", "/\u200b").replace("_", "_\u200b"))
        self.data_summary.setToolTip(text)
        self.data_summary.setStyleSheet("" if ok else "color: #b00020")
        self._data_ok = ok if ready is None else ready
        self.start_button.setEnabled(self._data_ok and not self.is_running())
        self.start_button.setToolTip("" if self._data_ok else
                                     "Cannot start: " + (text if not ok else "choose the data"))

    def _on_preset_changed(self, name: str) -> None:
        from crc_core.training import PRESETS

        p = PRESETS.get(name)
        if p is None:
            return
        self.epochs_spin.setValue(int(p["epochs"]))
        self.batch_spin.setValue(int(p["batch_size"]))
        self.lr_spin.setValue(float(p["lr"]))
        for combo, key, default in ((self.balance_combo, "balance", "none"),
                                    (self.best_combo, "best_metric", "acc")):
            i = combo.findData(p.get(key, default))
            if i >= 0:
                combo.setCurrentIndex(i)
        aug = p.get("augment")
        self.augment_check.setChecked(aug is None or any(bool(v) for v in aug.values()))

    # ------------------------------------------------------------------ output folders
    def selected_archs(self) -> list[str]:
        return [a for a, cb in self.arch_boxes.items() if cb.isChecked()]

    def run_folders(self, stamp: str | None = None) -> list[tuple[str, Path]]:
        """The run folder of each selected architecture (``{arch}``/``{time}`` filled in)."""
        stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
        template = self.out_edit.text().strip()
        archs = self.selected_archs()
        out = []
        for a in archs:
            t = template
            if "{arch}" not in t and len(archs) > 1:
                t = str(Path(t) / "{arch}")
            out.append((a, Path(t.replace("{arch}", a).replace("{time}", stamp)).expanduser()))
        return out

    def _update_out_preview(self) -> None:
        folders = self.run_folders()
        if not folders:
            self.out_preview.setText("Choose at least one architecture.")
            return
        self.out_preview.setText("Writes " + "; ".join(str(p) for _a, p in folders))

    # ------------------------------------------------------------------ run
    def is_running(self) -> bool:
        return self._worker is not None

    def _augment_choice(self) -> dict[str, Any] | None:
        """``None``: the preset's augmentation; the recommended one or none when switched."""
        from crc_core.data import Augment
        from crc_core.training import NO_AUGMENT, PRESETS

        aug = PRESETS[self.preset_combo.currentText()].get("augment")
        preset_on = aug is None or any(bool(v) for v in aug.values())
        if self.augment_check.isChecked() == preset_on:
            return None
        return Augment.recommended().to_json() if self.augment_check.isChecked() \
            else dict(NO_AUGMENT)

    def _make_configs(self) -> list[_Run]:
        from crc_core.training import make_config

        data = self.dataset_combo.currentText().strip()
        if not data:
            raise ConfigError("choose a dataset folder (crc extract) or a CSV file first")
        if not Path(data).exists():
            raise ConfigError(f"{data}: dataset not found (give a dataset folder or a CSV file)")
        if not self.out_edit.text().strip():
            raise ConfigError("choose a run folder")
        folders = self.run_folders()
        if not folders:
            raise ConfigError("choose at least one architecture")
        opts = {k: v for k, v in self.data_options().items() if v is not None}
        runs = []
        for i, (arch, out) in enumerate(folders):
            if (out / "last.pt").exists():
                raise ConfigError(f"{out} already holds a training run (last.pt); choose another "
                                  f"run folder")
            cfg = make_config(
                arch, self.preset_combo.currentText(), epochs=self.epochs_spin.value(),
                batch_size=self.batch_spin.value(), lr=float(self.lr_spin.value()),
                image_size=self.size_spin.value() or None,
                device=self.device_combo.currentText(), val_fraction=float(self.val_spin.value()),
                test_fraction=float(self.test_spin.value()),
                balance=self.balance_combo.currentData(),
                best_metric=self.best_combo.currentData(), data=opts,
                augment=self._augment_choice(), stain_norm=self.stain_combo.currentData())
            cfg = self.start_from.apply(cfg)
            runs.append(_Run(arch, out, cfg, i, len(folders)))
        self._data = data
        return runs

    def start(self) -> None:
        """Start training the selected architectures (errors go to an error dialog)."""
        if self.is_running():
            return
        if self._summary_timer.isActive():  # fields edited a moment ago: check them now
            self._summary_timer.stop()
            self._update_data_summary()
        if not self._data_ok:
            return
        try:
            runs = self._make_configs()
        except CrcError as exc:
            self._fail("Cannot start training", str(exc))
            return
        self._queue = runs
        self._subsets = []
        self.curves.clear()
        self.report.clear()
        self.log.clear()
        self.tabs.setCurrentIndex(0)
        self._next_run()

    def _next_run(self) -> None:
        if not self._queue:
            self._run = None
            self._set_busy(False)
            self._set_bar(self.epoch_bar, 1.0, "done")
            names = {"test": "test", "val": "validation", "all": "whole"}
            parts = sorted({names.get(x, x) for x in self._subsets})
            self.status_label.setText("Done. " + (f"The report shows the {' and '.join(parts)} "
                                                  f"split." if self.report.results and parts
                                                  else ""))
            if self.report.results:
                self.tabs.setCurrentWidget(self.report)
            self.allFinished.emit()
            return
        from crc_core.training import fit

        run = self._queue.pop(0)
        self._run = run
        self.curves.start_run(run.arch)
        self.epoch_bar.setValue(0)
        self.overall_bar.setValue(0)
        self.ips_label.setText("Images/s: –")
        self.metrics_label.setText("")
        self.status_label.setText(f"Training {run.arch} ({run.index + 1} of {run.count}) into "
                                  f"{run.out}")
        self._log(f"{run.arch}: training into {run.out}")
        factory = functools.partial(fit, self._data, run.out, run.config,
                                    warn=self._bridge.warned.emit)
        self._start_worker(factory, "train")

    def _start_worker(self, factory: Any, phase: str) -> None:
        w = JobWorker(factory)
        self._worker = w
        self._phase = phase
        w.progressed.connect(lambda ev, w=w: self._on_worker_progressed(w, ev))
        w.finished_ok.connect(lambda res, w=w: self._on_worker_finished(w, res))
        w.failed.connect(lambda msg, w=w: self._on_worker_failed(w, msg))
        w.cancelled.connect(lambda w=w: self._on_worker_cancelled(w))
        self._set_busy(True)
        w.start()

    def cancel(self) -> None:
        """Stop after the current batch; completed epochs stay in ``last.pt``."""
        if self._worker is None:
            return
        self._worker.cancel()
        self.cancel_button.setEnabled(False)
        self._queue.clear()
        self.status_label.setText("Stopping after the current batch…")

    # ------------------------------------------------------------------ worker events
    def _on_worker_progressed(self, w: JobWorker, ev: Any) -> None:
        if w is not self._worker or self._run is None:
            return
        run = self._run
        if self._phase == "eval":
            self._set_bar(self.epoch_bar, ev.fraction, f"evaluating {run.arch}: %p%")
            return
        row = ev.payload if isinstance(ev.payload, dict) and "epoch" in ev.payload else None
        epochs = max(1, int(run.config.epochs))
        if row is not None:
            run.epochs_done = int(row["epoch"])
            self.curves.add_row(row, run.arch)
            ips = row.get("images_per_s")
            self.ips_label.setText(f"Images/s: {ips:,.1f} (training, epoch {run.epochs_done})"
                                   if ips is not None else "Images/s: –")
            parts = [f"train loss {row['train_loss']:.3f} acc {row['train_acc']:.3f}"]
            if row.get("val_loss") is not None:
                parts.append(f"val loss {row['val_loss']:.3f} acc {row['val_acc']:.3f}")
            self.metrics_label.setText(" · ".join(parts))
            self._log(f"{run.arch} epoch {run.epochs_done}/{epochs}: " + ", ".join(parts)
                      + (f", {ips:,.1f} images/s" if ips is not None else ""))
            self.epochFinished.emit(run.arch, dict(row))
            self._set_bar(self.epoch_bar, 1.0, f"epoch {run.epochs_done}/{epochs} done")
        elif ev.total:
            per_epoch = ev.total / epochs
            idx = min(epochs - 1, int(ev.done // per_epoch)) if per_epoch else 0
            if ev.done and ev.done == idx * per_epoch and idx > 0:
                idx -= 1        # the last batch of an epoch, before its row arrives
            within = (ev.done - idx * per_epoch) / per_epoch if per_epoch else 0.0
            self._set_bar(self.epoch_bar, within, f"epoch {idx + 1}/{epochs}: %p%")
            # the header follows the epoch (it kept "decoding images 108/108" before)
            self.status_label.setText(f"Training {run.arch} ({run.index + 1} of {run.count}): "
                                      f"epoch {idx + 1} of {epochs}")
        else:
            self._set_bar(self.epoch_bar, None, ev.message or "preparing")
        if ev.total:
            self._set_bar(self.overall_bar, ev.fraction,
                          f"{run.arch} ({run.index + 1} of {run.count}): %p%")
        if ev.message and row is None and not ev.total:
            self.status_label.setText(f"{run.arch}: {ev.message}")

    def _on_worker_finished(self, w: JobWorker, result: Any) -> None:
        if w is not self._worker or self._run is None:
            return
        run = self._run
        self._worker = None
        if self._phase == "train":
            run.summary = result if isinstance(result, dict) else None
            best = run.out / "best.pt"
            sm = run.summary or {}
            score = sm.get("best_score", sm.get("best_val_acc"))
            what = ("balanced accuracy" if sm.get("best_metric") == "balanced_acc"
                    else "accuracy")
            self._log(f"{run.arch}: training done"
                      + (f", best {'validation' if sm.get('val_images') else 'training'} "
                         f"{what} {score:.3f} at epoch {sm['best_epoch']}"
                         if score is not None and sm.get("best_epoch") else ""))
            if not best.is_file():
                self._fail("Evaluation skipped", f"{best}: no checkpoint was written")
                return
            from crc_core.evaluation import evaluate

            held = "test" if run.config.test_fraction > 0 else "validation"
            self.status_label.setText(f"Evaluating {run.arch} on the {held} split…")
            factory = functools.partial(evaluate, best, self._data, run.out / "eval",
                                        device=self.device_combo.currentText(),
                                        batch_size=max(2, self.batch_spin.value()),
                                        tta=self.tta_check.isChecked(),
                                        warn=self._bridge.warned.emit)
            factory = self.start_from.with_comparison(  # fine-tuned: old and new on one test set
                factory, run.config, run.out, device=self.device_combo.currentText(),
                warn=self._bridge.warned.emit)
            self._start_worker(factory, "eval")
            return
        # evaluation done
        try:
            self.report.add_folder(run.out)
        except CrcError as exc:
            self._fail("Cannot show the report", str(exc))
            return
        m = result if isinstance(result, dict) else {}
        if m.get("subset"):
            self._subsets.append(str(m["subset"]))
        if m.get("accuracy") is not None:
            self._log(f"{run.arch}: {m.get('subset', '')} accuracy {m['accuracy']:.3f}, mAP "
                      f"{(m.get('macro') or {}).get('map') or 0:.3f} ({run.out / 'eval'})")
        if m.get("comparison"):  # fine-tuned: old and new model on the same test images
            self.start_from.show_comparison(m["comparison"], run.out, self.report, self._log)
        self.runFinished.emit(str(run.out))
        self._next_run()

    def _on_worker_failed(self, w: JobWorker, message: str) -> None:
        if w is not self._worker:
            return
        what = "Evaluation failed" if self._phase == "eval" else "Training failed"
        self._worker = None
        self._fail(what, message)

    def _on_worker_cancelled(self, w: JobWorker) -> None:
        if w is not self._worker:
            return
        run = self._run
        self._worker = None
        self._queue.clear()
        self._run = None
        self._set_busy(False)
        if run is None:
            return
        last = run.out / "last.pt"
        if self._phase == "eval":
            msg = f"Evaluation of {run.arch} cancelled; the trained run is in {run.out}."
        elif last.is_file():
            msg = (f"Cancelled. {run.arch}: {run.epochs_done} completed epoch(s) kept in {last} "
                   f"(continue with crc train --resume --out {run.out} ...).")
        else:
            msg = f"Cancelled before the first epoch ended: nothing was saved for {run.arch}."
        self.status_label.setText(msg)
        self._log(msg)
        self._set_bar(self.epoch_bar, 0.0, "cancelled")
        self.runCancelled.emit(str(run.out))

    def _on_bridge_warned(self, message: str) -> None:
        self._log(f"warning: {message}")

    # ------------------------------------------------------------------ helpers
    def _fail(self, title: str, message: str) -> None:
        self._queue.clear()
        self._run = None
        self._set_busy(False)
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

    def _set_busy(self, busy: bool) -> None:
        self.start_button.setEnabled(not busy and self._data_ok)
        self.cancel_button.setEnabled(busy)
        for w in (self.dataset_combo, self.image_column, self.label_column, self.group_column,
                  self.group_pattern_edit, self.balance_combo, self.best_combo,
                  self.augment_check, self.tta_check, self.classes_edit, self.map_edit, self.val_spin, self.test_spin,
                  self.preset_combo,
                  self.epochs_spin, self.batch_spin, self.lr_spin, self.size_spin,
                  self.device_combo, self.out_edit, *self.arch_boxes.values()):
            w.setEnabled(not busy)
        if not busy and self.epoch_bar.maximum() == 0:
            self.epoch_bar.setRange(0, 1000)
        self.busyChanged.emit(busy)

    def reject(self) -> None:
        """Closing the dialog stops a running job (completed epochs stay in last.pt)."""
        w = self._worker
        if w is not None:
            self._queue.clear()
            w.cancel_and_wait()
            self._worker = None
            self._set_busy(False)
        super().reject()
