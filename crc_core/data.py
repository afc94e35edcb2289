"""Training data: tile tables from `crc extract` datasets or CSV manifests, splits, tensor caches.

A *tile table* is a list of labelled image files with a group (slide, case) and an optional given
split. It is read from

- a dataset folder written by ``crc extract`` (``manifest.csv`` with ``path,label,slide,...,split``
  and ``dataset.json`` holding the class scheme, patch size, level and mpp), or
- any CSV whose image paths are relative to the CSV file (``--image-column``, ``--label-column``,
  ``--group-column``, ``--split-column``), e.g. ``../shared/data/ebhi/labels.csv`` with
  ``--label-column ebhi_class --group-column case_id``.

``--classes`` keeps rows with these (raw) labels and ``--map "A=B,C=B"`` merges labels. Splits are
made by group, never by row (tiles of one case are near-duplicates), seeded and stratified by each
group's majority label. Images are decoded once into a ``uint8`` tensor ``(N, 3, S, S)`` (on the GPU
when it fits); augmentation (:class:`Augment`: flips, 90-degree rotations, mild colour and HED stain
jitter) runs batch-wise on whatever device the batch is on. Unreadable images are skipped with a
warning and counted.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from crc_core.classes import ClassScheme
from crc_core.errors import ClassSchemeError, ConfigError, DatasetError
from crc_core.jobs import Progress

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}
# A group value that is an image file name: usually a per-tile id, not the slide or case.
_FILE_LIKE = re.compile(r"\.(png|jpe?g|tiff?|bmp|svs|ndpi|mrxs)$", re.IGNORECASE)
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                  "validation": "val", "test": "test", "testing": "test"}


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
    """Labelled images with their class scheme and the patch geometry (when known)."""

    samples: list[Sample]
    scheme: ClassScheme
    source: Path
    patch_size: int | None = None
    level: int | None = None
    mpp: float | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)

    def counts(self, indices: Sequence[int] | None = None) -> dict[str, int]:
        """Images per class name (of the whole table or of ``indices``)."""
        idx = range(len(self.samples)) if indices is None else indices
        c = Counter(self.samples[i].label for i in idx)
        return {name: c.get(i, 0) for i, name in enumerate(self.scheme.names)}

    def subset(self, indices: Sequence[int]) -> TileTable:
        return TileTable([self.samples[i] for i in indices], self.scheme, self.source,
                         self.patch_size, self.level, self.mpp, dict(self.options))


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


def _pick(cols: list[str], wanted: str | None, defaults: Sequence[str], what: str, option: str,
          path: Path, required: bool = True) -> str | None:
    if wanted:
        if wanted not in cols:
            raise DatasetError(
                f"{path}: no column {wanted!r} ({option}); columns: {', '.join(cols)}")
        return wanted
    for d in defaults:
        if d in cols:
            return d
    if required:
        raise DatasetError(f"{path}: no {what} column; name it with {option} "
                           f"(columns: {', '.join(cols)})")
    return None


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
    warn: Callable[[str], None] | None = None,
) -> TileTable:
    """Read a dataset folder or CSV manifest into a :class:`TileTable`.

    Parameters
    ----------
    data
        A ``crc extract`` dataset folder (``manifest.csv`` + ``dataset.json``), a folder with
        ``labels.csv`` or ``manifest.csv``, or a CSV file; image paths are relative to the CSV.
    image_column, label_column, group_column, split_column
        Column names (defaults: ``path``/``image``, ``label``, ``slide``/``case_id``/``group``,
        ``split`` when present and filled).
    classes
        Raw labels to keep (others dropped), in the order of the resulting scheme.
    mapping
        ``"OLD=NEW,..."`` label merges applied after ``classes``.
    group_pattern
        Regular expression whose first match in the group value is the group (its first
        capturing group if it has one), e.g. ``\\d{7}`` for EBHI's case numbers, whose
        ``GTDC…`` rows carry the whole file name as ``case_id``. Values it does not match stay
        whole (with a warning).
    warn
        Called with one line per problem that does not stop the job.

    Raises
    ------
    DatasetError
        Missing file or column, no rows left, a single class, unknown labels in ``classes``.
    """
    warn = warn or (lambda msg: None)
    src = Path(data)
    scheme_hint: ClassScheme | None = None
    info: dict[str, Any] = {}
    if src.is_dir():
        for name in ("manifest.csv", "labels.csv"):
            if (src / name).is_file():
                csv_path = src / name
                break
        else:
            raise DatasetError(f"{src}: no manifest.csv or labels.csv in this folder; give a "
                               f"dataset "
                               f"folder written by `crc extract` or a CSV file")
        meta = src / "dataset.json"
        if meta.is_file():
            try:
                info = json.loads(meta.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise DatasetError(f"{meta}: not readable JSON ({exc})") from None
            if not isinstance(info, dict):
                raise DatasetError(f"{meta}: expected a JSON object")
            raw_scheme = info.get("classes", info.get("scheme"))
            if raw_scheme is not None:
                try:
                    scheme_hint = ClassScheme.from_json(raw_scheme, where=str(meta))
                except ClassSchemeError as exc:
                    raise DatasetError(str(exc)) from None
    elif src.is_file():
        csv_path = src
    else:
        raise DatasetError(f"{src}: dataset not found (give a dataset folder or a CSV file)")

    cols, rows = _read_csv(csv_path)
    img_col = _pick(cols, image_column, ("path", "image", "file", "filename"), "image path",
                    "--image-column", csv_path)
    lab_col = _pick(cols, label_column, ("label", "class"), "label", "--label-column", csv_path)
    grp_col = _pick(cols, group_column, ("slide", "case_id", "group", "patient"), "group",
                    "--group-column", csv_path, required=False)
    spl_col = _pick(cols, split_column, ("split",), "split", "--split-column", csv_path,
                    required=bool(split_column))
    if grp_col is None:
        warn(f"{csv_path.name}: no group column; each image is its own group (name the slide or "
             f"case "
             f"column with --group-column so near-duplicate tiles never straddle the split)")
    pattern = None
    if group_pattern:
        try:
            pattern = re.compile(group_pattern)
        except re.error as exc:
            raise DatasetError(f"--group-pattern {group_pattern!r} is not a valid regular "
                               f"expression: {exc}") from None
    keep = parse_classes(classes)
    merge = parse_map(mapping)
    present = {(r.get(lab_col) or "").strip() for r in rows}
    if keep:
        unknown = [c for c in keep if c not in present]
        if unknown:
            raise DatasetError(f"{csv_path}: --classes names {', '.join(map(repr, unknown))} not "
                               f"found in column {lab_col!r} "
                               f"(labels: {', '.join(sorted(present))})")
    bad_map = [k for k in merge if k not in present]
    if bad_map:
        raise DatasetError(f"{csv_path}: --map names {', '.join(map(repr, bad_map))} not found in "
                           f"column {lab_col!r} (labels: {', '.join(sorted(present - {''}))})")

    entries: list[tuple[Path, str, str, str | None, str]] = []
    unmatched: list[str] = []
    file_like: list[str] = []
    empty_label = 0
    for i, r in enumerate(rows):
        raw = (r.get(lab_col) or "").strip()
        if not raw:
            empty_label += 1
            continue
        if keep and raw not in keep:
            continue
        rel = (r.get(img_col) or "").strip()
        if not rel:
            empty_label += 1
            continue
        p = Path(rel)
        p = p if p.is_absolute() else csv_path.parent / p
        group = (r.get(grp_col) or "").strip() if grp_col else ""
        if group and pattern is not None:
            m = pattern.search(group)
            if m is None:
                unmatched.append(group)
            else:
                group = m.group(1) if m.groups() and m.group(1) is not None else m.group(0)
        elif group and _FILE_LIKE.search(group):
            file_like.append(group)
        group = group or f"row{i}"
        split = None
        if spl_col:
            v = (r.get(spl_col) or "").strip().lower()
            if v:
                if v not in _SPLIT_ALIASES:
                    raise DatasetError(f"{csv_path}: row {i + 2}: split {v!r} is not train, val "
                                       f"or test")
                split = _SPLIT_ALIASES[v]
        entries.append((p, merge.get(raw, raw), group, split, raw))
    if unmatched:
        warn(f"{csv_path.name}: --group-pattern {group_pattern!r} does not match "
             f"{len(unmatched)} {grp_col} value(s), e.g. {unmatched[0]!r}; those stay whole")
    if file_like:
        warn(f"{csv_path.name}: {len(set(file_like))} {grp_col} value(s) look like file names "
             f"(e.g. {file_like[0]!r}): each is a group of its own, so tiles of one case may "
             f"straddle the split; --group-pattern (e.g. '\\d{{7}}') takes the case id out of them")
    if empty_label:
        warn(f"{csv_path.name}: {empty_label} rows without an image path or label skipped")
    if not entries:
        raise DatasetError(f"{csv_path}: no images left (check --classes and the label column "
                           f"{lab_col!r})")
    # Class order: --classes order (after mapping), else the dataset's scheme, else sorted.
    labels_present = {e[1] for e in entries}
    if keep:
        order: list[str] = []
        for c in keep:
            m = merge.get(c, c)
            if m not in order:
                order.append(m)
    elif scheme_hint is not None:
        order = [n for n in scheme_hint.names if n in labels_present]
        order += sorted(labels_present - set(order))
    else:
        order = sorted(labels_present)
    if len(order) < 2:
        raise DatasetError(f"{csv_path}: only one class ({order[0]!r}) in the data; training "
                           f"needs at least two")
    if scheme_hint is not None:
        scheme = ClassScheme([])
        for name in order:
            c = scheme_hint.find(name)
            if c is not None:
                scheme.add(c.name, color=c.color, key=c.key, id=c.id)
            else:
                scheme.add(name)
    else:
        scheme = ClassScheme.from_names(order)
    index = {n: i for i, n in enumerate(order)}
    samples = [Sample(p, index[lab], g, s, raw) for p, lab, g, s, raw in entries]
    if spl_col and all(s.split is None for s in samples):
        spl_col = None
    options = {"image_column": img_col, "label_column": lab_col, "group_column": grp_col,
               "split_column": spl_col, "classes": keep, "map": merge or None,
               "group_pattern": group_pattern or None}

    def _num(key: str, cast: Callable[[Any], Any]) -> Any:
        v = info.get(key)
        try:
            return None if v is None else cast(v)
        except (TypeError, ValueError):
            return None

    return TileTable(samples, scheme, csv_path, _num("patch_size", int), _num("level", int),
                     _num("mpp", float), options)


# ----------------------------------------------------------------------------- splits
@dataclass
class Split:
    train: list[int]
    val: list[int]
    test: list[int]


def split_by_group(table: TileTable, val_fraction: float = 0.2, seed: int = 0,
                   warn: Callable[[str], None] | None = None,
                   test_fraction: float = 0.0) -> Split:
    """Train/val/test indices: the given split column when present, else a seeded group split.

    Whole groups go to one side, stratified by each group's majority class so that every class with
    at least two groups is on both sides. ``val_fraction`` 0 gives an empty validation set.
    ``test_fraction`` > 0 keeps a further share of the groups out of training *and* of model
    selection (the validation set picks ``best.pt``; the test set reports it). The validation
    groups are drawn first, so a split without test groups is the same as before.
    """
    warn = warn or (lambda msg: None)
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"--val-fraction {val_fraction} must be in [0, 1)")
    if not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise ConfigError(f"--test-fraction {test_fraction} must be in [0, 1) and leave groups "
                          f"for training beside --val-fraction {val_fraction}")
    if any(s.split is not None for s in table.samples):
        tr = [i for i, s in enumerate(table.samples) if s.split in (None, "train")]
        va = [i for i, s in enumerate(table.samples) if s.split == "val"]
        te = [i for i, s in enumerate(table.samples) if s.split == "test"]
        if not tr:
            raise DatasetError(f"{table.source}: the split column marks no row as train")
        return Split(tr, va, te)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(table.samples):
        groups[s.group].append(i)
    if val_fraction == 0.0 and test_fraction == 0.0:
        return Split(list(range(len(table.samples))), [], [])
    if len(groups) < 2:
        raise DatasetError(f"{table.source}: only one group; a split by group needs at least two "
                           f"(or give --split-column, or --val-fraction 0)")
    by_class: dict[int, list[str]] = defaultdict(list)
    for g in sorted(groups):
        major = Counter(table.samples[i].label for i in groups[g]).most_common()
        # Ties broken by the rarer class, so small classes get groups of their own.
        major.sort(key=lambda kv: (-kv[1], kv[0]))
        by_class[major[0][0]].append(g)
    rng = random.Random(seed)
    val_groups: set[str] = set()
    test_groups: set[str] = set()
    for label in sorted(by_class):
        gs = by_class[label]
        rng.shuffle(gs)
        name = table.scheme.names[label]
        n = round(val_fraction * len(gs))
        if len(gs) >= 2 and val_fraction > 0:
            n = min(max(n, 1), len(gs) - 1)
        elif val_fraction > 0:
            n = 0
            warn(f"class {name!r} has a single group: it is kept for training only")
        val_groups.update(gs[:n])
        if test_fraction > 0:
            left = len(gs) - n - 1            # one group at least stays for training
            k = min(max(round(test_fraction * len(gs)), 1), left) if left > 0 else 0
            if k == 0 and len(gs) >= 2:
                warn(f"class {name!r} has {len(gs)} group(s): none is left for the test set")
            test_groups.update(gs[n:n + k])
    tr = [i for i, s in enumerate(table.samples)
          if s.group not in val_groups and s.group not in test_groups]
    va = [i for i, s in enumerate(table.samples) if s.group in val_groups]
    te = [i for i, s in enumerate(table.samples) if s.group in test_groups]
    return Split(tr, va, te)


# ----------------------------------------------------------------------------- decoding
def decode_image(path: Path, size: int) -> np.ndarray:
    """``(3, size, size)`` uint8 RGB (resized with antialiasing when the image is another size)."""
    with Image.open(path) as im:
        im.draft("RGB", (size, size))
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
        arr = np.asarray(im, dtype=np.uint8)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


@dataclass
class DecodedSet:
    """Images decoded into one uint8 tensor; ``kept`` maps rows back to table indices."""

    images: torch.Tensor           # (N, 3, S, S) uint8
    labels: torch.Tensor           # (N,) int64
    kept: list[int]                # table indices of the rows
    skipped: list[tuple[str, str]]  # (path, reason)


def decode_all(table: TileTable, indices: Sequence[int], size: int, workers: int = 0,
               device: str | torch.device = "cpu") -> Generator[Progress, None, DecodedSet]:
    """Decode ``indices`` of ``table`` once into a uint8 tensor (a job generator).

    Unreadable images are skipped (listed in ``skipped``), never fatal.
    """
    n = len(indices)
    images = torch.empty((n, 3, size, size), dtype=torch.uint8)
    ok = np.zeros(n, dtype=bool)
    skipped: list[tuple[str, str]] = []
    threads = max(1, workers or min(8, os.cpu_count() or 1))

    def one(j: int) -> tuple[int, str | None]:
        path = table.samples[indices[j]].path
        try:
            images[j] = torch.from_numpy(decode_image(path, size))
            return j, None
        except FileNotFoundError:
            return j, "file not found"
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            return j, f"unreadable image ({type(exc).__name__})"

    step = max(1, n // 50)
    with ThreadPoolExecutor(threads) as pool:
        for done, (j, err) in enumerate(pool.map(one, range(n)), 1):
            if err is None:
                ok[j] = True
            else:
                skipped.append((str(table.samples[indices[j]].path), err))
            if done % step == 0 or done == n:
                yield Progress(done, n, "decoding images")
    keep_j = np.flatnonzero(ok)
    kept = [indices[j] for j in keep_j]
    imgs = images[torch.from_numpy(keep_j)] if len(keep_j) < n else images
    labels = torch.tensor([table.samples[i].label for i in kept], dtype=torch.int64)
    return DecodedSet(imgs.to(device), labels.to(device), kept, skipped)


class TileDataset(torch.utils.data.Dataset):
    """Streaming dataset (decoded per item, for DataLoader workers).

    Items are ``(uint8 (3, S, S), label, index)``.

    Unreadable images yield a label of -1 and are dropped by :func:`collate_skip`.
    """

    def __init__(self, table: TileTable, indices: Sequence[int], size: int) -> None:
        self.table = table
        self.indices = list(indices)
        self.size = size

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, int, int]:
        s = self.table.samples[self.indices[j]]
        try:
            return torch.from_numpy(decode_image(s.path, self.size)), s.label, j
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return torch.zeros((3, self.size, self.size), dtype=torch.uint8), -1, j


def collate_skip(batch: list[tuple[torch.Tensor, int, int]]
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack a batch, dropping unreadable items (label -1)."""
    good = [b for b in batch if b[1] >= 0]
    bad = [b[2] for b in batch if b[1] < 0]
    if not good:
        return (torch.empty((0, 3, 1, 1), dtype=torch.uint8), torch.empty(0, dtype=torch.int64),
                torch.tensor(bad, dtype=torch.int64))
    return (torch.stack([b[0] for b in good]), torch.tensor([b[1] for b in good]),
            torch.tensor(bad, dtype=torch.int64))


def cache_bytes(n: int, size: int) -> int:
    return n * 3 * size * size


def choose_cache(n: int, size: int, device: torch.device, mode: str = "auto") -> str:
    """Where decoded images live: ``"gpu"``, ``"cpu"`` or ``"none"`` (stream from disk)."""
    if mode not in ("auto", "gpu", "cpu", "none"):
        raise ConfigError(f"cache mode {mode!r}: choose auto, gpu, cpu or none")
    need = cache_bytes(n, size)
    if mode != "auto":
        if mode == "gpu" and device.type != "cuda":
            raise ConfigError("--cache gpu needs a CUDA device")
        return mode
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        if need < 0.4 * free:
            return "gpu"
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        avail = 8 << 30
    return "cpu" if need < min(0.3 * avail, 32 << 30) else "none"


# ----------------------------------------------------------------------------- augmentation
# skimage.color's rgb<->hed matrices (Ruifrok & Johnston).
_RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED[2] = torch.linalg.cross(_RGB_FROM_HED[0], _RGB_FROM_HED[1])
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)


@dataclass
class Augment:
    """Batch augmentation on float ``(N, 3, H, W)`` images in [0, 1], on any device.

    Parameters
    ----------
    flip
        Random horizontal and vertical flips.
    rot90
        Random multiples of 90 degrees (square images).
    color
        Brightness, contrast and saturation factors drawn from ``1 ± color`` (0 = off).
    hed
        Stain jitter: each HED channel scaled by ``1 ± hed`` and shifted by ``± hed / 2`` in optical
        density (Tellez et al. 2018; 0 = off).
    """

    flip: bool = True
    rot90: bool = True
    color: float = 0.1
    hed: float = 0.03

    def to_json(self) -> dict[str, Any]:
        return {"flip": self.flip, "rot90": self.rot90, "color": self.color, "hed": self.hed}

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        n = x.shape[0]
        if n == 0:
            return x
        dev = x.device

        def u(*shape: int) -> torch.Tensor:
            return torch.rand(shape, generator=gen, device=gen.device if gen else dev).to(dev)

        if self.flip:
            x = torch.where((u(n) < 0.5).view(n, 1, 1, 1), x.flip(-1), x)
            x = torch.where((u(n) < 0.5).view(n, 1, 1, 1), x.flip(-2), x)
        if self.rot90 and x.shape[-1] == x.shape[-2]:
            k = (u(n) * 4).long().clamp_(max=3)
            out = x.clone()
            for r in (1, 2, 3):
                sel = (k == r).nonzero().flatten()
                if sel.numel():
                    out[sel] = torch.rot90(x[sel], r, dims=(-2, -1))
            x = out
        if self.hed > 0:
            a = 1 + (u(n, 3) * 2 - 1) * self.hed
            b = (u(n, 3) * 2 - 1) * self.hed / 2
            x = hed_jitter(x, a, b)
        if self.color > 0:
            c = self.color
            bright = (1 + (u(n) * 2 - 1) * c).view(n, 1, 1, 1)
            contrast = (1 + (u(n) * 2 - 1) * c).view(n, 1, 1, 1)
            sat = (1 + (u(n) * 2 - 1) * c).view(n, 1, 1, 1)
            x = x * bright
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * contrast + mean
            gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
            x = (x - gray) * sat + gray
            x = x.clamp(0, 1)
        return x


def hed_jitter(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Scale/shift the HED stain concentrations of ``x`` ((N,3,H,W) in [0,1]; (N,3) factors)."""
    log_adjust = math.log(1e-6)
    m_fwd = _HED_FROM_RGB.to(x.device, torch.float32)
    m_inv = _RGB_FROM_HED.to(x.device, torch.float32)
    xf = x.float().clamp(min=1e-6)
    od = torch.log(xf) / log_adjust                         # (N,3,H,W) optical density, >= 0
    stains = torch.einsum("nchw,cd->ndhw", od, m_fwd).clamp(min=0)
    stains = stains * scale.view(-1, 3, 1, 1) + shift.view(-1, 3, 1, 1)
    log_rgb = -(stains * -log_adjust)
    rgb = torch.exp(torch.einsum("ndhw,dc->nchw", log_rgb, m_inv))
    return rgb.clamp(0, 1).to(x.dtype)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel for ``(N, 3, H, W)`` float input in [0, 1]."""
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
