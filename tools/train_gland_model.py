"""Train the gland segmentation U-Net of crc_core.gland_model on the EBHI-Seg gland masks (CPU).

The tiles are split BY CASE (patient) into train / validation / test, stratified by the case's EBHI
class, with a fixed seed; validation picks the epoch, test is only scored once at the end. Writes
``crc_core/weights/gland_unet.pt`` (float16) and ``crc_core/weights/gland_unet.json`` (split case
ids, config, command, date, metrics).

Usage::

    nice python tools/train_gland_model.py --ebhi ../shared/data/ebhi --epochs 40 --threads 2
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


def main(argv: list[str] | None = None) -> int:
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
        help="continue from these weights (same architecture, trained on the same split)",
    )
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()

    rows = gm.read_ebhi_labels(args.ebhi)
    split = split_cases(rows, args.seed)
    sets = {k: [r for r in rows if gm.case_key(r["case_id"]) in set(v)] for k, v in split.items()}
    data = {k: gm.load_ebhi_tiles(args.ebhi, v) for k, v in sets.items()}
    print(
        {k: (len(split[k]), len(sets[k])) for k in split},
        f"loaded in {time.time() - t0:.0f}s",
        flush=True,
    )
    tr_x = torch.from_numpy(data["train"][0])
    tr_y = torch.from_numpy(data["train"][1])

    model = gm.GlandUNet(base=args.base, depth=args.depth)
    previous: dict | None = None
    if args.init is not None:
        model = gm.load_model(args.init)
        model.train()
        previous = json.loads(args.init.with_suffix(".json").read_text())
        if previous["split"] != split:
            raise SystemExit(f"{args.init} was trained on another split (seed {previous['seed']})")
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(tr_x) / args.batch)
    total_steps = args.epochs * steps_per_epoch
    budget_s = args.max_minutes * 60

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
    history = []
    step = 0
    t_train = time.time()
    done = False
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(tr_x), generator=gen)
        tot = 0.0
        seen = 0
        for s in range(0, len(perm), args.batch):
            if set_lr(step) >= 1.0:
                done = True
                break
            idx = perm[s : s + args.batch]
            xb, yb = augment(tr_x[idx], tr_y[idx], args.crop, scale_range, gen)
            logits = model(xb)
            bce = F.binary_cross_entropy_with_logits(logits, yb)
            p = torch.sigmoid(logits)
            dice = 1 - (2 * (p * yb).sum() + 1) / (p.sum() + yb.sum() + 1)
            loss = bce + dice
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            tot += loss.item() * len(idx)
            seen += len(idx)
        model.eval()
        val = gm.gland_metrics(predict_full(model, data["val"][0]), data["val"][1])
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
    model.load_state_dict(best[2])
    model.eval()
    val_logits = predict_logits_all(model, data["val"][0])
    threshold, val = pick_threshold(val_logits, data["val"][1])
    test = gm.gland_metrics(
        list(predict_logits_all(model, data["test"][0]) > threshold), data["test"][1]
    )
    model.threshold = threshold
    print("best epoch", best[1], "threshold", threshold, "val", val, "test", test, flush=True)
    meta = {
        "data": "EBHI-Seg (Shi et al., Frontiers in Medicine 2023, CC BY 4.0), ../shared/data/ebhi",
        "command": "python tools/train_gland_model.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seed": args.seed,
        "split": split,
        "split_key": "case_key",
        "split_tiles": {k: len(v) for k, v in sets.items()},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "parameters": n_params,
        "continued_from": None
        if previous is None
        else {k: previous[k] for k in ("command", "date", "steps", "best_epoch", "metrics")},
        "ebhi_mpp": gm.EBHI_MPP,
        "model_mpp": gm.MODEL_MPP,
        "best_epoch": best[1],
        "steps": step,
        "logit_threshold": threshold,
        "epochs_run": len(history),
        "train_seconds": round(time.time() - t0),
        "metrics": {"val": val, "test": test},
        "history": history,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        gm.save_weights(model, Path(tmp), meta)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(meta, indent=1) + "\n")
    for f in (args.out, args.out.with_suffix(".json")):
        os.chmod(f, 0o644)
    print("wrote", args.out, f"{args.out.stat().st_size / 1e6:.2f} MB", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
