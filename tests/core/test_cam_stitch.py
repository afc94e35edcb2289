"""The smoothed, stitched CAM heatmap and the CAM of another class after a prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from crc_core.cam_stitch import class_cam_job, smooth_cam
from crc_core.classes import ClassScheme
from crc_core.errors import CheckpointError
from crc_core.inference import GridSpec, Prediction, predict
from crc_core.jobs import run_job
from crc_core.slide import open_array

THREE = ClassScheme.three_class()


def _patchwork() -> Prediction:
    """2 x 2 windows without overlap, each CAM a hotspot in its top-left corner (the patchwork)."""
    g = GridSpec((0, 0), 100, 100, 2, 2, 0, 100, 64, cam_step=8, cam_tile=8)
    tile = np.zeros((8, 8), np.float32)
    tile[:3, :3] = 1.0
    cam = np.tile(tile, (2, 2))
    probs = np.zeros((3, 2, 2), np.float32)
    probs[2] = [[0.9, 0.1], [0.9, 0.1]]  # Adenocarcinoma left, Normal right
    probs[0] = 1 - probs[2]
    return Prediction(probs, np.ones((2, 2), bool), g, THREE.copy(), cam=cam)


def test_smoothed_heatmap_is_continuous_across_window_edges() -> None:
    pred = _patchwork()
    raw, smooth = pred.cam, smooth_cam(pred, class_index=2)
    assert smooth.shape == raw.shape and np.nanmax(smooth) == pytest.approx(1.0)
    jump_raw = np.abs(np.diff(raw, axis=1)).max()
    jump_smooth = np.abs(np.diff(smooth, axis=1)).max()
    assert jump_smooth < 0.5 * jump_raw


def test_smoothed_heatmap_fades_windows_unlikely_to_show_the_class() -> None:
    pred = _patchwork()
    raw = pred.cam
    assert raw[:, :8].mean() == pytest.approx(raw[:, 8:].mean())  # one hotspot per window
    s = smooth_cam(pred, class_index=2)
    assert s[:, :8].mean() > 3 * s[:, 8:].mean()
    s0 = smooth_cam(pred, class_index=0)  # the other class: the other way round
    assert s0[:, 8:].mean() > 1.2 * s0[:, :8].mean()


def test_smoothed_heatmap_stays_undefined_outside_predicted_windows() -> None:
    pred = _patchwork()
    pred.cam[:8, :8] = np.nan
    pred.probs[:, 0, 0] = np.nan
    s = smooth_cam(pred)
    assert np.isnan(s[:8, :8]).all() and not np.isnan(s[8:, 8:]).any()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from crc_core.models import build_model, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "dn121.pt"
    save_checkpoint(path, build_model("densenet121", 3), arch="densenet121", classes=THREE,
                    input_size=64, patch_size=64, mpp=1.0)
    return path


def test_cam_of_another_class_covers_the_same_cells(checkpoint: Path) -> None:
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    slide = open_array(rng.integers(0, 255, (256, 384, 3), dtype=np.uint8), mpp=1.0)
    pred = run_job(predict(slide, checkpoint, cam=True, tissue=False, device="cpu"))
    cache: dict = {}
    other = run_job(class_cam_job(slide, pred, "adenoma", cache, device="cpu"))
    assert other.cam_info["class"] == "adenoma"
    np.testing.assert_array_equal(other.predicted, pred.predicted)
    assert other.cam.shape == pred.cam.shape and not np.allclose(other.cam, pred.cam)
    assert len(cache) == 1  # the model stays loaded for the next class


def test_cam_of_another_class_needs_the_checkpoint() -> None:
    pred = _patchwork()
    with pytest.raises(CheckpointError, match="predict again"):
        run_job(class_cam_job(None, pred, "adenoma", {}))
