"""Viewer settings (recent files, window state, drawing preferences) in one JSON file.

Location: ``$CRC_VIEWER_HOME/settings.json`` when the ``CRC_VIEWER_HOME`` environment variable is
set (tests point it at ``tmp_path`` for fresh settings), else platformdirs'
``user_config_dir("crc-workbench")/viewer-settings.json``. Implicit projects for slides opened
without a project live under :func:`data_home` (``$CRC_VIEWER_HOME`` or ``user_data_dir``).

A missing, unreadable or invalid settings file never stops start-up: invalid fields are dropped with
a logged warning and defaults are used (as pymmcore-gui does). Writes are atomic.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import platformdirs

from crc_core.atomic import atomic_write_text

log = logging.getLogger(__name__)

APP_NAME = "crc-workbench"
ENV_HOME = "CRC_VIEWER_HOME"
MAX_RECENT = 10

DEFAULTS: dict[str, Any] = {
    "recent": [],  # most recent first: slide files or project folders
    "fill_opacity": 0.25,
    "brush_radius_px": 20.0,
    "window_geometry": "",  # hex of QMainWindow.saveGeometry()
    "window_state": "",
    "recent_models": [],  # checkpoints used in Analysis > Predict, most recent first
}


def data_home() -> Path:
    """Folder for implicit projects and other per-user data."""
    env = os.environ.get(ENV_HOME)
    return Path(env) if env else Path(platformdirs.user_data_dir(APP_NAME))


def settings_path() -> Path:
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env) / "settings.json"
    return Path(platformdirs.user_config_dir(APP_NAME)) / "viewer-settings.json"


class Settings:
    """Typed access to the settings file; call :meth:`save` to persist."""

    def __init__(self, path: Path | None = None):
        self.path = path or settings_path()
        self.values: dict[str, Any] = {
            k: (list(v) if isinstance(v, list) else v) for k, v in DEFAULTS.items()
        }
        self.load()

    def load(self) -> None:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            log.warning("settings file %s ignored: %s", self.path, exc)
            return
        if not isinstance(raw, dict):
            log.warning("settings file %s ignored: not a JSON object", self.path)
            return
        for key, default in DEFAULTS.items():
            if key not in raw:
                continue
            v = raw[key]
            if key in ("recent", "recent_models"):
                if isinstance(v, list) and all(isinstance(x, str) for x in v):
                    self.values[key] = v[:MAX_RECENT]
                else:
                    log.warning("settings: %r dropped (not a list of paths)", key)
            elif isinstance(default, float):
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.values[key] = float(v)
                else:
                    log.warning("settings: %r dropped (not a number)", key)
            elif isinstance(v, type(default)):
                self.values[key] = v
            else:
                log.warning("settings: %r dropped (wrong type)", key)

    def save(self) -> None:
        try:
            atomic_write_text(self.path, json.dumps(self.values, indent=2))
        except OSError as exc:
            log.warning("settings not saved to %s: %s", self.path, exc)

    def get(self, key: str) -> Any:
        return self.values.get(key, DEFAULTS.get(key))

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value

    @property
    def recent(self) -> list[str]:
        return [p for p in self.values["recent"] if Path(p).exists()]

    def add_recent(self, path: str | Path) -> None:
        p = str(Path(path).absolute())
        items = [x for x in self.values["recent"] if x != p]
        self.values["recent"] = [p, *items][:MAX_RECENT]
        self.save()
