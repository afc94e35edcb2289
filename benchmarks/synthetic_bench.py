"""Benchmark of `crc_testkit.synthetic.write_pyramid_tiff` against the bare work it cannot avoid.

``bare``: render and JPEG-encode every level-0 tile through the same thread pool (results
discarded); ``writer``: the whole pyramid written to a temporary file. Prints one JSON object with
the ratio. The writer also encodes the lower levels (1/3 more tiles): about 1.33 is the naive floor.

Usage::

    python benchmarks/synthetic_bench.py [--size 12288] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # crc_testkit: not installed
from crc_testkit.synthetic import TissuePattern, _encode_tile, write_pyramid_tiff  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=12288, help="level-0 width and height in px")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    size, tile = args.size, 256
    src = TissuePattern(seed=0)
    coords = [(x, y) for y in range(0, size, tile) for x in range(0, size, tile)]

    def bare_one(xy: tuple[int, int]) -> bytes:
        x, y = xy
        return _encode_tile(src(x, y, min(tile, size - x), min(tile, size - y)), tile, 85)

    with ThreadPoolExecutor(args.workers) as pool:
        t0 = time.perf_counter()
        for _ in pool.map(bare_one, coords):
            pass
        bare = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "p.tif")
        t0 = time.perf_counter()
        write_pyramid_tiff(out, size, size, src, workers=args.workers)
        full = time.perf_counter() - t0
        mb = os.path.getsize(out) / 1e6
    print(
        json.dumps(
            {
                "size": size,
                "workers": args.workers,
                "tiles_level0": len(coords),
                "bare_s": round(bare, 2),
                "writer_s": round(full, 2),
                "ratio": round(full / bare, 2),
                "file_mb": round(mb, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
