"""The gland filter leaves poorly differentiated adenocarcinoma alone by default (few glands by
definition) and says so; --gland-exempt changes the classes, 'none' filters every class."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from crc_core.classes import ClassScheme
from crc_core.cli import main as crc_main
from crc_core.patches import ExtractConfig


def _feature(x: int, y: int, name: str) -> dict:
    ring = [[x, y], [x + 700, y], [x + 700, y + 700], [x, y + 700], [x, y]]
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"classification": {"name": name}}}


@pytest.fixture
def skin_areas(tmp_path: Path) -> Path:
    """Two areas of the skin slide, one called Normal, one poorly differentiated."""
    ann = tmp_path / "a.geojson"
    features = [_feature(300, 400, "Normal"),
                _feature(300, 1500, "Adenocarcinoma poorly differentiated")]
    ann.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return ann


def _extract(slides_dir: Path, ann: Path, out: Path, *extra: str) -> list[dict[str, str]]:
    rc = crc_main(["extract", "--slide", str(slides_dir / "cmu-1-small-region.svs"),
                   "--annotations", str(ann), "--out", str(out), "--patch-size", "224",
                   "--overlap", "0", "--random", "0", "--min-gland", "0.99",
                   "--test-fraction", "0", "--quiet", *extra])
    assert rc == 0
    return list(csv.DictReader(open(out / "manifest.csv", newline="")))


def test_poorly_differentiated_skips_the_gland_filter_by_default(slides_dir, skin_areas, tmp_path,
                                                                  capsys):
    rows = _extract(slides_dir, skin_areas, tmp_path / "ds")
    labels = {r["label"] for r in rows}
    assert labels == {"adc-poor"}        # Normal (skin) windows are all below 0.99 glands
    assert all(r["gland_fraction"] == "" for r in rows)   # never measured: exempt
    err = capsys.readouterr().err
    assert "gland filter not applied to Adenocarcinoma poorly differentiated" in err


def test_gland_exempt_none_filters_every_class(slides_dir, skin_areas, tmp_path, capsys):
    rc = crc_main(["extract", "--slide", str(slides_dir / "cmu-1-small-region.svs"),
                   "--annotations", str(skin_areas), "--out", str(tmp_path / "ds"),
                   "--patch-size", "224", "--overlap", "0", "--random", "0", "--min-gland", "0.99",
                   "--gland-exempt", "none", "--quiet"])
    assert rc == 2     # nothing passes a 0.99 gland filter on skin: refused with one line
    assert "patch" in capsys.readouterr().err


def test_an_unknown_exempt_class_is_refused(slides_dir, skin_areas, tmp_path, capsys):
    rc = crc_main(["extract", "--slide", str(slides_dir / "cmu-1-small-region.svs"),
                   "--annotations", str(skin_areas), "--out", str(tmp_path / "ds"),
                   "--gland-exempt", "Carcinoid", "--quiet"])
    assert rc == 2
    assert "--gland-exempt: Carcinoid not in the class scheme" in capsys.readouterr().err


def test_the_default_exemption_follows_the_scheme():
    assert ExtractConfig().exempt_ids(ClassScheme.paper()) == ["adc-poor"]
    assert ExtractConfig().exempt_ids(ClassScheme.three_class()) == []
    assert ExtractConfig(gland_exempt=[]).exempt_ids(ClassScheme.paper()) == []
    named = ExtractConfig(gland_exempt=["Adenoma"]).exempt_ids(ClassScheme.paper())
    assert named == ["adenoma"]
