"""Planning a patch dataset: settings, slide sources, window grids and random windows, the split.

Pure functions of geometry and settings (no file is written here); see :mod:`crc_core.patches`
for the method, units (level-0 pixels) and the dataset folder.
"""

from __future__ import annotations

import math
import os
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from crc_core.classes import ClassScheme
from crc_core.errors import ConfigError, DatasetError

DATASET_FORMAT = 1
MANIFEST_COLUMNS = [
    "path",
    "label",
    "slide",
    "area_id",
    "l0_x",
    "l0_y",
    "level",
    "size",
    "split",
    "gland_fraction",
    "tissue_fraction",
]
_JOURNAL_COLUMNS = ["key", "kept", "reason", "bytes", "gland_fraction", "tissue_fraction"]
_EXT = {"jpeg": ".jpg", "png": ".png"}
#: Classes that skip the gland filter unless the user says otherwise: poorly differentiated
#: adenocarcinoma is defined by its lack of gland formation, so a gland filter strips it.
DEFAULT_GLAND_EXEMPT: tuple[str, ...] = ("adc-poor",)
# Tissue fraction is measured on every 4th pixel of each axis: 9.4 ms -> 0.5 ms CPU per 400 px
# patch, within 0.07 of the full-resolution value on 20 real patches of cmu-1-small-region.svs.
_TISSUE_STEP = 4
_GLAND_BATCH = 16


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------


@dataclass
class ExtractConfig:
    """Settings of one dataset build (defaults follow the study).

    Parameters
    ----------
    patch_size : int
        Window side in pixels of the output patch (400).
    overlap : float
        Fraction of a window shared by consecutive grid windows, in [0, 1) (0.3 -> stride 280).
    level : int or None
        Pyramid level to read (0 when neither ``level`` nor ``mpp`` is given).
    mpp : float or None
        Target µm per pixel of the patches instead of a level (needs slides with mpp).
    min_inside : float
        Fraction of a window that must lie inside the area polygon, in (0, 1] (0.75).
    random : int
        Extra random windows tried per area (seeded; see module docstring).
    min_tissue, min_gland : float or None
        Drop windows whose tissue / gland fraction is below; ``None`` or 0 turns a filter off.
    gland_exempt : list of str or None
        Classes (ids or names) whose windows skip the gland filter; ``None``: the default,
        :data:`DEFAULT_GLAND_EXEMPT` (poorly differentiated adenocarcinoma, which by definition
        forms few glands: the filter would strip the class); ``[]``: every class is filtered.
    test_fraction : float
        Target fraction of each class's patches in the test split, in [0, 1).
    split_by : {"area", "slide"}
        Unit that goes entirely to train or to test.
    seed : int
        Seed of the random windows, the split and the caps.
    classes : list of str or None
        Class names or ids to include (all when ``None``).
    cap : int or None
        At most this many patches per class (train + test, split ratio kept), as Table 1 balances.
    workers : int
        Reader threads.
    format : {"jpeg", "png"}
    jpeg_quality : int
    """

    patch_size: int = 400
    overlap: float = 0.3
    level: int | None = None
    mpp: float | None = None
    min_inside: float = 0.75
    random: int = 10
    min_tissue: float | None = 0.5
    min_gland: float | None = 0.5
    gland_exempt: list[str] | None = None
    test_fraction: float = 0.2
    split_by: str = "area"
    seed: int = 0
    classes: list[str] | None = None
    cap: int | None = None
    workers: int = 4
    format: str = "jpeg"
    jpeg_quality: int = 95

    def validate(self) -> ExtractConfig:
        """Check ranges; return self. Raises :class:`ConfigError` naming the option."""

        def bad(opt: str, val: Any, accepted: str) -> ConfigError:
            return ConfigError(f"--{opt} {val!r} is out of range; accepted: {accepted}")

        if not isinstance(self.patch_size, int) or not 16 <= self.patch_size <= 8192:
            raise bad("patch-size", self.patch_size, "an integer 16-8192")
        if not 0.0 <= float(self.overlap) < 1.0:
            raise bad("overlap", self.overlap, "0 <= overlap < 1")
        if self.stride < 1:
            raise bad("overlap", self.overlap, "an overlap leaving a stride of at least 1 px")
        if self.level is not None and self.mpp is not None:
            raise ConfigError("--level and --mpp exclude each other; give one")
        if self.level is not None and (not isinstance(self.level, int) or self.level < 0):
            raise bad("level", self.level, "an integer >= 0")
        if self.mpp is not None and not (math.isfinite(self.mpp) and self.mpp > 0):
            raise bad("mpp", self.mpp, "a positive number of micrometres per pixel")
        if not 0.0 < float(self.min_inside) <= 1.0:
            raise bad("min-inside", self.min_inside, "0 < min_inside <= 1")
        if not isinstance(self.random, int) or self.random < 0:
            raise bad("random", self.random, "an integer >= 0")
        for opt, v in (("min-tissue", self.min_tissue), ("min-gland", self.min_gland)):
            if v is not None and not 0.0 <= float(v) <= 1.0:
                raise bad(opt, v, "a fraction in [0, 1] (0 turns the filter off)")
        if not 0.0 <= float(self.test_fraction) < 1.0:
            raise bad("test-fraction", self.test_fraction, "0 <= fraction < 1")
        if self.split_by not in ("area", "slide"):
            raise bad("split-by", self.split_by, "area or slide")
        if self.cap is not None and (not isinstance(self.cap, int) or self.cap < 1):
            raise bad("cap", self.cap, "an integer >= 1")
        if not isinstance(self.workers, int) or not 1 <= self.workers <= 64:
            raise bad("workers", self.workers, "an integer 1-64")
        if self.format not in _EXT:
            raise bad("format", self.format, "jpeg or png")
        if not 50 <= int(self.jpeg_quality) <= 100:
            raise bad("jpeg-quality", self.jpeg_quality, "50-100")
        return self

    @property
    def stride(self) -> int:
        """Grid step in output-patch pixels."""
        return int(round(self.patch_size * (1.0 - float(self.overlap))))

    @property
    def tissue_on(self) -> bool:
        return bool(self.min_tissue)

    @property
    def gland_on(self) -> bool:
        return bool(self.min_gland)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def exempt_ids(self, scheme: ClassScheme) -> list[str]:
        """Ids of the scheme's classes that skip the gland filter (see ``gland_exempt``)."""
        wanted = DEFAULT_GLAND_EXEMPT if self.gland_exempt is None else self.gland_exempt
        return [c.id for c in scheme if c.id in wanted or c.name in wanted]

    def window_key(self) -> dict[str, Any]:
        """Settings deciding which windows exist and what their files hold (resume must match)."""
        d = self.to_json()
        for k in ("test_fraction", "split_by", "classes", "cap", "workers"):
            d.pop(k)
        if not self.gland_on:
            d.pop("gland_exempt")
        d["min_tissue"] = float(self.min_tissue or 0.0)
        d["min_gland"] = float(self.min_gland or 0.0)
        return d


@dataclass
class SlideSource:
    """One slide and its annotated areas.

    ``annotations`` holds objects with ``id``, ``class_id`` and ``geometry`` (shapely, level-0 px),
    such as :class:`crc_core.annotations.Annotation`. ``name`` (default: file stem) names the slide
    in the manifest and in file names; it must be unique within a dataset. ``mpp`` overrides the
    file's µm per level-0 pixel (a project's user setting).
    """

    path: Path
    annotations: Sequence[Any]
    name: str | None = None
    mpp: float | tuple[float, float] | None = None


# ------------------------------------------------------------------------------------------------
# Window geometry (pure functions, level-0 pixels)
# ------------------------------------------------------------------------------------------------


def axis_positions(start: int, length: int, window: int, stride: int) -> list[int]:
    """Window starts along one axis of a box ``[start, start + length)``.

    Every ``stride`` from ``start``, with the last window flush with the far edge
    (``start + length - window``). Empty when ``length < window``.
    """
    if length < window or window <= 0 or stride <= 0:
        return []
    span = length - window
    n = -(-span // stride) + 1  # ceil(span / stride) + 1
    pos = [start + i * stride for i in range(n - 1)]
    pos.append(start + span)
    return pos


def _bbox_int(geom: BaseGeometry) -> tuple[int, int, int, int]:
    minx, miny, maxx, maxy = geom.bounds
    # Round inwards-tolerant: coordinates within 1e-6 of an integer snap to it.
    x0, y0 = math.floor(minx + 1e-6), math.floor(miny + 1e-6)
    x1, y1 = math.ceil(maxx - 1e-6), math.ceil(maxy - 1e-6)
    return x0, y0, x1, y1


def inside_fractions(geom: BaseGeometry, xy: np.ndarray, window: int) -> np.ndarray:
    """Fraction of each ``window``-sized square at top-lefts ``xy`` (n, 2) lying inside ``geom``."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if len(xy) == 0:
        return np.zeros(0)
    boxes = shapely.box(xy[:, 0], xy[:, 1], xy[:, 0] + window, xy[:, 1] + window)
    shapely.prepare(geom)
    frac = np.zeros(len(xy))
    full = shapely.contains_properly(geom, boxes)
    frac[full] = 1.0
    rest = ~full
    if rest.any():
        touching = np.zeros(len(xy), dtype=bool)
        touching[rest] = shapely.intersects(geom, boxes[rest])
        if touching.any():
            frac[touching] = shapely.area(shapely.intersection(boxes[touching], geom)) / float(
                window * window
            )
    return np.clip(frac, 0.0, 1.0)


def grid_windows(
    geom: BaseGeometry, window: int, stride: int, min_inside: float
) -> tuple[np.ndarray, int]:
    """Kept grid windows of an area and the number of grid positions tried.

    Returns
    -------
    xy : (n, 2) int64 array
        Top-left corners (level-0 px), row by row (y, then x) from the top left.
    tried : int
        Grid positions laid over the bounding box.
    """
    x0, y0, x1, y1 = _bbox_int(geom)
    xs = axis_positions(x0, x1 - x0, window, stride)
    ys = axis_positions(y0, y1 - y0, window, stride)
    if not xs or not ys:
        return np.zeros((0, 2), dtype=np.int64), 0
    gy, gx = np.meshgrid(np.asarray(ys), np.asarray(xs), indexing="ij")
    xy = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.int64)
    frac = inside_fractions(geom, xy, window)
    return xy[frac >= min_inside - 1e-9], len(xy)


def _overlap_fraction(xy: np.ndarray, others: np.ndarray, window: int) -> np.ndarray:
    """Largest overlap (intersection over union) of each window in ``xy`` with any of ``others``."""
    if len(others) == 0 or len(xy) == 0:
        return np.zeros(len(xy))
    dx = np.clip(window - np.abs(xy[:, None, 0] - others[None, :, 0]), 0, None)
    dy = np.clip(window - np.abs(xy[:, None, 1] - others[None, :, 1]), 0, None)
    inter = (dx * dy).max(axis=1).astype(np.float64)
    return inter / (2.0 * window * window - inter)


def random_windows(
    geom: BaseGeometry,
    window: int,
    n: int,
    min_inside: float,
    max_overlap: float,
    avoid: np.ndarray,
    rng: np.random.Generator,
    attempts_per_window: int = 50,
) -> np.ndarray:
    """Up to ``n`` windows at random integer positions inside the area's bounding box.

    Each is kept when at least ``min_inside`` of it lies in ``geom`` and it overlaps no window of
    ``avoid`` nor an earlier random window by more than ``max_overlap`` (intersection over union).
    Candidates are drawn in batches from ``rng``, so the result is a function of the seed.
    """
    x0, y0, x1, y1 = _bbox_int(geom)
    if n <= 0 or x1 - x0 < window or y1 - y0 < window:
        return np.zeros((0, 2), dtype=np.int64)
    chosen: list[np.ndarray] = []
    taken = np.asarray(avoid, dtype=np.int64).reshape(-1, 2)
    budget = n * attempts_per_window
    batch = max(64, 4 * n)
    while budget > 0 and len(chosen) < n:
        m = min(batch, budget)
        budget -= m
        cand = np.stack(
            [
                rng.integers(x0, x1 - window + 1, size=m),
                rng.integers(y0, y1 - window + 1, size=m),
            ],
            axis=1,
        ).astype(np.int64)
        ok = inside_fractions(geom, cand, window) >= min_inside - 1e-9
        cand = cand[ok]
        if len(cand):
            cand = cand[_overlap_fraction(cand, taken, window) <= max_overlap + 1e-9]
        for c in cand:  # sequential: each pick must respect the previous ones
            if len(chosen) >= n:
                break
            if _overlap_fraction(c[None, :], taken, window)[0] <= max_overlap + 1e-9:
                chosen.append(c)
                taken = np.vstack([taken, c[None, :]])
    return np.asarray(chosen, dtype=np.int64).reshape(-1, 2)


@dataclass
class AreaPlan:
    """Windows planned for one area.

    ``status`` is ``"ok"``, ``"clipped"`` (part of the area lay outside the slide), ``"small"``
    (no window fits: the area is smaller than a patch or too thin), or ``"outside"`` (nothing of the
    area is on the slide). ``message`` says it in words for the user.
    """

    grid: np.ndarray
    random: np.ndarray
    status: str
    message: str = ""
    tried: int = 0


def plan_area(
    geom: BaseGeometry,
    slide_size: tuple[int, int] | None,
    window: int,
    stride: int,
    min_inside: float,
    n_random: int,
    max_overlap: float,
    rng: np.random.Generator,
) -> AreaPlan:
    """Grid and random windows of one area (level-0 px); see :class:`AreaPlan` for the statuses."""
    empty = np.zeros((0, 2), dtype=np.int64)
    if geom is None or geom.is_empty:
        return AreaPlan(empty, empty, "small", "empty geometry")
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    status = "ok"
    msg = ""
    if slide_size is not None:
        w, h = slide_size
        inside = geom.intersection(box(0, 0, w, h))
        inside_polys = shapely.get_parts(inside)
        inside_polys = [g for g in inside_polys if g.area > 0]
        if not inside_polys:
            x0, y0, x1, y1 = geom.bounds
            return AreaPlan(
                empty,
                empty,
                "outside",
                f"area at ({x0:.0f}, {y0:.0f})-({x1:.0f}, {y1:.0f}) lies entirely outside the "
                f"slide (0, 0)-({w}, {h}); nothing to extract",
            )
        clipped = shapely.unary_union(inside_polys)
        if clipped.area < geom.area - 1e-6:
            status = "clipped"
            lost = 100.0 * (1.0 - clipped.area / geom.area)
            msg = f"{lost:.1f}% of the area lies outside the slide and was clipped"
        geom = clipped
    grid, tried = grid_windows(geom, window, stride, min_inside)
    rand = random_windows(geom, window, n_random, min_inside, max_overlap, grid, rng)
    if len(grid) == 0 and len(rand) == 0:
        x0, y0, x1, y1 = _bbox_int(geom)
        return AreaPlan(
            empty,
            empty,
            "small",
            f"no {window} px window fits {min_inside:.0%} inside this "
            f"{x1 - x0} x {y1 - y0} px area",
            tried,
        )
    return AreaPlan(grid, rand, status, msg, tried)


# ------------------------------------------------------------------------------------------------
# Split and caps
# ------------------------------------------------------------------------------------------------


def _rng(seed: int, *salt: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF] + [zlib.crc32(s.encode()) for s in salt])


def assign_split(
    groups: dict[str, dict[str, int]], test_fraction: float, seed: int
) -> dict[str, str]:
    """Assign each group (area or slide) wholly to ``"train"`` or ``"test"``, stratified by class.

    Parameters
    ----------
    groups : {group key: {class id: patch count}}
        An area has one class; a slide may have several.
    test_fraction : float
        Target share of each class's patches in test.
    seed : int

    Returns
    -------
    {group key: "train" | "test"}. Groups are visited in a seeded random order and moved to test
    while that brings every class's test share closer to the target; at least one group stays in
    train (a single group is all train).
    """
    keys = sorted(groups)
    out = {k: "train" for k in keys}
    if test_fraction <= 0 or len(keys) < 2:
        return out
    classes = sorted({c for g in groups.values() for c in g})
    total = {c: sum(groups[k].get(c, 0) for k in keys) for c in classes}
    target = {c: test_fraction * total[c] for c in classes}
    order = [keys[i] for i in _rng(seed, "split").permutation(len(keys))]
    test = dict.fromkeys(classes, 0)

    def cost(t: dict[str, int]) -> float:
        return sum(((t[c] - target[c]) / max(total[c], 1)) ** 2 for c in classes)

    # Per class, a class with >= 2 groups should not end with all of them in train or all in test.
    n_groups = {c: sum(1 for k in keys if groups[k].get(c, 0) > 0) for c in classes}
    n_train = {c: n_groups[c] for c in classes}
    for k in order:
        cand = {c: test[c] + groups[k].get(c, 0) for c in classes}
        leaves_train = all(
            n_train[c] - (1 if groups[k].get(c, 0) > 0 else 0) >= 1
            for c in classes
            if n_groups[c] >= 1 and groups[k].get(c, 0) > 0
        )
        if leaves_train and cost(cand) < cost(test) - 1e-12:
            out[k] = "test"
            test = cand
            for c in classes:
                if groups[k].get(c, 0) > 0:
                    n_train[c] -= 1
    # A class with >= 2 groups and none in test gets its smallest group moved (when that keeps
    # every class it touches in train).
    for c in classes:
        if n_groups[c] >= 2 and test[c] == 0:
            cands = sorted(
                (groups[k][c], k) for k in order if out[k] == "train" and groups[k].get(c, 0)
            )
            for _, k in cands:
                if all(n_train[cc] >= 2 for cc in classes if groups[k].get(cc, 0) > 0):
                    out[k] = "test"
                    for cc in classes:
                        if groups[k].get(cc, 0) > 0:
                            n_train[cc] -= 1
                            test[cc] += groups[k][cc]
                    break
    return out


# ------------------------------------------------------------------------------------------------
# Dataset writing helpers
# ------------------------------------------------------------------------------------------------


@dataclass
class AreaReport:
    """What happened to one area: planned windows and the reason when there were none."""

    slide: str
    area_id: str
    class_id: str
    status: str
    grid: int = 0
    random: int = 0
    kept: int = 0
    message: str = ""


@dataclass
class ExtractResult:
    """Return value of :func:`extract`."""

    out_dir: Path
    manifest: Path
    dataset_json: Path
    table: list[dict[str, Any]]
    totals: dict[str, int]
    areas: list[AreaReport]
    patches: int
    written: int
    reused: int
    dropped: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    complete: bool = True


@dataclass
class _Window:
    order: int
    slide_idx: int
    area_id: str
    class_id: str
    l0_x: int
    l0_y: int
    kind: str
    key: str  # relative path of its patch file


def _safe(name: str) -> str:
    s = re.sub(r"[^\w.-]+", "_", str(name), flags=re.ASCII).strip("._")
    return s[:80] or "x"


TABLE_COLUMNS = ("class", "slides", "areas", "train", "test", "total")


def table_rows(
    table: list[dict[str, Any]], totals: dict[str, Any], total_label: str = "total"
) -> list[tuple[Any, ...]]:
    """Table 1 as tuples in :data:`TABLE_COLUMNS` order: one per class, then the totals row."""
    rows = [tuple(r[c] for c in TABLE_COLUMNS) for r in table]
    rows.append((total_label, *(totals[c] for c in TABLE_COLUMNS[1:])))
    return rows


def format_table(table: list[dict[str, Any]], totals: dict[str, Any]) -> str:
    """Table-1 style text: one row per class, slides, areas, train, test, total patches."""
    head = TABLE_COLUMNS
    rows = table_rows(table, totals)
    w0 = max(len(head[0]), *(len(str(r[0])) for r in rows))
    lines = [f"{head[0]:<{w0}}  " + "  ".join(f"{h:>7}" for h in head[1:])]
    for r in rows:
        lines.append(f"{r[0]!s:<{w0}}  " + "  ".join(f"{v:>7}" for v in r[1:]))
    return "\n".join(lines)


class _Scale:
    """How windows of one slide are read: level, level-0 window/stride, read size, patch mpp."""

    def __init__(self, reader: Any, cfg: ExtractConfig) -> None:
        name = getattr(reader, "path", "slide")
        mpp = getattr(reader, "mpp", None)
        slide_mpp = None if mpp is None else (float(mpp[0]) + float(mpp[1])) / 2.0
        if cfg.mpp is not None:
            if slide_mpp is None:
                raise ConfigError(
                    f"{name}: the slide states no mpp, so --mpp {cfg.mpp} cannot be honoured; "
                    "use --level, or set the slide's mpp in the project"
                )
            ds = cfg.mpp / slide_mpp
            self.level = int(reader.best_level_for_downsample(ds))
            level_ds = float(reader.level_downsamples[self.level])
            self.window = max(1, int(round(cfg.patch_size * ds)))
            self.stride = max(1, int(round(cfg.stride * ds)))
            self.read_size = max(1, int(round(self.window / level_ds)))
            self.patch_mpp: float | None = float(cfg.mpp)
        else:
            level = 0 if cfg.level is None else int(cfg.level)
            if level >= reader.level_count:
                raise ConfigError(
                    f"{name}: --level {level} does not exist; the slide has levels "
                    f"0..{reader.level_count - 1}"
                )
            self.level = level
            ds = float(reader.level_downsamples[level])
            self.window = max(1, int(round(cfg.patch_size * ds)))
            self.stride = max(1, int(round(cfg.stride * ds)))
            self.read_size = cfg.patch_size
            self.patch_mpp = None if slide_mpp is None else slide_mpp * ds
        self.patch_size = cfg.patch_size


def sources_from_files(
    pairs: Iterable[tuple[str | os.PathLike[str], str | os.PathLike[str]]], scheme: ClassScheme
) -> tuple[list[SlideSource], list[str]]:
    """Slide sources from (slide path, annotation file) pairs; returns them and loader warnings.

    Unknown classes met in the files are added to ``scheme`` (see
    :func:`crc_core.annotations.load_annotations`).
    """
    from crc_core.annotations import load_annotations
    from crc_core.slide import open_slide

    out: list[SlideSource] = []
    warns: list[str] = []
    for slide, ann in pairs:
        with open_slide(slide) as r:
            size = tuple(r.dimensions)
        res = load_annotations(ann, scheme, slide_size=size)
        warns.extend(f"{ann}: {w}" for w in res.warnings)
        out.append(SlideSource(Path(slide), list(res.annotations)))
    return out, warns


def sources_from_project(
    project: Any,
    open_sets: Mapping[str, Iterable[Any]] | None = None,
    scheme: ClassScheme | None = None,
) -> tuple[list[SlideSource], list[str]]:
    """Slide sources for every slide of a :class:`crc_core.project.Project` that has annotations.

    ``open_sets`` maps a slide id to the annotations held in memory for it (the viewer's open
    document, edits not yet autosaved included): those are used instead of the slide's file.
    With ``scheme`` the other files are read with it (unknown classes are added to it) and the
    project is left as it is (no class added to its scheme, no cached count): a worker thread reads
    them with a copy of the scheme while the GUI thread owns the project.
    """
    from crc_core.annotations import load_annotations

    out: list[SlideSource] = []
    warns: list[str] = []
    open_sets = open_sets or {}
    for entry in project.slides:
        in_memory = open_sets.get(entry.id)
        if in_memory is None and not Path(project.annotations_path(entry)).exists():
            continue
        if not getattr(entry, "exists", True):
            warns.append(f"slide {entry.name!r} skipped: {entry.problem or 'file missing'}")
            continue
        if in_memory is not None:
            anns = list(in_memory)
        else:
            res = (project.load_annotations(entry) if scheme is None
                   else load_annotations(project.annotations_path(entry), scheme))
            warns.extend(f"{entry.name}: {w}" for w in res.warnings)
            anns = list(res.annotations)
        if anns:
            out.append(
                SlideSource(
                    Path(project.slide_path(entry)),
                    anns,
                    name=entry.id,
                    mpp=getattr(entry, "mpp", None),
                )
            )
    if not out:
        if warns:  # say why (missing slides, skipped outlines), not just "no annotations"
            raise DatasetError(
                f"{project.root}: no annotated slide can be used: {'; '.join(warns)}"
            )
        raise DatasetError(
            f"{project.root}: no slide of this project has annotations; draw areas first"
        )
    return out, warns
