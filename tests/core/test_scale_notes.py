"""The gland filter says which scale it assumes for a slide without a pixel size, once per slide."""

from __future__ import annotations

from pathlib import Path

from crc_core.cli import main as crc_main
from crc_core.jobs import run_job
from crc_core.patches import SlideSource
from crc_core.scale_notes import gland_scale_notes

GEOJSON = ('{"type":"FeatureCollection","features":[{"type":"Feature","geometry":{"type":"Polygon",'
           '"coordinates":[[[1000,1000],[1900,1000],[1900,1900],[1000,1900],[1000,1000]]]},'
           '"properties":{"classification":{"name":"Normal"}}}]}')


def test_a_slide_without_mpp_gets_one_note_naming_the_assumed_scale(slides_dir: Path):
    tcga = SlideSource(slides_dir / "tcga-cr-7395-01a-01-ts1.svs", [], name="tcga")
    cmu = SlideSource(slides_dir / "cmu-1-small-region.svs", [], name="cmu")
    notes = run_job(gland_scale_notes([tcga, cmu], 0.5, 400))
    assert len(notes) == 1 and notes[0].startswith("tcga: the slide states no pixel size")
    assert "1.3 µm/px" in notes[0] and "400 px = 520 µm" in notes[0]
    assert "Slide Properties" in notes[0]


def test_a_user_set_pixel_size_or_no_gland_filter_needs_no_note(slides_dir: Path):
    tcga = SlideSource(slides_dir / "tcga-cr-7395-01a-01-ts1.svs", [], name="tcga", mpp=0.5)
    assert run_job(gland_scale_notes([tcga], 0.5, 400)) == []
    bare = SlideSource(slides_dir / "tcga-cr-7395-01a-01-ts1.svs", [], name="tcga")
    assert run_job(gland_scale_notes([bare], None, 400)) == []


def test_crc_extract_says_the_assumed_scale_once_on_stderr(slides_dir: Path, tmp_path: Path,
                                                            capsys):
    ann = tmp_path / "a.geojson"
    ann.write_text(GEOJSON)
    rc = crc_main(["extract", "--slide", str(slides_dir / "tcga-cr-7395-01a-01-ts1.svs"),
                   "--annotations", str(ann), "--out", str(tmp_path / "ds"), "--random", "0",
                   "--quiet"])
    # TCGA (head and neck) has no colonic glands: at the assumed scale every window may fail the
    # filter (exit 2), but the assumption is said first, once.
    assert rc in (0, 2)
    err = capsys.readouterr().err
    assert err.count("states no pixel size") == 1
    assert "gland filter (>= 0.5) assumes its patches are at the EBHI tiles' scale" in err
    if rc == 2:
        assert err.index("states no pixel size") < err.index("no patch passed the rules")


def test_an_extract_dataset_records_its_patches_scale_where_training_reads_it(
        slides_dir: Path, tmp_path: Path):
    import json

    from crc_core.tables import load_table

    ann = tmp_path / "a.geojson"
    ann.write_text(GEOJSON)
    for slide, want in (("cmu-1-small-region.svs", 0.499), ("tcga-cr-7395-01a-01-ts1.svs", None)):
        out = tmp_path / slide
        assert crc_main(["extract", "--slide", str(slides_dir / slide), "--annotations", str(ann),
                         "--out", str(out), "--random", "0", "--min-gland", "0", "--quiet"]) == 0
        meta = json.loads((out / "dataset.json").read_text())
        assert meta["patch_size"] == 400 and meta["mpp"] == want
        assert load_table(out, min_classes=1).mpp == want   # what crc train records
        if want is None:
            assert "states no pixel size" in meta["mpp_note"]
