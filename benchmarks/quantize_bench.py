"""int8 quantisation: speed and accuracy change against the float ONNX model on a run's test images.

For a checkpoint that records its split (every model ``crc train`` writes), the run's **test**
images are found in ``--data`` by content (as ``crc evaluate --subset auto`` finds them), decoded,
stain-normalised and resampled as evaluation does, and scored with the ``onnx`` backend in float32,
static int8 (``--quantize int8-static``: calibrated on the run's own *training* images, see
:mod:`crc_core.inference.calibration`) and, with ``--dynamic``, dynamic int8 (``--quantize int8``).
Reports per variant accuracy, balanced accuracy, mAP, the change against float32, the share of
images whose predicted class changed, the largest probability difference and the images/s
(alternating variants, best of ``--repeats``; same process, same inputs). One JSON object.

    python benchmarks/quantize_bench.py --checkpoint models/demo_densenet121_3class.pt \
        --data ../shared/data/ebhi/labels.csv [--threads 2] [--batch-size 16] [--repeats 3] \
        [--dynamic]

The int8 model is cached in ``$CRC_CACHE_DIR`` (default: the user cache); set it to a fresh
folder to time the calibration too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from crc_core.evaluation import _eval_table, compute_metrics
from crc_core.image_scale import scale_to_model
from crc_core.inference import load_model, make_scorer
from crc_core.inference.calibration import ensure_static_model
from crc_core.jobs import run_job
from crc_core.models import load_checkpoint
from crc_core.preprocess import decode_windows
from crc_core.splits import SplitRecord, content_keys
from crc_core.stain import from_checkpoint

ROOT = Path(__file__).resolve().parents[1]
OPTS = {"image_column": None, "label_column": None, "classes": None, "map": None, "label": None}


def _test_images(ckpt_path: Path, data: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Decoded test windows (one per tile), their labels in the model's classes, and the count."""
    ckpt = load_checkpoint(ckpt_path, "cpu")
    record = SplitRecord.from_json(ckpt.get("split"))
    if record is None:
        raise SystemExit(f"{ckpt_path}: records no split; its test images cannot be found")
    ed = run_job(_eval_table(ckpt, data, OPTS))  # a job: its warnings are logged
    t = ed.table
    elig = [i for i, s in enumerate(t.samples) if ed.to_model[s.label] is not None]
    keys = run_job(content_keys(t, elig))
    rows = [i for i, k in zip(elig, keys, strict=True) if record.role(k) == "test"]
    size = int(ckpt["input_size"])
    factor, _, _ = scale_to_model({"input_size": size, "patch_size": ckpt.get("patch_size"),
                                   "mpp": ckpt.get("mpp")}, t, None)
    stain = from_checkpoint(ckpt)
    wins = [decode_windows(t.samples[i].path, factor, size, stain) for i in rows]
    if any(len(w) != 1 for w in wins):
        raise SystemExit("the test images are not single windows at the model's scale")
    labels = np.array([ed.to_model[t.samples[i].label] for i in rows])
    return np.concatenate(wins), labels, len(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=ROOT / "models/demo_densenet121_3class.pt")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/ebhi/labels.csv")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dynamic", action="store_true", help="also dynamic int8 (--quantize int8)")
    args = ap.parse_args(argv)
    load0 = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    imgs, labels, n = _test_images(args.checkpoint, args.data)
    t0 = time.perf_counter()
    note = run_job(ensure_static_model(args.checkpoint, args.data))
    calib_s = time.perf_counter() - t0
    lm = load_model(args.checkpoint, cpu)
    variants = ["none", "int8-static"] + (["int8"] if args.dynamic else [])
    scorers = {q: make_scorer(lm, cpu, args.batch_size, backend="onnx", threads=args.threads,
                              quantize=q) for q in variants}
    probs: dict[str, np.ndarray] = {}
    rate = {q: 0.0 for q in variants}
    for _ in range(args.repeats):
        for q, sc in scorers.items():
            t0 = time.perf_counter()
            probs[q], _ = sc.run(imgs)
            rate[q] = max(rate[q], len(imgs) / (time.perf_counter() - t0))
    names = lm.scheme.names
    res: dict[str, object] = {
        "benchmark": "quantize", "checkpoint": str(args.checkpoint), "arch": lm.arch,
        "input_size": lm.input_size, "test_images": n, "threads": args.threads,
        "batch_size": args.batch_size, "calibration": note,
        "calibration_seconds_or_cached": round(calib_s, 1),
    }
    for q in variants:
        m = compute_metrics(labels, probs[q], names)
        res[q] = {"accuracy": round(m["accuracy"], 4),
                  "balanced_accuracy": round(m["balanced_accuracy"], 4),
                  "map": round(m["macro"]["map"], 4), "images_per_s": round(rate[q], 2)}
        if q != "none":
            ref = res["none"]
            res[q].update({  # type: ignore[union-attr]
                "accuracy_change": round(m["accuracy"] - ref["accuracy"], 4),  # type: ignore[index]
                "map_change": round(m["macro"]["map"] - ref["map"], 4),  # type: ignore[index]
                "predicted_class_changed": int(
                    (probs[q].argmax(1) != probs["none"].argmax(1)).sum()),
                "max_prob_diff": round(float(np.abs(probs[q] - probs["none"]).max()), 4),
                "speed_ratio_vs_float32": round(rate[q] / rate["none"], 3)})
    res["load_average_1min"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
