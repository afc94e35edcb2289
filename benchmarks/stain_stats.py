"""Stain statistics of the EBHI tiles and of tissue tiles of the real slides (sets the HED jitter).

For every tile: the mean HED concentrations of its tissue pixels in the space the training
augmentation jitters (scikit-image's Ruifrok-Johnston matrix, ``crc_core.data.hed_jitter``; OD in
``log(I) / log(1e-6)`` units), and its Macenko stain vectors and 99th percentile concentrations
(``crc_core.stain``). Per source: medians and the 5th-95th percentile range, and per slide the
factor between its median H (E, D) and the EBHI median: the range the HED jitter must cover.

    PYTHONPATH=. python benchmarks/stain_stats.py --ebhi ../shared/data/ebhi \
        --slides ../shared/data/slides --out stain_stats.json

Slides: tissue windows of ``--size`` px at level 0 (at least 80 % tissue), up to ``--tiles`` per
slide, seeded. The kidney slide is IHC (DAB), not H&E: it is measured and listed apart.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from crc_core.data import _HED_FROM_RGB
from crc_core.stain import DEFAULT_HE, _macenko_estimate, _od, _screen


def hed_means(imgs: np.ndarray) -> np.ndarray:
    """``(N, 3)`` mean H, E, D of the tissue pixels (the augmentation's HED space)."""
    import math

    x = torch.from_numpy(imgs).float().div(255).clamp(min=1e-6).reshape(len(imgs), -1, 3)
    od = torch.log(x) / math.log(1e-6)
    hed = (od @ _HED_FROM_RGB).clamp(min=0)
    mask, _, _ = _screen(imgs, _od(imgs), strict=False)
    w = mask.float()[..., None]
    return ((hed * w).sum(1) / w.sum(1).clamp(min=1)).numpy()


def macenko(imgs: np.ndarray) -> dict[str, np.ndarray]:
    _, he, _, max_c, why = _macenko_estimate(imgs, torch.tensor(DEFAULT_HE))
    ok = ~(why["background"] | why["pen"] | why["unestimable"])
    return {"he": he[ok].numpy(), "max_c": max_c[ok].numpy(), "failed": int((~ok).sum())}


def ebhi_tiles(folder: Path, n: int, seed: int) -> np.ndarray:
    files = sorted(p for p in folder.glob("*/*.jpg") if "_glands" not in p.name)
    rng = np.random.default_rng(seed)
    pick = [files[i] for i in sorted(rng.choice(len(files), min(n, len(files)), replace=False))]
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in pick])


def slide_tiles(path: Path, n: int, size: int, seed: int, min_tissue: float = 0.8) -> np.ndarray:
    """Up to ``n`` level-0 windows of ``size`` px with >= ``min_tissue`` tissue (seeded)."""
    from crc_core.jobs import run_job
    from crc_core.slide import open_slide
    from crc_core.stain import slide_tissue_windows

    with open_slide(path) as sl:
        return run_job(slide_tissue_windows(sl, n, size, seed, min_tissue))


def _range(v: np.ndarray) -> list[float]:
    return [round(float(np.percentile(v, q)), 4) for q in (5, 50, 95)]


def _deg(a: np.ndarray, b: np.ndarray) -> float:
    cos = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return round(float(np.degrees(np.arccos(np.clip(cos, -1, 1)))), 1)


def summarise(name: str, imgs: np.ndarray, ref: dict[str, Any] | None) -> dict[str, Any]:
    hed = hed_means(imgs)
    mk = macenko(imgs)
    he_med = np.median(mk["he"], 0) if len(mk["he"]) else np.full((2, 3), np.nan)
    row: dict[str, Any] = {
        "source": name, "tiles": len(imgs),
        "H": _range(hed[:, 0]), "E": _range(hed[:, 1]), "D": _range(hed[:, 2]),
        "macenko_H": [round(float(v), 3) for v in he_med[0]],
        "macenko_E": [round(float(v), 3) for v in he_med[1]],
        "max_c_H": _range(mk["max_c"][:, 0]) if len(mk["he"]) else None,
        "max_c_E": _range(mk["max_c"][:, 1]) if len(mk["he"]) else None,
        "macenko_failed": mk["failed"], "_hed": hed, "_he": he_med,
    }
    if ref is not None:
        ratio = hed / np.median(ref["_hed"], 0)
        row["ratio_to_ebhi"] = {c: _range(ratio[:, i]) for i, c in enumerate("HED")}
        row["angle_to_ebhi_deg"] = {"H": _deg(he_med[0], ref["_he"][0]),
                                    "E": _deg(he_med[1], ref["_he"][1])}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ebhi", type=Path, default=Path("../shared/data/ebhi"))
    ap.add_argument("--slides", type=Path, default=Path("../shared/data/slides"))
    ap.add_argument("--tiles", type=int, default=300, help="EBHI tiles (slides: a third)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(2)
    ebhi = summarise("EBHI (all classes)", ebhi_tiles(args.ebhi, args.tiles, args.seed), None)
    rows = [ebhi]
    for path in sorted(args.slides.glob("*")):
        tiles = slide_tiles(path, max(1, args.tiles // 3), args.size, args.seed)
        if len(tiles):
            rows.append(summarise(path.name, tiles, ebhi))
    print("| source | tiles | H mean 5/50/95 % | E mean | D mean | H/EBHI 5/50/95 % | E/EBHI | "
          "Macenko H (angle to EBHI) | Macenko E (angle) | max conc. H / E (median) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ang = r.get("angle_to_ebhi_deg") or {"H": 0.0, "E": 0.0}
        rat = r.get("ratio_to_ebhi") or {"H": "-", "E": "-"}
        mch = r["max_c_H"][1] if r["max_c_H"] else float("nan")
        mce = r["max_c_E"][1] if r["max_c_E"] else float("nan")
        print(f"| {r['source']} | {r['tiles']} | {r['H']} | {r['E']} | {r['D']} | {rat['H']} | "
              f"{rat['E']} | {r['macenko_H']} ({ang['H']}°) | {r['macenko_E']} ({ang['E']}°) | "
              f"{mch:.2f} / {mce:.2f} |")
    if args.out:
        clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
        args.out.write_text(json.dumps(clean, indent=2))


if __name__ == "__main__":
    main()
