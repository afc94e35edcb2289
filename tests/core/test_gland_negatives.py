"""The gland filter on real non-colorectal tissue and on gland-rich EBHI tiles (issue 12 item 5).

CMU-1 (H&E skin: squamous epithelium, keratin, dermis) has no colonic glands; none of its tissue
windows may pass the ``>= 0.5`` gland filter. Since 2026-12-08 the gland weights took all-zero
targets from CMU-1's windows as well as the TCGA head-and-neck slide's, so this whole-slide check is
a fit, not a held-out result: the held-out figure is the two-fold cross-fit of
``benchmarks/gland_crossfit.py`` (each window scored by weights that never saw its rows: 0 of 14
>= 0.5, max 0.40; ``crc_core/weights/MODEL_CARD.md``). The same weights must still call gland-rich
EBHI tiles of the held-out test cases gland.
"""

from __future__ import annotations

import numpy as np
import pytest

MAX_SKIN_WINDOWS_PASSING = 0
"""CMU-1 tissue windows (400 px, level 0) with gland fraction >= 0.5: 0 of 14 (max 0.18); the
weights before CMU-1 took part passed 1 (0.60), the EBHI-only weights 4 (MODEL_CARD.md)."""


@pytest.fixture(scope="module")
def gland_model():
    pytest.importorskip("torch")
    from crc_core import gland_model as gm
    from crc_core.errors import CheckpointError

    try:
        gm.get_model()
    except CheckpointError as exc:
        pytest.skip(f"gland model weights not available: {exc}")
    return gm


def test_skin_slide_windows_are_not_gland(slides_dir, gland_model):
    openslide = pytest.importorskip("openslide")
    from crc_core.tissue import gland_fractions

    path = slides_dir / "cmu-1-small-region.svs"
    if not path.exists():
        pytest.skip(f"{path} not found (see ../shared/data/README.md)")
    with openslide.OpenSlide(str(path)) as s:
        mpp = float(s.properties[openslide.PROPERTY_NAME_MPP_X])
    assert mpp == pytest.approx(0.499, abs=1e-3)
    wins = gland_model.slide_tissue_windows(path, 400, level=0, min_tissue=0.5)
    assert len(wins) == 14  # the windows the issue measured
    fr = gland_fractions([rgb for _, _, rgb in wins], mpp=mpp)
    passing = int((fr >= 0.5).sum())
    assert passing <= MAX_SKIN_WINDOWS_PASSING, f"{passing} skin windows >= 0.5: {np.round(fr, 2)}"


def test_gland_rich_held_out_ebhi_tiles_stay_gland(ebhi_dir, gland_model):
    from crc_core.tissue import gland_fractions

    rows = [
        r
        for r in gland_model.held_out_rows(gland_model.read_ebhi_labels(ebhi_dir))
        if r["ebhi_class"] in ("Normal", "Low-grade IN", "High-grade IN")
    ]
    imgs, true = gland_model.load_ebhi_tiles(ebhi_dir, sorted(rows, key=lambda r: r["image"]))
    rich = true.reshape(len(true), -1).mean(1) >= 0.6
    assert rich.sum() >= 10
    pick = np.flatnonzero(rich)[:: max(1, int(rich.sum()) // 12)][:12]
    fr = gland_fractions(imgs[pick])
    assert (fr >= 0.5).all(), f"gland-rich tiles called under half gland: {np.round(fr, 2)}"


def test_other_weights_can_be_run_without_replacing_the_packaged_ones(ebhi_dir, gland_model):
    # benchmarks/gland_crossfit.py scores each fold's weights this way.
    rows = sorted(gland_model.held_out_rows(gland_model.read_ebhi_labels(ebhi_dir)),
                  key=lambda r: r["image"])[:4]
    imgs, _ = gland_model.load_ebhi_tiles(ebhi_dir, rows)
    packaged = gland_model.predict_masks(list(imgs))
    other = gland_model.load_model(gland_model.WEIGHTS_PATH)
    other.threshold = 1e9                              # the same network, calling nothing gland
    assert not any(m.any() for m in gland_model.predict_masks(list(imgs), model=other))
    again = gland_model.predict_masks(list(imgs))
    assert all(np.array_equal(a, b) for a, b in zip(packaged, again, strict=True))
    assert any(m.any() for m in again)
