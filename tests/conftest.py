"""Shared test fixtures: real data location, headless Qt, small torch thread pools."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_NUM_THREADS", "2")

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CRC_SHARED_DATA", ROOT.parent / "shared" / "data"))
SLIDES = DATA / "slides"
EBHI = DATA / "ebhi"


@pytest.fixture(scope="session")
def slides_dir() -> Path:
    if not (SLIDES / "cmu-1-small-region.svs").exists():
        pytest.skip(f"real slides not found in {SLIDES} (see ../shared/data/README.md)")
    return SLIDES


@pytest.fixture(scope="session")
def ebhi_dir() -> Path:
    if not (EBHI / "labels.csv").exists():
        pytest.skip(f"EBHI tiles not found in {EBHI} (see ../shared/data/README.md)")
    return EBHI
