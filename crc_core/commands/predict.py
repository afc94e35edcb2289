"""`crc predict`: class maps, CAM heatmaps and per-region results for one or more slides.

For each slide the command writes ``prediction.npz`` (probability grid, geo-reference, CAM heatmap,
classes, model and slide identity; see :mod:`crc_core.inference`), ``regions.geojson`` and
``regions.csv`` (per-region results, :mod:`crc_core.regions`; the whole predicted area is one region
when ``--regions`` is not given), ``overlay.png`` (thumbnail with the class map blended in) and, with
``--cam``, ``heatmap.png`` (thumbnail with the CAM heatmap, its colour bar and the class it
explains). With several slides each gets a subfolder of ``--out`` named after the slide. With
``--project`` the checkpoint's classes are mapped onto the project's class scheme before its
weights load (:mod:`crc_core.scheme_map`: a three-class model's Adenocarcinoma covers the
five-class scheme's three grades), the mapping is printed, and the regions' labels are compared
through it. Under ``torchrun`` the slides are shared among the processes (rank r takes slides
r, r + world, ...), each on its own GPU.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from crc_core.atomic import atomic_path
from crc_core.errors import ConfigError

THUMB_PX = 1024
OVERLAY_ALPHA = 0.45


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "predict",
        help="predict class maps (and CAM heatmaps) on slides",
        description="Predict patch classes over slides with a trained checkpoint; write "
        "prediction.npz, regions.geojson, regions.csv, overlay.png and (with --cam) heatmap.png.",
    )
    p.add_argument(
        "--checkpoint", required=True, type=Path, help="checkpoint from `crc train` (.pt)"
    )
    p.add_argument("--slide", nargs="+", type=Path,
                   help="slide file(s); with --project, default: every slide of the project")
    p.add_argument(
        "--regions",
        nargs="+",
        type=Path,
        default=None,
        help="annotation file(s) (QuPath GeoJSON or ASAP XML), one per slide: predict "
        "only inside these regions and compare with their labels",
    )
    p.add_argument(
        "--stride",
        type=int,
        default=None,
        help="pixels between windows at the checkpoint's scale (default: patch size)",
    )
    p.add_argument(
        "--patch-size",
        type=int,
        default=None,
        help="window side in pixels at the checkpoint's scale (default: the checkpoint's patch size)",
    )
    p.add_argument("--cam", action="store_true", help="compute the CAM heatmap (heatmap.png)")
    p.add_argument("--cam-method", choices=("cam", "gradcam"), default="cam")
    p.add_argument(
        "--cam-class",
        default=None,
        help="class (name or id) whose CAM is drawn (default: each patch's predicted class)",
    )
    p.add_argument(
        "--batch-size", type=int, default=32, help="windows per forward pass (default 32)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    add_backend_arguments(p)
    p.add_argument("--workers", type=int, default=2, help="reader threads (default 2)")
    p.add_argument(
        "--min-tissue",
        type=float,
        default=0.25,
        help="skip windows with less tissue than this fraction (default 0.25)",
    )
    p.add_argument("--all-windows", action="store_true", help="predict every window, tissue or not")
    p.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: average the 8 flips and rotations of each window (8x slower)",
    )
    p.add_argument(
        "--slide-mpp",
        type=float,
        default=None,
        help="µm per pixel of slides that do not state one (their windows are then cut at the "
        "checkpoint's scale instead of at pyramid level 0)",
    )
    p.add_argument(
        "--project",
        type=Path,
        default=None,
        help="project folder whose class scheme the checkpoint's classes are mapped onto "
        "(class groups: Adenocarcinoma covers its three grades); refused before loading the "
        "weights when a class has no counterpart. Each prediction is also saved into the "
        "project as the viewer saves it, so it opens there with its class map (default --slide: "
        "every slide of the project)",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def add_backend_arguments(p: Any) -> None:
    """``--backend``, ``--threads`` and ``--quantize`` (shared with ``crc evaluate``)."""
    p.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto",
                   help="what runs the model: onnx (ONNX Runtime on the CPU, exported once and "
                   "cached), torch, or auto (default: onnx on the CPU when ONNX Runtime is "
                   "installed, torch on CUDA)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads of the model (default 0: PyTorch's default, the physical "
                   "cores)")
    p.add_argument("--quantize", choices=("none", "int8", "int8-static"), default="none",
                   help="onnx backend only. int8: dynamic int8 quantisation (measured slower than "
                   "float32 on a CPU); int8-static: int8 ranges calibrated once on the model's "
                   "own training images (--calibrate), cached; speed and accuracy change in "
                   "benchmarks/RESULTS.md")
    p.add_argument("--calibrate", type=Path, metavar="DATA",
                   help="with --quantize int8-static: the labelled data the model was trained on "
                   "(CSV, dataset or image folder); its training images, found by the run's split "
                   "record, calibrate the int8 model once (crc evaluate: default its --data)")


def check_backend_arguments(args: argparse.Namespace, device: Any) -> None:
    """Refuse a backend that cannot run here, before the model is loaded (one line, exit 2)."""
    from crc_core.inference.backends import choose_backend

    if args.threads < 0:
        raise ConfigError(f"--threads must be 0 (default) or a positive count, got {args.threads}")
    chosen, _ = choose_backend(args.backend, device)
    if args.quantize != "none" and chosen != "onnx":
        raise ConfigError(f"--quantize {args.quantize} needs the onnx backend (ONNX Runtime on the "
                          f"CPU); this run uses {chosen}")
    if args.calibrate is not None and args.quantize != "int8-static":
        raise ConfigError("--calibrate is for --quantize int8-static")


def calibrate_if_asked(args: argparse.Namespace) -> None:
    """``--quantize int8-static --calibrate DATA``: make the cached int8 model now (progress bar)."""
    if args.quantize != "int8-static" or args.calibrate is None:
        return
    from crc_core.cli_progress import drive_with_bar
    from crc_core.inference.calibration import ensure_static_model

    drive_with_bar(ensure_static_model(args.checkpoint, args.calibrate), desc="calibrate int8",
                   quiet=getattr(args, "quiet", False))


# ------------------------------------------------------------------------------------ rendering
def _cell_index_image(
    pred: Any, shape: tuple[int, int], scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """For a (h, w) image at ``scale`` image px per level-0 px: each pixel's cell (row, col), -1 off-grid."""
    g = pred.grid
    h, w = shape
    x = (np.arange(w) + 0.5) / scale
    y = (np.arange(h) + 0.5) / scale
    return g.axis_cells(y, 0), g.axis_cells(x, 1)


def render_overlay(
    thumb: np.ndarray, pred: Any, scale: float, alpha: float = OVERLAY_ALPHA
) -> np.ndarray:
    """Thumbnail ``(h, w, 3)`` with the class map blended (``scale`` = thumbnail px per level-0 px)."""
    ri, ci = _cell_index_image(pred, thumb.shape[:2], scale)
    cmap = pred.class_map()
    colors = np.array(pred.scheme.colors, dtype=np.float32).reshape(-1, 3)
    R, Cc = np.meshgrid(ri, ci, indexing="ij")
    valid = (R >= 0) & (Cc >= 0)
    cls = np.full(R.shape, -1, dtype=np.int64)
    cls[valid] = cmap[R[valid], Cc[valid]]
    out = thumb.astype(np.float32).copy()
    m = cls >= 0
    out[m] = (1 - alpha) * out[m] + alpha * colors[cls[m]]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def render_heatmap(
    thumb: np.ndarray, pred: Any, scale: float, alpha: float = 0.5, cmap: str = "jet"
) -> np.ndarray:
    """Thumbnail with the CAM heatmap blended where it is defined (matplotlib colour map)."""
    from matplotlib import colormaps

    g = pred.grid
    h, w = thumb.shape[:2]
    heat = pred.cam
    hy = np.floor(((np.arange(h) + 0.5) / scale - g.origin[1]) / g.cam_scale).astype(np.int64)
    hx = np.floor(((np.arange(w) + 0.5) / scale - g.origin[0]) / g.cam_scale).astype(np.int64)
    vy = (hy >= 0) & (hy < heat.shape[0])
    vx = (hx >= 0) & (hx < heat.shape[1])
    vals = np.full((h, w), np.nan, dtype=np.float32)
    vals[np.ix_(vy, vx)] = heat[np.ix_(hy[vy], hx[vx])]
    rgba = colormaps[cmap](np.nan_to_num(vals, nan=0.0))[..., :3] * 255.0
    out = thumb.astype(np.float32).copy()
    m = ~np.isnan(vals)
    out[m] = (1 - alpha) * out[m] + alpha * rgba[m]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _with_legend(img: np.ndarray, items: list[tuple[str, tuple[int, int, int]]]) -> Image.Image:
    row = 16
    legend_h = row * len(items) + 8
    canvas = Image.new("RGB", (img.shape[1], img.shape[0] + legend_h), (255, 255, 255))
    canvas.paste(Image.fromarray(img), (0, 0))
    d = ImageDraw.Draw(canvas)
    for k, (name, color) in enumerate(items):
        y = img.shape[0] + 4 + k * row
        d.rectangle([4, y, 16, y + 11], fill=tuple(color), outline=(0, 0, 0))
        d.text((22, y - 1), name, fill=(0, 0, 0))
    return canvas


def _with_colorbar(img: np.ndarray, cmap: str, text: str) -> Image.Image:
    """``img`` over a colour bar of ``cmap``, 0 (left) to 1 (right), and a line saying ``text``."""
    from matplotlib import colormaps

    w = img.shape[1]
    canvas = Image.new("RGB", (w, img.shape[0] + 44), (255, 255, 255))
    canvas.paste(Image.fromarray(img), (0, 0))
    ramp = (colormaps[cmap](np.linspace(0, 1, max(w - 8, 1)))[:, :3] * 255).astype(np.uint8)
    canvas.paste(Image.fromarray(np.repeat(ramp[None], 12, axis=0)), (4, img.shape[0] + 4))
    d = ImageDraw.Draw(canvas)
    y = img.shape[0] + 17
    d.text((4, y), "0 low", fill=(0, 0, 0))
    d.text((max(4, w - 44), y), "1 high", fill=(0, 0, 0))
    d.text((4, y + 12), text, fill=(0, 0, 0))
    return canvas


def cam_statement(pred: Any) -> str:
    """Which class a prediction's CAM heatmap explains."""
    cid = (pred.cam_info or {}).get("class")
    what = "each window's predicted class" if cid is None else pred.scheme.get(cid).name
    return f"CAM of {what} (each window scaled to its maximum)"


def _save_png(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


# ------------------------------------------------------------------------------------------- run
def _dist() -> tuple[int, int, int]:
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return rank, max(world, 1), local


def _out_dirs(slides: list[Path], out: Path) -> list[Path]:
    if len(slides) == 1:
        return [out]
    seen: dict[str, int] = {}
    dirs = []
    for s in slides:
        stem = s.stem or "slide"
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        dirs.append(out / (stem if n == 0 else f"{stem}-{n + 1}"))
    return dirs


def predict_one(
    slide_path: Path, lm: Any, out_dir: Path, args: argparse.Namespace, regions_path: Path | None
) -> dict[str, Any]:
    """Predict one slide and write its five files; returns a small summary."""
    from crc_core.annotations import load_annotations
    from crc_core.cli import warn
    from crc_core.cli_progress import drive_with_bar
    from crc_core.inference import predict
    from crc_core.regions import (
        region_results,
        save_regions_csv,
        save_regions_geojson,
        whole_prediction_region,
    )
    from crc_core.slide import open_slide

    with open_slide(slide_path) as slide:
        if slide.mpp is None and args.slide_mpp is not None:
            slide.set_mpp(args.slide_mpp)
            warn(f"{slide_path.name}: no pixel size in the file; using --slide-mpp "
                 f"{args.slide_mpp:g} µm/px")
        label_scheme = (args.label_scheme or lm.scheme).copy()
        regions: list[Any] | None = None
        if regions_path is not None:
            loaded = load_annotations(regions_path, label_scheme, slide_size=slide.dimensions)
            for w in loaded.warnings:
                warn(f"{regions_path}: {w}")
            regions = list(loaded.annotations)
            if not regions:
                raise ConfigError(f"{regions_path}: no annotation to predict in")
        job = predict(
            slide,
            lm,
            regions=regions,
            stride=args.stride,
            cam=args.cam,
            batch_size=args.batch_size,
            device=args.device,
            workers=args.workers,
            cam_class=args.cam_class,
            cam_method=args.cam_method,
            tissue=not args.all_windows,
            min_tissue=args.min_tissue,
            out=out_dir / "prediction.npz",
            patch_size=args.patch_size,
            tta=args.tta,
            backend=args.backend,
            threads=args.threads,
            quantize=args.quantize,
        )
        pred = drive_with_bar(job, desc=slide_path.name, quiet=args.quiet)  # prints its warnings
        in_project = _save_into_project(args, slide_path, pred, regions_path)
        results = region_results(
            pred, regions if regions is not None else [whole_prediction_region(pred)], label_scheme
        )
        save_regions_geojson(results, out_dir / "regions.geojson", pred.scheme, label_scheme)
        save_regions_csv(results, out_dir / "regions.csv", pred.scheme)
        W, H = slide.dimensions
        thumb = np.asarray(slide.thumbnail(THUMB_PX))
        scale = thumb.shape[1] / W
        legend = [(c.name, c.color) for c in pred.scheme]
        _save_png(_with_legend(render_overlay(thumb, pred, scale), legend), out_dir / "overlay.png")
        if pred.cam is not None:
            _save_png(_with_colorbar(render_heatmap(thumb, pred, scale), "jet",
                                     cam_statement(pred)), out_dir / "heatmap.png")
    n = int(pred.predicted.sum())
    cmap = pred.class_map()
    counts = {c.name: int((cmap == k).sum()) for k, c in enumerate(pred.scheme)}
    from crc_core.inference import scale_statement

    return {
        "slide": str(slide_path),
        "out": str(out_dir),
        "grid": list(pred.grid.shape),
        "predicted": n,
        "counts": counts,
        "scale": scale_statement(pred.resolution, pred.grid.input_size),
        "stain": (pred.resolution.get("stain") or {}).get("statement", ""),
        "backend": (pred.resolution.get("scoring") or {}).get("backend_statement", ""),
        "in_project": in_project,
    }


def _mapping(args: argparse.Namespace) -> Any:
    """The checkpoint's classes mapped onto ``--project``'s scheme (read before the weights),
    stated; ``None`` without ``--project``. Sets ``args.label_scheme`` (the project's scheme or
    None)."""
    args.label_scheme = None
    project = getattr(args, "project_obj", None)
    if project is None:
        return None
    from crc_core.scheme_map import check_checkpoint

    smap, summary = check_checkpoint(args.checkpoint, project.scheme)
    args.label_scheme = project.scheme
    if not args.quiet:
        print(f"classes: {smap.statement() or 'the model classes are the project classes'} "
              f"(read in {summary.seconds:.2f} s, before loading the weights)")
    return smap


def _project_slides(args: argparse.Namespace) -> list[Path]:
    """The slides to predict. With ``--project``: opens it (``args.project_obj``) and maps each
    slide to its entry (``args.project_entries``, by resolved path; a slide that is not the
    project's is predicted into ``--out`` only, with a warning); without ``--slide``, every slide
    of the project that is on disk."""
    args.project_obj, args.project_entries = None, {}
    if getattr(args, "project", None) is None:
        if not args.slide:
            raise ConfigError("give --slide (or --project to predict every slide of a project)")
        return list(args.slide)
    from crc_core.errors import ProjectError
    from crc_core.project import Project

    project = args.project_obj = Project.open(args.project)
    known: dict[Path, Any] = {}
    for e in project.slides:
        try:
            known[project.slide_path(e).resolve()] = e
        except ProjectError:
            continue  # a slide whose file is missing: not predicted
    args.project_entries = known  # looked up by each predicted slide's resolved path
    if not args.slide:
        if not known:
            raise ConfigError(f"--project {args.project}: no slide of the project is on disk")
        return list(known)
    return list(args.slide)


def _save_into_project(args: argparse.Namespace, slide_path: Path, pred: Any,
                       regions_path: Path | None) -> str | None:
    """Save ``pred`` into ``--project`` as the viewer names it (the model's file name; a region
    run gets " (regions)"); the file, or ``None`` without ``--project``."""
    if getattr(args, "project_obj", None) is None:
        return None
    entry = args.project_entries.get(Path(slide_path).resolve())
    if entry is None:
        from crc_core.cli import warn

        warn(f"{slide_path}: not a slide of the project {args.project}: its prediction is "
             f"written to --out only (add the slide to the project to see it there)")
        return None
    name = Path(args.checkpoint).stem + ("" if regions_path is None else " (regions)")
    return str(args.project_obj.save_prediction(entry, name, pred))


def run(args: argparse.Namespace) -> int:
    from crc_core.inference import load_model, resolve_device

    slides: list[Path] = _project_slides(args)
    regions: list[Path | None] = [None] * len(slides)
    if args.regions is not None:
        if len(args.regions) != len(slides):
            raise ConfigError(
                f"--regions: give one annotation file per slide ({len(slides)} "
                f"slide(s), {len(args.regions)} file(s))"
            )
        regions = list(args.regions)
    for s in slides:
        if not s.exists():
            raise ConfigError(f"--slide {s}: file not found")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.stride is not None and args.stride < 1:
        raise ConfigError(f"--stride must be a positive number of pixels, got {args.stride}")
    if args.patch_size is not None and args.patch_size < 1:
        raise ConfigError(
            f"--patch-size must be a positive number of pixels, got {args.patch_size}"
        )
    if not 0.0 <= args.min_tissue <= 1.0:
        raise ConfigError(f"--min-tissue must be in [0, 1], got {args.min_tissue}")
    if args.slide_mpp is not None and not 0 < args.slide_mpp < 1000:
        raise ConfigError(f"--slide-mpp must be a positive number of µm per pixel, got "
                          f"{args.slide_mpp}")
    rank, world, local = _dist()
    # As training does: under torchrun, auto and cuda mean this process's GPU (LOCAL_RANK).
    device = resolve_device(args.device, local)
    args.device = device
    check_backend_arguments(args, device)
    calibrate_if_asked(args)
    smap = _mapping(args)
    lm = load_model(args.checkpoint, device)
    if smap is not None:
        lm.scheme = smap.display_scheme()  # the model's outputs in the project's names, colours
    if args.cam_class is not None and lm.scheme.find(args.cam_class) is None:
        raise ConfigError(
            f"--cam-class {args.cam_class!r} is not a class of the checkpoint "
            f"({', '.join(lm.scheme.names)})"
        )
    dirs = _out_dirs(slides, args.out)
    mine = list(range(rank, len(slides), world))
    for i in mine:
        summary = predict_one(slides[i], lm, dirs[i], args, regions[i])
        if not args.quiet:
            counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items())
            rows, cols = summary["grid"]
            print(
                f"{slides[i].name}: {summary['predicted']} of {rows}x{cols} windows predicted "
                f"({counts}) -> {summary['out']}"
            )
            print(f"  scale: {summary['scale']}")
            print(f"  stain: {summary['stain']}")
            print(f"  backend: {summary['backend']}")
            if summary["in_project"]:
                print(f"  saved into the project: {summary['in_project']}")
    if world > 1 and not mine:
        print(f"rank {rank}: no slide to predict ({len(slides)} slide(s), {world} processes)")
    return 0
