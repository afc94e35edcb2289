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
(best validation accuracy, ties broken by lower validation loss; no optimizer state),
``history.csv`` (epoch, train/val loss and accuracy, learning rate, seconds, images/s),
``config.json``, ``summary.json``. CUDA out of memory halves the micro-batch (gradients are
accumulated, so the effective batch is unchanged) and retries the batch.
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
from crc_core.data import (
    Augment,
    TileDataset,
    TileTable,
    choose_cache,
    collate_skip,
    decode_all,
    load_table,
    normalize,
    split_by_group,
)
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

PRESETS: dict[str, dict[str, Any]] = {
    # Kim, Koh, Lee 2021, section 3.2: batch 32, 200 epochs, lr 1e-3 lowered tenfold after epochs
    # 80, 120, 160 and 180; Adam (ResNet50, DenseNet121), RMSprop with label smoothing
    # (InceptionV3).
    "paper": {"epochs": 200, "batch_size": 32, "lr": 1e-3, "milestones": [80, 120, 160, 180],
              "gamma": 0.1},
    # A few epochs at a constant rate: for the CPU and for trying things.
    "quick": {"epochs": 5, "batch_size": 16, "lr": 1e-3, "milestones": [], "gamma": 0.1},
}

HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_bal_acc", "lr",
                   "seconds", "images_per_s"]

BALANCE_MODES = ("none", "loss", "sampler")
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
    optimizer: str = "adam"           # adam | rmsprop | sgd
    label_smoothing: float = 0.0
    aux_weight: float = 0.4           # InceptionV3 auxiliary loss weight (torchvision's reference)
    weight_decay: float = 0.0
    image_size: int | None = None     # None: the dataset's patch size, else the model's native size
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    weights: str | None = None        # None | imagenet | path
    seed: int = 0
    val_fraction: float = 0.2
    test_fraction: float = 0.0        # groups kept out of training and of model selection
    workers: int = -1                 # DataLoader workers when streaming; -1 = automatic
    compile: bool = False
    cache: str = "auto"               # auto | gpu | cpu | none
    amp: bool = True                  # bf16 autocast on CUDA
    half_checkpoint: bool = False     # best.pt weights in float16 (compact release checkpoints)
    # Class imbalance: "loss" weighs each class by n / (K * n_c) in the cross-entropy; "sampler"
    # draws each epoch's images with replacement, every class equally likely. "none" = the paper.
    balance: str = "none"
    best_metric: str = "acc"          # acc | balanced_acc (mean per-class recall) picks best.pt
    save_every: int = 1               # last.pt every N epochs (and after the last); best.pt always
    augment: dict[str, Any] = field(default_factory=lambda: Augment().to_json())
    # image/label/group/split columns, classes, map, source
    data: dict[str, Any] = field(default_factory=dict)

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
    values: dict[str, Any] = dict(PRESETS[preset])
    values["optimizer"] = "rmsprop" if arch == "inception_v3" else "adam"
    values["label_smoothing"] = 0.1 if arch == "inception_v3" else 0.0
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
    if cfg.optimizer not in ("adam", "rmsprop", "sgd"):
        raise ConfigError(f"optimizer {cfg.optimizer!r}: choose adam, rmsprop or sgd")
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
    """Learning rate of (0-based) ``epoch``: ``lr * gamma ** (milestones passed)``.

    With the paper's milestones 80/120/160/180, epochs 81-120 (1-based) use 1e-4, and so on.
    """
    return cfg.lr * cfg.gamma ** sum(1 for m in cfg.milestones if epoch >= m)


def make_optimizer(cfg: TrainConfig, params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        # torchvision's reference settings for RMSprop (TensorFlow-like eps and decay).
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=0.9, eps=0.0316, momentum=0.9,
                                   weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local rank>`` when CUDA is available, else ``cpu``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA GPU is available here; use --device cpu")
        if name == "cuda":
            return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        return torch.device(name)
    if name != "cpu":
        raise ConfigError(f"--device {name!r}: choose auto, cpu or cuda")
    return torch.device("cpu")


# ----------------------------------------------------------------------------- distributed
@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    created: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (nccl on CUDA, gloo on the CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local, False)
    cuda = device_name != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local % torch.cuda.device_count())
    dist.init_process_group("nccl" if cuda else "gloo")
    return DistInfo(rank, world, local, True)


def _all_sum(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    if info.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64,
                     device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def _barrier(info: DistInfo) -> None:
    if info.world > 1:
        dist.barrier()


# ----------------------------------------------------------------------------- batches
class _Batches:
    """Per-epoch batches of (uint8 images, labels) on the training device, cached or streamed."""

    def __init__(self, table: TileTable, indices: list[int], size: int, device: torch.device,
                 cache: str, workers: int) -> None:
        self.table, self.indices, self.size, self.device = table, indices, size, device
        self.cache = cache
        self.workers = workers
        self.images: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.skipped: list[tuple[str, str]] = []

    def prepare(self) -> Generator[Progress, None, None]:
        if self.cache == "none" or not self.indices:
            return
        dev = self.device if self.cache == "gpu" else torch.device("cpu")
        decoded = yield from decode_all(self.table, self.indices, self.size, device=dev)
        self.images, self.labels = decoded.images, decoded.labels
        self.skipped = decoded.skipped
        self.indices = decoded.kept

    def __len__(self) -> int:
        return len(self.indices)

    def labels_list(self) -> list[int]:
        return [self.table.samples[i].label for i in self.indices]

    def iterate(self, order: list[int], batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches over positions ``order`` (into ``self.indices``); a final batch of 1 is dropped
        in training by the caller."""
        if self.images is not None:
            assert self.labels is not None
            # One upload of the epoch's order (a pageable copy per batch would make the CPU
            # wait for the GPU to drain before every step).
            order_t = torch.tensor(order, dtype=torch.long).to(self.images.device,
                                                               non_blocking=True)
            for s in range(0, len(order), batch):
                pos = order_t[s:s + batch]
                x, y = self.images[pos], self.labels[pos]
                yield (x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True))
            return
        ds = TileDataset(self.table, self.indices, self.size)
        loader = torch.utils.data.DataLoader(
            ds, batch_size=batch, sampler=order, num_workers=self.workers,
            collate_fn=collate_skip, pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if self.workers > 0 else None)
        for x, y, bad in loader:
            for j in bad.tolist():
                self.skipped.append((str(self.table.samples[self.indices[j]].path), "unreadable"))
            if x.shape[0]:
                yield (x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True))


def class_weights(labels: list[int], n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights ``n / (K * n_c)`` over the K classes present (absent: 0).

    A balanced set gets all ones; the weighted cross-entropy then gives each class the same total
    say in the loss, whatever its share of the images.
    """
    counts = torch.bincount(torch.tensor(labels, dtype=torch.long), minlength=n_classes).double()
    present = int((counts > 0).sum())
    w = torch.zeros(n_classes, dtype=torch.float64)
    nz = counts > 0
    w[nz] = counts.sum() / (present * counts[nz])
    return w.float()


def balanced_order(labels: list[int], info: DistInfo, seed: int, epoch: int) -> list[int]:
    """This rank's share of one epoch drawn with replacement, each class equally likely.

    The epoch keeps the dataset's length; every rank draws the same global sequence (same seed)
    and takes every ``world``-th position, so ranks see disjoint draws of equal length.
    """
    n = len(labels)
    per_class = class_weights(labels, max(labels) + 1 if labels else 1).double()
    w = per_class[torch.tensor(labels, dtype=torch.long)]
    gen = torch.Generator().manual_seed(seed * 7_919 + epoch)
    draw = torch.multinomial(w, n, replacement=True, generator=gen).tolist()
    per_rank = math.ceil(n / info.world)
    draw = (draw + draw[:per_rank * info.world - n])[:per_rank * info.world]
    return draw[info.rank::info.world]


def _order(n: int, info: DistInfo, seed: int, epoch: int, shuffle: bool) -> list[int]:
    sampler = torch.utils.data.DistributedSampler(
        range(n), num_replicas=info.world, rank=info.rank, shuffle=shuffle, seed=seed,
        drop_last=False)
    sampler.set_epoch(epoch)
    return list(sampler)


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


class _NoSync:
    def __init__(self, model: nn.Module, active: bool) -> None:
        self.cm = model.no_sync() if active and hasattr(model, "no_sync") else None

    def __enter__(self) -> None:
        if self.cm is not None:
            self.cm.__enter__()

    def __exit__(self, *a: Any) -> None:
        if self.cm is not None:
            self.cm.__exit__(*a)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


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


# ----------------------------------------------------------------------------- fit
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
        Run folder: ``last.pt``, ``best.pt``, ``history.csv``, ``config.json``, ``summary.json``.
    config
        Options (see :func:`make_config`).
    resume
        Continue from ``out/last.pt`` (same architecture and classes; the stored configuration is
        used, except ``epochs``, ``device``, ``workers`` and ``compile`` which may change).
    warn
        Called with one line per non-fatal problem (skipped images, OOM retries).

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
    last_path, best_path = out / "last.pt", out / "best.pt"
    ckpt: dict[str, Any] | None = None
    if resume:
        if not last_path.is_file():
            raise CheckpointError(f"nothing to resume: {last_path} not found")
        ckpt = load_checkpoint(last_path, "cpu", expect_arch=config.arch)
        stored = TrainConfig.from_json(ckpt.get("config") or {})
        stored.epochs, stored.device, stored.workers = config.epochs, config.device, config.workers
        stored.compile, stored.save_every = config.compile, config.save_every
        # Data options given again override the stored ones (then the class check below applies).
        stored.data = {**stored.data, **{k: v for k, v in config.data.items() if v is not None}}
        config = stored
    elif last_path.exists():
        raise ConfigError(f"{out} already holds a training run (last.pt); use --resume to continue "
                          f"it or another --out folder")
    validate_config(config)
    cfg = config
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
        spec = get_spec(cfg.arch)

        table = data if isinstance(data, TileTable) else load_table(
            data, image_column=cfg.data.get("image_column"),
            label_column=cfg.data.get("label_column"), group_column=cfg.data.get("group_column"),
            split_column=cfg.data.get("split_column"), classes=cfg.data.get("classes"),
            mapping=cfg.data.get("map"), group_pattern=cfg.data.get("group_pattern"),
            warn=warn_fn)
        # What was actually used: resolved column names, parsed --classes list and --map dict.
        cfg.data = {**{k: v for k, v in cfg.data.items() if v is not None}, **table.options,
                    "source": str(table.source.resolve())}
        scheme = table.scheme
        if ckpt is not None:
            ck_names = ckpt["scheme"].names
            if [n.casefold() for n in ck_names] != [n.casefold() for n in scheme.names]:
                raise CheckpointError(f"{last_path} was trained on classes {', '.join(ck_names)}; "
                                      f"this data has {', '.join(scheme.names)}")
        split = split_by_group(table, cfg.val_fraction, cfg.seed, warn=warn_fn,
                               test_fraction=cfg.test_fraction)
        size = cfg.image_size
        if size is None:
            size = table.patch_size if (table.patch_size or 0) >= spec.min_input_size \
                else spec.input_size
            cfg.image_size = size
        cache = choose_cache(len(split.train) + len(split.val), size, device, cfg.cache)
        workers = cfg.workers if cfg.workers >= 0 else (
            0 if cache != "none" else min(8, max(1, (os.cpu_count() or 2) - 1)))
        train_b = _Batches(table, split.train, size, device, cache, workers)
        val_b = _Batches(table, split.val, size, device, cache, workers)
        n_all = len(split.train) + len(split.val)
        yield Progress(0, None, f"decoding {n_all} images ({cache} cache)")
        # Decoding progress without a total: the bar's fraction is the training's alone.
        for ev in (*train_b.prepare(), *val_b.prepare()):
            yield Progress(ev.done, None, f"decoding images {int(ev.done)}/{int(ev.total or 0)}")
        skipped = train_b.skipped + val_b.skipped
        if skipped:
            warn_fn(f"{len(skipped)} unreadable image(s) skipped, e.g. {skipped[0][0]} "
                    f"({skipped[0][1]})")
        if len(train_b) < 2:
            raise DatasetError(f"{table.source}: fewer than two readable training images")
        train_classes = set(train_b.labels_list())
        if len(train_classes) < 2:
            raise DatasetError(f"{table.source}: the training split holds a single class "
                               f"({scheme.names[next(iter(train_classes))]}); training needs two")
        missing = [scheme.names[i] for i in range(len(scheme)) if i not in train_classes]
        if missing:
            warn_fn(f"no training images of class(es) {', '.join(missing)}")

        aux = uses_aux(cfg.arch, size)
        if cfg.arch == "inception_v3" and not aux:
            warn_fn(f"inception_v3 at {size} px: the auxiliary head needs >= 299 px and is left "
                    f"out")
        model = build_model(cfg.arch, len(scheme), cfg.weights if ckpt is None else None,
                            aux_logits=aux)
        if ckpt is not None:
            try:
                model.load_state_dict({k: v.float() if v.is_floating_point() else v
                                       for k, v in ckpt["model"].items()})
            except RuntimeError as exc:
                raise CheckpointError(f"{last_path}: weights do not fit: "
                                      f"{str(exc).splitlines()[0]}") from None
        model = model.to(device).to(memory_format=torch.channels_last)
        optimizer = make_optimizer(cfg, model.parameters())
        start_epoch = 0
        best: tuple[float, float] = (-1.0, math.inf)
        best_epoch = 0
        best_val_acc: float | None = None
        if ckpt is not None:
            if ckpt.get("optimizer"):
                optimizer.load_state_dict(ckpt["optimizer"])
            start_epoch = int(ckpt.get("epoch") or 0)
            m = ckpt.get("metrics") or {}
            if best_path.is_file():
                # With --save-every > 1, best.pt can be newer than last.pt: keep its score so a
                # worse epoch of the resumed run does not replace it.
                bm = load_checkpoint(best_path, "cpu").get("metrics") or {}
                if int(bm.get("epoch") or 0) > start_epoch:
                    m = bm
            best_loss = m.get("best_val_loss")
            best = (float(m.get("best_score", m.get("best_val_acc", -1.0))),
                    math.inf if best_loss is None else float(best_loss))
            best_epoch = int(m.get("best_epoch", 0))
            best_val_acc = m.get("best_val_acc")
        train_model: nn.Module = model
        if info.world > 1:
            train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        if cfg.compile:
            train_model = torch.compile(train_model)  # type: ignore[assignment]
        autocast = device.type == "cuda" and cfg.amp
        aug = Augment(**cfg.augment) if cfg.augment else None
        per_rank_batch = max(2, math.ceil(cfg.batch_size / info.world))
        micro = per_rank_batch
        history = _read_history(out / "history.csv", start_epoch) if ckpt is not None else []
        if info.main:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "config.json", json.dumps(cfg.to_json(), indent=2))
        steps_per_epoch = max(1, math.ceil(math.ceil(len(train_b) / info.world) / per_rank_batch))
        total_steps = cfg.epochs * steps_per_epoch
        meta = {"arch": cfg.arch, "classes": scheme, "input_size": size,
                "patch_size": table.patch_size or uniform_tile_size(table),
                "level": table.level, "mpp": table.mpp}
        train_labels = train_b.labels_list()
        loss_weight = None
        if cfg.balance == "loss":
            loss_weight = class_weights(train_labels, len(scheme)).to(device)
        if cfg.balance != "none":
            counts = table.counts(train_b.indices)
            warn_fn(f"class balance by {cfg.balance}: training counts "
                    + ", ".join(f"{k} {v}" for k, v in counts.items()))
        if start_epoch >= cfg.epochs:
            warn_fn(f"{last_path} has already trained {start_epoch} epochs (--epochs {cfg.epochs})")

        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            lr = lr_at(cfg, epoch)
            for g in optimizer.param_groups:
                g["lr"] = lr
            torch.manual_seed(cfg.seed * 1000 + epoch)
            gen = torch.Generator(device=device).manual_seed(cfg.seed * 100_003 + epoch)
            if cfg.balance == "sampler":
                order = balanced_order(train_labels, info, cfg.seed, epoch)
            else:
                order = _order(len(train_b), info, cfg.seed, epoch, shuffle=True)
            if len(order) % per_rank_batch == 1:
                order = order[:-1]   # a batch of one breaks batch norm
            train_model.train()
            # loss*n and correct stay on the device until the epoch ends (no per-step sync);
            # the progress text reads the running loss at most once a second.
            ep_loss = torch.zeros((), dtype=torch.float64, device=device)
            ep_correct = torch.zeros((), dtype=torch.float64, device=device)
            ep_n = 0
            shown = 0.0
            t_train = time.perf_counter()
            for step, (x, y) in enumerate(train_b.iterate(order, per_rank_batch)):
                x = _prep(x, aug, gen, list(spec.mean), list(spec.std))
                while True:
                    try:
                        optimizer.zero_grad(set_to_none=True)
                        loss_sum: Any = 0.0
                        correct: Any = 0
                        chunks = list(range(0, x.shape[0], micro))
                        for ci, s in enumerate(chunks):
                            xs, ys = x[s:s + micro], y[s:s + micro]
                            with _NoSync(train_model, ci < len(chunks) - 1):
                                # The chunk's share of the batch loss (of its class
                                # weight when weighted), so accumulation equals one batch.
                                share = (xs.shape[0] / x.shape[0] if loss_weight is None else
                                         loss_weight[ys].sum() / loss_weight[y].sum())
                                ls, c = _train_micro(train_model, xs, ys, cfg, autocast, share,
                                                     loss_weight)
                            loss_sum += ls
                            correct += c
                        optimizer.step()
                        break
                    except (torch.OutOfMemoryError, RuntimeError) as exc:
                        if not _is_oom(exc):
                            raise
                        optimizer.zero_grad(set_to_none=True)
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
                        if micro <= 1:
                            raise CrcError("out of GPU memory even with a batch of 1; use a "
                                           "smaller --image-size or another device") from None
                        micro = max(1, micro // 2)
                        msg = (f"out of GPU memory: batch halved to {micro} (gradients accumulated "
                               f"to keep the batch of {per_rank_batch}); retrying")
                        warn_fn(msg)
                        yield Progress(epoch * steps_per_epoch + step, total_steps, msg)
                ep_loss += loss_sum
                ep_correct += correct
                ep_n += x.shape[0]
                text = f"epoch {epoch + 1}/{cfg.epochs}"
                now = time.perf_counter()
                if now - shown >= 1.0:
                    shown = now
                    text += f" loss {float(ep_loss) / max(1, ep_n):.3f}"
                yield Progress(epoch * steps_per_epoch + step + 1, total_steps, text)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_seconds = time.perf_counter() - t_train
            sums = _all_sum([float(ep_loss), float(ep_correct), float(ep_n)], info, device)
            train_loss = sums[0] / max(1.0, sums[2])
            train_acc = sums[1] / max(1.0, sums[2])
            val_loss = val_acc = val_bal = None
            if len(val_b):
                vl, vc, vn, per_class = _validate(model, val_b, info, cfg, spec.mean, spec.std,
                                                  autocast, per_rank_batch * 2, device,
                                                  len(scheme))
                val_loss, val_acc = vl / max(1.0, vn), vc / max(1.0, vn)
                recalls = [c / n for c, n in per_class if n > 0]
                val_bal = sum(recalls) / len(recalls) if recalls else None
            seconds = time.perf_counter() - t0
            row = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
                   "val_loss": val_loss, "val_acc": val_acc, "val_bal_acc": val_bal, "lr": lr,
                   "seconds": seconds,
                   "images_per_s": sums[2] / max(1e-9, train_seconds)}
            history.append(row)
            val_score = val_bal if cfg.best_metric == "balanced_acc" else val_acc
            score = (val_score if val_score is not None else train_acc,
                     val_loss if val_loss is not None else train_loss)
            improved = score[0] > best[0] or (score[0] == best[0] and score[1] < best[1])
            if improved:
                best, best_epoch, best_val_acc = score, epoch + 1, val_acc
            metrics = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
                       "val_loss": val_loss, "val_acc": val_acc, "val_bal_acc": val_bal,
                       "best_metric": cfg.best_metric, "best_score": best[0],
                       "best_val_acc": best_val_acc,
                       "best_val_loss": best[1] if math.isfinite(best[1]) else None,
                       "best_epoch": best_epoch}
            if info.main:
                sched = {"milestones": list(cfg.milestones), "gamma": cfg.gamma,
                         "last_epoch": epoch + 1, "lr": lr}
                if improved:
                    save_checkpoint(best_path, model, **meta, config=cfg.to_json(),
                                    epoch=epoch + 1, scheduler=sched, metrics=metrics,
                                    half=cfg.half_checkpoint)
                if (epoch + 1) % cfg.save_every == 0 or epoch + 1 == cfg.epochs:
                    save_checkpoint(last_path, model, **meta, config=cfg.to_json(),
                                    epoch=epoch + 1, optimizer=optimizer.state_dict(),
                                    scheduler=sched, metrics=metrics)
                _write_history(out / "history.csv", history)
            _barrier(info)
            yield Progress((epoch + 1) * steps_per_epoch, total_steps,
                           f"epoch {epoch + 1}/{cfg.epochs} done", payload=dict(row))

        summary = {
            "out": str(out), "arch": cfg.arch, "classes": scheme.names, "epochs": cfg.epochs,
            "image_size": size, "best_epoch": best_epoch,
            "best_val_acc": best_val_acc, "best_metric": cfg.best_metric,
            "best_score": best[0] if best[0] >= 0 else None, "history": history,
            "last": str(last_path), "best": str(best_path), "skipped": len(skipped),
            "train_images": len(train_b), "val_images": len(val_b), "world_size": info.world,
            "cache": cache, "device": str(device), "micro_batch": micro,
            "test_images": len(split.test),
            "counts": {"train": table.counts(train_b.indices), "val": table.counts(val_b.indices),
                       "test": table.counts(split.test)},
        }
        if info.main:
            atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
        return summary
    finally:
        if info.created and dist.is_initialized():
            dist.destroy_process_group()


def _validate(model: nn.Module, batches: _Batches, info: DistInfo, cfg: TrainConfig,
              mean: tuple[float, ...], std: tuple[float, ...], autocast: bool, batch: int,
              device: torch.device, n_classes: int,
              ) -> tuple[float, float, float, list[tuple[float, float]]]:
    """Summed loss, correct, count and per class (correct, count) over all ranks."""
    model.eval()
    order = _order(len(batches), info, 0, 0, shuffle=False)
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
    s = _all_sum(sums, info, device)
    return s[0], s[1], s[2], [(s[3 + 2 * c], s[4 + 2 * c]) for c in range(n_classes)]
