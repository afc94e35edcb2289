"""Tests of `crc predict`: the five files on a real slide, grid shape, several slides, torchrun sharing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crc_core.classes import ClassScheme
from crc_core.cli import main
from crc_core.inference import load_prediction

torch.set_num_threads(2)
FILES = {"prediction.npz", "regions.geojson", "regions.csv", "overlay.png", "heatmap.png"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A densenet121 checkpoint as `crc train` writes it: 224 px patches at 0.5 µm/px, 64 px input."""
    from crc_core.models import build_model, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(
        path,
        build_model("densenet121", 3),
        arch="densenet121",
        classes=ClassScheme.three_class(),
        input_size=64,
        patch_size=224,
        mpp=0.5,
    )
    return path


def test_predict_writes_five_files_with_a_grid_matching_the_slide(
    checkpoint: Path, slides_dir: Path, tmp_path: Path
) -> None:
    from crc_core.slide import open_slide
    from crc_core.tissue import tissue_fraction

    slide_path = slides_dir / "cmu-1-small-region.svs"
    out = tmp_path / "P"
    rc = main(
        [
            "predict",
            "--checkpoint",
            str(checkpoint),
            "--slide",
            str(slide_path),
            "--cam",
            "--batch-size",
            "16",
            "--out",
            str(out),
            "-q",
        ]
    )
    assert rc == 0
    assert {p.name for p in out.iterdir()} == FILES
    pred = load_prediction(out / "prediction.npz")
    with open_slide(slide_path) as slide:
        W, H = slide.dimensions
        window = round(224 * 0.5 / slide.mpp[0])
        g = pred.grid
        assert g.window == window and g.stride == window
        assert g.shape == ((H - window) // window + 1, (W - window) // window + 1)
        assert pred.probs.shape == (3, g.rows, g.cols)
        assert (pred.predicted == pred.selected).all() and pred.predicted.any()
        # Blank glass is never predicted; windows full of tissue always are.
        for r, c in np.ndindex(g.shape):
            x, y, w, h = g.cell_rect(r, c)
            frac = tissue_fraction(slide.read_region((x, y), 0, (w, h)))
            if frac == 0.0:
                assert not pred.predicted[r, c]
            elif frac > 0.9:
                assert pred.predicted[r, c]
    assert pred.cam is not None and pred.cam.shape == g.cam_shape
    regions = json.loads((out / "regions.geojson").read_text())
    assert regions["features"][0]["properties"]["measurements"]["Patches"] == pred.predicted.sum()
    # The overlay blends class colours over predicted windows only.
    with open_slide(slide_path) as slide:
        thumb = np.asarray(slide.thumbnail(1024)).astype(int)
    overlay = np.asarray(Image.open(out / "overlay.png").convert("RGB"))[: thumb.shape[0]].astype(
        int
    )
    s = thumb.shape[1] / W
    for r, c in [tuple(rc) for rc in np.argwhere(pred.predicted)[:3]] + [
        tuple(rc) for rc in np.argwhere(~pred.predicted)[:3]
    ]:
        x, y, w, h = g.cell_rect(r, c)
        cy, cx = int((y + h / 2) * s), int((x + w / 2) * s)
        changed = np.abs(overlay[cy, cx] - thumb[cy, cx]).sum() > 3
        assert changed == bool(pred.predicted[r, c])


def test_several_slides_get_one_folder_each_and_no_mpp_is_warned(
    checkpoint: Path, slides_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slides = [slides_dir / "cmu-1-small-region.svs", slides_dir / "kidney-48-5.tif"]
    rc = main(
        [
            "predict",
            "--checkpoint",
            str(checkpoint),
            "--slide",
            *map(str, slides),
            "--out",
            str(tmp_path),
            "-q",
        ]
    )
    assert rc == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmu-1-small-region", "kidney-48-5"]
    assert {p.name for p in (tmp_path / "kidney-48-5").iterdir()} == FILES - {"heatmap.png"}
    err = capsys.readouterr().err
    assert "crc: warning: kidney-48-5.tif has no mpp" in err
    # the job's warning (a JobWarning event) is printed once, as one line, and no Python warning
    assert err.count("has no mpp") == 1
    assert [ln for ln in err.splitlines() if "has no mpp" in ln][0].startswith("crc: warning: ")
    assert "Warning:" not in err


def test_torchrun_ranks_share_the_slides(
    checkpoint: Path, slides_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    slides = [slides_dir / "cmu-1-small-region.svs", slides_dir / "kidney-48-5.tif"]
    rc = main(
        [
            "predict",
            "--checkpoint",
            str(checkpoint),
            "--slide",
            *map(str, slides),
            "--out",
            str(tmp_path),
            "-q",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    assert [p.name for p in tmp_path.iterdir()] == ["kidney-48-5"]


def test_unreadable_checkpoint_is_one_error_line_and_exit_2(
    slides_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    rc = main(
        [
            "predict",
            "--checkpoint",
            str(bad),
            "--slide",
            str(slides_dir / "cmu-1-small-region.svs"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("crc: error:") and "bad.pt" in err[0]
    assert not (tmp_path / "o").exists()


def test_regions_must_come_one_per_slide(
    checkpoint: Path, slides_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = tmp_path / "a.geojson"
    a.write_text('{"type": "FeatureCollection", "features": []}')
    slide = str(slides_dir / "cmu-1-small-region.svs")
    rc = main(
        [
            "predict",
            "--checkpoint",
            str(checkpoint),
            "--slide",
            slide,
            slide,
            "--regions",
            str(a),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 2 and "one annotation file per slide" in capsys.readouterr().err


def test_an_image_smaller_than_one_window_is_refused_in_micrometres(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 20x tile (0.25 µm/px in its tags) of 224 px covers 56 µm; the model's window is 224 px at
    0.5 µm/px, 112 µm: one line that says both and where such tiles are scored."""
    tile = tmp_path / "tile.png"
    Image.new("RGB", (224, 224), (200, 120, 160)).save(tile, dpi=(25400 / 0.25, 25400 / 0.25))
    rc = main(["predict", "--checkpoint", str(checkpoint), "--slide", str(tile), "--out",
               str(tmp_path / "o"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "tile.png (224x224 px, 56x56 µm) is smaller than one window (448 px, 112 µm" in err[0]
    assert "crc evaluate" in err[0]
