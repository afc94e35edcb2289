"""The extraction job: plan the windows, journal them, read / filter / write them in parallel, then
write the manifest with its split. Each phase is a function; :func:`extract` joins them.

Threading: windows are read, measured and encoded by a thread pool; the gland model runs batched
on the driving thread (see :mod:`crc_core.patches`).
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import time
from collections import Counter
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crc_core.classes import ClassScheme
from crc_core.errors import AnnotationError, ConfigError, DatasetError
from crc_core.jobs import Event, JobWarning, Progress
from crc_core.patches.plan import (
    _EXT,
    _GLAND_BATCH,
    _TISSUE_STEP,
    AreaReport,
    ExtractConfig,
    ExtractResult,
    SlideSource,
    _rng,
    _safe,
    _Scale,
    _Window,
    assign_split,
    plan_area,
)
from crc_core.patches.store import (
    DatasetFolder,
    Journal,
    _encode,
    _remove_if_no_patch,
)


@dataclass
class _Plan:
    """What the job will do: the slides (unique names, scales, metadata) and their windows."""

    used_scheme: ClassScheme
    names: list[str] = field(default_factory=list)
    scales: list[_Scale] = field(default_factory=list)
    slide_meta: list[dict[str, Any]] = field(default_factory=list)
    windows: list[_Window] = field(default_factory=list)
    reports: list[AreaReport] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def extract(
    sources: Sequence[SlideSource],
    out_dir: str | os.PathLike[str],
    scheme: ClassScheme,
    config: ExtractConfig | None = None,
    *,
    max_in_flight: int | None = None,
    open_slide_fn: Any = None,
) -> Generator[Event, None, ExtractResult]:
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
    Progress, JobWarning
        ``done``/``total`` windows, a message, and ``payload={"kept": n}``; a
        :class:`~crc_core.jobs.JobWarning` per area skipped or clipped and per class a split
        cannot hold (also kept in ``ExtractResult.warnings`` and ``dataset.json``).

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
    used_scheme = _selected_classes(scheme, cfg)
    if not sources:
        raise DatasetError("no slides given; a dataset needs at least one annotated slide")
    readers: list[Any] = []
    folder = DatasetFolder(out, cfg)
    journal: Journal | None = None
    finished = False
    try:
        plan = _plan(sources, scheme, used_scheme, cfg, open_slide_fn, readers)
        yield from map(JobWarning, plan.warnings)
        said = len(plan.warnings)
        folder.prepare(plan.windows)
        folder.write_json(False, used_scheme, plan.slide_meta)  # incomplete until the very end
        journal = Journal(out)
        todo, reused = journal.todo(plan.windows)
        journal.open()
        pipeline = _Pipeline(cfg, plan, readers, folder, journal, max_in_flight,
                             exempt=set(cfg.exempt_ids(used_scheme)))
        written = yield from pipeline.run(todo, reused)
        journal.close()
        result = _finish(plan, cfg, folder, journal, pipeline.kept_n)
        yield from map(JobWarning, plan.warnings[said:])
        result.written, result.reused = written, reused
        yield Progress(
            len(plan.windows),
            len(plan.windows),
            f"{result.patches} patches in the dataset",
            {"kept": pipeline.kept_n},
        )
        finished = True
        return result
    finally:
        _close_all(journal, readers)
        if folder.created and not finished:
            _remove_if_no_patch(out)


def _selected_classes(scheme: ClassScheme, cfg: ExtractConfig) -> ClassScheme:
    include = [scheme.get(c).id for c in cfg.classes] if cfg.classes else list(scheme.ids)
    used_scheme = ClassScheme([c for c in scheme.classes if c.id in include]).copy()
    if not len(used_scheme):
        raise ConfigError("no class selected; --classes takes names or ids of the scheme's classes")
    return used_scheme


def _close_all(journal: Journal | None, readers: list[Any]) -> None:
    if journal is not None:
        try:
            journal.close()
        except OSError:
            pass
    for r in readers:
        try:
            r.close()
        except Exception:  # noqa: BLE001 - closing must not mask the job's own error
            pass


# ------------------------------------------------------------------------------------------------
# Phase 1: plan (open the slides, lay the windows)
# ------------------------------------------------------------------------------------------------


def _plan(
    sources: Sequence[SlideSource],
    scheme: ClassScheme,
    used_scheme: ClassScheme,
    cfg: ExtractConfig,
    open_slide_fn: Any,
    readers: list[Any],
) -> _Plan:
    """Open every slide (appending to ``readers``, which the caller closes) and plan its areas."""
    plan = _Plan(used_scheme)
    for src in sources:
        r = open_slide_fn(src.path)
        readers.append(r)
        if src.mpp is not None:
            r.set_mpp(src.mpp)
        _add_slide(plan, src, r, cfg)
    seen_ids: set[tuple[int, str]] = set()
    for si, src in enumerate(sources):
        _plan_slide_areas(plan, si, src, readers[si], scheme, cfg, seen_ids)
    # A random window can coincide with another area's window of the same class: keep one.
    uniq: dict[str, _Window] = {}
    for w in plan.windows:
        uniq.setdefault(w.key, w)
    plan.windows = list(uniq.values())
    if not plan.windows:
        sizes = ", ".join(sorted({f"{sc.window} px" for sc in plan.scales}))
        raise DatasetError(
            f"no window fits any of the {len(plan.reports)} selected areas (window {sizes} at "
            "level 0); draw larger areas, lower --patch-size or --min-inside, or choose "
            "other --classes"
        )
    return plan


def _patch_scale(plan: _Plan, cfg: ExtractConfig) -> dict[str, Any]:
    """``patch_size`` and ``mpp`` of the patches for dataset.json's top level, where training reads
    them (a checkpoint records the scale it was trained at): ``mpp`` when every slide states its
    pixel size and the patches agree within 1 %, else ``None`` with the reason."""
    mpps = [sc.patch_mpp for sc in plan.scales]
    out: dict[str, Any] = {"patch_size": cfg.patch_size, "mpp": None}
    if mpps and all(m is not None for m in mpps):
        lo, hi = min(mpps), max(mpps)  # type: ignore[type-var]
        if hi <= lo * 1.01:
            out["mpp"] = round(float(sum(mpps)) / len(mpps), 6)  # type: ignore[arg-type]
        else:
            out["mpp_note"] = f"the slides' patches differ in scale ({lo:.3g}-{hi:.3g} µm/px)"
    else:
        out["mpp_note"] = "a slide states no pixel size: the patches' scale is unknown"
    return out


def _add_slide(plan: _Plan, src: SlideSource, r: Any, cfg: ExtractConfig) -> None:
    """A unique safe name, the read scale and the dataset.json entry of one slide."""
    base = _safe(src.name or Path(src.path).stem)
    name, n = base, 2
    while name in plan.names:
        name, n = f"{base}-{n}", n + 1
    plan.names.append(name)
    sc = _Scale(r, cfg)
    plan.scales.append(sc)
    mpp = getattr(r, "mpp", None)
    plan.slide_meta.append(
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


def _plan_slide_areas(
    plan: _Plan,
    si: int,
    src: SlideSource,
    r: Any,
    scheme: ClassScheme,
    cfg: ExtractConfig,
    seen_ids: set[tuple[int, str]],
) -> None:
    """Grid and random windows of every selected area of slide ``si``."""
    sc, sname, ext = plan.scales[si], plan.names[si], _EXT[cfg.format]
    numbers: Counter[str] = Counter()  # "<class name> #<n>" for unnamed areas
    for ann in src.annotations:
        cdef = scheme.find(str(ann.class_id))
        cid = cdef.id if cdef else str(ann.class_id)
        numbers[cid] += 1
        if cid not in plan.used_scheme.ids:
            continue
        cname = cdef.name if cdef else cid
        label = (getattr(ann, "name", "") or "").strip() or f"{cname} #{numbers[cid]}"
        aid = str(ann.id)
        if (si, aid) in seen_ids:
            raise AnnotationError(f"{src.path}: two annotations share the id {aid!r}")
        seen_ids.add((si, aid))
        rng = _rng(cfg.seed, sname, aid)
        area = plan_area(
            ann.geometry,
            tuple(r.dimensions),
            sc.window,
            sc.stride,
            cfg.min_inside,
            cfg.random,
            cfg.overlap,
            rng,
        )
        plan.reports.append(
            AreaReport(
                sname, aid, cid, area.status, len(area.grid), len(area.random), message=area.message
            )
        )
        if area.status in ("outside", "small", "clipped"):
            plan.warnings.append(f"{sname}: area {label!r} ({cname}): {area.message}")
        for kind, arr in (("grid", area.grid), ("random", area.random)):
            for x, y in arr.tolist():
                key = f"patches/{cid}/{sname}__{_safe(aid)}__x{x}_y{y}{ext}"
                plan.windows.append(
                    _Window(len(plan.windows), si, aid, cid, int(x), int(y), kind, key)
                )


# ------------------------------------------------------------------------------------------------
# Phase 2: read / filter / write, journaled
# ------------------------------------------------------------------------------------------------


class _Pipeline:
    """Reads windows in a thread pool, drops them by tissue (in the reader) and gland fraction
    (batched on the driving thread), encodes and writes the rest, and journals every outcome.

    At most ``limit`` windows are in flight (read, waiting for the gland model, or being written).
    """

    def __init__(
        self,
        cfg: ExtractConfig,
        plan: _Plan,
        readers: list[Any],
        folder: DatasetFolder,
        journal: Journal,
        max_in_flight: int | None,
        exempt: set[str] | None = None,
    ) -> None:
        self.cfg, self.plan, self.readers = cfg, plan, readers
        self.exempt = exempt or set()   # class ids that skip the gland filter
        self.folder, self.journal = folder, journal
        self.limit = max(max_in_flight or (4 * cfg.workers + 16), _GLAND_BATCH + 2)
        self.min_t = float(cfg.min_tissue or 0.0)
        self.min_g = float(cfg.min_gland or 0.0)
        self.tissue: Any = None
        if cfg.tissue_on or cfg.gland_on:  # scikit-image / torch only when a filter needs them
            from crc_core import tissue

            self.tissue = tissue
        self.pool: cf.ThreadPoolExecutor | None = None
        self.pending: set[cf.Future[Any]] = set()
        self.gland_batch: list[tuple[_Window, np.ndarray, float | None]] = []
        self.dropped = {"tissue": 0, "gland": 0}
        self.kept_n = sum(1 for w in plan.windows if journal.kept(w.key))
        self.written = 0
        self.processed = 0

    def run(self, todo: list[_Window], reused: int) -> Generator[Progress, None, int]:
        """Process ``todo``; yields progress at most every 0.1 s; returns the patches written.

        Stopped early (closed, or an error), it waits for the pool and journals the patches
        already written, so that a rerun keeps them.
        """
        total = len(self.plan.windows)
        self.processed = total - len(todo)
        yield Progress(
            self.processed,
            total,
            f"{len(todo)} windows to read, {reused} reused",
            {"kept": self.kept_n},
        )
        self.pool = cf.ThreadPoolExecutor(
            max_workers=self.cfg.workers, thread_name_prefix="crc-extract"
        )
        try:
            yield from self._loop(iter(todo), total)
            self.pool.shutdown(wait=True)
            self.pool = None
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)
                try:
                    self._journal_finished()
                except Exception:  # noqa: BLE001 - never mask the reason the job stopped
                    pass
        return self.written

    def _loop(self, it: Any, total: int) -> Generator[Progress, None, None]:
        exhausted = False
        last_yield = 0.0
        while True:
            while not exhausted and len(self.pending) + len(self.gland_batch) < self.limit:
                w = next(it, None)
                if w is None:
                    exhausted = True
                    break
                self.pending.add(self.pool.submit(self._read_task, w))  # type: ignore[union-attr]
            if self.pending:
                self._drain_one()
            elif self.gland_batch:
                self._flush_gland()
            else:
                break
            now = time.monotonic()
            if now - last_yield > 0.1:
                last_yield = now
                yield Progress(
                    self.processed, total, f"{self.kept_n} patches kept", {"kept": self.kept_n}
                )

    def _read_task(self, w: _Window) -> tuple[str, _Window, Any, float | None]:
        cfg, sc = self.cfg, self.plan.scales[w.slide_idx]
        rgb = self.readers[w.slide_idx].read_region(
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
            tissue = self.tissue.tissue_fraction(rgb[::_TISSUE_STEP, ::_TISSUE_STEP])
            if tissue < self.min_t:
                return ("drop_tissue", w, None, tissue)
        if not cfg.gland_on or w.class_id in self.exempt:  # nothing left to decide: write it
            return self._write_task(w, rgb, tissue, None)
        return ("read", w, rgb, tissue)

    def _write_task(
        self, w: _Window, rgb: np.ndarray, tissue: float | None, gland: float | None
    ) -> tuple[str, _Window, int, float | None, float | None]:
        data = _encode(rgb, self.cfg.format, self.cfg.jpeg_quality)
        self.folder.write_patch(w.key, data)
        return ("written", w, len(data), tissue, gland)

    def _flush_gland(self) -> None:
        if not self.gland_batch:
            return
        batch, scales = self.gland_batch, self.plan.scales
        mpp_groups: dict[float | None, list[int]] = {}
        for i, (w, _, _) in enumerate(batch):
            mpp_groups.setdefault(scales[w.slide_idx].patch_mpp, []).append(i)
        fracs = np.zeros(len(batch))
        for mpp, idx in mpp_groups.items():
            fracs[idx] = self.tissue.gland_fractions([batch[i][1] for i in idx], mpp=mpp)
        for (w, rgb, tissue), g in zip(batch, fracs, strict=False):
            g = float(g)
            if g < self.min_g:
                self.dropped["gland"] += 1
                self.journal.add(w.key, False, "gland", 0, g, tissue)
                self.processed += 1
            else:
                job = self.pool.submit(self._write_task, w, rgb, tissue, g)  # type: ignore[union-attr]
                self.pending.add(job)
        batch.clear()

    def _handle(self, res: tuple[Any, ...]) -> None:
        kind = res[0]
        if kind == "drop_tissue":
            self.dropped["tissue"] += 1
            self.journal.add(res[1].key, False, "tissue", 0, None, res[3])
            self.processed += 1
        elif kind == "read":
            _, w, rgb, tissue = res
            self.gland_batch.append((w, rgb, tissue))
            if len(self.gland_batch) >= _GLAND_BATCH:
                self._flush_gland()
        elif kind == "written":
            _, w, nbytes, tissue, gland = res
            self.journal.add(w.key, True, "", nbytes, gland, tissue)
            self.kept_n += 1
            self.written += 1
            self.processed += 1

    def _drain_one(self) -> None:
        finished, _ = cf.wait(self.pending, return_when=cf.FIRST_COMPLETED)
        for f in finished:
            self.pending.discard(f)
            self._handle(f.result())

    def _journal_finished(self) -> None:
        """Journal the patches written before the job stopped (kept for the rerun)."""
        if not self.journal.is_open:
            return
        for f in list(self.pending):
            if f.done() and not f.cancelled() and f.exception() is None:
                res = f.result()
                if res[0] == "written":
                    self._handle(res)


# ------------------------------------------------------------------------------------------------
# Phase 3: manifest, split, caps, Table 1
# ------------------------------------------------------------------------------------------------


def _finish(
    plan: _Plan, cfg: ExtractConfig, folder: DatasetFolder, journal: Journal, kept_n: int
) -> ExtractResult:
    """Write the manifest (split and capped) and the complete dataset.json; returns the result
    (``written`` and ``reused`` are filled in by the caller)."""
    rows = _manifest_rows(plan, journal)
    if not rows:
        raise DatasetError(
            f"{folder.out}: no patch passed the rules ({len(plan.windows)} windows planned in "
            f"{len(plan.reports)} areas); check the areas' size against --patch-size, or lower "
            "--min-inside, --min-tissue or --min-gland"
        )
    _split_rows(rows, plan, cfg)
    if cfg.cap is not None:
        rows = _cap_rows(rows, plan.used_scheme, cfg)
    table, totals = _class_table(rows, plan.used_scheme)
    folder.write_manifest(rows)
    # Patches of windows no longer planned (edited areas, other classes) leave the folder.
    planned_keys = {w.key for w in plan.windows}
    for k, row in list(journal.done.items()):
        if k not in planned_keys and row["kept"] == "1":
            (folder.out / k).unlink(missing_ok=True)
    dropped_all = {"tissue": 0, "gland": 0}
    for w in plan.windows:
        row = journal.done.get(w.key)
        if row is not None and row["kept"] == "0" and row["reason"] in dropped_all:
            dropped_all[row["reason"]] += 1
    windows = {
        "planned": len(plan.windows),
        "dropped": dropped_all,
        "kept": kept_n,
        "in_manifest": len(rows),
    }
    extra = {"areas": [asdict(a) for a in plan.reports], "windows": windows,
             **_patch_scale(plan, cfg)}
    extra["warnings"] = plan.warnings
    folder.write_json(True, plan.used_scheme, plan.slide_meta, table, totals, extra)
    return ExtractResult(
        folder.out,
        folder.manifest,
        folder.ds_json,
        table,
        totals,
        plan.reports,
        len(rows),
        0,
        0,
        dropped_all,
        plan.warnings,
        True,
    )


def _manifest_rows(plan: _Plan, journal: Journal) -> list[dict[str, Any]]:
    """One manifest row per kept window (split empty); sets each area report's ``kept``."""
    rows: list[dict[str, Any]] = []
    area_kept: dict[tuple[str, str], int] = {}
    for w in plan.windows:
        row = journal.done.get(w.key)
        if row is None or row["kept"] != "1":
            continue
        sname = plan.names[w.slide_idx]
        rows.append(
            {
                "path": w.key,
                "label": w.class_id,
                "slide": sname,
                "area_id": w.area_id,
                "l0_x": w.l0_x,
                "l0_y": w.l0_y,
                "level": plan.scales[w.slide_idx].level,
                "size": plan.scales[w.slide_idx].patch_size,
                "split": "",
                "gland_fraction": row["gland_fraction"],
                "tissue_fraction": row["tissue_fraction"],
            }
        )
        area_kept[(sname, w.area_id)] = area_kept.get((sname, w.area_id), 0) + 1
    for rep in plan.reports:
        rep.kept = area_kept.get((rep.slide, rep.area_id), 0)
    return rows


def _split_rows(rows: list[dict[str, Any]], plan: _Plan, cfg: ExtractConfig) -> None:
    """Fill each row's ``split`` (train/test) by area or slide; warn where a class cannot be
    tested because it has one group only."""
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
        for cid in plan.used_scheme.ids:
            n_groups = sum(1 for g in groups.values() if g.get(cid))
            if n_groups == 1:
                plan.warnings.append(
                    f"class {plan.used_scheme.get(cid).name}: one {cfg.split_by} only, so all its "
                    "patches are in train "
                    f"({'an area' if cfg.split_by == 'area' else 'a slide'} is never split "
                    "between train and test)"
                )
    for r in rows:
        r["split"] = split[group_of(r)]
    if cfg.split_by == "slide" and len(groups) < 2 and cfg.test_fraction > 0:
        plan.warnings.append("only one slide: with --split-by slide every patch is in train")


def _cap_rows(
    rows: list[dict[str, Any]], used_scheme: ClassScheme, cfg: ExtractConfig
) -> list[dict[str, Any]]:
    """At most ``cfg.cap`` rows per class, drawn (seeded) keeping the class's train/test share."""
    cap = int(cfg.cap)  # type: ignore[arg-type]
    rng = _rng(cfg.seed, "cap")
    keep_idx: set[int] = set()
    for cid in used_scheme.ids:
        idx = [i for i, r in enumerate(rows) if r["label"] == cid]
        if len(idx) <= cap:
            keep_idx.update(idx)
            continue
        tr = [i for i in idx if rows[i]["split"] == "train"]
        te = [i for i in idx if rows[i]["split"] == "test"]
        n_te = int(round(cap * len(te) / len(idx)))
        n_tr = cap - n_te
        keep_idx.update(
            rng.choice(tr, size=min(n_tr, len(tr)), replace=False).tolist() if tr else []
        )
        keep_idx.update(
            rng.choice(te, size=min(n_te, len(te)), replace=False).tolist() if te else []
        )
    return [r for i, r in enumerate(rows) if i in keep_idx]


def _counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {
        "slides": len({r["slide"] for r in rows}),
        "areas": len({(r["slide"], r["area_id"]) for r in rows}),
        "train": sum(1 for r in rows if r["split"] == "train"),
        "test": sum(1 for r in rows if r["split"] == "test"),
        "total": len(rows),
    }


def _class_table(
    rows: list[dict[str, Any]], used_scheme: ClassScheme
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Table 1: per class, slides, areas, train, test and total patches; and the totals."""
    table = []
    for cdef in used_scheme:
        counts = _counts([r for r in rows if r["label"] == cdef.id])
        table.append({"class": cdef.name, "class_id": cdef.id, **counts})
    return table, _counts(rows)
