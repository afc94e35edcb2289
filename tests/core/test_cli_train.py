"""`crc train` -> `crc evaluate` -> `crc compare` on a small real EBHI subset, and CLI bad input."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from crc_testkit.metrics import metrics_from_predictions

ROOT = Path(__file__).resolve().parents[2]


def crc(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crc_core.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "2"})


@pytest.fixture(scope="module")
def subset_csv(ebhi_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real EBHI tiles copied beside a CSV with relative paths, as a user's manifest would be."""
    root = tmp_path_factory.mktemp("tiles")
    rows = list(csv.DictReader(open(ebhi_dir / "labels.csv")))
    by: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        by[r["ebhi_class"]].append(r)
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "ebhi_class", "case_id"])
        for c in ("Normal", "Low-grade IN", "High-grade IN", "Adenocarcinoma"):
            seen: Counter[str] = Counter()
            for r in by[c]:
                if seen[r["case_id"]] < 2 and sum(seen.values()) < 8:
                    seen[r["case_id"]] += 1
                    dst = root / r["image"]
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    dst.write_bytes((ebhi_dir / r["image"]).read_bytes())
                    w.writerow([r["image"], c, r["case_id"]])
    return root / "labels.csv"


@pytest.fixture(scope="module")
def trained(subset_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "r"
    res = crc("train", "--data", str(subset_csv), "--label-column", "ebhi_class",
              "--group-column", "case_id", "--classes",
              "Normal,Low-grade IN,High-grade IN,Adenocarcinoma", "--map",
              "Low-grade IN=Adenoma,High-grade IN=Adenoma", "--arch", "resnet50", "--preset",
              "quick", "--epochs", "1", "--batch-size", "8", "--image-size", "64",
              "--device", "cpu", "--out", str(run))
    assert res.returncode == 0, res.stderr[-2000:]
    return run


@pytest.fixture(scope="module")
def evaluated(trained: Path, subset_csv: Path) -> Path:
    out = trained.parent / "eval"
    res = crc("evaluate", "--checkpoint", str(trained / "best.pt"), "--data", str(subset_csv),
              "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    return out


def test_train_writes_history_and_checkpoints(trained: Path) -> None:
    assert (trained / "last.pt").is_file() and (trained / "best.pt").is_file()
    rows = list(csv.DictReader(open(trained / "history.csv")))
    assert len(rows) == 1 and float(rows[0]["train_loss"]) > 0
    cfg = json.loads((trained / "config.json").read_text())
    assert cfg["data"]["map"] == {"Low-grade IN": "Adenoma", "High-grade IN": "Adenoma"}


def test_evaluate_writes_metrics_json_in_the_issue_layout(evaluated: Path) -> None:
    m = json.loads((evaluated / "metrics.json").read_text())
    assert isinstance(m["accuracy"], float)
    assert set(m["macro"]) == {"map", "precision", "recall", "specificity", "npv", "auroc"}
    assert set(m["per_class"]) == {"Normal", "Adenoma", "Adenocarcinoma"}
    for v in m["per_class"].values():
        assert set(v) == {"precision", "recall", "specificity", "npv", "ap", "auroc", "support"}
    # Evaluated on the held-out cases of the training data, not on the training images.
    assert m["subset"] == "val" and 0 < m["n"] < 24


def test_predictions_csv_gives_the_same_specificity_and_npv(evaluated: Path) -> None:
    m = json.loads((evaluated / "metrics.json").read_text())
    again = metrics_from_predictions(evaluated / "predictions.csv")
    for name, v in m["per_class"].items():
        assert again["per_class"][name]["specificity"] == pytest.approx(v["specificity"])
        assert again["per_class"][name]["npv"] == pytest.approx(v["npv"])
    header = open(evaluated / "predictions.csv").readline().strip().split(",")
    assert header == ["image", "label", "predicted", "prob_Normal", "prob_Adenoma",
                      "prob_Adenocarcinoma"]


def test_report_is_self_contained_with_plots(evaluated: Path) -> None:
    for f in ("roc.png", "confusion.png", "curves.png", "table3.md", "table4.csv"):
        assert (evaluated / f).stat().st_size > 0
    page = (evaluated / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert not re.search(r'(src|href)="(?!data:)', page)


def test_compare_prints_table3(evaluated: Path, tmp_path: Path) -> None:
    res = crc("compare", str(evaluated), "--out", str(tmp_path / "cmp"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("| Model | mAP | Precision | Recall | Specificity | NPV")


def test_cli_bad_label_column_exits_2_in_one_line(subset_csv: Path, tmp_path: Path) -> None:
    res = crc("train", "--data", str(subset_csv), "--label-column", "grade", "--epochs", "1",
              "--device", "cpu", "--out", str(tmp_path / "r"))
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "'grade'" in res.stderr
    assert not (tmp_path / "r").exists()


def test_cli_truncated_checkpoint_exits_2(trained: Path, subset_csv: Path,
                                          tmp_path: Path) -> None:
    bad = tmp_path / "cut.pt"
    data = (trained / "best.pt").read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    res = crc("evaluate", "--checkpoint", str(bad), "--data", str(subset_csv), "--out",
              str(tmp_path / "ev"))
    assert res.returncode == 2 and "truncated" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "ev").exists()


def test_cli_checkpoint_of_another_class_scheme_is_refused_on_resume(
        trained: Path, subset_csv: Path) -> None:
    before = (trained / "last.pt").read_bytes()
    res = crc("train", "--data", str(subset_csv), "--label-column", "ebhi_class",
              "--group-column", "case_id", "--classes", "Normal,Adenocarcinoma", "--epochs", "2",
              "--device", "cpu", "--resume",
              "--out", str(trained))
    assert res.returncode == 2 and "classes" in res.stderr
    assert (trained / "last.pt").read_bytes() == before


def test_zoom_and_resolution_options_and_bad_ranges_exit_2(tmp_path: Path) -> None:
    from crc_core.cli import build_parser
    from crc_core.commands.train import _augment
    from crc_core.data import Augment

    args = build_parser().parse_args(["train", "--data", "x.csv", "--zoom-range", "0.75,1.5",
                                      "--augment-resolution", "1", "--out", str(tmp_path)])
    aug = _augment(args)
    assert aug["scale_range"] == [0.75, 1.5] and aug["resolution"] == 1
    # Everything else is the preset's (recommended by default), not a reset augmentation.
    rec = Augment.recommended().to_json()
    assert rec["scale_range"] == [0.6, 2.0] and rec["resolution"] == 2
    mine = ("scale_range", "resolution")
    assert {k: v for k, v in aug.items() if k not in mine} == {
        k: v for k, v in rec.items() if k not in mine}
    for bad in ("2,3", "0.5", "0,1.5", "a,b"):
        res = crc("train", "--data", "x.csv", "--zoom-range", bad, "--out", str(tmp_path))
        assert res.returncode == 2 and "--zoom-range" in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) <= 2  # argparse: usage + one line


def test_resume_into_a_time_template_is_refused_in_one_line(tmp_path: Path) -> None:
    res = crc("train", "--data", "x.csv", "--resume", "--out", str(tmp_path / "runs-{time}"))
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "{time}" in lines[0] and "--resume" in lines[0]
