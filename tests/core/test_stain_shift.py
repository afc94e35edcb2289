"""benchmarks/stain_shift.py: its conditions on a few real tiles, and one end-to-end run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ebhi_subset import write_subset
from PIL import Image

from crc_core.jobs import run_job

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import stain_shift  # noqa: E402


@pytest.fixture(scope="module")
def tiles(ebhi_dir: Path) -> list[np.ndarray]:
    files = sorted(p for p in ebhi_dir.glob("low-grade-in/*.jpg") if "_glands" not in p.name)
    return [np.asarray(Image.open(p).convert("RGB")) for p in files[:2]]


def test_scales_keep_the_pixel_count_and_change_the_scale(tiles) -> None:
    t = tiles[0]
    big = stain_shift.rescale_tile(t, 1.5)
    small = stain_shift.rescale_tile(t, 0.75)
    assert big.shape == small.shape == t.shape
    # 1.5x: the central 149 px of the 224 px tile fill it.
    centre = t[37:37 + 149, 37:37 + 149]
    assert np.abs(big.mean((0, 1)) - centre.mean((0, 1))).max() < 3
    # 0.75x: the whole tile in the central 168 px, mirrored outside.
    assert np.array_equal(small[28, 28:196], small[27, 28:196])


def test_the_20x_conditions_are_one_image_with_and_without_its_pixel_size(tiles,
                                                                         tmp_path: Path) -> None:
    from crc_core.image_scale import image_mpp

    conds, _, tags = stain_shift.conditions([], 0, 0, tile_mpp=1.3)
    (tagged,) = tags
    assert tags[tagged] == pytest.approx(0.5)
    paths = []
    for i, t in enumerate(tiles):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(t).save(paths[-1])
    labels = ["Adenoma"] * len(paths)
    a = stain_shift.write_condition(tmp_path / "a", paths, labels, conds[tagged], tags[tagged])
    b = stain_shift.write_condition(tmp_path / "b", paths, labels,
                                    conds["20x tiles, scale not stated"])
    for name in ("00000.png", "00001.png"):
        pa, pb = a.parent / name, b.parent / name
        assert image_mpp(pa) == pytest.approx(0.5, rel=1e-3) and image_mpp(pb) is None
        assert np.array_equal(np.asarray(Image.open(pa)), np.asarray(Image.open(pb)))
        # the central 86 px (224 / 2.6) magnified to the tile's 224 px
        assert Image.open(pa).size == (224, 224)


def test_hed_conditions_move_the_stain_they_name(tiles) -> None:
    from stain_stats import hed_means

    base = hed_means(np.stack(tiles))
    lighter = hed_means(np.stack([stain_shift.hed_shift(0.7, 1.0, 0.0)(t) for t in tiles]))
    ratio = lighter / base
    assert np.allclose(ratio[:, 0], 0.7, atol=0.08)      # H x0.7 in the augmentation's space
    assert np.allclose(ratio[:, 1], 1.0, atol=0.08)      # E untouched
    same = stain_shift.hed_shift(1.0, 1.0, 0.0)(tiles[0])
    # Unit factors are the identity except where hed_jitter clamps negative concentrations
    # (a few very dark or saturated pixels).
    d = np.abs(same.astype(int) - tiles[0].astype(int))
    assert np.median(d) <= 1 and d.mean() < 2


def test_slide_condition_restains_tiles_to_the_slide(tiles, slides_dir: Path) -> None:
    from crc_core.stain import estimate_stains

    fn, info = stain_shift.slide_condition(slides_dir / "tcga-cr-7395-01a-01-ts1.svs", 16, 0)
    assert info["fitted_on"]["tiles"] == 16
    out = [fn(t) for t in tiles]
    got = estimate_stains(out)["hematoxylin"]
    ref = info["stain_vectors"][0]
    angle = np.degrees(np.arccos(np.clip(np.dot(got, ref), -1, 1)))
    assert angle < 6 and all(o.shape == t.shape for o, t in zip(out, tiles, strict=True))


@pytest.fixture(scope="module")
def split_checkpoint(ebhi_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A random-weight checkpoint whose split record calls 3 tiles of a small CSV test."""
    import torch

    from crc_core.models import build_model, save_checkpoint
    from crc_core.splits import Split, SplitRecord, content_keys
    from crc_core.tables import load_table

    root = tmp_path_factory.mktemp("shift")
    csv_path = write_subset(ebhi_dir, root / "sub.csv", ["Normal", "Adenocarcinoma"], 4)
    opts = {"label_column": "ebhi_class", "group_column": "case_id"}
    table = load_table(csv_path, **opts)
    keys = run_job(content_keys(table))
    rec = SplitRecord.of(keys, Split(train=[0, 1, 4, 5], val=[], test=[2, 3, 6]))
    torch.manual_seed(0)
    ck = save_checkpoint(root / "best.pt", build_model("resnet50", 2), arch="resnet50",
                         classes=table.scheme, input_size=64, patch_size=224, half=True,
                         config={"data": {**opts, "source": str(csv_path)}},
                         extra={"split": rec.to_json()})
    return ck, csv_path


def test_test_images_are_the_split_records_test(split_checkpoint) -> None:
    ck, csv_path = split_checkpoint
    paths, labels, groups, how = stain_shift.test_images(ck, csv_path)
    assert len(paths) == 3 and how.startswith("test")
    assert sorted(labels) == ["Adenocarcinoma", "Normal", "Normal"]
    assert len(groups) == 3 and all(groups)
    from crc_core.errors import DatasetError

    with pytest.raises(DatasetError, match="val split"):   # the record has no validation images
        stain_shift.test_images(ck, csv_path, "val")


def _predictions(path: Path, labels: list[str], probs: np.ndarray) -> str:
    classes = ["Normal", "Adenocarcinoma"]
    lines = ["image,label,predicted," + ",".join(f"prob_{c}" for c in classes)]
    for k, (lab, p) in enumerate(zip(labels, probs, strict=True)):
        lines.append(f"{k:05d}.png,{lab},{classes[int(p.argmax())]},{p[0]},{p[1]}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_paired_interval_is_zero_for_no_change_and_spans_a_one_case_loss(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    labels = ["Normal"] * 20 + ["Adenocarcinoma"] * 20
    groups = [f"c{k // 4}" for k in range(40)]                      # 10 cases of 4 images
    p = np.clip(np.array([[0.8, 0.2]] * 20 + [[0.2, 0.8]] * 20) + rng.normal(0, 0.05, (40, 2)),
                0.01, 0.99)
    base = _predictions(tmp_path / "a.csv", labels, p)
    classes = ["Normal", "Adenocarcinoma"]
    same = stain_shift.paired_intervals(base, _predictions(tmp_path / "b.csv", labels, p), groups,
                                        classes, reps=200)
    assert same == {"accuracy": [0.0, 0.0], "map": [0.0, 0.0]}
    worse = p.copy()
    worse[:4] = worse[:4, ::-1]                                     # case c0 now all wrong
    iv = stain_shift.paired_intervals(base, _predictions(tmp_path / "c.csv", labels, worse),
                                      groups, classes, reps=400)
    lo, hi = iv["accuracy"]
    assert lo < -0.1 + 1e-9 and hi <= 0.0                          # 4 of 40 lost in the full set
    assert iv["map"][0] < 0


def test_benchmark_runs_every_condition_end_to_end(split_checkpoint, slides_dir: Path,
                                                   tmp_path: Path) -> None:
    ck, csv_path = split_checkpoint
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "stain_shift.py"), "--checkpoint", str(ck),
         "--name", "tiny", "--data", str(csv_path), "--slide",
         str(slides_dir / "cmu-1-small-region.svs"), "--slide-tiles", "8", "--out",
         str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads((tmp_path / "out" / "stain_shift.json").read_text())
    conds = doc["results"]["tiny"]
    tagged = "20x tiles, scale in their tags (0.5 µm/px)"
    assert list(conds) == ["none", "slide cmu-1-small-region.svs", *stain_shift.HED_CONDITIONS,
                           "scale 0.75x", "scale 1.5x", tagged, "20x tiles, scale not stated"]
    assert doc["stated_pixel_size"] == {tagged: pytest.approx(0.5)}
    assert all(c["n"] == 3 for c in conds.values())
    assert "interval" not in conds["none"]
    assert all(set(c["interval"]) == {"accuracy", "map"} for k, c in conds.items() if k != "none")
    table = (tmp_path / "out" / "stain_shift.md").read_text()
    assert "| tiny | scale 1.5x | 3 |" in table
