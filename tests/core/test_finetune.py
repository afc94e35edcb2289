"""Fine-tuning from a model (`crc train --init`): kept architecture, classes and size, the lower
rate, the class refusal, the old/new comparison on the same test images, and the exclusion of
unreviewed proposals from datasets. Training runs use a few real EBHI tiles at 64 px, 1 epoch."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import shapely
import torch
from ebhi_subset import write_subset

from crc_core.annotations import Annotation
from crc_core.classes import ClassScheme
from crc_core.cli import main
from crc_core.errors import CheckpointError, ConfigError
from crc_core.finetune import (
    DEFAULT_LR,
    compare_job,
    comparison_text,
    exclude_proposed,
    finetune_config,
    match_checkpoint_classes,
)
from crc_core.patches import SlideSource
from crc_core.proposals import REVIEW_KEY, mark_reviewed
from crc_core.tables import load_table
from crc_core.training import make_config

CLASSES = ["Normal", "Adenocarcinoma"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _checkpoint(path: Path, names: list[str], lr: float | None = 1e-3) -> Path:
    from crc_core.models import build_model, save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(path, build_model("resnet50", len(names)), arch="resnet50",
                    classes=ClassScheme.from_names(names), input_size=64,
                    config={"lr": lr} if lr else None)
    return path


@pytest.fixture(scope="module")
def old_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("old") / "old.pt", CLASSES)


@pytest.fixture(scope="module")
def tiny_csv(ebhi_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_subset(ebhi_dir, tmp_path_factory.mktemp("ft") / "tiny.csv", CLASSES, 10,
                        per_case=2)


def test_finetune_config_keeps_the_model_and_lowers_the_rate(old_model: Path, tmp_path: Path):
    cfg = finetune_config(make_config("resnet50", "quick", image_size=128), old_model)
    assert cfg.init == cfg.weights == str(old_model.resolve())
    assert cfg.lr == pytest.approx(1e-4) and cfg.image_size == 64
    assert "a tenth of its training rate 0.001" in cfg.notes[-1]
    assert finetune_config(make_config("resnet50"), old_model, lr=3e-5).lr == 3e-5
    bare = _checkpoint(tmp_path / "bare.pt", CLASSES, lr=None)
    assert finetune_config(make_config("resnet50"), bare).lr == DEFAULT_LR
    with pytest.raises(ConfigError, match="is a resnet50 model"):
        finetune_config(make_config("densenet121"), old_model)
    with pytest.raises(CheckpointError, match="not found"):
        finetune_config(make_config("resnet50"), tmp_path / "nope.pt")


def test_checkpoint_arch_is_read_without_the_weights(old_model: Path, tmp_path: Path):
    from crc_core.finetune import checkpoint_meta

    assert checkpoint_meta(old_model)["arch"] == "resnet50"
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert checkpoint_meta(bad) == {} and checkpoint_meta(tmp_path / "none.pt") == {}


def test_data_classes_follow_the_checkpoint_or_are_refused(tiny_csv: Path, tmp_path: Path):
    table = load_table(tiny_csv, label_column="ebhi_class", group_column="case_id")
    flipped = _checkpoint(tmp_path / "flipped.pt", CLASSES[::-1])
    out = match_checkpoint_classes(table, flipped)
    assert out.scheme.names == CLASSES[::-1]
    for a, b in zip(table.samples, out.samples, strict=True):
        assert out.scheme.names[b.label] == table.scheme.names[a.label]
    three = _checkpoint(tmp_path / "three.pt", ["Normal", "Adenoma", "Adenocarcinoma"])
    with pytest.raises(CheckpointError, match="was trained on classes Normal, Adenoma"):
        match_checkpoint_classes(table, three)


def test_cli_refuses_a_class_mismatch_in_one_line(tiny_csv: Path, tmp_path: Path, capsys):
    three = _checkpoint(tmp_path / "three.pt", ["Normal", "Adenoma", "Adenocarcinoma"])
    rc = main(["train", "--data", str(tiny_csv), "--out", str(tmp_path / "run"), "--init",
               str(three), "--label-column", "ebhi_class", "--group-column", "case_id",
               "--device", "cpu", "--quiet"])
    assert rc == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("crc: error")]
    assert len(err) == 1 and "fine-tuning keeps the checkpoint's classes" in err[0]
    assert not (tmp_path / "run" / "last.pt").exists()
    rc = main(["train", "--data", str(tiny_csv), "--out", str(tmp_path / "run"), "--init",
               str(three), "--resume", "--quiet"])
    assert rc == 2


@pytest.fixture(scope="module")
def finetuned(tiny_csv: Path, old_model: Path, tmp_path_factory: pytest.TempPathFactory):
    run = tmp_path_factory.mktemp("ftrun") / "run"
    rc = main(["train", "--data", str(tiny_csv), "--out", str(run), "--init", str(old_model),
               "--label-column", "ebhi_class", "--group-column", "case_id", "--epochs", "1",
               "--batch-size", "8", "--test-fraction", "0.3", "--device", "cpu",
               "--preset", "quick", "--no-augment", "--quiet"])
    assert rc == 0
    return run


def test_cli_finetunes_and_compares_on_the_same_test_images(finetuned: Path, old_model: Path,
                                                             capsys):
    cfg = json.loads((finetuned / "config.json").read_text())
    assert cfg["init"] == str(old_model.resolve()) and cfg["lr"] == pytest.approx(1e-4)
    assert cfg["image_size"] == 64
    from crc_core.models import load_checkpoint

    assert load_checkpoint(finetuned / "best.pt")["scheme"].names == CLASSES
    res = json.loads((finetuned / "compare.json").read_text())
    with open(finetuned / "split.csv", newline="") as fh:
        tests = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    assert res["images"] == len(tests) > 0
    assert res["old"]["n"] == res["new"]["n"] == len(tests)  # scored on exactly these images
    old_m = json.loads((finetuned / "compare" / "old" / "metrics.json").read_text())
    new_m = json.loads((finetuned / "compare" / "new" / "metrics.json").read_text())
    assert old_m["accuracy"] == pytest.approx(res["old"]["accuracy"])
    assert new_m["accuracy"] == pytest.approx(res["new"]["accuracy"])
    assert res["seen_by_old"] is None  # the old checkpoint records no split
    text = comparison_text(res)
    assert f"same {len(tests)} held-out test images" in text and "-> new" in text


def test_an_old_model_with_a_split_record_says_how_many_test_images_it_trained_on(
        finetuned: Path, tmp_path: Path):
    from crc_core.jobs import run_job

    run = tmp_path / "copy"
    shutil.copytree(finetuned, run)
    # the fine-tuned model as the "old" one: it records its split, and trained on none of its
    # own test images (the record sat at the checkpoint's top level and was read from "extra")
    res = run_job(compare_job(run / "best.pt", run / "best.pt", run, device="cpu", batch_size=8))
    assert res["seen_by_old"] == 0


def test_nothing_held_out_gives_a_warning_not_a_comparison(finetuned: Path, old_model: Path,
                                                           tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(finetuned, run)
    lines = (run / "split.csv").read_text().splitlines()
    (run / "split.csv").write_text("\n".join(ln for ln in lines if not ln.endswith(",test")))
    job = compare_job(old_model, run / "best.pt", run, device="cpu")
    res = None
    while res is None:
        try:
            next(job)
        except StopIteration as stop:
            res = stop.value
    assert set(res) == {"warning"} and "nothing was held out" in res["warning"]
    assert comparison_text(res).startswith("warning: nothing was held out")
    assert json.loads((run / "compare.json").read_text()) == res


def test_unreviewed_proposals_never_reach_a_dataset(tmp_path: Path):
    drawn = Annotation.rectangle("normal", 0, 0, 100, 100)
    prop = Annotation.new("adenoma", shapely.box(200, 0, 300, 100),
                          properties={REVIEW_KEY: {"status": "proposed", "source": "prediction"}})
    ok = mark_reviewed(prop.replace(id="x" * 8), "normal", reviewer="dr-a")
    only_prop = SlideSource(tmp_path / "b.svs", [prop])
    sources, notes = exclude_proposed([SlideSource(tmp_path / "a.svs", [drawn, prop, ok]),
                                       only_prop])
    assert len(sources) == 1 and [a.id for a in sources[0].annotations] == [drawn.id, ok.id]
    assert notes and notes[0].startswith("2 proposed area(s)")
    assert exclude_proposed([SlideSource(tmp_path / "a.svs", [drawn])])[1] == []


def test_crc_extract_leaves_out_unreviewed_proposals(slides_dir: Path, tmp_path: Path, capsys):
    from crc_core.annotations import AnnotationSet, save_annotations

    drawn = Annotation.rectangle("normal", 300, 400, 1000, 680)
    prop = Annotation.new("adenoma", shapely.box(300, 1500, 1300, 2180),
                          properties={REVIEW_KEY: {"status": "proposed", "source": "prediction"}})
    ann = tmp_path / "a.geojson"
    save_annotations(AnnotationSet([drawn, prop]), ann, ClassScheme.paper())
    out = tmp_path / "D"
    rc = main(["extract", "--slide", str(slides_dir / "cmu-1-small-region.svs"),
               "--annotations", str(ann), "--out", str(out), "--random", "0", "--min-gland", "0",
               "--min-tissue", "0", "-q"])
    assert rc == 0
    assert "1 proposed area(s) converted from a prediction" in capsys.readouterr().err
    with open(out / "manifest.csv", newline="") as fh:
        labels = {r["label"] for r in csv.DictReader(fh)}
    assert labels == {"normal"}  # class ids; no adenoma patch from the proposal


def test_a_grade_counts_as_the_checkpoints_coarser_class(tiny_csv: Path, tmp_path: Path):
    import dataclasses

    table = load_table(tiny_csv, label_column="ebhi_class", group_column="case_id")
    names = ["Adenocarcinoma poorly differentiated" if n == "Adenocarcinoma" else n
             for n in table.scheme.names]
    graded = dataclasses.replace(table, scheme=ClassScheme.from_names(names))
    coarse = _checkpoint(tmp_path / "coarse.pt", CLASSES[::-1])
    out = match_checkpoint_classes(graded, coarse)
    assert out.scheme.names == CLASSES[::-1]
    for a, b in zip(table.samples, out.samples, strict=True):
        assert out.scheme.names[b.label] == table.scheme.names[a.label]
    only = dataclasses.replace(graded, scheme=ClassScheme.from_names(
        ["Normal", "Adenoma"][:len(names)]))
    with pytest.raises(CheckpointError, match="a grade counting as its group"):
        match_checkpoint_classes(only, coarse)


def _stained_checkpoint(path: Path, names: list[str]) -> tuple[Path, dict]:
    """A checkpoint trained with a Macenko normaliser of its own reference (not any tiles')."""
    import numpy as np

    from crc_core.models import build_model, save_checkpoint
    from crc_core.stain import StainNormalizer

    he = np.array([[0.70, 0.66, 0.27], [0.20, 0.96, 0.19]])
    he /= np.linalg.norm(he, axis=1, keepdims=True)
    norm = StainNormalizer("macenko", {"stain_vectors": he.tolist(),
                                       "max_concentrations": [1.7, 1.1]},
                           {"tiles": 7, "seed": 3, "source": "the old run's training tiles"})
    torch.manual_seed(0)
    save_checkpoint(path, build_model("resnet50", len(names)), arch="resnet50",
                    classes=ClassScheme.from_names(names), input_size=64, config={"lr": 1e-3},
                    extra={"preprocess": {"stain": norm.to_json()}})
    return path, norm.to_json()


def test_finetuning_keeps_the_checkpoints_fitted_stain_normaliser(tiny_csv: Path, tmp_path: Path):
    """Issue 13 review: the old weights must see inputs normalised to their own reference; the
    normaliser is not refitted on the new tiles unless asked (--refit-stain)."""
    from crc_core.models import load_checkpoint
    from crc_core.stain import from_checkpoint_file

    old, stain = _stained_checkpoint(tmp_path / "stained.pt", CLASSES)
    cfg = finetune_config(make_config("resnet50", "quick"), old)
    assert cfg.stain_norm == "macenko" and cfg.stain_from == str(old.resolve())
    assert "Macenko stain normaliser kept as fitted" in cfg.notes[-1]
    refit = finetune_config(make_config("resnet50", "quick"), old, refit_stain=True)
    assert refit.stain_norm == "macenko" and refit.stain_from is None
    assert "refitted on the new tiles" in refit.notes[-1]
    assert from_checkpoint_file(old).to_json() == stain
    run = tmp_path / "run"
    rc = main(["train", "--data", str(tiny_csv), "--out", str(run), "--init", str(old),
               "--label-column", "ebhi_class", "--group-column", "case_id", "--epochs", "1",
               "--batch-size", "8", "--device", "cpu", "--preset", "quick", "--no-augment",
               "--quiet"])
    assert rc == 0
    for name in ("best.pt", "last.pt"):  # the same parameters and reference, not refitted
        assert load_checkpoint(run / name)["preprocess"]["stain"] == stain
    saved = json.loads((run / "config.json").read_text())
    assert saved["stain_from"] == str(old.resolve())
    assert any("of stained.pt, kept as it was fitted" in n for n in saved["notes"])  # said so
    assert main(["train", "--data", str(tiny_csv), "--out", str(tmp_path / "r2"),
                 "--refit-stain", "--quiet"]) == 2  # --refit-stain needs --init


def test_scoring_a_csv_without_a_group_column_does_not_warn_about_groups(
        tiny_csv: Path, old_model: Path, tmp_path: Path):
    """The comparison scores a two-column test_images.csv: groups play no part in scoring, so
    "no group column" (advice for training splits) is noise there (issue 13 screenshots)."""
    from crc_core.evaluation import evaluate
    from crc_core.jobs import run_job

    with open(tiny_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))[:6]
    plain = tmp_path / "plain.csv"
    with open(plain, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "label"])
        w.writerows([(str((tiny_csv.parent / r["image"]).resolve()), r["ebhi_class"])
                     for r in rows])
    from crc_core.jobs import JobWarning

    said: list[str] = []
    run_job(evaluate(old_model, plain, tmp_path / "eval", subset="all", device="cpu"),
            on_progress=lambda ev: said.append(ev.message) if isinstance(ev, JobWarning) else None)
    assert not [m for m in said if "group column" in m], said
