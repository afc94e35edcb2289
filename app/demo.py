"""The demo project: the read-only ``resources/demo`` installed into the user data folder.

``crc-viewer --demo`` (and ``make run`` without arguments) calls :func:`install_demo`, which copies
``resources/demo`` (the demo slide built from EBHI-Seg validation tiles by ``tools/make_demo.py``,
its ground-truth annotations, the project file and the shipped prediction of the demo model under
``predictions/demo_slide/``) and the demo model that ``demo.json`` names (``models/...pt``, into
the copy's ``models/``, so Analysis > Predict lists it) to ``data_home()/demo`` —
``$CRC_VIEWER_HOME/demo`` when that variable is set, else platformdirs'
``user_data_dir("crc-workbench")/demo``.

The shipped files are never written: the user edits the copy. The copy is made on first use and
again when the shipped version changes (a SHA-256 over the shipped files' names and bytes, and the
demo model's name and size, kept in ``.demo-version`` of the copy); the previous copy is then moved
aside to ``demo.previous`` (one generation) rather than deleted. The copy is built in a temporary
sibling folder and renamed into place, so an interrupted first start leaves no half demo.
Qt-free; called on the GUI thread before the window opens the project (copying ~12 MB and the
14 MB model).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

from crc_core.errors import ProjectError, error_message
from crc_core.project import Project

DEMO_FOLDER = "demo"
VERSION_FILE = ".demo-version"


def bundle_root() -> Path:
    """The folder holding ``resources/`` and ``models/``: the repository or PyInstaller's bundle."""
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        return Path(frozen)
    return Path(__file__).resolve().parents[1]


def shipped_demo_dir() -> Path:
    """``resources/demo`` as shipped (read-only)."""
    return bundle_root() / "resources" / DEMO_FOLDER


def shipped_demo_model() -> Path:
    """The model whose prediction the demo ships (``demo.json``: ``model.file``, a path under
    ``models/``); it may be absent in a trimmed build."""
    models = bundle_root() / "models"
    try:
        meta = json.loads((shipped_demo_dir() / "demo.json").read_text(encoding="utf-8"))
        name = Path(str(meta["model"]["file"])).name
    except (OSError, ValueError, KeyError, TypeError):
        name = next((p.name for p in sorted(models.glob("demo_*.pt"))), "demo.pt")
    return models / name


def _files(src: Path) -> list[Path]:
    return sorted(p for p in src.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def demo_version(src: Path | None = None, model: Path | None = None) -> str:
    """SHA-256 of the shipped demo (relative names and bytes) and of the model's name and size."""
    src = src or shipped_demo_dir()
    model = model if model is not None else shipped_demo_model()
    h = hashlib.sha256()
    for p in _files(src):
        h.update(p.relative_to(src).as_posix().encode() + b"\0")
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    if model.is_file():
        h.update(f"model:{model.name}:{model.stat().st_size}".encode())
    return h.hexdigest()


def installed_version(target: Path) -> str | None:
    try:
        return (target / VERSION_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def install_demo(
    home: Path | None = None, src: Path | None = None, model: Path | None = None
) -> Path:
    """Copy the shipped demo project into ``home/demo`` unless an up-to-date copy is there.

    Parameters
    ----------
    home
        The user data folder (default :func:`app.settings.data_home`).
    src, model
        The shipped demo folder and model (defaults: :func:`shipped_demo_dir`,
        :func:`shipped_demo_model`); tests pass others.

    Returns
    -------
    Path
        The demo project folder (holding ``project.json``).

    Raises
    ------
    ProjectError
        When the shipped demo is missing or the copy cannot be written (message says where).
    """
    if home is None:
        from app.settings import data_home

        home = data_home()
    src = src or shipped_demo_dir()
    model = model if model is not None else shipped_demo_model()
    if not (src / "project.json").is_file():
        raise ProjectError(f"the demo project is not in this installation ({src} is missing)")
    target = home / DEMO_FOLDER
    version = demo_version(src, model)
    if (target / "project.json").is_file() and installed_version(target) == version:
        return target
    try:
        home.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=home))
        try:
            staged = tmp / DEMO_FOLDER
            shutil.copytree(src, staged, ignore=shutil.ignore_patterns("__pycache__"))
            for p in staged.rglob("*"):  # the shipped tree may be read-only; the copy is the user's
                p.chmod(p.stat().st_mode | 0o200)
            staged.chmod(staged.stat().st_mode | 0o200)
            if model.is_file():  # into the project's models folder (its layout, not ours)
                shutil.copyfile(model, Project.open(staged).models_dir / model.name)
            (staged / VERSION_FILE).write_text(version + "\n", encoding="utf-8")
            if target.exists():
                previous = home / f"{DEMO_FOLDER}.previous"
                if previous.exists():
                    shutil.rmtree(previous)
                target.rename(previous)
            staged.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        raise ProjectError(
            f"cannot install the demo project into {target}: {error_message(exc)}"
        ) from exc
    return target
