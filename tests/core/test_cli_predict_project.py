"""`crc predict --project`: a three-class model on a five-class project, mapped and stated."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crc_core.annotations import Annotation, AnnotationSet, save_annotations
from crc_core.classes import ClassScheme
from crc_core.cli import main
from crc_core.project import Project

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from crc_core.models import build_model, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "three.pt"
    save_checkpoint(path, build_model("densenet121", 3), arch="densenet121",
                    classes=ClassScheme.three_class(), input_size=64, patch_size=224, mpp=0.5)
    return path


def test_three_class_model_on_a_five_class_project_is_mapped_and_stated(
        checkpoint: Path, slides_dir: Path, tmp_path: Path, capsys) -> None:
    project = Project.create(tmp_path / "proj")
    assert len(project.scheme) == 5
    regions = tmp_path / "tumour.geojson"
    aset = AnnotationSet()
    aset.add(Annotation.rectangle("adc-moderate", 800, 1200, 700, 700))
    save_annotations(aset, regions, project.scheme)
    rc = main(["predict", "--checkpoint", str(checkpoint), "--slide",
               str(slides_dir / "cmu-1-small-region.svs"), "--regions", str(regions),
               "--project", str(project.root), "--cam", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert rc == 0
    assert ("model class Adenocarcinoma covers the project's classes Adenocarcinoma well "
            "differentiated, Adenocarcinoma moderately differentiated and Adenocarcinoma "
            "poorly differentiated") in out
    assert "before loading the weights" in out
    with open(tmp_path / "out" / "regions.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["label"] == "Adenocarcinoma moderately differentiated"
    assert row["label_share"] != "" and row["agreement"] in ("yes", "no")
    # The heatmap has its colour bar under the slide: dark blue (0) to dark red (1) in "jet".
    heat = np.asarray(Image.open(tmp_path / "out" / "heatmap.png").convert("RGB")).astype(int)
    overlay = np.asarray(Image.open(tmp_path / "out" / "overlay.png"))
    bar = heat[heat.shape[0] - 44 + 10, :, :]
    assert heat.shape[1] == overlay.shape[1]
    assert bar[6][2] > 100 and bar[6][0] < 50  # blue at the left
    assert bar[-8][0] > 100 and bar[-8][2] < 50  # red at the right


def test_model_class_without_counterpart_is_one_error_line_before_loading(
        slides_dir: Path, tmp_path: Path, capsys) -> None:
    project = Project.create(tmp_path / "proj")
    bad = tmp_path / "stroma.pt"
    torch.save({"kind": "crc-workbench-checkpoint", "format": 1, "arch": "resnet50",
                "classes": ClassScheme.from_names(["Normal", "Stroma"]).to_json(),
                "model": {"fc.weight": torch.zeros(2, 4)}}, bad)
    rc = main(["predict", "--checkpoint", str(bad), "--slide",
               str(slides_dir / "cmu-1-small-region.svs"), "--project", str(project.root),
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("crc: error:")
    assert "Stroma has no counterpart" in err[0] and "before loading its weights" in err[0]
    assert not (tmp_path / "o").exists()
