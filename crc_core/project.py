"""Project folders: the slide list, the class scheme and one annotation file per slide.

Layout of a project folder::

    project.json                 format version, name, class scheme, slide list
    annotations/<slide-id>.geojson   QuPath GeoJSON, one per slide (+ .bak: the previous save)
    datasets/  models/  predictions/ created on demand (crc_core.project_folders)

Slides under the project folder are recorded by a relative path (``/``-separated), so the folder
can be moved to another disk or machine and keeps working; slides the user added from elsewhere
are recorded by their absolute path. Paths read from ``project.json`` never escape the folder: a
relative path with ``..`` that leaves it is refused when the project is opened, one that leaves it
through a symlink is refused when resolved (:meth:`Project.slide_path`), and slide ids (which name
the annotation files) must be plain file names. A slide whose file is missing is kept and reported
(``entry.exists`` is False, ``entry.problem`` says why); nothing crashes.

Every write (``project.json``, annotation files) is atomic; a crash mid-save leaves the previous
file whole. Not thread-safe: one thread (the GUI's) owns a Project.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import posixpath
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from crc_core.annotations import (
    AnnotationSet,
    GeoJsonCache,
    LoadResult,
    annotations_to_bytes,
    read_annotations_bytes,
)
from crc_core.atomic import atomic_write_bytes
from crc_core.classes import ClassScheme, slugify
from crc_core.errors import AnnotationError, ClassSchemeError, ProjectError
from crc_core.project_folders import ANNOTATIONS, ProjectFolders

__all__ = ["PROJECT_FILE", "PROJECT_FORMAT", "Project", "SlideEntry"]

PROJECT_FILE = "project.json"
PROJECT_KIND = "crc-workbench-project"
#: Version of project.json written here; newer versions are refused with a clear message.
PROJECT_FORMAT = 1
MAX_PROJECT_BYTES = 64 * 1024 * 1024
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_RESERVED_IDS = (
    {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(10)} | {f"lpt{i}" for i in range(10)}
)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def _is_absolute(p: str) -> bool:
    return PurePosixPath(p).is_absolute() or PureWindowsPath(p).is_absolute()


def _within(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


@dataclass
class SlideEntry:
    """One slide of a project.

    Attributes
    ----------
    id : str
        Stable id (a plain file name); the annotation file is ``annotations/<id>.geojson``.
    path : str
        As recorded: relative to the project folder (``/``-separated) or absolute.
    name : str
        Display name (defaults to the file name without extension).
    mpp : tuple[float, float] | None
        User override of the slide's µm/px at level 0 (None: use the file's).
    exists : bool
        Whether the slide file is there (checked on open and by :meth:`Project.refresh`).
    problem : str
        Why it is not usable ("" when it is).
    """

    id: str
    path: str
    name: str
    mpp: tuple[float, float] | None = None
    added: str = ""
    notes: str = ""
    exists: bool = True
    problem: str = ""
    _count: int | None = field(default=None, repr=False)
    _count_stat: tuple[int, int] | None = field(default=None, repr=False)

    @property
    def is_absolute(self) -> bool:
        return _is_absolute(self.path)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "path": self.path,
            "name": self.name,
            "mpp": list(self.mpp) if self.mpp else None,
            "added": self.added,
        }
        if self.notes:
            d["notes"] = self.notes
        if self._count is not None:
            d["annotation_count"] = self._count
        return d


def _check_mpp(v: Any, where: str) -> tuple[float, float] | None:
    if v is None:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = [v, v]
    if (
        isinstance(v, (list, tuple))
        and len(v) == 2
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
        and all(math.isfinite(x) and 0 < x < 1000 for x in v)
    ):
        return (float(v[0]), float(v[1]))
    raise ProjectError(f"{where}: mpp {v!r} must be null, a positive number or [x, y] µm per pixel")


class Project(ProjectFolders):
    """A project folder. Use :meth:`create` or :meth:`open`, not the constructor."""

    def __init__(
        self,
        root: Path,
        scheme: ClassScheme,
        name: str,
        slides: list[SlideEntry],
        created: str = "",
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.root = Path(root)
        self.scheme = scheme
        self.name = name
        self.slides = slides
        self.created = created
        self._extra = dict(extra or {})
        self._written: dict[str, str] = {}  # slide id -> sha256 of the annotation bytes on disk
        self._encoded: dict[str, GeoJsonCache] = {}  # slide id -> features encoded at the last save
        self._saved_state = self._state_bytes()

    # ---------------------------------------------------------------- create / open / save
    @property
    def file(self) -> Path:
        return self.root / PROJECT_FILE

    @classmethod
    def create(
        cls, root: str | Path, scheme: ClassScheme | None = None, name: str | None = None
    ) -> Project:
        """Make a new project in ``root`` (created if needed; may already hold slides).

        Raises
        ------
        ProjectError
            When ``root`` already holds a project or is not a folder.
        """
        r = Path(root).expanduser().absolute()
        if r.exists() and not r.is_dir():
            raise ProjectError(f"{r}: exists and is not a folder")
        if (r / PROJECT_FILE).exists():
            raise ProjectError(f"{r}: already holds a project ({PROJECT_FILE}); open it instead")
        try:
            r.mkdir(parents=True, exist_ok=True)
            (r / ANNOTATIONS).mkdir(exist_ok=True)
        except OSError as exc:
            raise ProjectError(
                f"{r}: cannot create the project folder ({exc.strerror or exc})"
            ) from None
        proj = cls(
            r,
            scheme.copy() if scheme is not None else ClassScheme.paper(),
            name or r.name,
            [],
            created=_now(),
        )
        proj.save()
        return proj

    @classmethod
    def open(cls, root: str | Path) -> Project:
        """Open a project folder (or its ``project.json``).

        Raises
        ------
        ProjectError
            Missing or unreadable ``project.json``, wrong types, a newer format, slide paths
            escaping the folder, unsafe or duplicate slide ids, a bad class scheme.
        """
        r = Path(root).expanduser().absolute()
        if r.name == PROJECT_FILE and r.is_file():
            r = r.parent
        f = r / PROJECT_FILE
        if not r.is_dir():
            raise ProjectError(f"{r}: project folder not found")
        if not f.is_file():
            raise ProjectError(f"{r}: not a CRC Workbench project (no {PROJECT_FILE})")
        try:
            size = f.stat().st_size
            if size > MAX_PROJECT_BYTES:
                raise ProjectError(f"{f}: {size // 2**20} MiB is too large for a project file")
            doc = json.loads(f.read_bytes().decode("utf-8-sig"))
        except ProjectError:
            raise
        except OSError as exc:
            raise ProjectError(f"{f}: cannot read ({exc.strerror or exc})") from None
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ProjectError(
                f"{f}: not a valid project file ({type(exc).__name__}: {exc})"[:300]
            ) from None
        proj = cls._from_json(r, doc, str(f))
        proj.refresh()
        return proj

    @classmethod
    def _from_json(cls, root: Path, doc: Any, where: str) -> Project:
        if not isinstance(doc, dict):
            raise ProjectError(f"{where}: expected a JSON object")
        if doc.get("format") != PROJECT_KIND:
            raise ProjectError(
                f"{where}: not a CRC Workbench project file (format {doc.get('format')!r})"
            )
        version = doc.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ProjectError(f"{where}: 'version' must be a positive integer")
        if version > PROJECT_FORMAT:
            raise ProjectError(
                f"{where}: made by a newer CRC Workbench (project format {version}; this version reads "
                f"up to {PROJECT_FORMAT}); update CRC Workbench to open it"
            )
        try:
            scheme = ClassScheme.from_json(doc.get("classes"), where=f"{where}: classes")
        except ClassSchemeError as exc:
            raise ProjectError(str(exc)) from None
        name = doc.get("name", root.name)
        if not isinstance(name, str):
            raise ProjectError(f"{where}: 'name' must be a string")
        raw = doc.get("slides", [])
        if not isinstance(raw, list):
            raise ProjectError(f"{where}: 'slides' must be a list")
        slides: list[SlideEntry] = []
        seen: set[str] = set()
        for i, item in enumerate(raw):
            w = f"{where}: slide #{i + 1}"
            if not isinstance(item, dict):
                raise ProjectError(f"{w} must be an object")
            sid, spath = item.get("id"), item.get("path")
            if not isinstance(sid, str) or not isinstance(spath, str) or not spath:
                raise ProjectError(f"{w} needs 'id' and 'path' strings")
            if not _ID_RE.match(sid) or sid.lower() in _RESERVED_IDS or sid.endswith("."):
                raise ProjectError(
                    f"{w}: id {sid[:60]!r} is not a plain name (letters, digits, . _ -)"
                )
            if sid.casefold() in seen:
                raise ProjectError(f"{w}: id {sid!r} is used twice")
            seen.add(sid.casefold())
            spath = cls._check_recorded_path(spath, f"{w} ({sid})")
            sname = item.get("name", "")
            if not isinstance(sname, str):
                raise ProjectError(f"{w}: 'name' must be a string")
            notes = item.get("notes", "")
            added = item.get("added", "")
            entry = SlideEntry(
                sid,
                spath,
                sname or PurePosixPath(spath).stem,
                _check_mpp(item.get("mpp"), w),
                added if isinstance(added, str) else "",
                notes if isinstance(notes, str) else "",
            )
            cnt = item.get("annotation_count")
            if isinstance(cnt, int) and not isinstance(cnt, bool) and cnt >= 0:
                entry._count = cnt
            slides.append(entry)
        created = doc.get("created", "")
        known = {"format", "version", "name", "created", "classes", "slides"}
        extra = {k: v for k, v in doc.items() if k not in known}
        return cls(root, scheme, name, slides, created if isinstance(created, str) else "", extra)

    @staticmethod
    def _check_recorded_path(p: str, where: str) -> str:
        """Validate a path read from project.json: absolute, or relative staying inside the folder."""
        if "\x00" in p:
            raise ProjectError(f"{where}: path contains a NUL character")
        if _is_absolute(p):
            return p
        rel = p.replace("\\", "/")
        norm = posixpath.normpath(rel)
        if norm == ".." or norm.startswith("../") or norm == ".":
            raise ProjectError(
                f"{where}: path {p[:120]!r} leaves the project folder; relative slide paths must stay "
                "inside it (slides elsewhere are recorded by absolute path)"
            )
        return norm

    def _state_bytes(self) -> bytes:
        # Cached annotation counts are saved along but do not make the project dirty.
        doc = self.to_json()
        for s in doc["slides"]:
            s.pop("annotation_count", None)
        return json.dumps(doc, sort_keys=True).encode()

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = dict(self._extra)
        doc.update(
            {
                "format": PROJECT_KIND,
                "version": PROJECT_FORMAT,
                "name": self.name,
                "created": self.created,
                "classes": self.scheme.to_json(),
                "slides": [s.to_json() for s in self.slides],
            }
        )
        return doc

    @property
    def dirty(self) -> bool:
        """True when the class scheme, slide list or names changed since the last save/open."""
        return self._state_bytes() != self._saved_state

    def save(self) -> None:
        """Write ``project.json`` atomically (the previous one kept as ``project.json.bak``)."""
        data = json.dumps(self.to_json(), indent=2, ensure_ascii=False).encode("utf-8")
        self._write_with_backup(self.file, data)
        self._saved_state = self._state_bytes()

    @staticmethod
    def _write_with_backup(path: Path, data: bytes) -> None:
        try:
            if path.is_file():
                old = path.read_bytes()
                if old == data:
                    return
                atomic_write_bytes(path.with_name(path.name + ".bak"), old)
            atomic_write_bytes(path, data)
        except OSError as exc:
            raise ProjectError(
                f"{exc.filename or path}: cannot save ({exc.strerror or exc})"
            ) from None

    # ---------------------------------------------------------------- slides
    def _root_resolved(self) -> Path:
        return self.root.resolve()

    def slide_path(self, entry: SlideEntry) -> Path:
        """The slide's file path, resolved (symlinks followed).

        Raises
        ------
        ProjectError
            When a relative path leads out of the project folder (through ``..`` or a symlink).
        """
        if entry.is_absolute:
            return Path(entry.path)
        p = (self.root / self._check_recorded_path(entry.path, f"slide {entry.id}")).resolve()
        if not _within(p, self._root_resolved()):
            raise ProjectError(
                f"slide {entry.id}: path {entry.path!r} leads out of the project folder "
                f"(to {p}); refused. Add the slide again from its real location."
            )
        return p

    def refresh(self) -> list[SlideEntry]:
        """Re-check every slide file; return the entries that are not usable (missing, escaping)."""
        bad = []
        for e in self.slides:
            try:
                p = self.slide_path(e)
                e.exists = p.is_file()
                e.problem = "" if e.exists else f"slide file not found: {p}"
            except ProjectError as exc:
                e.exists, e.problem = False, str(exc)
            if not e.exists:
                bad.append(e)
        return bad

    def missing_slides(self) -> list[SlideEntry]:
        return [e for e in self.slides if not e.exists]

    def get_slide(self, id_or_name: str) -> SlideEntry:
        """The entry with this id, else this display name or file name."""
        for e in self.slides:
            if e.id == id_or_name:
                return e
        for e in self.slides:
            if e.name == id_or_name or PurePosixPath(e.path.replace("\\", "/")).name == id_or_name:
                return e
        raise ProjectError(f"no slide {id_or_name!r} in project {self.name!r}")

    def _record_path(self, path: Path) -> str:
        p = path.expanduser().resolve()
        root = self._root_resolved()
        if _within(p, root):
            return p.relative_to(root).as_posix()
        return str(p)

    def _new_id(self, stem: str) -> str:
        # ASCII only: ids name files on every platform ("Präparat 1" -> "praparat-1").
        ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", slugify(ascii_stem))[:100].strip("-._") or "slide"
        if not base[0].isalnum():
            base = "s" + base
        if base.lower() in _RESERVED_IDS:
            base = f"{base}-slide"
        used = {e.id.casefold() for e in self.slides}
        ann = self.root / ANNOTATIONS
        cand, n = base, 2
        # Never reuse an id whose annotation file is still there (from a removed slide).
        while cand.casefold() in used or (ann / f"{cand}.geojson").exists():
            cand = f"{base}-{n}"
            n += 1
        return cand

    def add_slide(
        self,
        path: str | Path,
        name: str | None = None,
        mpp: tuple[float, float] | float | None = None,
    ) -> SlideEntry:
        """Add a slide file: relative path when it lies under the project folder, else absolute.

        Raises
        ------
        ProjectError
            When the file does not exist or is already in the project.
        """
        p = Path(path).expanduser()
        if not p.is_file():
            raise ProjectError(f"{p}: slide file not found")
        rec = self._record_path(p)
        resolved = p.resolve()
        for e in self.slides:
            try:
                if self.slide_path(e) == resolved:
                    raise ProjectError(f"{p}: already in the project as {e.name!r}")
            except ProjectError as exc:
                if "already in the project" in str(exc):
                    raise
        entry = SlideEntry(
            self._new_id(p.stem),
            rec,
            name or p.stem,
            _check_mpp(list(mpp) if isinstance(mpp, tuple) else mpp, str(p)),
            _now(),
        )
        entry.exists, entry.problem = True, ""
        self.slides.append(entry)
        return entry

    def remove_slide(self, entry: SlideEntry | str) -> SlideEntry:
        """Take a slide off the list. Its annotation file stays on disk (and its id is not reused)."""
        e = self.get_slide(entry) if isinstance(entry, str) else entry
        if e not in self.slides:
            raise ProjectError(f"slide {e.id} is not in project {self.name!r}")
        self.slides.remove(e)
        return e

    def set_slide_path(self, entry: SlideEntry, path: str | Path) -> SlideEntry:
        """Point an entry at a new file (a moved or relocated slide); keeps id and annotations."""
        p = Path(path).expanduser()
        if not p.is_file():
            raise ProjectError(f"{p}: slide file not found")
        entry.path = self._record_path(p)
        entry.exists, entry.problem = True, ""
        return entry

    def set_mpp(self, entry: SlideEntry, mpp: tuple[float, float] | float | None) -> None:
        """Set or clear (None) the user's mpp override of one slide."""
        entry.mpp = _check_mpp(list(mpp) if isinstance(mpp, tuple) else mpp, f"slide {entry.id}")

    # ---------------------------------------------------------------- annotations
    def annotations_path(self, entry: SlideEntry) -> Path:
        """``annotations/<slide-id>.geojson``.

        Raises
        ------
        ProjectError
            When the id is not a plain name, or the folder or file is a symlink leading out of
            the project (a hostile project folder must not make us read or write elsewhere).
        """
        if not _ID_RE.match(entry.id):
            raise ProjectError(f"slide id {entry.id[:60]!r} is not a plain name")
        p = self.root / ANNOTATIONS / f"{entry.id}.geojson"
        if not _within(p.resolve(), self._root_resolved()):
            raise ProjectError(
                f"{p}: leads out of the project folder (to {p.resolve()}); refused. Replace the "
                "symlink by a real folder or file."
            )
        return p

    def load_annotations(
        self, entry: SlideEntry, slide_size: tuple[int, int] | None = None
    ) -> LoadResult:
        """The slide's annotations (empty when it has none yet).

        Unknown classes in the file are added to :attr:`scheme` (the project is then
        :attr:`dirty`; call :meth:`save`).

        Raises
        ------
        AnnotationError
            When the file is unreadable; it is left untouched, and the message names the
            ``.bak`` backup of the previous save when there is one.
        """
        p = self.annotations_path(entry)
        if not p.exists():
            entry._count, entry._count_stat = 0, None
            return LoadResult(AnnotationSet())
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise AnnotationError(f"{p}: cannot read ({exc.strerror or exc})") from None
        try:
            res = read_annotations_bytes(data, "geojson", self.scheme, slide_size, str(p))
        except AnnotationError as exc:
            bak = p.with_name(p.name + ".bak")
            hint = f"; the previous save is in {bak}" if bak.is_file() else ""
            raise AnnotationError(f"{exc}{hint}") from None
        self._written[entry.id] = hashlib.sha256(data).hexdigest()
        self._set_count(entry, p, len(res.annotations))
        return res

    def _set_count(self, entry: SlideEntry, p: Path, n: int) -> None:
        entry._count = n
        try:
            st = p.stat()
            entry._count_stat = (st.st_mtime_ns, st.st_size)
        except OSError:
            entry._count_stat = None

    def save_annotations(self, entry: SlideEntry, aset: AnnotationSet) -> bool:
        """Write the slide's annotations atomically (previous file kept as ``.bak``).

        Returns False (and writes nothing) when the content equals what is on disk, so the
        GUI can call it after every edit (:meth:`autosave`).
        """
        p = self.annotations_path(entry)
        cache = self._encoded.setdefault(entry.id, GeoJsonCache())
        data = annotations_to_bytes(aset, "geojson", self.scheme, cache)
        digest = hashlib.sha256(data).hexdigest()
        if self._written.get(entry.id) == digest and p.is_file():
            return False
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ProjectError(f"{p.parent}: cannot create ({exc.strerror or exc})") from None
        self._write_with_backup(p, data)
        self._written[entry.id] = digest
        self._set_count(entry, p, len(aset))
        return True

    def autosave(self, entry: SlideEntry, aset: AnnotationSet) -> bool:
        """Save after an edit: the annotations if they changed, and project.json if it is dirty.

        Returns True when anything was written.
        """
        wrote = self.save_annotations(entry, aset)
        if self.dirty:
            self.save()
            wrote = True
        return wrote

    def annotation_count(self, entry: SlideEntry) -> int:
        """Number of annotations of a slide, cheaply (cached; the file is only counted when it changed)."""
        try:
            p = self.annotations_path(entry)
            st = p.stat()
        except (FileNotFoundError, ProjectError):
            return 0
        except OSError:
            return entry._count or 0
        key = (st.st_mtime_ns, st.st_size)
        if entry._count is not None and (entry._count_stat is None or entry._count_stat == key):
            if entry._count_stat is None:
                entry._count_stat = key
            return entry._count
        n = _quick_count(p)
        entry._count, entry._count_stat = n, key
        return n

    def annotation_counts(self) -> dict[str, int]:
        """``{slide id: number of annotations}`` for the project panel."""
        return {e.id: self.annotation_count(e) for e in self.slides}

    def classes_in_use(self, open_sets: dict[str, AnnotationSet] | None = None) -> set[str]:
        """Ids (or, for classes not in the scheme, names) of classes used by any slide.

        ``open_sets`` maps slide ids to annotation sets being edited (they replace the files of
        those slides). Pass the result as ``in_use`` to :meth:`ClassScheme.remove`, so a class
        still used on any slide of the project cannot be removed.
        """
        open_sets = open_sets or {}
        used: set[str] = set()
        for aset in open_sets.values():
            used |= aset.classes_in_use()
        for e in self.slides:
            if e.id in open_sets:
                continue
            try:
                p = self.annotations_path(e)
            except ProjectError:
                continue
            for name in _class_names(p):
                c = self.scheme.find_name(name) or self.scheme.find(name)
                used.add(c.id if c is not None else name)
        return used


def _features(p: Path) -> list[Any]:
    try:
        doc = json.loads(p.read_bytes())
    except (OSError, ValueError, RecursionError):
        return []
    feats = doc.get("features") if isinstance(doc, dict) else doc
    if isinstance(doc, dict) and doc.get("type") == "Feature":
        feats = [doc]
    return feats if isinstance(feats, list) else []


def _class_names(p: Path) -> set[str]:
    """Class names used in a GeoJSON annotation file (empty when absent or unreadable)."""
    names: set[str] = set()
    for f in _features(p):
        props = f.get("properties") if isinstance(f, dict) else None
        cls = props.get("classification") if isinstance(props, dict) else None
        if isinstance(cls, dict) and isinstance(cls.get("name"), str):
            names.add(cls["name"])
        elif isinstance(cls, str):
            names.add(cls)
    return names


def _quick_count(p: Path) -> int:
    """Count annotation features in a GeoJSON without building geometries (0 when unreadable)."""
    n = 0
    for f in _features(p):
        if not isinstance(f, dict):
            continue
        props = f.get("properties") if isinstance(f.get("properties"), dict) else {}
        if str(props.get("objectType", "annotation")).lower() == "annotation":
            n += 1
    return n
