"""`crc-viewer --screenshot` end to end, and the settings file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CRC_VIEWER_HOME=str(home), QT_QPA_PLATFORM="offscreen")
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_screenshot_shows_the_slide(slides_dir, tmp_path, viewer_home):
    out = tmp_path / "v.png"
    r = _run(
        [
            str(slides_dir / "cmu-1-small-region.svs"),
            "--screenshot",
            str(out),
            "--view",
            "1100,1500,0.5",
        ],
        viewer_home,
    )
    assert r.returncode == 0, r.stderr
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert img.shape[:2] == (900, 1400)
    h, w = img.shape[:2]
    centre = img[h // 2 - 100 : h // 2 + 100, w // 2 - 100 : w // 2 + 100]
    assert centre.std() > 20  # tissue, not a flat grey or white
    # H&E: pink/purple (red and blue above green) dominates the tissue area
    assert (centre[..., 0] - centre[..., 1]).mean() > 15


def test_screenshot_of_a_bad_slide_exits_2_with_one_line(tmp_path, viewer_home):
    bad = tmp_path / "bad.svs"
    bad.write_bytes(b"not a slide at all")
    r = _run([str(bad), "--screenshot", str(tmp_path / "x.png")], viewer_home)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("crc-viewer: error:") and "bad.svs" in lines[0]
    assert not (tmp_path / "x.png").exists()


def test_bad_settings_file_does_not_stop_startup(tmp_path):
    p = tmp_path / "settings.json"
    p.write_text('{"recent": 5, "fill_opacity": "high", "brush_radius_px": 33}', encoding="utf-8")
    s = Settings(p)
    assert s.get("recent") == []
    assert s.get("fill_opacity") == 0.25
    assert s.get("brush_radius_px") == 33.0


def test_recent_files_are_remembered(tmp_path):
    f = tmp_path / "a.svs"
    f.write_bytes(b"x")
    s = Settings(tmp_path / "settings.json")
    s.add_recent(f)
    assert Settings(tmp_path / "settings.json").recent == [str(f)]
