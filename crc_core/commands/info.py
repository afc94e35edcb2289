"""`crc info SLIDE [--json]`: what a slide holds (backend, vendor, levels, mpp, objective, extras).

Plain text by default; ``--json`` prints :meth:`crc_core.slide.SlideReader.info` as one JSON object
(``mpp`` is ``null`` when the file has none). A file that cannot be opened is a
:class:`~crc_core.errors.SlideError`: one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from crc_core.slide import open_slide


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser(
        "info",
        help="show a slide's levels, mpp, objective power and associated images",
        description="Show what a slide file holds: reader backend, vendor, pyramid levels with "
        "dimensions and downsamples, microns per pixel (none when the file has none), objective "
        "power and associated images (label, macro, thumbnail).",
    )
    p.add_argument(
        "slide",
        metavar="SLIDE",
        help="slide file (.svs, .ndpi, .mrxs, tiled .tif, ...) or plain image",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument(
        "--properties", action="store_true", help="also list every property the file declares"
    )
    p.set_defaults(func=run)


def _fmt_mpp(info: dict[str, Any]) -> str:
    if info["mpp"] is None:
        return "none (the file states no pixel size)"
    x, y = info["mpp_x"], info["mpp_y"]
    text = f"{x:.4g}" if abs(x - y) < 1e-9 else f"{x:.4g} x {y:.4g}"
    return f"{text} µm/px"


def format_text(info: dict[str, Any]) -> str:
    """Human-readable summary of :meth:`SlideReader.info`."""
    lines = [
        f"file:             {info['path']}",
        f"backend:          {info['backend']} ({info['format']})",
        f"vendor:           {info['vendor'] or '-'}",
        f"size:             {info['width']} x {info['height']} px",
        f"mpp:              {_fmt_mpp(info)}",
        "objective power:  "
        + (f"{info['objective_power']:g}x" if info["objective_power"] is not None else "-"),
        f"levels:           {info['level_count']}",
    ]
    for lv in info["levels"]:
        size = f"{lv['width']} x {lv['height']} px"
        lines.append(f"  level {lv['level']}: {size}, downsample {lv['downsample']:.4g}")
    assoc = info["associated_images"]
    if assoc:
        lines.append("associated images:")
        for a in assoc:
            size = f"{a['width']} x {a['height']} px" if "width" in a else a.get("error", "")
            lines.append(f"  {a['name']}: {size}")
    else:
        lines.append("associated images: none")
    if "properties" in info:
        lines.append("properties:")
        for k in sorted(info["properties"]):
            value = " ".join(str(info["properties"][k]).split())
            lines.append(f"  {k} = {value}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    with open_slide(args.slide) as slide:
        info = slide.info(properties=args.properties)
    if args.json:
        sys.stdout.write(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(format_text(info) + "\n")
    return 0
