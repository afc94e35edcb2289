"""A `crc extract` dataset and a run folder copied to new paths: `crc evaluate --subset auto`
scores exactly the test images, as many as before the copy, and never a training image."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from crc_core.cli import main as crc_main
from crc_core.jobs import run_job
from crc_core.splits import content_key
from crc_core.training import fit, make_config

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"


@pytest.fixture(scope="module")
def dataset_and_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if not (DEMO / "project.json").is_file():
        pytest.skip("resources/demo is not in this checkout")
    root = tmp_path_factory.mktemp("extract-copy")
    shutil.copytree(DEMO, root / "demo")
    ds = root / "dataset"
    assert crc_main(["extract", "--project", str(root / "demo"), "--out", str(ds),
                     "--patch-size", "224", "--overlap", "0", "--random", "0", "--cap", "18",
                     "--quiet"]) == 0
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cfg = make_config("resnet50", "quick", epochs=1, batch_size=8, image_size=32,
                          device="cpu")
        run_job(fit(ds, root / "run", cfg))
    finally:
        torch.set_num_threads(before)
    return ds, root / "run"


def _evaluate(run: Path, data: Path, out: Path) -> dict:
    assert crc_main(["evaluate", "--checkpoint", str(run / "best.pt"), "--data", str(data),
                     "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_a_copied_extract_dataset_and_run_are_scored_on_the_test_images_only(dataset_and_run,
                                                                            tmp_path: Path):
    ds, run = dataset_and_run
    first = _evaluate(run, ds, tmp_path / "e1")
    ds2, run2 = tmp_path / "moved" / "set", tmp_path / "moved" / "run"
    shutil.copytree(ds, ds2)
    shutil.copytree(run, run2)
    again = _evaluate(run2, ds2, tmp_path / "e2")
    assert first["subset"] == again["subset"] == "test" and again["n"] == first["n"] > 0
    test_keys = {r["key"] for r in csv.DictReader(open(run / "split.csv")) if r["split"] == "test"}
    scored = {content_key(ds2 / r["image"])
              for r in csv.DictReader(open(tmp_path / "e2" / "predictions.csv"))}
    assert scored == test_keys
    manifest = list(csv.DictReader(open(ds / "manifest.csv")))
    assert len(scored) == sum(r["split"] == "test" for r in manifest)
