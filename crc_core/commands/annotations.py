"""`crc annotations`: convert annotation files between QuPath GeoJSON and ASAP XML, and summarise
them.

``crc annotations convert IN OUT`` picks each format from the extension (``.geojson``/``.json``,
``.xml``). Repairs are printed as ``crc: warning: ...`` lines; any input that cannot be read gives
one ``crc: error: ...`` line, exit code 2, and OUT is not written (the output is built in memory and
written atomically only at the end).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from crc_core.annotations import format_for_path, load_annotations, save_annotations
from crc_core.classes import ClassScheme
from crc_core.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "annotations",
        help="convert annotation files (QuPath GeoJSON <-> ASAP XML) and summarise them",
        description="Work with annotation files: QuPath GeoJSON (.geojson/.json) and ASAP XML "
        "(.xml).",
    )
    sub = p.add_subparsers(dest="annotations_command", metavar="ACTION", parser_class=type(p))

    c = sub.add_parser(
        "convert",
        help="convert IN to OUT (formats from the extensions)",
        description="Convert an annotation file. Invalid outlines are repaired where safe (with a "
        "warning naming the feature); unknown classes are added; anything unreadable is refused "
        "and OUT is left untouched.",
    )
    c.add_argument(
        "input", type=Path, metavar="IN", help="annotation file to read (.geojson, .json, .xml)"
    )
    c.add_argument(
        "output", type=Path, metavar="OUT", help="annotation file to write (.geojson, .json, .xml)"
    )
    _common(c)
    c.add_argument(
        "--save-classes",
        type=Path,
        default=None,
        metavar="JSON",
        help="also write the class scheme (with any classes added from IN) to this file",
    )
    c.set_defaults(func=run)

    i = sub.add_parser(
        "info",
        help="count annotations and area per class",
        description="Print the number of annotations and their area per class.",
    )
    i.add_argument("input", type=Path, metavar="IN", help="annotation file (.geojson, .json, .xml)")
    _common(i)
    i.set_defaults(func=run_info)

    from crc_core.commands import _from_prediction  # prediction -> proposed annotations

    _from_prediction.register(sub)

    p.set_defaults(func=lambda args: _usage(p))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--classes",
        type=Path,
        default=None,
        metavar="JSON",
        help="class scheme file (default: the paper's five classes); unknown classes are added",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--slide",
        type=Path,
        default=None,
        metavar="S",
        help="slide the annotations belong to: outlines are clipped to its level-0 size",
    )
    size.add_argument(
        "--slide-size",
        default=None,
        metavar="WxH",
        help="level-0 width x height to clip to, without opening a slide (e.g. 2220x2967)",
    )
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip (with a warning) features that would otherwise stop the conversion",
    )


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help(sys.stderr)
    return 2


def _inputs(args: argparse.Namespace) -> tuple[ClassScheme, tuple[int, int] | None]:
    scheme = ClassScheme.load(args.classes) if args.classes else ClassScheme.paper()
    size: tuple[int, int] | None = None
    if args.slide_size:
        m = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", args.slide_size)
        if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
            raise ConfigError(
                f"--slide-size {args.slide_size!r}: expected WIDTHxHEIGHT in pixels, e.g. 2220x2967"
            )
        size = (int(m.group(1)), int(m.group(2)))
    elif args.slide:
        from crc_core.slide import open_slide

        with open_slide(args.slide) as reader:
            size = tuple(reader.dimensions)  # type: ignore[assignment]
    return scheme, size


def run(args: argparse.Namespace) -> int:
    from crc_core.cli import warn

    format_for_path(args.output)  # refuse an unknown OUT extension before any work
    scheme, size = _inputs(args)
    res = load_annotations(args.input, scheme, slide_size=size, skip_invalid=args.skip_invalid)
    for w in res.warnings:
        warn(w)
    save_annotations(res.annotations, args.output, scheme)
    if args.save_classes:
        scheme.save(args.save_classes)
    n = len(res.annotations)
    extra = f", {res.skipped} skipped" if res.skipped else ""
    print(f"wrote {n} annotation{'s' if n != 1 else ''} to {args.output}{extra}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from crc_core.cli import warn

    scheme, size = _inputs(args)
    res = load_annotations(args.input, scheme, slide_size=size, skip_invalid=args.skip_invalid)
    for w in res.warnings:
        warn(w)
    counts = res.annotations.count_by_class()
    areas = res.annotations.area_by_class()
    print(f"{args.input}: {len(res.annotations)} annotations")
    for c in scheme:
        if c.id in counts:
            print(f"  {c.name}: {counts[c.id]} annotations, {areas[c.id]:.0f} px² at level 0")
    return 0
