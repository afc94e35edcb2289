"""`crc annotations convert` / `info`: both directions, warnings, clipping, and refusals (exit 2,
OUT untouched)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from crc_core.annotations import load_annotations
from crc_core.classes import ClassScheme
from crc_core.cli import main

BOW_ID = str(uuid.uuid4())
QUPATH = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "id": str(uuid.uuid4()),
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[0, 0], [400, 0], [400, 300], [0, 300], [0, 0]]],
            },
            "properties": {
                "objectType": "annotation",
                "name": "rect",
                "classification": {"name": "Normal", "color": [76, 175, 80]},
            },
        },
        {
            "type": "Feature",
            "id": str(uuid.uuid4()),
            "geometry": {
                "type": "Polygon",
                "coordinates": [
                    [[1000, 1000], [2000, 1000], [2000, 2000], [1000, 2000], [1000, 1000]],
                    [[1200, 1200], [1400, 1200], [1400, 1400], [1200, 1400], [1200, 1200]],
                ],
            },
            "properties": {
                "objectType": "annotation",
                "name": "holed",
                "classification": {"name": "Adénome festonné", "color": [10, 20, 30]},
            },
        },
        {
            "type": "Feature",
            "id": BOW_ID,
            "geometry": {
                "type": "Polygon",
                "coordinates": [
                    [[2100, 2100], [2200, 2200], [2200, 2100], [2100, 2200], [2100, 2100]]
                ],
            },
            "properties": {
                "objectType": "annotation",
                "name": "bowtie",
                "classification": {"name": "Adenoma", "color": [33, 150, 243]},
            },
        },
    ],
}


@pytest.fixture
def src(tmp_path):
    p = tmp_path / "in.geojson"
    p.write_text(json.dumps(QUPATH, ensure_ascii=False), encoding="utf-8")
    return p


def _areas(path):
    scheme = ClassScheme.paper()
    res = load_annotations(path, scheme)  # adds the file's unknown classes to scheme
    return {a.name: (scheme.get(a.class_id).name, round(a.area, 6)) for a in res.annotations}


def test_convert_geojson_to_xml_and_back_keeps_classes_and_areas(src, tmp_path, capsys):
    assert main(["annotations", "convert", str(src), str(tmp_path / "mid.xml")]) == 0
    assert (
        main(["annotations", "convert", str(tmp_path / "mid.xml"), str(tmp_path / "out.geojson")])
        == 0
    )
    assert _areas(tmp_path / "out.geojson") == {
        "rect": ("Normal", 120000.0),
        "holed": ("Adénome festonné", 960000.0),
        "bowtie": ("Adenoma", 5000.0),
    }
    assert "wrote 3 annotations" in capsys.readouterr().out


def test_convert_prints_repairs_as_warning_lines_naming_the_feature(src, tmp_path, capsys):
    main(["annotations", "convert", str(src), str(tmp_path / "out.xml")])
    err = capsys.readouterr().err.splitlines()
    assert any(
        line.startswith("crc: warning:")
        and f"feature #3 (id {BOW_ID}" in line
        and "self-intersection" in line
        for line in err
    )
    assert any(
        line.startswith("crc: warning:") and "'Adénome festonné'" in line and "added" in line
        for line in err
    )


def test_convert_bad_input_exits_2_with_one_line_and_leaves_out_untouched(tmp_path, capsys):
    bad = tmp_path / "bad.geojson"
    bad.write_text(
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": '
        '{"type": "Polygon", "coordinates": [[[0, 0], [1, NaN], [1, 1], [0, 0]]]}}]}'
    )
    out = tmp_path / "out.xml"
    out.write_text("previous content")
    assert main(["annotations", "convert", str(bad), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("crc: error:") and "NaN" in err
    assert out.read_text() == "previous content"


def test_convert_refuses_xxe_without_writing(tmp_path, capsys):
    xxe = tmp_path / "xxe.xml"
    xxe.write_text(
        '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        "<ASAP_Annotations><Annotations/></ASAP_Annotations>"
    )
    assert main(["annotations", "convert", str(xxe), str(tmp_path / "o.geojson")]) == 2
    assert "refused" in capsys.readouterr().err
    assert not (tmp_path / "o.geojson").exists()


def test_convert_refuses_an_unknown_output_extension(src, tmp_path, capsys):
    assert main(["annotations", "convert", str(src), str(tmp_path / "o.csv")]) == 2
    assert "unknown annotation file type '.csv'" in capsys.readouterr().err


def test_convert_skip_invalid_writes_the_rest(tmp_path, capsys):
    doc = json.loads(json.dumps(QUPATH))
    doc["features"][0]["geometry"]["coordinates"] = [[[0, 0], [5, 5], [0, 0]]]
    bad = tmp_path / "in.geojson"
    bad.write_text(json.dumps(doc))
    assert main(["annotations", "convert", str(bad), str(tmp_path / "o.xml")]) == 2
    assert (
        main(["annotations", "convert", str(bad), str(tmp_path / "o.xml"), "--skip-invalid"]) == 0
    )
    assert "wrote 2 annotations to" in capsys.readouterr().out


def test_convert_with_a_scheme_file_and_save_classes(src, tmp_path):
    scheme = ClassScheme.three_class()
    scheme.save(tmp_path / "three.json")
    assert (
        main(
            [
                "annotations",
                "convert",
                str(src),
                str(tmp_path / "o.geojson"),
                "--classes",
                str(tmp_path / "three.json"),
                "--save-classes",
                str(tmp_path / "new.json"),
            ]
        )
        == 0
    )
    saved = ClassScheme.load(tmp_path / "new.json")
    assert saved.names == ["Normal", "Adenoma", "Adenocarcinoma", "Adénome festonné"]


def test_convert_clips_to_a_real_slide(tmp_path, slides_dir, capsys):
    doc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [
                        [[2000, 2800], [2400, 2800], [2400, 3100], [2000, 3100], [2000, 2800]]
                    ],
                },
                "properties": {
                    "objectType": "annotation",
                    "name": "corner",
                    "classification": {"name": "Normal"},
                },
            }
        ],
    }
    src = tmp_path / "in.geojson"
    src.write_text(json.dumps(doc))
    out = tmp_path / "out.geojson"
    assert (
        main(
            [
                "annotations",
                "convert",
                str(src),
                str(out),
                "--slide",
                str(slides_dir / "cmu-1-small-region.svs"),
            ]
        )
        == 0
    )
    [a] = load_annotations(out, ClassScheme.paper()).annotations
    assert a.bounds == (2000, 2800, 2220, 2967)
    assert "clipped to the slide" in capsys.readouterr().err


def test_convert_refuses_a_malformed_slide_size(src, tmp_path, capsys):
    assert (
        main(["annotations", "convert", str(src), str(tmp_path / "o.xml"), "--slide-size", "big"])
        == 2
    )
    assert "--slide-size 'big'" in capsys.readouterr().err


def test_info_prints_counts_and_areas_per_class(src, capsys):
    assert main(["annotations", "info", str(src)]) == 0
    out = capsys.readouterr().out
    assert "3 annotations" in out and "Normal: 1 annotations, 120000 px²" in out


def test_convert_of_garbage_through_the_installed_command_prints_no_traceback(tmp_path):
    bad = tmp_path / "x.xml"
    bad.write_bytes(b"\x00\xff garbage <<<")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "crc_core.cli",
            "annotations",
            "convert",
            str(bad),
            str(tmp_path / "o.geojson"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("crc: error:")
    assert not (tmp_path / "o.geojson").exists()
