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

The package's modules are the phases of :func:`fit` (:mod:`.job`): :mod:`.config` (presets,
:class:`TrainConfig`, schedule, optimizer), :mod:`.data` (table, split, batches, balance, scale,
stain), :mod:`.model` (network, DDP, EMA), :mod:`.loop` (one training epoch, validation),
:mod:`.checkpoints` (resume, ``best.pt`` / ``last.pt``, ``history.csv``) and :mod:`.state` (what a
run carries between them). Every public name is importable from ``crc_core.training``.
"""

from __future__ import annotations

from crc_core.batches import balanced_order, class_weights
from crc_core.distributed import DistInfo
from crc_core.runs import HISTORY_COLUMNS
from crc_core.runtime import resolve_device
from crc_core.training.config import (
    AUTO_BALANCE_RATIO,
    BALANCE_MODES,
    BEST_METRICS,
    DEFAULT_PRESET,
    NO_AUGMENT,
    OPTIMIZERS,
    PRESET_HELP,
    PRESETS,
    SCHEDULES,
    TrainConfig,
    lr_at,
    make_config,
    make_optimizer,
    validate_config,
)
from crc_core.training.data import uniform_tile_size
from crc_core.training.job import fit
from crc_core.training.loop import compute_loss

__all__ = [
    "AUTO_BALANCE_RATIO", "BALANCE_MODES", "BEST_METRICS", "DEFAULT_PRESET", "HISTORY_COLUMNS",
    "NO_AUGMENT", "OPTIMIZERS", "PRESETS", "PRESET_HELP", "SCHEDULES", "DistInfo", "TrainConfig",
    "balanced_order", "class_weights", "compute_loss", "fit", "lr_at", "make_config",
    "make_optimizer", "resolve_device", "uniform_tile_size", "validate_config",
]
