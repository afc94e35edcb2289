"""Stain normalisation: fit/apply round trips on real tiles, torchstain equivalence, fail-safe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crc_core import stain
from crc_core.errors import CheckpointError, DatasetError
from crc_core.stain import StainNormalizer, estimate_stains, fit_images, normalizer_from_json


def _tiles(ebhi_dir: Path, n: int, offset: int = 0) -> np.ndarray:
    files = sorted(p for p in ebhi_dir.glob("*/*.jpg") if "_glands" not in p.name)
    step = len(files) // (n + offset)
    pick = files[offset * step::step][:n]
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in pick])


@pytest.fixture(scope="module")
def ref_tiles(ebhi_dir: Path) -> np.ndarray:
    return _tiles(ebhi_dir, 12)


@pytest.fixture(scope="module")
def other_tiles(ebhi_dir: Path) -> np.ndarray:
    return _tiles(ebhi_dir, 6, offset=7)


def _shift_hed(imgs: np.ndarray, h: float, e: float) -> np.ndarray:
    from crc_core.data import hed_jitter

    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    scale = torch.tensor([[h, e, 1.0]]).expand(len(imgs), 3)
    y = hed_jitter(x, scale, torch.zeros(len(imgs), 3))
    return (y * 255).round().byte().permute(0, 2, 3, 1).numpy()


def test_macenko_apply_matches_torchstain_image_by_image(ref_tiles, other_tiles, monkeypatch):
    from torchstain.torch.normalizers import TorchMacenkoNormalizer

    norm = fit_images(list(ref_tiles), "macenko")
    # torchstain knows no ink: compare the algorithm itself, with the ink rule switched off.
    monkeypatch.setattr("crc_core.tissue.ink_pixels", lambda rgb: np.zeros(rgb.shape[:-1], bool))
    ours = norm(other_tiles)
    ts = TorchMacenkoNormalizer()
    ts.HERef = torch.tensor(norm.params["stain_vectors"]).T
    ts.maxCRef = torch.tensor(norm.params["max_concentrations"])
    for mine, im in zip(ours, other_tiles, strict=True):
        theirs, _, _ = ts.normalize(torch.from_numpy(im).permute(2, 0, 1), stains=False)
        diff = np.abs(theirs.numpy().astype(int) - mine.astype(int)).max(-1).reshape(-1)
        # Pixels with a negative concentration are clamped here, kept by torchstain.
        od = stain._od(im[None])
        he = stain._macenko_vectors(od, stain._screen(im[None], od, strict=True)[0])
        inside = (stain._concentrations(od, he)[0] >= 0).all(0).numpy()
        assert inside.mean() > 0.5      # (mostly pale pixels with a tiny negative value)
        # torchstain truncates to integers where we round: at most 1 apart, allow float noise.
        assert np.mean(diff[inside] <= 1) > 0.999, diff[inside].max()


def test_fit_apply_round_trip_reaches_the_reference_stain(ref_tiles, other_tiles):
    norm = fit_images(list(ref_tiles), "macenko", seed=3)
    shifted = _shift_hed(other_tiles, 1.4, 0.7)
    before = estimate_stains(shifted)
    after = estimate_stains(norm(shifted))
    ref_max = np.array(norm.params["max_concentrations"])
    err_before = np.abs(np.array(before["max_concentrations"]) / ref_max - 1).max()
    err_after = np.abs(np.array(after["max_concentrations"]) / ref_max - 1).max()
    assert err_after < 0.15 < err_before
    ref_h = np.array(norm.params["stain_vectors"][0])
    cos = float(np.dot(after["hematoxylin"], ref_h))
    assert np.degrees(np.arccos(min(1.0, cos))) < 5
    assert norm.counts["normalised"] == len(other_tiles) and norm.passed_through == 0


def test_reinhard_round_trip_gives_the_reference_lab_statistics(ref_tiles, other_tiles):
    norm = fit_images(list(ref_tiles), "reinhard")
    out = norm(_shift_hed(other_tiles, 0.7, 1.3))
    lab = stain._lab(out).reshape(len(out), -1, 3)
    mask, _, _ = stain._screen(out, stain._od(out), strict=False)
    mu, sd = stain._lab_stats(lab, mask.numpy())
    assert np.allclose(mu.mean(0), norm.params["lab_mean"], atol=4)
    assert np.allclose(sd.mean(0), norm.params["lab_std"], atol=4)


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_json_round_trip_normalises_identically(ref_tiles, other_tiles, method):
    norm = fit_images(list(ref_tiles), method)
    doc = json.loads(json.dumps(norm.to_json()))
    again = normalizer_from_json(doc)
    assert again is not None and again.method == method
    assert np.array_equal(norm(other_tiles), again(other_tiles))


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_blank_white_and_black_windows_are_passed_through_and_counted(ref_tiles, method):
    norm = fit_images(list(ref_tiles), method)
    blank = np.full((3, 96, 96, 3), 255, np.uint8)
    blank[1] = 238                      # glass
    blank[2, ::9, ::9] = (120, 60, 140)  # dust specks on glass (1.3 % of the pixels)
    out = norm(blank)
    assert np.array_equal(out, blank)
    assert norm.counts["background"] == 3 and norm.counts["normalised"] == 0
    assert "3 passed through unchanged (3 too little tissue" in norm.statement("windows")


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_pen_marked_window_is_passed_through_and_counted(ref_tiles, method):
    norm = fit_images(list(ref_tiles), method)
    batch = ref_tiles[:2].copy()
    batch[0, :60] = (40, 130, 70)       # green marker across a quarter of a tissue tile
    out = norm(batch)
    assert np.array_equal(out[0], batch[0])
    assert not np.array_equal(out[1], batch[1])
    assert norm.counts == {"normalised": 1, "background": 0, "pen": 1, "unestimable": 0}


def test_single_stain_window_is_unestimable_not_nan(ref_tiles):
    norm = fit_images(list(ref_tiles), "macenko")
    # One flat colour: no second stain, no spread of angles.
    flat = np.zeros((1, 64, 64, 3), np.uint8)
    flat[...] = (150, 80, 160)
    out = norm(flat)
    assert np.array_equal(out, flat)
    assert norm.counts["unestimable"] == 1


def test_single_image_and_empty_batch(ref_tiles):
    norm = fit_images(list(ref_tiles), "macenko")
    one = norm(ref_tiles[0])
    assert one.shape == ref_tiles[0].shape and one.dtype == np.uint8
    assert norm(np.zeros((0, 8, 8, 3), np.uint8)).shape == (0, 8, 8, 3)
    with pytest.raises(ValueError):
        norm(ref_tiles[0].astype(np.float32))


def test_fit_refuses_a_reference_without_tissue():
    with pytest.raises(DatasetError, match="enough tissue"):
        fit_images([np.full((64, 64, 3), 250, np.uint8)] * 3, "macenko")


def test_damaged_checkpoint_entry_is_refused():
    assert normalizer_from_json(None) is None
    assert normalizer_from_json({"method": "none"}) is None
    with pytest.raises(CheckpointError, match="preprocess.stain"):
        normalizer_from_json({"method": "macenko", "params": {"stain_vectors": [[1, 2]]}})
    with pytest.raises(CheckpointError):
        normalizer_from_json({"method": "vahadane", "params": {}})


def test_estimate_stains_of_glass_says_why():
    res = estimate_stains([np.full((32, 32, 3), 245, np.uint8)])
    assert res["ok"] is False and "tissue" in res["reason"]


def test_normaliser_refuses_an_unknown_method():
    with pytest.raises(Exception, match="choose none, macenko, reinhard"):
        StainNormalizer("vahadane", {})
