"""Bad-input corpus: broken, hostile and odd files through the CLI and the core API.

Every file is made by the tests (nothing large is committed): zero-byte, truncated and bit-flipped
slides, a text file with a slide extension, a TIFF claiming enormous dimensions, a PNG
decompression bomb, broken GeoJSON, hostile ASAP XML (XXE, billion laughs), broken and hostile
checkpoints, and broken project folders. For each one the CLI answers with exit code 2 and exactly
one ``crc: error:`` line (no traceback), writes no output and leaves existing files byte for byte;
the core API raises a :class:`~crc_core.errors.CrcError` subclass. Hostile files run no code,
expand no entity and read no file outside the project. ``docs/RELIABILITY.md`` lists the outcomes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from crc_core.annotations import load_annotations
from crc_core.classes import ClassScheme
from crc_core.cli import main
from crc_core.errors import (
    AnnotationError,
    CheckpointError,
    ProjectError,
    SlideError,
)
from crc_core.models import build_model, load_checkpoint, save_checkpoint
from crc_core.project import PROJECT_FILE, Project
from crc_core.slide import open_slide
from crc_testkit.synthetic import TissuePattern, write_pyramid_tiff

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parents[2]
CMU = "cmu-1-small-region.svs"
HOSTNAME = Path("/etc/hostname")


# ----------------------------------------------------------------------------------- helpers
def run_cli(*argv: object) -> tuple[int, str, str]:
    """``crc ARGV`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def run_subprocess(*argv: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crc_core.cli", *map(str, argv)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )


def assert_refused(rc: int, err: str, match: str | None = None) -> str:
    """Exit 2, exactly one ``crc: error:`` line on stderr, no traceback; returns the line."""
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith("crc: error: "), err
    if match is not None:
        assert match.lower() in lines[0].lower(), lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file below ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _flip_bits(src: Path, seed: int, n: int = 40) -> bytes:
    """``src`` with ``n`` random bits flipped in the JPEG data of its first level-0 tile.

    Flips are aimed at the tile data (the directories stay whole, so the file opens) and at the
    first tile (which every command here reads). JPEG has no checksum: some flips still decode,
    to wrong pixels; the seeds used here give flips the decoder detects.
    """
    data = src.read_bytes()
    with tifffile.TiffFile(src) as tf:
        off, cnt = tf.pages[0].dataoffsets[0], tf.pages[0].databytecounts[0]
    rng = np.random.default_rng(seed)
    buf = bytearray(data)
    for i in rng.integers(off + cnt // 4, off + cnt, n):
        buf[int(i)] ^= 1 << int(rng.integers(0, 8))
    return bytes(buf)


def _patch_size_tags(src: Path, width: int, height: int) -> bytes:
    data = bytearray(src.read_bytes())
    with tifffile.TiffFile(src) as tf:
        tags = tf.pages[0].tags
        for code, value in ((256, width), (257, height)):
            tag = tags[code]
            fmt = "<I" if int(tag.dtype) == 4 else "<H"
            struct.pack_into(fmt, data, tag.valueoffset, value)
    return bytes(data)


def _png_bomb(side: int) -> bytes:
    """A valid greyscale PNG of side x side zeros: a few hundred KB that decode to side² bytes."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()

    def chunk(tag: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(tag + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body)
            + chunk(b"IEND", b""))


def _feature(coords: object, cls: object = "Normal") -> dict:
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": coords},
            "properties": {"objectType": "annotation", "classification": {"name": cls}}}


def _collection(*features: dict) -> str:
    return json.dumps({"type": "FeatureCollection", "features": list(features)})


SQUARE = [[[0, 0], [600, 0], [600, 500], [0, 500], [0, 0]]]


class _RunsCode:
    """What a hostile pickle holds: unpickling it calls ``os.system``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Well-formed inputs the bad ones are made from: a pyramid, a GeoJSON area, a checkpoint."""
    d = tmp_path_factory.mktemp("good")
    tif = d / "good.tif"
    write_pyramid_tiff(tif, 1024, 768, TissuePattern(seed=1), mpp=0.5)
    geo = d / "good.geojson"
    geo.write_text(_collection(_feature(SQUARE)))
    ck = d / "good.pt"
    torch.manual_seed(0)
    save_checkpoint(ck, build_model("densenet121", 5), arch="densenet121",
                    classes=ClassScheme.paper(), input_size=64, patch_size=128, level=0, mpp=0.5)
    return {"tif": tif, "geojson": geo, "pt": ck, "dir": d}


@pytest.fixture(scope="module")
def bad_slides(good: dict[str, Path], slides_dir: Path,
               tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad-slides")
    svs = (slides_dir / CMU).read_bytes()
    tif = good["tif"].read_bytes()
    made = {
        "zero-byte.svs": b"",
        "truncated.svs": svs[: len(svs) // 2],
        "bit-flipped.svs": _flip_bits(slides_dir / CMU, seed=0),
        "zero-byte.tif": b"",
        "truncated.tif": tif[: len(tif) // 2],
        "bit-flipped.tif": _flip_bits(good["tif"], seed=0),
        "not-an-image.svs": b"Patient list, do not share\n" * 40,
        "enormous.tif": _patch_size_tags(good["tif"], 3_000_000, 3_000_000),
        "bomb.png": _png_bomb(20_000),  # 400 Mpixel: past Pillow's decompression-bomb limit
    }
    for name, data in made.items():
        (d / name).write_bytes(data)
    return {name: d / name for name in made}


SLIDE_CASES = {
    "zero-byte.svs": "empty",
    "truncated.svs": "truncated",
    "bit-flipped.svs": "corrupt",
    "zero-byte.tif": "empty",
    "truncated.tif": "corrupt",
    "bit-flipped.tif": "corrupt",
    "not-an-image.svs": "not a readable .svs slide",
    "enormous.tif": "",
    "bomb.png": "too large",
}


def read_everything(path: Path) -> None:
    """Open a slide and decode every tile of every level (what prediction would do)."""
    with open_slide(path) as s:
        for level in range(s.level_count):
            cols, rows = s.tile_grid(level, 512)
            for row in range(rows):
                for col in range(cols):
                    s.read_tile(level, col, row, 512)


# ----------------------------------------------------------------------------------- slides
@pytest.mark.parametrize("name", list(SLIDE_CASES))
def test_bad_slide_raises_a_slide_error_from_the_api(bad_slides: dict[str, Path],
                                                     name: str) -> None:
    with pytest.raises(SlideError, match=SLIDE_CASES[name] or None):
        read_everything(bad_slides[name])


@pytest.mark.parametrize("name", list(SLIDE_CASES))
def test_bad_slide_in_crc_info_is_one_line_exit_2(bad_slides: dict[str, Path], name: str) -> None:
    before = bad_slides[name].read_bytes()
    rc, out, err = run_cli("info", bad_slides[name])
    if rc == 0:  # header intact (bit flips in tile data): info reads no pixels, so it may pass
        assert name.startswith("bit-flipped")
        return
    assert_refused(rc, err, SLIDE_CASES[name] or None)
    assert bad_slides[name].read_bytes() == before


@pytest.mark.parametrize("name", list(SLIDE_CASES))
def test_bad_slide_in_crc_predict_writes_nothing_and_keeps_existing_files(
        bad_slides: dict[str, Path], good: dict[str, Path], tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier-result.txt").write_text("keep me\n")
    before = snapshot(out)
    rc, _, err = run_cli("predict", "--checkpoint", good["pt"], "--slide", bad_slides[name],
                         "--out", out, "--device", "cpu", "--workers", "1", "-q")
    assert_refused(rc, err)
    assert snapshot(out) == before


@pytest.mark.parametrize("name", list(SLIDE_CASES))
def test_bad_slide_in_crc_extract_creates_no_dataset(bad_slides: dict[str, Path],
                                                     good: dict[str, Path], tmp_path: Path,
                                                     name: str) -> None:
    rc, _, err = run_cli("extract", "--slide", bad_slides[name], "--annotations",
                         good["geojson"], "--out", tmp_path / "ds", "--patch-size", "128",
                         "--min-gland", "0", "--min-tissue", "0", "--random", "0",
                         "--workers", "1", "-q")
    assert_refused(rc, err)
    assert not (tmp_path / "ds").exists()


def test_slide_damaged_after_some_patches_leaves_an_incomplete_dataset(
        good: dict[str, Path], tmp_path: Path) -> None:
    """Damage met mid-way (a late tile): patches so far stay, marked incomplete, no manifest."""
    src = good["tif"]
    data = bytearray(src.read_bytes())
    with tifffile.TiffFile(src) as tf:
        page = tf.pages[0]
        cols = -(-page.imagewidth // page.tilewidth)
        last = (page.imagelength // page.tilelength - 1) * cols + cols - 1  # bottom-right
        off, cnt = page.dataoffsets[last], page.databytecounts[last]
    data[off + 20: off + cnt] = b"\x00" * (cnt - 20)
    bad = tmp_path / "late-damage.tif"
    bad.write_bytes(bytes(data))
    geo = tmp_path / "all.geojson"
    geo.write_text(_collection(_feature([[[0, 0], [1024, 0], [1024, 768], [0, 768], [0, 0]]])))
    rc, _, err = run_cli("extract", "--slide", bad, "--annotations", geo, "--out", tmp_path / "ds",
                         "--patch-size", "128", "--overlap", "0", "--min-gland", "0",
                         "--min-tissue", "0", "--random", "0", "--workers", "1", "-q")
    assert_refused(rc, err, "corrupt")
    ds = tmp_path / "ds"
    assert json.loads((ds / "dataset.json").read_text())["complete"] is False
    assert not (ds / "manifest.csv").exists()
    assert any(ds.glob("patches/*/*.jpg"))


def test_bad_slide_through_the_installed_command_prints_no_traceback(
        bad_slides: dict[str, Path], good: dict[str, Path], tmp_path: Path) -> None:
    res = run_subprocess("predict", "--checkpoint", good["pt"], "--slide",
                         bad_slides["truncated.svs"], "--out", tmp_path / "o", "--device", "cpu")
    assert_refused(res.returncode, res.stderr, "truncated")
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------------- annotations
def _million_vertices() -> str:
    t = np.linspace(0, 2 * math.pi, 1_000_000, endpoint=False)
    ring = np.stack([5000 + 4000 * np.cos(t), 5000 + 4000 * np.sin(t)], 1).round(2).tolist()
    ring.append(ring[0])
    return _collection(_feature([ring]))


XXE = f"""<?xml version="1.0"?>
<!DOCTYPE ASAP_Annotations [<!ENTITY secret SYSTEM "file://{HOSTNAME}">]>
<ASAP_Annotations><Annotations>
<Annotation Name="&secret;" Type="Polygon" PartOfGroup="Normal"><Coordinates>
<Coordinate Order="0" X="0" Y="0"/><Coordinate Order="1" X="500" Y="0"/>
<Coordinate Order="2" X="500" Y="500"/></Coordinates></Annotation>
</Annotations><AnnotationGroups/></ASAP_Annotations>
"""

LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol">
""" + "".join(
    f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n'
    for i in range(1, 10)
) + """]>
<ASAP_Annotations><Annotations>
<Annotation Name="&lol9;" Type="Polygon" PartOfGroup="Normal"><Coordinates>
<Coordinate Order="0" X="0" Y="0"/><Coordinate Order="1" X="500" Y="0"/>
<Coordinate Order="2" X="500" Y="500"/></Coordinates></Annotation>
</Annotations></ASAP_Annotations>
"""

ANNOTATION_CASES: dict[str, tuple[str, Callable[[], str], str]] = {
    # name -> (file name, content, words the one-line message holds)
    "not-json": ("not-json.geojson", lambda: "Name,Class\nA,Normal\n", "json"),
    "wrong-types": ("wrong-types.geojson",
                    lambda: json.dumps({"type": "FeatureCollection", "features": {"a": 1}}),
                    "features"),
    "nan-coordinates": ("nan.geojson",
                        lambda: _collection(_feature([[[0, 0], [float("nan"), 0], [5, 5],
                                                       [0, 0]]])),
                        "finite"),
    "million-vertices": ("million.geojson", _million_vertices, "500,000"),
    "empty": ("empty.geojson", lambda: "", "empty"),
    "xxe": ("xxe.xml", lambda: XXE, "entit"),
    "billion-laughs": ("laughs.xml", lambda: LAUGHS, "entit"),
}


@pytest.fixture(scope="module")
def bad_annotations(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad-annotations")
    out = {}
    for key, (fname, make, _) in ANNOTATION_CASES.items():
        (d / fname).write_text(make(), encoding="utf-8")
        out[key] = d / fname
    return out


@pytest.mark.parametrize("case", list(ANNOTATION_CASES))
def test_bad_annotation_file_raises_an_annotation_error_from_the_api(
        bad_annotations: dict[str, Path], case: str) -> None:
    scheme = ClassScheme.paper()
    with pytest.raises(AnnotationError) as info:
        load_annotations(bad_annotations[case], scheme)
    assert ANNOTATION_CASES[case][2].lower() in str(info.value).lower()
    assert scheme.names == ClassScheme.paper().names  # nothing half-added to the scheme


@pytest.mark.parametrize("case", list(ANNOTATION_CASES))
def test_bad_annotation_convert_leaves_an_existing_output_untouched(
        bad_annotations: dict[str, Path], good: dict[str, Path], tmp_path: Path,
        case: str) -> None:
    target = tmp_path / "result.xml"
    rc, _, _ = run_cli("annotations", "convert", good["geojson"], target)
    assert rc == 0
    before = target.read_bytes()
    rc, out, err = run_cli("annotations", "convert", bad_annotations[case], target)
    assert_refused(rc, err, ANNOTATION_CASES[case][2])
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.xml"]  # no temp file left


@pytest.mark.parametrize("case", [c for c in ANNOTATION_CASES if c != "million-vertices"])
def test_bad_annotation_in_crc_extract_creates_no_dataset(
        bad_annotations: dict[str, Path], good: dict[str, Path], tmp_path: Path,
        case: str) -> None:
    rc, _, err = run_cli("extract", "--slide", good["tif"], "--annotations",
                         bad_annotations[case], "--out", tmp_path / "ds", "--patch-size", "128",
                         "--min-gland", "0", "--min-tissue", "0", "--workers", "1", "-q")
    assert_refused(rc, err, ANNOTATION_CASES[case][2])
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("case", ["not-json", "xxe", "billion-laughs"])
def test_bad_regions_file_in_crc_predict_writes_nothing(
        bad_annotations: dict[str, Path], good: dict[str, Path], tmp_path: Path,
        case: str) -> None:
    rc, _, err = run_cli("predict", "--checkpoint", good["pt"], "--slide", good["tif"],
                         "--regions", bad_annotations[case], "--out", tmp_path / "o",
                         "--device", "cpu", "-q")
    assert_refused(rc, err)
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not HOSTNAME.is_file() or not HOSTNAME.read_text().strip(),
                    reason="/etc/hostname is needed as the file the XXE points at")
def test_xxe_never_shows_the_file_it_points_at(bad_annotations: dict[str, Path],
                                               tmp_path: Path) -> None:
    secret = HOSTNAME.read_text().strip()
    res = run_subprocess("annotations", "convert", bad_annotations["xxe"], tmp_path / "o.geojson")
    assert_refused(res.returncode, res.stderr)
    assert secret not in res.stdout + res.stderr
    assert not (tmp_path / "o.geojson").exists()
    rc, out, err = run_cli("annotations", "info", bad_annotations["xxe"])
    assert_refused(rc, err)
    assert secret not in out + err


def test_billion_laughs_is_refused_without_expanding(bad_annotations: dict[str, Path]) -> None:
    rc, out, err = run_cli("annotations", "info", bad_annotations["billion-laughs"])
    line = assert_refused(rc, err)
    assert "lollol" not in out + line and len(line) < 500


def test_unknown_classes_are_added_with_a_warning_not_refused(tmp_path: Path) -> None:
    src = tmp_path / "odd.geojson"
    src.write_text(_collection(_feature(SQUARE, "Lymphocytes"), _feature(SQUARE, "Normal")))
    rc, out, err = run_cli("annotations", "convert", src, tmp_path / "o.xml")
    assert rc == 0 and "Traceback" not in err
    assert "crc: warning:" in err and "Lymphocytes" in err
    scheme = ClassScheme.paper()
    res = load_annotations(tmp_path / "o.xml", scheme)
    assert res.added_classes == ["Lymphocytes"] and len(res.annotations) == 2


# ----------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def bad_checkpoints(good: dict[str, Path],
                    tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad-ckpt")
    data = good["pt"].read_bytes()
    (d / "truncated.pt").write_bytes(data[: len(data) // 2])
    (d / "zero-byte.pt").write_bytes(b"")
    (d / "notes.pt").write_text("not weights\n")
    return {"truncated": d / "truncated.pt", "zero-byte": d / "zero-byte.pt",
            "not-a-checkpoint": d / "notes.pt"}


def _hostile_checkpoint(folder: Path) -> tuple[Path, Path]:
    marker = folder / "code-ran"
    evil = folder / "evil.pt"
    torch.save({"format": 1, "kind": "crc-workbench-checkpoint", "arch": "densenet121",
                "classes": ["a", "b"], "model": _RunsCode(str(marker))}, evil)
    return evil, marker


CHECKPOINT_MESSAGES = {"truncated": "truncated", "zero-byte": "empty",
                       "not-a-checkpoint": "not a checkpoint"}


@pytest.mark.parametrize("case", list(CHECKPOINT_MESSAGES))
def test_bad_checkpoint_raises_a_checkpoint_error_from_the_api(
        bad_checkpoints: dict[str, Path], case: str) -> None:
    with pytest.raises(CheckpointError, match=CHECKPOINT_MESSAGES[case]):
        load_checkpoint(bad_checkpoints[case])


@pytest.mark.parametrize("case", list(CHECKPOINT_MESSAGES))
def test_bad_checkpoint_in_crc_predict_writes_nothing(
        bad_checkpoints: dict[str, Path], good: dict[str, Path], tmp_path: Path,
        case: str) -> None:
    rc, _, err = run_cli("predict", "--checkpoint", bad_checkpoints[case], "--slide", good["tif"],
                         "--out", tmp_path / "o", "--device", "cpu", "-q")
    assert_refused(rc, err, CHECKPOINT_MESSAGES[case])
    assert not (tmp_path / "o").exists()


def test_checkpoint_of_another_architecture_is_refused_by_the_api(good: dict[str, Path]) -> None:
    with pytest.raises(CheckpointError, match="densenet121 model, not resnet50"):
        load_checkpoint(good["pt"], expect_arch="resnet50")


def test_checkpoint_of_another_class_count_is_refused_by_the_api(good: dict[str, Path]) -> None:
    with pytest.raises(CheckpointError, match="expected 3"):
        load_checkpoint(good["pt"], expect_classes=3)


def test_resume_from_a_checkpoint_of_another_architecture_leaves_the_run_untouched(
        good: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(good["pt"].read_bytes())
    before = snapshot(run)
    rc, _, err = run_cli("train", "--data", tmp_path / "no-data-needed", "--out", run,
                         "--arch", "resnet50", "--resume", "--device", "cpu", "--quiet")
    assert_refused(rc, err, "densenet121 model, not resnet50")
    assert snapshot(run) == before


def test_hostile_pickle_checkpoint_runs_no_code_through_the_api(tmp_path: Path) -> None:
    evil, marker = _hostile_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="run code"):
        load_checkpoint(evil)
    assert not marker.exists()


@pytest.mark.parametrize("command", ["predict", "evaluate", "train-resume"])
def test_hostile_pickle_checkpoint_runs_no_code_through_the_cli(
        good: dict[str, Path], tmp_path: Path, command: str) -> None:
    evil, marker = _hostile_checkpoint(tmp_path)
    if command == "predict":
        argv = ["predict", "--checkpoint", evil, "--slide", good["tif"], "--out", tmp_path / "o"]
    elif command == "evaluate":
        argv = ["evaluate", "--checkpoint", evil, "--data", good["dir"], "--out", tmp_path / "o"]
    else:
        (tmp_path / "o").mkdir()
        (tmp_path / "o" / "last.pt").write_bytes(evil.read_bytes())
        argv = ["train", "--data", good["dir"], "--out", tmp_path / "o", "--resume",
                "--arch", "densenet121"]
    if command == "predict":  # once through the installed program, the others in-process
        res = run_subprocess(*argv, "--device", "cpu")
        rc, err = res.returncode, res.stderr
    else:
        rc, _, err = run_cli(*argv, "--device", "cpu")
    assert_refused(rc, err, "run code")
    assert not marker.exists()
    if command != "train-resume":
        assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------------- projects
@pytest.fixture
def project(good: dict[str, Path], tmp_path: Path) -> Project:
    p = Project.create(tmp_path / "proj")
    (p.root / "slides").mkdir()
    slide = p.root / "slides" / "case.tif"
    slide.write_bytes(good["tif"].read_bytes())
    entry = p.add_slide(slide)
    p.save()
    (p.annotations_path(entry)).write_bytes(good["geojson"].read_bytes())
    return p


def _edit(root: Path, fn: Callable[[dict], None]) -> None:
    f = root / PROJECT_FILE
    doc = json.loads(f.read_text(encoding="utf-8"))
    fn(doc)
    f.write_text(json.dumps(doc), encoding="utf-8")


PROJECT_CASES: dict[str, tuple[Callable[[dict], None], str]] = {
    "escaping-relative-path": (
        lambda d: d["slides"].append({"id": "evil", "path": "../../../etc/hostname"}),
        "leaves the project folder"),
    "escaping-backslash-path": (
        lambda d: d["slides"].append({"id": "evil", "path": "slides\\..\\..\\x.svs"}),
        "leaves the project folder"),
    "escaping-slide-id": (
        lambda d: d["slides"].append({"id": "../../etc/cron", "path": "a.svs"}),
        "not a plain name"),
    "newer-format": (lambda d: d.update(version=99), "made by a newer CRC Workbench"),
    "wrong-types": (lambda d: d.update(slides={"a": 1}), ""),
}


@pytest.mark.parametrize("case", list(PROJECT_CASES))
def test_bad_project_json_raises_a_project_error_from_the_api(project: Project,
                                                               case: str) -> None:
    edit, words = PROJECT_CASES[case]
    _edit(project.root, edit)
    with pytest.raises(ProjectError, match=words or None):
        Project.open(project.root)


@pytest.mark.parametrize("case", list(PROJECT_CASES))
def test_bad_project_in_crc_extract_is_refused_and_the_project_untouched(
        project: Project, tmp_path: Path, case: str) -> None:
    edit, words = PROJECT_CASES[case]
    _edit(project.root, edit)
    before = snapshot(project.root)
    rc, _, err = run_cli("extract", "--project", project.root, "--out", tmp_path / "ds",
                         "--patch-size", "128", "--min-gland", "0", "--min-tissue", "0",
                         "--workers", "1", "-q")
    assert_refused(rc, err, words or None)
    assert snapshot(project.root) == before
    assert not (tmp_path / "ds").exists()


def test_project_with_only_missing_slides_is_refused_naming_them(project: Project,
                                                                 tmp_path: Path) -> None:
    [entry] = project.slides
    Path(project.slide_path(entry)).unlink()
    before = snapshot(project.root)
    p = Project.open(project.root)  # opening is not fatal: the slide is reported missing
    assert [e.id for e in p.missing_slides()] == [entry.id]
    rc, _, err = run_cli("extract", "--project", project.root, "--out", tmp_path / "ds",
                         "--patch-size", "128", "--min-gland", "0", "--min-tissue", "0", "-q")
    line = assert_refused(rc, err, "no annotated slide can be used")
    assert "'case'" in line and "not found" in line  # the missing slide is named
    assert snapshot(project.root) == before
    assert not (tmp_path / "ds").exists()


def test_escaping_project_path_never_reads_the_outside_file(project: Project,
                                                            tmp_path: Path) -> None:
    outside = tmp_path / "outside-secret.geojson"
    outside.write_text(_collection(_feature(SQUARE, "SECRET-CLASS")))
    _edit(project.root, lambda d: d["slides"].append(
        {"id": "evil", "path": os.path.relpath(outside, project.root)}))
    rc, out, err = run_cli("extract", "--project", project.root, "--out", tmp_path / "ds", "-q")
    assert_refused(rc, err, "leaves the project folder")
    assert "SECRET-CLASS" not in out + err
