"""The Train dialog's settings column: data, models and schedule, output (a mixin of
:class:`app.dialogs.train.TrainDialog`, which runs the job).

The fields become :class:`crc_core.train_eval.RunPlan` objects (:meth:`TrainForm.make_plans`), one
per chosen architecture, with the run folders :func:`crc_core.train_eval.run_folders` names. The
data summary under the Data box reads the dataset as :func:`crc_core.data.load_table` would, 250 ms
after the last edit, in a worker (:func:`summary_job` in an :class:`app.job_runner.JobRunner`, never
on the GUI thread). An edit disables Start at once; a newer edit cancels the check under way and
its result is dropped (only the check of the fields as they are now is shown), and Start is enabled
again only when that check finds data that can train.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from app.job_runner import JobRunner
from app.widgets.labels import WrapLabel
from crc_core.errors import ConfigError
from crc_core.jobs import Progress
from crc_core.models import MODELS
from crc_core.project import Project
from crc_core.tables import GROUP_COLUMNS, IMAGE_COLUMNS, LABEL_COLUMNS, default_group_columns
from crc_core.train_eval import RunPlan, check_run_folders, run_folders

ARCHS = tuple(MODELS)
_GUESS_LABEL = ("label", "class")
_GUESS_GROUP = ("case", "slide", "patient", "group", "subject")
STAIN_TIP = ("Stain normalisation (crc train --stain-norm): fitted on up to 64 training images, "
             "stored in the checkpoint and applied wherever the model sees pixels (training, "
             "evaluation, prediction)")


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



def summary_job(data: str, options: dict[str, Any], mpp: float | None = None) -> Any:
    """Job: the summary text of the dataset as :func:`crc_core.data.load_table` reads it with
    ``options`` (:meth:`TrainForm.data_options`), with the scale training will record
    (:func:`crc_core.training.data.scale_of`: the dataset's, ``mpp`` as given, or one every image
    states in its resolution tags); a ``CrcError`` when it cannot train."""
    from crc_core.data import load_table
    from crc_core.image_scale import table_stated
    from crc_core.training.data import scale_of

    yield Progress(0, None, "checking the data")
    notes: list[str] = []
    table = load_table(data, image_column=options["image_column"],
                       label_column=options["label_column"],
                       group_column=options["group_column"], classes=options["classes"],
                       mapping=options["map"], group_pattern=options["group_pattern"],
                       warn=notes.append)
    groups = len({s.group for s in table.samples})
    counts = ", ".join(f"{k} {v}" for k, v in table.counts().items())
    text = f"{len(table)} images in {groups} groups, {len(table.scheme)} classes: {counts}"
    stated = yield from table_stated(table)
    scale, source = scale_of(mpp, table, notes.append, stated)
    if scale is not None:
        source = "as given" if source.startswith("given") else source
        text += f"\nScale: {scale:g} µm/px ({'the dataset' if source == 'dataset' else source})"
    if notes:
        text += "\n⚠ " + "\n⚠ ".join(notes)
    return text


class TrainForm:
    """The settings fields and their rules; mixed into a ``QDialog`` that calls
    :meth:`_init_form` before building and that defines ``is_running()``."""

    project: Project | None
    start_button: QPushButton

    def _init_form(self) -> None:
        self._data_ok = False         # the data summary found data that can train
        self._summary_timer = QTimer(self)  # type: ignore[arg-type]
        self._summary_timer.setSingleShot(True)
        self._summary_timer.setInterval(250)
        self._summary_timer.timeout.connect(self._update_data_summary)
        self.checks = JobRunner(self, controls=False)  # type: ignore[arg-type]
        self.checks.succeeded.connect(self._on_checks_succeeded)
        self.checks.failed.connect(self._on_checks_failed)
        self.checks.idle.connect(self._on_checks_idle)
        self._checking: tuple[Any, ...] = ()  # the fields the running check reads
        self._shown: tuple[Any, ...] | None = None  # the fields the summary shown was made of
        self._check_again = False
        self._own_stain: str | None = None  # the field's choice while a model's method is shown

    def summary_pending(self) -> bool:
        """An edit of the data fields is not yet reflected in the data summary (its check is
        waiting for the typing to pause, or running)."""
        return (self._summary_timer.isActive() or self.checks.running
                or self._shown != self._data_key())

    def _data_key(self) -> tuple[Any, ...]:
        return (self.dataset_combo.currentText().strip(), self.given_mpp(),
                *sorted(self.data_options().items()))

    def given_mpp(self) -> float | None:
        """The Pixel size field (``None``: "from the data")."""
        return float(self.mpp_spin.value()) or None

    def _on_data_edited(self, *_args: Any) -> None:
        """A data field changed: Start waits for the check of the new fields."""
        self._data_ok = False
        self.start_button.setEnabled(False)
        self.start_button.setToolTip("Cannot start yet: checking the data")
        self._summary_timer.start()

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
            c.currentTextChanged.connect(self._on_data_edited)
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
        self.group_pattern_edit.textChanged.connect(self._on_data_edited)
        form.addRow("Group pattern", self.group_pattern_edit)
        self.classes_edit = QLineEdit()
        self.classes_edit.setPlaceholderText("all labels (or e.g. Normal,Adenocarcinoma)")
        self.classes_edit.setToolTip("Keep only these labels, comma-separated "
                                     "(crc train --classes)")
        self.map_edit = QLineEdit()
        self.map_edit.setPlaceholderText("e.g. Low-grade IN=Adenoma,High-grade IN=Adenoma")
        self.map_edit.setToolTip("Merge labels OLD=NEW, comma-separated (crc train --map)")
        for e in (self.classes_edit, self.map_edit):
            e.textChanged.connect(self._on_data_edited)
        form.addRow("Keep classes", self.classes_edit)
        form.addRow("Merge labels", self.map_edit)
        form.addRow("Pixel size", self._build_mpp_spin())
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

    def _build_mpp_spin(self) -> QDoubleSpinBox:
        self.mpp_spin = QDoubleSpinBox()
        self.mpp_spin.setRange(0.0, 10.0)
        self.mpp_spin.setDecimals(3)
        self.mpp_spin.setSingleStep(0.05)
        self.mpp_spin.setSuffix(" µm/px")
        self.mpp_spin.setSpecialValueText("from the data")
        self.mpp_spin.setToolTip(
            "µm per pixel of the tiles (crc train --mpp), recorded in the model so prediction "
            "cuts slide windows at this scale. \"from the data\": a crc extract dataset's, or one "
            "every tile states in its resolution tags; else the model's scale is unknown "
            "(EBHI-Seg tiles: about 1.3, an estimate)")
        self.mpp_spin.valueChanged.connect(self._on_data_edited)
        return self.mpp_spin

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
            self.preset_combo.setItemData(i, f"{name}: {PRESET_HELP[name]}",
                                          Qt.ItemDataRole.ToolTipRole)
        self.preset_combo.setCurrentText(DEFAULT_PRESET)
        self.preset_combo.setToolTip("; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items()))
        self.preset_combo.currentTextChanged.connect(self._on_preset_changed)
        form.addRow("Preset", self.preset_combo)
        self._add_schedule_rows(form)
        self._add_option_rows(form)
        self.start_from.stainChosen.connect(self._on_model_stain)
        self.start_from.combo.currentTextChanged.connect(self._on_model_rate)
        return box

    def _on_model_rate(self, _text: str) -> None:
        """Fine-tuning trains at a tenth of the model's own rate (``crc_core.finetune``): the
        Learning rate field is locked while a model is chosen (it would not count)."""
        fine = self.start_from.checkpoint() is not None
        self.lr_spin.setEnabled(not fine)
        self.lr_spin.setToolTip("Not used when fine-tuning: the run trains at a tenth of the "
                                "model's own learning rate (crc train --init --lr overrides it)"
                                if fine else "Initial learning rate (arrows: ×10 / ÷10)")

    def _add_schedule_rows(self, form: QFormLayout) -> None:
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

    def _add_option_rows(self, form: QFormLayout) -> None:
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
        self.stain_combo.setToolTip(STAIN_TIP)
        form.addRow("Stain normalisation", self.stain_combo)

    def _on_model_stain(self, method: str) -> None:
        """Fine-tuning keeps the model's stain method: the field shows it, locked; without a
        model (or one that records none) the field is the user's again."""
        combo = self.stain_combo
        if method:
            if self._own_stain is None:
                self._own_stain = combo.currentData()
            if combo.findData(method) < 0:
                combo.addItem(method, method)
            combo.setCurrentIndex(combo.findData(method))
            combo.setEnabled(False)
            combo.setToolTip(f"Taken from the model: {combo.currentText()} (fine-tuning keeps "
                             f"the model's stain normaliser as its run fitted it; crc train "
                             f"--refit-stain refits it on these training images)")
        elif self._own_stain is not None:
            combo.setCurrentIndex(max(0, combo.findData(self._own_stain)))
            self._own_stain = None
            combo.setEnabled(True)
            combo.setToolTip(STAIN_TIP)

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


    # ------------------------------------------------------------------ data fields
    def _models_dir(self) -> Path:
        if self.project is not None:
            return Path(self.project.models_dir)
        from app.settings import data_home

        return data_home() / "models"

    def _populate_datasets(self) -> None:
        items = ([str(d) for d in self.project.list_datasets()] if self.project is not None
                 else [])
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
        self._on_data_edited()
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
        """Check the data fields as they are now, in a worker (a running check is cancelled and
        this one runs when it has ended)."""
        self._summary_timer.stop()
        key = self._data_key()
        if not key[0]:
            self._shown = key
            self._set_summary("Choose a dataset folder or a CSV file.", ok=True, ready=False)
            return
        if self.checks.running:
            self._check_again = True
            self.checks.cancel()  # superseded: its result, if it comes, is dropped
            return
        self._checking = key
        self.data_summary.setStyleSheet("color: palette(mid)")
        options = self.data_options()
        self.checks.start(lambda: summary_job(key[0], options, key[1]))

    def _checked(self, text: str, ok: bool) -> None:
        """A check's result, shown only when it read the fields as they are now."""
        if self._checking != self._data_key() or self._summary_timer.isActive():
            return  # an older edit's check
        self._shown = self._checking
        self._set_summary(text, ok=ok)

    def _on_checks_succeeded(self, text: str) -> None:
        self._checked(text, ok=True)

    def _on_checks_failed(self, message: str) -> None:
        self._checked(message, ok=False)

    def _on_checks_idle(self) -> None:
        if self._check_again:
            self._check_again = False
            self._update_data_summary()

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
        self.augment_check.setChecked(_augments(p.get("augment")))

    # ------------------------------------------------------------------ output folders
    def selected_archs(self) -> list[str]:
        return [a for a, cb in self.arch_boxes.items() if cb.isChecked()]

    def run_folders(self, stamp: str | None = None) -> list[tuple[str, Path]]:
        """The run folder of each selected architecture (``{arch}``/``{time}`` filled in)."""
        return run_folders(self.out_edit.text().strip(), self.selected_archs(), stamp)

    def _update_out_preview(self) -> None:
        folders = self.run_folders()
        if not folders:
            self.out_preview.setText("Choose at least one architecture.")
            return
        self.out_preview.setText("Writes " + "; ".join(str(p) for _a, p in folders))

    def _augment_choice(self) -> dict[str, Any] | None:
        """``None``: the preset's augmentation; the recommended one or none when switched."""
        from crc_core.data import Augment
        from crc_core.training import NO_AUGMENT, PRESETS

        preset_on = _augments(PRESETS[self.preset_combo.currentText()].get("augment"))
        if self.augment_check.isChecked() == preset_on:
            return None
        return Augment.recommended().to_json() if self.augment_check.isChecked() \
            else dict(NO_AUGMENT)

    def dataset(self) -> str:
        """The dataset folder or CSV to train on (refused in one line when missing)."""
        data = self.dataset_combo.currentText().strip()
        if not data:
            raise ConfigError("choose a dataset folder (crc extract) or a CSV file first")
        if not Path(data).exists():
            raise ConfigError(f"{data}: dataset not found (give a dataset folder or a CSV file)")
        return data

    def make_plans(self) -> list[RunPlan]:
        """One :class:`RunPlan` per selected architecture, checked (:class:`ConfigError`). The
        "Start from a model" checkpoint is not read here: the dialog's worker sets the plans up
        to fine-tune it (:func:`crc_core.train_eval.finetune_plans`)."""
        from crc_core.training import make_config

        self.dataset()
        if not self.out_edit.text().strip():
            raise ConfigError("choose a run folder")
        opts = {k: v for k, v in self.data_options().items() if v is not None}
        plans = []
        for arch, out in self.run_folders():
            cfg = make_config(
                arch, self.preset_combo.currentText(), epochs=self.epochs_spin.value(),
                batch_size=self.batch_spin.value(), lr=float(self.lr_spin.value()),
                image_size=self.size_spin.value() or None,
                device=self.device_combo.currentText(), val_fraction=float(self.val_spin.value()),
                test_fraction=float(self.test_spin.value()),
                balance=self.balance_combo.currentData(),
                best_metric=self.best_combo.currentData(), data=opts,
                augment=self._augment_choice(), stain_norm=self.stain_combo.currentData(),
                mpp=self.given_mpp())
            plans.append(RunPlan(arch, out, cfg))
        check_run_folders(plans)
        return plans


def _augments(aug: dict[str, Any] | None) -> bool:
    """Whether a preset's augmentation does anything (``None``: the default, which does);
    ``resolution`` is where it happens, not an augmentation."""
    return aug is None or any(bool(v) for k, v in aug.items() if k != "resolution")
