"""Build the bundled demo project from the demo model's EBHI-Seg *test* cases (CC BY 4.0).

Writes ``resources/demo/``: ``demo_slide.tiff`` (a tiled, JPEG-compressed pyramidal TIFF that
OpenSlide opens as generic-tiff, level 0 ``COLS*224 x ROWS*224`` px, at the model's nominal
1.3 µm/px), ``project.json`` with the three-class scheme (Normal / Adenoma / Adenocarcinoma), the
ground-truth annotations as GeoJSON, the demo model's shipped prediction under
``predictions/<slide id>/`` and a ``demo.json`` recording which EBHI tiles (of which cases) fill
which area.

Only tiles the demo model never trained on or chose its epoch with are used: the script reads the
split the checkpoint records by content (:class:`crc_core.splits.SplitRecord`) and takes the tiles
it lists as **test**, so the demo's class map shows the model on cases it never saw. Each area is
annotated by the union of its cells, which is exact. The shipped prediction is made here by
``crc_core.inference.predict`` with the shipped checkpoint, and its recorded paths are made
relative (no absolute path of this machine is shipped).

Run: ``python tools/make_demo.py --checkpoint models/demo_densenet121_3class.pt
[--ebhi ../shared/data/ebhi] [--out resources/demo]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image
from shapely.geometry import box
from shapely.ops import unary_union

from crc_core.annotations import Annotation, AnnotationSet
from crc_core.classes import ClassScheme
from crc_core.inference import _file_fingerprint, predict
from crc_core.jobs import run_job
from crc_core.models import load_checkpoint
from crc_core.project import Project
from crc_core.splits import SplitRecord, content_keys
from crc_core.tables import load_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # crc_testkit: not installed
from crc_testkit.synthetic import TileMosaic, write_pyramid_tiff  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CELL = 224
COLS, ROWS = 30, 20
SEED = 0
# Areas as ellipses on the cell grid: (centre col, centre row, radius cols, radius rows, class,
# name). Three per class, so a dataset extracted from the demo (`crc extract`, test share by area)
# keeps two areas of each class for training, of which one can validate.
AREAS = [
    (5.0, 3.6, 4.2, 2.8, "Normal", "Normal mucosa A"),
    (15.0, 3.4, 3.8, 2.7, "Adenoma", "Adenoma A"),
    (25.0, 3.6, 4.2, 2.9, "Adenocarcinoma", "Adenocarcinoma A"),
    (5.2, 10.0, 4.0, 2.8, "Adenoma", "Adenoma B"),
    (15.0, 10.0, 4.3, 2.9, "Adenocarcinoma", "Adenocarcinoma B"),
    (25.0, 10.2, 3.6, 2.6, "Normal", "Normal mucosa B"),
    (5.0, 16.4, 4.3, 2.9, "Adenocarcinoma", "Adenocarcinoma C"),
    (15.2, 16.4, 3.4, 2.5, "Normal", "Normal mucosa C"),
    (25.0, 16.4, 4.1, 2.8, "Adenoma", "Adenoma C"),
]


def cell_map() -> np.ndarray:
    """(ROWS, COLS) int array: area index of each cell, -1 for glass."""
    grid = -np.ones((ROWS, COLS), dtype=np.int64)
    rr, cc = np.mgrid[0:ROWS, 0:COLS]
    rng = np.random.default_rng(SEED)
    for k, (cx, cy, rx, ry, _cls, _name) in enumerate(AREAS):
        # A slightly irregular outline: the radius wobbles with the angle.
        ang = np.arctan2(rr + 0.5 - cy, cc + 0.5 - cx)
        wobble = (1 + 0.12 * np.sin(3 * ang + rng.uniform(0, 6.3))
                  + 0.08 * np.cos(5 * ang + rng.uniform(0, 6.3)))
        inside = ((cc + 0.5 - cx) / rx) ** 2 + ((rr + 0.5 - cy) / ry) ** 2 <= wobble**2
        grid[inside & (grid < 0)] = k
    return grid


def test_tiles(checkpoint: Path, ebhi: Path) -> dict[str, dict[str, list[Path]]]:
    """Class name -> case -> the checkpoint's test tiles (identified by content)."""
    ck = load_checkpoint(checkpoint)
    record = SplitRecord.from_json(ck.get("split"))
    if record is None:
        raise SystemExit(f"{checkpoint} records no split by content; retrain it with crc train")
    opts = (ck.get("config") or {}).get("data") or {}
    table = load_table(ebhi / "labels.csv", label_column=opts.get("label_column"),
                       group_column=opts.get("group_column"), classes=opts.get("classes"),
                       mapping=opts.get("map"), group_pattern=opts.get("group_pattern"))
    keys = run_job(content_keys(table))
    out: dict[str, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    for s, k in zip(table.samples, keys, strict=True):
        if k in record.test:
            out[table.scheme.names[s.label]][s.group].append(s.path)
    for name in ck["scheme"].names:
        if not out.get(name):
            raise SystemExit(f"no test tile of class {name!r} in {checkpoint}'s split")
    return out


def _area_tiles(tiles: dict[str, dict[str, list[Path]]]
                ) -> tuple[list[np.ndarray], list[str], list[list[int]], list[list[str]]]:
    """The tile bank and, per area, its tiles: the class's test cases dealt out to its areas."""
    bank: list[np.ndarray] = []
    src: list[str] = []
    per_area: list[list[int]] = [[] for _ in AREAS]
    cases: list[list[str]] = [[] for _ in AREAS]
    for cls in {a[4] for a in AREAS}:
        areas = [k for k, a in enumerate(AREAS) if a[4] == cls]
        for j, case in enumerate(sorted(tiles[cls])):
            k = areas[j % len(areas)]
            cases[k].append(case)
            for p in sorted(tiles[cls][case]):
                with Image.open(p) as im:
                    arr = np.asarray(im.convert("RGB"))
                if arr.shape == (CELL, CELL, 3):
                    bank.append(arr)
                    src.append(f"{p.parent.name}/{p.name}")
                    per_area[k].append(len(bank) - 1)
        for k in areas:   # fewer cases than areas: an area shares the class's tiles
            if not per_area[k]:
                per_area[k] = [i for a in areas for i in per_area[a]]
                cases[k] = sorted({c for a in areas for c in cases[a]})
    return bank, src, per_area, cases


def _layout(grid: np.ndarray, per_area: list[list[int]]) -> dict[tuple[int, int], int]:
    rng = np.random.default_rng(SEED)
    order = [list(rng.permutation(t)) if t else [] for t in per_area]
    counters = [0] * len(AREAS)
    layout: dict[tuple[int, int], int] = {}
    for r in range(ROWS):
        for c in range(COLS):
            k = int(grid[r, c])
            if k < 0:
                layout[(c, r)] = -1
                continue
            layout[(c, r)] = int(order[k][counters[k] % len(order[k])])
            counters[k] += 1
    return layout


def _project(out: Path, slide_path: Path, grid: np.ndarray, cases: list[list[str]]
             ) -> tuple[Project, object]:
    scheme = ClassScheme.three_class()
    project = Project.create(out, scheme=scheme, name="CRC Workbench demo")
    entry = project.add_slide(slide_path, name="Demo slide (EBHI-Seg test cases)")
    aset = AnnotationSet()
    for k, (_cx, _cy, _rx, _ry, cls, name) in enumerate(AREAS):
        rows, cols = np.nonzero(grid == k)
        geom = unary_union([box(c * CELL, r * CELL, (c + 1) * CELL, (r + 1) * CELL)
                            for r, c in zip(rows, cols, strict=True)])
        aset.add(Annotation.new(scheme.get(cls).id, geom, name=name,
                                notes=f"{len(rows)} cells of EBHI-Seg test tiles of class {cls} "
                                      f"(case(s) {', '.join(cases[k])})"))
    project.save_annotations(entry, aset)
    project.save()
    return project, entry


def _shipped_prediction(project: Project, entry: object, checkpoint: Path) -> dict:
    """The demo model's prediction of the demo slide, with its recorded paths made relative."""
    slide_path = project.slide_path(entry)  # type: ignore[arg-type]
    pred = run_job(predict(slide_path, checkpoint, cam=True, scheme=project.scheme, device="cpu"))
    pred.model = {**pred.model, "checkpoint": f"models/{checkpoint.name}"}
    pred.slide = {**pred.slide, "path": slide_path.name}
    project.save_prediction(entry, checkpoint.stem, pred)  # type: ignore[arg-type]
    cmap = pred.class_map()
    g = pred.grid
    result = []
    grid = cell_map()
    for k, a in enumerate(AREAS):
        # One window per cell (224 px windows at 1.3 µm/px on a 224 px cell grid).
        votes = [int(cmap[r, c]) for r, c in zip(*np.nonzero(grid == k), strict=True)
                 if r < g.rows and c < g.cols and cmap[r, c] >= 0]
        names = [pred.scheme.classes[v].name for v in votes]
        major = max(set(names), key=names.count) if names else None
        result.append({"area": a[5], "class": a[4], "majority": major,
                       "share": round(names.count(major) / len(names), 3) if names else 0.0})
    return {"areas": result, "windows": int(pred.predicted.sum())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "models" / "demo_densenet121_3class.pt"))
    ap.add_argument("--ebhi", default=str(ROOT.parent / "shared" / "data" / "ebhi"))
    ap.add_argument("--out", default=str(ROOT / "resources" / "demo"))
    ap.add_argument("--quality", type=int, default=85)
    args = ap.parse_args(argv)
    checkpoint, ebhi = Path(args.checkpoint), Path(args.ebhi)
    ck = load_checkpoint(checkpoint)
    bank, src, per_area, cases = _area_tiles(test_tiles(checkpoint, ebhi))
    grid = cell_map()
    layout = _layout(grid, per_area)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    mosaic = TileMosaic(bank, layout=lambda c, r: layout.get((c, r), -1))
    slide_path = out / "demo_slide.tiff"
    mpp = float(ck["mpp"]) if ck.get("mpp") else 1.3
    write_pyramid_tiff(slide_path, COLS * CELL, ROWS * CELL, mosaic, tile=256, mpp=mpp,
                       quality=args.quality, levels=4)
    project, entry = _project(out, slide_path, grid, cases)
    shipped = _shipped_prediction(project, entry, checkpoint)
    (out / "demo.json").write_text(json.dumps({
        "source": "EBHI-Seg (Shi et al., Frontiers in Medicine 2023), CC BY 4.0",
        "nominal_mpp": mpp,
        "mpp_note": "nominal: EBHI-Seg states 400x total magnification but no pixel size; "
                    "1.3 µm/px is the estimate the demo model records",
        "cell_px": CELL, "cols": COLS, "rows": ROWS,
        "model": {"file": f"models/{checkpoint.name}",
                  "fingerprint": _file_fingerprint(checkpoint)},
        "tiles_used": "the model's test split (by content, from the checkpoint's split record)",
        "areas": [{"name": a[5], "class": a[4], "cells": int((grid == k).sum()),
                   "cases": cases[k], "tiles": len(set(per_area[k]))}
                  for k, a in enumerate(AREAS)],
        "shipped_prediction": shipped,
        "tiles": src,
    }, indent=1))
    for bak in out.rglob("*.bak"):
        bak.unlink()
    size_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    print(f"demo project written to {out} ({size_mb:.1f} MB)")
    for a in shipped["areas"]:
        print(f"  {a['area']:<18} truth {a['class']:<15} predicted {a['majority']} "
              f"({a['share']:.0%} of its windows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
