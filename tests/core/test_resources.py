"""Resources: a full disk during extraction, annotation saves and checkpoint saves.

The disk fills up by replacing ``open`` in the writing module with one whose files raise
``OSError(ENOSPC)`` once a byte budget is spent (so the real write, journal, temp-file and rename
code runs), or by failing the ``fsync`` of an atomic save. Each case must give one clear message,
keep what was saved before whole, mark a partial dataset incomplete, and resume once space is
back. CUDA out-of-memory halving is tested by its owners: ``test_training.py::
test_simulated_cuda_oom_halves_the_batch_and_finishes`` and ``test_inference.py::
test_out_of_memory_halves_the_batch_and_finishes``.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import json
import os
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from ebhi_subset import write_subset

import crc_core.annotations as annmod
import crc_core.atomic as atomic
import crc_core.patches as patches
from crc_core.annotations import Annotation, AnnotationSet, load_annotations, save_annotations
from crc_core.classes import ClassScheme
from crc_core.cli import main
from crc_core.errors import ProjectError
from crc_core.models import load_checkpoint
from crc_core.project import Project
from crc_testkit.synthetic import TissuePattern, write_pyramid_tiff

torch.set_num_threads(2)


class Disk:
    """A disk with ``budget`` bytes free for files opened for writing through patched modules."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.refused = 0

    def spend(self, n: int) -> None:
        if n > self.budget:
            self.refused += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.budget -= n

    def open(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = builtins.open(file, mode, *args, **kwargs)
        if not any(c in mode for c in "wax+"):
            return fh
        disk = self

        class Full:  # the real file, except that writes spend the disk's free bytes
            def write(self, data: Any) -> int:
                n = len(data.encode() if isinstance(data, str) else data)
                disk.spend(n)
                return fh.write(data)

            def __getattr__(self, name: str) -> Any:
                return getattr(fh, name)

            def __enter__(self) -> Full:
                return self

            def __exit__(self, *exc: Any) -> None:
                fh.close()

        return Full()


def fill(monkeypatch: pytest.MonkeyPatch, budget: int, *modules: ModuleType) -> Disk:
    disk = Disk(budget)
    for m in modules:
        monkeypatch.setattr(m, "open", disk.open, raising=False)
    return disk


def run_cli(*argv: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def one_error_line(rc: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("crc: error: "), err
    assert "Traceback" not in err
    return lines[0]


# ----------------------------------------------------------------------------------- extraction
@pytest.fixture(scope="module")
def slide_and_areas(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("full")
    slide = d / "slide.tif"
    write_pyramid_tiff(slide, 1536, 1024, TissuePattern(seed=5), mpp=0.5)
    aset = AnnotationSet([Annotation.rectangle("normal", 0, 0, 760, 1000),
                          Annotation.rectangle("adenoma", 768, 0, 760, 1000)])
    geo = d / "areas.geojson"
    save_annotations(aset, geo, ClassScheme.paper())
    return slide, geo


EXTRACT = ["--patch-size", "128", "--overlap", "0", "--random", "2", "--min-gland", "0",
           "--min-tissue", "0", "--workers", "2", "-q"]


def test_disk_full_during_crc_extract_marks_the_dataset_incomplete_and_resume_completes_it(
        slide_and_areas: tuple[Path, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    slide, geo = slide_and_areas
    rc, _, err = run_cli("extract", "--slide", slide, "--annotations", geo, "--out",
                         tmp_path / "ref", *EXTRACT)
    assert rc == 0, err
    ds = tmp_path / "ds"
    with monkeypatch.context() as m:
        disk = fill(m, 40_000, patches.store, atomic)  # room for some of the patches
        rc, _, err = run_cli("extract", "--slide", slide, "--annotations", geo, "--out", ds,
                             *EXTRACT)
        assert disk.refused
    line = one_error_line(rc, err)
    assert "disk full" in line and "resume" in line and str(ds) in line
    assert json.loads((ds / "dataset.json").read_text())["complete"] is False
    assert not (ds / "manifest.csv").exists()
    assert not list(ds.glob("patches/*/.*.tmp"))  # no half-written patch left
    kept_before = len(list(ds.glob("patches/*/*.jpg")))
    assert kept_before > 0
    rc, out, err = run_cli("extract", "--slide", slide, "--annotations", geo, "--out", ds,
                           *EXTRACT)
    assert rc == 0, err
    # Patches the journal recorded before the disk filled are reused; a patch file an in-flight
    # reader thread wrote as the disk filled, without its journal line, is not trusted and is
    # written again (so at most kept_before are reused, and together they make the whole set).
    found = re.search(r"\((\d+) written, (\d+) reused", out)
    assert found, out
    written, reused = map(int, found.groups())
    ref_rows = (tmp_path / "ref" / "manifest.csv").read_text().strip().splitlines()[1:]
    assert 0 < reused <= kept_before and written + reused == len(ref_rows)
    assert (ds / "manifest.csv").read_text() == (tmp_path / "ref" / "manifest.csv").read_text()
    assert json.loads((ds / "dataset.json").read_text())["complete"] is True
    on_disk = {str(q.relative_to(ds)) for q in ds.glob("patches/*/*") if q.is_file()}
    assert len(on_disk) == len(ref_rows)  # no stray file left from the failed run


def test_disk_full_when_writing_the_manifest_keeps_the_dataset_incomplete(
        slide_and_areas: tuple[Path, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    slide, geo = slide_and_areas
    ds = tmp_path / "ds"
    with monkeypatch.context() as m:
        fill(m, 0, atomic)  # patches fit; the atomic manifest/dataset.json writes do not
        rc, _, err = run_cli("extract", "--slide", slide, "--annotations", geo, "--out", ds,
                             *EXTRACT)
    line = one_error_line(rc, err)
    assert "disk full" in line or "No space left" in line
    assert not (ds / "manifest.csv").exists()
    meta = ds / "dataset.json"
    assert not meta.exists() or json.loads(meta.read_text())["complete"] is False
    rc, _, err = run_cli("extract", "--slide", slide, "--annotations", geo, "--out", ds, *EXTRACT)
    assert rc == 0, err and (ds / "manifest.csv").exists()


# ----------------------------------------------------------------------------------- annotations
def _aset(n: int) -> AnnotationSet:
    return AnnotationSet(Annotation.rectangle("normal", 10 * i, 10, 8, 8, name=f"a{i}")
                         for i in range(n))


def test_disk_full_during_annotation_convert_leaves_out_whole(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    src, out = tmp_path / "in.geojson", tmp_path / "out.xml"
    save_annotations(_aset(40), src, ClassScheme.paper())
    save_annotations(_aset(3), out, ClassScheme.paper())
    before = out.read_bytes()
    with monkeypatch.context() as m:
        fill(m, 100, annmod.io, atomic)
        rc, _, err = run_cli("annotations", "convert", src, out)
    line = one_error_line(rc, err)
    assert str(out) in line and os.strerror(errno.ENOSPC) in line
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.geojson", "out.xml"]


def test_disk_full_during_project_save_keeps_the_file_and_its_backup(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = Project.create(tmp_path / "proj")
    slide = tmp_path / "proj" / "case.svs"
    slide.write_bytes(os.urandom(64))
    entry = p.add_slide(slide)
    p.save_annotations(entry, _aset(2))
    p.save_annotations(entry, _aset(3))  # now a .bak with 2 and the file with 3
    path = p.annotations_path(entry)
    bak = path.with_name(path.name + ".bak")
    files = {f: f.read_bytes() for f in (path, bak)}
    with monkeypatch.context() as m:
        m.setattr(atomic.os, "fsync", _enospc)  # full at the fsync of the atomic save
        with pytest.raises(ProjectError, match="No space left on device"):
            p.save_annotations(entry, _aset(9))
    assert {f: f.read_bytes() for f in files} == files
    assert len(load_annotations(path, ClassScheme.paper()).annotations) == 3
    assert not list(path.parent.glob(".*.tmp"))
    assert p.save_annotations(entry, _aset(9))  # space back: the same save works
    assert len(Project.open(p.root).load_annotations(entry).annotations) == 9


def _enospc(fd: int) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _enospc_for_checkpoints(real: Any) -> Any:
    """An ``fsync`` that fails (disk full) for the temporary files of ``.pt`` saves only."""

    def fsync(fd: int) -> None:
        if ".pt." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    return fsync


# ----------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def tiles_csv(ebhi_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 real EBHI tiles, two classes, at most two per case."""
    return write_subset(ebhi_dir, tmp_path_factory.mktemp("tiles") / "tiles.csv",
                        ["Normal", "Adenocarcinoma"], 8, per_case=2)


TRAIN = ["--label-column", "ebhi_class", "--group-column", "case_id", "--arch", "densenet121",
         "--batch-size", "8", "--image-size", "32", "--device", "cpu", "--workers", "0",
         "--val-fraction", "0.25", "--mpp", "1.3", "--quiet"]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name open files")
def test_disk_full_during_a_checkpoint_save_keeps_the_last_one_and_resume_continues(
        tiles_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    rc, _, err = run_cli("train", "--data", tiles_csv, "--out", run, "--epochs", "1", *TRAIN)
    assert rc == 0, err
    before = (run / "last.pt").read_bytes()
    with monkeypatch.context() as m:
        m.setattr(atomic.os, "fsync", _enospc_for_checkpoints(os.fsync))
        rc, _, err = run_cli("train", "--data", tiles_csv, "--out", run, "--epochs", "2",
                             "--resume", *TRAIN)
    line = one_error_line(rc, err)
    assert "No space left on device" in line and ".pt" in line
    assert (run / "last.pt").read_bytes() == before  # epoch 1 checkpoint whole
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    assert not list(run.glob(".*.tmp"))
    rc, _, err = run_cli("train", "--data", tiles_csv, "--out", run, "--epochs", "2",
                         "--resume", *TRAIN)
    assert rc == 0, err
    assert load_checkpoint(run / "last.pt")["epoch"] == 2
