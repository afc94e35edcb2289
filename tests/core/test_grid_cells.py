"""One rule for "which cell is here" (issue 16 item 5): ``GridSpec.cells_at`` (vectorised) agrees
with the cell rectangles point by point, on overlapping and on gapped grids, and the per-axis form
the CLI's overlay images use is the same rule."""

from __future__ import annotations

import numpy as np
import pytest

from crc_core.inference import GridSpec


def _by_rectangles(g: GridSpec, x: float, y: float) -> tuple[int, int] | None:
    """The specification: the cell whose stride-square around its centre holds the point (edge
    cells out to their windows' outer edges), if that cell's window holds it."""
    half = (g.window - g.stride) / 2
    c = min(max(int(np.floor((x - g.origin[0] - half) / g.stride)), 0), g.cols - 1)
    r = min(max(int(np.floor((y - g.origin[1] - half) / g.stride)), 0), g.rows - 1)
    cx, cy, w, h = g.cell_rect(r, c)
    return (r, c) if cx <= x < cx + w and cy <= y < cy + h else None


@pytest.mark.parametrize("stride, window", [(56, 224), (224, 224), (300, 224)])
def test_cells_at_matches_the_cell_rectangles(stride: int, window: int) -> None:
    g = GridSpec(origin=(37, 11), stride=stride, window=window, rows=5, cols=7, level=0,
                 read_size=window, input_size=window)
    rng = np.random.default_rng(0)
    xs = rng.uniform(-300, 37 + 7 * stride + window + 300, 4000)
    ys = rng.uniform(-300, 11 + 5 * stride + window + 300, 4000)
    rows, cols = g.cells_at(xs, ys)
    for x, y, r, c in zip(xs, ys, rows, cols, strict=True):
        want = _by_rectangles(g, float(x), float(y))
        assert (None if r < 0 else (int(r), int(c))) == want
        assert g.cell_at(float(x), float(y)) == want
    assert (rows < 0).any() and (rows >= 0).any()  # both cases were drawn


def test_an_empty_grid_has_no_cell() -> None:
    g = GridSpec(origin=(0, 0), stride=10, window=10, rows=0, cols=0, level=0, read_size=10,
                 input_size=10)
    rows, cols = g.cells_at(np.array([5.0]), np.array([5.0]))
    assert rows[0] == -1 and cols[0] == -1 and g.cell_at(5, 5) is None
