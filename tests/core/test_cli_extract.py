"""Tests of `crc extract` on the real CMU slide."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from crc_core.annotations import Annotation, AnnotationSet, save_annotations
from crc_core.classes import ClassScheme
from crc_core.cli import main


@pytest.fixture
def rect_geojson(tmp_path: Path) -> Path:
    path = tmp_path / "A.geojson"
    aset = AnnotationSet([Annotation.rectangle("normal", 300, 400, 1000, 680)])
    save_annotations(aset, path, ClassScheme.paper())
    return path


def test_done_when_rectangle_gives_the_eight_flush_windows(
    slides_dir, rect_geojson, tmp_path, capsys
):
    out = tmp_path / "D"
    rc = main(
        [
            "extract",
            "--slide",
            str(slides_dir / "cmu-1-small-region.svs"),
            "--annotations",
            str(rect_geojson),
            "--out",
            str(out),
            "--random",
            "0",
            "--min-gland",
            "0",
            "--min-tissue",
            "0",
            "-q",
        ]
    )
    assert rc == 0
    with open(out / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    got = sorted((int(r["l0_x"]), int(r["l0_y"])) for r in rows)
    assert got == sorted((x, y) for x in (300, 580, 860, 900) for y in (400, 680))
    assert all((out / r["path"]).is_file() and r["size"] == "400" for r in rows)
    assert json.loads((out / "dataset.json").read_text())["totals"]["total"] == 8
    printed = capsys.readouterr().out
    assert "Normal" in printed and "8 patches" in printed


def test_rerun_into_the_same_folder_reuses_patches(slides_dir, rect_geojson, tmp_path, capsys):
    args = [
        "extract",
        "--slide",
        str(slides_dir / "cmu-1-small-region.svs"),
        "--annotations",
        str(rect_geojson),
        "--out",
        str(tmp_path / "D"),
        "--random",
        "0",
        "--min-gland",
        "0",
        "--min-tissue",
        "0",
        "-q",
    ]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 0
    assert "0 written, 8 reused" in capsys.readouterr().out


def test_unpaired_slide_and_annotations_is_a_usage_error(slides_dir, tmp_path, capsys):
    rc = main(
        [
            "extract",
            "--slide",
            str(slides_dir / "cmu-1-small-region.svs"),
            "--out",
            str(tmp_path / "D"),
        ]
    )
    assert rc == 2
    assert "--annotations" in capsys.readouterr().err


def test_out_of_range_option_is_refused_with_the_option_name(
    slides_dir, rect_geojson, tmp_path, capsys
):
    rc = main(
        [
            "extract",
            "--slide",
            str(slides_dir / "cmu-1-small-region.svs"),
            "--annotations",
            str(rect_geojson),
            "--out",
            str(tmp_path / "D"),
            "--overlap",
            "1.2",
        ]
    )
    assert rc == 2
    assert "--overlap" in capsys.readouterr().err


def test_extract_from_a_project_uses_its_slides_and_scheme(slides_dir, tmp_path, capsys):
    from crc_core.project import Project

    proj = Project.create(tmp_path / "proj", scheme=ClassScheme.three_class())
    entry = proj.add_slide(slides_dir / "cmu-1-small-region.svs")
    proj.save_annotations(
        entry,
        AnnotationSet(
            [
                Annotation.rectangle("normal", 300, 400, 1000, 680),
                Annotation.rectangle("adenocarcinoma", 300, 1500, 680, 680),
            ]
        ),
    )
    proj.save()
    out = tmp_path / "D"
    rc = main(
        [
            "extract",
            "--project",
            str(tmp_path / "proj"),
            "--out",
            str(out),
            "--random",
            "0",
            "--min-gland",
            "0",
            "--min-tissue",
            "0",
            "--test-fraction",
            "0",
            "-q",
        ]
    )
    assert rc == 0
    doc = json.loads((out / "dataset.json").read_text())
    assert [c["id"] for c in doc["classes"]["classes"]] == ["normal", "adenoma", "adenocarcinoma"]
    assert {r["class_id"]: r["total"] for r in doc["table"]} == {
        "normal": 8,
        "adenoma": 0,
        "adenocarcinoma": 4,
    }
    assert doc["slides"][0]["name"] == entry.id


def test_an_area_too_small_is_one_warning_line_printed_once(slides_dir, tmp_path, capsys):
    """extract yields the warning as a JobWarning: drive_with_bar prints it; the command does not
    print ExtractResult.warnings a second time."""
    path = tmp_path / "A.geojson"
    aset = AnnotationSet([Annotation.rectangle("normal", 300, 400, 1000, 680),
                          Annotation.rectangle("adenoma", 1200, 1500, 40, 40)])  # too small
    save_annotations(aset, path, ClassScheme.paper())
    rc = main(["extract", "--slide", str(slides_dir / "cmu-1-small-region.svs"),
               "--annotations", str(path), "--out", str(tmp_path / "D"), "--random", "0",
               "--min-gland", "0", "--min-tissue", "0", "-q"])
    assert rc == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "Adenoma #1" in ln]
    assert len(lines) == 1 and lines[0].startswith("crc: warning: ")
    doc = json.loads((tmp_path / "D" / "dataset.json").read_text())
    assert any("Adenoma #1" in w for w in doc["warnings"])   # the record keeps it too
