"""How much of a stain shift a checkpoint's normaliser undoes, at full size and at the input size.

For ``--tiles`` EBHI tiles (every 80th file): the mean absolute difference (grey levels, RGB)
between each shifted tile and the original, and between their normalised versions, for every stain
condition of :mod:`stain_shift`; once at the tiles' 224 px and once after resampling to ``--size``
(what training, ``crc evaluate`` and ``crc predict`` normalise today: the network's input).

    PYTHONPATH=. python benchmarks/stain_undo.py --checkpoint RUN/best.pt --size 64
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import stain_shift as ss
from PIL import Image

from crc_core.models import load_checkpoint
from crc_core.preprocess import resample
from crc_core.stain import from_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--ebhi", type=Path, default=Path("../shared/data/ebhi"))
    ap.add_argument("--slides", type=Path, default=Path("../shared/data/slides"))
    ap.add_argument("--tiles", type=int, default=20)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    norm = from_checkpoint(load_checkpoint(args.checkpoint))
    if norm is None:
        raise SystemExit(f"{args.checkpoint} has no stain normalisation")
    files = sorted(p for p in args.ebhi.glob("*/*.jpg") if "_glands" not in p.name)
    x = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files[::80][:args.tiles]])
    conds = {k: ss.hed_shift(*v) for k, v in ss.HED_CONDITIONS.items()}
    for s in sorted(args.slides.glob("*.svs")):
        conds[f"slide {s.name}"] = ss.slide_condition(s, 64, 0)[0]
    print(f"| condition | shifted vs original, 224 px | normalised, 224 px | shifted vs original, "
          f"{args.size} px | normalised, {args.size} px |\n|---|---|---|---|---|")
    small = np.stack([resample(t, args.size) for t in x])
    for name, fn in conds.items():
        y = np.stack([fn(t) for t in x])
        ys = np.stack([resample(t, args.size) for t in y])
        cells = [np.abs(y.astype(int) - x).mean(), np.abs(norm(y).astype(int) - norm(x)).mean(),
                 np.abs(ys.astype(int) - small).mean(),
                 np.abs(norm(ys).astype(int) - norm(small)).mean()]
        print(f"| {name} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
