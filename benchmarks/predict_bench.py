"""Benchmark of `crc_core.inference.predict`: windows/s end to end, per backend, against the bare
PyTorch eager forward pass.

A whole pyramidal TIFF with tissue-like content (crc_testkit.synthetic.TissuePattern, 0.5 µm/px) is
generated and, in the same process with the same weights, batch size, threads and device:

- ``bare`` (the reference): the PyTorch **eager** forward pass (contiguous NCHW, float32 on the
  CPU) on random input tensors already on the device; the channels_last and ONNX Runtime bare
  passes are reported beside it;
- ``predict`` for each ``--backend``: the whole job (thumbnail tissue mask, window reading and
  decoding in reader threads, normalisation, forward, softmax, optional CAM, result assembly) over
  every tissue window, including the ONNX session (export cached before the timed runs).

Rates are windows per second; ``ratio_vs_torch_eager_<backend>`` = predict / bare eager (issue 15
goal for the default backend on the CPU: >= 1.8). Runs alternate (each backend, then the bare
passes) and the best of each is kept; ``max_prob_diff_<backend>_vs_torch`` is the largest
probability difference on the same windows. Prints one JSON object. Usage::

    python benchmarks/predict_bench.py [--size 3584] [--device cpu|cuda] [--batch-size 32]
                                       [--workers 2] [--arch resnet50] [--cam] [--repeats 2]
                                       [--backend torch,onnx] [--threads 2]
    python benchmarks/predict_bench.py --cam-cost [--batch-size 8]  # CAM, Grad-CAM vs forward
"""

from __future__ import annotations

import argparse
import copy
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
from typing import Any

import numpy as np
import torch

from crc_core.classes import ClassScheme
from crc_core.inference import LoadedModel, _read_windows, make_scorer, predict, resolve_device
from crc_core.jobs import run_job
from crc_core.models import build_model, get_spec
from crc_core.runtime import Scorer

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


def _eager_forward(model: torch.nn.Module) -> Any:
    """The bare PyTorch eager forward pass (contiguous NCHW, inference mode) of ``model``."""
    from crc_core.models import main_logits

    def fwd(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return main_logits(model(x)).float()

    return fwd


def bare_rate(forward: Any, device: torch.device, n: int, batch: int, size: int,
              channels_last: bool = False) -> tuple[float, float]:
    """Windows/s of ``forward`` alone on random normalised tensors on the device, and CPU
    s/window."""
    x = torch.randn(batch, 3, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    done = 0
    forward(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    while done < n:
        forward(x)
        done += batch
    if device.type == "cuda":
        torch.cuda.synchronize()
    return done / (time.perf_counter() - t0), (time.process_time() - c0) / done


def cam_cost(device: torch.device, batch: int, repeats: int = 3) -> dict[str, dict[str, float]]:
    """Seconds per batch of the forward pass, CAM and Grad-CAM (min of ``repeats``) for each architecture."""
    from crc_core.cam import normalize_cams, upsample_cams
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
        runner = Scorer(lm.model, arch, spec.mean, spec.std, device, batch)
        x = torch.randn(batch, 3, spec.input_size, spec.input_size, device=device)

        def fwd(runner: Scorer = runner, x: torch.Tensor = x) -> None:
            torch.softmax(runner.forward(x), 1)

        def cam(method: str, runner: Scorer = runner, x: torch.Tensor = x) -> None:
            _, c = runner.logits_and_cams(x, None, method)
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


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=3584, help="slide side in level-0 px (3584)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2, help="reader threads (2)")
    ap.add_argument("--threads", type=int, default=0, help="model CPU threads (0: torch default)")
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--backend", default="torch,onnx",
                    help="comma-separated backends to time (auto, torch, onnx; default torch,onnx)")
    ap.add_argument("--quantize", default="none", help="for the onnx backend: none or int8")
    ap.add_argument("--cam", action="store_true", help="also compute CAM heatmaps")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: temp)")
    ap.add_argument(
        "--cam-cost",
        action="store_true",
        help="only measure CAM and Grad-CAM against the forward pass (3 architectures)",
    )
    return ap.parse_args(argv)


def _bench_model(arch: str) -> LoadedModel:
    spec = get_spec(arch)
    torch.manual_seed(0)
    scheme = ClassScheme.paper()
    return LoadedModel(build_model(arch, len(scheme)).eval(), arch, scheme,
                       input_size=spec.input_size, patch_size=spec.input_size, mpp=0.5,
                       mean=spec.mean, std=spec.std, identity={"name": f"{arch}-bench"})


def _bare_forwards(lm: LoadedModel, eager: torch.nn.Module, args: argparse.Namespace,
                   device: torch.device) -> dict[str, tuple[Any, bool]]:
    """The bare passes timed: eager (the reference), channels_last, and ONNX Runtime when asked."""
    out: dict[str, tuple[Any, bool]] = {"bare_torch_eager": (_eager_forward(eager), False)}
    torch_scorer = make_scorer(lm, device, args.batch_size, backend="torch", threads=args.threads)
    out["bare_torch_channels_last"] = (torch_scorer.forward, True)
    if "onnx" in args.backends or ("auto" in args.backends and device.type == "cpu"):
        onnx = make_scorer(lm, device, args.batch_size, backend="onnx", threads=args.threads,
                           quantize=args.quantize)
        out["bare_onnx"] = (onnx.forward, False)
    return out


def _measure(args: argparse.Namespace, slide: Path, device: torch.device) -> dict[str, Any]:
    """Alternating bare and end-to-end runs; best rate of each, probabilities of the last run."""
    lm = _bench_model(args.arch)
    size = lm.input_size
    eager = copy.deepcopy(lm.model).to(device).eval()  # contiguous weights, untouched by Scorer
    bares = _bare_forwards(lm, eager, args, device)
    rates: dict[str, list[float]] = {k: [] for k in list(bares) + args.backends}
    cpu: dict[str, list[float]] = {k: [] for k in rates}
    probs: dict[str, np.ndarray] = {}
    n = args.batch_size
    pred = None
    with warnings.catch_warnings(), _RssSampler() as rss:
        warnings.simplefilter("ignore")
        for _ in range(args.repeats):
            for b in args.backends:
                t0, c0 = time.perf_counter(), time.process_time()
                pred = run_job(predict(slide, lm, cam=args.cam, batch_size=args.batch_size,
                                       device=device, workers=args.workers, backend=b,
                                       threads=args.threads, quantize=args.quantize))
                if device.type == "cuda":
                    torch.cuda.synchronize()
                n = int(pred.predicted.sum())
                rates[b].append(n / (time.perf_counter() - t0))
                cpu[b].append((time.process_time() - c0) / max(n, 1))
                probs[b] = pred.probs
            for k, (fwd, cl) in bares.items():
                r, c = bare_rate(fwd, device, max(n, args.batch_size), args.batch_size, size, cl)
                rates[k].append(r)
                cpu[k].append(c)
    assert pred is not None
    return {"rates": rates, "cpu": cpu, "probs": probs, "pred": pred, "n": n, "rss": rss.peak}


def _report(args: argparse.Namespace, m: dict[str, Any], device: torch.device) -> dict[str, Any]:
    rates, pred = m["rates"], m["pred"]
    best = {k: max(v) for k, v in rates.items()}
    ref = best["bare_torch_eager"]
    out: dict[str, Any] = {
        "benchmark": "predict", "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "arch": args.arch, "input_size": pred.grid.input_size, "cam": bool(args.cam),
        "quantize": args.quantize, "slide_px": [args.size, args.size],
        "grid": list(pred.grid.shape), "windows_predicted": m["n"],
        "batch_size": args.batch_size, "workers": args.workers,
        "threads": args.threads or torch.get_num_threads(),
        "bare_windows_per_s_torch_eager": round(ref, 2),
    }
    for k in rates:
        if k.startswith("bare_") and k != "bare_torch_eager":
            out[f"bare_windows_per_s_{k[5:]}"] = round(best[k], 2)
            out[f"bare_ratio_vs_torch_eager_{k[5:]}"] = round(best[k] / ref, 3)
            out[f"bare_cpu_s_per_window_{k[5:]}"] = round(min(m["cpu"][k]), 4)
    cpu = {k: min(v) for k, v in m["cpu"].items()}
    out["bare_cpu_s_per_window_torch_eager"] = round(cpu["bare_torch_eager"], 4)
    for b in args.backends:
        out[f"predict_windows_per_s_{b}"] = round(best[b], 2)
        out[f"ratio_vs_torch_eager_{b}"] = round(best[b] / ref, 3)
        out[f"predict_cpu_s_per_window_{b}"] = round(cpu[b], 4)
        # CPU seconds (all threads) per window: robust to other load on the machine.
        out[f"cpu_ratio_vs_torch_eager_{b}"] = round(cpu["bare_torch_eager"] / cpu[b], 3)
    base = m["probs"].get("torch")
    if base is not None:
        for b, p in m["probs"].items():
            if b != "torch":
                out[f"max_prob_diff_{b}_vs_torch"] = float(f"{np.nanmax(np.abs(p - base)):.3g}")
    out["runs_windows_per_s"] = {k: [round(r, 2) for r in v] for k, v in rates.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    args.backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.cam_cost:
        print(json.dumps({"benchmark": "cam_cost", "device": str(device),
                          "batch_size": args.batch_size,
                          "results": cam_cost(device, args.batch_size),
                          "load_average_1min_at_end": round(os.getloadavg()[0], 2)}, indent=2))
        return 0
    work = args.keep or Path(tempfile.mkdtemp(prefix="crc-predict-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        slide = work / f"bench-{args.size}.tif"
        t0 = time.perf_counter()
        if not slide.exists():
            write_pyramid_tiff(slide, args.size, args.size, TissuePattern(seed=3), mpp=0.5)
        gen_s = time.perf_counter() - t0
        load0 = os.getloadavg()[0]
        m = _measure(args, slide, device)
        out = _report(args, m, device)
        # Reading + decoding + resizing alone, one thread, CPU seconds per window.
        from crc_core.slide import open_slide

        cells = np.argwhere(m["pred"].predicted).astype(np.int32)
        with open_slide(slide) as s:
            c0 = time.process_time()
            _read_windows(s, m["pred"].grid, cells)
            out["read_decode_cpu_s_per_window"] = round(
                (time.process_time() - c0) / max(len(cells), 1), 4)
        out.update({
            "peak_rss_mb_during_runs": round(m["rss"], 1),
            "peak_rss_mb_process": round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "slide_generation_s": round(gen_s, 1), "cpu_count": os.cpu_count(),
            "load_average_1min_at_start": round(load0, 2),
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
            "python": platform.python_version(), "torch": torch.__version__,
        })
        print(json.dumps(out, indent=2))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
