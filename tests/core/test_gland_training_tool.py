"""tools/train_gland_model.py: negative windows restricted to a band of rows (cross-fit folds)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tool():
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location(
        "train_gland_model", ROOT / "tools" / "train_gland_model.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_region_argument_is_parsed_and_bad_text_refused(tool):
    argv = ["--negatives-region", "a.svs=0:1200", "--negatives-region", "b.svs=5:9"]
    args = tool.parse_args(argv)
    assert dict(args.negatives_region) == {"a.svs": (0, 1200), "b.svs": (5, 9)}
    for bad in ("a.svs", "a.svs=10:5", "a.svs=x:9"):
        with pytest.raises(argparse.ArgumentTypeError):
            tool._region(bad)


def test_two_folds_take_disjoint_rows_of_a_real_slide(tool, slides_dir):
    pytest.importorskip("openslide")
    path = slides_dir / "cmu-1-small-region.svs"
    if not path.exists():
        pytest.skip(f"{path} not found (see ../shared/data/README.md)")
    folds = {}
    for rows in ((0, 1200), (1200, 100_000)):
        tr, va, info = tool.load_negatives([path], [1.0], 0.0, regions={path.name: rows})
        (rec,) = info["windows"]
        assert rec["rows"] == list(rows) and rec["val"] == 0 and len(va) == 0
        assert len(tr) == rec["train"] > 0 and tr.shape[1:] == (224, 224, 3)
        folds[rows] = rec["train"]
    whole, _, info = tool.load_negatives([path], [1.0], 0.0)
    assert info["windows"][0]["rows"] == "all"
    # Each window lies in one fold, or in neither when it straddles row 1200.
    size = info["windows"][0]["window_px"]
    ys = [y for _, y, _ in tool.gm.slide_tissue_windows(path, size, 0, 0.5)]
    assert len(ys) == len(whole)
    assert folds[(0, 1200)] == sum(y + size <= 1200 for y in ys)
    assert folds[(1200, 100_000)] == sum(y >= 1200 for y in ys)
    assert sum(folds.values()) == len(ys) - sum(y < 1200 < y + size for y in ys)
