"""Held-out check of the gland filter on CMU-1 when CMU-1 also trained it: a two-fold cross-fit.

The shipped gland weights (``crc_core/weights/gland_unet.pt``) took all-zero targets from the tissue
windows of both non-colorectal slides, CMU-1 skin included, so the whole-slide test
(``tests/core/test_gland_negatives.py``) is a fit. This benchmark gives the held-out figure: two
models trained by the same recipe, each on the CMU-1 windows of one band of rows only
(``tools/train_gland_model.py --negatives-region``), and each CMU-1 test window (400 px, level 0,
tissue >= 0.5, the test's windows) scored by the model that never saw its rows.

Train the two folds (about 2 CPU-minutes each on 2 cores), then score::

    S=../shared/data/slides; mkdir -p /tmp/gl
    git show 5decb3c:crc_core/weights/gland_unet.pt > /tmp/gl/prev_gland_unet.pt
    git show 5decb3c:crc_core/weights/gland_unet.json > /tmp/gl/prev_gland_unet.json
    COMMON="--ebhi ../shared/data/ebhi --init /tmp/gl/prev_gland_unet.pt \\
      --negatives $S/tcga-cr-7395-01a-01-ts1.svs --negatives $S/cmu-1-small-region.svs \\
      --negatives-mpp 0.5,0.75,1.0 --negatives-share 0.375 --lr 5e-4 --epochs 2 \\
      --max-minutes 14 --threads 1"
    python tools/train_gland_model.py $COMMON \\
      --negatives-region cmu-1-small-region.svs=1200:100000 --out /tmp/gl/A/gland_unet.pt
    python tools/train_gland_model.py $COMMON \\
      --negatives-region cmu-1-small-region.svs=0:1200 --out /tmp/gl/B/gland_unet.pt
    python benchmarks/gland_crossfit.py --slides $S \\
      --fold /tmp/gl/A/gland_unet.pt=0:1200 --fold /tmp/gl/B/gland_unet.pt=1200:100000

``--init`` is the weights from *before* CMU-1 took part (commit 5decb3c, with the ``.json`` that
records their EBHI split), so that no fold has seen the other's rows. ``--fold WEIGHTS=Y0:Y1``
scores, with those weights, the windows lying wholly in level-0 rows ``Y0`` to ``Y1`` (the rows the
fold held out). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _fold(text: str) -> tuple[Path, int, int]:
    weights, rows = text.rsplit("=", 1)
    y0, y1 = (int(v) for v in rows.split(":"))
    return Path(weights), y0, y1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slides", type=Path, default=Path("../shared/data/slides"))
    ap.add_argument("--fold", type=_fold, action="append", required=True,
                    metavar="WEIGHTS=Y0:Y1")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    from crc_core import gland_model as gm

    torch.set_num_threads(args.threads)
    path = args.slides / "cmu-1-small-region.svs"
    wins = gm.slide_tissue_windows(path, 400, level=0, min_tissue=0.5)
    scored: dict[tuple[int, int], float] = {}
    folds = []
    for weights, y0, y1 in args.fold:
        model = gm.load_model(weights)
        mine = [w for w in wins if y0 <= w[1] and w[1] + 400 <= y1]
        masks = gm.predict_masks([rgb for _, _, rgb in mine], mpp=0.499, model=model)
        fr = np.array([m.mean() for m in masks])
        folds.append({"weights": str(weights), "held_out_rows": [y0, y1], "windows": len(mine),
                      "fractions": [round(float(f), 3) for f in fr]})
        scored.update({(x, y): float(f) for (x, y, _), f in zip(mine, fr, strict=True)})
    fr = np.array(list(scored.values()))
    print(json.dumps({
        "benchmark": "gland_crossfit",
        "slide": path.name,
        "windows": len(wins),
        "scored_held_out": len(scored),
        "n_ge_half": int((fr >= 0.5).sum()),
        "max_fraction": round(float(fr.max()), 3) if len(fr) else None,
        "folds": folds,
    }, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
