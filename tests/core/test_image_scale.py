"""A tile set's own resolution tags are a stated scale (crc_core.image_scale): read, checked for
agreement, used by evaluation and training when nothing else states the scale, and never taken
from a screen or print default."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from crc_core.errors import DatasetError
from crc_core.evaluation import evaluate
from crc_core.image_scale import StatedScale, image_mpp, stated_mpp
from crc_core.jobs import JobWarning, run_job
from crc_core.models import load_checkpoint
from crc_core.training import fit, make_config

DEMO = Path(__file__).resolve().parents[2] / "models" / "demo_densenet121_3class.pt"


def _tiff(path: Path, arr: np.ndarray, mpp: float | None) -> Path:
    if mpp is None:
        tifffile.imwrite(path, arr)
    else:
        tifffile.imwrite(path, arr, resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
    return path


def test_a_tiff_in_centimetres_and_a_png_in_dpi_state_their_pixel_size(tmp_path: Path) -> None:
    arr = np.full((20, 20, 3), 128, np.uint8)
    assert image_mpp(_tiff(tmp_path / "a.tif", arr, 0.5)) == pytest.approx(0.5)
    Image.fromarray(arr).save(tmp_path / "b.png", dpi=(25400 / 0.25, 25400 / 0.25))
    assert image_mpp(tmp_path / "b.png") == pytest.approx(0.25, rel=1e-3)


@pytest.mark.parametrize("dpi", [72, 96, 300, 600])
def test_screen_and_print_densities_are_no_pixel_size(tmp_path: Path, dpi: int) -> None:
    Image.new("RGB", (20, 20), "white").save(tmp_path / "s.png", dpi=(dpi, dpi))
    assert image_mpp(tmp_path / "s.png") is None      # 600 dpi = 42 µm/px: no microscope tile


def test_no_tag_an_unequal_tag_or_an_unreadable_file_states_nothing(tmp_path: Path) -> None:
    arr = np.full((20, 20, 3), 128, np.uint8)
    assert image_mpp(_tiff(tmp_path / "none.tif", arr, None)) is None
    tifffile.imwrite(tmp_path / "aniso.tif", arr, resolution=(1e4 / 0.5, 1e4 / 0.8),
                     resolutionunit="CENTIMETER")
    assert image_mpp(tmp_path / "aniso.tif") is None
    (tmp_path / "bad.tif").write_bytes(b"not an image")
    assert image_mpp(tmp_path / "bad.tif") is None


def test_the_set_has_a_pixel_size_only_when_every_image_states_the_same(tmp_path: Path) -> None:
    arr = np.full((20, 20, 3), 128, np.uint8)
    same = [_tiff(tmp_path / f"s{i}.tif", arr, 0.5) for i in range(3)]
    s = run_job(stated_mpp(same))
    assert s.mpp == pytest.approx(0.5) and s.problem is None
    assert s.source.endswith("of all 3 images")
    some = same[:2] + [_tiff(tmp_path / "n.tif", arr, None)]
    s = run_job(stated_mpp(some))
    assert s.mpp is None and "2 of 3 images state a pixel size" in (s.problem or "")
    mixed = same[:2] + [_tiff(tmp_path / "q.tif", arr, 0.25)]
    s = run_job(stated_mpp(mixed))
    assert s.mpp is None and "different pixel sizes (0.25 to 0.5 µm/px)" in (s.problem or "")
    s = run_job(stated_mpp([_tiff(tmp_path / "u.tif", arr, None)]))
    assert s.mpp is None and s.problem is None                 # nothing stated: nothing to say
    assert StatedScale((), 0).mpp is None


def _ebhi_rows(ebhi: Path, per_class: int) -> list[tuple[Path, str]]:
    rows = list(csv.DictReader(open(ebhi / "labels.csv")))
    out: list[tuple[Path, str]] = []
    for cls in ("Normal", "Adenocarcinoma"):
        out += [(ebhi / r["image"], cls) for r in rows if r["ebhi_class"] == cls][:per_class]
    return out


def _write_set(folder: Path, rows: list[tuple[Path, str]], make) -> Path:
    folder.mkdir(parents=True)
    with open(folder / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "label"])
        for k, (src, cls) in enumerate(rows):
            name = make(folder / f"{k:03d}", np.asarray(Image.open(src).convert("RGB")))
            w.writerow([name, cls])
    return folder / "labels.csv"


def _centre(rgb: np.ndarray, side: int) -> np.ndarray:
    y0 = (rgb.shape[0] - side) // 2
    return rgb[y0:y0 + side, y0:y0 + side]


def test_a_20x_tile_set_stating_its_scale_is_resampled_to_the_model(ebhi_dir: Path,
                                                                     tmp_path: Path) -> None:
    """EBHI tiles made into 20x tiles (0.5 µm/px: the central 86 px of a 1.3 µm/px tile
    magnified to 224 px) with their scale in their TIFF tags are scored as the same fields at the
    model's own scale; without the tags they are taken at the model's scale, magnified 2.6x."""
    if not DEMO.is_file():
        pytest.skip("demo model not found")
    rows = _ebhi_rows(ebhi_dir, 6)
    side = round(224 * 0.5 / 1.3)

    def magnified(mpp):
        def make(stem: Path, rgb: np.ndarray) -> str:
            big = np.asarray(Image.fromarray(_centre(rgb, side)).resize((224, 224),
                                                                         Image.Resampling.BICUBIC))
            return _tiff(stem.with_suffix(".tif"), big, mpp).name
        return make

    def field(stem: Path, rgb: np.ndarray) -> str:
        Image.fromarray(_centre(rgb, side)).save(stem.with_suffix(".png"))
        return stem.with_suffix(".png").name

    def scored(csv_path: Path) -> tuple[dict, np.ndarray, list]:
        events: list = []
        m = run_job(evaluate(DEMO, csv_path, csv_path.parent / "eval", subset="all",
                             label_column="label", device="cpu", batch_size=16), events.append)
        with open(csv_path.parent / "eval" / "predictions.csv") as fh:
            pr = list(csv.DictReader(fh))
        probs = np.array([[float(r[f"prob_{c}"]) for c in m["classes"]] for r in pr])
        return m, probs, [str(e) for e in events if isinstance(e, JobWarning)]

    tagged, p_tagged, warned = scored(_write_set(tmp_path / "tagged", rows, magnified(0.5)))
    assert ("images at 0.5 µm/px (stated in the resolution tags of all 12 images) resampled to "
            "the model's 1.3 µm/px" in tagged["scale"])
    # at the model's scale each covers (86 / 224)^2 of its window: said, in the report too
    said = "12 of 12 images are smaller than the model's window at its scale (median 15 %"
    assert said in tagged["scale"] and any(said in w for w in warned)
    plain, p_plain, warned = scored(_write_set(tmp_path / "plain", rows, magnified(None)))
    assert "pixel size is unknown" in plain["scale"]
    assert "smaller than the model's window" not in plain["scale"] + "".join(warned)
    same, p_field, _ = scored(_write_set(tmp_path / "field", rows, field))
    # the tagged 20x tiles reach the model as the 86 px fields do (one resampling apart: 0.02
    # measured) ...
    assert np.abs(p_tagged - p_field).max() < 0.15
    assert (p_tagged.argmax(1) == p_field.argmax(1)).mean() >= 11 / 12
    # ... and not as the magnified images taken at the model's scale (0.93; half the calls)
    assert np.abs(p_plain - p_field).max() > 0.3


def test_a_mixed_set_is_taken_at_the_model_scale_with_one_warning(ebhi_dir: Path,
                                                                  tmp_path: Path) -> None:
    if not DEMO.is_file():
        pytest.skip("demo model not found")
    rows = _ebhi_rows(ebhi_dir, 2)
    k = iter(range(len(rows)))

    def make(stem: Path, rgb: np.ndarray) -> str:
        return _tiff(stem.with_suffix(".tif"), rgb, 1.3 if next(k) % 2 else None).name

    csv_path = _write_set(tmp_path / "mixed", rows, make)
    events: list = []
    m = run_job(evaluate(DEMO, csv_path, tmp_path / "eval", subset="all", label_column="label",
                         device="cpu"), events.append)
    said = [str(e) for e in events if isinstance(e, JobWarning)]
    assert sum("2 of 4 images state a pixel size" in w for w in said) == 1
    assert "pixel size is unknown" in m["scale"]
    events = []
    m = run_job(evaluate(DEMO, csv_path, tmp_path / "eval2", subset="all", label_column="label",
                         device="cpu", mpp=0.9), events.append)
    assert "images at 0.9 µm/px (given (--mpp))" in m["scale"]


def test_training_on_tiles_that_state_their_scale_records_it(ebhi_dir: Path,
                                                             tmp_path: Path) -> None:
    csv_path = _write_set(tmp_path / "ds", _ebhi_rows(ebhi_dir, 8),
                          lambda stem, rgb: _tiff(stem.with_suffix(".tif"), rgb, 1.3).name)
    cfg = make_config("resnet50", "quick", epochs=1, batch_size=8, image_size=32, device="cpu",
                      val_fraction=0.25, test_fraction=0.0, data={"label_column": "label"})
    warnings: list = []
    run_job(fit(csv_path, tmp_path / "run", cfg), lambda e: warnings.append(str(e))
            if isinstance(e, JobWarning) else None)
    assert not any("pixel size is unknown" in w for w in warnings)
    ck = load_checkpoint(tmp_path / "run" / "best.pt")
    assert ck["mpp"] == pytest.approx(1.3)
    assert ck["mpp_source"] == "stated in the resolution tags of all 16 images"


def test_an_unreadable_set_still_fails_on_its_images_not_on_their_tags(tmp_path: Path) -> None:
    if not DEMO.is_file():
        pytest.skip("demo model not found")
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "a.tif").write_bytes(b"broken")
    (tmp_path / "ds" / "labels.csv").write_text("image,label\na.tif,Normal\n")
    with pytest.raises(DatasetError, match="no readable images"):
        run_job(evaluate(DEMO, tmp_path / "ds" / "labels.csv", tmp_path / "eval", subset="all",
                         label_column="label", device="cpu"))


def test_only_images_well_short_of_the_window_are_said_to_be_mirrored() -> None:
    from crc_core.image_scale import said_fields

    said: list = []
    assert run_job(said_fields([1.0, 0.95, 1.0]), said.append) == "" and said == []
    note = run_job(said_fields([0.15, 0.2, 1.0, 0.5]), said.append)
    assert note.startswith("; 3 of 4 images are smaller than the model's window")
    assert "(median 20 % of its area)" in note and len(said) == 1


def test_a_given_pixel_size_that_differs_from_the_tags_is_used_and_said_once_alike() -> None:
    from crc_core.image_scale import scale_to_model
    from crc_core.training.data import scale_of

    class _Table:
        mpp = None

    stated = StatedScale((0.5, 0.5), 2)
    line = ("the pixel size given (0.9 µm/px, --mpp) is used, though the images' resolution "
            "tags state 0.5 µm/px")
    assert stated.overridden_by(0.9) == line and stated.overridden_by(0.505) is None
    meta = {"input_size": 112, "patch_size": 224, "mpp": 1.3}
    factor, note, warned = scale_to_model(meta, _Table(), 0.9, stated)
    assert warned == [line] and factor == pytest.approx(0.9 / 1.3 * 0.5)
    said: list[str] = []
    assert scale_of(0.9, _Table(), said.append, stated) == (0.9, "given (--mpp)")
    assert said == [line]
