"""crc_testkit.synthetic: streaming pyramid writer, tile sources, cancellation and argument
checks."""

from __future__ import annotations

import csv
import tracemalloc
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

from crc_core.errors import ConfigError
from crc_testkit.synthetic import (
    TileMosaic,
    TissuePattern,
    pyramid_levels,
    pyramid_tiff_job,
    write_pyramid_tiff,
)


def test_pyramid_levels_halve_until_one_tile() -> None:
    assert pyramid_levels(1000, 600, 256) == [(1000, 600), (500, 300), (250, 150)]
    assert pyramid_levels(1001, 3, 256, levels=3) == [(1001, 3), (501, 2), (251, 1)]


def test_written_file_has_reduced_jpeg_tiled_pages(tmp_path: Path) -> None:
    path = write_pyramid_tiff(tmp_path / "p.tif", 1300, 700, levels=3, mpp=0.25)
    with tifffile.TiffFile(path) as tf:
        pages = list(tf.pages)
        assert [p.shape[:2] for p in pages] == [(700, 1300), (350, 650), (175, 325)]
        assert all(p.is_tiled and p.compression == 7 for p in pages)  # JPEG
        assert [int(p.subfiletype) for p in pages] == [0, 1, 1]
        assert pages[0].tags["ResolutionUnit"].value == 3  # centimetre
    osr = openslide.OpenSlide(str(path))
    assert osr.properties["openslide.vendor"] == "generic-tiff"
    assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(0.25)


def test_without_imagecodecs_pillow_writes_tiles_openslide_reads_alike(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The GPU check machine has no imagecodecs: the writer falls back to Pillow's JPEG encoder.
    a = write_pyramid_tiff(tmp_path / "a.tif", 900, 600, levels=2, quality=90)
    import sys

    from PIL import Image

    saves: list[str] = []
    real_save = Image.Image.save
    monkeypatch.setattr(Image.Image, "save",
                        lambda im, fp, fmt=None, **kw: (saves.append(fmt),
                                                        real_save(im, fp, fmt, **kw))[1])
    monkeypatch.setitem(sys.modules, "imagecodecs", None)   # import imagecodecs -> ImportError
    # tifffile's own JPEG codec needs imagecodecs too: start from an empty codec table.
    monkeypatch.setattr(tifffile.TIFF.COMPRESSORS, "_codecs", {1: lambda d, *a, **k: d})
    b = write_pyramid_tiff(tmp_path / "b.tif", 900, 600, levels=2, quality=90)
    assert saves and set(saves) == {"JPEG"}
    ra, rb = (np.asarray(openslide.OpenSlide(str(p)).read_region((0, 0), 0, (900, 600)))[..., :3]
              .astype(np.int16) for p in (a, b))
    # Both drive the same libjpeg-turbo with the same settings: the pixels agree.
    assert np.abs(ra - rb).mean() < 1.0 and ra.std() > 10


def test_mpp_none_writes_no_calibration(tmp_path: Path) -> None:
    path = write_pyramid_tiff(tmp_path / "p.tif", 600, 400, mpp=None)
    assert "openslide.mpp-x" not in openslide.OpenSlide(str(path)).properties


def test_source_is_asked_for_single_tiles_only(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    pattern = TissuePattern(seed=1)

    def source(x: int, y: int, w: int, h: int) -> np.ndarray:
        calls.append((w, h))
        return pattern(x, y, w, h)

    write_pyramid_tiff(tmp_path / "p.tif", 2000, 1100, source, workers=1)
    assert max(w * h for w, h in calls) <= 256 * 256
    assert sum(w * h for w, h in calls) == 2000 * 1100  # every level-0 pixel asked for once


def test_peak_memory_stays_far_below_image_size(tmp_path: Path) -> None:
    pattern = TissuePattern(seed=2)  # textures are built before measuring
    width, height = 6144, 4096
    tracemalloc.start()
    try:
        write_pyramid_tiff(tmp_path / "p.tif", width, height, pattern, workers=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < width * height * 3 / 6  # raw level 0 is 75 MB; a few tile rows are ~5 MB


def test_tissue_pattern_is_a_pure_function_of_coordinates() -> None:
    p = TissuePattern(seed=5)
    big = p(3000, 1000, 900, 700)
    np.testing.assert_array_equal(big[123 : 123 + 300, 456 : 456 + 200], p(3456, 1123, 200, 300))


def test_tissue_pattern_has_tissue_and_background() -> None:
    p = TissuePattern(seed=0, tissue_fraction=0.5)
    grid = p.tissue_grid(40000, 40000, 1000)
    assert grid.shape == (40, 40)
    assert 0.2 < grid.mean() < 0.8
    centres = [bool((p(x + 500, 500, 1, 1) != p.background).any()) for x in range(0, 40000, 1000)]
    assert centres == list(grid[0])


def _ebhi_tiles(ebhi_dir: Path, n: int) -> list[np.ndarray]:
    from PIL import Image

    with open(ebhi_dir / "labels.csv", newline="") as fh:
        names = [row["image"] for row in csv.DictReader(fh)][:n]
    tiles = []
    for name in names:
        with Image.open(ebhi_dir / name) as im:
            tiles.append(np.asarray(im.convert("RGB")))
    return tiles


def test_tile_mosaic_places_real_tiles_where_tile_at_says(ebhi_dir: Path, tmp_path: Path) -> None:
    tiles = _ebhi_tiles(ebhi_dir, 6)
    mosaic = TileMosaic(tiles, seed=4)
    path = write_pyramid_tiff(tmp_path / "m.tif", 224 * 5, 224 * 3, mosaic)
    osr = openslide.OpenSlide(str(path))
    for col, row in [(0, 0), (3, 1), (4, 2)]:
        k = mosaic.tile_at(col * 224 + 10, row * 224 + 10)
        got = np.asarray(osr.read_region((col * 224, row * 224), 0, (224, 224)))[..., :3]
        errs = [np.abs(got.astype(float) - t).mean() for t in tiles]
        assert int(np.argmin(errs)) == k
        assert errs[k] < 8


def test_tile_mosaic_layout_and_background() -> None:
    tiles = [np.full((8, 8, 3), v, np.uint8) for v in (10, 20, 30)]
    mosaic = TileMosaic(tiles, layout=lambda c, r: -1 if c == r else (c + r) % 3)
    img = mosaic(0, 0, 24, 16)
    assert tuple(img[2, 2]) == tuple(mosaic.background)  # cell (0, 0) is background
    assert img[2, 10, 0] == 20 and img[10, 2, 0] == 20  # cells (1, 0) and (0, 1) hold tile 1
    assert mosaic.cell_index(2, 0) == 2


def test_tile_mosaic_rejects_mixed_sizes() -> None:
    with pytest.raises(ConfigError, match="same shape"):
        TileMosaic([np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)])


def test_closing_the_job_cancels_and_leaves_nothing(tmp_path: Path) -> None:
    job = pyramid_tiff_job(tmp_path / "p.tif", 4096, 4096, TissuePattern(seed=0), workers=1)
    first = next(job)
    assert first.total and first.done < first.total
    job.close()
    assert list(tmp_path.iterdir()) == []


def test_job_reports_progress_to_completion(tmp_path: Path) -> None:
    events = []
    job = pyramid_tiff_job(tmp_path / "p.tif", 700, 600)
    try:
        while True:
            events.append(next(job))
    except StopIteration as stop:
        result = stop.value
    assert result == tmp_path / "p.tif" and result.exists()
    assert events[-1].done == events[-1].total
    assert [e.done for e in events] == sorted(e.done for e in events)


def test_bad_tile_source_output_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected"):
        write_pyramid_tiff(
            tmp_path / "p.tif", 300, 300, lambda x, y, w, h: np.zeros((h, w), np.uint8)
        )
    assert not (tmp_path / "p.tif").exists()


@pytest.mark.parametrize(
    "kwargs",
    [{"width": 0}, {"tile": 100}, {"levels": 0}, {"quality": 0}, {"mpp": -1.0}],
)
def test_invalid_arguments_are_refused(tmp_path: Path, kwargs: dict) -> None:
    args = {"width": 300, "height": 300} | kwargs
    with pytest.raises(ConfigError):
        write_pyramid_tiff(tmp_path / "p.tif", **args)
