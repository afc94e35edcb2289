"""One reader of run and evaluation folders (``crc_core.runs``): history.csv, metrics.json,
config.json and predictions.csv read the same for resume, the report, ``crc compare``, the GUI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crc_core import runs
from crc_core.errors import ConfigError, DatasetError

METRICS = {"model": "resnet50", "classes": ["a", "b"], "macro": {"accuracy": 0.5},
           "per_class": {"a": {}, "b": {}}}


def _history(path: Path) -> None:
    runs.write_history(path, [
        {"epoch": 1, "train_loss": 0.9, "train_acc": 0.5, "val_loss": None, "val_acc": None,
         "val_bal_acc": None, "lr": 1e-3, "seconds": 1.25, "images_per_s": 10.0},
        {"epoch": 2, "train_loss": 0.123456789, "train_acc": 0.75, "val_loss": 0.8,
         "val_acc": 0.6, "val_bal_acc": 0.55, "lr": 1e-4, "seconds": 1.0, "images_per_s": 12.0},
    ])


def test_history_round_trip_and_resume_cut(tmp_path: Path):
    path = tmp_path / "history.csv"
    _history(path)
    rows = runs.read_history(path)
    assert [r["epoch"] for r in rows] == [1, 2] and isinstance(rows[0]["epoch"], int)
    assert rows[0]["val_loss"] is None
    assert rows[1]["train_loss"] == pytest.approx(0.123457)     # 6 significant digits
    assert [r["epoch"] for r in runs.read_history(path, upto=1)] == [1]
    assert runs.read_history(tmp_path / "missing.csv") == []
    with open(path, "a") as fh:
        fh.write("three,x,,,,,,,\n")                              # a row that does not parse
    assert len(runs.read_history(path)) == 2


def test_the_report_and_training_read_history_with_the_same_function():
    from crc_core import evaluation
    from crc_core.training import checkpoints

    assert evaluation.read_history is runs.read_history
    assert checkpoints.read_history is runs.read_history


def test_metrics_json_refusals_name_the_file(tmp_path: Path):
    with pytest.raises(DatasetError, match="metrics.json: not found"):
        runs.read_metrics(tmp_path)
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(DatasetError, match="metrics.json: not a readable metrics.json"):
        runs.read_metrics(tmp_path / "metrics.json")
    (tmp_path / "metrics.json").write_text('{"macro": 1}')
    with pytest.raises(DatasetError, match="written by `crc evaluate`"):
        runs.read_metrics(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps(METRICS))
    assert runs.read_metrics(tmp_path)["model"] == "resnet50"


def test_run_config(tmp_path: Path):
    with pytest.raises(ConfigError, match="not a training run folder"):
        runs.read_run_config(tmp_path)
    (tmp_path / "config.json").write_text('{"arch": "densenet121", "data": {}}')
    assert runs.read_run_config(tmp_path)["arch"] == "densenet121"


def test_read_run_folders(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    _history(run / "history.csv")
    (run / "config.json").write_text('{"arch": "densenet121"}')
    plain = runs.read_run(run)                                   # trained, not evaluated
    assert (plain.name, plain.metrics, len(plain.history)) == ("densenet121", None, 2)
    ev = run / "eval"
    ev.mkdir()
    (ev / "metrics.json").write_text(json.dumps(METRICS))
    (ev / "predictions.csv").write_text("path,label,prob_a,prob_b\nx.png,b,0.25,0.75\n")
    for folder in (run, ev, ev / "metrics.json"):
        res = runs.read_run(folder)
        assert (res.name, res.folder, len(res.history)) == ("resnet50", run, 2)
        assert res.y_true.tolist() == [1] and res.probs.tolist() == [[0.25, 0.75]]
    assert runs.run_children(tmp_path) == [run]
    with pytest.raises(DatasetError, match="neither an evaluation folder"):
        runs.read_run(tmp_path)
