"""Crash safety: SIGKILL at random points during saves, extraction and training, then recover.

Each trial starts a child process that does the work (saving annotations over and over, extracting
a dataset, saving checkpoints, training) and kills it with SIGKILL after a random delay. The test
then checks what a user would meet after the crash: the last good annotations load whole, the
extraction resumes to the same manifest as an uninterrupted run, the last checkpoint loads and
``crc train --resume`` finishes the run. ``make test`` runs a few trials per case; the ``slow``
variants run the full count (``TRIALS_SLOW``).
"""

from __future__ import annotations

import csv
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ebhi_subset import write_subset
from PIL import Image

from crc_core.annotations import read_annotations_bytes
from crc_core.classes import ClassScheme
from crc_core.jobs import run_job
from crc_core.models import load_checkpoint, model_from_checkpoint
from crc_core.patches import ExtractConfig, SlideSource, extract, read_manifest
from crc_core.project import Project
from crc_testkit.synthetic import TissuePattern, write_pyramid_tiff

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parents[2]
TRIALS_FAST = 3
TRIALS_SLOW = 20
SLOW = pytest.mark.slow


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    """A child Python running ``code`` (with ``sys.argv[1:] = args``), stdout piped."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"},
    )


def wait_line(child: subprocess.Popen[str], prefix: str, timeout: float = 120.0) -> str:
    """Block until the child prints a line starting with ``prefix`` (fail if it dies first)."""
    assert child.stdout is not None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([child.stdout], [], [], 0.5)
        if ready:
            line = child.stdout.readline()
            if line.startswith(prefix):
                return line
            if line == "" and child.poll() is not None:
                break
    child.kill()
    _, err = child.communicate()
    raise AssertionError(f"child never printed {prefix!r}: {err[-2000:]}")


def kill(child: subprocess.Popen[str]) -> None:
    """SIGKILL the child (if still running) and reap it."""
    if child.poll() is None:
        os.kill(child.pid, signal.SIGKILL)
    child.communicate(timeout=60)


# ----------------------------------------------------------------------------------- annotations
ANNOTATION_SAVER = """
    import sys
    from crc_core.annotations import Annotation, AnnotationSet
    from crc_core.project import Project

    p = Project.open(sys.argv[1])
    entry = p.slides[0]
    gen = 0
    while True:
        gen += 1
        n = 50 + gen % 200  # every generation has its own count and name
        aset = AnnotationSet(
            Annotation.polygon("normal", [(i * 40 + k % 7, 10 + k * 3) for k in range(30)]
                               + [(i * 40 + 30, 200)], name=f"gen{gen}")
            for i in range(n))
        p.save_annotations(entry, aset)
        print(f"saved {gen}", flush=True)
"""


def _count_for(gen: int) -> int:
    return 50 + gen % 200


@pytest.fixture
def project(tmp_path: Path) -> Project:
    p = Project.create(tmp_path / "proj")
    slide = tmp_path / "proj" / "slides" / "case.svs"
    slide.parent.mkdir()
    slide.write_bytes(os.urandom(256))  # saving annotations never opens the slide
    p.add_slide(slide)
    p.save()
    return p


def _annotation_trial(root: Path, rng: np.random.Generator) -> bool:
    """One kill; True when it cut a save short (its temporary file was left)."""
    child = spawn(ANNOTATION_SAVER, str(root))
    first = int(wait_line(child, "saved").split()[1])
    time.sleep(float(rng.uniform(0.0, 0.6)))
    kill(child)
    p = Project.open(root)
    entry = p.slides[0]
    main = p.annotations_path(entry)
    backup = main.with_name(main.name + ".bak")
    results = [p.load_annotations(entry)]  # what the user gets on reopening
    if backup.exists():  # the previous version, kept whole too
        results.append(read_annotations_bytes(backup.read_bytes(), "geojson", ClassScheme.paper()))
    for res in results:
        names = {a.name for a in res.annotations}
        assert len(names) == 1, names  # one whole generation, never a mixture
        gen = int(next(iter(names))[3:])
        assert gen >= first and len(res.annotations) == _count_for(gen)
    cut = [t for t in main.parent.glob(".*.tmp")]
    for t in cut:
        t.unlink()
    return bool(cut)


@pytest.mark.parametrize("trial", range(TRIALS_FAST))
def test_kill_during_annotation_saves_leaves_the_last_whole_set(project: Project,
                                                                trial: int) -> None:
    _annotation_trial(project.root, np.random.default_rng(trial))


@SLOW
def test_kill_during_annotation_saves_20_trials(project: Project) -> None:
    rng = np.random.default_rng(100)
    cut = sum(_annotation_trial(project.root, rng) for _ in range(TRIALS_SLOW))
    assert cut >= 1  # some kills landed inside a save, not only between saves


# ----------------------------------------------------------------------------------- extraction
EXTRACTOR = """
    import json, sys
    from pathlib import Path
    from crc_core.classes import ClassScheme
    from crc_core.jobs import run_job
    from crc_core.patches import ExtractConfig, SlideSource, extract
    from crc_core.annotations import load_annotations

    slide, geo, out = sys.argv[1:4]
    anns = list(load_annotations(geo, ClassScheme.paper()).annotations)
    cfg = ExtractConfig(**json.loads(sys.argv[4]))
    print("go", flush=True)
    run_job(extract([SlideSource(Path(slide), anns)], out, ClassScheme.paper(), cfg))
    print("done", flush=True)
"""

EXTRACT_CFG = {"patch_size": 128, "overlap": 0.0, "random": 3, "min_tissue": None,
               "min_gland": None, "workers": 2, "seed": 0}


@pytest.fixture(scope="module")
def extraction(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A 2048 x 1536 pyramid, four class areas, and an uninterrupted reference extraction."""
    from crc_core.annotations import Annotation, AnnotationSet, save_annotations

    d = tmp_path_factory.mktemp("extract")
    slide = d / "slide.tif"
    write_pyramid_tiff(slide, 2048, 1536, TissuePattern(seed=4), mpp=0.5)
    aset = AnnotationSet([
        Annotation.rectangle("normal", 0, 0, 1000, 760),
        Annotation.rectangle("adenoma", 1024, 0, 1000, 760),
        Annotation.rectangle("normal", 0, 768, 1000, 760),
        Annotation.rectangle("adenoma", 1024, 768, 1000, 760),
    ])
    geo = d / "areas.geojson"
    save_annotations(aset, geo, ClassScheme.paper())
    t0 = time.monotonic()
    ref = run_job(extract([SlideSource(slide, list(aset))], d / "ref", ClassScheme.paper(),
                          ExtractConfig(**EXTRACT_CFG)))
    return {"slide": slide, "geo": geo, "aset": aset, "ref": ref,
            "seconds": time.monotonic() - t0}


def _extraction_trial(ex: dict[str, object], out: Path, rng: np.random.Generator) -> bool:
    """One kill and resume; True when the kill left an incomplete dataset."""
    child = spawn(EXTRACTOR, str(ex["slide"]), str(ex["geo"]), str(out), json.dumps(EXTRACT_CFG))
    wait_line(child, "go")
    time.sleep(float(rng.uniform(0.0, 1.5 * float(ex["seconds"]))))  # sometimes after the end
    kill(child)
    cut = False
    if (out / "dataset.json").exists():
        cut = json.loads((out / "dataset.json").read_text())["complete"] is False
        if not cut:  # finished before the kill: then the manifest is there
            assert (out / "manifest.csv").exists()
    res = run_job(extract([SlideSource(ex["slide"], list(ex["aset"]))], out,  # type: ignore[arg-type]
                          ClassScheme.paper(), ExtractConfig(**EXTRACT_CFG)))
    ref = ex["ref"]
    assert res.complete
    assert read_manifest(res.manifest) == read_manifest(ref.manifest)  # type: ignore[attr-defined]
    assert json.loads((out / "dataset.json").read_text())["complete"] is True
    listed = {r["path"] for r in read_manifest(res.manifest)}
    on_disk = {str(p.relative_to(out)) for p in out.glob("patches/*/*") if p.is_file()}
    assert on_disk == listed  # no stray or half-written patch left behind
    for rel in sorted(listed)[:: max(1, len(listed) // 10)]:
        with Image.open(out / rel) as im:
            im.load()  # whole JPEG
    return cut


@pytest.mark.parametrize("trial", range(TRIALS_FAST))
def test_kill_during_extraction_then_resume_completes_it(extraction: dict[str, object],
                                                         tmp_path: Path, trial: int) -> None:
    _extraction_trial(extraction, tmp_path / "ds", np.random.default_rng(trial))


@SLOW
def test_kill_during_extraction_20_trials(extraction: dict[str, object], tmp_path: Path) -> None:
    rng = np.random.default_rng(200)
    cut = sum(_extraction_trial(extraction, tmp_path / f"ds{i}", rng) for i in range(TRIALS_SLOW))
    assert cut >= 1  # some kills landed mid-extraction


# ----------------------------------------------------------------------------------- checkpoints
CHECKPOINT_SAVER = """
    import sys
    import torch
    torch.set_num_threads(1)
    from crc_core.classes import ClassScheme
    from crc_core.models import build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model("densenet121", 5)
    epoch = 0
    while True:
        epoch += 1
        with torch.no_grad():
            model.classifier.bias.fill_(float(epoch))  # the epoch is readable from the weights
        save_checkpoint(sys.argv[1], model, arch="densenet121", classes=ClassScheme.paper(),
                        input_size=64, patch_size=128, epoch=epoch)
        print(f"saved {epoch}", flush=True)
"""


def _checkpoint_trial(path: Path, rng: np.random.Generator) -> bool:
    """One kill; True when it cut a save short (its temporary file was left)."""
    child = spawn(CHECKPOINT_SAVER, str(path))
    first = int(wait_line(child, "saved").split()[1])
    time.sleep(float(rng.uniform(0.0, 1.5)))
    kill(child)
    ckpt = load_checkpoint(path, expect_arch="densenet121", expect_classes=5)
    assert ckpt["epoch"] >= first
    model, _ = model_from_checkpoint(ckpt)
    assert float(model.classifier.bias[0].detach()) == ckpt["epoch"]  # weights, metadata: one save
    stray = [p for p in path.parent.iterdir() if p.name != path.name]
    for p in stray:  # at most the temp file of the save that was cut short, never the target
        assert p.name.startswith(f".{path.name}.") and p.name.endswith(".tmp")
        p.unlink()
    return bool(stray)


@pytest.mark.parametrize("trial", range(TRIALS_FAST))
def test_kill_during_checkpoint_saves_leaves_the_last_whole_checkpoint(tmp_path: Path,
                                                                       trial: int) -> None:
    _checkpoint_trial(tmp_path / "last.pt", np.random.default_rng(trial))


@SLOW
def test_kill_during_checkpoint_saves_20_trials(tmp_path: Path) -> None:
    rng = np.random.default_rng(300)
    cut = sum(_checkpoint_trial(tmp_path / "last.pt", rng) for _ in range(TRIALS_SLOW))
    assert cut >= 1  # some kills landed inside a save


# ----------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def tiles_csv(ebhi_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 real EBHI tiles, two classes, at most two per case."""
    return write_subset(ebhi_dir, tmp_path_factory.mktemp("tiles") / "tiles.csv",
                        ["Normal", "Adenocarcinoma"], 8, per_case=2)


EPOCHS = 3
TRAIN_ARGS = ["--label-column", "ebhi_class", "--group-column", "case_id", "--arch",
              "densenet121", "--preset", "quick", "--batch-size", "8", "--image-size", "32",
              "--device", "cpu", "--workers", "0", "--val-fraction", "0.25", "--quiet"]


def _training_trial(data: Path, run: Path, rng: np.random.Generator) -> None:
    from crc_core.cli import main

    child = subprocess.Popen(
        [sys.executable, "-m", "crc_core.cli", "train", "--data", str(data), "--out", str(run),
         "--epochs", str(EPOCHS), *TRAIN_ARGS],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    end = time.monotonic() + 300
    while not (run / "last.pt").exists():  # kill only once there is something to resume
        assert child.poll() is None, child.communicate()[1][-2000:]
        assert time.monotonic() < end
        time.sleep(0.05)
    time.sleep(float(rng.uniform(0.0, 4.0)))
    kill(child)
    before = load_checkpoint(run / "last.pt")["epoch"]
    assert 1 <= before <= EPOCHS
    rc = main(["train", "--data", str(data), "--out", str(run), "--epochs", str(EPOCHS),
               "--resume", *TRAIN_ARGS])
    assert rc == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == EPOCHS
    load_checkpoint(run / "best.pt")
    with open(run / "history.csv", newline="") as fh:
        epochs = [int(r["epoch"]) for r in csv.DictReader(fh)]
    assert epochs == list(range(1, EPOCHS + 1))


def test_kill_during_training_then_resume_finishes_the_run(tiles_csv: Path,
                                                           tmp_path: Path) -> None:
    _training_trial(tiles_csv, tmp_path / "run", np.random.default_rng(0))


@SLOW
def test_kill_during_training_20_trials(tiles_csv: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(400)
    for i in range(TRIALS_SLOW):
        _training_trial(tiles_csv, tmp_path / f"run{i}", rng)
