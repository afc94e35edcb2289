"""Train the gland segmentation U-Net of crc_core.gland_model on the EBHI-Seg gland masks (CPU).

The tiles are split BY CASE (patient) into train / validation / test, stratified by the case's EBHI
class, with a fixed seed (``--init`` continues on the split recorded with the initial weights);
validation picks the epoch and the threshold, test is only scored once at the end. Writes
``crc_core/weights/gland_unet.pt`` (float16) and ``crc_core/weights/gland_unet.json`` (split case
ids, config, command, date, metrics).

Negatives (``--negatives SLIDE``, repeatable): tissue windows of slides with no colonic glands
(squamous epithelium, stroma, keratin) are mixed into every batch (``--negatives-share``) with an
all-zero target, so that non-glandular epithelium is not taken for gland. A slide without mpp is
read at each scale of ``--negatives-mpp``; the bottom ``--negatives-val-fraction`` of its windows
joins the validation set; ``--negatives-region NAME=Y0:Y1`` keeps only the windows of slide NAME in
those level-0 rows, so the rest of it can be scored as held out (benchmarks/gland_crossfit.py).

Usage::

    nice python tools/train_gland_model.py --ebhi ../shared/data/ebhi --epochs 40 --threads 2
    nice python tools/train_gland_model.py --ebhi ../shared/data/ebhi \
        --init crc_core/weights/gland_unet.pt --lr 1e-3 --epochs 3 --max-minutes 21 \
        --negatives ../shared/data/slides/tcga-cr-7395-01a-01-ts1.svs --negatives-mpp 0.5,1.0 \
        --out /tmp/gland_neg/gland_unet.pt
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from crc_core import gland_model as gm
from crc_core.atomic import atomic_path, atomic_write_text


def split_cases(
    rows: list[dict[str, str]], seed: int, fractions: tuple[float, float] = (0.7, 0.15)
) -> dict[str, list[str]]:
    """Cases -> train/val/test, stratified by the case's most frequent EBHI class.

    Cases are grouped by :func:`crc_core.gland_model.case_key` (the 7-digit case number), so tiles
    whose ``labels.csv`` case_id is a file name still fall on the side of their case.
    """
    by_case: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        by_case[gm.case_key(r["case_id"])].append(r["ebhi_class"])
    by_class: dict[str, list[str]] = defaultdict(list)
    for case, classes in sorted(by_case.items()):
        by_class[max(set(classes), key=lambda c: (classes.count(c), c))].append(case)
    rng = random.Random(seed)
    split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for cls in sorted(by_class):
        cases = sorted(by_class[cls])
        rng.shuffle(cases)
        n = len(cases)
        n_tr = round(n * fractions[0])
        n_va = round(n * fractions[1])
        if n >= 3:
            n_tr = min(n_tr, n - 2)
            n_va = max(1, n_va)
        split["train"] += cases[:n_tr]
        split["val"] += cases[n_tr : n_tr + n_va]
        split["test"] += cases[n_tr + n_va :]
    return {k: sorted(v) for k, v in split.items()}


def augment(
    imgs: torch.Tensor,
    masks: torch.Tensor,
    crop: int,
    scale_range: tuple[float, float],
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, h, w, 3) uint8, (b, h, w) bool -> normalised (b, 3, c, c), soft masks (b, 1, c, c)."""
    b, h, w, _ = imgs.shape
    x = imgs.permute(0, 3, 1, 2).float().div_(255.0)
    y = masks[:, None].float()
    lo, hi = scale_range
    f = lo + (hi - lo) * float(torch.rand(1, generator=gen))
    s = max(crop, round(h * f))
    x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
    y = F.interpolate(y, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
    xs, ys = [], []
    for i in range(b):
        oy = int(torch.randint(0, s - crop + 1, (1,), generator=gen))
        ox = int(torch.randint(0, s - crop + 1, (1,), generator=gen))
        xi = x[i, :, oy : oy + crop, ox : ox + crop]
        yi = y[i, :, oy : oy + crop, ox : ox + crop]
        k = int(torch.randint(0, 4, (1,), generator=gen))
        if k:
            xi, yi = torch.rot90(xi, k, (1, 2)), torch.rot90(yi, k, (1, 2))
        if float(torch.rand(1, generator=gen)) < 0.5:
            xi, yi = xi.flip(2), yi.flip(2)
        # colour: per-channel gain (stain balance), contrast, saturation, brightness
        gain = torch.exp(torch.randn(3, 1, 1, generator=gen) * 0.08)
        xi = xi * gain
        mean = xi.mean()
        xi = (xi - mean) * math.exp(float(torch.randn(1, generator=gen)) * 0.12) + mean
        gray = xi.mean(0, keepdim=True)
        sat = 0.6 + 0.7 * float(torch.rand(1, generator=gen))
        xi = gray + (xi - gray) * sat
        xi = xi + float(torch.randn(1, generator=gen)) * 0.04
        xs.append(xi.clamp_(0, 1))
        ys.append(yi)
    xb = torch.stack(xs)
    mean_t = torch.tensor(gm.MEAN).view(1, 3, 1, 1)
    std_t = torch.tensor(gm.STD).view(1, 3, 1, 1)
    return (xb - mean_t) / std_t, torch.stack(ys)


def predict_full(model: torch.nn.Module, imgs: np.ndarray, bs: int = 64) -> np.ndarray:
    """Boolean masks at the tiles' own size, through the same path as inference."""
    scale = gm.EBHI_MPP / gm.MODEL_MPP
    out = []
    for s in range(0, len(imgs), bs):
        out.append((gm.predict_logits(model, imgs[s : s + bs], scale) > 0).numpy())
    return np.concatenate(out)


def predict_logits_all(model: torch.nn.Module, imgs: np.ndarray, bs: int = 64) -> np.ndarray:
    """Logits (n, h, w) at the tiles' own size."""
    scale = gm.EBHI_MPP / gm.MODEL_MPP
    return np.concatenate(
        [gm.predict_logits(model, imgs[s : s + bs], scale).numpy() for s in range(0, len(imgs), bs)]
    )


def pick_threshold(logits: np.ndarray, true: np.ndarray) -> tuple[float, dict[str, float]]:
    """Logit threshold (validation cases) maximising Dice + r + balanced accuracy - MAE."""
    best: tuple[float, float, dict[str, float]] | None = None
    for t in np.round(np.arange(-2.0, 2.01, 0.25), 2):
        m = gm.gland_metrics(list(logits > t), true)
        r = m["pearson_r"] if np.isfinite(m["pearson_r"]) else 0.0
        score = m["mean_dice"] + r + m["balanced_accuracy"] - m["mae"]
        if best is None or score > best[0]:
            best = (score, float(t), m)
    assert best is not None
    return best[1], best[2]


def assign_rows(
    rows: list[dict[str, str]], split: dict[str, list[str]]
) -> dict[str, list[dict[str, str]]]:
    """Rows of each side of ``split``: a row goes where its raw ``case_id`` is listed, else where
    its :func:`crc_core.gland_model.case_key` is (recorded splits list raw ids, new ones keys)."""
    raw = {k: {str(c) for c in v} for k, v in split.items()}
    out: dict[str, list[dict[str, str]]] = {k: [] for k in split}
    for r in rows:
        side = next((k for k in split if r["case_id"] in raw[k]), None)
        if side is None:
            side = next((k for k in split if gm.case_key(r["case_id"]) in raw[k]), None)
        if side is not None:
            out[side].append(r)
    return out


def load_negatives(
    slides: list[Path],
    mpps: list[float],
    val_fraction: float,
    min_tissue: float = 0.5,
    regions: dict[str, tuple[int, int]] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Non-glandular tissue windows (target mask all zero) as 224 px tiles at the EBHI scale.

    For each slide and each stated level-0 µm/px, the level-0 windows that span 224 px at
    ``EBHI_MPP`` (``ceil(224 * EBHI_MPP / mpp)`` px) and are mostly tissue are shrunk to 224 px, so
    they go through the same augmentation as the EBHI tiles. The bottom ``val_fraction`` of each
    slide's rows of windows is kept for validation (a spatial split: neighbouring windows overlap in
    content). ``regions`` (slide file name -> level-0 rows ``(y0, y1)``) keeps only the windows
    that lie wholly in those rows, so the rest of the slide can be scored as held out.
    Returns train tiles, validation tiles (n, 224, 224, 3) uint8 and a record.
    """
    from PIL import Image

    tr, va, info = [], [], []
    for slide in slides:
        for mpp in mpps:
            size = math.ceil(224 * gm.EBHI_MPP / mpp)
            wins = gm.slide_tissue_windows(slide, size, 0, min_tissue)
            rows = (regions or {}).get(slide.name)
            if rows is not None:
                wins = [w for w in wins if rows[0] <= w[1] and w[1] + size <= rows[1]]
            ys = sorted({y for _, y, _ in wins})
            cut = ys[min(len(ys) - 1, int(len(ys) * (1 - val_fraction)))] if ys else 0
            n_va = 0
            for _, y, rgb in wins:
                tile = np.asarray(Image.fromarray(rgb).resize((224, 224), Image.BOX))
                (va if y >= cut and val_fraction > 0 else tr).append(tile)
                n_va += int(y >= cut and val_fraction > 0)
            info.append(
                {
                    "slide": slide.name,
                    "mpp": mpp,
                    "window_px": size,
                    "rows": list(rows) if rows is not None else "all",
                    "train": len(wins) - n_va,
                    "val": n_va,
                    "val_from_y": cut,
                }
            )
    empty = np.zeros((0, 224, 224, 3), np.uint8)
    return (np.stack(tr) if tr else empty), (np.stack(va) if va else empty), {"windows": info}


def negative_figures(model: torch.nn.Module, imgs: np.ndarray, threshold: float) -> dict:
    """Predicted gland fractions of negative tiles (truth 0): mean, max and how many >= 0.5."""
    if not len(imgs):
        return {"n_tiles": 0}
    fr = (predict_logits_all(model, imgs) > threshold).reshape(len(imgs), -1).mean(1)
    return {
        "n_tiles": len(imgs),
        "mean_fraction": float(fr.mean()),
        "max_fraction": float(fr.max()),
        "n_ge_half": int((fr >= 0.5).sum()),
    }


def final_metrics(
    model: gm.GlandUNet,
    data: dict[str, tuple[np.ndarray, np.ndarray]],
    neg_tr: np.ndarray,
    neg_va: np.ndarray,
) -> tuple[float, dict[str, dict]]:
    """Threshold chosen on validation (EBHI validation tiles + held-out negatives), then the
    figures: validation (together, EBHI alone), negatives, EBHI test cases (scored once)."""
    model.eval()
    val_x = np.concatenate([data["val"][0], neg_va])
    val_y = np.concatenate([data["val"][1], np.zeros(neg_va.shape[:3], bool)])
    threshold, val = pick_threshold(predict_logits_all(model, val_x), val_y)
    model.threshold = threshold

    def ebhi(side: str) -> dict[str, float]:
        logits = predict_logits_all(model, data[side][0])
        return gm.gland_metrics(list(logits > threshold), data[side][1])

    return threshold, {
        "val": val,
        "val_ebhi": ebhi("val"),
        "val_negatives": negative_figures(model, neg_va, threshold),
        "train_negatives": negative_figures(model, neg_tr, threshold),
        "test": ebhi("test"),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ebhi", type=Path, default=Path("../shared/data/ebhi"))
    ap.add_argument("--out", type=Path, default=gm.WEIGHTS_PATH)
    ap.add_argument("--seed", type=int, default=20261128)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--base", type=int, default=16)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-minutes", type=float, default=25.0)
    ap.add_argument(
        "--init",
        type=Path,
        default=None,
        help="continue from these weights (same architecture); their recorded split is kept",
    )
    ap.add_argument(
        "--negatives",
        type=Path,
        action="append",
        default=[],
        help="slide of non-glandular tissue whose tissue windows are added as all-zero targets "
        "(repeatable); never pass a slide you test on",
    )
    ap.add_argument(
        "--negatives-mpp",
        type=lambda s: [float(v) for v in s.split(",")],
        default=[0.5],
        help="level-0 µm/px assumed for the negative slides; several (e.g. 0.5,1.0) take the "
        "windows at each scale when the slide does not state it",
    )
    ap.add_argument(
        "--negatives-share",
        type=float,
        default=0.25,
        help="share of each batch taken from the negative windows",
    )
    ap.add_argument(
        "--negatives-val-fraction",
        type=float,
        default=0.25,
        help="bottom share of each negative slide's windows kept for validation",
    )
    ap.add_argument(
        "--negatives-region",
        type=_region,
        action="append",
        default=[],
        metavar="NAME=Y0:Y1",
        help="use only the windows of negative slide NAME that lie in level-0 rows Y0 to Y1 "
        "(repeatable); the rest of that slide stays held out",
    )
    return ap.parse_args(argv)


def _region(text: str) -> tuple[str, tuple[int, int]]:
    """``NAME=Y0:Y1`` -> ``(NAME, (Y0, Y1))``."""
    try:
        name, rows = text.split("=", 1)
        y0, y1 = (int(v) for v in rows.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=Y0:Y1, got {text!r}") from None
    if not 0 <= y0 < y1:
        raise argparse.ArgumentTypeError(f"rows must satisfy 0 <= Y0 < Y1, got {text!r}")
    return name, (y0, y1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()

    rows = gm.read_ebhi_labels(args.ebhi)
    model = gm.GlandUNet(base=args.base, depth=args.depth)
    previous: dict | None = None
    if args.init is not None:
        model = gm.load_model(args.init)
        model.train()
        previous = json.loads(args.init.with_suffix(".json").read_text())
        split = previous["split"]  # continue on the split the weights were chosen and tested on
    else:
        split = split_cases(rows, args.seed)
    sets = assign_rows(rows, split)
    data = {k: gm.load_ebhi_tiles(args.ebhi, v) for k, v in sets.items()}
    neg_tr, neg_va, neg_info = load_negatives(
        args.negatives,
        args.negatives_mpp,
        args.negatives_val_fraction,
        regions=dict(args.negatives_region),
    )
    print(
        {k: (len(split[k]), len(sets[k])) for k in split},
        "negatives",
        len(neg_tr),
        len(neg_va),
        f"loaded in {time.time() - t0:.0f}s",
        flush=True,
    )
    state = fit(model, args, data, neg_tr, neg_va, gen, t0)
    model.load_state_dict(state["best_state"])
    threshold, metrics = final_metrics(model, data, neg_tr, neg_va)
    print("best epoch", state["best_epoch"], "threshold", threshold, metrics, flush=True)
    meta = {
        "data": "EBHI-Seg (Shi et al., Frontiers in Medicine 2023, CC BY 4.0), ../shared/data/ebhi"
        + (
            f"; negatives (all-zero targets) from {[p.name for p in args.negatives]}"
            if args.negatives
            else ""
        ),
        "command": "python tools/train_gland_model.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seed": args.seed,
        "split": split,
        "split_key": previous.get("split_key", "case_id") if previous else "case_key",
        "split_tiles": {k: len(v) for k, v in sets.items()},
        "config": json.loads(json.dumps(vars(args), default=str)),
        "negatives": neg_info,
        "parameters": sum(p.numel() for p in model.parameters()),
        "continued_from": None
        if previous is None
        else {k: previous[k] for k in ("command", "date", "steps", "best_epoch", "metrics")},
        "ebhi_mpp": gm.EBHI_MPP,
        "model_mpp": gm.MODEL_MPP,
        "best_epoch": state["best_epoch"],
        "steps": state["steps"],
        "logit_threshold": threshold,
        "epochs_run": len(state["history"]),
        "train_seconds": round(time.time() - t0),
        "metrics": metrics,
        "history": state["history"],
    }
    write_outputs(model, args.out, meta)
    return 0


def write_outputs(model: gm.GlandUNet, out: Path, meta: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        gm.save_weights(model, Path(tmp), meta)
    atomic_write_text(out.with_suffix(".json"), json.dumps(meta, indent=1) + "\n")
    for f in (out, out.with_suffix(".json")):
        os.chmod(f, 0o644)
    print("wrote", out, f"{out.stat().st_size / 1e6:.2f} MB", flush=True)


def fit(
    model: torch.nn.Module,
    args: argparse.Namespace,
    data: dict[str, tuple[np.ndarray, np.ndarray]],
    neg_tr: np.ndarray,
    neg_va: np.ndarray,
    gen: torch.Generator,
    t0: float,
) -> dict:
    """Warm-up + cosine schedule ended by ``--epochs`` or ``--max-minutes``; the epoch with the best
    validation score (EBHI validation tiles and held-out negative windows together) is kept."""
    tr_x = torch.from_numpy(data["train"][0])
    tr_y = torch.from_numpy(data["train"][1])
    neg_x = torch.from_numpy(neg_tr)
    n_neg = round(args.batch * args.negatives_share) if len(neg_x) else 0
    n_pos = args.batch - n_neg
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    total_steps = args.epochs * math.ceil(len(tr_x) / n_pos)
    budget_s = args.max_minutes * 60
    val_x = np.concatenate([data["val"][0], neg_va])
    val_y = np.concatenate([data["val"][1], np.zeros(neg_va.shape[:3], bool)])
    t_train = time.time()

    def progress(step: int) -> float:
        # Training ends at the planned step count or at the time budget, whichever comes first;
        # the learning-rate schedule (warm-up, then cosine to zero) follows that progress.
        return min(1.0, max(step / total_steps, (time.time() - t_train) / budget_s))

    def set_lr(step: int) -> float:
        pr = progress(step)
        lr = args.lr * (
            pr / 0.05 if pr < 0.05 else 0.5 * (1 + math.cos(math.pi * (pr - 0.05) / 0.95))
        )
        for g in opt.param_groups:
            g["lr"] = lr
        return pr

    ratio = gm.EBHI_MPP / gm.MODEL_MPP
    scale_range = (max(args.crop / tr_x.shape[1], ratio * 0.8), ratio * 1.25)
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    history: list[dict] = []
    step = 0
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(tr_x), generator=gen)
        tot, seen, done = 0.0, 0, False
        for s in range(0, len(perm), n_pos):
            if set_lr(step) >= 1.0:
                done = True
                break
            idx = perm[s : s + n_pos]
            xs, ys = tr_x[idx], tr_y[idx]
            if n_neg:
                ni = torch.randint(0, len(neg_x), (n_neg,), generator=gen)
                xs = torch.cat([xs, neg_x[ni]])
                ys = torch.cat([ys, torch.zeros((n_neg, *ys.shape[1:]), dtype=ys.dtype)])
            xb, yb = augment(xs, ys, args.crop, scale_range, gen)
            logits = model(xb)
            p = torch.sigmoid(logits)
            dice = 1 - (2 * (p * yb).sum() + 1) / (p.sum() + yb.sum() + 1)
            loss = F.binary_cross_entropy_with_logits(logits, yb) + dice
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            tot += loss.item() * len(xs)
            seen += len(xs)
        model.eval()
        val = gm.gland_metrics(predict_full(model, val_x), val_y)
        history.append({"epoch": epoch + 1, "steps": step, "loss": tot / max(seen, 1), **val})
        print(
            f"epoch {epoch + 1} step {step} loss {tot / max(seen, 1):.4f} "
            f"val dice {val['mean_dice']:.4f} "
            f"r {val['pearson_r']:.3f} mae {val['mae']:.4f} bacc {val['balanced_accuracy']:.3f} "
            f"[{time.time() - t0:.0f}s]",
            flush=True,
        )
        score = val["mean_dice"] - val["mae"]
        if best is None or score > best[0]:
            best = (score, epoch + 1, {k: v.clone() for k, v in model.state_dict().items()})
        if done or progress(step) >= 1.0:
            print(f"schedule finished after {step} steps", flush=True)
            break
    assert best is not None
    return {"best_state": best[2], "best_epoch": best[1], "steps": step, "history": history}


if __name__ == "__main__":
    raise SystemExit(main())
