"""Patch datasets from annotated areas: sliding-window grid, random windows, filters, split,
writer.

This is Section 3.1 / Fig. 4 of the study made reproducible. For every annotated area (a polygon
and its class) a grid of square windows is laid over the area's bounding box, row by row from the
top left, with stride ``patch_size * (1 - overlap)``; the last row and column sit flush with the
far edge of the box so no strip of the area is skipped. A window is kept when at least
``min_inside`` of it lies inside the polygon. Extra windows at random positions (seeded) obey the
same rule and overlap no kept window (grid or earlier random) by more than ``overlap``, measured as
intersection over union (IoU, the usual overlap measure between two boxes). Two neighbouring grid
windows have an IoU of 0.18 at overlap 0.3, so random windows land off the grid, mostly near the
centres of grid cells (IoU 0.27 with each of the four windows around), and where the grid left gaps
at ragged edges; ``random`` is the number tried per area, fewer are placed when no room is left.
Windows are then filtered by tissue fraction and gland fraction (:mod:`crc_core.tissue`), split
into train and test by area or by slide (stratified by class, seeded, a group never in both),
optionally capped per class, and written to a dataset folder::

    OUT/dataset.json    config, class scheme, slide fingerprints, Table-1 counts, "complete"
    OUT/manifest.csv    path,label,slide,area_id,l0_x,l0_y,level,size,split,
                        gland_fraction,tissue_fraction
    OUT/patches/<class id>/<slide>__<area id>__x<l0_x>_y<l0_y>.jpg|.png
    OUT/.journal.csv    every window processed so far (kept or dropped): what a rerun resumes

Modules: :mod:`~crc_core.patches.plan` (settings, sources, windows, split; pure),
:mod:`~crc_core.patches.store` (the folder: patch files, journal, dataset.json, manifest; the one
full-disk path) and :mod:`~crc_core.patches.job` (:func:`extract`: plan, journal, read / filter /
write pipeline, manifest and split).

Units and frames: geometry and window positions are **level-0 pixels** (``l0_x``, ``l0_y`` are the
window's top-left). At ``level`` L a window covers ``patch_size * downsample(L)`` level-0 pixels
and is read as ``patch_size`` pixels of level L; with a target ``mpp`` the nearest finer level is
read and resampled to ``patch_size``. ``label`` in the manifest is the class **id** of the scheme
stored in dataset.json (label index = position in that scheme). Empty ``gland_fraction`` /
``tissue_fraction`` cells mean the filter was off and the value was not computed.

Threading: windows are read, measured and encoded by a thread pool (OpenSlide, Pillow's codecs and
most of numpy release the GIL); at most ``max_in_flight`` patches are held in memory at once. The
gland model runs batched on the driving thread. :func:`extract` is a generator (see
:mod:`crc_core.jobs`): closing it cancels, leaving a folder marked incomplete that a rerun with the
same settings completes.

Patch format: JPEG quality 95 without chroma subsampling by default. Measured on 20 real 400 px
patches of cmu-1-small-region.svs (benchmarks/RESULTS.md): JPEG q95 4:4:4 is 68 KB, 0.95 ms to
encode, 1.6 ms to decode, PSNR 44.5 dB against the slide pixels (which are themselves JPEG); PNG is
lossless but 133 KB, 7.6 ms to encode (level 1) and 2.7 ms to decode, which would make encoding,
not reading, the bottleneck (a 400 px read costs about 4 ms). ``format="png"`` is there for
bit-exact patches."""

from __future__ import annotations

from crc_core.patches.job import extract
from crc_core.patches.plan import (
    DATASET_FORMAT,
    DEFAULT_GLAND_EXEMPT,
    MANIFEST_COLUMNS,
    TABLE_COLUMNS,
    AreaPlan,
    AreaReport,
    ExtractConfig,
    ExtractResult,
    SlideSource,
    assign_split,
    axis_positions,
    format_table,
    grid_windows,
    inside_fractions,
    plan_area,
    random_windows,
    sources_from_files,
    sources_from_project,
    table_rows,
)
from crc_core.patches.store import read_manifest

__all__ = [
    "DATASET_FORMAT",
    "DEFAULT_GLAND_EXEMPT",
    "MANIFEST_COLUMNS",
    "TABLE_COLUMNS",
    "AreaPlan",
    "AreaReport",
    "ExtractConfig",
    "ExtractResult",
    "SlideSource",
    "assign_split",
    "axis_positions",
    "extract",
    "format_table",
    "grid_windows",
    "inside_fractions",
    "plan_area",
    "random_windows",
    "read_manifest",
    "sources_from_files",
    "sources_from_project",
    "table_rows",
]
