"""What a checkpoint trained on a tile list records about its tiles (no training run needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from crc_core.data import load_table
from crc_core.training import uniform_tile_size


def _write_csv(tmp_path: Path, sizes: list[int]) -> Path:
    rows = ["image,label,case"]
    for i, side in enumerate(sizes):
        name = f"t{i}.png"
        Image.fromarray(np.full((side, side, 3), 40 * (i % 5), np.uint8)).save(tmp_path / name)
        rows.append(f"{name},{'AB'[i % 2]},{i}")
    csv = tmp_path / "tiles.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def test_uniform_square_tiles_give_their_side_as_patch_size(tmp_path: Path) -> None:
    table = load_table(_write_csv(tmp_path, [48] * 6), group_column="case")
    assert uniform_tile_size(table) == 48


def test_tiles_of_mixed_sizes_give_no_patch_size(tmp_path: Path) -> None:
    table = load_table(_write_csv(tmp_path, [48, 48, 64, 48, 48, 48]), group_column="case")
    assert uniform_tile_size(table) is None
