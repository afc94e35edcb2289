"""Benchmark of `crc_core.patches.extract`: patches/s end to end against bare read_region calls.

A pyramidal TIFF with tissue-like content (crc_core.synthetic.TissuePattern) is generated, one area
covering most of it is gridded with the default 400 px windows (overlap 0.3), and, in the same run:

- ``bare``: ``SlideReader.read_region`` of exactly the planned windows with the same number of threads,
  results discarded (the limit: what reading alone costs);
- ``extract``: the whole job (read, filters as configured, JPEG encode, write, journal, manifest).

Prints one JSON object. Usage::

    python benchmarks/extract_bench.py [--size 8192] [--workers 2] [--tissue] [--format jpeg|png]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from shapely.geometry import box

from crc_core import patches as P
from crc_core.classes import ClassScheme
from crc_core.jobs import run_job
from crc_core.slide import open_slide
from crc_core.synthetic import TissuePattern, write_pyramid_tiff


def bare_reads(slide_path: Path, windows: list[tuple[int, int]], size: int, workers: int) -> float:
    """Seconds to read every window once with ``workers`` threads."""
    with open_slide(slide_path) as s:
        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(lambda xy: s.read_region(xy, 0, (size, size)), windows):
                pass
        return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192, help="slide side in level-0 px (8192)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--tissue", action="store_true", help="tissue filter on (min 0.5)")
    ap.add_argument("--format", choices=("jpeg", "png"), default="jpeg")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: temp)")
    args = ap.parse_args(argv)

    work = args.keep or Path(tempfile.mkdtemp(prefix="crc-extract-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        slide = work / "bench.tif"
        if not slide.exists():
            write_pyramid_tiff(slide, args.size, args.size, TissuePattern(seed=1), mpp=0.5)
        area = box(100, 100, args.size - 100, args.size - 100)
        xy, _ = P.grid_windows(area, 400, 280, 0.75)
        windows = [tuple(map(int, v)) for v in xy.tolist()]
        cfg = P.ExtractConfig(random=0, min_gland=0, min_tissue=0.5 if args.tissue else 0,
                              test_fraction=0.2, workers=args.workers, format=args.format)
        src = [P.SlideSource(slide, [SimpleNamespace(id="area", class_id="normal", geometry=area)])]

        bare_reads(slide, windows[:50], 400, args.workers)  # warm the file cache
        bare_t: list[float] = []
        ext_t: list[float] = []
        for i in range(args.repeats):
            bare_t.append(bare_reads(slide, windows, 400, args.workers))
            out = work / f"ds{i}"
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            res = run_job(P.extract(src, out, ClassScheme.paper(), cfg))
            ext_t.append(time.perf_counter() - t0)
            shutil.rmtree(out, ignore_errors=True)
        n = len(windows)
        bare_rate = n / min(bare_t)
        ext_rate = n / min(ext_t)
        print(json.dumps({
            "benchmark": "extract",
            "slide_px": [args.size, args.size],
            "windows": n,
            "patches_written": res.written,
            "patch_size": 400,
            "workers": args.workers,
            "format": args.format,
            "gland_filter": False,
            "tissue_filter": bool(args.tissue),
            "bare_read_patches_per_s": round(bare_rate, 1),
            "extract_patches_per_s": round(ext_rate, 1),
            "ratio": round(ext_rate / bare_rate, 3),
            "goal_ratio": 0.8,
            "bare_s": [round(t, 2) for t in bare_t],
            "extract_s": [round(t, 2) for t in ext_t],
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        }, indent=2))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
