"""Labelled image tables: what ``crc train`` and ``crc evaluate`` read.

A *tile table* is a list of labelled image files with a group (slide, area, case) and an optional
given split. It is read from

- a dataset folder written by ``crc extract`` (``manifest.csv`` with ``path,label,slide,area_id,...,
  split`` and ``dataset.json`` holding the class scheme, patch size, level, mpp and the extraction
  settings): labels are class ids of that scheme, whose order (the project's) is kept;
- any CSV whose image paths are relative to the CSV file (``--image-column``, ``--label-column``,
  ``--group-column``, ``--split-column``; each guessed from common names when not given, the label
  column also from its values when the caller knows the class names to expect), e.g.
  ``../shared/data/ebhi/labels.csv``;
- a folder of images: one subfolder per class (``Normal/``, ``Adenoma/`` ...), or any folder of
  images with one ``label`` for all of them (``crc evaluate --label Adenocarcinoma``).

``classes`` keeps rows with these (raw) labels and ``mapping`` (``"A=B,C=B"``) merges labels.
Training needs two classes; evaluation accepts one (``min_classes=1``).
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crc_core.classes import ClassScheme
from crc_core.errors import ClassSchemeError, ConfigError, CrcError, DatasetError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}
# A group value that is an image file name: usually a per-tile id, not the slide or case.
_FILE_LIKE = re.compile(r"\.(png|jpe?g|tiff?|bmp|svs|ndpi|mrxs)$", re.IGNORECASE)
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                  "validation": "val", "test": "test", "testing": "test"}
IMAGE_COLUMNS = ("path", "image", "file", "filename", "file_name", "image_path", "filepath", "img")
LABEL_COLUMNS = ("label", "class", "class_name", "diagnosis", "category", "target")
GROUP_COLUMNS = ("slide", "case_id", "case", "group", "patient", "patient_id", "slide_id")

Warn = Callable[[str], None]


@dataclass
class Sample:
    """One labelled image: ``label`` indexes the table's class scheme."""

    path: Path
    label: int
    group: str
    split: str | None = None
    raw_label: str = ""


@dataclass
class TileTable:
    """Labelled images with their class scheme and the patch geometry (when known).

    ``root`` is the folder image paths are shown relative to (the CSV's folder or the image
    folder); ``source`` is the file or folder that was read.
    """

    samples: list[Sample]
    scheme: ClassScheme
    source: Path
    patch_size: int | None = None
    level: int | None = None
    mpp: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    root: Path | None = None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def base(self) -> Path:
        """Folder that image paths are relative to."""
        return self.root if self.root is not None else self.source.parent

    def counts(self, indices: Sequence[int] | None = None) -> dict[str, int]:
        """Images per class name (of the whole table or of ``indices``)."""
        idx = range(len(self.samples)) if indices is None else indices
        c = Counter(self.samples[i].label for i in idx)
        return {name: c.get(i, 0) for i, name in enumerate(self.scheme.names)}

    def subset(self, indices: Sequence[int]) -> TileTable:
        return TileTable([self.samples[i] for i in indices], self.scheme, self.source,
                         self.patch_size, self.level, self.mpp, dict(self.options), self.root)

    def relpath(self, i: int) -> str:
        """Sample ``i``'s path relative to :attr:`base` (POSIX), or absolute when outside it."""
        p = self.samples[i].path
        try:
            return p.relative_to(self.base).as_posix()
        except ValueError:
            return str(p)


def parse_classes(text: str | Sequence[str] | None) -> list[str] | None:
    """``"A,B,C"`` -> ``["A", "B", "C"]`` (None/empty -> None)."""
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    out = [s.strip() for s in items if s.strip()]
    return out or None


def parse_map(text: str | dict[str, str] | None) -> dict[str, str]:
    """``"A=B,C=B"`` -> ``{"A": "B", "C": "B"}``; :class:`ConfigError` on bad syntax."""
    if not text:
        return {}
    if isinstance(text, dict):
        return {str(k).strip(): str(v).strip() for k, v in text.items()}
    out: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        if item.count("=") != 1:
            raise ConfigError(f"--map item {item.strip()!r} is not OLD=NEW (e.g. \"A=B,C=B\")")
        old, new = (s.strip() for s in item.split("="))
        if not old or not new:
            raise ConfigError(f"--map item {item.strip()!r} has an empty side")
        out[old] = new
    return out


# ----------------------------------------------------------------------------- sources
@dataclass
class _Source:
    """What was found at the ``data`` path before its rows are read."""

    csv_path: Path | None
    info: dict[str, Any]
    scheme_hint: ClassScheme | None
    folder: Path | None = None     # a plain image folder (no CSV)


def _read_dataset_json(meta: Path) -> tuple[dict[str, Any], ClassScheme | None]:
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{meta}: not readable JSON ({exc})") from None
    if not isinstance(info, dict):
        raise DatasetError(f"{meta}: expected a JSON object")
    raw = info.get("classes", info.get("scheme"))
    if raw is None:
        return info, None
    try:
        return info, ClassScheme.from_json(raw, where=str(meta))
    except ClassSchemeError as exc:
        raise DatasetError(str(exc)) from None


def _locate(data: str | Path) -> _Source:
    src = Path(data)
    if src.is_file():
        meta = src.with_name("dataset.json")
        if src.name == "manifest.csv" and meta.is_file():   # a crc extract dataset's manifest
            return _Source(src, *_read_dataset_json(meta))
        return _Source(src, {}, None)
    if not src.is_dir():
        raise DatasetError(f"{src}: dataset not found (give a dataset folder, a CSV file or a "
                           f"folder of images)")
    csv_path = next((src / n for n in ("manifest.csv", "labels.csv") if (src / n).is_file()),
                    None)
    info: dict[str, Any] = {}
    hint = None
    if (src / "dataset.json").is_file():
        info, hint = _read_dataset_json(src / "dataset.json")
    if csv_path is None:
        return _Source(None, info, hint, folder=src)
    return _Source(csv_path, info, hint)


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            cols = list(reader.fieldnames or [])
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: not a readable CSV file ({exc})") from None
    if not cols:
        raise DatasetError(f"{path}: CSV file has no header row")
    return cols, rows


def _folder_rows(folder: Path, label: str | None) -> tuple[list[str], list[dict[str, str]]]:
    """Rows of an image folder: class subfolders, or every image with ``label``."""
    rows: list[dict[str, str]] = []
    if label is None:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for f in sorted(sub.rglob("*")):
                if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                    rows.append({"path": f.relative_to(folder).as_posix(), "label": sub.name})
        if not rows:
            raise DatasetError(
                f"{folder}: no manifest.csv or labels.csv, and no class subfolders with images; "
                f"give a dataset folder, a CSV file, a folder with one subfolder per class, or a "
                f"folder of images with --label CLASS")
    else:
        for f in sorted(folder.rglob("*")):
            if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                rows.append({"path": f.relative_to(folder).as_posix(), "label": label})
        if not rows:
            raise DatasetError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return ["path", "label"], rows


# ----------------------------------------------------------------------------- columns
def _pick(cols: list[str], wanted: str | None, defaults: Sequence[str], what: str, option: str,
          path: Path, required: bool = True) -> str | None:
    if wanted:
        if wanted not in cols:
            raise DatasetError(
                f"{path}: no column {wanted!r} ({option}); columns: {', '.join(cols)}")
        return wanted
    lower = {c.casefold(): c for c in cols}
    for d in defaults:
        if d.casefold() in lower:
            return lower[d.casefold()]
    if required:
        raise DatasetError(f"{path}: no {what} column; name it with {option} "
                           f"(columns: {', '.join(cols)})")
    return None


def _label_column_by_values(cols: list[str], rows: list[dict[str, str]],
                            hints: Sequence[str]) -> str | None:
    """The column whose values match most of ``hints`` (class names the caller expects)."""
    want = {h.strip().casefold() for h in hints if h.strip()}
    best, best_n = None, 0
    for c in cols:
        values = {(r.get(c) or "").strip().casefold() for r in rows}
        n = len(values & want)
        if n > best_n:
            best, best_n = c, n
    return best


def default_group_columns(data: str | Path) -> Sequence[str]:
    """The group columns :func:`load_table` tries, in order, for ``data`` (a ``crc extract``
    dataset split by area: ``area_id`` first); the plain defaults when ``data`` cannot be read."""
    try:
        return _default_group_columns(_locate(data).info)
    except CrcError:
        return GROUP_COLUMNS


def _default_group_columns(info: dict[str, Any]) -> Sequence[str]:
    """A ``crc extract`` dataset split by area validates by area; one split by slide by slide."""
    split_by = (info.get("config") or {}).get("split_by") if isinstance(info, dict) else None
    if split_by == "area":
        return ("area_id",) + GROUP_COLUMNS
    return GROUP_COLUMNS


@dataclass
class _Columns:
    image: str
    label: str
    group: str | None
    split: str | None


def _columns(cols: list[str], rows: list[dict[str, str]], where: Path, info: dict[str, Any],
             image_column: str | None, label_column: str | None, group_column: str | None,
             split_column: str | None, label_hints: Sequence[str]) -> _Columns:
    img = _pick(cols, image_column, IMAGE_COLUMNS, "image path", "--image-column", where)
    lab = _pick(cols, label_column, LABEL_COLUMNS, "label", "--label-column", where,
                required=not label_hints)
    if lab is None:
        lab = _label_column_by_values([c for c in cols if c != img], rows, label_hints)
        if lab is None:
            raise DatasetError(f"{where}: no label column (none is named {', '.join(LABEL_COLUMNS)}"
                               f" and none holds the class names {', '.join(label_hints)}); name "
                               f"it with --label-column (columns: {', '.join(cols)})")
    grp = _pick(cols, group_column, _default_group_columns(info), "group", "--group-column", where,
                required=False)
    spl = _pick(cols, split_column, ("split",), "split", "--split-column", where,
                required=bool(split_column))
    assert img is not None
    return _Columns(img, lab, grp, spl)


# ----------------------------------------------------------------------------- rows
@dataclass
class _Entries:
    items: list[tuple[Path, str, str, str | None, str]]   # path, label, group, split, raw label
    unmatched: list[str] = field(default_factory=list)
    file_like: list[str] = field(default_factory=list)
    empty: int = 0


def _group_of(value: str, pattern: re.Pattern[str] | None, out: _Entries) -> str:
    if value and pattern is not None:
        m = pattern.search(value)
        if m is None:
            out.unmatched.append(value)
            return value
        return m.group(1) if m.groups() and m.group(1) is not None else m.group(0)
    if value and _FILE_LIKE.search(value):
        out.file_like.append(value)
    return value


def _split_of(value: str, where: Path, row: int) -> str | None:
    v = value.strip().lower()
    if not v:
        return None
    if v not in _SPLIT_ALIASES:
        raise DatasetError(f"{where}: row {row}: split {v!r} is not train, val or test")
    return _SPLIT_ALIASES[v]


def _entries(rows: list[dict[str, str]], cols: _Columns, base: Path, where: Path,
             keep: list[str] | None, merge: dict[str, str],
             pattern: re.Pattern[str] | None) -> _Entries:
    out = _Entries([])
    for i, r in enumerate(rows):
        raw = (r.get(cols.label) or "").strip()
        rel = (r.get(cols.image) or "").strip()
        if not raw or not rel:
            out.empty += 1
            continue
        if keep and raw not in keep:
            continue
        p = Path(rel)
        p = p if p.is_absolute() else base / p
        group = _group_of((r.get(cols.group) or "").strip() if cols.group else "", pattern, out)
        split = _split_of(r.get(cols.split) or "", where, i + 2) if cols.split else None
        out.items.append((p, merge.get(raw, raw), group or f"row{i}", split, raw))
    return out


def _check_labels(present: set[str], keep: list[str] | None, merge: dict[str, str], where: Path,
                  column: str) -> None:
    if keep:
        unknown = [c for c in keep if c not in present]
        if unknown:
            raise DatasetError(f"{where}: --classes names {', '.join(map(repr, unknown))} not "
                               f"found in column {column!r} (labels: {', '.join(sorted(present))})")
    bad_map = [k for k in merge if k not in present]
    if bad_map:
        raise DatasetError(f"{where}: --map names {', '.join(map(repr, bad_map))} not found in "
                           f"column {column!r} (labels: {', '.join(sorted(present - {''}))})")


def _warn_entries(ent: _Entries, name: str, column: str | None, pattern: str | None,
                  warn: Warn) -> None:
    if ent.unmatched:
        warn(f"{name}: --group-pattern {pattern!r} does not match {len(ent.unmatched)} {column} "
             f"value(s), e.g. {ent.unmatched[0]!r}; those stay whole")
    if ent.file_like:
        warn(f"{name}: {len(set(ent.file_like))} {column} value(s) look like file names "
             f"(e.g. {ent.file_like[0]!r}): each is a group of its own, so tiles of one case may "
             f"straddle the split; --group-pattern (e.g. '\\d{{7}}') takes the case id out of them")
    if ent.empty:
        warn(f"{name}: {ent.empty} rows without an image path or label skipped")


# ----------------------------------------------------------------------------- classes
def _scheme(labels: set[str], keep: list[str] | None, merge: dict[str, str],
            hint: ClassScheme | None) -> tuple[ClassScheme, dict[str, int]]:
    """The table's scheme in the right order and each label's index.

    Order: ``--classes`` (after mapping), else the dataset's scheme (labels are matched to it by
    id or name: ``crc extract`` writes ids), else sorted labels.
    """
    if keep:
        order: list[str] = []
        for c in keep:
            m = merge.get(c, c)
            if m not in order:
                order.append(m)
        order = [o for o in order if o in labels] + sorted(labels - set(order))
    elif hint is not None:
        known = [c for c in hint if any(hint.find(lab) is c for lab in labels)]
        order = [c.id for c in known] + sorted(lab for lab in labels if hint.find(lab) is None)
    else:
        order = sorted(labels)
    scheme = ClassScheme([])
    index: dict[str, int] = {}
    for name in order:
        c = hint.find(name) if hint is not None else None
        if c is not None:
            scheme.add(c.name, color=c.color, key=c.key, id=c.id)
        else:
            scheme.add(name)
        index[name] = len(scheme) - 1
    if hint is not None:
        for lab in labels:
            c = hint.find(lab)
            if c is not None:
                index[lab] = scheme.index(c.id)
    return scheme, index


def load_table(
    data: str | Path,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    group_column: str | None = None,
    split_column: str | None = None,
    classes: str | Sequence[str] | None = None,
    mapping: str | dict[str, str] | None = None,
    group_pattern: str | None = None,
    label: str | None = None,
    label_hints: Sequence[str] = (),
    min_classes: int = 2,
    warn: Warn | None = None,
    need_groups: bool = True,
) -> TileTable:
    """Read a dataset folder, CSV manifest or image folder into a :class:`TileTable`.

    Parameters
    ----------
    data
        A ``crc extract`` dataset folder, a folder with ``labels.csv``/``manifest.csv``, a CSV file
        (image paths relative to it), or a folder of images (class subfolders, or ``label``).
    image_column, label_column, group_column, split_column
        Column names; guessed from common names when not given (see the module docstring).
    classes
        Raw labels to keep (others dropped), in the order of the resulting scheme.
    mapping
        ``"OLD=NEW,..."`` label merges applied after ``classes``.
    group_pattern
        Regular expression whose first match in the group value is the group (its first capturing
        group if it has one), e.g. ``\\d{7}`` for EBHI's case numbers.
    label
        Every image gets this label (a folder or CSV of images of one class).
    label_hints
        Class names the caller expects (e.g. a model's classes and its training map): used to find
        the label column by its values when no column has a usual name.
    min_classes
        Fewest classes accepted (2 for training, 1 for evaluation).
    warn
        Called with one line per problem that does not stop the job.
    need_groups
        ``False`` when the groups are not used (scoring): a missing group column is then not
        worth a warning.

    Raises
    ------
    DatasetError
        Missing file or column, no rows left, too few classes, unknown labels in ``classes``.
    """
    warn = warn or (lambda msg: None)
    found = _locate(data)
    if found.csv_path is not None:
        where = found.csv_path
        cols, rows = _read_csv(where)
        base = where.parent
        if label is not None:
            label_column = label_column or "__label__"
            cols = cols + ["__label__"]
            rows = [{**r, "__label__": label} for r in rows]
    else:
        assert found.folder is not None
        where = base = found.folder
        cols, rows = _folder_rows(found.folder, label)
    c = _columns(cols, rows, where, found.info, image_column, label_column, group_column,
                 split_column, label_hints)
    if c.group is None and need_groups:
        warn(f"{where.name}: no group column; each image is its own group (name the slide or case "
             f"column with --group-column so near-duplicate tiles never straddle the split)")
    try:
        pattern = re.compile(group_pattern) if group_pattern else None
    except re.error as exc:
        raise DatasetError(f"--group-pattern {group_pattern!r} is not a valid regular "
                           f"expression: {exc}") from None
    keep, merge = parse_classes(classes), parse_map(mapping)
    _check_labels({(r.get(c.label) or "").strip() for r in rows}, keep, merge, where, c.label)
    ent = _entries(rows, c, base, where, keep, merge, pattern)
    _warn_entries(ent, where.name, c.group, group_pattern, warn)
    if not ent.items:
        raise DatasetError(f"{where}: no images left (check --classes and the label column "
                           f"{c.label!r})")
    scheme, index = _scheme({e[1] for e in ent.items}, keep, merge, found.scheme_hint)
    if len(scheme) < min_classes:
        raise DatasetError(f"{where}: only one class ({scheme.names[0]!r}) in the data; training "
                           f"needs at least two")
    samples = [Sample(p, index[lab], g, s, raw) for p, lab, g, s, raw in ent.items]
    spl = c.split if c.split and any(s.split is not None for s in samples) else None
    options = {"image_column": c.image, "label_column": c.label, "group_column": c.group,
               "split_column": spl, "classes": keep, "map": merge or None,
               "group_pattern": group_pattern or None}
    info = found.info

    def num(key: str, cast: Callable[[Any], Any]) -> Any:
        try:
            return None if info.get(key) is None else cast(info[key])
        except (TypeError, ValueError):
            return None

    return TileTable(samples, scheme, where, num("patch_size", int), num("level", int),
                     num("mpp", float), options, root=base)
