"""`crc compare`: `crc evaluate` folders side by side (paper Tables 3 and 4) with a report."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "compare", help="compare evaluations side by side (Tables 3 and 4)",
        description="Read metrics.json from each evaluation folder and write table3/table4 "
        "(.csv, .md) and report.html into --out.")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="folders written by `crc evaluate`")
    p.add_argument("--out", required=True, help="folder for the comparison")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from crc_core.cli_progress import drive_with_bar
    from crc_core.evaluation import compare_job

    res = drive_with_bar(compare_job(args.dirs, args.out), desc="compare", quiet=args.quiet)
    sys.stdout.write(res["table3"] + "\n" + res["table4"])
    return 0
