"""Benchmark of `crc_core.patches.extract`: patches/s end to end against bare read_region calls.

A pyramidal TIFF with tissue-like content (crc_testkit.synthetic.TissuePattern) is generated, one
area covering most of it is gridded with the default 400 px windows (overlap 0.3), and, in the
same run:

- ``bare``: ``SlideReader.read_region`` of exactly the planned windows with the same number of
  threads, results discarded (the limit: what reading alone costs);
- ``read + encode + write``: the same reads, each window encoded as extraction encodes it and
  written to its own file (the least work that yields the same patch files);
- ``extract``: the whole job (read, filters as configured, JPEG encode, write, journal, manifest).

``ratio`` compares the best wall-clock rates, ``ratio_paired_median`` each extract run with the
bare run just before it, and ``cpu_ratio`` the process CPU time per patch (independent of machine
load, and the ratio a dedicated machine approaches when both runs are CPU-bound).

Prints one JSON object. Usage::

    python benchmarks/extract_bench.py [--size 8192] [--workers 2] [--tissue] [--format jpeg|png]
    python benchmarks/extract_bench.py --compare-formats SLIDE  # e.g. cmu-1-small-region.svs

The second form measures the patch file formats on 20 real 400 px patches of a slide: size, encode
and decode time (process CPU), and PSNR against the slide pixels."""

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # crc_testkit: not installed
from crc_testkit.synthetic import TileMosaic, TissuePattern, write_pyramid_tiff  # noqa: E402


def bare_reads(
    slide_path: Path, windows: list[tuple[int, int]], size: int, workers: int,
    files: tuple[Path, str, int] | None = None,
) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) to read every window once with ``workers`` threads.

    ``files=(folder, format, quality)``: also encode each window as extraction does and write it
    to its own file there (the least work that yields the same patch files: no filter, journal or
    manifest)."""
    from crc_core.patches.store import _encode, _write_patch

    def one(ixy: tuple[int, tuple[int, int]]) -> None:
        rgb = s.read_region(ixy[1], 0, (size, size))
        if files is not None:
            _write_patch(files[0] / f"{ixy[0]}.jpg", _encode(rgb, files[1], files[2]))

    if files is not None:
        files[0].mkdir(parents=True, exist_ok=True)
    with open_slide(slide_path) as s:
        t0, c0 = time.perf_counter(), time.process_time()
        with cf.ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(one, enumerate(windows)):
                pass
        return time.perf_counter() - t0, time.process_time() - c0


def ebhi_mosaic(n: int = 64) -> TileMosaic:
    """A TileMosaic of the first ``n`` EBHI tiles (../shared/data/ebhi)."""
    import csv

    import numpy as np
    from PIL import Image

    root = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ebhi"
    with open(root / "labels.csv", newline="") as fh:
        names = [r["image"] for r in csv.DictReader(fh)][:n]
    tiles = [np.asarray(Image.open(root / name).convert("RGB")) for name in names]
    return TileMosaic(tiles, seed=0)


def compare_formats(slide_path: Path) -> dict[str, dict[str, float]]:
    """Size, encode/decode CPU ms and PSNR of PNG and JPEG settings on real patches."""
    import io

    import numpy as np
    from PIL import Image

    with open_slide(slide_path) as s:
        w, h = s.dimensions
        xs = np.linspace(0, w - 400, 4).astype(int)
        ys = np.linspace(0, h - 400, 5).astype(int)
        patches = [s.read_region((int(x), int(y)), 0, (400, 400)) for x in xs for y in ys]
    settings = {
        "png (compress 1)": dict(format="PNG", compress_level=1),
        "png (compress 6)": dict(format="PNG", compress_level=6),
        "jpeg q95 4:4:4": dict(format="JPEG", quality=95, subsampling=0),
        "jpeg q90 4:4:4": dict(format="JPEG", quality=90, subsampling=0),
        "jpeg q95 4:2:0": dict(format="JPEG", quality=95, subsampling=2),
    }
    out: dict[str, dict[str, float]] = {}
    for name, kw in settings.items():
        c0 = time.process_time()
        blobs = []
        for p in patches:
            b = io.BytesIO()
            Image.fromarray(p).save(b, **kw)
            blobs.append(b.getvalue())
        enc = (time.process_time() - c0) / len(patches)
        c0 = time.process_time()
        dec = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs]
        dect = (time.process_time() - c0) / len(patches)
        mse = [
            float(np.mean((a.astype(float) - d.astype(float)) ** 2))
            for a, d in zip(patches, dec, strict=False)
        ]
        psnr = [99.0 if m == 0 else 10 * np.log10(255**2 / m) for m in mse]
        out[name] = {
            "kb": round(float(np.mean([len(b) for b in blobs])) / 1024, 1),
            "encode_ms": round(enc * 1000, 2),
            "decode_ms": round(dect * 1000, 2),
            "psnr_db": round(float(np.mean(psnr)), 1),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192, help="slide side in level-0 px (8192)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--tissue", action="store_true", help="tissue filter on (min 0.5)")
    ap.add_argument("--gland", action="store_true", help="gland filter on (min 0.5; torch model)")
    ap.add_argument("--format", choices=("jpeg", "png"), default="jpeg")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: temp)")
    ap.add_argument(
        "--compare-formats",
        type=Path,
        default=None,
        metavar="SLIDE",
        help="only compare patch file formats on real patches of SLIDE",
    )
    args = ap.parse_args(argv)
    if args.compare_formats is not None:
        print(
            json.dumps(
                {
                    "benchmark": "patch formats",
                    "slide": str(args.compare_formats),
                    "patches": 20,
                    "results": compare_formats(args.compare_formats),
                },
                indent=2,
            )
        )
        return 0

    work = args.keep or Path(tempfile.mkdtemp(prefix="crc-extract-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.gland:
            # Real colorectal tissue for the gland model: EBHI tiles in a mosaic, no mpp (so the
            # model reads the patches at the tiles' own scale).
            slide = work / "bench-ebhi.tif"
            if not slide.exists():
                write_pyramid_tiff(slide, args.size, args.size, ebhi_mosaic(), mpp=None)
        else:
            slide = work / "bench.tif"
            if not slide.exists():
                write_pyramid_tiff(slide, args.size, args.size, TissuePattern(seed=1), mpp=0.5)
        area = box(100, 100, args.size - 100, args.size - 100)
        xy, _ = P.grid_windows(area, 400, 280, 0.75)
        windows = [tuple(map(int, v)) for v in xy.tolist()]
        cfg = P.ExtractConfig(
            random=0,
            min_gland=0.5 if args.gland else 0,
            min_tissue=0.5 if args.tissue else 0,
            test_fraction=0.2,
            workers=args.workers,
            format=args.format,
        )
        src = [P.SlideSource(slide, [SimpleNamespace(id="area", class_id="normal", geometry=area)])]

        bare_reads(slide, windows[:50], 400, args.workers)  # warm the file cache
        bare_t: list[float] = []
        ext_t: list[float] = []
        bare_c: list[float] = []
        ext_c: list[float] = []
        files_t: list[float] = []
        files_c: list[float] = []
        for i in range(args.repeats):
            bt, bc = bare_reads(slide, windows, 400, args.workers)
            bare_t.append(bt)
            bare_c.append(bc)
            plain = work / f"plain{i}"
            ft, fc = bare_reads(slide, windows, 400, args.workers,
                                (plain, cfg.format, cfg.jpeg_quality))
            files_t.append(ft)
            files_c.append(fc)
            shutil.rmtree(plain, ignore_errors=True)
            out = work / f"ds{i}"
            shutil.rmtree(out, ignore_errors=True)
            t0, c0 = time.perf_counter(), time.process_time()
            res = run_job(P.extract(src, out, ClassScheme.paper(), cfg))
            ext_t.append(time.perf_counter() - t0)
            ext_c.append(time.process_time() - c0)
            shutil.rmtree(out, ignore_errors=True)
        n = len(windows)
        bare_rate = n / min(bare_t)
        ext_rate = n / min(ext_t)
        # Paired ratios (each extract run against the bare run just before it) resist load swings.
        paired = sorted(b / e for b, e in zip(bare_t, ext_t, strict=False))
        paired_median = (
            paired[len(paired) // 2]
            if len(paired) % 2
            else (paired[len(paired) // 2 - 1] + paired[len(paired) // 2]) / 2
        )
        report = {
            "benchmark": "extract",
            "slide_px": [args.size, args.size],
            "windows": n,
            "patches_written": res.written,
            "patch_size": 400,
            "workers": args.workers,
            "format": args.format,
            "gland_filter": bool(args.gland),
            "tissue_filter": bool(args.tissue),
            "bare_read_patches_per_s": round(bare_rate, 1),
            "extract_patches_per_s": round(ext_rate, 1),
            "ratio": round(ext_rate / bare_rate, 3),
            "ratio_paired_median": round(paired_median, 3),
            # CPU seconds per patch do not depend on what else runs on the machine.
            "bare_cpu_ms_per_patch": round(1000 * min(bare_c) / n, 2),
            "extract_cpu_ms_per_patch": round(1000 * min(ext_c) / n, 2),
            "cpu_ratio": round(min(bare_c) / min(ext_c), 3),
            # the least work giving the same files: read, encode, one file per patch
            "read_encode_write_patches_per_s": round(n / min(files_t), 1),
            "ratio_vs_read_encode_write": round(min(files_t) / min(ext_t), 3),
            "read_encode_write_cpu_ms_per_patch": round(1000 * min(files_c) / n, 2),
            "cpu_ratio_vs_read_encode_write": round(min(files_c) / min(ext_c), 3),
            "goal_ratio": 0.8,
            "bare_s": [round(t, 2) for t in bare_t],
            "extract_s": [round(t, 2) for t in ext_t],
            "cpu_count": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 1),
            "python": platform.python_version(),
        }
        print(json.dumps(report, indent=2))
    finally:
        _remove_unless_kept(work, args.keep)
    return 0


def _remove_unless_kept(work: Path, keep: Path | None) -> None:
    """The benchmark's working folder goes unless ``--keep`` named it."""
    if keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
