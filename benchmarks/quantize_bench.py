"""int8 quantisation (``--quantize int8``): speed and accuracy change against the float ONNX model.

Scores EBHI tiles (``../shared/data/ebhi/labels.csv``; Normal, Low-grade IN and High-grade IN as
Adenoma, Adenocarcinoma: the demo model's three classes) with the ``onnx`` backend twice, float32
and ONNX Runtime dynamic int8, through :func:`crc_core.inference.make_scorer` (what ``crc predict``
and ``crc evaluate`` use), and reports both accuracies, their difference, the share of tiles whose
predicted class changed, the largest probability difference and the images/s of each (alternating,
best of ``--repeats``). Every ``--step``-th eligible tile is taken. Prints one JSON object. Usage::

    python benchmarks/quantize_bench.py [--checkpoint models/demo_resnet50_3class.pt] [--step 10]
                                        [--threads 2] [--batch-size 16] [--repeats 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from crc_core.inference import load_model, make_scorer
from crc_core.preprocess import decode_rgb, resample

ROOT = Path(__file__).resolve().parents[1]
EBHI = ROOT.parent / "shared" / "data" / "ebhi"
TO_MODEL = {"Normal": "Normal", "Low-grade IN": "Adenoma", "High-grade IN": "Adenoma",
            "Adenocarcinoma": "Adenocarcinoma"}


def _tiles(step: int, size: int, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    with open(EBHI / "labels.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["ebhi_class"] in TO_MODEL]
    rows = rows[::step]
    imgs = np.stack([resample(decode_rgb(EBHI / r["image"]), size) for r in rows])
    labels = np.array([names.index(TO_MODEL[r["ebhi_class"]]) for r in rows])
    return imgs, labels


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=ROOT / "models/demo_resnet50_3class.pt")
    ap.add_argument("--step", type=int, default=10, help="take every STEP-th tile (10)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    load0 = os.getloadavg()[0]
    cpu = torch.device("cpu")
    lm = load_model(args.checkpoint, cpu)
    imgs, labels = _tiles(args.step, lm.input_size, lm.scheme.names)
    scorers = {q: make_scorer(lm, cpu, args.batch_size, backend="onnx", threads=args.threads,
                              quantize=q) for q in ("none", "int8")}
    probs: dict[str, np.ndarray] = {}
    rate: dict[str, float] = {q: 0.0 for q in scorers}
    for _ in range(args.repeats):
        for q, sc in scorers.items():
            t0 = time.perf_counter()
            probs[q], _ = sc.run(imgs)
            rate[q] = max(rate[q], len(imgs) / (time.perf_counter() - t0))
    acc = {q: float((p.argmax(1) == labels).mean()) for q, p in probs.items()}
    out = {
        "benchmark": "quantize", "checkpoint": str(args.checkpoint), "arch": lm.arch,
        "input_size": lm.input_size, "tiles": len(imgs), "threads": args.threads,
        "accuracy_float32": round(acc["none"], 4), "accuracy_int8": round(acc["int8"], 4),
        "accuracy_change": round(acc["int8"] - acc["none"], 4),
        "predicted_class_changed": round(float(
            (probs["int8"].argmax(1) != probs["none"].argmax(1)).mean()), 4),
        "max_prob_diff": round(float(np.abs(probs["int8"] - probs["none"]).max()), 4),
        "images_per_s_float32": round(rate["none"], 2), "images_per_s_int8": round(rate["int8"], 2),
        "speed_ratio_int8": round(rate["int8"] / rate["none"], 3),
        "load_average_1min_at_start": round(load0, 2),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
