"""`crc evaluate`: metrics, tables 3 and 4, ROC, confusion matrix and an HTML report."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: Any) -> None:
    from crc_core.commands.predict import add_backend_arguments

    p = subparsers.add_parser(
        "evaluate", help="evaluate a checkpoint on labelled images",
        description="Evaluate a checkpoint on any labelled images: a `crc extract` dataset, a CSV, "
        "a folder with one subfolder per class, or a folder of images of one class (--label). "
        "Writes metrics.json, predictions.csv, table3/table4 (.csv, .md), roc.png, "
        "confusion.png, curves.png and report.html into --out. Images are recognised by content "
        "against the split the checkpoint records, so its training images are never scored "
        "unless --subset all is given. Columns are guessed from common names (and the label "
        "column from its values) unless given.")
    p.add_argument("--checkpoint", required=True, help="a .pt written by `crc train`")
    p.add_argument("--data", required=True,
                   help="dataset folder, CSV manifest, or folder of images")
    p.add_argument("--out", required=True, help="folder for the report")
    p.add_argument("--subset", choices=["auto", "val", "test", "all"], default="auto",
                   help="auto (default): the run's test images when the data holds any, else the "
                   "images the run never trained or validated on, else its validation images "
                   "(never a training image); val/test: the run's own; all: every image")
    p.add_argument("--label", help="every image is of this class (a folder or CSV of one class)")
    p.add_argument("--mpp", type=float,
                   help="µm per pixel of the images: they are resampled to the model's scale. "
                   "Without it: the dataset's, else one every image states in its resolution "
                   "tags, else they are taken at the model's scale (the report says which)")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average the 8 flips and rotations (8x slower)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add_backend_arguments(p)
    p.add_argument("--workers", type=int, default=0, help="image reading threads (default 4)")
    p.add_argument("--name", help="model name in the tables (default: the architecture)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("data (each guessed when not given)")
    g.add_argument("--image-column", help="CSV column with image paths (relative to the CSV)")
    g.add_argument("--label-column", help="CSV column with class labels")
    g.add_argument("--classes", help='keep only these labels, comma-separated, e.g. "A,B,C"')
    g.add_argument("--map", dest="map",
                   help='count labels as model classes, e.g. "Low-grade IN=Adenoma,TUM='
                   'Adenocarcinoma" (the map the model was trained with is known already)')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from crc_core.cli_progress import drive_with_bar
    from crc_core.errors import ConfigError
    from crc_core.evaluation import evaluate

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size} must be at least 1")
    from crc_core.commands.predict import check_backend_arguments
    from crc_core.runtime import resolve_device

    check_backend_arguments(args, resolve_device(args.device))
    job = evaluate(args.checkpoint, args.data, args.out, image_column=args.image_column,
                   label_column=args.label_column, classes=args.classes, mapping=args.map,
                   label=args.label, mpp=args.mpp, subset=args.subset, tta=args.tta,
                   batch_size=args.batch_size, device=args.device,
                   workers=max(0, args.workers), name=args.name,
                   backend=args.backend, threads=args.threads, quantize=args.quantize,
                   calibrate=args.calibrate)
    res = drive_with_bar(job, desc="evaluate", quiet=args.quiet)
    brief = {"out": res["out"], "subset": res["subset"], "subset_how": res["subset_how"],
             "n": res["n"], "accuracy": res["accuracy"],
             "balanced_accuracy": res["balanced_accuracy"], "macro": res["macro"],
             "absent_classes": res["absent_classes"], "scale": res["scale"],
             "backend": res["scoring"]["backend_statement"]}
    sys.stdout.write(json.dumps(brief, indent=2) + "\n")
    return 0
