"""The network of a run: built from the options or the resumed checkpoint, on its device in
channels_last, with its optimizer, DistributedDataParallel under torchrun, ``torch.compile`` and
the weights' moving average (EMA)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from crc_core.errors import CheckpointError
from crc_core.models import build_model, uses_aux
from crc_core.training.config import make_optimizer
from crc_core.training.state import TrainingRun


def build_run_model(run: TrainingRun, ckpt: dict[str, Any] | None) -> None:
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


