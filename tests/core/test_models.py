"""Model registry, CAM features and the checkpoint format, including hostile and broken files."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crc_core.classes import ClassScheme
from crc_core.errors import CheckpointError, ConfigError
from crc_core.models import (
    MODELS,
    build_model,
    classifier,
    features_and_logits,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def resnet3() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("resnet50", 3)


@pytest.fixture(scope="module")
def ckpt_file(resnet3: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ck") / "model.pt"
    save_checkpoint(path, resnet3, arch="resnet50", classes=ClassScheme.three_class(),
                    input_size=224, patch_size=400, level=0, mpp=0.5, epoch=3,
                    config={"lr": 1e-3}, metrics={"val_acc": 0.5})
    return path


@pytest.mark.parametrize("arch", list(MODELS))
def test_registry_builds_a_head_of_the_class_count(arch: str) -> None:
    model = build_model(arch, 5)
    assert classifier(model, arch).out_features == 5


@pytest.mark.parametrize("arch", list(MODELS))
def test_cam_features_give_the_same_logits_as_forward(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, 3).eval()
    size = MODELS[arch].min_input_size + 21
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        feats, logits = features_and_logits(model, arch, x)
        plain = model(x)
    assert feats.ndim == 4 and feats.shape[1] == MODELS[arch].feature_channels
    torch.testing.assert_close(logits, plain, rtol=1e-4, atol=1e-4)


def test_inception_returns_aux_logits_in_training_and_plain_logits_in_eval() -> None:
    model = build_model("inception_v3", 3)
    x = torch.randn(2, 3, 299, 299)
    model.train()
    with torch.no_grad():
        out = model(x)
    assert out.logits.shape == (2, 3) and out.aux_logits.shape == (2, 3)
    model.eval()
    with torch.no_grad():
        assert isinstance(model(x), torch.Tensor)


def test_checkpoint_round_trip_gives_the_same_outputs(resnet3: torch.nn.Module,
                                                      ckpt_file: Path) -> None:
    ck = load_checkpoint(ckpt_file, expect_arch="resnet50",
                         expect_classes=ClassScheme.three_class())
    model, meta = model_from_checkpoint(ck)
    assert meta["scheme"].names == ["Normal", "Adenoma", "Adenocarcinoma"]
    assert (meta["input_size"], meta["patch_size"], meta["level"], meta["mpp"]) == (224, 400, 0,
                                                                                   0.5)
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), resnet3.eval()(x))


def test_half_checkpoint_of_resnet50_fits_the_demo_limit(resnet3: torch.nn.Module,
                                                         tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "half.pt", resnet3, arch="resnet50",
                           classes=ClassScheme.three_class(), half=True)
    assert path.stat().st_size <= 50 * 1024 * 1024
    model, _ = model_from_checkpoint(load_checkpoint(path))
    assert next(model.parameters()).dtype == torch.float32


def test_truncated_checkpoint_is_refused(ckpt_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "trunc.pt"
    data = ckpt_file.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(bad)


def test_empty_checkpoint_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "empty.pt")


def test_text_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "notes.pt").write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "notes.pt")


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # what a hostile pickle does: call a function on load
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path: Path,
                                                                writer: str) -> None:
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    payload = {"format": 1, "kind": "crc-workbench-checkpoint", "arch": "resnet50",
               "classes": ["a", "b"], "model": _RunsCode(str(marker))}
    if writer == "torch.save":
        torch.save(payload, evil)
    else:
        evil.write_bytes(pickle.dumps(payload))
    with pytest.raises(CheckpointError, match="run code"):
        load_checkpoint(evil)
    assert not marker.exists()


def test_checkpoint_of_another_architecture_is_refused(ckpt_file: Path) -> None:
    with pytest.raises(CheckpointError, match="resnet50 model, not densenet121"):
        load_checkpoint(ckpt_file, expect_arch="densenet121")


def test_checkpoint_of_another_class_count_is_refused(ckpt_file: Path) -> None:
    with pytest.raises(CheckpointError, match="another class scheme: 3 classes"):
        load_checkpoint(ckpt_file, expect_classes=ClassScheme.paper())
    with pytest.raises(CheckpointError, match="expected 5"):
        load_checkpoint(ckpt_file, expect_classes=5)


def test_bare_state_dict_is_not_a_checkpoint(resnet3: torch.nn.Module, tmp_path: Path) -> None:
    torch.save(resnet3.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="bare state_dict"):
        load_checkpoint(tmp_path / "sd.pt")


def test_weights_file_loads_the_backbone_for_another_class_count(
        resnet3: torch.nn.Module, ckpt_file: Path) -> None:
    model = build_model("resnet50", 5, weights=ckpt_file)
    torch.testing.assert_close(model.conv1.weight, resnet3.conv1.weight)
    assert model.fc.out_features == 5


def test_weights_of_another_architecture_are_refused(ckpt_file: Path) -> None:
    with pytest.raises(CheckpointError, match="another architecture"):
        build_model("densenet121", 3, weights=ckpt_file)


def test_imagenet_weights_missing_from_the_cache_say_how_to_get_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(CheckpointError, match="resnet50-0676ba61.pth"):
        build_model("resnet50", 3, weights="imagenet")


def test_imagenet_weights_in_the_cache_are_used(resnet3: torch.nn.Module, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # A file in torchvision's format at torchvision's cache path (1000-class head).
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    src = build_model("resnet50", 1000)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(src.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth")
    model = build_model("resnet50", 3, weights="imagenet")
    torch.testing.assert_close(model.layer4[0].conv1.weight, src.layer4[0].conv1.weight)
    assert model.fc.out_features == 3


def test_unknown_architecture_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="resnet50, densenet121, inception_v3"):
        build_model("alexnet", 3)


def test_cli_refuses_a_hostile_checkpoint_with_exit_2(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"x": _RunsCode(str(marker))}, evil)
    res = subprocess.run([sys.executable, "-m", "crc_core.cli", "evaluate", "--checkpoint",
                          str(evil), "--data", str(tmp_path), "--out", str(tmp_path / "ev")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    assert res.stderr.startswith("crc: error:") and "Traceback" not in res.stderr
    assert not marker.exists() and not (tmp_path / "ev").exists()
