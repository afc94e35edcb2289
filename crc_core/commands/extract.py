"""`crc extract`: build a patch dataset from a project's or given slides' annotated areas.

Runs :func:`crc_core.patches.extract` with a progress bar and prints the Table-1 style counts. A
rerun into the same ``--out`` folder with the same settings resumes: finished patches are kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crc_core.errors import ConfigError


def _fraction_or_off(text: str) -> float | None:
    v = float(text)
    return None if v == 0 else v


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "extract",
        help="cut patch datasets from annotated areas (sliding window, filters, split)",
        description="Cut 400 px patches (by default) from annotated areas with an overlapping "
        "sliding window, add random windows, drop patches with little tissue or few glands, "
        "split train/test by area or slide, and write patches, manifest.csv and dataset.json "
        "to --out. A rerun into the same folder resumes.",
    )
    src = p.add_argument_group("input (a project, or --slide/--annotations pairs)")
    src.add_argument("--project", type=Path, help="project folder: all its slides and annotations")
    src.add_argument(
        "--slide",
        type=Path,
        action="append",
        default=[],
        help="slide file (repeat with --annotations for several slides)",
    )
    src.add_argument(
        "--annotations",
        type=Path,
        action="append",
        default=[],
        help="annotation file (.geojson QuPath or .xml ASAP) of the matching --slide",
    )
    p.add_argument("--out", type=Path, required=True, help="dataset folder (created or resumed)")
    p.add_argument("--patch-size", type=int, default=400, help="patch side in pixels (400)")
    p.add_argument(
        "--overlap",
        type=float,
        default=0.3,
        help="overlap of consecutive windows, 0 <= o < 1 (0.3 -> stride 280)",
    )
    p.add_argument(
        "--random",
        type=int,
        default=10,
        metavar="N",
        help="extra random windows tried per area (10)",
    )
    p.add_argument(
        "--min-gland",
        type=float,
        default=0.5,
        help="drop patches with a smaller gland fraction (0.5; 0 = off)",
    )
    p.add_argument(
        "--gland-exempt",
        default=None,
        metavar="CLASSES",
        help="comma-separated classes (names or ids) whose patches skip the gland filter "
        "(default: adc-poor, poorly differentiated adenocarcinoma, which forms few glands by "
        "definition; 'none' filters every class)",
    )
    p.add_argument(
        "--min-tissue",
        type=float,
        default=0.5,
        help="drop patches with a smaller tissue fraction (0.5; 0 = off)",
    )
    p.add_argument(
        "--min-inside",
        type=float,
        default=0.75,
        help="fraction of a window that must lie inside its area (0.75)",
    )
    p.add_argument("--test-fraction", type=float, default=0.2, help="test share per class (0.2)")
    p.add_argument(
        "--split-by",
        choices=("area", "slide"),
        default="area",
        help="unit kept wholly in train or test (area)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of random windows, split and caps (0)")
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--level", type=int, default=None, help="pyramid level to read (0)")
    scale.add_argument(
        "--mpp", type=float, default=None, help="target micrometres per pixel instead of a level"
    )
    p.add_argument(
        "--classes", default=None, help="comma-separated class names or ids to include (all)"
    )
    p.add_argument(
        "--cap",
        type=int,
        default=None,
        metavar="N",
        help="at most N patches per class, split ratio kept (none)",
    )
    p.add_argument("--workers", type=int, default=4, help="reader threads (4)")
    p.add_argument(
        "--format",
        choices=("jpeg", "png"),
        default="jpeg",
        help="patch files: jpeg (quality 95, 4:4:4; default) or png (lossless)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _gland_exempt(text: str | None) -> list[str] | None:
    if text is None:
        return None
    if text.strip().lower() == "none":
        return []
    return [c.strip() for c in text.split(",") if c.strip()]


def run(args: argparse.Namespace) -> int:
    from crc_core.classes import ClassScheme
    from crc_core.cli import warn
    from crc_core.cli_progress import drive_with_bar
    from crc_core.patches import (
        ExtractConfig,
        extract,
        format_table,
        sources_from_files,
        sources_from_project,
    )

    if args.project is not None and (args.slide or args.annotations):
        raise ConfigError("give --project, or --slide with --annotations, not both")
    if args.project is None:
        if not args.slide:
            raise ConfigError(
                "nothing to extract from: give --project DIR or --slide S --annotations A"
            )
        if len(args.slide) != len(args.annotations):
            raise ConfigError(
                f"{len(args.slide)} --slide but {len(args.annotations)} --annotations; give one "
                "annotation file per slide, in the same order"
            )
    cfg = ExtractConfig(
        patch_size=args.patch_size,
        overlap=args.overlap,
        level=args.level,
        mpp=args.mpp,
        min_inside=args.min_inside,
        random=args.random,
        min_tissue=_fraction_or_off(str(args.min_tissue)),
        min_gland=_fraction_or_off(str(args.min_gland)),
        gland_exempt=_gland_exempt(args.gland_exempt),
        test_fraction=args.test_fraction,
        split_by=args.split_by,
        seed=args.seed,
        classes=[c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None,
        cap=args.cap,
        workers=args.workers,
        format=args.format,
    ).validate()

    if args.project is not None:
        from crc_core.project import Project

        project = Project.open(args.project)
        scheme = project.scheme
        sources, warns = sources_from_project(project)
    else:
        scheme = ClassScheme.paper()
        sources, warns = sources_from_files(zip(args.slide, args.annotations, strict=False), scheme)
    from crc_core.finetune import exclude_proposed  # unreviewed proposals never train a model

    sources, left_out = exclude_proposed(sources)
    warns = [*warns, *left_out]
    for w in warns:
        warn(w)
    from crc_core.jobs import run_job
    from crc_core.scale_notes import gland_scale_notes

    for note in run_job(gland_scale_notes(sources, cfg.min_gland, cfg.patch_size)):
        warn(note)
    unknown = [c for c in cfg.gland_exempt or [] if c not in scheme.ids and c not in scheme.names]
    if unknown:
        raise ConfigError(f"--gland-exempt: {', '.join(unknown)} not in the class scheme "
                          f"({', '.join(scheme.ids)})")
    exempt = cfg.exempt_ids(scheme)
    if cfg.gland_on and exempt:
        names = ", ".join(scheme.get(c).name for c in exempt)
        warn(f"gland filter not applied to {names} (few glands by definition); "
             "--gland-exempt none filters every class")
    result = drive_with_bar(  # prints the job's warnings
        extract(sources, args.out, scheme, cfg), desc="extract", quiet=args.quiet
    )
    n_rand = sum(a.random for a in result.areas)
    want_rand = cfg.random * sum(1 for a in result.areas if a.status in ("ok", "clipped"))
    print(format_table(result.table, result.totals))
    print(
        f"{result.patches} patches in {result.out_dir} ({result.written} written, {result.reused} "
        f"reused; dropped: {result.dropped['tissue']} tissue, {result.dropped['gland']} gland; "
        f"random windows placed: {n_rand} of {want_rand} tried)",
        file=sys.stdout,
    )
    return 0
