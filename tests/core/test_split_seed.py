"""Replicates on one split: ``--split-seed`` fixes the data side of a run (split, stain reference)
while ``--seed`` varies the model side (initialisation, order, augmentation)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ebhi_subset import write_subset

from crc_core.jobs import run_job
from crc_core.models import load_checkpoint
from crc_core.splits import SplitRecord
from crc_core.training import fit, make_config


@pytest.fixture(scope="module")
def runs(ebhi_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("seeds")
    data = write_subset(ebhi_dir, root / "sub.csv", ["Normal", "Adenocarcinoma"], 12, per_case=2)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    try:
        for name, seeds in {"s0": {"seed": 0}, "s1-split0": {"seed": 1, "split_seed": 0},
                            "s1": {"seed": 1}}.items():
            cfg = make_config("resnet50", "quick", epochs=1, batch_size=8, image_size=32,
                              device="cpu", val_fraction=0.25, test_fraction=0.25,
                              stain_norm="macenko", stain_tiles=4,
                              data={"label_column": "ebhi_class", "group_column": "case_id"},
                              **seeds)
            run_job(fit(data, root / name, cfg))
            out[name] = load_checkpoint(root / name / "best.pt")
    finally:
        torch.set_num_threads(before)
    return out


def _parts(ck: dict) -> tuple:
    rec = SplitRecord.from_json(ck["split"])
    assert rec is not None
    return rec.train, rec.val, rec.test


def _first_weight(ck: dict) -> torch.Tensor:
    return next(iter(ck["model"].values())).float()


def test_a_replicate_keeps_the_split_and_the_stain_reference_and_changes_the_model(runs):
    a, b = runs["s0"], runs["s1-split0"]
    assert _parts(a) == _parts(b)
    assert a["preprocess"]["stain"] == b["preprocess"]["stain"]          # same reference tiles
    assert not torch.equal(_first_weight(a), _first_weight(b))
    assert b["config"]["split_seed"] == 0 and b["config"]["seed"] == 1


def test_without_a_split_seed_the_seed_draws_the_split_too(runs):
    assert _parts(runs["s1"]) != _parts(runs["s0"])
    assert runs["s1"]["config"]["split_seed"] is None
