"""Tile tables from CSV manifests and dataset folders, group splits, decoding and augmentation."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crc_core.data import (
    Augment,
    decode_all,
    hed_jitter,
    load_table,
    parse_map,
    split_by_group,
)
from crc_core.errors import ConfigError, DatasetError
from crc_core.jobs import run_job

EBHI_OPTS = {"label_column": "ebhi_class", "group_column": "case_id"}
THREE = {"classes": "Normal,Low-grade IN,High-grade IN,Adenocarcinoma",
         "mapping": "Low-grade IN=Adenoma,High-grade IN=Adenoma"}


def test_ebhi_csv_reads_all_six_classes(ebhi_dir: Path) -> None:
    t = load_table(ebhi_dir / "labels.csv", **EBHI_OPTS)
    assert len(t) == 1559
    assert t.counts()["Normal"] == 55 and t.counts()["Adenocarcinoma"] == 534
    assert t.samples[0].path.is_file()


def test_classes_and_map_give_the_paper_like_three_classes(ebhi_dir: Path) -> None:
    t = load_table(ebhi_dir / "labels.csv", **EBHI_OPTS, **THREE)
    assert t.scheme.names == ["Normal", "Adenoma", "Adenocarcinoma"]
    assert t.counts() == {"Normal": 55, "Adenoma": 463 + 138, "Adenocarcinoma": 534}


def test_split_is_by_group_never_by_row(ebhi_dir: Path) -> None:
    t = load_table(ebhi_dir / "labels.csv", **EBHI_OPTS)
    sp = split_by_group(t, 0.2, seed=1)
    train_groups = {t.samples[i].group for i in sp.train}
    val_groups = {t.samples[i].group for i in sp.val}
    assert not train_groups & val_groups
    assert len(sp.train) + len(sp.val) == len(t)


def test_test_fraction_keeps_a_third_set_of_groups_apart(ebhi_dir: Path) -> None:
    t = load_table(ebhi_dir / "labels.csv", **EBHI_OPTS, **THREE, group_pattern=r"\d{7}")
    plain = split_by_group(t, 0.2, seed=0)
    sp = split_by_group(t, 0.2, seed=0, test_fraction=0.2)
    assert sp.val == plain.val              # the validation groups do not move
    sets = [{t.samples[i].group for i in part} for part in (sp.train, sp.val, sp.test)]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert len(sp.train) + len(sp.val) + len(sp.test) == len(t)
    # Stratified: every class is in all three parts, the test part is about a fifth of the cases.
    for part in (sp.train, sp.val, sp.test):
        assert set(t.counts(part).values()) and min(t.counts(part).values()) > 0
    assert 0.15 < len(sets[2]) / len({s.group for s in t.samples}) < 0.25
    assert split_by_group(t, 0.2, seed=0, test_fraction=0.2).test == sp.test   # seeded


@pytest.mark.parametrize("val, test", [(0.2, -0.1), (0.5, 0.5), (0.2, 1.0)])
def test_impossible_test_fraction_is_a_config_error(ebhi_dir: Path, val: float,
                                                    test: float) -> None:
    t = load_table(ebhi_dir / "labels.csv", **EBHI_OPTS)
    with pytest.raises(ConfigError, match="--test-fraction"):
        split_by_group(t, val, test_fraction=test)


def test_file_name_group_values_are_reported(ebhi_dir: Path) -> None:
    # EBHI's 22 GTDC tiles carry their file name as case_id: 22 one-tile "cases" from 8 patients.
    notes: list[str] = []
    t = load_table(ebhi_dir / "labels.csv", **EBHI_OPTS, warn=notes.append)
    assert len({s.group for s in t.samples}) == 232 + 22
    assert any("22 case_id value(s) look like file names" in n and "--group-pattern" in n
               for n in notes)


def test_group_pattern_takes_the_case_number_out_of_file_names(ebhi_dir: Path) -> None:
    notes: list[str] = []
    t = load_table(ebhi_dir / "labels.csv", **EBHI_OPTS, group_pattern=r"\d{7}",
                   warn=notes.append)
    assert not notes
    groups = {s.group for s in t.samples}
    # 8 GTDC patients, one of whom also has tiles under the plain case number.
    assert len(groups) == 232 + 7
    assert all(len(g) == 7 and g.isdigit() for g in groups)
    gtdc = [s for s in t.samples if "GTDC2100276" in s.path.name]
    assert gtdc and {s.group for s in gtdc} == {"2100276"}
    assert t.options["group_pattern"] == r"\d{7}"
    # A capturing group picks the part inside it; unmatched values stay whole, with a warning.
    t2 = load_table(ebhi_dir / "labels.csv", **EBHI_OPTS, group_pattern=r"^GTDC(\d+)",
                    warn=notes.append)
    assert {s.group for s in t2.samples if "GTDC2100276" in s.path.name} == {"2100276"}
    assert "2000000" in {s.group for s in t2.samples}
    assert any("does not match 1537 case_id value(s)" in n for n in notes)


def test_invalid_group_pattern_is_a_clear_error(ebhi_dir: Path) -> None:
    with pytest.raises(DatasetError, match="not a valid regular expression"):
        load_table(ebhi_dir / "labels.csv", **EBHI_OPTS, group_pattern="(\\d")


def test_split_is_stratified_and_seeded(ebhi_dir: Path) -> None:
    t = load_table(ebhi_dir / "labels.csv", **EBHI_OPTS)
    a, b = split_by_group(t, 0.2, seed=3), split_by_group(t, 0.2, seed=3)
    assert a.val == b.val
    assert all(n > 0 for n in t.counts(a.val).values())
    assert split_by_group(t, 0.2, seed=4).val != a.val


def test_split_column_is_used_as_given(tmp_path: Path, ebhi_dir: Path) -> None:
    rows = list(csv.DictReader(open(ebhi_dir / "labels.csv")))[:6] + \
        list(csv.DictReader(open(ebhi_dir / "labels.csv")))[-6:]
    f = tmp_path / "m.csv"
    with open(f, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "ebhi_class", "case_id", "part"])
        for i, r in enumerate(rows):
            w.writerow([str(ebhi_dir / r["image"]), r["ebhi_class"], r["case_id"],
                        ["train", "validation", "test"][i % 3]])
    t = load_table(f, **EBHI_OPTS, split_column="part")
    sp = split_by_group(t, 0.2)
    assert (len(sp.train), len(sp.val), len(sp.test)) == (4, 4, 4)


def test_dataset_folder_from_crc_extract_is_read(tmp_path: Path, ebhi_dir: Path) -> None:
    # The layout `crc extract` writes: manifest.csv (paths relative to it) and dataset.json.
    ds = tmp_path / "ds"
    rows = [r for r in csv.DictReader(open(ebhi_dir / "labels.csv"))
            if r["ebhi_class"] in ("Normal", "Adenocarcinoma")][::40]
    with open(tmp_path / "manifest.tmp", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "slide", "area_id", "l0_x", "l0_y", "level", "size", "split",
                    "gland_fraction", "tissue_fraction"])
        for i, r in enumerate(rows):
            dst = ds / "patches" / Path(r["image"]).name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ebhi_dir / r["image"], dst)
            label = "Adenocarcinoma" if r["ebhi_class"] != "Normal" else "Normal"
            w.writerow([f"patches/{dst.name}", label, f"slide{r['case_id']}", i, 0, 0, 0, 224, "",
                        0.5, 0.9])
    shutil.move(tmp_path / "manifest.tmp", ds / "manifest.csv")
    from crc_core.classes import ClassScheme

    (ds / "dataset.json").write_text(json.dumps({"classes": ClassScheme.three_class().to_json(),
                                                 "patch_size": 224, "level": 0, "mpp": 0.5}))
    t = load_table(ds)
    assert t.scheme.names == ["Normal", "Adenocarcinoma"]
    assert t.scheme.get("Adenocarcinoma").id == "adenocarcinoma"
    assert (t.patch_size, t.level, t.mpp) == (224, 0, 0.5)
    assert t.samples[0].group.startswith("slide")


def test_unreadable_images_are_skipped_and_counted(tmp_path: Path, ebhi_dir: Path) -> None:
    good = [r for r in csv.DictReader(open(ebhi_dir / "labels.csv"))][:4]
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    with open(tmp_path / "m.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "label", "case"])
        for r in good:
            w.writerow([str(ebhi_dir / r["image"]), "A", r["case_id"]])
        w.writerow(["broken.jpg", "B", "x"])
        w.writerow(["missing.jpg", "B", "y"])
    t = load_table(tmp_path / "m.csv", group_column="case")
    dec = run_job(decode_all(t, list(range(len(t))), 32))
    assert dec.images.shape == (4, 3, 32, 32) and dec.images.dtype == torch.uint8
    reasons = sorted(reason for _p, reason in dec.skipped)
    assert reasons[0] == "file not found" and reasons[1].startswith("unreadable image")


def test_empty_manifest_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("image,label\n")
    with pytest.raises(DatasetError, match="no images left"):
        load_table(tmp_path / "m.csv")


def test_single_class_is_refused(ebhi_dir: Path) -> None:
    with pytest.raises(DatasetError, match="only one class"):
        load_table(ebhi_dir / "labels.csv", **EBHI_OPTS, classes="Normal")


def test_missing_column_names_the_columns(ebhi_dir: Path) -> None:
    with pytest.raises(DatasetError, match="ebhi_class"):
        load_table(ebhi_dir / "labels.csv", label_column="grade")


def test_unknown_class_in_keep_list_is_refused(ebhi_dir: Path) -> None:
    with pytest.raises(DatasetError, match="'Tumour'"):
        load_table(ebhi_dir / "labels.csv", **EBHI_OPTS, classes="Normal,Tumour")


def test_bad_map_syntax_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="OLD=NEW"):
        parse_map("A>B")


def test_missing_dataset_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_table(tmp_path / "nothing.csv")


def test_augment_is_seeded_and_keeps_shape_and_range(ebhi_dir: Path) -> None:
    t = load_table(ebhi_dir / "labels.csv", **EBHI_OPTS)
    x = run_job(decode_all(t, list(range(8)), 64)).images.float() / 255
    aug = Augment(flip=True, rot90=True, color=0.1, hed=0.05)
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    assert not torch.equal(a, x)


def test_rotations_and_flips_only_permute_pixels(ebhi_dir: Path) -> None:
    t = load_table(ebhi_dir / "labels.csv", **EBHI_OPTS)
    x = run_job(decode_all(t, list(range(4)), 48)).images.float() / 255
    y = Augment(flip=True, rot90=True, color=0.0, hed=0.0)(x, torch.Generator().manual_seed(0))
    for i in range(4):
        torch.testing.assert_close(y[i].flatten().sort().values, x[i].flatten().sort().values)


def test_hed_jitter_with_unit_factors_keeps_stained_pixels(ebhi_dir: Path) -> None:
    t = load_table(ebhi_dir / "labels.csv", **EBHI_OPTS)
    x = run_job(decode_all(t, list(range(2)), 48)).images.float() / 255
    y = hed_jitter(x, torch.ones(2, 3), torch.zeros(2, 3))
    assert float((y - x).abs().mean()) < 0.02
    darker = hed_jitter(x, torch.full((2, 3), 1.3), torch.zeros(2, 3))
    assert float(darker.mean()) < float(x.mean())


def test_augment_loads_old_and_future_configs() -> None:
    from crc_core.data import Augment

    old = Augment.from_json({"flip": True, "rot90": False, "color": 0.1, "hed": 0.03})
    assert old.hed_range is None and old.scale_range is None and old.rot90 is False
    assert old.resolution == 1                       # older runs augmented at the input size
    newer = Augment.from_json({**Augment.recommended().to_json(), "elastic": 0.5})
    assert newer == Augment.recommended()
    assert Augment.from_json(None) == Augment()
    with pytest.raises(ConfigError, match="scale_range"):
        Augment.from_json({"scale_range": [1.5, 0.75]})
    with pytest.raises(ConfigError, match="hed_prob"):
        Augment.from_json({"hed_prob": 2})
    for bad in (0, 5, 1.5, True):
        with pytest.raises(ConfigError, match="resolution"):
            Augment.from_json({"resolution": bad})


def test_recommended_augmentation_covers_the_measured_stain_and_scale_spread() -> None:
    from crc_core.data import MEASURED_HED_RANGE

    rec = Augment.recommended()
    # The real slides' median H is 0.42x-0.75x the EBHI median, E 0.55x-0.73x (RESULTS.md).
    assert rec.hed_range is not None and rec.hed_range[0] <= 0.42 and rec.hed_range[1] >= 1.3
    assert tuple(rec.hed_range) == MEASURED_HED_RANGE and rec.hed_shift >= 0.037
    assert rec.hed_prob == 0.5
    # Zoom 0.6-2x at twice the input resolution: covers the benchmark's 0.75x and 1.5x with room
    # (chosen on validation cases over three runs per recipe, RESULTS.md "Round 4").
    assert rec.scale_range == [0.6, 2.0] and rec.resolution == 2


def test_hed_range_draws_factors_across_the_range(ebhi_dir: Path) -> None:
    import math

    from crc_core.data import _HED_FROM_RGB

    files = sorted(p for p in ebhi_dir.glob("normal/*.jpg") if "_glands" not in p.name)[:1]
    x = torch.from_numpy(np.array(Image.open(files[0]).convert("RGB").resize((48, 48))))
    x = x.permute(2, 0, 1).float().div(255)[None].repeat(64, 1, 1, 1)

    def h_mean(t: torch.Tensor) -> torch.Tensor:
        od = torch.log(t.clamp(min=1e-6)) / math.log(1e-6)
        return torch.einsum("nchw,cd->ndhw", od, _HED_FROM_RGB)[:, 0].clamp(min=0).mean((1, 2))

    aug = Augment(flip=False, rot90=False, color=0.0, hed_range=[0.3, 1.4], hed_shift=0.0)
    assert aug.hed_prob == 1.0
    y = aug(x, torch.Generator().manual_seed(0))
    ratio = h_mean(y) / h_mean(x)
    assert ratio.min() > 0.25 and ratio.max() < 1.5          # within the range (clipping aside)
    assert ratio.min() < 0.4 and ratio.max() > 1.2           # and reaching both ends
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1


def test_rescale_zooms_about_the_centre_and_keeps_the_size() -> None:
    from crc_core.data import rescale

    ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(2, 3, 64, 64).contiguous()
    same = rescale(ramp, torch.tensor([1.0, 1.0]))
    assert torch.allclose(same, ramp, atol=1e-5)
    out = rescale(ramp, torch.tensor([2.0, 0.5]))
    assert out.shape == ramp.shape
    # 2x: the central half of the ramp fills the image.
    assert float(out[0, 0, 0, 0]) == pytest.approx(0.25, abs=0.02)
    assert float(out[0, 0, 0, -1]) == pytest.approx(0.75, abs=0.02)
    # 0.5x: the whole ramp in the central half, mirrored outside it.
    assert float(out[1, 0, 0, 16]) == pytest.approx(0.0, abs=0.03)
    assert float(out[1, 0, 0, 47]) == pytest.approx(1.0, abs=0.03)
    assert float(out[1, 0, 0, 8]) == pytest.approx(float(out[1, 0, 0, 23]), abs=0.05)


def test_augment_with_scale_range_is_seeded(ebhi_dir: Path) -> None:
    x = torch.rand(4, 3, 32, 32)
    aug = Augment.recommended()
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == x.shape


def test_strong_stain_jitter_reaches_the_share_asked_and_only_raises_d(ebhi_dir: Path) -> None:
    import math

    from crc_core.data import _HED_FROM_RGB

    files = sorted(p for p in ebhi_dir.glob("normal/*.jpg") if "_glands" not in p.name)[:1]
    x = torch.from_numpy(np.array(Image.open(files[0]).convert("RGB").resize((32, 32))))
    x = x.permute(2, 0, 1).float().div(255)[None].repeat(200, 1, 1, 1)

    def hed(t: torch.Tensor) -> torch.Tensor:
        od = torch.log(t.clamp(min=1e-6)) / math.log(1e-6)
        return torch.einsum("nchw,cd->ndhw", od, _HED_FROM_RGB).mean((2, 3))

    aug = Augment(flip=False, rot90=False, color=0.0, hed=0.0, hed_range=[0.3, 1.4],
                  hed_shift=0.04, hed_prob=0.5)
    y = aug(x, torch.Generator().manual_seed(0))
    moved = (hed(y)[:, 0] / hed(x)[:, 0] - 1).abs() > 0.01
    assert 0.35 < moved.float().mean() < 0.65          # about half got the strong jitter
    assert (hed(y)[:, 2] >= hed(x)[:, 2] - 1e-3).all()  # D is only ever raised
