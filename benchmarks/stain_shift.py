"""Robustness to stain and scale: a run's test cases re-stained and rescaled, scored per condition.

For each ``--checkpoint``: the images its split record calls test (recognised by content in
``--data``, :mod:`crc_core.splits`) are written, per condition, as lossless PNG copies into
``OUT/conditions/<set>/<condition>/`` and scored by :func:`crc_core.evaluation.evaluate` (every
image of the copy, the checkpoint's own stain normalisation applied as always). The table gives
accuracy, balanced accuracy and mAP per condition, the change against the unshifted copy, and a
95 % interval of the accuracy and mAP change by a paired bootstrap over cases (the same cases drawn
for both copies): how far the change could move with another draw of test cases of this size.
``--subset val`` shifts the validation images instead, to try a change without looking at the test
cases.

Conditions (each keeps the tile's pixel count):

* ``none``: the test tiles as they are (decoded and saved lossless).
* ``slide <name>``: re-stained to a real H&E slide: a Macenko normaliser (:mod:`crc_core.stain`)
  fitted on the slide's tissue (up to ``--slide-tiles`` level-0 windows of 224 px with >= 80 %
  tissue, seeded) applied to each tile.
* ``HED ...``: synthetic stain shifts in the space of the training augmentation
  (:func:`crc_core.data.hed_jitter`): the tile's H (E) concentrations multiplied by the stated
  factor, the residual D channel shifted by the stated OD units. ``measured`` uses the median
  shift of the real slides against EBHI (benchmarks/RESULTS.md, stain statistics).
* ``scale 1.5x``: the central ``round(S / 1.5)`` px of an S px tile resampled to S px (bicubic,
  :func:`crc_core.preprocess.resample`): structures 1.5 times larger, a smaller field of view.
* ``scale 0.75x``: the whole tile resampled to ``round(0.75 S)`` px (area average) and mirrored at
  its edges back to S px (``numpy.pad`` mode ``symmetric``, centred): structures 0.75 times the
  size, the border a mirror image.
* ``20x tiles ...``: what a tile set scanned at 20x (0.5 µm/px) looks like to the model: the central
  ``round(S / 2.6)`` px of a tile (at EBHI's nominal 1.3 µm/px, ``--tile-mpp``) magnified to S px,
  as ``scale 1.5x`` does. ``scale in their tags``: saved with their pixel size (1.3 / 2.6 = 0.5
  µm/px) in the PNG's pHYs, which evaluation reads (:mod:`crc_core.image_scale`) and resamples back
  to the model's scale (the field is then smaller than the model's window, and mirrored to fill it);
  ``scale not stated``: the same images without it, taken at the model's scale, 2.6 times magnified.
  These two are not among issue 14's conditions; they show what stating the scale is worth.

    PYTHONPATH=. python benchmarks/stain_shift.py --checkpoint A/best.pt --checkpoint B/best.pt \
        --data ../shared/data/ebhi/labels.csv --slides ../shared/data/slides --out shift
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from crc_core.jobs import run_job

#: Synthetic HED conditions: name -> (H factor, E factor, D shift).
HED_CONDITIONS: dict[str, tuple[float, float, float]] = {
    "HED H x0.7": (0.7, 1.0, 0.0),
    "HED H x1.3": (1.3, 1.0, 0.0),
    "HED E x0.7": (1.0, 0.7, 0.0),
    "HED E x1.3": (1.0, 1.3, 0.0),
    "HED measured (H x0.55, E x0.65, D +0.04)": (0.55, 0.65, 0.04),
}
SCALES = (0.75, 1.5)
#: The 20x conditions: the tiles magnified this much (EBHI's nominal 1.3 µm/px to 0.5 µm/px).
MAGNIFIED = 2.6
Transform = Callable[[np.ndarray], np.ndarray]


def hed_shift(h: float, e: float, d: float) -> Transform:
    """A tile transform scaling H and E concentrations and shifting D (augmentation's space)."""
    from crc_core.data import hed_jitter

    def apply(rgb: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255
        y = hed_jitter(x, torch.tensor([[h, e, 1.0]]), torch.tensor([[0.0, 0.0, d]]))
        return (y[0].permute(1, 2, 0) * 255).round().byte().numpy()
    return apply


def rescale_tile(rgb: np.ndarray, zoom: float) -> np.ndarray:
    """The tile at ``zoom`` times its scale with its pixel count kept (see module docstring)."""
    from crc_core.preprocess import resample, resample_by

    h, w = rgb.shape[:2]
    if zoom >= 1:
        ch, cw = round(h / zoom), round(w / zoom)
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        crop = rgb[y0:y0 + ch, x0:x0 + cw]
        return resample(crop, h) if h == w else np.asarray(
            Image.fromarray(crop).resize((w, h), Image.Resampling.BICUBIC))
    small = resample_by(rgb, zoom)
    sh, sw = small.shape[:2]
    ph, pw = h - sh, w - sw
    return np.pad(small, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)),
                  mode="symmetric")


def slide_condition(path: Path, tiles: int, seed: int) -> tuple[Transform, dict[str, Any]]:
    """Macenko normaliser fitted on a slide's tissue windows; with its stain figures."""
    from stain_stats import slide_tiles

    from crc_core.stain import fit_images

    imgs = slide_tiles(path, tiles, 224, seed)
    norm = fit_images(list(imgs), "macenko", seed, source=f"tissue windows of {path.name}")

    def apply(rgb: np.ndarray) -> np.ndarray:
        return norm(rgb)
    return apply, {"fitted_on": norm.reference, **norm.params}


def conditions(slides: list[Path], slide_tiles: int, seed: int, tile_mpp: float = 1.3
               ) -> tuple[dict[str, Transform], dict[str, Any], dict[str, float]]:
    """The conditions by name, the slides' stain figures, and the pixel size written into the
    saved images of the conditions that state one."""
    conds: dict[str, Transform] = {"none": lambda rgb: rgb}
    info: dict[str, Any] = {}
    for s in slides:
        conds[f"slide {s.name}"], info[s.name] = slide_condition(s, slide_tiles, seed)
    for name, (h, e, d) in HED_CONDITIONS.items():
        conds[name] = hed_shift(h, e, d)
    for z in SCALES:
        conds[f"scale {z:g}x"] = lambda rgb, z=z: rescale_tile(rgb, z)
    tagged = f"20x tiles, scale in their tags ({tile_mpp / MAGNIFIED:.2g} µm/px)"
    conds[tagged] = conds["20x tiles, scale not stated"] = (
        lambda rgb: rescale_tile(rgb, MAGNIFIED))
    return conds, info, {tagged: tile_mpp / MAGNIFIED}


def test_images(checkpoint: Path, data: Path | None, part: str = "test"
                ) -> tuple[list[Path], list[str], list[str], str]:
    """The images the checkpoint's split record puts in ``part`` (test by default), their class
    names, their groups (cases) and how they were identified."""
    from crc_core.models import load_checkpoint
    from crc_core.splits import SplitRecord, choose_subset, content_keys
    from crc_core.tables import load_table

    ckpt = load_checkpoint(checkpoint)
    opts = dict((ckpt.get("config") or {}).get("data") or {})
    source = Path(data) if data else Path(opts.get("source", ""))
    table = load_table(source, image_column=opts.get("image_column"),
                       label_column=opts.get("label_column"),
                       group_column=opts.get("group_column"), classes=opts.get("classes"),
                       mapping=opts.get("map"), group_pattern=opts.get("group_pattern"))
    keys = run_job(content_keys(table))
    sub = choose_subset(SplitRecord.from_json(ckpt.get("split")), keys, part)
    paths = [table.samples[i].path for i in sub.indices]
    labels = [table.scheme.names[table.samples[i].label] for i in sub.indices]
    groups = [table.samples[i].group for i in sub.indices]
    return paths, labels, groups, f"{sub.name}: {sub.how}"


def write_condition(folder: Path, paths: list[Path], labels: list[str], fn: Transform,
                    mpp: float | None = None) -> Path:
    """Transformed lossless copies and their labels.csv (written once; reused when complete);
    ``mpp``: the pixel size each PNG states (pHYs), else none."""
    done = folder / "labels.csv"
    if done.is_file():
        return done
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, (p, lab) in enumerate(zip(paths, labels, strict=True)):
        with Image.open(p) as im:
            rgb = np.asarray(im.convert("RGB"))
        name = f"{k:05d}.png"
        Image.fromarray(fn(rgb)).save(folder / name, **(
            {"dpi": (25400 / mpp, 25400 / mpp)} if mpp else {}))
        rows.append((name, lab))
    tmp = folder / "labels.tmp"
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "label"])
        w.writerows(rows)
    tmp.replace(done)
    return done


def score(checkpoint: Path, labels_csv: Path, out: Path) -> dict[str, Any]:
    from crc_core.evaluation import evaluate

    m = run_job(evaluate(checkpoint, labels_csv, out, label_column="label", subset="all",
                         batch_size=64, device="cpu"))
    return {"accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"],
            "map": m["macro"]["map"], "n": m["n"],
            "stain": (m.get("stain") or {}).get("counts"),
            "predictions": str(out / "predictions.csv"), "classes": m["classes"]}


def _acc_map(y: np.ndarray, p: np.ndarray, classes: list[str]) -> tuple[float, float]:
    """Accuracy and mAP as the evaluation computes them (its one macro rule); mAP NaN where
    undefined (a single class)."""
    from crc_core.evaluation import compute_metrics

    m = compute_metrics(y, p, classes)
    return m["accuracy"], math.nan if m["macro"]["map"] is None else m["macro"]["map"]


def paired_intervals(base: str, shifted: str, groups: list[str], classes: list[str],
                     reps: int = 1000, seed: int = 0) -> dict[str, list[float]]:
    """95 % intervals of the accuracy and mAP change, by a paired bootstrap over cases.

    ``base`` and ``shifted`` are the two copies' ``predictions.csv`` (same images, same order),
    ``classes`` the evaluation's class names. The same cases are drawn (with replacement, whole
    cases, ``reps`` times) for the unshifted and the shifted copy, so the interval says how much of
    a change the choice of test cases alone could make; it is not a test of the bound itself.
    """
    from crc_core.runs import read_predictions

    y, p0 = read_predictions(Path(base), classes)
    y1, p1 = read_predictions(Path(shifted), classes)
    if not np.array_equal(y, y1) or len(y) != len(groups):
        raise ValueError(f"{shifted}: not the same images as {base}")
    cases = sorted(set(groups))
    members = [np.flatnonzero(np.asarray(groups) == c) for c in cases]
    rng = np.random.default_rng(seed)
    d_acc, d_map = [], []
    for _ in range(reps):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(cases), len(cases))])
        a0, m0 = _acc_map(y[idx], p0[idx], classes)
        a1, m1 = _acc_map(y[idx], p1[idx], classes)
        d_acc.append(a1 - a0)
        d_map.append(m1 - m0)
    q = (2.5, 97.5)
    return {"accuracy": [round(float(v), 3) for v in np.percentile(d_acc, q)],
            # A draw holding a single class has no mAP: such draws are left out of its interval.
            "map": [round(float(v), 3) for v in np.nanpercentile(d_map, q)]}


def markdown(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = ["| model | condition | n | accuracy | Δ | balanced acc. | Δ | mAP | Δ "
             "| 95 % interval of Δ acc. / Δ mAP (cases) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for model, conds in results.items():
        base = conds["none"]
        for name, r in conds.items():
            cells = []
            for k in ("accuracy", "balanced_accuracy", "map"):
                d = r[k] - base[k] if name != "none" else None
                cells += [f"{r[k]:.3f}", "" if d is None else f"{d:+.3f}"]
            ci = r.get("interval")
            cells.append("" if not ci else "{:+.3f} to {:+.3f} / {:+.3f} to {:+.3f}".format(
                *ci["accuracy"], *ci["map"]))
            lines.append(f"| {model} | {name} | {r['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, action="append", required=True)
    ap.add_argument("--name", action="append", help="a label per checkpoint (default: folder)")
    ap.add_argument("--data", type=Path, help="the dataset (default: the checkpoint's source)")
    ap.add_argument("--slides", type=Path, default=Path("../shared/data/slides"))
    ap.add_argument("--slide", type=Path, action="append",
                    help="H&E slides to re-stain to (default: every .svs in --slides)")
    ap.add_argument("--slide-tiles", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tile-mpp", type=float, default=1.3,
                    help="the tiles' µm/px, for the pixel size the 20x condition states "
                    "(default: EBHI's nominal 1.3)")
    ap.add_argument("--subset", choices=("test", "val"), default="test",
                    help="which images of each checkpoint's split record to shift and score: "
                    "test (the figures to report) or val (to try changes on, so the test "
                    "cases stay unseen until the report)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    slides = args.slide or sorted(args.slides.glob("*.svs"))
    conds, info, tags = conditions(slides, args.slide_tiles, args.seed, args.tile_mpp)
    names = args.name or [c.parent.name for c in args.checkpoint]
    results: dict[str, dict[str, dict[str, Any]]] = {}
    subsets: dict[str, str] = {}
    for ck, name in zip(args.checkpoint, names, strict=True):
        paths, labels, groups, how = test_images(ck, args.data, args.subset)
        subsets[name] = f"{len(paths)} images, {how}"
        tag = hashlib.blake2b("\n".join(map(str, paths)).encode(), digest_size=6).hexdigest()
        results[name] = {}
        for cname, fn in conds.items():
            folder = args.out / "conditions" / tag / cname.replace(" ", "_").replace("/", "-")
            csv_path = write_condition(folder, paths, labels, fn, tags.get(cname))
            r = results[name][cname] = score(ck, csv_path, args.out / "eval" / name / folder.name)
            if cname != "none":
                r["interval"] = paired_intervals(results[name]["none"]["predictions"],
                                                 r["predictions"], groups, r["classes"],
                                                 seed=args.seed)
            print(f"{name} | {cname}: acc {r['accuracy']:.3f}", flush=True)
    table = markdown(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "stain_shift.md").write_text(table)
    (args.out / "stain_shift.json").write_text(json.dumps(
        {"results": results, "subsets": subsets, "slides": info,
         "hed_conditions": HED_CONDITIONS, "scales": SCALES,
         "stated_pixel_size": tags}, indent=2))
    print(table)


if __name__ == "__main__":
    main()
