"""Tests of crc_core.tissue: tissue and pen masks on real slides, gland estimator on EBHI tiles."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crc_core import tissue

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cmu_thumb(slides_dir: Path) -> np.ndarray:
    openslide = pytest.importorskip("openslide")
    with openslide.OpenSlide(str(slides_dir / "cmu-1-small-region.svs")) as s:
        return np.asarray(s.get_thumbnail((512, 512)).convert("RGB"))


@pytest.fixture(scope="module")
def cmu_patch(slides_dir: Path) -> np.ndarray:
    """A 400 px all-tissue patch at level 0 (0.499 µm/px) of CMU-1-Small-Region."""
    openslide = pytest.importorskip("openslide")
    with openslide.OpenSlide(str(slides_dir / "cmu-1-small-region.svs")) as s:
        return np.asarray(s.read_region((1000, 1900), 0, (400, 400)).convert("RGB"))


@pytest.fixture(scope="module")
def held_out(ebhi_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """All tiles of the test cases the gland model never saw (training or model selection)."""
    from crc_core import gland_model as gm

    rows = gm.held_out_rows(gm.read_ebhi_labels(ebhi_dir))
    return gm.load_ebhi_tiles(ebhi_dir, rows)


# --- tissue mask ---------------------------------------------------------------------------


def test_tissue_mask_excludes_background_of_real_thumbnail(cmu_thumb: np.ndarray) -> None:
    m = tissue.tissue_mask(cmu_thumb)
    h, w = m.shape
    assert m.dtype == bool and m.shape == cmu_thumb.shape[:2]
    assert m[: int(0.3 * h), : int(0.3 * w)].mean() < 0.01  # glass, top left
    assert m[: int(0.2 * h), int(0.85 * w) :].mean() < 0.01  # glass, top right


def test_tissue_mask_keeps_tissue_of_real_thumbnail(cmu_thumb: np.ndarray) -> None:
    m = tissue.tissue_mask(cmu_thumb)
    h, w = m.shape
    assert m[int(0.6 * h) : int(0.85 * h), int(0.45 * w) : int(0.6 * w)].mean() > 0.95
    assert 0.2 < tissue.tissue_fraction(cmu_thumb) < 0.6


def test_tissue_fraction_of_full_tissue_patch_and_blank_patch(cmu_patch: np.ndarray) -> None:
    assert tissue.tissue_fraction(cmu_patch) > 0.9
    blank = np.full((400, 400, 3), 242, np.uint8)
    assert tissue.tissue_fraction(blank) == 0.0


def _paint_stroke(
    img: np.ndarray, color: tuple[int, int, int], rows: slice
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    out = img.copy()
    h, w = out.shape[:2]
    stroke = np.zeros((h, w), bool)
    stroke[rows, 40 : w - 40] = True
    noise = rng.integers(-12, 13, size=(int(stroke.sum()), 3))
    out[stroke] = np.clip(np.array(color) + noise, 0, 255).astype(np.uint8)
    return out, stroke


@pytest.mark.parametrize(
    "color", [(35, 70, 170), (40, 140, 90), (25, 25, 30)], ids=["blue", "green", "black"]
)
def test_pen_stroke_is_removed_from_tissue(
    cmu_patch: np.ndarray, color: tuple[int, int, int]
) -> None:
    inked, stroke = _paint_stroke(cmu_patch, color, slice(180, 215))
    m = tissue.tissue_mask(inked)
    assert m[stroke].mean() < 0.02  # ink is not tissue
    ring = np.zeros_like(stroke)
    ring[:150] = True
    ring[250:] = True
    assert m[ring].mean() > 0.9  # tissue away from the stroke is kept


def test_pen_mask_finds_no_ink_in_stained_tissue(ebhi_dir: Path) -> None:
    # EBHI tiles are strongly haematoxylin-blue: the ink rules must not take blue nuclei for ink.
    with open(ebhi_dir / "labels.csv", newline="") as fh:
        names = [r["image"] for r in csv.DictReader(fh)][::40]
    imgs = [np.asarray(Image.open(ebhi_dir / n).convert("RGB")) for n in names]
    assert len(imgs) >= 30
    assert max(tissue.pen_mask(im).mean() for im in imgs) < 0.02


# --- gland estimator -----------------------------------------------------------------------


def test_gland_estimator_matches_real_masks_on_held_out_cases(
    held_out: tuple[np.ndarray, np.ndarray],
) -> None:
    from crc_core.gland_model import gland_metrics

    imgs, true = held_out
    m = gland_metrics(tissue.gland_masks(imgs, batch_size=32), true)
    assert m["n_tiles"] >= 150 and m["n_true_lt_half"] >= 20
    # measured (benchmarks/gland_validate.py): Dice 0.929, r 0.851, MAE 0.045, bal. acc. 0.779
    assert m["mean_dice"] >= 0.90
    assert m["pearson_r"] >= 0.80
    assert m["mae"] <= 0.06
    assert m["balanced_accuracy"] >= 0.72


def test_gland_fractions_batch_equals_single(held_out: tuple[np.ndarray, np.ndarray]) -> None:
    imgs = held_out[0][:6]
    batch = tissue.gland_fractions(imgs, batch_size=4)
    single = [tissue.gland_fraction(im) for im in imgs]
    np.testing.assert_allclose(batch, single, atol=2e-3)


def test_gland_fraction_is_stable_when_resampled_by_mpp(
    held_out: tuple[np.ndarray, np.ndarray],
) -> None:
    from crc_core.gland_model import EBHI_MPP

    imgs = held_out[0][::6][:12]
    size = round(224 * EBHI_MPP / 0.5)  # the same tissue at 0.5 µm/px
    big = [np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC)) for im in imgs]
    native = tissue.gland_fractions(imgs)
    resampled = tissue.gland_fractions(big, mpp=0.5)
    assert np.abs(native - resampled).mean() < 0.03


def test_gland_mask_shape_dtype_and_fraction_range(cmu_patch: np.ndarray) -> None:
    odd = cmu_patch[:301, :257]
    m = tissue.gland_mask(odd, mpp=0.499)
    assert m.dtype == bool and m.shape == (301, 257)
    f = tissue.gland_fraction(odd, mpp=0.499)
    assert isinstance(f, float) and 0.0 <= f <= 1.0
    fr = tissue.gland_fractions([odd, cmu_patch], mpp=0.499)
    assert fr.shape == (2,) and fr.dtype == np.float64 and ((fr >= 0) & (fr <= 1)).all()
    assert tissue.gland_fractions([]).shape == (0,)


def test_gland_fraction_of_blank_glass_is_zero() -> None:
    assert tissue.gland_fraction(np.full((224, 224, 3), 240, np.uint8)) < 0.02


def test_gland_mask_rejects_bad_mpp(cmu_patch: np.ndarray) -> None:
    with pytest.raises(ValueError, match="mpp"):
        tissue.gland_mask(cmu_patch, mpp=0.0)


def test_gland_weights_reject_a_file_that_is_not_a_gland_model(tmp_path: Path) -> None:
    import torch

    from crc_core.errors import CheckpointError
    from crc_core.gland_model import load_model

    bad = tmp_path / "bad.pt"
    torch.save({"format": "something-else"}, bad)
    with pytest.raises(CheckpointError, match="not a gland model"):
        load_model(bad)


def test_importing_tissue_does_not_import_torch() -> None:
    code = "import sys, crc_core.tissue; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "False"
