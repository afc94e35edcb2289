"""One epoch of training and one pass of validation.

A batch is one optimizer step over micro-batches: on CUDA out-of-memory the micro-batch is halved
and the batch retried, with gradients accumulated so the effective batch is unchanged. Sums stay on
the device until the epoch ends (no per-step synchronisation) and are added over ``torchrun`` ranks.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crc_core.batches import Batches, balanced_order, epoch_order
from crc_core.data import Augment, normalize
from crc_core.distributed import DistInfo, NoSync, all_sum
from crc_core.jobs import Progress, TrainingStep
from crc_core.models import get_spec, main_logits
from crc_core.runtime import OOM_ERRORS, halved_batch, is_oom, training_autocast
from crc_core.training.config import TrainConfig, lr_at
from crc_core.training.state import TrainingRun


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
    with training_autocast(x.device, autocast):
        out = model(x)
        loss = compute_loss(out, y, cfg, weight)
    (loss * scale).backward()
    correct = (main_logits(out).argmax(1) == y).sum()
    return loss.detach() * x.shape[0], correct


def _prep(x: torch.Tensor, aug: Augment | None, gen: torch.Generator | None,
          mean: list[float], std: list[float], size: int | None = None) -> torch.Tensor:
    """uint8 images -> the network's float input: augmented (training), area-averaged to ``size``
    when they were decoded larger (:attr:`Augment.resolution`), normalised."""
    xf = x.float().div_(255)
    if aug is not None:
        xf = aug(xf, gen)
    if size is not None and xf.shape[-1] != size:
        xf = torch.nn.functional.interpolate(xf, size=(size, size), mode="area")
    return normalize(xf, mean, std).contiguous(memory_format=torch.channels_last)


def _step(run: TrainingRun, x: torch.Tensor, y: torch.Tensor
          ) -> Generator[str, None, tuple[Any, Any]]:
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
        except OOM_ERRORS as exc:
            if not is_oom(exc):
                raise
            run.optimizer.zero_grad(set_to_none=True)
            run.micro = halved_batch(run.micro, run.device,
                                     "use a smaller --image-size or another device")
            msg = (f"out of GPU memory: batch halved to {run.micro} (gradients accumulated to "
                   f"keep the batch of {run.per_rank_batch}); retrying")
            run.warn(msg)
            yield msg


def train_epoch(run: TrainingRun, epoch: int
                ) -> Generator[Progress, None, tuple[float, float, float]]:
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
    where = TrainingStep(epoch + 1, cfg.epochs)
    for step, (x, y) in enumerate(run.train_b.iterate(order, run.per_rank_batch)):
        x = _prep(x, aug, gen, list(spec.mean), list(spec.std), run.size)
        stepper = _step(run, x, y)
        try:
            while True:
                yield Progress(base + step, total, next(stepper), where)
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
        yield Progress(base + step + 1, total, text, where)
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    sums = all_sum([float(ep_loss), float(ep_correct), float(ep_n)], run.info, run.device)
    return sums[0] / max(1.0, sums[2]), sums[1] / max(1.0, sums[2]), sums[2]


def validate(model: nn.Module, batches: Batches, info: DistInfo, mean: tuple[float, ...],
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
            with training_autocast(device, autocast):
                logits = main_logits(model(xf))
            acc[0] += F.cross_entropy(logits.float(), y, reduction="sum")
            hit = (logits.argmax(1) == y).double()
            acc[1::2] += torch.bincount(y, weights=hit, minlength=n_classes)[:n_classes]
            acc[2::2] += torch.bincount(y, minlength=n_classes)[:n_classes]
    per = acc.tolist()
    sums = [per[0], sum(per[1::2]), sum(per[2::2])] + per[1:]
    s = all_sum(sums, info, device)
    return s[0], s[1], s[2], [(s[3 + 2 * c], s[4 + 2 * c]) for c in range(n_classes)]
