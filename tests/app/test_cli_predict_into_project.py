"""`crc predict --project` saves into the project as the viewer does (issue 16 item 6): a batch
run on the command line opens in the viewer with its class map."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crc_core.classes import ClassScheme
from crc_core.cli import main
from crc_core.project import Project


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from crc_core.models import build_model, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "three-class.pt"
    save_checkpoint(path, build_model("densenet121", 3), arch="densenet121",
                    classes=ClassScheme.three_class(), input_size=64, patch_size=448, mpp=0.5)
    return path


def test_a_cli_prediction_into_a_project_opens_in_the_viewer_with_its_class_map(
        qtbot, checkpoint: Path, slides_dir: Path, tmp_path: Path, capsys) -> None:
    from app.main_window import MainWindow
    from app.viewer.prediction_layers import ClassMapLayer

    torch.set_num_threads(1)
    project = Project.create(tmp_path / "proj")
    project.add_slide(slides_dir / "cmu-1-small-region.svs")
    project.save()
    rc = main(["predict", "--checkpoint", str(checkpoint), "--project", str(project.root),
               "--backend", "torch", "--device", "cpu", "--out", str(tmp_path / "out"), "-q"])
    assert rc == 0, capsys.readouterr().err
    (saved,) = Project.open(project.root).prediction_paths(project.slides[0])
    assert saved.name == "three-class.npz"

    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    assert win.open_path(project.root)
    qtbot.waitUntil(lambda: win.slide is not None, timeout=30000)
    qtbot.waitUntil(lambda: any(isinstance(ly, ClassMapLayer) for ly in win.view.layers),
                    timeout=30000)
    assert list(win.session.predictions) == ["three-class"]  # the name the viewer would give


def test_a_slide_outside_the_project_is_predicted_into_out_only_with_a_warning(
        checkpoint: Path, slides_dir: Path, tmp_path: Path, capsys) -> None:
    project = Project.create(tmp_path / "proj")
    project.save()
    rc = main(["predict", "--checkpoint", str(checkpoint), "--project", str(project.root),
               "--slide", str(slides_dir / "cmu-1-small-region.svs"), "--backend", "torch",
               "--device", "cpu", "--out", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err
    assert rc == 0 and "not a slide of the project" in err
    assert (tmp_path / "out" / "prediction.npz").is_file()
    assert not (project.root / "predictions").exists()


def test_predict_needs_a_slide_or_a_project(checkpoint: Path, tmp_path: Path, capsys) -> None:
    rc = main(["predict", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "give --slide" in err[0]
