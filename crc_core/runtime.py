"""Where and how a model runs: device, precision, out-of-memory back-off, test-time augmentation.

One module for training, evaluation and prediction, so that a checkpoint scores the same in
``crc evaluate``'s report and on a slide in ``crc predict``: both hand uint8 batches to a
:class:`Scorer`, which normalises them with :func:`crc_core.preprocess.to_float_input`, runs the
model under the same precision (float32 on the CPU; float16 autocast on CUDA unless ``amp=False``),
optionally averages the eight flips and rotations (``tta``), and halves the batch and retries on
CUDA out-of-memory. Training (:mod:`crc_core.training`) takes its device from
:func:`resolve_device`, its precision from :func:`training_autocast` (bfloat16 on CUDA: float32's
range, so no loss scaling; its validation runs the same) and its out-of-memory back-off from
:func:`is_oom` and :func:`halved_batch` (it halves the micro-batch and accumulates gradients).

Test-time augmentation (TTA). The eight symmetries of the square (four 90-degree rotations, each
with and without a horizontal flip) are applied to each batch and the softmax probabilities
averaged. H&E patches have no preferred orientation and the recommended training preset augments
with the same flips and rotations, so this is a cheap ensemble at eight times the compute. CAM maps
are computed on the unaugmented pass only (a statement says so where CAM is shown).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from torch import nn

from crc_core.errors import ConfigError, CrcError
from crc_core.preprocess import to_float_input

__all__ = [
    "OOM_ERRORS", "TTA_VIEWS", "Scorer", "describe", "halved_batch", "inference_autocast",
    "is_oom", "resolve_device", "training_autocast",
]

#: Number of views averaged by test-time augmentation.
TTA_VIEWS = 8


def resolve_device(name: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local rank>`` when CUDA is available, else ``cpu``.

    Raises :class:`ConfigError` for ``cuda`` without a GPU or an unknown name.
    """
    if isinstance(name, torch.device):
        return name
    d = str(name).strip().lower()
    if d == "auto":
        d = "cuda" if torch.cuda.is_available() else "cpu"
    if d.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA GPU is available here; use cpu or auto")
        if d == "cuda":
            return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        try:
            return torch.device(d)
        except RuntimeError:
            raise ConfigError(f"--device {name!r}: write cuda or cuda:N") from None
    if d != "cpu":
        raise ConfigError(f"--device {name!r}: choose auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


#: What an out-of-memory error is raised as (catch these, then check :func:`is_oom`).
OOM_ERRORS = (torch.OutOfMemoryError, RuntimeError)


def is_oom(exc: BaseException) -> bool:
    """True for CUDA (or other accelerator) out-of-memory errors."""
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def halved_batch(batch: int, device: torch.device, advice: str) -> int:
    """The batch to retry with after running out of memory with ``batch`` images: half of it.

    Frees the CUDA cache first. Raises :class:`CrcError` (ending with ``advice``, what to change)
    when ``batch`` was already 1.
    """
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if batch <= 1:
        raise CrcError(f"out of memory on {device} even with a batch of 1; {advice}") from None
    return max(1, batch // 2)


def inference_autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[Any]:
    """float16 autocast on CUDA when ``amp``, else nothing (the CPU always runs float32)."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def training_autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast on CUDA when ``amp``, else nothing: training's forward passes and its
    validation (the CPU always runs float32)."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _views(x: torch.Tensor) -> list[torch.Tensor]:
    """The eight dihedral views of a square batch ``(N, C, H, W)``."""
    out = []
    for flip in (False, True):
        base = x.flip(-1) if flip else x
        for k in range(4):
            out.append(torch.rot90(base, k, dims=(-2, -1)) if k else base)
    return out


class Scorer:
    """A classifier on its device: uint8 batches in, class probabilities (and CAM tiles) out.

    Parameters
    ----------
    model
        The network (eval mode is set here).
    arch
        Registry name (for CAM), or ``None`` for a generic module (see :mod:`crc_core.cam`).
    mean, std
        Input normalisation of the checkpoint.
    device
        Where it runs.
    batch_size
        Images per forward pass; halved on CUDA out-of-memory (``messages`` says so).
    amp
        float16 autocast on CUDA (default on there; never on the CPU).
    tta
        Average the eight flips and rotations (see module docstring).
    """

    def __init__(self, model: nn.Module, arch: str | None, mean: Any, std: Any,
                 device: torch.device, batch_size: int = 32, amp: bool | None = None,
                 tta: bool = False) -> None:
        self.model = model
        self.arch = arch
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.device = device
        self.batch_size = max(1, int(batch_size))
        self.amp = (device.type == "cuda") if amp is None else bool(amp)
        self.tta = bool(tta)
        self.messages: list[str] = []
        #: Why the requested backend was not used (``auto`` without ONNX Runtime), or ``None``.
        self.fallback: str | None = None
        model.to(device).eval()
        if self.channels_last:
            model.to(memory_format=torch.channels_last)

    #: Registry name of the backend (see :mod:`crc_core.inference.backends`).
    backend = "torch"
    #: Model and input in channels_last, on the CPU too: 1.2-1.7x the contiguous forward pass there
    #: (benchmarks/RESULTS.md, "Inference backends on the CPU").
    channels_last = True

    @property
    def backend_statement(self) -> str:
        """One phrase on what runs the model, e.g. ``PyTorch 2.14.1 on cpu (channels_last, 2
        threads)``."""
        where = f"{self.device}" + (f", {torch.get_num_threads()} threads"
                                    if self.device.type == "cpu" else "")
        return f"PyTorch {torch.__version__.split('+')[0]} on {where}, channels_last"

    @property
    def precision(self) -> str:
        """What the report states: ``float32`` or ``float16 autocast``."""
        return "float16 autocast" if self.amp and self.device.type == "cuda" else "float32"

    def to_input(self, imgs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Normalised float input on the device from ``(N, H, W, 3)`` numpy or ``(N, 3, H, W)``
        torch uint8."""
        if isinstance(imgs, np.ndarray):
            a = np.ascontiguousarray(imgs)
            # a read-only array (a memory-mapped or shared buffer) is copied: torch cannot wrap it
            t = torch.from_numpy(a if a.flags.writeable else a.copy()).permute(0, 3, 1, 2)
        else:
            t = imgs
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True) if t.device.type == "cpu" \
                else t.to(self.device)
        return to_float_input(t, self.mean, self.std, channels_last=self.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Bare forward pass: float32 logits of a normalised batch."""
        from crc_core.models import main_logits

        with torch.inference_mode(), inference_autocast(self.device, self.amp):
            return main_logits(self.model(x)).float()

    def _probs(self, x: torch.Tensor) -> torch.Tensor:
        if not self.tta:
            return torch.softmax(self.forward(x), dim=1)
        acc = None
        for v in _views(x):
            p = torch.softmax(self.forward(v.contiguous()), dim=1)
            acc = p if acc is None else acc + p
        assert acc is not None
        return acc / TTA_VIEWS

    def logits_and_cams(self, x: torch.Tensor, cam_class: int | None, cam_method: str
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(N, C)`` and raw maps ``(N, h, w)`` of one pass (see :mod:`crc_core.cam`)."""
        from crc_core.cam import compute_cams

        with inference_autocast(self.device, self.amp):
            return compute_cams(self.model, self.arch, x, cam_class, cam_method)  # type: ignore[arg-type]

    def _batch(self, x: torch.Tensor, cam: bool, cam_class: int | None, cam_method: str,
               cam_tile: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not cam:
            return self._probs(x), None
        from crc_core.cam import normalize_cams, upsample_cams

        logits, raw = self.logits_and_cams(x, cam_class, cam_method)
        probs = self._probs(x) if self.tta else torch.softmax(logits.float(), dim=1)
        tiles = upsample_cams(normalize_cams(raw), cam_tile)
        if cam_class is not None:
            tiles = tiles * probs[:, cam_class, None, None]
        return probs, tiles

    def run(self, imgs: np.ndarray | torch.Tensor, cam: bool = False, cam_class: int | None = None,
            cam_method: str = "cam", cam_tile: int = 1, n_classes: int | None = None,
            ) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities ``(N, C)`` float32 and CAM tiles ``(N, cam_tile, cam_tile)`` (or ``None``).

        ``imgs`` is ``(N, H, W, 3)`` numpy or ``(N, 3, H, W)`` torch uint8 at the input size.
        """
        n = len(imgs)
        probs_out: list[np.ndarray] = []
        cams_out: list[np.ndarray] = []
        i = 0
        while i < n:
            bs = min(self.batch_size, n - i)
            try:
                p, t = self._batch(self.to_input(imgs[i:i + bs]), cam, cam_class, cam_method,
                                   cam_tile)
                probs_out.append(p.cpu().numpy().astype(np.float32))
                if t is not None:
                    cams_out.append(t.cpu().numpy().astype(np.float32))
            except OOM_ERRORS as exc:
                if not is_oom(exc):
                    raise
                self._halve(bs)
                continue
            i += bs
        k = n_classes if n_classes is not None else 0
        probs = np.concatenate(probs_out) if probs_out else np.zeros((0, k), np.float32)
        return probs, (np.concatenate(cams_out) if cams_out else None)

    def _halve(self, bs: int) -> None:
        self.batch_size = halved_batch(bs, self.device, "use --device cpu or free GPU memory")
        self.messages.append(f"out of memory on {self.device} with batch size {bs}; retrying "
                             f"with batch size {self.batch_size}")


def describe(scorer: Scorer) -> dict[str, Any]:
    """Plain-JSON statement of how images were scored (for metrics.json and prediction files)."""
    from crc_core.preprocess import RESAMPLING

    return {"device": str(scorer.device), "precision": scorer.precision,
            "tta": TTA_VIEWS if scorer.tta else 1, "resampling": RESAMPLING,
            "backend": scorer.backend, "backend_statement": scorer.backend_statement,
            "fallback": scorer.fallback}

