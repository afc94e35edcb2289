"""Peak memory of whole-slide prediction: does it stay bounded as the slide grows?

For each ``--sizes`` side (default 8,192 and 30,000 px) a pyramidal TIFF with tissue-like content
(:class:`crc_testkit.synthetic.TissuePattern`, 0.5 µm/px) is generated, then a fresh child process
loads a DenseNet121 (random weights, 5 classes, the real architecture) and runs
:func:`crc_core.inference.predict` over every tissue window of the whole slide, with the CAM on.
The child samples its resident set every 50 ms and reports the RSS after loading the model
(``rss_before_mb``), the peak during prediction (``peak_rss_mb``), their difference and
``ru_maxrss``. Bounded means the peak hardly changes between the small and the large slide.

Windows are 112 px at 2 µm/px (pyramid level 2, 448 level-0 px) resized to a 64 px network input,
so the CPU run stays minutes long; memory depends on the window count, the slide cache (256 MiB by
default, ``CRC_TILE_CACHE_MB``), batches in flight and the result grids, not on the model's speed.
Prints one JSON object per size and a final summary. Usage::

    python benchmarks/memory_bench.py [--sizes 8192 30000] [--workdir /tmp/crc-membench]
                                      [--batch-size 32] [--workers 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _Sampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, _rss_mb())
            self.stop.wait(0.05)


def child(slide_path: str, batch: int, workers: int, threads: int) -> dict[str, object]:
    import torch

    torch.set_num_threads(threads)
    from crc_core.classes import ClassScheme
    from crc_core.inference import LoadedModel, predict
    from crc_core.jobs import run_job
    from crc_core.models import build_model, get_spec
    from crc_core.slide import open_slide

    spec = get_spec("densenet121")
    torch.manual_seed(0)
    lm = LoadedModel(build_model("densenet121", 5).eval(), "densenet121", ClassScheme.paper(),
                     input_size=64, patch_size=112, mpp=2.0, mean=spec.mean, std=spec.std)
    with open_slide(slide_path) as slide:
        before = _rss_mb()
        sampler = _Sampler()
        sampler.start()
        t0, c0 = time.perf_counter(), time.process_time()
        pred = run_job(predict(slide, lm, cam=True, batch_size=batch, device="cpu",
                               workers=workers))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        sampler.stop.set()
        sampler.join()
        cache_max = slide.cache.max_bytes
        dims = slide.dimensions
    return {
        "size": list(dims),
        "windows_predicted": int(pred.predicted.sum()),
        "grid": list(pred.predicted.shape),
        "predict_s": round(wall, 1),
        "predict_cpu_s": round(cpu, 1),
        "rss_before_mb": round(before, 1),
        "peak_rss_mb": round(sampler.peak, 1),
        "peak_minus_before_mb": round(sampler.peak - before, 1),
        "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "tile_cache_max_mb": round(cache_max / 2**20, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8192, 30000])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/crc-membench"))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.batch_size, args.workers, args.threads)))
        return 0

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # crc_testkit: not installed
    from crc_testkit.synthetic import TissuePattern, write_pyramid_tiff

    args.workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for side in args.sizes:
        path = args.workdir / f"membench-{side}.tif"
        if not path.exists():
            t0 = time.perf_counter()
            write_pyramid_tiff(path, side, side, TissuePattern(seed=7), mpp=0.5)
            print(f"# wrote {path} ({side} px square) in {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr)
        res = subprocess.run(
            [sys.executable, __file__, "--child", str(path), "--batch-size", str(args.batch_size),
             "--workers", str(args.workers), "--threads", str(args.threads)],
            capture_output=True, text=True, check=True)
        row = json.loads(res.stdout.strip().splitlines()[-1])
        row["file_mb"] = round(path.stat().st_size / 2**20, 1)
        row["decoded_level0_mb"] = round(side * side * 3 / 2**20, 1)
        print(json.dumps(row), flush=True)
        results.append(row)
    if len(results) >= 2:
        small, large = results[0], results[-1]
        print(json.dumps({
            "area_ratio": round((large["size"][0] * large["size"][1])
                                / (small["size"][0] * small["size"][1]), 1),
            "windows_ratio": round(large["windows_predicted"] / max(1, small["windows_predicted"]),
                                   1),
            "peak_rss_ratio": round(large["peak_rss_mb"] / small["peak_rss_mb"], 2),
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
