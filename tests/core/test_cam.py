"""Tests of crc_core.cam: CAM identities for the three architectures, planted patterns, stitching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from crc_core.cam import (
    HeatmapAccumulator,
    compute_cams,
    features_and_logits,
    normalize_cams,
)
from crc_core.classes import ClassScheme
from crc_core.inference import LoadedModel, predict
from crc_core.jobs import run_job

torch.set_num_threads(2)


class RednessNet(nn.Module):
    """Feature channel 0 = how red a pixel is (r - g - b, ReLU), channel 1 = a constant; 8x pooling.

    Class 0 ("red") reads channel 0, class 1 ("plain") reads channel 1.
    """

    def __init__(self) -> None:
        super().__init__()
        conv = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight[0, :, 0, 0] = torch.tensor([1.0, -1.0, -1.0])
            conv.bias.copy_(torch.tensor([0.0, 0.1]))
        self.features = nn.Sequential(conv, nn.ReLU(), nn.AvgPool2d(8))
        self.classifier = nn.Linear(2, 2)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.tensor([[4.0, 0.0], [0.0, 1.0]]))
            self.classifier.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


@pytest.mark.parametrize(
    "arch,size",
    [
        # densenet121 builds fastest: in CI; the two others in `make test-slow` (their feature
        # maps and logits are checked in CI by tests/core/test_models.py).
        pytest.param("resnet50", 64, marks=pytest.mark.slow),
        ("densenet121", 64),
        pytest.param("inception_v3", 96, marks=pytest.mark.slow),
    ],
)
def test_cam_mean_plus_bias_is_the_logit(arch: str, size: int) -> None:
    from crc_core.models import build_model, classifier

    torch.manual_seed(0)
    model = build_model(arch, 3).eval()
    x = torch.randn(2, 3, size, size)
    logits, cams = compute_cams(model, arch, x, class_index=1)
    with torch.inference_mode():
        ref = model(x)
    assert torch.allclose(logits, ref, atol=1e-4)
    bias = classifier(model, arch).bias[1]
    assert torch.allclose(cams.mean(dim=(1, 2)) + bias, ref[:, 1], atol=1e-4)


def test_gradcam_equals_relu_cam_over_area_for_gap_linear_heads() -> None:
    from crc_core.models import build_model

    torch.manual_seed(1)
    model = build_model("densenet121", 2).eval()
    x = torch.randn(2, 3, 64, 64)
    _, cam = compute_cams(model, "densenet121", x, class_index=0, method="cam")
    _, grad = compute_cams(model, "densenet121", x, class_index=0, method="gradcam")
    h, w = cam.shape[1:]
    assert torch.allclose(grad, torch.relu(cam) / (h * w), atol=1e-5)


def test_cam_of_a_planted_red_square_peaks_on_it() -> None:
    x = torch.full((1, 3, 64, 64), 0.6)
    x[0, 0, 40:56, 8:24] = 1.0  # red square: rows 40-55, cols 8-23
    x[0, 1:, 40:56, 8:24] = 0.1
    logits, cams = compute_cams(RednessNet().eval(), None, x)
    assert logits.argmax(1).item() == 0
    peak = np.unravel_index(cams[0].argmax().item(), cams.shape[1:])
    assert (5 <= peak[0] <= 6) and (1 <= peak[1] <= 2)  # the 8x8 feature cells over the square


def test_slide_heatmap_peaks_at_the_planted_pattern(tmp_path: Path) -> None:
    img = np.full((512, 768, 3), 170, dtype=np.uint8)
    img[300:340, 500:540] = (250, 20, 20)  # planted red square, level-0 px
    path = tmp_path / "planted.png"
    Image.fromarray(img).save(path)
    lm = LoadedModel(
        RednessNet().eval(),
        None,
        ClassScheme.from_names(["red", "plain"]),
        input_size=128,
        patch_size=128,
        level=0,
        mean=(0, 0, 0),
        std=(1, 1, 1),
    )
    pred = run_job(
        predict(path, lm, stride=64, cam=True, cam_class="red", device="cpu", tissue=False)
    )
    heat = np.nan_to_num(pred.cam, nan=-1)
    hy, hx = np.unravel_index(heat.argmax(), heat.shape)
    s = pred.grid.cam_scale
    x, y = pred.grid.origin[0] + (hx + 0.5) * s, pred.grid.origin[1] + (hy + 0.5) * s
    assert 500 - s <= x <= 540 + s and 300 - s <= y <= 340 + s
    # Far from the square the red-class heatmap stays low.
    fy, fx = int(100 / s), int(100 / s)
    assert heat[fy, fx] < 0.2 * heat.max()


def test_overlapping_tiles_are_averaged() -> None:
    acc = HeatmapAccumulator((4, 6))
    acc.add(0, 0, np.full((4, 4), 1.0, dtype=np.float32))
    acc.add(0, 2, np.full((4, 4), 3.0, dtype=np.float32))
    out = acc.result()
    assert out[0, 0] == 1.0 and out[0, 2] == 2.0 and out[0, 3] == 2.0 and out[0, 5] == 3.0


def test_tiles_outside_the_heatmap_are_clipped_and_gaps_are_nan() -> None:
    acc = HeatmapAccumulator((4, 8))
    acc.add(-2, 6, np.ones((4, 4), dtype=np.float32))
    out = acc.result()
    assert np.isnan(out[0, 0]) and out[1, 7] == 1.0 and np.isnan(out[2, 7])


def test_normalised_cams_are_in_unit_range_per_patch() -> None:
    cams = torch.tensor([[[-1.0, 2.0], [4.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    n = normalize_cams(cams)
    assert n[0].tolist() == [[0.0, 0.5], [1.0, 0.0]] and n[1].abs().sum() == 0


def test_generic_module_without_classifier_is_refused() -> None:
    from crc_core.errors import ConfigError

    with pytest.raises(ConfigError, match="linear 'classifier'"):
        features_and_logits(nn.Conv2d(3, 2, 1), None, torch.zeros(1, 3, 8, 8))
