"""Patch datasets from annotated areas: sliding-window grid, random windows, filters, split,
writer.

This is Section 3.1 / Fig. 4 of the study made reproducible. For every annotated area (a polygon
and its class) a grid of square windows is laid over the area's bounding box, row by row from the
top left, with stride ``patch_size * (1 - overlap)``; the last row and column sit flush with the
far edge of the box so no strip of the area is skipped. A window is kept when at least
``min_inside`` of it lies inside the polygon. Extra windows at random positions (seeded) obey the
same rule and overlap no kept window (grid or earlier random) by more than ``overlap``, measured as
intersection over union (IoU, the usual overlap measure between two boxes). Two neighbouring grid
windows have an IoU of 0.18 at overlap 0.3, so random windows land off the grid, mostly near the
centres of grid cells (IoU 0.27 with each of the four windows around), and where the grid left gaps
at ragged edges; ``random`` is the number tried per area, fewer are placed when no room is left.
Windows are then filtered by tissue fraction and gland fraction (:mod:`crc_core.tissue`), split
into train and test by area or by slide (stratified by class, seeded, a group never in both),
optionally capped per class, and written to a dataset folder::

    OUT/dataset.json    config, class scheme, slide fingerprints, Table-1 counts, "complete"
    OUT/manifest.csv    path,label,slide,area_id,l0_x,l0_y,level,size,split,
                        gland_fraction,tissue_fraction
    OUT/patches/<class id>/<slide>__<area id>__x<l0_x>_y<l0_y>.jpg|.png
    OUT/.journal.csv    every window processed so far (kept or dropped): what a rerun resumes

Units and frames: geometry and window positions are **level-0 pixels** (``l0_x``, ``l0_y`` are the
window's top-left). At ``level`` L a window covers ``patch_size * downsample(L)`` level-0 pixels
and is read as ``patch_size`` pixels of level L; with a target ``mpp`` the nearest finer level is
read and resampled to ``patch_size``. ``label`` in the manifest is the class **id** of the scheme
stored in dataset.json (label index = position in that scheme). Empty ``gland_fraction`` /
``tissue_fraction`` cells mean the filter was off and the value was not computed.

Threading: windows are read, measured and encoded by a thread pool (OpenSlide, Pillow's codecs and
most of numpy release the GIL); at most ``max_in_flight`` patches are held in memory at once. The
gland model runs batched on the driving thread. :func:`extract` is a generator (see
:mod:`crc_core.jobs`): closing it cancels, leaving a folder marked incomplete that a rerun with the
same settings completes.

Patch format: JPEG quality 95 without chroma subsampling by default. Measured on 20 real 400 px
patches of cmu-1-small-region.svs (benchmarks/RESULTS.md): JPEG q95 4:4:4 is 68 KB, 0.95 ms to
encode, 1.6 ms to decode, PSNR 44.5 dB against the slide pixels (which are themselves JPEG); PNG is
lossless but 133 KB, 7.6 ms to encode (level 1) and 2.7 ms to decode, which would make encoding,
not reading, the bottleneck (a 400 px read costs about 4 ms). ``format="png"`` is there for
bit-exact patches."""

from __future__ import annotations

import concurrent.futures as cf
import csv
import errno
import io
import json
import math
import os
import re
import time
import zlib
from collections import Counter
from collections.abc import Generator, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from crc_core.atomic import atomic_write_text
from crc_core.classes import ClassScheme
from crc_core.errors import AnnotationError, ConfigError, DatasetError
from crc_core.jobs import Progress

__all__ = [
    "MANIFEST_COLUMNS",
    "AreaPlan",
    "AreaReport",
    "ExtractConfig",
    "ExtractResult",
    "SlideSource",
    "assign_split",
    "axis_positions",
    "extract",
    "format_table",
    "grid_windows",
    "inside_fractions",
    "plan_area",
    "random_windows",
    "read_manifest",
    "sources_from_files",
    "sources_from_project",
]

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

    def window_key(self) -> dict[str, Any]:
        """Settings deciding which windows exist and what their files hold (resume must match)."""
        d = self.to_json()
        for k in ("test_fraction", "split_by", "classes", "cap", "workers"):
            d.pop(k)
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


def _disk_full(exc: OSError, out_dir: Path, what: str) -> DatasetError:
    return DatasetError(
        f"{out_dir}: disk full while writing {what}; the dataset is marked incomplete; "
        "free some space and rerun the same command to resume"
    )


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


def _parse_frac(s: str) -> float | None:
    try:
        return float(s) if s != "" else None
    except ValueError:
        return None


def format_table(table: list[dict[str, Any]], totals: dict[str, Any]) -> str:
    """Table-1 style text: one row per class, slides, areas, train, test, total patches."""
    head = ("class", "slides", "areas", "train", "test", "total")
    rows = [(r["class"], r["slides"], r["areas"], r["train"], r["test"], r["total"]) for r in table]
    rows.append(
        (
            "total",
            totals["slides"],
            totals["areas"],
            totals["train"],
            totals["test"],
            totals["total"],
        )
    )
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


# ------------------------------------------------------------------------------------------------
# The job
# ------------------------------------------------------------------------------------------------


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


def extract(
    sources: Sequence[SlideSource],
    out_dir: str | os.PathLike[str],
    scheme: ClassScheme,
    config: ExtractConfig | None = None,
    *,
    max_in_flight: int | None = None,
    open_slide_fn: Any = None,
) -> Generator[Progress, None, ExtractResult]:
    """Build (or resume) a patch dataset in ``out_dir``; a job generator (see :mod:`crc_core.jobs`).

    Parameters
    ----------
    sources : sequence of :class:`SlideSource`
        Slides and their annotated areas.
    out_dir : path
        Dataset folder. Created if missing; a folder holding a dataset built with the same window
        settings is resumed (finished patches are checked and kept), one with other settings or
        foreign files is refused.
    scheme : ClassScheme
        Classes of the annotations; ``config.classes`` selects some of them.
    config : ExtractConfig
    max_in_flight : int, optional
        Patches held in memory at once (default ``4 * workers + 16``).
    open_slide_fn : callable, optional
        ``path -> SlideReader`` (default :func:`crc_core.slide.open_slide`).

    Yields
    ------
    Progress
        ``done``/``total`` windows, a message, and ``payload={"kept": n}``.

    Returns
    -------
    ExtractResult

    Raises
    ------
    ConfigError, DatasetError, SlideError
        Bad settings; a refused folder, no patch at all, or a full disk (folder left incomplete).
    """
    cfg = (config or ExtractConfig()).validate()
    out = Path(os.fspath(out_dir)).expanduser()
    if open_slide_fn is None:
        from crc_core.slide import open_slide as open_slide_fn
    _tissue: Any = None
    if cfg.tissue_on or cfg.gland_on:  # scikit-image / torch only when a filter needs them
        from crc_core import tissue as _tissue

    # --- classes ------------------------------------------------------------------------------
    if cfg.classes:
        include = [scheme.get(c).id for c in cfg.classes]
    else:
        include = list(scheme.ids)
    used_scheme = ClassScheme([c for c in scheme.classes if c.id in include]).copy()
    if not len(used_scheme):
        raise ConfigError("no class selected; --classes takes names or ids of the scheme's classes")

    # --- slides and plan ----------------------------------------------------------------------
    if not sources:
        raise DatasetError("no slides given; a dataset needs at least one annotated slide")
    readers: list[Any] = []
    pool: cf.ThreadPoolExecutor | None = None
    journal_fh = None
    on_cancel: Any = None  # journals patches already written when the job stops early
    warnings: list[str] = []
    created_out = False  # this run made the folder: if it fails before any patch, remove it
    finished = False
    try:
        names: list[str] = []
        slide_meta: list[dict[str, Any]] = []
        scales: list[_Scale] = []
        for src in sources:
            r = open_slide_fn(src.path)
            readers.append(r)
            if src.mpp is not None:
                r.set_mpp(src.mpp)
            base = _safe(src.name or Path(src.path).stem)
            name, n = base, 2
            while name in names:
                name, n = f"{base}-{n}", n + 1
            names.append(name)
            sc = _Scale(r, cfg)
            scales.append(sc)
            mpp = getattr(r, "mpp", None)
            slide_meta.append(
                {
                    "name": name,
                    "path": str(Path(src.path).resolve()),
                    "fingerprint": r.fingerprint(),
                    "fingerprint_method": "sha256 of size + first and last MiB",
                    "width": int(r.dimensions[0]),
                    "height": int(r.dimensions[1]),
                    "mpp": None if mpp is None else (float(mpp[0]) + float(mpp[1])) / 2.0,
                    "level": sc.level,
                    "window_l0": sc.window,
                }
            )

        ext = _EXT[cfg.format]
        windows: list[_Window] = []
        reports: list[AreaReport] = []
        seen_ids: set[tuple[int, str]] = set()
        for si, (src, r, sc) in enumerate(zip(sources, readers, scales, strict=False)):
            numbers: Counter[str] = Counter()  # "<class name> #<n>" for unnamed areas
            for ann in src.annotations:
                cdef = scheme.find(str(ann.class_id))
                cid = cdef.id if cdef else str(ann.class_id)
                numbers[cid] += 1
                if cid not in include:
                    continue
                cname = cdef.name if cdef else cid
                label = (getattr(ann, "name", "") or "").strip() or f"{cname} #{numbers[cid]}"
                aid = str(ann.id)
                if (si, aid) in seen_ids:
                    raise AnnotationError(f"{src.path}: two annotations share the id {aid!r}")
                seen_ids.add((si, aid))
                rng = _rng(cfg.seed, names[si], aid)
                plan = plan_area(
                    ann.geometry,
                    tuple(r.dimensions),
                    sc.window,
                    sc.stride,
                    cfg.min_inside,
                    cfg.random,
                    cfg.overlap,
                    rng,
                )
                rep = AreaReport(
                    names[si],
                    aid,
                    cid,
                    plan.status,
                    len(plan.grid),
                    len(plan.random),
                    message=plan.message,
                )
                reports.append(rep)
                if plan.status in ("outside", "small", "clipped"):
                    warnings.append(f"{names[si]}: area {label!r} ({cname}): {plan.message}")
                for kind, arr in (("grid", plan.grid), ("random", plan.random)):
                    for x, y in arr.tolist():
                        key = f"patches/{cid}/{names[si]}__{_safe(aid)}__x{x}_y{y}{ext}"
                        windows.append(
                            _Window(len(windows), si, aid, cid, int(x), int(y), kind, key)
                        )
        # A random window can coincide with another area's window of the same class: keep one.
        uniq: dict[str, _Window] = {}
        for w in windows:
            uniq.setdefault(w.key, w)
        windows = list(uniq.values())

        if not windows:
            sizes = ", ".join(sorted({f"{sc.window} px" for sc in scales}))
            raise DatasetError(
                f"no window fits any of the {len(reports)} selected areas (window {sizes} at "
                "level 0); draw larger areas, lower --patch-size or --min-inside, or choose "
                "other --classes"
            )

        # --- folder, resume ----------------------------------------------------------------------
        ds_json = out / "dataset.json"
        manifest = out / "manifest.csv"
        journal = out / ".journal.csv"
        key = cfg.window_key()
        if out.exists() and not out.is_dir():
            raise DatasetError(f"{out}: exists and is not a folder; choose a folder for --out")
        if out.exists() and any(out.iterdir()):
            if not ds_json.exists():
                raise DatasetError(
                    f"{out}: folder is not empty and holds no dataset.json; choose an empty or new "
                    "folder for --out (or the folder of an earlier run to resume it)"
                )
            try:
                old = json.loads(ds_json.read_text(encoding="utf-8"))
                old_key = old["window_config"]
            except (OSError, ValueError, KeyError, TypeError):
                raise DatasetError(
                    f"{ds_json}: unreadable dataset.json; choose another --out"
                ) from None
            diff = [
                f"{k} {old_key.get(k)!r} -> {v!r}" for k, v in key.items() if old_key.get(k) != v
            ]
            if diff:
                raise DatasetError(
                    f"{out}: holds a dataset built with other settings ({'; '.join(diff)}); "
                    "choose another --out or rerun with the same settings to resume"
                )
        created_out = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        for d in {str(Path(w.key).parent) for w in windows}:
            (out / d).mkdir(parents=True, exist_ok=True)
        for tmp in out.glob("patches/*/.*.tmp"):
            tmp.unlink(missing_ok=True)

        def write_json(
            complete: bool,
            table: list[dict[str, Any]] | None = None,
            totals: dict[str, Any] | None = None,
            extra: dict[str, Any] | None = None,
        ) -> None:
            doc = {
                "format": DATASET_FORMAT,
                "complete": complete,
                "created_by": "crc_core.patches.extract",
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "config": cfg.to_json(),
                "window_config": key,
                "label": "class id of the scheme below; label index = position in the scheme",
                "classes": used_scheme.to_json(),
                "slides": slide_meta,
                "manifest": manifest.name,
                "table": table,
                "totals": totals,
            }
            if extra:
                doc.update(extra)
            try:
                atomic_write_text(ds_json, json.dumps(doc, indent=2, ensure_ascii=False))
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise _disk_full(exc, out, ds_json.name) from None
                raise

        write_json(False)  # incomplete until the last line of this job
        done = _load_journal(journal)
        reused = 0
        todo: list[_Window] = []
        planned_keys = {w.key for w in windows}
        for w in windows:
            row = done.get(w.key)
            if row is not None and row["kept"] == "1":
                if _valid_patch(out / w.key, _int_or(row.get("bytes"), 0)):
                    reused += 1
                    continue
                del done[w.key]
            elif row is not None:
                continue  # dropped by a filter in an earlier run
            todo.append(w)
        new_journal = not journal.exists()
        try:
            _trim_partial_line(journal)
            journal_fh = open(journal, "a", newline="", encoding="utf-8")
            jw = csv.writer(journal_fh)
            if new_journal:
                jw.writerow(_JOURNAL_COLUMNS)
                journal_fh.flush()
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise _disk_full(exc, out, journal.name) from None
            raise

        def journal_row(
            k: str, kept: bool, reason: str, nbytes: int, gland: float | None, tissue: float | None
        ) -> None:
            row = {
                "key": k,
                "kept": "1" if kept else "0",
                "reason": reason,
                "bytes": str(nbytes),
                "gland_fraction": _fmt_frac(gland),
                "tissue_fraction": _fmt_frac(tissue),
            }
            try:
                jw.writerow([row[c] for c in _JOURNAL_COLUMNS])
                journal_fh.flush()  # type: ignore[union-attr]
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise _disk_full(exc, out, journal.name) from None
                raise
            done[k] = row

        # --- parallel read / measure / write ---------------------------------------------------
        total = len(windows)
        processed = len(windows) - len(todo)
        kept_n = sum(1 for w in windows if done.get(w.key, {}).get("kept") == "1")
        written = 0
        yield Progress(
            processed, total, f"{len(todo)} windows to read, {reused} reused", {"kept": kept_n}
        )
        limit = max_in_flight or (4 * cfg.workers + 16)
        limit = max(limit, _GLAND_BATCH + 2)
        pool = cf.ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="crc-extract")
        min_t = float(cfg.min_tissue or 0.0)
        min_g = float(cfg.min_gland or 0.0)

        def read_task(w: _Window) -> tuple[str, _Window, np.ndarray | None, float | None]:
            sc = scales[w.slide_idx]
            rgb = readers[w.slide_idx].read_region(
                (w.l0_x, w.l0_y), sc.level, (sc.read_size, sc.read_size)
            )
            if sc.read_size != sc.patch_size:
                from PIL import Image

                rgb = np.asarray(
                    Image.fromarray(rgb).resize(
                        (sc.patch_size, sc.patch_size), Image.Resampling.LANCZOS
                    )
                )
            tissue = None
            if cfg.tissue_on:
                tissue = _tissue.tissue_fraction(rgb[::_TISSUE_STEP, ::_TISSUE_STEP])
                if tissue < min_t:
                    return ("drop_tissue", w, None, tissue)
            if not cfg.gland_on:  # nothing left to decide: encode and write in this same task
                return write_task(w, rgb, tissue, None)
            return ("read", w, rgb, tissue)

        def write_task(
            w: _Window, rgb: np.ndarray, tissue: float | None, gland: float | None
        ) -> tuple[str, _Window, int, float | None, float | None]:
            data = _encode(rgb, cfg.format, cfg.jpeg_quality)
            try:
                _write_patch(out / w.key, data)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise _disk_full(exc, out, w.key) from None
                raise
            return ("written", w, len(data), tissue, gland)

        pending: set[cf.Future[Any]] = set()
        gland_batch: list[tuple[_Window, np.ndarray, float | None]] = []
        dropped = {"tissue": 0, "gland": 0}
        last_yield = 0.0

        def flush_gland() -> None:
            nonlocal processed
            if not gland_batch:
                return
            mpp_groups: dict[float | None, list[int]] = {}
            for i, (w, _, _) in enumerate(gland_batch):
                mpp_groups.setdefault(scales[w.slide_idx].patch_mpp, []).append(i)
            fracs = np.zeros(len(gland_batch))
            for mpp, idx in mpp_groups.items():
                fracs[idx] = _tissue.gland_fractions([gland_batch[i][1] for i in idx], mpp=mpp)
            for (w, rgb, tissue), g in zip(gland_batch, fracs, strict=False):
                g = float(g)
                if g < min_g:
                    dropped["gland"] += 1
                    journal_row(w.key, False, "gland", 0, g, tissue)
                    processed += 1
                else:
                    pending.add(pool.submit(write_task, w, rgb, tissue, g))  # type: ignore[union-attr]
            gland_batch.clear()

        def handle(res: tuple[Any, ...]) -> None:
            nonlocal kept_n, written, processed
            kind = res[0]
            if kind == "drop_tissue":
                dropped["tissue"] += 1
                journal_row(res[1].key, False, "tissue", 0, None, res[3])
                processed += 1
            elif kind == "read":
                _, w, rgb, tissue = res
                if cfg.gland_on:
                    gland_batch.append((w, rgb, tissue))
                    if len(gland_batch) >= _GLAND_BATCH:
                        flush_gland()
                else:
                    pending.add(pool.submit(write_task, w, rgb, tissue, None))  # type: ignore[union-attr]
            elif kind == "written":
                _, w, nbytes, tissue, gland = res
                journal_row(w.key, True, "", nbytes, gland, tissue)
                kept_n += 1
                written += 1
                processed += 1

        def drain_one() -> None:
            finished, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for f in finished:
                pending.discard(f)
                handle(f.result())

        def journal_finished() -> None:
            for f in list(pending):
                if f.done() and not f.cancelled() and f.exception() is None:
                    res = f.result()
                    if res[0] == "written":
                        handle(res)

        on_cancel = journal_finished
        it = iter(todo)
        exhausted = False
        while True:
            while not exhausted and len(pending) + len(gland_batch) < limit:
                w = next(it, None)
                if w is None:
                    exhausted = True
                    break
                pending.add(pool.submit(read_task, w))
            if pending:
                drain_one()
            elif gland_batch:
                flush_gland()
            else:
                break
            now = time.monotonic()
            if now - last_yield > 0.1:
                last_yield = now
                yield Progress(processed, total, f"{kept_n} patches kept", {"kept": kept_n})
        pool.shutdown(wait=True)
        pool = None
        journal_fh.close()
        journal_fh = None

        # --- manifest, split, caps, table ---------------------------------------------------------
        rows: list[dict[str, Any]] = []
        area_kept: dict[tuple[str, str], int] = {}
        for w in windows:
            row = done.get(w.key)
            if row is None or row["kept"] != "1":
                continue
            sname = names[w.slide_idx]
            rows.append(
                {
                    "path": w.key,
                    "label": w.class_id,
                    "slide": sname,
                    "area_id": w.area_id,
                    "l0_x": w.l0_x,
                    "l0_y": w.l0_y,
                    "level": scales[w.slide_idx].level,
                    "size": cfg.patch_size,
                    "split": "",
                    "gland_fraction": row["gland_fraction"],
                    "tissue_fraction": row["tissue_fraction"],
                }
            )
            area_kept[(sname, w.area_id)] = area_kept.get((sname, w.area_id), 0) + 1
        for rep in reports:
            rep.kept = area_kept.get((rep.slide, rep.area_id), 0)
        if not rows:
            raise DatasetError(
                f"{out}: no patch passed the rules ({len(windows)} windows planned in "
                f"{len(reports)} areas); check the areas' size against --patch-size, or lower "
                "--min-inside, --min-tissue or --min-gland"
            )
        group_of = (
            (lambda r: f"{r['slide']}/{r['area_id']}")
            if cfg.split_by == "area"
            else (lambda r: r["slide"])
        )
        groups: dict[str, dict[str, int]] = {}
        for r in rows:
            g = groups.setdefault(group_of(r), {})
            g[r["label"]] = g.get(r["label"], 0) + 1
        split = assign_split(groups, cfg.test_fraction, cfg.seed)
        if cfg.test_fraction > 0:
            for cid in used_scheme.ids:
                n_groups = sum(1 for g in groups.values() if g.get(cid))
                if n_groups == 1:
                    warnings.append(
                        f"class {used_scheme.get(cid).name}: one {cfg.split_by} only, so all its "
                        "patches are in train "
                        f"({'an area' if cfg.split_by == 'area' else 'a slide'} is never split "
                        "between train and test)"
                    )
        for r in rows:
            r["split"] = split[group_of(r)]
        if cfg.split_by == "slide" and len(groups) < 2 and cfg.test_fraction > 0:
            warnings.append("only one slide: with --split-by slide every patch is in train")
        if cfg.cap is not None:
            rng = _rng(cfg.seed, "cap")
            keep_idx: set[int] = set()
            for cid in used_scheme.ids:
                idx = [i for i, r in enumerate(rows) if r["label"] == cid]
                if len(idx) <= cfg.cap:
                    keep_idx.update(idx)
                    continue
                tr = [i for i in idx if rows[i]["split"] == "train"]
                te = [i for i in idx if rows[i]["split"] == "test"]
                n_te = int(round(cfg.cap * len(te) / len(idx)))
                n_tr = cfg.cap - n_te
                keep_idx.update(
                    rng.choice(tr, size=min(n_tr, len(tr)), replace=False).tolist() if tr else []
                )
                keep_idx.update(
                    rng.choice(te, size=min(n_te, len(te)), replace=False).tolist() if te else []
                )
            rows = [r for i, r in enumerate(rows) if i in keep_idx]

        table: list[dict[str, Any]] = []
        for cdef in used_scheme:
            rs = [r for r in rows if r["label"] == cdef.id]
            table.append(
                {
                    "class": cdef.name,
                    "class_id": cdef.id,
                    "slides": len({r["slide"] for r in rs}),
                    "areas": len({(r["slide"], r["area_id"]) for r in rs}),
                    "train": sum(1 for r in rs if r["split"] == "train"),
                    "test": sum(1 for r in rs if r["split"] == "test"),
                    "total": len(rs),
                }
            )
        totals = {
            "slides": len({r["slide"] for r in rows}),
            "areas": len({(r["slide"], r["area_id"]) for r in rows}),
            "train": sum(1 for r in rows if r["split"] == "train"),
            "test": sum(1 for r in rows if r["split"] == "test"),
            "total": len(rows),
        }
        buf = io.StringIO()
        mw = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        mw.writeheader()
        mw.writerows(rows)
        try:
            atomic_write_text(manifest, buf.getvalue())
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise _disk_full(exc, out, manifest.name) from None
            raise
        # Patches of windows no longer planned (edited areas, other classes) leave the folder.
        for k, row in list(done.items()):
            if k not in planned_keys and row["kept"] == "1":
                (out / k).unlink(missing_ok=True)
        dropped_all = {"tissue": 0, "gland": 0}
        for w in windows:
            row = done.get(w.key)
            if row is not None and row["kept"] == "0" and row["reason"] in dropped_all:
                dropped_all[row["reason"]] += 1
        write_json(
            True,
            table,
            totals,
            {
                "areas": [asdict(a) for a in reports],
                "windows": {
                    "planned": len(windows),
                    "dropped": dropped_all,
                    "kept": kept_n,
                    "in_manifest": len(rows),
                },
                "warnings": warnings,
            },
        )
        yield Progress(total, total, f"{len(rows)} patches in the dataset", {"kept": kept_n})
        finished = True
        return ExtractResult(
            out,
            manifest,
            ds_json,
            table,
            totals,
            reports,
            len(rows),
            written,
            reused,
            dropped_all,
            warnings,
            True,
        )
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            if on_cancel is not None and journal_fh is not None:
                try:
                    on_cancel()  # patches written but not yet journaled are kept for the rerun
                except Exception:  # noqa: BLE001 - never mask the reason the job stopped
                    pass
        if journal_fh is not None:
            try:
                journal_fh.close()
            except OSError:
                pass
        for r in readers:
            try:
                r.close()
            except Exception:  # noqa: BLE001 - closing must not mask the job's own error
                pass
        if created_out and not finished:
            _remove_if_no_patch(out)


def read_manifest(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Rows of a dataset's ``manifest.csv`` (all values as strings)."""
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except FileNotFoundError:
        raise DatasetError(f"{p}: manifest not found") from None


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


def sources_from_project(project: Any) -> tuple[list[SlideSource], list[str]]:
    """Slide sources for every slide of a :class:`crc_core.project.Project` that has annotations."""
    out: list[SlideSource] = []
    warns: list[str] = []
    for entry in project.slides:
        if not Path(project.annotations_path(entry)).exists():
            continue
        if not getattr(entry, "exists", True):
            warns.append(f"slide {entry.name!r} skipped: {entry.problem or 'file missing'}")
            continue
        res = project.load_annotations(entry)
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
