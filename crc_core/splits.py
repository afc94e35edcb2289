"""Train / validation / test splits by group, and the record of a split by image content.

Splits are made by group (slide, area or case), never by image: tiles of one case are
near-duplicates. :func:`split_by_group` draws validation (and optionally test) groups seeded and
stratified by each group's majority class. A table with a given split column (a ``crc extract``
dataset has train and test) keeps it, and when it holds no validation rows a validation share is
carved out of the *training* groups (never out of test), so every workflow selects its model on
images it did not train on.

A run records which images it trained, validated and tested on by **content**
(:class:`SplitRecord`: the size and a BLAKE2b hash of each file's bytes), not by path, so evaluation
recognises its test images after the dataset folder is moved, copied or renamed
(:func:`choose_subset`), and never scores a training image unless asked.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crc_core.errors import ConfigError, DatasetError
from crc_core.jobs import Progress
from crc_core.tables import TileTable

KEY_METHOD = "file size + BLAKE2b-64 of the file bytes"
ROLES = ("train", "val", "test")


@dataclass
class Split:
    """Table indices of each part; ``notes`` says how validation was made (for config.json)."""

    train: list[int]
    val: list[int]
    test: list[int]
    notes: list[str] = field(default_factory=list)


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"--val-fraction {val_fraction} must be in [0, 1)")
    if not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise ConfigError(f"--test-fraction {test_fraction} must be in [0, 1) and leave groups "
                          f"for training beside --val-fraction {val_fraction}")


def _groups_by_majority(table: TileTable, indices: Sequence[int]) -> dict[int, list[str]]:
    """Class index -> sorted group names whose majority class it is (ties go to the rarer)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i in indices:
        groups[table.samples[i].group].append(i)
    by_class: dict[int, list[str]] = defaultdict(list)
    for g in sorted(groups):
        major = Counter(table.samples[i].label for i in groups[g]).most_common()
        major.sort(key=lambda kv: (-kv[1], kv[0]))
        by_class[major[0][0]].append(g)
    return by_class


def _draw_groups(table: TileTable, indices: Sequence[int], val_fraction: float,
                 test_fraction: float, seed: int, warn: Callable[[str], None],
                 ) -> tuple[set[str], set[str]]:
    """Validation and test groups among ``indices``, per class (see :func:`split_by_group`)."""
    rng = random.Random(seed)
    val_groups: set[str] = set()
    test_groups: set[str] = set()
    by_class = _groups_by_majority(table, indices)
    for label in sorted(by_class):
        gs = by_class[label]
        rng.shuffle(gs)
        name = table.scheme.names[label]
        n = round(val_fraction * len(gs))
        if len(gs) >= 2 and val_fraction > 0:
            n = min(max(n, 1), len(gs) - 1)
        elif val_fraction > 0:
            n = 0
            warn(f"class {name!r} has a single group: it is kept for training only (no "
                 f"validation image of it)")
        val_groups.update(gs[:n])
        if test_fraction > 0:
            left = len(gs) - n - 1            # one group at least stays for training
            k = min(max(round(test_fraction * len(gs)), 1), left) if left > 0 else 0
            if k == 0 and len(gs) >= 2:
                warn(f"class {name!r} has {len(gs)} group(s): none is left for the test set")
            test_groups.update(gs[n:n + k])
    return val_groups, test_groups


def split_by_group(table: TileTable, val_fraction: float = 0.2, seed: int = 0,
                   warn: Callable[[str], None] | None = None,
                   test_fraction: float = 0.0) -> Split:
    """Train/val/test indices: the given split column when present, else a seeded group split.

    Whole groups go to one side, stratified by each group's majority class so that every class
    with at least two groups is on both sides. ``val_fraction`` 0 gives an empty validation set.
    ``test_fraction`` > 0 keeps a further share of the groups out of training *and* of model
    selection. With a given split column that has train rows but no validation rows, validation
    groups (``val_fraction`` of the training groups) are drawn from the training rows only.
    """
    warn = warn or (lambda msg: None)
    _check_fractions(val_fraction, test_fraction)
    if any(s.split is not None for s in table.samples):
        return _given_split(table, val_fraction, seed, warn)
    everything = list(range(len(table.samples)))
    if val_fraction == 0.0 and test_fraction == 0.0:
        return Split(everything, [], [], ["no validation set (--val-fraction 0)"])
    if len({s.group for s in table.samples}) < 2:
        raise DatasetError(f"{table.source}: only one group; a split by group needs at least two "
                           f"(or give --split-column, or --val-fraction 0)")
    val_g, test_g = _draw_groups(table, everything, val_fraction, test_fraction, seed, warn)
    sp = _assemble(table, everything, val_g, test_g)
    sp.notes.append((f"validation: {len(val_g)} {_group_word(table)} groups" if val_g else
                     f"no validation set: no class has two {_group_word(table)} groups to spare")
                    + (f"; test: {len(test_g)} groups" if test_g else ""))
    return sp


def _group_word(table: TileTable) -> str:
    return str(table.options.get("group_column") or "image")


def _assemble(table: TileTable, indices: Sequence[int], val_g: set[str],
              test_g: set[str]) -> Split:
    tr = [i for i in indices if table.samples[i].group not in val_g | test_g]
    va = [i for i in indices if table.samples[i].group in val_g]
    te = [i for i in indices if table.samples[i].group in test_g]
    return Split(tr, va, te)


def _given_split(table: TileTable, val_fraction: float, seed: int,
                 warn: Callable[[str], None]) -> Split:
    tr = [i for i, s in enumerate(table.samples) if s.split in (None, "train")]
    va = [i for i, s in enumerate(table.samples) if s.split == "val"]
    te = [i for i, s in enumerate(table.samples) if s.split == "test"]
    if not tr:
        raise DatasetError(f"{table.source}: the split column marks no row as train")
    if va:
        return Split(tr, va, te, ["validation: as given by the split column"])
    if val_fraction <= 0:
        return Split(tr, [], te, ["no validation set (--val-fraction 0)"])
    if len({table.samples[i].group for i in tr}) < 2:
        warn(f"{table.source.name}: the training part has a single {_group_word(table)}: no "
             f"validation set can be carved out of it")
        return Split(tr, [], te, [f"no validation set: one {_group_word(table)} in training"])
    val_g, _ = _draw_groups(table, tr, val_fraction, 0.0, seed, warn)
    sp = _assemble(table, tr, val_g, set())
    sp.test = te
    if not val_g:
        sp.notes.append(f"no validation set: no class has two {_group_word(table)} groups in the "
                        f"training part to spare one")
    else:
        sp.notes.append(f"validation: {len(val_g)} {_group_word(table)} group(s) carved out of "
                        f"the given training part (test untouched)")
    return sp


# ----------------------------------------------------------------------------- content record
def content_key(path: Path) -> str:
    """``"<size>-<blake2b-64 hex>"`` of a file's bytes (the identity of an image by content)."""
    h = hashlib.blake2b(digest_size=8)
    size = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return f"{size}-{h.hexdigest()}"


def content_keys(table: TileTable, indices: Sequence[int] | None = None, workers: int = 4,
                 ) -> Generator[Progress, None, list[str | None]]:
    """Content keys of ``indices`` (all rows by default); ``None`` for unreadable files (a job)."""
    idx = list(range(len(table))) if indices is None else list(indices)

    def one(i: int) -> str | None:
        try:
            return content_key(table.samples[i].path)
        except OSError:
            return None

    out: list[str | None] = []
    step = max(1, len(idx) // 50)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for k, key in enumerate(pool.map(one, idx), 1):
            out.append(key)
            if k % step == 0 or k == len(idx):
                yield Progress(k, len(idx), "identifying images by content")
    return out


@dataclass
class SplitRecord:
    """Which images (by content key) a run trained, validated and tested on."""

    train: set[str]
    val: set[str]
    test: set[str]
    method: str = KEY_METHOD

    def role(self, key: str | None) -> str | None:
        if key is None:
            return None
        for name in ROLES:
            if key in getattr(self, name):
                return name
        return None

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, **{r: sorted(getattr(self, r)) for r in ROLES}}

    @classmethod
    def from_json(cls, data: Any) -> SplitRecord | None:
        """The record stored in a checkpoint, or ``None`` when absent or not one."""
        if not isinstance(data, dict) or data.get("method") != KEY_METHOD:
            return None
        try:
            return cls(*(set(map(str, data.get(r) or [])) for r in ROLES))
        except TypeError:
            return None

    @classmethod
    def of(cls, keys: Sequence[str | None], split: Split) -> SplitRecord:
        """The record of ``split`` given the content keys of every table row."""
        def part(ix: Sequence[int]) -> set[str]:
            return {k for k in (keys[i] for i in ix) if k is not None}

        return cls(part(split.train), part(split.val), part(split.test))


def split_csv(table: TileTable, keys: Sequence[str | None], split: Split) -> str:
    """``split.csv`` of a run folder: path (relative to the data), size, key, split."""
    import csv
    import io

    role = {i: "train" for i in split.train}
    role.update({i: "val" for i in split.val})
    role.update({i: "test" for i in split.test})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "size", "key", "split"])
    for i in sorted(role):
        k = keys[i]
        w.writerow([table.relpath(i), k.split("-")[0] if k else "", k or "", role[i]])
    return buf.getvalue()


@dataclass
class Subset:
    """Rows chosen for scoring and a sentence saying how (for metrics.json and the report)."""

    name: str                 # test | val | unseen | all
    indices: list[int]
    how: str
    left_out: dict[str, int] = field(default_factory=dict)


def _count_roles(roles: Sequence[str | None], indices: Sequence[int]) -> dict[str, int]:
    c = Counter(roles[i] or "unseen" for i in indices)
    return {k: c[k] for k in (*ROLES, "unseen") if c.get(k)}


def choose_subset(record: SplitRecord | None, keys: Sequence[str | None], subset: str) -> Subset:
    """The rows to score for ``--subset`` (auto, test, val, all) given the run's record.

    ``auto``: the run's test images when the data holds any; else the images the run never saw
    (neither trained nor validated on); else its validation images (which chose the epoch: stated).
    A training image is never scored under ``auto``; when nothing else is left, or the checkpoint
    records no split, :class:`DatasetError` says so (``--subset all`` scores every image anyway).
    """
    everything = list(range(len(keys)))
    if record is None:
        if subset == "all":
            return Subset("all", everything, "every image (the checkpoint records no split, so "
                          "training images cannot be told apart)")
        raise DatasetError("the checkpoint records no split by content (trained by an older CRC "
                           "Workbench), so it cannot tell its training images from the others; "
                           "give --subset all to score every image anyway")
    roles = [record.role(k) for k in keys]
    counts = _count_roles(roles, everything)
    by = {r: [i for i in everything if roles[i] == r] for r in (*ROLES, None)}
    how = f"matched by content ({record.method}) against the split recorded in the checkpoint"
    if subset == "all":
        return Subset("all", everything, f"every image; {how}: {_describe(counts)}", {})
    if subset in ("test", "val"):
        if not by[subset]:
            raise DatasetError(f"none of these images is in the run's {subset} split ({how}: "
                               f"{_describe(counts)})")
        return Subset(subset, by[subset], f"the run's {subset} images, {how}",
                      _left_out(counts, subset))
    for name, rows in (("test", by["test"]), ("unseen", by[None]), ("val", by["val"])):
        if rows:
            note = (" (they chose the best epoch, so figures are optimistic)"
                    if name == "val" else "")
            what = {"test": "the run's test images", "unseen": "images the run never trained "
                    "or validated on", "val": "the run's validation images"}[name]
            return Subset(name, rows, f"{what}, {how}{note}", _left_out(counts, name))
    raise DatasetError(f"every image of this data was used to train the model ({_describe(counts)}"
                       f"); nothing is held out to score (--subset all scores them anyway)")


def _left_out(counts: dict[str, int], kept: str) -> dict[str, int]:
    return {k: v for k, v in counts.items() if k != kept}


def _describe(counts: dict[str, int]) -> str:
    names = {"train": "training", "val": "validation", "test": "test", "unseen": "unseen"}
    return ", ".join(f"{v} {names[k]}" for k, v in counts.items()) or "no images"
