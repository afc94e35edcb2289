"""Benchmark of `crc_core.inference.predict`: windows/s end to end against the bare model forward pass.

A whole pyramidal TIFF with tissue-like content (crc_testkit.synthetic.TissuePattern, 0.5 µm/px) is
generated and, in the same process with the same model, batch size and device:

- ``bare``: the model's forward pass on random input tensors already on the device (the limit);
- ``predict``: the whole job (thumbnail tissue mask, window reading and decoding in reader threads,
  upload and normalisation, forward, softmax, optional CAM, result assembly) over every tissue window.

Rates are windows per second; ``ratio`` = predict / bare (goal >= 0.9). Bare and predict runs alternate
and the best of each is kept. Peak RSS of the process is reported (``ru_maxrss``) together with the
peak sampled during the predict runs only. Prints one JSON object. Usage::

    python benchmarks/predict_bench.py [--size 3584] [--device cpu|cuda] [--batch-size 32]
                                       [--workers 2] [--arch resnet50] [--cam] [--repeats 2]
    python benchmarks/predict_bench.py --cam-cost [--batch-size 8]   # CAM / Grad-CAM vs forward, 3 archs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch

from crc_core.classes import ClassScheme
from crc_core.inference import LoadedModel, _read_windows, _Runner, predict, resolve_device
from crc_core.jobs import run_job
from crc_core.models import build_model, get_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # crc_testkit: not installed
from crc_testkit.synthetic import TissuePattern, write_pyramid_tiff  # noqa: E402


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _RssSampler:
    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mb())
            self._stop.wait(0.05)

    def __enter__(self) -> _RssSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def bare_rate(runner: _Runner, n: int, batch: int, size: int) -> tuple[float, float]:
    """Windows/s of the model alone on random normalised tensors on the device, and CPU s/window."""
    x = torch.randn(batch, 3, size, size, device=runner.device)
    if runner.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    done = 0
    runner.forward(x)
    if runner.device.type == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    while done < n:
        runner.forward(x)
        done += batch
    if runner.device.type == "cuda":
        torch.cuda.synchronize()
    return done / (time.perf_counter() - t0), (time.process_time() - c0) / done


def cam_cost(device: torch.device, batch: int, repeats: int = 3) -> dict[str, dict[str, float]]:
    """Seconds per batch of the forward pass, CAM and Grad-CAM (min of ``repeats``) for each architecture."""
    from crc_core.cam import compute_cams, normalize_cams, upsample_cams
    from crc_core.models import MODELS

    out: dict[str, dict[str, float]] = {}
    for arch, spec in MODELS.items():
        torch.manual_seed(0)
        lm = LoadedModel(
            build_model(arch, 5).eval(),
            arch,
            ClassScheme.paper(),
            spec.input_size,
            spec.input_size,
            mean=spec.mean,
            std=spec.std,
        )
        runner = _Runner(lm, device, batch)
        x = torch.randn(batch, 3, spec.input_size, spec.input_size, device=device)

        def fwd(runner: _Runner = runner, x: torch.Tensor = x) -> None:
            torch.softmax(runner.forward(x), 1)

        def cam(
            method: str, runner: _Runner = runner, x: torch.Tensor = x, arch: str = arch
        ) -> None:
            with runner._autocast():
                _, c = compute_cams(runner.lm.model, arch, x, None, method)  # type: ignore[arg-type]
            upsample_cams(normalize_cams(c), 16)

        fns = {"forward": fwd, "cam": partial(cam, "cam"), "gradcam": partial(cam, "gradcam")}
        times: dict[str, list[float]] = {k: [] for k in fns}
        for f in fns.values():
            f()
        for _ in range(repeats):
            for k, f in fns.items():
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                f()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[k].append(time.perf_counter() - t0)
        best = {k: min(v) for k, v in times.items()}
        out[arch] = {
            "forward_s": round(best["forward"], 4),
            "cam_s": round(best["cam"], 4),
            "gradcam_s": round(best["gradcam"], 4),
            "cam_over_forward": round(best["cam"] / best["forward"], 3),
            "gradcam_over_forward": round(best["gradcam"] / best["forward"], 3),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=3584, help="slide side in level-0 px (3584)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2, help="reader threads (2)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--cam", action="store_true", help="also compute CAM heatmaps")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: temp)")
    ap.add_argument(
        "--cam-cost",
        action="store_true",
        help="only measure CAM and Grad-CAM against the forward pass (3 architectures)",
    )
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.cam_cost:
        print(
            json.dumps(
                {
                    "benchmark": "cam_cost",
                    "device": str(device),
                    "batch_size": args.batch_size,
                    "results": cam_cost(device, args.batch_size),
                    "load_average_1min_at_end": round(os.getloadavg()[0], 2),
                },
                indent=2,
            )
        )
        return 0
    spec = get_spec(args.arch)
    work = args.keep or Path(tempfile.mkdtemp(prefix="crc-predict-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        slide = work / f"bench-{args.size}.tif"
        t0 = time.perf_counter()
        if not slide.exists():
            write_pyramid_tiff(slide, args.size, args.size, TissuePattern(seed=3), mpp=0.5)
        gen_s = time.perf_counter() - t0
        torch.manual_seed(0)
        scheme = ClassScheme.paper()
        lm = LoadedModel(
            build_model(args.arch, len(scheme)).eval(),
            args.arch,
            scheme,
            input_size=spec.input_size,
            patch_size=spec.input_size,
            mpp=0.5,
            mean=spec.mean,
            std=spec.std,
            identity={"name": f"{args.arch}-bench"},
        )
        runner = _Runner(lm, device, args.batch_size)
        pred_t: list[float] = []
        pred_cpu: list[float] = []
        bare: list[float] = []
        bare_cpu: list[float] = []
        n = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with _RssSampler() as rss:
                for _ in range(args.repeats):
                    t0, c0 = time.perf_counter(), time.process_time()
                    pred = run_job(
                        predict(
                            slide,
                            lm,
                            cam=args.cam,
                            batch_size=args.batch_size,
                            device=device,
                            workers=args.workers,
                        )
                    )
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    pred_t.append(time.perf_counter() - t0)
                    n = int(pred.predicted.sum())
                    pred_cpu.append((time.process_time() - c0) / max(n, 1))
                    rate, cpu = bare_rate(
                        runner, max(n, args.batch_size), args.batch_size, spec.input_size
                    )
                    bare.append(rate)
                    bare_cpu.append(cpu)
        # Reading + decoding + resizing alone, one thread, CPU seconds per window.
        from crc_core.slide import open_slide

        cells = np.argwhere(pred.predicted).astype(np.int32)
        with open_slide(slide) as s:
            c0 = time.process_time()
            _read_windows(s, pred.grid, cells)
            read_cpu = (time.process_time() - c0) / max(len(cells), 1)
        pred_rate = n / min(pred_t)
        bare_best = max(bare)
        print(
            json.dumps(
                {
                    "benchmark": "predict",
                    "device": str(device),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                    "arch": args.arch,
                    "cam": bool(args.cam),
                    "slide_px": [args.size, args.size],
                    "grid": list(pred.grid.shape),
                    "windows_predicted": n,
                    "batch_size": args.batch_size,
                    "workers": args.workers,
                    "torch_threads": torch.get_num_threads(),
                    "bare_windows_per_s": round(bare_best, 2),
                    "predict_windows_per_s": round(pred_rate, 2),
                    "ratio": round(pred_rate / bare_best, 3),
                    "goal_ratio": 0.9,
                    "predict_s": [round(t, 2) for t in pred_t],
            # CPU seconds (all threads) per window: robust to other load on the machine.
            "predict_cpu_s_per_window": round(min(pred_cpu), 4),
            "bare_cpu_s_per_window": round(min(bare_cpu), 4),
            "cpu_ratio": round(min(bare_cpu) / min(pred_cpu), 3),
            "read_decode_cpu_s_per_window": round(read_cpu, 4),
                    "bare_windows_per_s_runs": [round(b, 2) for b in bare],
                    "peak_rss_mb_during_predict": round(rss.peak, 1),
                    "peak_rss_mb_process": round(
                        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
                    ),
                    "slide_generation_s": round(gen_s, 1),
                    "cpu_count": os.cpu_count(),
                    "load_average_1min_at_end": round(os.getloadavg()[0], 2),
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                },
                indent=2,
            )
        )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
