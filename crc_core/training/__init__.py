"""Training: presets, the ``fit`` job generator, per-epoch checkpoints, resume, DDP (torchrun).

``fit`` follows torchvision's ``references/classification/train.py``: one pass over the training set
per epoch, validation under ``torch.inference_mode()``, a checkpoint dict holding everything needed
to resume and to predict. Images are decoded once into a uint8 tensor cache (on the GPU when it
fits) and augmented batch-wise on the training device (:class:`crc_core.data.Augment`); when the
cache would not fit, a DataLoader with workers streams them. On CUDA: bf16 autocast, channels_last,
cuDNN benchmark, optional ``torch.compile``. Under ``torchrun`` every process trains its shard
(DistributedSampler) inside DistributedDataParallel (nccl on GPUs, gloo on the CPU); ``batch_size``
is the global batch, split between processes; only rank 0 writes files.

Outputs in the run folder: ``last.pt`` (every epoch, atomic, with optimizer state), ``best.pt``
(best validation score, ties broken by lower validation loss; the last epoch when there is no
validation set, never the best training score; no optimizer state), ``history.csv`` (epoch,
train/val loss and accuracy, learning rate, seconds, images/s), ``config.json`` (every option and
``notes`` on what the run decided), ``split.csv`` (every image's content key and split) and
``summary.json``. Checkpoints record the split by content (:class:`crc_core.splits.SplitRecord`), so
``crc evaluate`` recognises the test images wherever the dataset is moved. CUDA out of memory
halves the micro-batch (gradients are accumulated, so the effective batch is unchanged) and retries
the batch.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from crc_core.atomic import atomic_write_text
from crc_core.batches import Batches, balanced_order, class_weights, epoch_order
from crc_core.data import Augment, TileTable, choose_cache, load_table, normalize
from crc_core.distributed import DistInfo, NoSync, all_sum, barrier, init_distributed
from crc_core.errors import CheckpointError, ConfigError, CrcError, DatasetError
from crc_core.jobs import Progress
from crc_core.models import (
    build_model,
    get_spec,
    load_checkpoint,
    main_logits,
    save_checkpoint,
    uses_aux,
)
from crc_core.preprocess import RESAMPLING
from crc_core.runtime import is_oom, resolve_device
from crc_core.splits import Split, SplitRecord, content_keys, split_by_group, split_csv
from crc_core.stain import METHODS as STAIN_METHODS
from crc_core.stain import StainNormalizer, fit_from_table, from_checkpoint

__all__ = [
    "BALANCE_MODES", "BEST_METRICS", "PRESETS", "DistInfo", "TrainConfig", "balanced_order",
    "class_weights", "compute_loss", "fit", "lr_at", "make_config", "make_optimizer",
    "resolve_device", "uniform_tile_size", "validate_config",
]

NO_AUGMENT: dict[str, Any] = {"flip": False, "rot90": False, "color": 0.0, "hed": 0.0}

PRESETS: dict[str, dict[str, Any]] = {
    # Kim, Koh, Lee 2021, section 3.2, exactly: batch 32, 200 epochs, lr 1e-3 lowered tenfold
    # after epochs 80, 120, 160 and 180; Adam (ResNet50, DenseNet121), RMSprop with label
    # smoothing (InceptionV3); no augmentation, no class balancing, best.pt by validation
    # accuracy; the network sees the dataset's patches (400 px in the study) at their own size.
    "paper": {"epochs": 200, "batch_size": 32, "lr": 1e-3, "milestones": [80, 120, 160, 180],
              "gamma": 0.1, "schedule": "step", "augment": NO_AUGMENT, "balance": "none",
              "best_metric": "acc"},
    # The strongest recipe measured on the CPU (benchmarks/RESULTS.md, "recommended preset"):
    # balanced sampling when the largest class has >= 3x the smallest's images, best.pt by
    # validation balanced accuracy, a cosine-decaying rate, flips, rotations, colour, stain and
    # scale augmentation.
    "recommended": {"epochs": 30, "batch_size": 32, "lr": 1e-3, "milestones": [],
                    "gamma": 0.1, "schedule": "cosine", "balance": "auto",
                    "best_metric": "balanced_acc", "optimizer": "adamw", "weight_decay": 0.01,
                    "augment": Augment.recommended().to_json()},
    # A few epochs at a constant rate: for trying things.
    "quick": {"epochs": 5, "batch_size": 16, "lr": 1e-3, "milestones": [], "gamma": 0.1,
              "schedule": "step"},
}
DEFAULT_PRESET = "recommended"
#: One line per preset for help texts and tooltips.
PRESET_HELP: dict[str, str] = {
    "recommended": "the strongest recipe measured on the CPU: 30 epochs, AdamW with a cosine "
                   "rate, balanced sampling when classes are >= 3x apart, best.pt by validation "
                   "balanced accuracy, flips/rotations/colour/stain/scale augmentation",
    "paper": "the study exactly: 200 epochs, batch 32, lr 1e-3 lowered tenfold after epochs 80, "
             "120, 160, 180, no augmentation, no balancing, best.pt by validation accuracy",
    "quick": "5 epochs, batch 16, constant rate: for trying things",
}
#: Balanced sampling under ``balance="auto"`` when the largest class has this many times the
#: images of the smallest.
AUTO_BALANCE_RATIO = 3.0

HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_bal_acc", "lr",
                   "seconds", "images_per_s"]

BALANCE_MODES = ("auto", "none", "loss", "sampler")
SCHEDULES = ("step", "cosine")
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
BEST_METRICS = ("acc", "balanced_acc")


@dataclass
class TrainConfig:
    """Every training option; presets fill the schedule, any field can be overridden."""

    arch: str = "resnet50"
    preset: str = "quick"
    epochs: int = 5
    batch_size: int = 16
    lr: float = 1e-3
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    schedule: str = "step"            # step (milestones x gamma) | cosine (to 0 at the last epoch)
    optimizer: str = "adam"           # adam | adamw | rmsprop | sgd
    label_smoothing: float = 0.0
    aux_weight: float = 0.4           # InceptionV3 auxiliary loss weight (torchvision's reference)
    weight_decay: float = 0.0
    image_size: int | None = None     # None: the dataset's patch size, else the model's native size
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    weights: str | None = None        # None | imagenet | path
    init: str | None = None           # fine-tuning from this checkpoint (crc_core.finetune)
    seed: int = 0
    val_fraction: float = 0.2
    test_fraction: float = 0.0        # groups kept out of training and of model selection
    workers: int = -1                 # DataLoader workers when streaming; -1 = automatic
    compile: bool = False
    cache: str = "auto"               # auto | gpu | cpu | none
    amp: bool = True                  # bf16 autocast on CUDA
    half_checkpoint: bool = False     # best.pt weights in float16 (compact release checkpoints)
    # Class imbalance: "loss" weighs each class by n / (K * n_c) in the cross-entropy; "sampler"
    # draws each epoch's images with replacement, every class equally likely. "none" = the paper;
    # "auto" = "sampler" when the largest class has >= AUTO_BALANCE_RATIO x the smallest's images.
    balance: str = "none"
    mpp: float | None = None          # µm/px of tiles whose dataset does not state it (--mpp)
    stain_norm: str = "none"          # none | macenko | reinhard (crc_core.stain), fitted on
    stain_tiles: int = 64             # up to this many training tiles (seeded)
    best_metric: str = "acc"          # acc | balanced_acc (mean per-class recall) picks best.pt
    save_every: int = 1               # last.pt every N epochs (and after the last); best.pt always
    # Exponential moving average of the weights (decay per optimizer step; 0 = off): validation,
    # best.pt and the report use the averaged weights, last.pt keeps both for resume.
    ema: float = 0.0
    augment: dict[str, Any] = field(default_factory=lambda: Augment().to_json())
    # image/label/group/split columns, classes, map, source
    data: dict[str, Any] = field(default_factory=dict)
    # What the run decided and the user should know (validation, balance auto): config.json.
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def make_config(arch: str = "resnet50", preset: str = "quick", **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` from a preset; ``overrides`` with value ``None`` are ignored.

    The optimizer and label smoothing follow the paper per architecture unless overridden.
    """
    get_spec(arch)
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values: dict[str, Any] = {"optimizer": "rmsprop" if arch == "inception_v3" else "adam",
                              "label_smoothing": 0.1 if arch == "inception_v3" else 0.0}
    values.update(json.loads(json.dumps(PRESETS[preset])))
    values.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in fields(TrainConfig)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    cfg = TrainConfig(arch=arch, preset=preset, **values)
    validate_config(cfg)
    return cfg


def validate_config(cfg: TrainConfig) -> None:
    """Raise :class:`ConfigError` naming the first option out of range."""
    get_spec(cfg.arch)
    if not isinstance(cfg.epochs, int) or cfg.epochs < 1:
        raise ConfigError(f"--epochs {cfg.epochs} must be a positive integer")
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 2:
        raise ConfigError(f"--batch-size {cfg.batch_size} must be at least 2 (batch norm)")
    if not (isinstance(cfg.lr, int | float) and 0 < cfg.lr < 10 and math.isfinite(cfg.lr)):
        raise ConfigError(f"--lr {cfg.lr} must be a positive number below 10")
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer {cfg.optimizer!r}: choose {', '.join(OPTIMIZERS)}")
    if cfg.schedule not in SCHEDULES:
        raise ConfigError(f"schedule {cfg.schedule!r}: choose {', '.join(SCHEDULES)}")
    if cfg.mpp is not None and not (isinstance(cfg.mpp, int | float) and 0 < cfg.mpp < 1000):
        raise ConfigError(f"--mpp {cfg.mpp}: give the tiles' µm per pixel, e.g. 0.5")
    if cfg.augment:
        Augment.from_json(cfg.augment)
    if cfg.stain_norm not in STAIN_METHODS:
        raise ConfigError(f"--stain-norm {cfg.stain_norm!r}: choose {', '.join(STAIN_METHODS)}")
    if not isinstance(cfg.stain_tiles, int) or cfg.stain_tiles < 1:
        raise ConfigError(f"--stain-tiles {cfg.stain_tiles} must be a positive number of tiles")
    if not 0 <= cfg.label_smoothing < 1:
        raise ConfigError(f"label smoothing {cfg.label_smoothing} must be in [0, 1)")
    spec = get_spec(cfg.arch)
    if cfg.image_size is not None and (not isinstance(cfg.image_size, int)
                                       or cfg.image_size < spec.min_input_size
                                       or cfg.image_size > 2048):
        raise ConfigError(f"--image-size {cfg.image_size}: {cfg.arch} accepts "
                          f"{spec.min_input_size} to 2048 pixels")
    if not 0 <= cfg.val_fraction < 1:
        raise ConfigError(f"--val-fraction {cfg.val_fraction} must be in [0, 1)")
    if not 0 <= cfg.test_fraction < 1 or cfg.val_fraction + cfg.test_fraction >= 1:
        raise ConfigError(f"--test-fraction {cfg.test_fraction} must be in [0, 1) and leave "
                          f"groups for training beside --val-fraction {cfg.val_fraction}")
    if not (isinstance(cfg.ema, int | float) and 0.0 <= cfg.ema < 1.0):
        raise ConfigError(f"--ema {cfg.ema}: give a decay in [0, 1), e.g. 0.99 (0 = off)")
    if not isinstance(cfg.save_every, int) or cfg.save_every < 1:
        raise ConfigError(f"--save-every {cfg.save_every} must be a positive number of epochs")
    if cfg.balance not in BALANCE_MODES:
        raise ConfigError(f"--balance {cfg.balance!r}: choose {', '.join(BALANCE_MODES)}")
    if cfg.best_metric not in BEST_METRICS:
        raise ConfigError(f"--best-metric {cfg.best_metric!r}: choose {', '.join(BEST_METRICS)}")
    if sorted(cfg.milestones) != list(cfg.milestones) or any(m < 1 for m in cfg.milestones):
        raise ConfigError(f"milestones {cfg.milestones} must be increasing positive epochs")


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


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate of (0-based) ``epoch``.

    ``step``: ``lr * gamma ** (milestones passed)``; with the paper's milestones 80/120/160/180,
    epochs 81-120 (1-based) use 1e-4, and so on. ``cosine``: ``lr * (1 + cos(pi * epoch /
    epochs)) / 2``, from ``lr`` in the first epoch down towards 0 in the last.
    """
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, cfg.epochs)))
    return cfg.lr * cfg.gamma ** sum(1 for m in cfg.milestones if epoch >= m)


def make_optimizer(cfg: TrainConfig, params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        # torchvision's reference settings for RMSprop (TensorFlow-like eps and decay).
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=0.9, eps=0.0316, momentum=0.9,
                                   weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)


# ----------------------------------------------------------------------------- steps
def compute_loss(output: Any, y: torch.Tensor, cfg: TrainConfig,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy (label smoothing, optional class ``weight``) plus ``aux_weight`` x the
    InceptionV3 auxiliary loss."""
    if isinstance(output, torch.Tensor):
        return F.cross_entropy(output.float(), y, weight=weight,
                               label_smoothing=cfg.label_smoothing)
    logits, aux = output[0], output[1]
    loss = F.cross_entropy(logits.float(), y, weight=weight, label_smoothing=cfg.label_smoothing)
    if aux is not None:
        loss = loss + cfg.aux_weight * F.cross_entropy(aux.float(), y, weight=weight,
                                                       label_smoothing=cfg.label_smoothing)
    return loss


def _train_micro(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                 autocast: bool, scale: float | torch.Tensor,
                 weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward one micro-batch; returns (summed loss, correct predictions) as
    tensors on the device: reading them would make the CPU wait for the GPU every step."""
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        out = model(x)
        loss = compute_loss(out, y, cfg, weight)
    (loss * scale).backward()
    correct = (main_logits(out).argmax(1) == y).sum()
    return loss.detach() * x.shape[0], correct


def _prep(x: torch.Tensor, aug: Augment | None, gen: torch.Generator | None,
          mean: list[float], std: list[float]) -> torch.Tensor:
    xf = x.float().div_(255)
    if aug is not None:
        xf = aug(xf, gen)
    return normalize(xf, mean, std).contiguous(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------- history
def _read_history(path: Path, upto: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            try:
                row = {k: (float(v) if v not in ("", None) else None) for k, v in r.items()}
                row["epoch"] = int(row["epoch"] or 0)
            except (TypeError, ValueError):
                continue
            if row["epoch"] <= upto:
                rows.append(row)
    return rows


def _write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else
                        (r[k] if k == "epoch" else f"{r[k]:.6g}")) for k in HISTORY_COLUMNS})
    atomic_write_text(path, buf.getvalue())


# ----------------------------------------------------------------------------- fit: phases
@dataclass
class _Run:
    """The state one training run carries from phase to phase."""

    cfg: TrainConfig
    out: Path
    info: DistInfo
    device: torch.device
    warn: Callable[[str], None]
    table: TileTable
    split: Split
    size: int = 0
    cache: str = "none"
    train_b: Batches | None = None
    val_b: Batches | None = None
    model: nn.Module | None = None
    train_model: nn.Module | None = None
    ema: torch.optim.swa_utils.AveragedModel | None = None
    optimizer: torch.optim.Optimizer | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    start_epoch: int = 0
    best: tuple[float, float] = (-1.0, math.inf)
    best_epoch: int = 0
    best_val_acc: float | None = None
    micro: int = 2
    per_rank_batch: int = 2
    steps_per_epoch: int = 1
    loss_weight: torch.Tensor | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    stain: StainNormalizer | None = None

    @property
    def autocast(self) -> bool:
        return self.device.type == "cuda" and self.cfg.amp

    @property
    def has_val(self) -> bool:
        return self.val_b is not None and len(self.val_b) > 0

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated and released: the moving average when there is one."""
        assert self.model is not None
        return self.ema.module if self.ema is not None else self.model


def _resume_config(config: TrainConfig, out: Path, resume: bool
                   ) -> tuple[TrainConfig, dict[str, Any] | None]:
    last_path = out / "last.pt"
    if not resume:
        if last_path.exists():
            raise ConfigError(f"{out} already holds a training run (last.pt); use --resume to "
                              f"continue it or another --out folder")
        return config, None
    if not last_path.is_file():
        raise CheckpointError(f"nothing to resume: {last_path} not found")
    ckpt = load_checkpoint(last_path, "cpu", expect_arch=config.arch)
    stored = TrainConfig.from_json(ckpt.get("config") or {})
    stored.epochs, stored.device, stored.workers = config.epochs, config.device, config.workers
    stored.compile, stored.save_every = config.compile, config.save_every
    # Data options given again override the stored ones (then the class check applies).
    stored.data = {**stored.data, **{k: v for k, v in config.data.items() if v is not None}}
    return stored, ckpt


def _load_data(cfg: TrainConfig, data: str | Path | TileTable, ckpt: dict[str, Any] | None,
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
    split = split_by_group(table, cfg.val_fraction, cfg.seed, warn=warn,
                           test_fraction=cfg.test_fraction)
    if not split.val:
        warn("no validation set (" + "; ".join(split.notes) + "): best.pt is the last epoch, "
             "not the best training score")
    return table, split


def _record_split(run: _Run) -> Generator[Progress, None, dict[str, Any]]:
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


def _scale(cfg: TrainConfig, table: TileTable, warn: Callable[[str], None]
           ) -> tuple[float | None, str]:
    """The µm/px the patches are at (the dataset's, else ``--mpp``), and where it came from."""
    if table.mpp is not None:
        if cfg.mpp is not None and abs(cfg.mpp - table.mpp) > 1e-6:
            warn(f"--mpp {cfg.mpp:g} ignored: the dataset states {table.mpp:g} µm/px")
        return table.mpp, "dataset"
    if cfg.mpp is not None:
        return float(cfg.mpp), "given (--mpp)"
    warn("the images' pixel size is unknown: the model records its scale as unknown, so prediction "
         "on slides cannot cut windows at the trained scale; give --mpp (µm per pixel of the "
         "tiles)")
    return None, "unknown"


def _prepare_batches(run: _Run) -> Generator[Progress, None, None]:
    cfg, table, split, spec = run.cfg, run.table, run.split, get_spec(run.cfg.arch)
    size = cfg.image_size
    if size is None:
        size = table.patch_size if (table.patch_size or 0) >= spec.min_input_size \
            else spec.input_size
        cfg.image_size = size
    run.size = size
    yield from _fit_stain(run)
    run.cache = choose_cache(len(split.train) + len(split.val), size, run.device, cfg.cache)
    workers = cfg.workers if cfg.workers >= 0 else (
        0 if run.cache != "none" else min(8, max(1, (os.cpu_count() or 2) - 1)))
    run.train_b = Batches(table, split.train, size, run.device, run.cache, workers, run.stain)
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


def _fit_stain(run: _Run) -> Generator[Progress, None, None]:
    """The stain normaliser: the resumed checkpoint's, else fitted on training tiles (seeded)."""
    cfg = run.cfg
    if run.stain is None and cfg.stain_norm != "none":
        run.stain = yield from fit_from_table(run.table, run.split.train, cfg.stain_norm, run.size,
                                              cfg.stain_tiles, cfg.seed)
    if run.stain is not None:
        cfg.notes.append(run.stain.describe() + ", applied when images are decoded")


def _resolve_balance(run: _Run) -> None:
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


def _build_model(run: _Run, ckpt: dict[str, Any] | None) -> None:
    cfg = run.cfg
    aux = uses_aux(cfg.arch, run.size)
    if cfg.arch == "inception_v3" and not aux:
        run.warn(f"inception_v3 at {run.size} px: the auxiliary head needs >= 299 px and is left "
                 f"out")
    model = build_model(cfg.arch, len(run.table.scheme), cfg.weights if ckpt is None else None,
                        aux_logits=aux)
    if ckpt is not None:
        try:
            model.load_state_dict({k: v.float() if v.is_floating_point() else v
                                   for k, v in ckpt["model"].items()})
        except RuntimeError as exc:
            raise CheckpointError(f"{run.out / 'last.pt'}: weights do not fit: "
                                  f"{str(exc).splitlines()[0]}") from None
    run.model = model.to(run.device).to(memory_format=torch.channels_last)
    run.optimizer = make_optimizer(cfg, run.model.parameters())
    train_model: nn.Module = run.model
    if run.info.world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            run.model, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)  # type: ignore[assignment]
    run.train_model = train_model
    if cfg.ema > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        run.ema = AveragedModel(run.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema),
                                use_buffers=True)
        if ckpt is not None and isinstance(ckpt.get("ema"), dict):
            run.ema.load_state_dict(ckpt["ema"])


def _restore(run: _Run, ckpt: dict[str, Any]) -> None:
    """Optimizer state, epoch and best score of a resumed run."""
    assert run.optimizer is not None
    if ckpt.get("optimizer"):
        run.optimizer.load_state_dict(ckpt["optimizer"])
    run.start_epoch = int(ckpt.get("epoch") or 0)
    m = ckpt.get("metrics") or {}
    best_path = run.out / "best.pt"
    if best_path.is_file():
        # With --save-every > 1, best.pt can be newer than last.pt: keep its score so a worse
        # epoch of the resumed run does not replace it.
        bm = load_checkpoint(best_path, "cpu").get("metrics") or {}
        if int(bm.get("epoch") or 0) > run.start_epoch:
            m = bm
    best_loss = m.get("best_val_loss")
    run.best = (float(m.get("best_score", m.get("best_val_acc", -1.0))),
                math.inf if best_loss is None else float(best_loss))
    run.best_epoch = int(m.get("best_epoch", 0))
    run.best_val_acc = m.get("best_val_acc")
    run.history = _read_history(run.out / "history.csv", run.start_epoch)


def _step(run: _Run, x: torch.Tensor, y: torch.Tensor) -> Generator[str, None, tuple[Any, Any]]:
    """One optimizer step over a batch (micro-batches on OOM); yields OOM messages."""
    assert run.optimizer is not None and run.train_model is not None
    while True:
        try:
            run.optimizer.zero_grad(set_to_none=True)
            loss_sum: Any = 0.0
            correct: Any = 0
            chunks = list(range(0, x.shape[0], run.micro))
            for ci, s in enumerate(chunks):
                xs, ys = x[s:s + run.micro], y[s:s + run.micro]
                with NoSync(run.train_model, ci < len(chunks) - 1):
                    # The chunk's share of the batch loss (of its class weight when
                    # weighted), so accumulation equals one batch.
                    w = run.loss_weight
                    share = (xs.shape[0] / x.shape[0] if w is None else
                             w[ys].sum() / w[y].sum())
                    ls, c = _train_micro(run.train_model, xs, ys, run.cfg, run.autocast, share, w)
                loss_sum += ls
                correct += c
            run.optimizer.step()
            return loss_sum, correct
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not is_oom(exc):
                raise
            run.optimizer.zero_grad(set_to_none=True)
            if run.device.type == "cuda":
                torch.cuda.empty_cache()
            if run.micro <= 1:
                raise CrcError("out of GPU memory even with a batch of 1; use a smaller "
                               "--image-size or another device") from None
            run.micro = max(1, run.micro // 2)
            msg = (f"out of GPU memory: batch halved to {run.micro} (gradients accumulated to "
                   f"keep the batch of {run.per_rank_batch}); retrying")
            run.warn(msg)
            yield msg


def _train_epoch(run: _Run, epoch: int) -> Generator[Progress, None, tuple[float, float, float]]:
    """One pass over the training set; returns (loss, accuracy, images) summed over ranks."""
    cfg, spec = run.cfg, get_spec(run.cfg.arch)
    assert run.train_b is not None and run.optimizer is not None and run.train_model is not None
    for g in run.optimizer.param_groups:
        g["lr"] = lr_at(cfg, epoch)
    torch.manual_seed(cfg.seed * 1000 + epoch)
    gen = torch.Generator(device=run.device).manual_seed(cfg.seed * 100_003 + epoch)
    if cfg.balance == "sampler":
        order = balanced_order(run.train_b.labels_list(), run.info, cfg.seed, epoch)
    else:
        order = epoch_order(len(run.train_b), run.info, cfg.seed, epoch, shuffle=True)
    if len(order) % run.per_rank_batch == 1:
        order = order[:-1]   # a batch of one breaks batch norm
    run.train_model.train()
    aug = Augment.from_json(cfg.augment) if cfg.augment else None
    # loss*n and correct stay on the device until the epoch ends (no per-step sync); the
    # progress text reads the running loss at most once a second.
    ep_loss = torch.zeros((), dtype=torch.float64, device=run.device)
    ep_correct = torch.zeros((), dtype=torch.float64, device=run.device)
    ep_n, shown, base = 0, 0.0, epoch * run.steps_per_epoch
    total = cfg.epochs * run.steps_per_epoch
    for step, (x, y) in enumerate(run.train_b.iterate(order, run.per_rank_batch)):
        x = _prep(x, aug, gen, list(spec.mean), list(spec.std))
        stepper = _step(run, x, y)
        try:
            while True:
                yield Progress(base + step, total, next(stepper))
        except StopIteration as stop:
            loss_sum, correct = stop.value
        if run.ema is not None:
            run.ema.update_parameters(run.model)
        ep_loss += loss_sum
        ep_correct += correct
        ep_n += x.shape[0]
        text = f"epoch {epoch + 1}/{cfg.epochs}"
        now = time.perf_counter()
        if now - shown >= 1.0:
            shown = now
            text += f" loss {float(ep_loss) / max(1, ep_n):.3f}"
        yield Progress(base + step + 1, total, text)
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    sums = all_sum([float(ep_loss), float(ep_correct), float(ep_n)], run.info, run.device)
    return sums[0] / max(1.0, sums[2]), sums[1] / max(1.0, sums[2]), sums[2]


def _end_epoch(run: _Run, epoch: int, row: dict[str, Any]) -> None:
    """Pick best.pt (validation score, else the last epoch), write checkpoints and history."""
    cfg = run.cfg
    val_score = row["val_bal_acc"] if cfg.best_metric == "balanced_acc" else row["val_acc"]
    if run.has_val and val_score is not None:
        score = (val_score, row["val_loss"])
        improved = score[0] > run.best[0] or (score[0] == run.best[0] and score[1] < run.best[1])
    else:
        score, improved = (-1.0, math.inf), True      # no validation: the last epoch is kept
    if improved:
        run.best, run.best_epoch, run.best_val_acc = score, epoch + 1, row["val_acc"]
    metrics = {"epoch": epoch + 1, **{k: row[k] for k in ("train_loss", "train_acc", "val_loss",
                                                          "val_acc", "val_bal_acc")},
               "best_metric": cfg.best_metric if run.has_val else "last epoch (no validation)",
               "best_score": run.best[0] if run.has_val else None,
               "best_val_acc": run.best_val_acc,
               "best_val_loss": run.best[1] if math.isfinite(run.best[1]) else None,
               "best_epoch": run.best_epoch}
    if run.info.main:
        assert run.model is not None and run.optimizer is not None
        sched = {"milestones": list(cfg.milestones), "gamma": cfg.gamma, "schedule": cfg.schedule,
                 "last_epoch": epoch + 1, "lr": row["lr"]}
        common = dict(**run.meta, config=cfg.to_json(), epoch=epoch + 1, scheduler=sched,
                      metrics=metrics)
        if improved:
            save_checkpoint(run.out / "best.pt", run.eval_model, **common,
                            half=cfg.half_checkpoint)
        if (epoch + 1) % cfg.save_every == 0 or epoch + 1 == cfg.epochs:
            save_checkpoint(run.out / "last.pt", run.model, **common,
                            optimizer=run.optimizer.state_dict(),
                            ema=None if run.ema is None else run.ema.state_dict())
        _write_history(run.out / "history.csv", run.history)
    barrier(run.info)


def _run_epochs(run: _Run) -> Generator[Progress, None, None]:
    spec, cfg = get_spec(run.cfg.arch), run.cfg
    n_classes = len(run.table.scheme)
    for epoch in range(run.start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        train_loss, train_acc, n = yield from _train_epoch(run, epoch)
        train_seconds = time.perf_counter() - t0
        val_loss = val_acc = val_bal = None
        if run.has_val:
            assert run.model is not None and run.val_b is not None
            vl, vc, vn, per_class = _validate(run.eval_model, run.val_b, run.info, spec.mean,
                                              spec.std, run.autocast, run.per_rank_batch * 2,
                                              run.device, n_classes)
            val_loss, val_acc = vl / max(1.0, vn), vc / max(1.0, vn)
            recalls = [c / k for c, k in per_class if k > 0]
            val_bal = sum(recalls) / len(recalls) if recalls else None
        row = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
               "val_loss": val_loss, "val_acc": val_acc, "val_bal_acc": val_bal,
               "lr": lr_at(cfg, epoch), "seconds": time.perf_counter() - t0,
               "images_per_s": n / max(1e-9, train_seconds)}
        run.history.append(row)
        _end_epoch(run, epoch, row)
        yield Progress((epoch + 1) * run.steps_per_epoch, cfg.epochs * run.steps_per_epoch,
                       f"epoch {epoch + 1}/{cfg.epochs} done", payload=dict(row))


def _summary(run: _Run) -> dict[str, Any]:
    assert run.train_b is not None and run.val_b is not None
    cfg, table, split = run.cfg, run.table, run.split
    return {
        "out": str(run.out), "arch": cfg.arch, "classes": table.scheme.names,
        "epochs": cfg.epochs, "image_size": run.size, "best_epoch": run.best_epoch,
        "best_val_acc": run.best_val_acc,
        "best_metric": cfg.best_metric if run.has_val else "last epoch (no validation)",
        "best_score": run.best[0] if run.has_val and run.best[0] >= 0 else None,
        "history": run.history, "last": str(run.out / "last.pt"),
        "best": str(run.out / "best.pt"), "skipped": len(run.skipped),
        "train_images": len(run.train_b), "val_images": len(run.val_b),
        "test_images": len(split.test), "world_size": run.info.world, "cache": run.cache,
        "device": str(run.device), "micro_batch": run.micro, "notes": list(cfg.notes),
        "counts": {"train": table.counts(run.train_b.indices),
                   "val": table.counts(run.val_b.indices), "test": table.counts(split.test)},
    }


def fit(
    data: str | Path | TileTable,
    out: str | Path,
    config: TrainConfig,
    resume: bool = False,
    warn: Callable[[str], None] | None = None,
) -> Generator[Progress, None, dict[str, Any]]:
    """Train ``config.arch`` on ``data`` into the run folder ``out`` (a job generator).

    Parameters
    ----------
    data
        Dataset folder, CSV manifest (with ``config.data`` column options) or a loaded table.
    out
        Run folder: ``last.pt``, ``best.pt``, ``history.csv``, ``config.json``, ``split.csv``,
        ``summary.json``.
    config
        Options (see :func:`make_config`).
    resume
        Continue from ``out/last.pt`` (same architecture and classes; the stored configuration is
        used, except ``epochs``, ``device``, ``workers`` and ``compile`` which may change).
    warn
        Called with one line per non-fatal problem (skipped images, OOM retries, no validation).

    Yields
    ------
    Progress
        Per batch; after each epoch one with ``payload`` = the history row (``dict``).

    Returns
    -------
    dict
        Run summary: paths, epochs, best epoch and validation accuracy, history, skipped images.
    """
    warn_fn: Callable[[str], None] = warn or (lambda msg: None)
    out = Path(out)
    cfg, ckpt = _resume_config(config, out, resume)
    validate_config(cfg)
    info = init_distributed(cfg.device)
    if info.world > 1 and not info.main:
        warn_fn = lambda msg: None  # noqa: E731  (one set of messages, from rank 0)
    try:
        device = resolve_device(cfg.device, info.local_rank)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(cfg.seed)
        cfg.notes = []
        table, split = _load_data(cfg, data, ckpt, out, warn_fn)
        cfg.notes += split.notes
        run = _Run(cfg, out, info, device, warn_fn, table, split)
        run.stain = from_checkpoint(ckpt) if ckpt is not None else None
        record = yield from _record_split(run)
        yield from _prepare_batches(run)
        _resolve_balance(run)
        mpp, mpp_source = _scale(cfg, table, warn_fn)
        _build_model(run, ckpt)
        if ckpt is not None:
            _restore(run, ckpt)
        run.per_rank_batch = max(2, math.ceil(cfg.batch_size / info.world))
        run.micro = run.per_rank_batch
        assert run.train_b is not None
        run.steps_per_epoch = max(1, math.ceil(math.ceil(len(run.train_b) / info.world)
                                               / run.per_rank_batch))
        run.meta = {"arch": cfg.arch, "classes": table.scheme, "input_size": run.size,
                    "patch_size": table.patch_size or uniform_tile_size(table),
                    "level": table.level, "mpp": mpp,
                    "extra": {"split": record, "mpp_source": mpp_source,
                              "preprocess": {"resampling": RESAMPLING, "stain": (
                                  run.stain.to_json() if run.stain else {"method": "none"})}}}
        if info.main:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "config.json", json.dumps(cfg.to_json(), indent=2))
        if run.start_epoch >= cfg.epochs:
            warn_fn(f"{out / 'last.pt'} has already trained {run.start_epoch} epochs (--epochs "
                    f"{cfg.epochs})")
        yield from _run_epochs(run)
        summary = _summary(run)
        if info.main:
            atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
        return summary
    finally:
        if info.created and dist.is_initialized():
            dist.destroy_process_group()


def _validate(model: nn.Module, batches: Batches, info: DistInfo, mean: tuple[float, ...],
              std: tuple[float, ...], autocast: bool, batch: int, device: torch.device,
              n_classes: int) -> tuple[float, float, float, list[tuple[float, float]]]:
    """Summed loss, correct, count and per class (correct, count) over all ranks."""
    model.eval()
    order = epoch_order(len(batches), info, 0, 0, shuffle=False)
    # Sums stay on the device (one read at the end): loss, then per class correct and count.
    acc = torch.zeros(1 + 2 * n_classes, dtype=torch.float64, device=device)
    with torch.inference_mode():
        for x, y in batches.iterate(order, batch):
            xf = _prep(x, None, None, list(mean), list(std))
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                logits = main_logits(model(xf))
            acc[0] += F.cross_entropy(logits.float(), y, reduction="sum")
            hit = (logits.argmax(1) == y).double()
            acc[1::2] += torch.bincount(y, weights=hit, minlength=n_classes)[:n_classes]
            acc[2::2] += torch.bincount(y, minlength=n_classes)[:n_classes]
    per = acc.tolist()
    sums = [per[0], sum(per[1::2]), sum(per[2::2])] + per[1:]
    s = all_sum(sums, info, device)
    return s[0], s[1], s[2], [(s[3 + 2 * c], s[4 + 2 * c]) for c in range(n_classes)]
