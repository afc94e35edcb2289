"""The checkpoint's stain normalisation through train -> checkpoint -> evaluate / predict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ebhi_subset import write_subset
from PIL import Image

from crc_core.batches import Batches
from crc_core.data import load_table
from crc_core.evaluation import evaluate
from crc_core.inference import load_model, make_scorer, predict
from crc_core.jobs import run_job
from crc_core.models import load_checkpoint
from crc_core.preprocess import decode_rgb, resample
from crc_core.slide import open_array
from crc_core.stain import fit_images, from_checkpoint

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parents[2]


def crc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crc_core.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=900,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "2"})


@pytest.fixture(scope="module")
def subset(ebhi_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_subset(ebhi_dir, tmp_path_factory.mktemp("sub") / "sub.csv",
                        ["Normal", "Adenocarcinoma"], 10)


@pytest.fixture(scope="module")
def run(subset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "macenko"
    res = crc("train", "--data", str(subset), "--label-column", "ebhi_class", "--group-column",
              "case_id", "--arch", "resnet50", "--preset", "quick", "--epochs", "1",
              "--batch-size", "8", "--image-size", "64", "--device", "cpu", "--mpp", "1.3",
              "--stain-norm", "macenko", "--stain-tiles", "8", "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    return out


def test_checkpoint_holds_the_fitted_normaliser(run: Path) -> None:
    ckpt = load_checkpoint(run / "best.pt")
    stain = ckpt["preprocess"]["stain"]
    assert stain["method"] == "macenko"
    assert np.asarray(stain["params"]["stain_vectors"]).shape == (2, 3)
    assert stain["reference"]["source"] == "training tiles" and stain["reference"]["tiles"] <= 8
    notes = json.loads((run / "config.json").read_text())["notes"]
    assert any("Macenko stain normalisation fitted on" in n for n in notes)


def test_windows_are_normalised_at_their_own_resolution_before_resampling(run: Path,
                                                                         subset: Path) -> None:
    """Prediction normalises each window as read, then resamples it to the input size (the
    order training and evaluation use too)."""
    from crc_core.preprocess import resample

    lm = load_model(run / "best.pt")
    assert lm.stain is not None and lm.stain.method == "macenko"
    table = load_table(subset, label_column="ebhi_class", group_column="case_id")
    tile = np.asarray(Image.open(table.samples[0].path).convert("RGB"))
    slide = open_array(tile, mpp=(1.3, 1.3), name="tile.png")
    pred = run_job(predict(slide, run / "best.pt", tissue=False, device="cpu"))
    by_hand = resample(lm.stain(tile[None])[0], lm.input_size)[None]
    expected, _ = make_scorer(lm, torch.device("cpu"), 4).run(by_hand)
    assert np.allclose(pred.probs[:, 0, 0], expected[0], atol=1e-5)
    shrunk_first = lm.stain(resample(tile, lm.input_size)[None])
    assert not np.array_equal(shrunk_first, by_hand)     # the order matters


def test_evaluate_applies_and_states_the_normalisation(run: Path, subset: Path,
                                                       tmp_path: Path) -> None:
    m = run_job(evaluate(run / "best.pt", subset, tmp_path / "eval", label_column="ebhi_class",
                         subset="all"))
    assert m["stain"]["method"] == "macenko"
    assert m["stain"]["counts"]["normalised"] == m["n"]
    assert any("Macenko stain normalisation" in n for n in m["notes"])
    assert "Macenko stain normalisation" in (tmp_path / "eval" / "report.html").read_text()


def test_predict_counts_glass_windows_passed_through(run: Path, subset: Path) -> None:
    table = load_table(subset, label_column="ebhi_class", group_column="case_id")
    tiles = [np.asarray(Image.open(table.samples[i].path).convert("RGB")) for i in range(2)]
    glass = np.full_like(tiles[0], 242)
    mosaic = np.concatenate([np.concatenate([tiles[0], glass], 1),
                             np.concatenate([glass, tiles[1]], 1)], 0)
    slide = open_array(mosaic, mpp=(1.3, 1.3), name="mosaic.png")
    pred = run_job(predict(slide, run / "best.pt", tissue=False, device="cpu"))
    st = pred.resolution["stain"]
    assert st["method"] == "macenko"
    assert st["counts"]["background"] >= 2 and st["counts"]["normalised"] >= 2
    assert any("passed through unchanged" in w for w in pred.warnings)
    assert np.isfinite(pred.probs[:, pred.predicted]).all()


def test_training_cache_holds_normalised_images(subset: Path) -> None:
    table = load_table(subset, label_column="ebhi_class", group_column="case_id")
    idx = list(range(4))
    full = [decode_rgb(table.samples[i].path) for i in idx]
    norm = fit_images(full, "reinhard")
    b = Batches(table, idx, 48, torch.device("cpu"), "cpu", 0, norm)
    for _ in b.prepare():
        pass
    assert b.images is not None
    # Normalised at the tile's own resolution, then resampled to the input size.
    want = np.stack([resample(norm(f[None])[0], 48) for f in full]).transpose(0, 3, 1, 2)
    assert np.array_equal(b.images.numpy(), want)


def test_resume_keeps_the_checkpoints_normaliser(run: Path, subset: Path) -> None:
    before = from_checkpoint(load_checkpoint(run / "last.pt"))
    res = crc("train", "--data", str(subset), "--label-column", "ebhi_class", "--group-column",
              "case_id", "--resume", "--epochs", "2", "--device", "cpu", "--out", str(run))
    assert res.returncode == 0, res.stderr[-2000:]
    after = from_checkpoint(load_checkpoint(run / "last.pt"))
    assert before is not None and after is not None and before.params == after.params


def test_cli_predict_states_scale_and_stain(run: Path, slides_dir: Path, tmp_path: Path) -> None:
    res = crc("predict", "--checkpoint", str(run / "best.pt"), "--slide",
              str(slides_dir / "cmu-1-small-region.svs"), "--device", "cpu", "--out",
              str(tmp_path / "p"))
    assert res.returncode == 0, res.stderr[-2000:]
    # EBHI tiles are 224 px: windows of 224 px at the trained 1.3 µm/px, to the 64 px input.
    assert ("scale: windows of 224 px at the model's 1.3 µm/px (slide 0.499 µm/px; read at level "
            "0, resampled to 64 px)") in res.stdout
    assert "stain: Macenko stain normalisation fitted on" in res.stdout


def test_bad_stain_option_is_one_line(subset: Path, tmp_path: Path) -> None:
    res = crc("train", "--data", str(subset), "--stain-norm", "vahadane", "--out",
              str(tmp_path / "r"))
    assert res.returncode == 2 and "--stain-norm" in res.stderr
