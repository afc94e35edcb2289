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


@pytest.fixture(scope="session", autouse=True)
def _onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exported ONNX models go to a per-session folder, never the user's cache."""
    folder = tmp_path_factory.mktemp("crc-cache")
    os.environ["CRC_CACHE_DIR"] = str(folder)
    return folder


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


# Synthetic pyramid shared by slide, viewer and prediction tests: written once per session from a
# procedural tile source (crc_testkit.synthetic.TissuePattern), never held whole in memory.
PYRAMID_SIZE = (20480, 4096)  # (w, h) level 0; >= 20,000 px on a side
PYRAMID_SEED = 3
PYRAMID_MPP = 0.5


@pytest.fixture(scope="session")
def pyramid_factory(tmp_path_factory: pytest.TempPathFactory):
    """Write (cached per session) tiled JPEG pyramidal TIFFs: ``factory(w, h, **kwargs) -> Path``.

    kwargs go to :func:`crc_testkit.synthetic.write_pyramid_tiff`; ``seed`` picks the TissuePattern.
    """
    from crc_testkit.synthetic import TissuePattern, write_pyramid_tiff

    folder = tmp_path_factory.mktemp("pyramids")
    made: dict[tuple, Path] = {}

    def factory(width: int, height: int, seed: int = 0, **kwargs) -> Path:
        key = (width, height, seed, tuple(sorted(kwargs.items())))
        if key not in made:
            path = folder / f"pyramid-{len(made)}-{width}x{height}.tif"
            write_pyramid_tiff(path, width, height, TissuePattern(seed=seed), **kwargs)
            made[key] = path
        return made[key]

    return factory


@pytest.fixture(scope="session")
def pyramid_spec() -> dict:
    """How ``pyramid_tiff`` was made: ``size`` (w, h), ``seed`` of the TissuePattern, ``mpp``."""
    return {"size": PYRAMID_SIZE, "seed": PYRAMID_SEED, "mpp": PYRAMID_MPP}


@pytest.fixture(scope="session")
def pyramid_tiff(pyramid_factory) -> Path:
    """A 20480 x 4096 px, 8-level tiled JPEG pyramidal TIFF (mpp 0.5, TissuePattern(seed=3))."""
    return pyramid_factory(*PYRAMID_SIZE, seed=PYRAMID_SEED, mpp=PYRAMID_MPP)
