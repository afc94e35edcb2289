"""The train-and-evaluate job (crc_core.train_eval): a tiny real run of two architectures, its typed
events, warnings as JobWarning events, failure and cancellation, and the run-folder rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ebhi_subset import write_subset

from crc_core.errors import ConfigError, DatasetError
from crc_core.jobs import JobWarning, Progress, run_job
from crc_core.train_eval import (
    UNITS,
    EpochEnded,
    EvalOptions,
    PhaseEnded,
    PhaseStarted,
    PhaseStep,
    RunPlan,
    run_folders,
    train_and_evaluate,
)
from crc_core.training import make_config

DATA_OPTS = {"label_column": "ebhi_class", "group_column": "case_id"}


def _config(arch: str, **kw):
    base = dict(epochs=2, batch_size=8, image_size=32, device="cpu", data=dict(DATA_OPTS),
                val_fraction=0.25, test_fraction=0.25)
    base.update(kw)
    return make_config(arch, "quick", **base)


@pytest.fixture(scope="module")
def subset(ebhi_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_subset(ebhi_dir, tmp_path_factory.mktemp("te") / "sub.csv",
                        ["Normal", "Adenocarcinoma"], 12, per_case=2)


@pytest.fixture(scope="module")
def two_runs(subset: Path, tmp_path_factory: pytest.TempPathFactory):
    """resnet50 then densenet121, two epochs each, evaluated on their test split (real)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("te-runs")
        plans = [RunPlan(a, out, _config(a)) for a, out in
                 run_folders(str(root / "{arch}"), ["resnet50", "densenet121"])]
        events: list = []
        results = run_job(train_and_evaluate(subset, plans, EvalOptions(device="cpu",
                                                                        batch_size=8)),
                          events.append)
    finally:
        torch.set_num_threads(before)
    return root, events, results


def test_each_architecture_is_trained_then_evaluated_into_its_run_folder(two_runs):
    root, _events, results = two_runs
    assert [r.arch for r in results] == ["resnet50", "densenet121"]
    for r in results:
        assert r.out == root / r.arch
        for name in ("last.pt", "best.pt", "history.csv", "config.json", "split.csv"):
            assert (r.out / name).is_file(), name
        metrics = json.loads((r.out / "eval" / "metrics.json").read_text())
        assert metrics["subset"] == "test" == r.metrics["subset"]
        assert metrics["arch"] == r.arch and r.summary["epochs"] == 2
        assert (r.out / "eval" / "report.html").is_file()
        assert r.comparison is None  # not a fine-tuning run


def test_events_say_their_run_and_phase_in_order(two_runs):
    _root, events, _results = two_runs
    progress = [e for e in events if isinstance(e, Progress)]
    payloads = [e.payload for e in progress]
    starts = [(p.run.arch, p.phase) for p in payloads if isinstance(p, PhaseStarted)]
    ends = [(p.run.arch, p.phase) for p in payloads if isinstance(p, PhaseEnded)]
    expected = [("resnet50", "train"), ("resnet50", "evaluate"), ("densenet121", "train"),
                ("densenet121", "evaluate")]
    assert starts == ends == expected
    assert all(isinstance(p, (PhaseStarted, PhaseStep, EpochEnded, PhaseEnded))
               for p in payloads)
    # fit's history rows are kept for the curves: two per run, with their run
    rows = [(p.run.arch, p.row["epoch"]) for p in payloads if isinstance(p, EpochEnded)]
    assert rows == [("resnet50", 1), ("resnet50", 2), ("densenet121", 1), ("densenet121", 2)]
    first = next(p for p in payloads if isinstance(p, EpochEnded))
    assert {"train_loss", "val_acc", "images_per_s"} <= set(first.row)
    # per-batch steps know the epoch under way (both epochs are seen)
    epochs = {p.epoch for p in payloads if isinstance(p, PhaseStep) and p.phase == "train"
              and p.run.arch == "resnet50" and p.epoch is not None}
    assert epochs == {1, 2}
    # the outer progress counts the whole job and never goes back
    done = [e.done for e in progress]
    assert done == sorted(done) and progress[-1].done == progress[-1].total == 2 * UNITS
    assert {e.total for e in progress} == {None, 2 * UNITS}  # None: a step of unknown size
    train_end = next(p for p in payloads if isinstance(p, PhaseEnded) and p.phase == "train")
    assert train_end.result["best_epoch"] in (1, 2)
    assert train_end.run.held_out == "test" and train_end.run.label == "resnet50 (1 of 2)"


def test_warnings_of_the_phases_are_job_warnings(two_runs):
    _root, events, _results = two_runs
    warnings = [e.message for e in events if isinstance(e, JobWarning)]
    # the CSV of tiles states no pixel size: fit says so once per run
    assert sum("pixel size is unknown" in w for w in warnings) == 2


def _fake_fit(log: list[str], fail: str | None = None, epochs: int = 3):
    def fit(data, out, cfg, resume=False):
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        log.append(f"start {cfg.arch}")
        try:
            yield JobWarning(f"{cfg.arch}: a warning")
            if fail == cfg.arch:
                raise DatasetError(f"{data}: no images of class X")
            for e in range(epochs):
                yield Progress(e * 2 + 1, epochs * 2, "batch")
                yield Progress(e * 2 + 2, epochs * 2, "done",
                               EpochEnded({"epoch": e + 1, "train_loss": 1.0 / (e + 1)}))
            (out / "best.pt").write_bytes(b"x")
            return {"arch": cfg.arch, "best_epoch": epochs}
        finally:
            log.append(f"closed {cfg.arch}")
    return fit


def _fake_evaluate(best, data, out, **kw):
    yield Progress(1, 1, "evaluating")
    return {"subset": "val", "out": str(out)}


def test_a_failure_keeps_the_warnings_before_it_and_stops_the_job(tmp_path: Path):
    log: list[str] = []
    plans = [RunPlan(a, out, _config(a)) for a, out in
             run_folders(str(tmp_path / "{arch}"), ["resnet50", "densenet121"])]
    events: list = []
    job = train_and_evaluate("data.csv", plans, fit_job=_fake_fit(log, fail="densenet121"),
                             evaluate_job=_fake_evaluate)
    with pytest.raises(DatasetError, match="no images of class X"):
        run_job(job, events.append)
    warnings = [e.message for e in events if isinstance(e, JobWarning)]
    assert warnings == ["resnet50: a warning", "densenet121: a warning"]
    assert log == ["start resnet50", "closed resnet50", "start densenet121", "closed densenet121"]


def test_a_warning_said_twice_in_a_phase_is_logged_once(tmp_path: Path):
    """The comparison evaluates the old and the new model on its own test_images.csv (no group
    column): load_table said "no group column" once per model; the job says it once."""
    log: list[str] = []
    said = "test_images.csv: no group column; each image is its own group"

    def compare(old, new, run_dir, device="auto"):
        for side in ("old", "new"):
            yield JobWarning(said)
            yield Progress(0, None, f"scoring the {side} model")
        return {"images": 6}

    cfg = _config("resnet50", init=str(tmp_path / "old.pt"))
    job = train_and_evaluate("data.csv", [RunPlan("resnet50", tmp_path / "r", cfg)],
                             fit_job=_fake_fit(log), evaluate_job=_fake_evaluate,
                             compare_job=compare)
    events: list = []
    run_job(job, events.append)
    warnings = [e.message for e in events if isinstance(e, JobWarning)]
    assert warnings == ["resnet50: a warning", said]


def test_finetune_plans_reads_the_checkpoint_and_says_the_plans(tmp_path: Path):
    from crc_core.classes import ClassScheme
    from crc_core.models import build_model, save_checkpoint
    from crc_core.train_eval import PlansReady, finetune_plans

    ckpt = tmp_path / "old.pt"
    save_checkpoint(ckpt, build_model("resnet50", 2), arch="resnet50",
                    classes=ClassScheme.from_names(["A", "B"]), input_size=64,
                    config={"lr": 1e-3})
    events: list = []
    plans = run_job(finetune_plans([RunPlan("resnet50", tmp_path / "r", _config("resnet50"))],
                                   ckpt), events.append)
    assert plans[0].config.init == str(ckpt.resolve())
    assert plans[0].config.lr == pytest.approx(1e-4) and plans[0].config.image_size == 64
    assert events[-1].payload == PlansReady(tuple(plans))


def test_closing_the_job_cancels_the_phase_under_way(tmp_path: Path):
    log: list[str] = []
    plans = [RunPlan("resnet50", tmp_path / "r", _config("resnet50"))]
    job = train_and_evaluate("data.csv", plans, fit_job=_fake_fit(log),
                             evaluate_job=_fake_evaluate)
    for ev in job:
        if isinstance(ev, Progress) and isinstance(ev.payload, EpochEnded):
            break
    job.close()
    assert log == ["start resnet50", "closed resnet50"]
    assert not (tmp_path / "r" / "best.pt").exists()


def test_run_folders_are_checked_before_anything_trains(tmp_path: Path):
    log: list[str] = []
    (tmp_path / "densenet121").mkdir()
    (tmp_path / "densenet121" / "last.pt").write_bytes(b"x")
    plans = [RunPlan(a, out, _config(a)) for a, out in
             run_folders(str(tmp_path / "{arch}"), ["resnet50", "densenet121"])]
    with pytest.raises(ConfigError, match="already holds a training run"):
        run_job(train_and_evaluate("d.csv", plans, fit_job=_fake_fit(log)))
    assert log == []
    same = [RunPlan(a, tmp_path / "one", _config(a)) for a in ("resnet50", "densenet121")]
    with pytest.raises(ConfigError, match="same run folder"):
        run_job(train_and_evaluate("d.csv", same, fit_job=_fake_fit(log)))
    with pytest.raises(ConfigError, match="at least one architecture"):
        run_job(train_and_evaluate("d.csv", [], fit_job=_fake_fit(log)))


def test_several_architectures_without_arch_in_the_template_get_subfolders(tmp_path: Path):
    assert run_folders(str(tmp_path / "runs-{time}"), ["resnet50", "densenet121"], "T") == [
        ("resnet50", tmp_path / "runs-T" / "resnet50"),
        ("densenet121", tmp_path / "runs-T" / "densenet121")]
    assert run_folders(str(tmp_path / "one"), ["resnet50"], "T") == [("resnet50",
                                                                      tmp_path / "one")]


@pytest.mark.parametrize(("args", "says"), [
    (["--arch", "resnet50,vgg16"], "vgg16: choose from resnet50, densenet121, inception_v3"),
    (["--arch", "resnet50", "--tta"], "--tta applies to --evaluate"),
    (["--arch", "resnet50,densenet121", "--resume"], "--resume continues one run"),
])
def test_crc_train_refuses_bad_architecture_options_in_one_line(args, says, tmp_path: Path,
                                                                 capsys):
    from crc_core.cli import main

    try:
        rc = main(["train", "--data", str(tmp_path / "d.csv"), "--out",
                   str(tmp_path / "{arch}"), "--quiet", *args])
    except SystemExit as exc:  # argparse's refusal of an option value
        rc = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and says in err[0], err
    assert not any(tmp_path.iterdir())
