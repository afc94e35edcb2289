"""crc_core.slide: real slides, the synthetic pyramid, the tile cache, threads and bad input."""

from __future__ import annotations

import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image

from crc_core.errors import ConfigError, SlideError
from crc_core.slide import TileCache, open_array, open_slide
from crc_testkit.synthetic import TissuePattern, write_pyramid_tiff

CMU = "cmu-1-small-region.svs"
TCGA = "tcga-cr-7395-01a-01-ts1.svs"
KIDNEY = "kidney-48-5.tif"


def _box_down(arr: np.ndarray, f: int) -> np.ndarray:
    h, w = arr.shape[0] // f * f, arr.shape[1] // f * f
    a = arr[:h, :w].astype(np.float64)
    return a.reshape(h // f, f, w // f, f, 3).mean(axis=(1, 3))


# -- real slides ------------------------------------------------------------------------------


def test_cmu_svs_metadata(slides_dir: Path) -> None:
    with open_slide(slides_dir / CMU) as s:
        assert s.backend == "openslide"
        assert s.vendor == "aperio"
        assert s.dimensions == (2220, 2967)
        assert s.level_count == 1
        assert s.mpp == pytest.approx((0.499, 0.499))
        assert s.objective_power == 20.0


def test_cmu_associated_images_are_rgb(slides_dir: Path) -> None:
    with open_slide(slides_dir / CMU) as s:
        assert set(s.associated_names) == {"label", "macro", "thumbnail"}
        label = s.associated_image("label")
        assert label.shape == (463, 387, 3)
        assert label.dtype == np.uint8


def test_unknown_associated_image_names_the_choices(slides_dir: Path) -> None:
    with open_slide(slides_dir / CMU) as s, pytest.raises(SlideError, match="label"):
        s.associated_image("barcode")


def test_tcga_slide_has_no_mpp_and_no_objective(slides_dir: Path) -> None:
    with open_slide(slides_dir / TCGA) as s:
        assert s.mpp is None
        assert s.objective_power is None
        assert s.level_dimensions == [(4443, 3567), (2221, 1783)]


def test_kidney_tiff_opens_through_pillow_fallback(slides_dir: Path) -> None:
    with open_slide(slides_dir / KIDNEY) as s:
        assert s.backend == "pillow"
        assert s.dimensions == (1493, 901)
        assert s.mpp is None  # 1 dpi resolution tag is not a calibration
        with Image.open(slides_dir / KIDNEY) as im:
            ref = np.asarray(im.convert("RGB"))[200:260, 300:380]
        np.testing.assert_array_equal(s.read_region((300, 200), 0, (80, 60)), ref)


def test_read_region_equals_openslide_pixels(slides_dir: Path) -> None:
    with open_slide(slides_dir / CMU) as s:
        got = s.read_region((700, 900), 0, (300, 200))
    ref = np.asarray(
        openslide.OpenSlide(str(slides_dir / CMU)).read_region((700, 900), 0, (300, 200))
    )
    assert got.shape == (200, 300, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, ref[..., :3])


def test_read_region_outside_slide_is_white(slides_dir: Path) -> None:
    with open_slide(slides_dir / CMU) as s:
        region = s.read_region((2120, 2867), 0, (200, 200))
    assert (region[100:, :] == 255).all() and (region[:, 100:] == 255).all()
    assert (region[:100, :100] != 255).any()


def test_tcga_level1_matches_level0_downsampled(slides_dir: Path) -> None:
    with open_slide(slides_dir / TCGA) as s:
        l1 = s.read_region((1600, 1200), 1, (200, 200)).astype(np.float64)
        l0 = s.read_region((1600, 1200), 0, (400, 400))
    err = np.abs(l1 - _box_down(l0, 2)).mean()  # the scanner's own filter + JPEG 2000: not exact
    assert err < 10
    assert np.abs(l1 - _box_down(np.roll(l0, 30, axis=1), 2)).mean() > 2 * err


def test_transparent_png_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :10, 3] = 255  # opaque red-ish
    rgba[:, 10:20, 3] = 0  # fully transparent
    rgba[:, 20:, 3] = 128  # half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    with open_slide(tmp_path / "a.png") as s:
        img = s.read_region((0, 0), 0, (30, 20))
    assert tuple(img[5, 5]) == (200, 0, 0)
    assert tuple(img[5, 15]) == (255, 255, 255)
    assert img[5, 25, 0] == pytest.approx(228, abs=1) and img[5, 25, 1] == pytest.approx(127, abs=1)


def test_tiff_resolution_in_centimetres_gives_mpp(tmp_path: Path) -> None:
    arr = np.full((40, 50, 3), 120, np.uint8)
    tifffile.imwrite(
        tmp_path / "cal.tif", arr, resolution=(1e4 / 0.25, 1e4 / 0.25), resolutionunit="CENTIMETER"
    )
    with open_slide(tmp_path / "cal.tif") as s:
        assert s.backend == "pillow"
        assert s.mpp == pytest.approx((0.25, 0.25))


def test_screen_dpi_is_not_taken_as_mpp(tmp_path: Path) -> None:
    Image.new("RGB", (40, 30), "white").save(tmp_path / "screen.png", dpi=(72, 72))
    with open_slide(tmp_path / "screen.png") as s:
        assert s.mpp is None


# -- synthetic pyramid --------------------------------------------------------------------------


def test_pyramid_fixture_is_a_generic_tiff_pyramid(pyramid_tiff: Path, pyramid_spec: dict) -> None:
    with open_slide(pyramid_tiff) as s:
        assert s.backend == "openslide" and s.vendor == "generic-tiff"
        assert s.dimensions == pyramid_spec["size"]
        assert s.level_count >= 4
        assert s.level_downsamples[:4] == pytest.approx([1, 2, 4, 8])
        assert s.mpp == pytest.approx((pyramid_spec["mpp"], pyramid_spec["mpp"]))


def test_pyramid_level0_matches_tile_source(pyramid_tiff: Path, pyramid_spec: dict) -> None:
    src = TissuePattern(seed=pyramid_spec["seed"])
    with open_slide(pyramid_tiff) as s:
        got = s.read_region((10000, 3000), 0, (700, 500)).astype(np.float64)
    ref = src(10000, 3000, 700, 500).astype(np.float64)
    assert np.abs(got - ref).mean() < 5  # JPEG q85 error only


@pytest.mark.parametrize("level", [1, 2, 3])
def test_read_region_at_level_matches_level0_downsampled(pyramid_tiff: Path, level: int) -> None:
    with open_slide(pyramid_tiff) as s:
        f = int(s.level_downsamples[level])
        xy = (9000, 2000)
        lv = s.read_region(xy, level, (160, 120)).astype(np.float64)
        l0 = s.read_region(xy, 0, (160 * f, 120 * f))
    ref = _box_down(l0, f)
    assert np.abs(lv - ref).mean() < 8
    shifted = _box_down(np.roll(l0, 40 * f, axis=1), f)  # a misplaced read must fail the check
    assert np.abs(lv - shifted).mean() > np.abs(lv - ref).mean() * 2


def test_read_tile_equals_read_region_and_edges_are_clipped(pyramid_tiff: Path) -> None:
    with open_slide(pyramid_tiff) as s:
        tile = s.read_tile(2, 3, 1)
        ds = s.level_downsamples[2]
        np.testing.assert_array_equal(
            tile, s.read_region((int(3 * 256 * ds), int(256 * ds)), 2, (256, 256))
        )
        cols, rows = s.tile_grid(3)
        lw, lh = s.level_dimensions[3]
        edge = s.read_tile(3, cols - 1, rows - 1)
        assert edge.shape == (lh - (rows - 1) * 256, lw - (cols - 1) * 256, 3)


def test_read_tile_outside_grid_is_refused(pyramid_tiff: Path) -> None:
    with open_slide(pyramid_tiff) as s, pytest.raises(SlideError, match="outside"):
        s.read_tile(0, 10_000, 0)


def test_best_level_for_downsample(pyramid_tiff: Path) -> None:
    with open_slide(pyramid_tiff) as s:
        assert s.best_level_for_downsample(1.0) == 0
        assert s.best_level_for_downsample(3.9) == 1
        assert s.best_level_for_downsample(4.0) == 2
        assert s.best_level_for_downsample(1e6) == s.level_count - 1


def test_thumbnail_keeps_aspect_and_content(pyramid_tiff: Path, pyramid_spec: dict) -> None:
    with open_slide(pyramid_tiff) as s:
        th = s.thumbnail(640)
        w0, h0 = pyramid_spec["size"]
        h = h0 * 640 // w0
        assert th.shape == (h, 640, 3)
        ref = _box_down(s.read_region((0, 0), 5, s.level_dimensions[5])[:h, :640], 1)
    assert np.abs(th.astype(np.float64) - ref).mean() < 6


def test_set_mpp_overrides_and_restores(slides_dir: Path) -> None:
    with open_slide(slides_dir / TCGA) as s:
        s.set_mpp(0.25)
        assert s.mpp == (0.25, 0.25) and s.mpp_source == "user"
        assert s.info()["mpp"] == 0.25
        s.set_mpp(None)
        assert s.mpp is None and s.mpp_source is None


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), (0.5,), "abc"])
def test_set_mpp_rejects_invalid_values(slides_dir: Path, bad: object) -> None:
    with open_slide(slides_dir / TCGA) as s, pytest.raises((ConfigError, TypeError)):
        s.set_mpp(bad)  # type: ignore[arg-type]


def test_fingerprint_is_stable_and_tells_files_apart(slides_dir: Path) -> None:
    with open_slide(slides_dir / CMU) as a, open_slide(slides_dir / CMU) as b:
        assert a.fingerprint() == b.fingerprint()
        assert len(a.fingerprint()) == 64
    with open_slide(slides_dir / TCGA) as c:
        assert c.fingerprint() != a.fingerprint()


# -- cache and threads --------------------------------------------------------------------------


def test_tile_cache_is_bounded_in_bytes() -> None:
    cache = TileCache(max_bytes=10_000)
    for i in range(10):
        cache.put(i, np.zeros(3000, np.uint8))
    assert cache.current_bytes <= 10_000
    assert len(cache) == 3
    assert 9 in cache and 0 not in cache


def test_tile_cache_evicts_least_recently_used() -> None:
    cache = TileCache(max_bytes=3000)
    for k in "abc":
        cache.put(k, np.zeros(1000, np.uint8))
    assert cache.get("a") is not None  # a becomes most recent
    cache.put("d", np.zeros(1000, np.uint8))
    assert "b" not in cache and "a" in cache and "d" in cache


def test_read_tile_cache_stays_within_budget_and_hits(pyramid_tiff: Path) -> None:
    budget = 5 * 256 * 256 * 3
    with open_slide(pyramid_tiff, cache_bytes=budget) as s:
        for c in range(12):
            s.read_tile(1, c, 2)
        assert s.cache.current_bytes <= budget
        assert len(s.cache) == 5
        hits = s.cache.hits
        first = s.read_tile(1, 11, 2)
        assert s.cache.hits == hits + 1
        assert not first.flags.writeable


@pytest.mark.parametrize("name", [TCGA, KIDNEY])
def test_concurrent_reads_equal_serial_reads(slides_dir: Path, name: str) -> None:
    with open_slide(slides_dir / name, cache_bytes=8 * 256 * 256 * 3) as s:
        cols, rows = s.tile_grid(0)
        keys = [(c, r) for r in range(rows) for c in range(cols)][:40]
        serial = {k: s.read_region((k[0] * 256, k[1] * 256), 0, (256, 256)).copy() for k in keys}
        s.cache.clear()
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                for j in range(60):
                    c, r = keys[(i * 7 + j * 3) % len(keys)]
                    tile = s.read_tile(0, c, r)
                    h, w = tile.shape[:2]
                    if not np.array_equal(tile, serial[(c, r)][:h, :w]):
                        raise AssertionError(f"tile {(c, r)} differs under threads")
                    region = s.read_region((c * 256 + 10, r * 256 + 10), 0, (64, 64))
                    if region.shape != (64, 64, 3):
                        raise AssertionError("bad region shape")
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        with ThreadPoolExecutor(8) as ex:
            list(ex.map(work, range(8)))
        assert not errors, errors[0]
        assert s.cache.current_bytes <= s.cache.max_bytes


def test_close_waits_and_later_reads_are_refused(slides_dir: Path) -> None:
    s = open_slide(slides_dir / CMU)
    t = threading.Thread(target=lambda: [s.read_region((0, 0), 0, (512, 512)) for _ in range(5)])
    t.start()
    t.join()
    s.close()
    with pytest.raises(SlideError, match="closed"):
        s.read_region((0, 0), 0, (10, 10))


# -- bad input ----------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SlideError, match="not found"):
        open_slide(tmp_path / "nope.svs")


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SlideError, match="folder"):
        open_slide(tmp_path)


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "empty.svs").write_bytes(b"")
    with pytest.raises(SlideError, match="empty"):
        open_slide(tmp_path / "empty.svs")


@pytest.mark.parametrize("keep", [8, 1_000_000, 1_700_000, 1_938_000])
def test_truncated_svs(slides_dir: Path, tmp_path: Path, keep: int) -> None:
    (tmp_path / "cut.svs").write_bytes((slides_dir / CMU).read_bytes()[:keep])
    with pytest.raises(SlideError, match="truncated"):
        open_slide(tmp_path / "cut.svs")


def test_text_file_with_slide_extension(tmp_path: Path) -> None:
    (tmp_path / "notes.svs").write_text("this is not a slide\n")
    with pytest.raises(SlideError, match="not a readable .svs slide"):
        open_slide(tmp_path / "notes.svs")


def test_garbage_with_image_extension(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(SlideError, match="accepted"):
        open_slide(tmp_path / "x.png")


def test_unsupported_image_format(tmp_path: Path) -> None:
    Image.new("RGB", (10, 10)).save(tmp_path / "anim.gif")
    with pytest.raises(SlideError, match="GIF images are not supported"):
        open_slide(tmp_path / "anim.gif")


def test_truncated_plain_image_fails_at_open(slides_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "cut.tif").write_bytes((slides_dir / KIDNEY).read_bytes()[:2_000_000])
    with pytest.raises(SlideError, match="truncated"):
        open_slide(tmp_path / "cut.tif")


def _patch_size_tags(src: Path, dst: Path, width: int, height: int) -> None:
    data = bytearray(src.read_bytes())
    with tifffile.TiffFile(src) as tf:
        tags = tf.pages[0].tags
        for code, value in ((256, width), (257, height)):
            tag = tags[code]
            fmt = "<I" if int(tag.dtype) == 4 else "<H"
            struct.pack_into(fmt, data, tag.valueoffset, value)
    dst.write_bytes(bytes(data))


def test_strip_tiff_claiming_enormous_size_is_refused(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "small.tif", np.zeros((10, 10, 3), np.uint8))
    _patch_size_tags(tmp_path / "small.tif", tmp_path / "bomb.tif", 100_000, 60_000)
    with pytest.raises(SlideError, match="too large|exceeds"):
        open_slide(tmp_path / "bomb.tif")


def test_tiled_tiff_claiming_enormous_size_is_refused(tmp_path: Path) -> None:
    write_pyramid_tiff(tmp_path / "small.tif", 512, 512, levels=1)
    _patch_size_tags(tmp_path / "small.tif", tmp_path / "bomb.tif", 3_000_000, 3_000_000)
    with pytest.raises(SlideError):
        open_slide(tmp_path / "bomb.tif")


def test_corrupt_tile_fails_on_read_with_clear_error(tmp_path: Path) -> None:
    write_pyramid_tiff(tmp_path / "ok.tif", 1024, 768)
    data = bytearray((tmp_path / "ok.tif").read_bytes())
    with tifffile.TiffFile(tmp_path / "ok.tif") as tf:
        off, cnt = tf.pages[0].dataoffsets[5], tf.pages[0].databytecounts[5]
    data[off + 20 : off + cnt] = b"\x00" * (cnt - 20)
    (tmp_path / "bad.tif").write_bytes(bytes(data))
    with open_slide(tmp_path / "bad.tif") as s:  # directories are intact: opens
        with pytest.raises(SlideError, match="corrupt"):
            s.read_region((256, 256), 0, (512, 300))  # tile 5 = col 1, row 1


def test_invalid_level_and_oversized_region(slides_dir: Path) -> None:
    with open_slide(slides_dir / TCGA) as s:
        with pytest.raises(SlideError, match="level 2 does not exist"):
            s.read_region((0, 0), 2, (10, 10))
        with pytest.raises(SlideError, match="read it in tiles"):
            s.read_region((0, 0), 0, (100_000, 100_000))
        with pytest.raises(SlideError, match="positive"):
            s.read_region((0, 0), 0, (0, 10))


# -- array slides (test double) -----------------------------------------------------------------


def test_open_array_serves_the_array_as_a_slide() -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(300, 500, 3), dtype=np.uint8)
    with open_array(arr, mpp=0.5, name="noise") as s:
        assert s.backend == "array" and s.dimensions == (500, 300)
        assert s.mpp == (0.5, 0.5) and s.mpp_source == "file"
        np.testing.assert_array_equal(s.read_region((100, 50), 0, (200, 100)), arr[50:150, 100:300])
        np.testing.assert_array_equal(s.read_tile(0, 1, 1), arr[256:300, 256:500])
        assert s.thumbnail(100).shape == (60, 100, 3)
        assert s.info()["fingerprint"] != open_array(arr[::-1]).fingerprint()


def test_open_array_rejects_non_images() -> None:
    with pytest.raises(SlideError, match="uint8"):
        open_array(np.zeros((10, 10, 3), np.float32))


def test_exif_orientation_of_plain_jpeg_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (255, 255, 255))
    img.paste((200, 0, 0), (0, 0, 20, 20))  # left half red as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    img.save(tmp_path / "photo.jpg", exif=exif, quality=95)
    with open_slide(tmp_path / "photo.jpg") as s:
        assert s.dimensions == (20, 40)
        top = s.read_region((0, 0), 0, (20, 20)).astype(int)
        bottom = s.read_region((0, 20), 0, (20, 20)).astype(int)
    assert top[..., 1].mean() < 60 < bottom[..., 1].mean()  # red stored left shows on top
