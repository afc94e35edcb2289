"""A project's folder layout: where its annotations, datasets, models and predictions live.

:class:`ProjectFolders` is a base of :class:`crc_core.project.Project`; it is the one place that
knows the sub-folder names, so no dialog, panel or command joins them onto a project folder::

    annotations/<slide-id>.geojson
    datasets/<name>/manifest.csv            one dataset per folder (crc_core.patches)
    models/**/*.pt                          training runs and their checkpoints
    predictions/<slide-id>/<name>.npz       one saved prediction per model run on a slide

Folders are created on demand by the ``*_dir`` properties and by the writers; the ``list_*``
readers never create one (a project without models lists none). Qt-free, cheap (directory
listings).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from crc_core.inference import Prediction

__all__ = ["ProjectFolders", "safe_file_name"]

ANNOTATIONS = "annotations"
DATASETS = "datasets"
MODELS = "models"
PREDICTIONS = "predictions"
#: The newest checkpoints :meth:`ProjectFolders.list_models` returns by default.
MAX_MODELS = 20


class _HasId(Protocol):
    id: str


def safe_file_name(name: str, default: str = "prediction") -> str:
    """``name`` as a plain file name: runs of anything but letters, digits, ``.`` and ``-`` become
    ``_``; leading and trailing dots and underscores go (``default`` when nothing is left)."""
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or default


def _slide_id(slide: _HasId | str) -> str:
    return slide if isinstance(slide, str) else slide.id


class ProjectFolders:
    """The folder layout of a project rooted at ``root`` (see the module docstring)."""

    root: Path

    def _subdir(self, name: str) -> Path:
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    @property
    def annotations_dir(self) -> Path:
        return self._subdir(ANNOTATIONS)

    @property
    def datasets_dir(self) -> Path:
        return self._subdir(DATASETS)

    @property
    def models_dir(self) -> Path:
        return self._subdir(MODELS)

    @property
    def predictions_dir(self) -> Path:
        return self._subdir(PREDICTIONS)

    # ---------------------------------------------------------------- datasets
    def dataset_path(self, name: str) -> Path:
        """The folder of the dataset ``name`` (not created: the extraction writes it)."""
        return self.datasets_dir / name

    def list_datasets(self) -> list[Path]:
        """The dataset folders (those holding a ``manifest.csv``), by name."""
        root = self.root / DATASETS
        try:
            return [d for d in sorted(root.iterdir())
                    if d.is_dir() and (d / "manifest.csv").is_file()]
        except OSError:  # no datasets folder yet, unreadable
            return []

    # ---------------------------------------------------------------- models
    def list_models(self, limit: int | None = MAX_MODELS) -> list[Path]:
        """The ``.pt`` checkpoints under ``models/``, newest first (at most ``limit``)."""
        try:
            found = [(p.stat().st_mtime, p) for p in (self.root / MODELS).rglob("*.pt")
                     if p.is_file()]
        except OSError:  # no models folder yet, unreadable
            return []
        paths = [p for _, p in sorted(found, key=lambda t: t[0], reverse=True)]
        return paths if limit is None else paths[:limit]

    # ---------------------------------------------------------------- predictions
    def prediction_folder(self, slide: _HasId | str) -> Path:
        """Where the predictions of ``slide`` (an entry or its id) are saved (not created)."""
        return self.root / PREDICTIONS / safe_file_name(_slide_id(slide))

    def prediction_path(self, slide: _HasId | str, name: str) -> Path:
        """The file the prediction ``name`` (a display name: any text) of ``slide`` is saved to."""
        return self.prediction_folder(slide) / f"{safe_file_name(name)}.npz"

    def prediction_paths(self, slide: _HasId | str) -> list[Path]:
        """The saved prediction files of ``slide``, by name (none when there is no folder)."""
        folder = self.prediction_folder(slide)
        try:
            return sorted(p for p in folder.glob("*.npz") if p.is_file())
        except OSError:
            return []

    def save_prediction(self, slide: _HasId | str, name: str, pred: Prediction) -> Path:
        """Save ``pred`` as the prediction ``name`` of ``slide`` (atomic; replaces one of that
        name); its ``model["display_name"]`` records ``name`` (the file name is a safe form of
        it). Returns the file; raises ``CrcError``/``OSError`` when it cannot be written."""
        from crc_core.inference import save_prediction

        path = self.prediction_path(slide, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        pred.model["display_name"] = name
        save_prediction(pred, path)
        return path
