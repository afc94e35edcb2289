"""The data phase of a run: the table and its split, the split record, the scale, the stain
normaliser, the decoded batches and class balance."""

from __future__ import annotations

import os
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from crc_core.atomic import atomic_write_text
from crc_core.batches import Batches, class_weights
from crc_core.data import Augment, TileTable, choose_cache, load_table
from crc_core.errors import CheckpointError, DatasetError
from crc_core.image_scale import StatedScale
from crc_core.jobs import Progress
from crc_core.models import get_spec
from crc_core.splits import Split, SplitRecord, content_keys, split_by_group, split_csv
from crc_core.stain import fit_from_table, from_checkpoint_file
from crc_core.training.config import AUTO_BALANCE_RATIO, TrainConfig
from crc_core.training.state import TrainingRun


def uniform_tile_size(table: TileTable, probe: int = 64) -> int | None:
    """The common side of square tiles in a CSV manifest (read from image headers), else ``None``.

    A checkpoint trained on a tile list records it as its ``patch_size``, so prediction on a slide
    cuts windows of the size the tiles had (an EBHI tile is 224 px even when trained at 112 px).
    """
    from PIL import Image

    sizes = set()
    for sample in table.samples[:probe]:
        try:
            with Image.open(sample.path) as im:
                sizes.add(im.size)
        except OSError:
            continue
        if len(sizes) > 1:
            return None
    if len(sizes) == 1:
        w, h = sizes.pop()
        if w == h:
            return int(w)
    return None


def load_data(cfg: TrainConfig, data: str | Path | TileTable, ckpt: dict[str, Any] | None,
              out: Path, warn: Callable[[str], None]) -> tuple[TileTable, Split]:
    table = data if isinstance(data, TileTable) else load_table(
        data, image_column=cfg.data.get("image_column"),
        label_column=cfg.data.get("label_column"), group_column=cfg.data.get("group_column"),
        split_column=cfg.data.get("split_column"), classes=cfg.data.get("classes"),
        mapping=cfg.data.get("map"), group_pattern=cfg.data.get("group_pattern"), warn=warn)
    # What was actually used: resolved column names, parsed --classes list and --map dict.
    cfg.data = {**{k: v for k, v in cfg.data.items() if v is not None}, **table.options,
                "source": str(table.source.resolve())}
    if ckpt is not None:
        ck_names = ckpt["scheme"].names
        if [n.casefold() for n in ck_names] != [n.casefold() for n in table.scheme.names]:
            raise CheckpointError(f"{out / 'last.pt'} was trained on classes "
                                  f"{', '.join(ck_names)}; this data has "
                                  f"{', '.join(table.scheme.names)}")
    elif cfg.init:  # fine-tuning: the checkpoint's classes in its order, else one clear refusal
        from crc_core.finetune import match_checkpoint_classes

        table = match_checkpoint_classes(table, cfg.init)
    split = split_by_group(table, cfg.val_fraction, data_seed(cfg), warn=warn,
                           test_fraction=cfg.test_fraction)
    if not split.val:
        warn("no validation set (" + "; ".join(split.notes) + "): best.pt is the last epoch, "
             "not the best training score")
    return table, split


def record_split(run: TrainingRun) -> Generator[Progress, None, dict[str, Any]]:
    """Content keys of every split image; split.csv in the run folder; the checkpoint's record."""
    idx = sorted(set(run.split.train) | set(run.split.val) | set(run.split.test))
    keys_part = yield from content_keys(run.table, idx)
    keys: list[str | None] = [None] * len(run.table)
    for i, k in zip(idx, keys_part, strict=True):
        keys[i] = k
    if run.info.main:
        run.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.out / "split.csv", split_csv(run.table, keys, run.split))
    return SplitRecord.of(keys, run.split).to_json()


def data_seed(cfg: TrainConfig) -> int:
    """The seed of the data side of a run (its split and stain reference): ``--split-seed``, else
    ``--seed``. Runs with one split seed and different seeds are replicates on the same split."""
    return cfg.seed if cfg.split_seed is None else int(cfg.split_seed)


def scale_of(given: float | None, table: TileTable, warn: Callable[[str], None],
             stated: StatedScale | None = None) -> tuple[float | None, str]:
    """The µm/px the patches are at (the dataset's, else ``given`` (``--mpp``, the Train dialog's
    Pixel size), else the one every image states in its resolution tags: ``stated``), and where
    it came from. Also what the Train dialog's data summary says."""
    tagged = stated.mpp if stated is not None else None
    if stated is not None and stated.problem:
        warn(stated.problem)
    if table.mpp is not None:
        if given is not None and abs(given - table.mpp) > 1e-6:
            warn(f"the pixel size given ({given:g}) is ignored: the dataset states "
                 f"{table.mpp:g} µm/px")
        return table.mpp, "dataset"
    if given is not None:
        if stated is not None and (said := stated.overridden_by(given)):
            warn(said)
        return float(given), "given (--mpp)"
    if tagged is not None:
        assert stated is not None
        return tagged, stated.source
    warn("the images' pixel size is unknown: the model records its scale as unknown, so prediction "
         "on slides cannot cut windows at the trained scale; give the tiles' µm per pixel (--mpp, "
         "or Pixel size in the Train dialog)")
    return None, "unknown"


def prepare_batches(run: TrainingRun) -> Generator[Progress, None, None]:
    cfg, table, split, spec = run.cfg, run.table, run.split, get_spec(run.cfg.arch)
    size = cfg.image_size
    if size is None:
        size = table.patch_size if (table.patch_size or 0) >= spec.min_input_size \
            else spec.input_size
        cfg.image_size = size
    run.size = size
    train_size = _train_size(run)
    yield from _fit_stain(run)
    factor = (train_size / size) ** 2
    run.cache = choose_cache(round(len(split.train) * factor) + len(split.val), size, run.device,
                             cfg.cache)
    workers = cfg.workers if cfg.workers >= 0 else (
        0 if run.cache != "none" else min(8, max(1, (os.cpu_count() or 2) - 1)))
    run.train_b = Batches(table, split.train, train_size, run.device, run.cache, workers,
                          run.stain)
    run.val_b = Batches(table, split.val, size, run.device, run.cache, workers, run.stain)
    n_all = len(split.train) + len(split.val)
    yield Progress(0, None, f"decoding {n_all} images ({run.cache} cache)")
    for ev in (*run.train_b.prepare(), *run.val_b.prepare()):
        yield Progress(ev.done, None, f"decoding images {int(ev.done)}/{int(ev.total or 0)}")
    run.skipped = run.train_b.skipped + run.val_b.skipped
    if run.stain is not None and run.stain.passed_through:
        run.warn(run.stain.statement("images"))
    if run.skipped:
        run.warn(f"{len(run.skipped)} unreadable image(s) skipped, e.g. {run.skipped[0][0]} "
                 f"({run.skipped[0][1]})")
    if len(run.train_b) < 2:
        raise DatasetError(f"{table.source}: fewer than two readable training images")
    present = set(run.train_b.labels_list())
    if len(present) < 2:
        raise DatasetError(f"{table.source}: the training split holds a single class "
                           f"({table.scheme.names[next(iter(present))]}); training needs two")
    missing = [n for i, n in enumerate(table.scheme.names) if i not in present]
    if missing:
        run.warn(f"no training images of class(es) {', '.join(missing)}")


def _train_size(run: TrainingRun) -> int:
    """The training images' decoded side: the input size times the augmentation's
    ``resolution`` when the files have that many pixels (judged by the dataset's patch size, else
    the first training image), else the input size, with a note in config.json either way."""
    cfg, size = run.cfg, run.size
    res = Augment.from_json(cfg.augment).resolution if cfg.augment else 1
    if res <= 1:
        return size
    native = run.table.patch_size
    if not native and run.split.train:
        from PIL import Image

        try:
            with Image.open(run.table.samples[run.split.train[0]].path) as im:
                native = min(im.size)
        except OSError:
            native = None
    if not native or native < size * res:
        cfg.notes.append(f"augmentation at the input size ({size} px): the images "
                         f"({native or 'unknown'} px) have fewer than {res}x its pixels")
        return size
    cfg.notes.append(f"training images decoded at {size * res} px, augmented there (zoom "
                     f"magnifies real detail) and area-averaged to the {size} px input")
    return size * res


def _fit_stain(run: TrainingRun) -> Generator[Progress, None, None]:
    """The stain normaliser: the resumed checkpoint's, else ``cfg.stain_from``'s (fine-tuning),
    else fitted on training tiles (seeded)."""
    cfg = run.cfg
    if run.stain is None and cfg.stain_from:  # fine-tuning: the model's normaliser, as fitted
        run.stain = from_checkpoint_file(cfg.stain_from)
        if run.stain is not None:
            run.stain.kept_from = Path(cfg.stain_from).name
    if run.stain is None and cfg.stain_norm != "none":
        run.stain = yield from fit_from_table(run.table, run.split.train, cfg.stain_norm, run.size,
                                              cfg.stain_tiles, data_seed(cfg))
    if run.stain is not None:
        cfg.notes.append(run.stain.describe() + ", applied when images are decoded")


def resolve_balance(run: TrainingRun) -> None:
    """``auto`` -> balanced sampling when the largest class has >= 3x the smallest's images."""
    cfg = run.cfg
    assert run.train_b is not None
    counts = run.table.counts(run.train_b.indices)
    if cfg.balance == "auto":
        sizes = [v for v in counts.values() if v > 0]
        ratio = max(sizes) / min(sizes)
        cfg.balance = "sampler" if ratio >= AUTO_BALANCE_RATIO else "none"
        cfg.notes.append(f"balance auto -> {cfg.balance} (largest/smallest class {ratio:.1f}x)")
    if cfg.balance == "loss":
        run.loss_weight = class_weights(run.train_b.labels_list(),
                                        len(run.table.scheme)).to(run.device)
    if cfg.balance != "none":
        run.warn(f"class balance by {cfg.balance}: training counts "
                 + ", ".join(f"{k} {v}" for k, v in counts.items()))


