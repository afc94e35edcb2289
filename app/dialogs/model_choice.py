"""The models the Predict dialog offers: recently used, the project's trained ones, shipped ones.

Recently used checkpoints are kept in the viewer settings (``recent_models``, most recent first; the
first is the one used last and is preselected). The project's are the ``.pt`` files under its
``models/`` folder (newest first, :meth:`crc_core.project.Project.list_models`); the shipped ones
are ``models/*.pt`` of the CRC Workbench repository (any file there: the demo model's name is not
fixed). A path appears once, under the first origin that lists it. GUI-free apart from the
settings object; cheap (directory listings).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.settings import Settings
    from crc_core.project import Project

MAX_PROJECT = 20

ORIGIN_TEXT = {
    "recent": "used recently",
    "project": "trained in this project",
    "shipped": "shipped with CRC Workbench (models/)",
}


@dataclass(frozen=True)
class ModelChoice:
    path: Path
    origin: str  # "recent", "project" or "shipped"

    @property
    def text(self) -> str:
        return f"{self.path.name} — {ORIGIN_TEXT[self.origin]}"


def shipped_models_dir() -> Path:
    """The repository's ``models/`` folder."""
    return Path(__file__).resolve().parents[2] / "models"


def known_models(
    project: Project | None, settings: Settings, shipped: Path | None = None,
) -> list[ModelChoice]:
    """Recent (still existing), project and shipped checkpoints, each path once, in that order."""
    recent = [Path(p) for p in (settings.get("recent_models") or []) if Path(p).is_file()]
    folder = shipped or shipped_models_dir()
    shipped_pts = sorted(p for p in folder.glob("*.pt") if p.is_file()) if folder.is_dir() else []
    out: list[ModelChoice] = []
    seen: set[Path] = set()
    project_pts = project.list_models(MAX_PROJECT) if project is not None else []
    for origin, paths in (("recent", recent), ("project", project_pts),
                          ("shipped", shipped_pts)):
        for p in paths:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                out.append(ModelChoice(p, origin))
    return out


def remember_model(settings: Settings, path: str | Path) -> None:
    """Put ``path`` first in the recent models and save the settings."""
    from app.settings import MAX_RECENT

    p = str(Path(path).absolute())
    items = [x for x in (settings.get("recent_models") or []) if x != p]
    settings.set("recent_models", [p, *items][:MAX_RECENT])
    settings.save()
