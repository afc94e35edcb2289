"""Memory layout and thread count of the PyTorch paths on the CPU: contiguous (NCHW) against
channels_last, for the inference forward pass and for one training step (forward, backward, SGD).

Everything is measured in one process, alternating the variants (``--repeats`` rounds, best of
each), on random input, with the registry's architectures and random weights. Rates are images per
second; ``ratio_channels_last`` = channels_last / contiguous. ``--threads`` takes a comma list: each
count is measured in its own round (``torch.set_num_threads``). Prints one JSON object. Usage::

    python benchmarks/cpu_layout_bench.py [--arch resnet50,densenet121] [--size 224] [--batch 16]
                                          [--threads 2] [--train-size 112] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

from crc_core.models import build_model, main_logits


def _rate(step: Callable[[], None], images: int, n: int) -> float:
    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return images * n / (time.perf_counter() - t0)


def _steps(arch: str, size: int, train_size: int, batch: int, channels_last: bool
           ) -> dict[str, Callable[[], None]]:
    """An inference forward and a training step of ``arch`` in one memory layout."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    infer_model = build_model(arch, 5).eval().to(memory_format=fmt)
    train_model = build_model(arch, 5).train().to(memory_format=fmt)
    opt = torch.optim.SGD(train_model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=fmt)
    xt = torch.randn(batch, 3, train_size, train_size).contiguous(memory_format=fmt)
    y = torch.randint(0, 5, (batch,))
    loss_fn = nn.CrossEntropyLoss()

    def infer() -> None:
        with torch.inference_mode():
            infer_model(x)

    def train() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(main_logits(train_model(xt)), y).backward()
        opt.step()

    return {"inference": infer, "train_step": train}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet50,densenet121")
    ap.add_argument("--size", type=int, default=224, help="inference input side (224)")
    ap.add_argument("--train-size", type=int, default=112, help="training input side (112)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", default="2", help="comma list of torch thread counts (2)")
    ap.add_argument("--iters", type=int, default=3, help="timed steps per measurement (3)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    load0 = os.getloadavg()[0]
    results: dict[str, dict[str, float]] = {}
    for arch in [a.strip() for a in args.arch.split(",") if a.strip()]:
        if arch == "inception_v3" and args.train_size < 75:
            continue
        variants = {cl: _steps(arch, args.size, args.train_size, args.batch, cl)
                    for cl in (False, True)}
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            best: dict[str, float] = {}
            for _ in range(args.repeats):
                for cl, steps in variants.items():
                    for kind, step in steps.items():
                        key = f"{kind}_{'channels_last' if cl else 'contiguous'}"
                        best[key] = max(best.get(key, 0.0), _rate(step, args.batch, args.iters))
            out = {k: round(v, 2) for k, v in best.items()}
            for kind in ("inference", "train_step"):
                out[f"{kind}_ratio_channels_last"] = round(
                    best[f"{kind}_channels_last"] / best[f"{kind}_contiguous"], 3)
            results[f"{arch}@{threads}threads"] = out
    print(json.dumps({"benchmark": "cpu_layout", "size": args.size, "train_size": args.train_size,
                      "batch": args.batch, "results": results, "cpu_count": os.cpu_count(),
                      "load_average_1min_at_start": round(load0, 2),
                      "load_average_1min_at_end": round(os.getloadavg()[0], 2),
                      "torch": torch.__version__}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
