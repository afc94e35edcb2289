"""Training throughput: end-to-end `fit` images/s against the bare training step, per architecture.

The *bare step* is forward + backward + optimizer step on random tensors already on the device, in
the same process and with the same settings (batch, size, bf16 autocast on CUDA, channels_last): the
limit the data path can approach. *End to end* is `crc_core.training.fit` on real images (EBHI tiles
resized to ``--size``; decoding, cache, augmentation, loss, optimizer): the training images/s of
its last epoch (the first one warms up cuDNN). Goal: ratio >= 0.95 on a GPU, >= 0.9 on the CPU.

Usage::

    python benchmarks/train_bench.py --device cuda --size 400 --batch 32 --images 2048 \
        --out bench.json
    python benchmarks/train_bench.py --device cpu --size 64 --batch 8 --images 32 --archs resnet50
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crc_core.jobs import run_job  # noqa: E402
from crc_core.models import MODELS, build_model, uses_aux  # noqa: E402
from crc_core.training import compute_loss, fit, make_config, make_optimizer  # noqa: E402


def bare_step_rate(arch: str, size: int, batch: int, steps: int, device: torch.device) -> float:
    """Images/s of forward+backward+step on random device tensors (warm-up excluded)."""
    cfg = make_config(arch, "paper", batch_size=batch, image_size=size)
    model = build_model(arch, 3, aux_logits=uses_aux(arch, size)).to(device)
    model = model.to(memory_format=torch.channels_last).train()
    opt = make_optimizer(cfg, model.parameters())
    x = torch.randn(batch, 3, size, size, device=device).contiguous(
        memory_format=torch.channels_last)
    y = torch.randint(0, 3, (batch,), device=device)
    autocast = device.type == "cuda"

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            loss = compute_loss(model(x), y, cfg)
        loss.backward()
        opt.step()

    for _ in range(max(2, steps // 5)):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * batch / (time.perf_counter() - t0)


def end_to_end_rate(arch: str, data: Path, size: int, batch: int, images: int, epochs: int,
                    device: torch.device, workdir: Path) -> dict:
    """Images/s of `fit` (last epoch) on ``images`` real tiles resized to ``size``."""
    with open(data, newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows = [r for r in rows if r.get("ebhi_class") in ("Normal", "Adenocarcinoma", "Polyp",
                                                       "Low-grade IN")]
    step = max(1, len(rows) // images)
    sub = workdir / f"{arch}.csv"
    with open(sub, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "ebhi_class", "case_id"])
        for r in rows[::step][:images]:
            w.writerow([str(data.parent / r["image"]), r["ebhi_class"], r["case_id"]])
    cfg = make_config(arch, "paper", epochs=epochs, batch_size=batch, image_size=size,
                      device=device.type, val_fraction=0.0,
                      data={"label_column": "ebhi_class", "group_column": "case_id"})
    summary = run_job(fit(sub, workdir / f"run-{arch}", cfg))
    last = summary["history"][-1]
    return {"images_per_s": last["images_per_s"], "epoch_seconds": last["seconds"],
            "train_images": summary["train_images"], "cache": summary["cache"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--archs", default=",".join(MODELS))
    ap.add_argument("--size", type=int, default=400)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--images", type=int, default=1024, help="real images per end-to-end epoch")
    ap.add_argument("--epochs", type=int, default=2, help="end-to-end epochs (last one timed)")
    ap.add_argument("--steps", type=int, default=20, help="timed bare steps")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--data", default=str(Path(os.environ.get(
        "CRC_SHARED_DATA", ROOT.parent / "shared" / "data")) / "ebhi" / "labels.csv"))
    ap.add_argument("--out", help="JSON file to write (also printed)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device("cuda" if (args.device == "auto" and torch.cuda.is_available())
                       else ("cpu" if args.device == "auto" else args.device))
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    data = Path(args.data)
    if not data.is_file():
        sys.stderr.write(f"train_bench: {data} not found (set CRC_SHARED_DATA)\n")
        return 2
    result = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda"
              else platform.processor() or "cpu",
              "threads": torch.get_num_threads(), "size": args.size, "batch": args.batch,
              "torch": torch.__version__, "archs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs.split(","):
            # Bare step measured before and after the end-to-end run (mean), so a change of load on
            # a shared machine hits both sides alike.
            bare1 = bare_step_rate(arch, args.size, args.batch, args.steps, dev)
            e2e = end_to_end_rate(arch, data, args.size, args.batch, args.images, args.epochs, dev,
                                  Path(tmp))
            bare2 = bare_step_rate(arch, args.size, args.batch, args.steps, dev)
            bare = (bare1 + bare2) / 2
            goal = 0.95 if dev.type == "cuda" else 0.9
            result["archs"][arch] = {"bare_images_per_s": round(bare, 2),
                                     "end_to_end_images_per_s": round(e2e["images_per_s"], 2),
                                     "ratio": round(e2e["images_per_s"] / bare, 3),
                                     "goal": goal, "met": e2e["images_per_s"] / bare >= goal,
                                     **{k: e2e[k] for k in ("train_images", "cache")}}
            sys.stderr.write(f"{arch}: {result['archs'][arch]}\n")
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
