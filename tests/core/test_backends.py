"""Inference backends (crc_core.inference.backends): ONNX Runtime scores as PyTorch does, CAM and
Grad-CAM included; the export is cached and written atomically; without ONNX Runtime, ``auto`` falls
back to PyTorch with a message and ``onnx`` is refused in one line."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from crc_core.classes import ClassScheme
from crc_core.cli import main
from crc_core.errors import ConfigError
from crc_core.inference import backends, load_model, make_scorer
from crc_core.models import build_model, save_checkpoint
from crc_core.preprocess import decode_rgb, resample

torch.set_num_threads(2)
SCHEME = ClassScheme.three_class()
CPU = torch.device("cpu")
#: Small inputs keep the tests quick (InceptionV3 needs at least 75 px).
SIZES = {"resnet50": 64, "densenet121": 64, "inception_v3": 80}


def _needs_onnxruntime() -> None:
    version, why = backends.onnxruntime_version()
    if version is None:
        pytest.skip(f"{why}: the onnx backend cannot be tested here")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random-weight checkpoints of the three architectures, written by the project's writer."""
    folder = tmp_path_factory.mktemp("ckpts")
    out = {}
    for arch, size in SIZES.items():
        torch.manual_seed(0)
        out[arch] = folder / f"{arch}.pt"
        save_checkpoint(out[arch], build_model(arch, 3), arch=arch, classes=SCHEME,
                        input_size=size, patch_size=224, mpp=0.5)
    return out


@pytest.fixture(scope="module")
def tiles(ebhi_dir: Path) -> np.ndarray:
    """Six real EBHI tiles (two each of Normal, Low-grade IN, Adenocarcinoma), 224 px uint8."""
    with open(ebhi_dir / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    picked = []
    for cls in ("Normal", "Low-grade IN", "Adenocarcinoma"):
        picked += [r["image"] for r in rows if r["ebhi_class"] == cls][:2]
    return np.stack([decode_rgb(ebhi_dir / p) for p in picked])


def _at(tiles: np.ndarray, size: int) -> np.ndarray:
    return np.stack([resample(t, size) for t in tiles])


@pytest.mark.parametrize("arch", list(SIZES))
def test_onnx_probabilities_and_cam_equal_torch_on_real_tiles(
    arch: str, checkpoints: dict[str, Path], tiles: np.ndarray
) -> None:
    _needs_onnxruntime()
    lm = load_model(checkpoints[arch], CPU)
    imgs = _at(tiles, SIZES[arch])
    onnx = make_scorer(lm, CPU, 4, backend="onnx")
    ref = make_scorer(lm, CPU, 4, backend="torch")
    assert onnx.backend == "onnx" and ref.backend == "torch"
    p_onnx, cam_onnx = onnx.run(imgs, cam=True, cam_tile=16)
    p_ref, cam_ref = ref.run(imgs, cam=True, cam_tile=16)
    assert p_onnx.shape == (len(imgs), 3)
    assert np.abs(p_onnx - p_ref).max() < 1e-4
    assert cam_onnx is not None and cam_ref is not None
    assert np.abs(cam_onnx - cam_ref).max() < 1e-3  # maps normalised to [0, 1]


def test_onnx_gradcam_and_tta_equal_torch(checkpoints: dict[str, Path], tiles: np.ndarray) -> None:
    _needs_onnxruntime()
    lm = load_model(checkpoints["densenet121"], CPU)
    imgs = _at(tiles[:3], 64)
    onnx = make_scorer(lm, CPU, 4, backend="onnx", tta=True)
    ref = make_scorer(lm, CPU, 4, backend="torch", tta=True)
    p_onnx, g_onnx = onnx.run(imgs, cam=True, cam_class=1, cam_method="gradcam", cam_tile=8)
    p_ref, g_ref = ref.run(imgs, cam=True, cam_class=1, cam_method="gradcam", cam_tile=8)
    assert np.abs(p_onnx - p_ref).max() < 1e-4
    assert g_onnx is not None and g_ref is not None
    assert np.abs(g_onnx - g_ref).max() < 1e-3


def test_export_is_cached_and_reused(
    checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _needs_onnxruntime()
    monkeypatch.setenv("CRC_CACHE_DIR", str(tmp_path))
    lm = load_model(checkpoints["resnet50"], CPU)
    first = make_scorer(lm, CPU, 4, backend="onnx")
    assert first.exported and first.path.parent == tmp_path / "onnx"
    stamp = first.path.stat().st_mtime_ns
    second = make_scorer(load_model(checkpoints["resnet50"], CPU), CPU, 4, backend="onnx")
    assert not second.exported and second.path == first.path
    assert first.path.stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "onnx").iterdir()] == [first.path.name]


def test_a_failed_export_leaves_no_file(
    checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _needs_onnxruntime()
    monkeypatch.setenv("CRC_CACHE_DIR", str(tmp_path))

    def half_written(lm, target: Path) -> None:
        target.write_bytes(b"partial onnx")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(backends, "_export_fp32", half_written)
    lm = load_model(checkpoints["resnet50"], CPU)
    with pytest.raises(OSError, match="disk full"):
        make_scorer(lm, CPU, 4, backend="onnx")
    assert not list((tmp_path / "onnx").iterdir())


def test_another_checkpoint_gets_another_export(checkpoints: dict[str, Path]) -> None:
    a = backends.export_path(load_model(checkpoints["resnet50"], CPU))
    b = backends.export_path(load_model(checkpoints["densenet121"], CPU))
    assert a != b and a.parent == b.parent


def test_without_onnxruntime_auto_falls_back_to_torch_with_a_message(
    checkpoints: dict[str, Path], tiles: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    scorer = make_scorer(load_model(checkpoints["densenet121"], CPU), CPU, 4, backend="auto")
    assert scorer.backend == "torch"
    assert scorer.fallback is not None and "ONNX Runtime cannot be imported" in scorer.fallback
    p, _ = scorer.run(_at(tiles[:2], 64))
    assert p.shape == (2, 3)
    with pytest.raises(ConfigError, match="--backend onnx: ONNX Runtime cannot be imported"):
        make_scorer(load_model(checkpoints["densenet121"], CPU), CPU, 4, backend="onnx")


def test_cli_backend_onnx_without_onnxruntime_is_one_line_and_exit_2(
    checkpoints: dict[str, Path], slides_dir: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    rc = main(["predict", "--checkpoint", str(checkpoints["densenet121"]), "--slide",
               str(slides_dir / "cmu-1-small-region.svs"), "--backend", "onnx", "--device",
               "cpu", "--out", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "ONNX Runtime cannot be imported" in err[0] and "--backend torch" in err[0]


def test_quantize_needs_the_onnx_backend(checkpoints: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="--quantize int8 needs the onnx backend"):
        make_scorer(load_model(checkpoints["densenet121"], CPU), CPU, 4, backend="torch",
                    quantize="int8")


# ------------------------------------------------------------------ static int8 (issue 15 item 3)
DEMO = Path(__file__).resolve().parents[2] / "models" / "demo_densenet121_3class.pt"


def test_static_int8_calibrates_on_training_images_only_and_scores_like_float(
    ebhi_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _needs_onnxruntime()
    from crc_core import preprocess
    from crc_core.inference.calibration import ensure_static_model
    from crc_core.jobs import run_job
    from crc_core.models import load_checkpoint
    from crc_core.splits import SplitRecord, content_key

    monkeypatch.setenv("CRC_CACHE_DIR", str(tmp_path / "cache"))
    seen: list[Path] = []
    real = preprocess.decode_windows
    monkeypatch.setattr(preprocess, "decode_windows",
                        lambda path, *a, **k: (seen.append(Path(path)), real(path, *a, **k))[1])
    note = run_job(ensure_static_model(DEMO, ebhi_dir / "labels.csv", n=16))
    record = SplitRecord.from_json(load_checkpoint(DEMO, "cpu")["split"])
    assert record is not None and len(seen) == 16
    assert all(content_key(p) in record.train for p in seen)  # never a test or validation image
    assert "16 of the run's" in note and "training images" in note
    # the float and the int8 model agree on held-out test tiles of the demo model
    with open(ebhi_dir / "labels.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh)
                if r["ebhi_class"] in ("Normal", "Low-grade IN", "Adenocarcinoma")]
    test = [ebhi_dir / r["image"] for r in rows
            if content_key(ebhi_dir / r["image"]) in record.test]
    imgs = np.stack([resample(decode_rgb(p), 112) for p in test[:24]])
    lm = load_model(DEMO, CPU)
    p_float, _ = make_scorer(lm, CPU, 8, backend="onnx").run(imgs)
    q = make_scorer(lm, CPU, 8, backend="onnx", quantize="int8-static")
    assert "int8 static quantisation (calibrated on 16" in q.backend_statement
    p_int8, _ = q.run(imgs)
    assert np.abs(p_int8 - p_float).max() < 0.15
    assert (p_int8.argmax(1) == p_float.argmax(1)).mean() >= 0.9


def test_static_int8_without_a_calibration_is_refused_in_one_line(
    checkpoints: dict[str, Path], slides_dir: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _needs_onnxruntime()
    monkeypatch.setenv("CRC_CACHE_DIR", str(tmp_path / "cache"))
    rc = main(["predict", "--checkpoint", str(checkpoints["resnet50"]), "--slide",
               str(slides_dir / "cmu-1-small-region.svs"), "--quantize", "int8-static",
               "--device", "cpu", "--out", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--calibrate" in err[0]


def test_a_checkpoint_without_a_split_record_cannot_be_calibrated(
    checkpoints: dict[str, Path], ebhi_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    _needs_onnxruntime()
    from crc_core.inference.calibration import ensure_static_model
    from crc_core.jobs import run_job

    monkeypatch.setenv("CRC_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="records no split"):
        run_job(ensure_static_model(checkpoints["resnet50"], ebhi_dir / "labels.csv"))


def test_evaluate_int8_static_calibrates_on_the_table_it_scores_read_once(
    ebhi_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _needs_onnxruntime()
    from crc_core import evaluation, splits
    from crc_core.jobs import run_job
    from crc_core.models import load_checkpoint
    from crc_core.splits import SplitRecord, content_key

    monkeypatch.setenv("CRC_CACHE_DIR", str(tmp_path / "cache"))
    record = SplitRecord.from_json(load_checkpoint(DEMO, "cpu")["split"])
    with open(ebhi_dir / "labels.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh)
                if r["ebhi_class"] in ("Normal", "Low-grade IN", "Adenocarcinoma")]
    part = {r["image"]: record.role(content_key(ebhi_dir / r["image"])) for r in rows}
    train = [r for r in rows if part[r["image"]] == "train"][:6]
    test = [r for r in rows if part[r["image"]] == "test"][:6]
    csv_path = tmp_path / "labels.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "image": str(ebhi_dir / r["image"])} for r in train + test)
    tables, keyed = [], []
    real_table, real_key = evaluation.load_table, splits.content_key
    monkeypatch.setattr(evaluation, "load_table", lambda *a, **k: (tables.append(1),
                                                                    real_table(*a, **k))[1])
    monkeypatch.setattr(splits, "content_key", lambda p: (keyed.append(p), real_key(p))[1])
    m = run_job(evaluation.evaluate(DEMO, csv_path, tmp_path / "eval", quantize="int8-static",
                                    backend="onnx", device="cpu"))
    assert m["n"] == len(test)                                  # scored: the test images only
    assert len(tables) == 1 and len(keyed) == len(train) + len(test)  # the table read once
    assert "calibrated on 6 of the run's 6 training images" in m["scoring"]["backend_statement"]
