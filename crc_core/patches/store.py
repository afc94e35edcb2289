"""The dataset folder on disk: patch files, the resume journal, dataset.json and the manifest.

Every write that can meet a full disk goes through :func:`on_disk_full`, which turns ENOSPC into
one :class:`~crc_core.errors.DatasetError` naming the file (the folder stays marked incomplete and
a rerun resumes it). Patch files and dataset.json are written whole or not at all (temporary file
and rename); the journal is appended line by line and a line cut by a kill is trimmed on resume.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from crc_core.atomic import atomic_write_text
from crc_core.classes import ClassScheme
from crc_core.errors import DatasetError
from crc_core.patches.plan import (
    _JOURNAL_COLUMNS,
    DATASET_FORMAT,
    MANIFEST_COLUMNS,
    ExtractConfig,
    _Window,
)


@contextmanager
def on_disk_full(out_dir: Path, what: str) -> Iterator[None]:
    """Turn a full disk (ENOSPC) met inside the block into a DatasetError naming ``what``."""
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DatasetError(
                f"{out_dir}: disk full while writing {what}; the dataset is marked incomplete; "
                "free some space and rerun the same command to resume"
            ) from None
        raise


def _remove_if_no_patch(out: Path) -> None:
    """Remove a dataset folder this run created when the run failed before writing any patch.

    A bad slide or annotation found at the start must leave nothing behind; once a patch exists
    the folder stays (marked incomplete) so that a rerun resumes it.
    """
    import shutil

    try:
        if any(p.is_file() and not p.name.startswith(".") for p in (out / "patches").rglob("*")):
            return
        shutil.rmtree(out, ignore_errors=True)
    except OSError:
        pass


def _valid_patch(path: Path, size: int) -> bool:
    """A patch file is whole: expected size and the format's end marker present."""
    try:
        st = path.stat()
        if st.st_size != size or size < 16:
            return False
        with open(path, "rb") as fh:
            fh.seek(-12, os.SEEK_END)
            tail = fh.read()
    except OSError:
        return False
    if path.suffix == ".png":
        return tail.endswith(b"IEND\xaeB`\x82")
    return tail.endswith(b"\xff\xd9")


def _encode(rgb: np.ndarray, fmt: str, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    img = Image.fromarray(np.ascontiguousarray(rgb))
    if fmt == "png":
        img.save(buf, format="PNG", compress_level=1)
    else:
        img.save(buf, format="JPEG", quality=int(quality), subsampling=0)
    return buf.getvalue()


def _write_patch(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def _fmt_frac(v: float | None) -> str:
    return "" if v is None else f"{v:.4f}"


def _int_or(text: str | None, default: int) -> int:
    try:
        return int(text or default)
    except ValueError:
        return default


def _trim_partial_line(path: Path) -> None:
    """Cut a last line left without its newline by a kill, so appended rows start clean."""
    if not path.exists():
        return
    with open(path, "rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        back = min(size, 1 << 16)
        fh.seek(size - back)
        tail = fh.read(back)
        cut = tail.rfind(b"\n")
        fh.truncate(size - back + cut + 1 if cut >= 0 else 0)


def _load_journal(path: Path) -> dict[str, dict[str, str]]:
    done: dict[str, dict[str, str]] = {}
    if not path.exists():
        return done
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            # A line cut by a kill lacks fields: ignore it (the window is simply redone).
            if (
                not row.get("key")
                or row.get("tissue_fraction") is None
                or row.get("kept") not in ("0", "1")
            ):
                continue
            done[row["key"]] = row
    return done


def read_manifest(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Rows of a dataset's ``manifest.csv`` (all values as strings)."""
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except FileNotFoundError:
        raise DatasetError(f"{p}: manifest not found") from None


class Journal:
    """``.journal.csv``: every window processed so far, kept or dropped; what a rerun resumes.

    ``done`` maps a window's key (its patch path) to its row (all values strings).
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out / ".journal.csv"
        self.done = _load_journal(self.path)
        self._fh: Any = None
        self._writer: Any = None

    def todo(self, windows: list[_Window]) -> tuple[list[_Window], int]:
        """Windows still to process and the number of finished patches reused.

        A journaled patch whose file is not whole is forgotten and redone; a window dropped by a
        filter in an earlier run stays dropped.
        """
        reused = 0
        todo: list[_Window] = []
        for w in windows:
            row = self.done.get(w.key)
            if row is not None and row["kept"] == "1":
                if _valid_patch(self.out / w.key, _int_or(row.get("bytes"), 0)):
                    reused += 1
                    continue
                del self.done[w.key]
            elif row is not None:
                continue
            todo.append(w)
        return todo, reused

    def kept(self, key: str) -> bool:
        return self.done.get(key, {}).get("kept") == "1"

    def open(self) -> None:
        new = not self.path.exists()
        with on_disk_full(self.out, self.path.name):
            _trim_partial_line(self.path)
            self._fh = open(self.path, "a", newline="", encoding="utf-8")
            self._writer = csv.writer(self._fh)
            if new:
                self._writer.writerow(_JOURNAL_COLUMNS)
                self._fh.flush()

    @property
    def is_open(self) -> bool:
        return self._fh is not None

    def add(
        self,
        key: str,
        kept: bool,
        reason: str,
        nbytes: int,
        gland: float | None,
        tissue: float | None,
    ) -> None:
        row = {
            "key": key,
            "kept": "1" if kept else "0",
            "reason": reason,
            "bytes": str(nbytes),
            "gland_fraction": _fmt_frac(gland),
            "tissue_fraction": _fmt_frac(tissue),
        }
        with on_disk_full(self.out, self.path.name):
            self._writer.writerow([row[c] for c in _JOURNAL_COLUMNS])
            self._fh.flush()
        self.done[key] = row

    def close(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            fh.close()


def _only_leftovers(out: Path) -> bool:
    """True when ``out`` holds nothing but folders and temporary ``.*.tmp`` files: what a run
    killed between making its class folders and writing its first dataset.json leaves."""
    return all(p.is_dir() or (p.name.startswith(".") and p.name.endswith(".tmp"))
               for p in out.rglob("*"))


class DatasetFolder:
    """The output folder: refused when it holds something else, resumed when it holds the same
    dataset (same window settings); writes its ``dataset.json``, ``manifest.csv`` and patches."""

    def __init__(self, out: Path, cfg: ExtractConfig) -> None:
        self.out = out
        self.cfg = cfg
        self.key = cfg.window_key()
        self.ds_json = out / "dataset.json"
        self.manifest = out / "manifest.csv"
        self.created = False  # this run made the folder: if it fails before any patch, remove it

    def check(self) -> None:
        """Refuse a folder that is not this dataset's (no dataset.json, other window settings)."""
        out, ds_json = self.out, self.ds_json
        if out.exists() and not out.is_dir():
            raise DatasetError(f"{out}: exists and is not a folder; choose a folder for --out")
        if not (out.exists() and any(out.iterdir())):
            return
        if not ds_json.exists() and _only_leftovers(out):
            return  # a run killed before its first dataset.json: folders and temp files only
        if not ds_json.exists():
            raise DatasetError(
                f"{out}: folder is not empty and holds no dataset.json; choose an empty or new "
                "folder for --out (or the folder of an earlier run to resume it)"
            )
        try:
            old_key = json.loads(ds_json.read_text(encoding="utf-8"))["window_config"]
        except (OSError, ValueError, KeyError, TypeError):
            raise DatasetError(
                f"{ds_json}: unreadable dataset.json; choose another --out"
            ) from None
        diff = [
            f"{k} {old_key.get(k)!r} -> {v!r}" for k, v in self.key.items() if old_key.get(k) != v
        ]
        if diff:
            raise DatasetError(
                f"{out}: holds a dataset built with other settings ({'; '.join(diff)}); "
                "choose another --out or rerun with the same settings to resume"
            )

    def prepare(self, windows: list[_Window]) -> None:
        """Make the folder and the class folders; remove files a kill left half-written."""
        self.check()
        self.created = not self.out.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        for d in {str(Path(w.key).parent) for w in windows}:
            (self.out / d).mkdir(parents=True, exist_ok=True)
        for pattern in (".*.tmp", "patches/*/.*.tmp"):
            for tmp in self.out.glob(pattern):
                tmp.unlink(missing_ok=True)

    def write_json(
        self,
        complete: bool,
        used_scheme: ClassScheme,
        slide_meta: list[dict[str, Any]],
        table: list[dict[str, Any]] | None = None,
        totals: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        doc = {
            "format": DATASET_FORMAT,
            "complete": complete,
            "created_by": "crc_core.patches.extract",
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": self.cfg.to_json(),
            "window_config": self.key,
            "label": "class id of the scheme below; label index = position in the scheme",
            "classes": used_scheme.to_json(),
            "slides": slide_meta,
            "manifest": self.manifest.name,
            "table": table,
            "totals": totals,
        }
        if extra:
            doc.update(extra)
        with on_disk_full(self.out, self.ds_json.name):
            atomic_write_text(self.ds_json, json.dumps(doc, indent=2, ensure_ascii=False))

    def write_manifest(self, rows: list[dict[str, Any]]) -> None:
        buf = io.StringIO()
        mw = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        mw.writeheader()
        mw.writerows(rows)
        with on_disk_full(self.out, self.manifest.name):
            atomic_write_text(self.manifest, buf.getvalue())

    def write_patch(self, key: str, data: bytes) -> None:
        with on_disk_full(self.out, key):
            _write_patch(self.out / key, data)
