"""The Train dialog's "Start from a model" row: fine-tune an existing checkpoint instead of
training a new model (:mod:`crc_core.finetune`, the GUI face of ``crc train --init``).

The editable list offers the checkpoints of the project's (or the user's) models folder, run
folders included, and the shipped ``models/``; Browse… picks any ``.pt``. Empty means a new
model. With a model chosen, each run keeps its architecture, classes and input size and trains at
a tenth of its learning rate (the Learning rate field is not used, and the note says so); after
the run's evaluation, the old and the new model are scored on the same held-out test images and
the comparison (or the warning that nothing was held out) goes to the log and both models'
scores on those images to the Report tab.

Choosing a checkpoint reads its architecture and stain normalisation method without its weights
(memory-mapped, ``weights_only``: about 15-35 ms for a 14-94 MB checkpoint, measured) and says them
(``archChosen``, ``stainChosen``): the run keeps both, so the dialog ticks the architecture and
shows the method in its Stain normalisation field, which it locks. The full read of the checkpoint
that sets the run up (:func:`crc_core.train_eval.finetune_plans`) happens in the dialog's worker.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.widgets.labels import WrapLabel
from crc_core.finetune import checkpoint_meta

NEW_MODEL_NOTE = "Empty: a new model. Choose a checkpoint to fine-tune it on this data."
MAX_LISTED = 50


def _checkpoints(folders: list[Path]) -> list[str]:
    found: list[str] = []
    for folder in folders:
        try:
            found += [str(p) for p in sorted(folder.rglob("*.pt")) if p.name != "last.pt"]
        except OSError:
            continue
    return list(dict.fromkeys(found))[:MAX_LISTED]


class StartFromModel(QWidget):
    """See the module docstring. ``folders``: where checkpoints are looked for (the shipped
    ``models/`` is added). ``archChosen(str)``: a chosen checkpoint's architecture;
    ``stainChosen(str)``: the stain normalisation method the run will keep (``""``: the checkpoint
    records none, or no checkpoint is chosen: the dialog's field is used)."""

    archChosen = Signal(str)
    stainChosen = Signal(str)

    def __init__(self, folders: list[Path], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from app.demo import bundle_root

        folders = [*folders, bundle_root() / "models"]
        self.combo = QComboBox()
        self.combo.setEditable(True)
        self.combo.addItems(["", *_checkpoints(folders)])
        self.combo.setCurrentText("")
        self.combo.setToolTip("A checkpoint (.pt) to fine-tune; empty for a new model")
        self.combo.lineEdit().setPlaceholderText("(none: a new model)")
        self.combo.currentTextChanged.connect(self._on_combo_currentTextChanged)
        self.browse = QPushButton("Browse…")
        self.browse.clicked.connect(self._on_browse_clicked)
        self.note = WrapLabel(NEW_MODEL_NOTE)  # every line, in the dialog's scrolling column
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.combo, 1)
        row.addWidget(self.browse)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row)
        lay.addWidget(self.note)

    def checkpoint(self) -> Path | None:
        text = self.combo.currentText().strip()
        return Path(text).expanduser() if text else None

    def _on_combo_currentTextChanged(self, _text: str) -> None:
        ckpt = self.checkpoint()
        meta = checkpoint_meta(ckpt) if ckpt is not None and ckpt.suffix == ".pt" \
            and ckpt.is_file() else {}
        if meta:
            self.archChosen.emit(meta["arch"])
        self.stainChosen.emit(meta.get("stain", ""))
        self.note.setText(NEW_MODEL_NOTE if ckpt is None else (
            f"Fine-tunes {ckpt.name}: its architecture, classes and input size are kept; it "
            f"trains at a tenth of its learning rate (the Learning rate field is not used) and "
            f"is compared with the new model on the held-out test images"))

    def _on_browse_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Start from a model", "",
                                              "Checkpoints (*.pt)")
        if path:
            self.combo.setCurrentText(path)

    # ------------------------------------------------------------------ the dialog's hooks
    def show_config(self, cfg: Any) -> None:
        """The note says how ``cfg`` (set up by ``finetune_config``) fine-tunes: the exact rate."""
        if getattr(cfg, "init", None) and cfg.notes:
            self.note.setText(cfg.notes[-1][0].upper() + cfg.notes[-1][1:])

    def show_comparison(self, result: dict[str, Any], run_dir: Path, report: Any,
                        log: Callable[[str], None]) -> None:
        """The comparison in the log, and both models' scores on the test images in the
        Report tab (``compare/old`` and ``compare/new``)."""
        from crc_core.errors import CrcError
        from crc_core.finetune import comparison_text

        log(comparison_text(result))
        for side in ("old", "new"):
            folder = run_dir / "compare" / side
            if (folder / "metrics.json").is_file():
                try:
                    report.add_folder(folder)
                except CrcError as exc:
                    log(f"the {side} model's scores cannot be shown: {exc}")
