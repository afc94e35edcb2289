"""`crc info`: JSON and text output on the real slides; one-line errors and exit 2 on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from crc_core.cli import main

CMU = "cmu-1-small-region.svs"
TCGA = "tcga-cr-7395-01a-01-ts1.svs"
KIDNEY = "kidney-48-5.tif"


def _info_json(capsys: pytest.CaptureFixture[str], path: Path) -> dict:
    assert main(["info", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cmu_json_reports_size_mpp_vendor(
    slides_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    info = _info_json(capsys, slides_dir / CMU)
    assert (info["width"], info["height"]) == (2220, 2967)
    assert info["mpp"] == pytest.approx(0.499)
    assert info["vendor"] == "aperio"
    assert info["objective_power"] == 20
    assert [a["name"] for a in info["associated_images"]] == ["label", "macro", "thumbnail"]


def test_tcga_json_reports_null_mpp_and_two_levels(
    slides_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    info = _info_json(capsys, slides_dir / TCGA)
    assert info["mpp"] is None and info["mpp_x"] is None
    assert info["objective_power"] is None
    assert [(lv["width"], lv["height"]) for lv in info["levels"]] == [(4443, 3567), (2221, 1783)]
    assert info["levels"][1]["downsample"] == pytest.approx(2.0, abs=0.01)


def test_kidney_json_says_pillow_backend(
    slides_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    info = _info_json(capsys, slides_dir / KIDNEY)
    assert info["backend"] == "pillow"
    assert (info["width"], info["height"]) == (1493, 901)


def test_text_output_lists_levels_and_mpp(
    slides_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["info", str(slides_dir / TCGA)]) == 0
    out = capsys.readouterr().out
    assert "level 1: 2221 x 1783 px" in out
    assert "mpp:              none" in out
    assert "thumbnail: 956 x 768 px" in out


def test_properties_flag_lists_file_properties(
    slides_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    info = json.loads(
        (main(["info", str(slides_dir / CMU), "--json", "--properties"]), capsys.readouterr().out)[
            1
        ]
    )
    assert info["properties"]["aperio.AppMag"] == "20"


def test_pyramid_reports_all_levels(pyramid_tiff: Path, capsys: pytest.CaptureFixture[str]) -> None:
    info = _info_json(capsys, pyramid_tiff)
    assert info["vendor"] == "generic-tiff" and info["mpp"] == pytest.approx(0.5)
    assert info["level_count"] == len(info["levels"]) >= 4


def _one_error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == ""
    assert len(lines) == 1 and lines[0].startswith("crc: error: ")
    return lines[0]


def test_zero_byte_svs_gives_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty.svs").write_bytes(b"")
    assert "empty" in _one_error_line(capsys, ["info", str(tmp_path / "empty.svs")])


def test_truncated_svs_gives_one_line_and_exit_2(
    slides_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cut.svs").write_bytes((slides_dir / CMU).read_bytes()[:1_500_000])
    assert "truncated" in _one_error_line(capsys, ["info", str(tmp_path / "cut.svs"), "--json"])


def test_missing_file_gives_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "not found" in _one_error_line(capsys, ["info", str(tmp_path / "nope.svs")])


def test_crc_info_runs_as_a_program(slides_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "crc_core.cli", "info", str(slides_dir / CMU), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["vendor"] == "aperio" and info["mpp"] == pytest.approx(0.499)
