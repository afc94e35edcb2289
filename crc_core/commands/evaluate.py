"""`crc evaluate`: metrics, tables 3 and 4, ROC, confusion matrix and an HTML report."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: Any) -> None:
    from crc_core.commands.train import add_data_options

    p = subparsers.add_parser(
        "evaluate", help="evaluate a checkpoint on labelled images",
        description="Evaluate a checkpoint: writes metrics.json, predictions.csv, table3/table4 "
        "(.csv, .md), roc.png, confusion.png, curves.png and report.html into --out. Data options "
        "default to those the model was trained with.")
    p.add_argument("--checkpoint", required=True, help="a .pt written by `crc train`")
    p.add_argument("--data", required=True, help="dataset folder or CSV manifest")
    p.add_argument("--out", required=True, help="folder for the report")
    p.add_argument("--subset", choices=["auto", "val", "test", "all"], default="auto",
                   help="auto (default): when --data is the training data, its test groups "
                   "(--test-fraction or a split column), else its validation groups; other "
                   "data: all images")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--name", help="model name in the tables (default: the architecture)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_data_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from crc_core.cli import warn
    from crc_core.cli_progress import drive_with_bar
    from crc_core.errors import ConfigError
    from crc_core.evaluation import evaluate

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size} must be at least 1")
    job = evaluate(args.checkpoint, args.data, args.out, image_column=args.image_column,
                   label_column=args.label_column, group_column=args.group_column,
                   split_column=args.split_column, classes=args.classes, mapping=args.map,
                   group_pattern=args.group_pattern,
                   subset=args.subset, batch_size=args.batch_size, device=args.device,
                   workers=max(0, args.workers), name=args.name, warn=warn)
    res = drive_with_bar(job, desc="evaluate", quiet=args.quiet)
    brief = {"out": res["out"], "subset": res["subset"], "n": res["n"],
             "accuracy": res["accuracy"], "macro": res["macro"]}
    sys.stdout.write(json.dumps(brief, indent=2) + "\n")
    return 0
