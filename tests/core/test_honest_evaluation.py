"""Evaluation scores what it says: the run's split by content, any labelled set, one macro rule.

Real EBHI tiles, a tiny model trained once per module (1 epoch at 64 px: the figures do not matter,
which images are scored does).
"""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from crc_core.errors import DatasetError
from crc_core.evaluation import compute_metrics, evaluate
from crc_core.jobs import run_job
from crc_core.models import load_checkpoint
from crc_core.splits import SplitRecord, Subset, choose_subset
from crc_core.training import fit, make_config

THREE = {"classes": "Normal,Low-grade IN,Adenocarcinoma", "map": "Low-grade IN=Adenoma"}


def _copy_subset(ebhi: Path, root: Path, per_class: int = 9) -> Path:
    """EBHI tiles copied into ``root`` with a labels.csv of relative paths (3 per case)."""
    rows = list(csv.DictReader(open(ebhi / "labels.csv")))
    by: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        by[r["ebhi_class"]].append(r)
    root.mkdir(parents=True)
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "ebhi_class", "case_id"])
        for c in ("Normal", "Low-grade IN", "Polyp", "Adenocarcinoma"):
            seen: Counter[str] = Counter()
            for r in by[c]:
                if seen[r["case_id"]] < 3 and sum(seen.values()) < per_class:
                    seen[r["case_id"]] += 1
                    dst = root / r["image"]
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(ebhi / r["image"], dst)
                    w.writerow([r["image"], c, r["case_id"]])
    return root / "labels.csv"


@pytest.fixture(scope="module")
def run(ebhi_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset csv, run folder): 3 classes, cases split 1/3 validation, 1/3 test."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("honest")
    data = _copy_subset(ebhi_dir, root / "ds")
    cfg = make_config("resnet50", "quick", epochs=1, batch_size=8, image_size=64, device="cpu",
                      val_fraction=0.34, test_fraction=0.34, mpp=1.3,
                      data={"label_column": "ebhi_class", "group_column": "case_id", **THREE})
    try:
        run_job(fit(data, root / "run", cfg))
    finally:
        torch.set_num_threads(before)
    return data, root / "run"


def _split_rows(run_dir: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for r in csv.DictReader(open(run_dir / "split.csv")):
        out[r["split"]].add(r["key"])
    return out


def _scored_keys(eval_dir: Path, data_root: Path) -> set[str]:
    from crc_core.splits import content_key

    rows = csv.DictReader(open(eval_dir / "predictions.csv"))
    return {content_key(data_root / r["image"]) for r in rows}


def test_a_copied_dataset_and_run_folder_score_exactly_the_test_images(run, tmp_path):
    data, run_dir = run
    first = run_job(evaluate(run_dir / "best.pt", data, tmp_path / "e1", device="cpu"))
    assert first["subset"] == "test"
    # Move everything: the dataset and the run folder land elsewhere, files renamed too.
    ds2, run2 = tmp_path / "elsewhere" / "data", tmp_path / "elsewhere" / "run"
    shutil.copytree(data.parent, ds2)
    shutil.copytree(run_dir, run2)
    rows = list(csv.DictReader(open(ds2 / "labels.csv")))
    for r in rows:
        new = Path(r["image"]).with_name("renamed-" + Path(r["image"]).name)
        (ds2 / r["image"]).rename(ds2 / new)
        r["image"] = new.as_posix()
    with open(ds2 / "labels.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    again = run_job(evaluate(run2 / "best.pt", ds2 / "labels.csv", tmp_path / "e2", device="cpu"))
    assert again["subset"] == "test" and again["n"] == first["n"]
    split = _split_rows(run_dir)
    scored = _scored_keys(tmp_path / "e2", ds2)
    assert scored == split["test"]
    assert not scored & split["train"] and not scored & split["val"]
    assert "matched by content" in again["subset_how"]
    assert json.loads((tmp_path / "e2" / "metrics.json").read_text())["left_out"]["train"] > 0


def test_without_test_images_auto_scores_unseen_images_never_training_ones(run, tmp_path):
    data, run_dir = run
    split = _split_rows(run_dir)
    # A CSV of the training and validation images only: auto falls back to validation and
    # says the figures are optimistic; no training image is scored.
    rows = list(csv.DictReader(open(data)))
    from crc_core.splits import content_key

    keep = [r for r in rows if content_key(data.parent / r["image"]) not in split["test"]]
    sub = data.parent / "no_test.csv"
    with open(sub, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(keep)
    res = run_job(evaluate(run_dir / "best.pt", sub, tmp_path / "e", device="cpu"))
    assert res["subset"] == "val" and "optimistic" in res["subset_how"]
    assert _scored_keys(tmp_path / "e", data.parent) == split["val"]


def test_choose_subset_refuses_when_only_training_images_are_left():
    rec = SplitRecord({"a", "b"}, {"c"}, {"d"})
    assert choose_subset(rec, ["a", "d", "c"], "auto").indices == [1]
    assert choose_subset(rec, ["a", "x", "c"], "auto").indices == [1]       # unseen image
    assert choose_subset(rec, ["a", "c"], "auto").indices == [1]            # validation
    with pytest.raises(DatasetError, match="--subset all"):
        choose_subset(rec, ["a", "b"], "auto")
    every: Subset = choose_subset(rec, ["a", "b"], "all")
    assert every.indices == [0, 1] and "2 training" in every.how


def test_a_checkpoint_without_a_split_record_refuses_auto(run, tmp_path):
    data, run_dir = run
    ckpt = torch.load(run_dir / "best.pt", weights_only=True)
    del ckpt["split"]
    torch.save(ckpt, tmp_path / "old.pt")
    with pytest.raises(DatasetError, match="--subset all"):
        run_job(evaluate(tmp_path / "old.pt", data, tmp_path / "e", device="cpu"))
    res = run_job(evaluate(tmp_path / "old.pt", data, tmp_path / "e", device="cpu",
                           subset="all"))
    assert res["subset"] == "all" and "cannot be told apart" in res["subset_how"]


def test_labels_the_model_does_not_know_are_left_out_and_counted(run, tmp_path):
    # No data options at all: the label column is found by its values, Low-grade IN is counted as
    # Adenoma through the model's training map, Polyp is not a class of the model.
    data, run_dir = run
    res = run_job(evaluate(run_dir / "best.pt", data, tmp_path / "e", device="cpu",
                           subset="all"))
    assert res["left_out_labels"] == {"Polyp": 9}
    assert res["n"] == 27
    assert any("Low-grade IN" in n and "Adenoma" in n for n in res["notes"])


def test_one_class_from_another_lab_is_scored_from_a_plain_folder(run, ebhi_dir, tmp_path):
    _, run_dir = run
    folder = tmp_path / "their_adc"
    folder.mkdir()
    for p in sorted((ebhi_dir / "adenocarcinoma").glob("*.jpg"))[-5:]:
        shutil.copyfile(p, folder / p.name)
    res = run_job(evaluate(run_dir / "best.pt", folder, tmp_path / "e", device="cpu",
                           label="Adenocarcinoma"))
    assert res["n"] == 5 and res["subset"] == "unseen"
    assert res["absent_classes"] == ["Normal", "Adenoma"]
    assert res["macro"]["auroc"] is None          # undefined with one class, not 0
    assert res["accuracy"] == pytest.approx(res["per_class"]["Adenocarcinoma"]["recall"])
    # One subfolder per class works too, and unknown folder names are left out.
    (tmp_path / "byclass" / "Adenocarcinoma").mkdir(parents=True)
    (tmp_path / "byclass" / "Stroma").mkdir()
    for p in sorted(folder.iterdir())[:3]:
        shutil.copyfile(p, tmp_path / "byclass" / "Adenocarcinoma" / p.name)
        shutil.copyfile(p, tmp_path / "byclass" / "Stroma" / p.name)
    res = run_job(evaluate(run_dir / "best.pt", tmp_path / "byclass", tmp_path / "e2",
                           device="cpu"))
    assert res["n"] == 3 and res["left_out_labels"] == {"Stroma": 3}


def test_macro_means_leave_out_absent_classes_everywhere():
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.3, 0.1, 0.6]])
    m = compute_metrics([0, 0, 1, 1], probs, ["A", "B", "C"])
    assert m["absent_classes"] == ["C"]
    a, b = m["per_class"]["A"], m["per_class"]["B"]
    for key, per in (("precision", "precision"), ("recall", "recall"), ("npv", "npv"),
                     ("specificity", "specificity"), ("map", "ap"), ("auroc", "auroc")):
        assert m["macro"][key] == pytest.approx((a[per] + b[per]) / 2), key
    assert m["balanced_accuracy"] == pytest.approx((1.0 + 0.5) / 2)   # recall of A and B


def test_the_checkpoint_records_its_split_and_scale(run):
    _, run_dir = run
    ck = load_checkpoint(run_dir / "best.pt")
    rec = SplitRecord.from_json(ck["split"])
    assert rec is not None and rec.train and rec.val and rec.test
    assert not (rec.train & rec.test) and not (rec.train & rec.val)
    assert ck["mpp"] == 1.3 and ck["mpp_source"] == "given (--mpp)"
    assert ck["scheme"].names == ["Normal", "Adenoma", "Adenocarcinoma"]


def test_a_tile_scores_the_same_in_evaluate_and_placed_in_a_slide_in_predict(run, tmp_path):
    """One preprocessing path: the report's figures hold for the class map on a slide."""
    from PIL import Image

    from crc_core.inference import predict

    data, run_dir = run
    tile = sorted((data.parent / "adenocarcinoma").glob("*.jpg"))[0]
    folder = tmp_path / "one"
    folder.mkdir()
    with Image.open(tile) as im:
        pixels = im.convert("RGB")
    pixels.save(folder / "tile.png")                      # lossless: the same pixels as a slide
    pixels.save(tmp_path / "slide.png")
    res = run_job(evaluate(run_dir / "best.pt", folder, tmp_path / "e", device="cpu",
                           label="Adenocarcinoma"))
    row = next(csv.DictReader(open(tmp_path / "e" / "predictions.csv")))
    from_eval = np.array([float(row[f"prob_{c}"]) for c in res["classes"]])
    pred = run_job(predict(tmp_path / "slide.png", run_dir / "best.pt", device="cpu",
                           tissue=False))
    assert pred.grid.shape == (1, 1)
    assert np.abs(pred.probs[:, 0, 0] - from_eval).max() < 1e-3
    # And with test-time augmentation on both sides.
    res = run_job(evaluate(run_dir / "best.pt", folder, tmp_path / "t", device="cpu",
                           label="Adenocarcinoma", tta=True))
    row = next(csv.DictReader(open(tmp_path / "t" / "predictions.csv")))
    pred = run_job(predict(tmp_path / "slide.png", run_dir / "best.pt", device="cpu",
                           tissue=False, tta=True))
    assert np.abs(pred.probs[:, 0, 0]
                  - np.array([float(row[f"prob_{c}"]) for c in res["classes"]])).max() < 1e-3


def test_test_time_augmentation_averages_the_eight_symmetries():
    from crc_core.models import build_model
    from crc_core.runtime import Scorer

    torch.manual_seed(0)
    model = build_model("resnet50", 3)
    sc = Scorer(model, "resnet50", (0.5,) * 3, (0.25,) * 3, torch.device("cpu"), 8, tta=True)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (1, 48, 48, 3), dtype=np.uint8)
    views = np.concatenate([np.rot90(img, k, axes=(1, 2)) for k in range(4)]
                           + [np.rot90(img[:, :, ::-1], k, axes=(1, 2)) for k in range(4)])
    p, _ = sc.run(views)
    assert np.abs(p - p[0]).max() < 1e-5                  # every view gets the same average
    plain = Scorer(model, "resnet50", (0.5,) * 3, (0.25,) * 3, torch.device("cpu"), 8)
    q, _ = plain.run(views)
    assert np.abs(q.mean(0) - p[0]).max() < 1e-5
