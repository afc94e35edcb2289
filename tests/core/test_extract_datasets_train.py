"""A `crc extract` dataset trains as the study's workflow should: the scheme's class order,
validation carved out of the training areas, best.pt chosen on validation (or the last epoch when
no validation is possible, said so)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from crc_core.classes import ClassScheme
from crc_core.data import load_table, split_by_group
from crc_core.evaluation import evaluate
from crc_core.jobs import JobWarning, run_job
from crc_core.models import load_checkpoint
from crc_core.training import fit, make_config

PAPER = ClassScheme.paper()


def _into(messages: list[str]):
    """``run_job``'s ``on_progress`` that collects the job's warnings into ``messages``."""
    return lambda ev: messages.append(ev.message) if isinstance(ev, JobWarning) else None


def _extract_like(ebhi: Path, root: Path, areas_per_class: int, per_area: int = 3) -> Path:
    """The layout `crc extract` writes (manifest labels are class ids of dataset.json's scheme),
    filled with real EBHI tiles: one class id per EBHI folder, areas of ``per_area`` tiles, the
    last area of each class in test."""
    folders = ["normal", "low-grade-in", "adenocarcinoma", "high-grade-in", "polyp"]
    # Labels in manifest order deliberately not the scheme's order.
    ids = ["adc-poor", "normal", "adc-moderate", "adenoma", "adc-well"]
    rows = []
    for folder, cid in zip(folders, ids, strict=True):
        tiles = sorted((ebhi / folder).glob("*.jpg"))[: areas_per_class * per_area]
        for k, t in enumerate(tiles):
            area = f"{cid}-area{k // per_area}"
            last = k // per_area == areas_per_class - 1 and areas_per_class > 1
            rel = Path("patches") / cid / t.name
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(t.read_bytes())
            rows.append([rel.as_posix(), cid, "slide1", area, 0, 0, 0, 224,
                         "test" if last else "train", "", ""])
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "slide", "area_id", "l0_x", "l0_y", "level", "size", "split",
                    "gland_fraction", "tissue_fraction"])
        w.writerows(rows)
    (root / "dataset.json").write_text(json.dumps({
        "classes": PAPER.to_json(), "patch_size": 224, "level": 0, "mpp": 1.3,
        "config": {"split_by": "area"}}))
    return root


def test_the_papers_five_classes_keep_the_schemes_order(ebhi_dir: Path, tmp_path: Path):
    t = load_table(_extract_like(ebhi_dir, tmp_path / "ds", 2))
    assert t.scheme.names == PAPER.names
    assert t.scheme.ids == PAPER.ids
    first = t.samples[0]
    assert t.scheme.ids[first.label] == "adc-poor"     # labels (ids) index the scheme's order


def test_validation_is_carved_from_training_areas_never_from_test(ebhi_dir: Path,
                                                                  tmp_path: Path):
    t = load_table(_extract_like(ebhi_dir, tmp_path / "ds", 4))
    assert t.options["group_column"] == "area_id"
    sp = split_by_group(t, 0.34, seed=0)
    assert sp.val and sp.test
    val_areas = {t.samples[i].group for i in sp.val}
    assert not val_areas & {t.samples[i].group for i in sp.train}
    assert all(t.samples[i].split == "train" for i in sp.val)
    assert {t.samples[i].split for i in sp.test} == {"test"}
    assert {t.scheme.names[t.samples[i].label] for i in sp.val} == set(PAPER.names)
    assert any("carved out of the given training part" in n for n in sp.notes)


@pytest.fixture(scope="module")
def trained(ebhi_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("extract-train")
    ds = _extract_like(ebhi_dir, root / "ds", 3, per_area=2)
    torch.set_num_threads(2)
    cfg = make_config("densenet121", "recommended", epochs=2, batch_size=8, image_size=32,
                      device="cpu", val_fraction=0.34)
    run_job(fit(ds, root / "run", cfg))
    return ds, root / "run"


def test_training_chooses_best_pt_on_validation_in_the_schemes_order(trained):
    ds, run = trained
    hist = list(csv.DictReader(open(run / "history.csv")))
    assert all(r["val_acc"] != "" for r in hist)
    best = load_checkpoint(run / "best.pt")
    assert best["scheme"].names == PAPER.names          # the model head's order
    scores = [float(r["val_bal_acc"]) for r in hist]
    assert best["metrics"]["best_score"] == pytest.approx(max(scores), abs=1e-6)
    res = run_job(evaluate(run / "best.pt", ds, run / "eval", device="cpu"))
    assert res["subset"] == "test" and res["classes"] == PAPER.names
    table4 = (run / "eval" / "table4.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in table4] == PAPER.names
    header = (run / "eval" / "confusion.csv").read_text().splitlines()[0].split(",")[1:]
    assert header == PAPER.names


def test_without_possible_validation_the_last_epoch_is_kept_and_said(ebhi_dir: Path,
                                                                       tmp_path: Path):
    ds = _extract_like(ebhi_dir, tmp_path / "ds", 1, per_area=3)   # one area per class
    notes: list[str] = []
    cfg = make_config("densenet121", "quick", epochs=2, batch_size=8, image_size=32,
                      device="cpu")
    summary = run_job(fit(ds, tmp_path / "run", cfg), _into(notes))
    assert summary["val_images"] == 0 and summary["best_epoch"] == 2
    assert any("no validation set" in n and "last epoch" in n for n in notes)
    cfg_json = json.loads((tmp_path / "run" / "config.json").read_text())
    assert any("no validation set" in n for n in cfg_json["notes"])
    assert load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == 2
