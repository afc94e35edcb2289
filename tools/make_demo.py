"""Build the bundled demo project from real EBHI-Seg tiles (CC BY 4.0, see resources/ATTRIBUTION.md).

Writes ``resources/demo/``: ``demo_slide.tiff`` (a tiled, JPEG-compressed pyramidal TIFF that OpenSlide
opens as generic-tiff, level 0 ``COLS*224 x ROWS*224`` px, mpp stated as nominal), ``project.json`` with
the three-class scheme (Normal / Adenoma / Adenocarcinoma), the ground-truth annotations as GeoJSON
and a ``demo.json`` that records which EBHI tiles fill which area.

The slide shows several irregular "tissue" areas on glass, each filled with tiles of one class. Only
tiles of the **validation** cases of the demo model are used (the same seeded split by case as
``crc train --group-column case_id --val-fraction 0.2 --seed 0`` on the same data options), so the
demo prediction is an honest one. Each area is annotated by the union of its cells, which is exact.

Run: ``python tools/make_demo.py [--ebhi ../shared/data/ebhi] [--out resources/demo]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image
from shapely.geometry import box
from shapely.ops import unary_union

from crc_core.annotations import Annotation, AnnotationSet
from crc_core.classes import ClassScheme
from crc_core.data import load_table, split_by_group
from crc_core.gland_model import EBHI_MPP
from crc_core.project import Project
from crc_core.synthetic import TileMosaic, write_pyramid_tiff

ROOT = Path(__file__).resolve().parents[1]
CELL = 224
COLS, ROWS = 30, 20
# The demo model's data options (models/README.md): EBHI mapped to the paper-like three classes.
CLASSES = "Normal,Low-grade IN,High-grade IN,Adenocarcinoma"
MAP = "Low-grade IN=Adenoma,High-grade IN=Adenoma"
SEED = 0
VAL_FRACTION = 0.2

# Areas as ellipses on the cell grid: (centre col, centre row, radius cols, radius rows, class, name).
AREAS = [
    (6.0, 5.0, 4.6, 3.4, "Normal", "Normal mucosa A"),
    (15.0, 4.5, 3.6, 3.2, "Adenoma", "Adenoma A"),
    (24.8, 6.0, 4.2, 4.0, "Adenocarcinoma", "Adenocarcinoma A"),
    (7.0, 14.5, 4.8, 3.6, "Adenoma", "Adenoma B"),
    (16.5, 14.0, 4.2, 3.6, "Adenocarcinoma", "Adenocarcinoma B"),
    (26.0, 15.5, 2.8, 2.6, "Normal", "Normal mucosa B"),
]


def cell_map() -> np.ndarray:
    """(ROWS, COLS) int array: area index of each cell, -1 for glass."""
    grid = -np.ones((ROWS, COLS), dtype=np.int64)
    rr, cc = np.mgrid[0:ROWS, 0:COLS]
    rng = np.random.default_rng(SEED)
    for k, (cx, cy, rx, ry, _cls, _name) in enumerate(AREAS):
        # A slightly irregular outline: the radius wobbles with the angle.
        ang = np.arctan2(rr + 0.5 - cy, cc + 0.5 - cx)
        wobble = 1 + 0.12 * np.sin(3 * ang + rng.uniform(0, 6.3)) + 0.08 * np.cos(5 * ang + rng.uniform(0, 6.3))
        inside = ((cc + 0.5 - cx) / rx) ** 2 + ((rr + 0.5 - cy) / ry) ** 2 <= wobble**2
        grid[inside & (grid < 0)] = k
    return grid


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ebhi", default=str(ROOT.parent / "shared" / "data" / "ebhi"))
    ap.add_argument("--out", default=str(ROOT / "resources" / "demo"))
    ap.add_argument("--quality", type=int, default=80)
    args = ap.parse_args(argv)

    table = load_table(Path(args.ebhi) / "labels.csv", label_column="ebhi_class",
                       group_column="case_id", classes=CLASSES, mapping=MAP)
    split = split_by_group(table, VAL_FRACTION, SEED)
    val_by_class: dict[str, list[Path]] = defaultdict(list)
    for i in split.val:
        s = table.samples[i]
        val_by_class[table.scheme.names[s.label]].append(s.path)
    for name in table.scheme.names:
        if not val_by_class[name]:
            raise SystemExit(f"no validation tiles of class {name!r}")
        val_by_class[name].sort()

    grid = cell_map()
    bank: list[np.ndarray] = []
    bank_src: list[str] = []
    area_tiles: list[list[int]] = []
    for _cx, _cy, _rx, _ry, cls, _name in AREAS:
        idx = []
        for p in val_by_class[cls]:
            with Image.open(p) as im:
                arr = np.asarray(im.convert("RGB"))
            if arr.shape != (CELL, CELL, 3):
                continue
            bank.append(arr)
            bank_src.append(str(p.relative_to(Path(args.ebhi))))
            idx.append(len(bank) - 1)
        area_tiles.append(idx)

    counters = [0] * len(AREAS)
    layout_cache: dict[tuple[int, int], int] = {}
    for r in range(ROWS):
        for c in range(COLS):
            k = int(grid[r, c])
            if k < 0:
                layout_cache[(c, r)] = -1
                continue
            tiles = area_tiles[k]
            layout_cache[(c, r)] = tiles[counters[k] % len(tiles)]
            counters[k] += 1

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    mosaic = TileMosaic(bank, layout=lambda c, r: layout_cache.get((c, r), -1))
    slide_path = out / "demo_slide.tiff"
    write_pyramid_tiff(slide_path, COLS * CELL, ROWS * CELL, mosaic, tile=256, mpp=EBHI_MPP,
                       quality=args.quality, levels=4)

    scheme = ClassScheme.three_class()
    project = Project.create(out, scheme=scheme, name="CRC Workbench demo")
    entry = project.add_slide(slide_path, name="Demo slide (EBHI-Seg tiles)")
    aset = AnnotationSet()
    for k, (_cx, _cy, _rx, _ry, cls, name) in enumerate(AREAS):
        rows, cols = np.nonzero(grid == k)
        geom = unary_union([box(c * CELL, r * CELL, (c + 1) * CELL, (r + 1) * CELL)
                            for r, c in zip(rows, cols)])
        aset.add(Annotation.new(scheme.get(cls).id, geom, name=name,
                                notes=f"{len(rows)} EBHI-Seg validation tiles of class {cls}"))
    project.save_annotations(entry, aset)
    project.save()
    (out / "demo.json").write_text(json.dumps({
        "source": "EBHI-Seg (Shi et al., Frontiers in Medicine 2023), CC BY 4.0",
        "nominal_mpp": EBHI_MPP,
        "mpp_note": "nominal: EBHI-Seg states 400x total magnification but no pixel size",
        "cell_px": CELL, "cols": COLS, "rows": ROWS,
        "split": {"label_column": "ebhi_class", "group_column": "case_id", "classes": CLASSES,
                  "map": MAP, "val_fraction": VAL_FRACTION, "seed": SEED, "used": "val"},
        "areas": [{"name": a[5], "class": a[4], "cells": int((grid == k).sum())}
                  for k, a in enumerate(AREAS)],
        "tiles": bank_src,
    }, indent=1))
    size_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    for bak in out.rglob("*.bak"):
        bak.unlink()
    print(f"demo project written to {out} ({size_mb:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
