"""Inference backends: PyTorch (any device) and ONNX Runtime (CPU), behind one :class:`Scorer`.

``crc predict``, ``crc evaluate`` and the Predict dialog all get their scorer from
:func:`make_scorer`, so a checkpoint scores the same in the report and on the slide whichever
backend runs it. Backends:

- ``torch``: :class:`crc_core.runtime.Scorer` (channels_last; float16 autocast on CUDA).
- ``onnx``: the checkpoint exported once to ONNX (opset 17) with two outputs, the logits and the CAM
  layer's feature map, and run by ONNX Runtime's CPU provider with ``threads`` intra-op threads. CAM
  and Grad-CAM are computed from the exported feature map with the checkpoint's final linear layer
  (:func:`crc_core.cam.cams_from_features`), so neither needs a PyTorch forward pass. Test-time
  augmentation runs the eight views through the session. Normalisation (uint8 -> float) is the same
  PyTorch code for both backends.
- ``auto``: ONNX Runtime on the CPU when it can be imported, PyTorch on CUDA; on the CPU without
  ONNX Runtime it falls back to PyTorch and says so (``Scorer.fallback``).

The export is cached in the user cache folder (``$CRC_CACHE_DIR`` or platformdirs'
``user_cache_dir("crc-workbench")``, subfolder ``onnx``), named by a key over the checkpoint's
content fingerprint, the architecture, the input size, the quantisation and the export format, and
written atomically; a second prediction with the same checkpoint reuses it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
import warnings
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from crc_core.atomic import atomic_path
from crc_core.errors import ConfigError
from crc_core.inference.model import LoadedModel
from crc_core.runtime import Scorer

__all__ = [
    "BACKENDS", "QUANTIZE", "OnnxScorer", "cache_dir", "choose_backend", "export_onnx",
    "export_static", "make_scorer", "onnxruntime_version", "static_note",
]

BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx")
QUANTIZE: tuple[str, ...] = ("none", "int8", "int8-static")
#: Bump when the exported graph changes: it is part of the cache key.
EXPORT_FORMAT = 1
OPSET = 17
APP_NAME = "crc-workbench"

_weights_keys: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


def onnxruntime_version() -> tuple[str | None, str]:
    """ONNX Runtime's version, or ``None`` and why it cannot be imported."""
    try:
        import onnxruntime
    except ImportError as exc:  # absent, or a broken install
        return None, f"ONNX Runtime cannot be imported ({exc})"
    return str(onnxruntime.__version__), ""


def choose_backend(name: str, device: torch.device) -> tuple[str, str | None]:
    """The backend that runs (``torch`` or ``onnx``) and, for ``auto``, why it fell back.

    Raises
    ------
    ConfigError
        Unknown name; ``onnx`` without ONNX Runtime or on a GPU.
    """
    name = str(name).strip().lower()
    if name not in BACKENDS:
        raise ConfigError(f"--backend {name!r}: choose one of {', '.join(BACKENDS)}")
    if name == "torch":
        return "torch", None
    version, why = onnxruntime_version()
    if name == "onnx":
        if version is None:
            raise ConfigError(f"--backend onnx: {why}; install it (pip install onnxruntime) or "
                              f"use --backend torch")
        if device.type != "cpu":
            raise ConfigError(f"--backend onnx runs on the CPU, not {device}; use --device cpu "
                              f"or --backend torch")
        return "onnx", None
    if device.type != "cpu":
        return "torch", None
    if version is None:
        return "torch", (f"{why}: running PyTorch on the CPU instead, about half the speed "
                         f"(pip install onnxruntime)")
    return "onnx", None


def cache_dir() -> Path:
    """Where exported models are kept (``$CRC_CACHE_DIR/onnx`` or the user cache folder)."""
    env = os.environ.get("CRC_CACHE_DIR")
    if env:
        return Path(env) / "onnx"
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME)) / "onnx"


def _weights_key(lm: LoadedModel) -> str:
    """The checkpoint's content fingerprint, else a hash of the weights (model built in memory)."""
    fp = lm.identity.get("fingerprint")
    if fp:
        return str(fp)
    key = _weights_keys.get(lm.model)
    if key is None:
        h = hashlib.sha256()
        for name, t in lm.model.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        key = _weights_keys[lm.model] = h.hexdigest()
    return key


def export_path(lm: LoadedModel, quantize: str = "none") -> Path:
    """The cache file of ``lm``'s export (it may not exist yet)."""
    spec = {"weights": _weights_key(lm), "arch": lm.arch, "input_size": int(lm.input_size),
            "quantize": quantize, "format": EXPORT_FORMAT, "opset": OPSET}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]
    q = "" if quantize == "none" else f"-{quantize}"
    return cache_dir() / f"{lm.arch or 'model'}-{int(lm.input_size)}{q}-{key}.onnx"


class _CamOutputs(nn.Module):
    """The classifier with two outputs: logits ``(N, C)`` and the CAM feature map (N, K, h, w)."""

    def __init__(self, model: nn.Module, arch: str | None) -> None:
        super().__init__()
        self.model = model
        self.arch = arch

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from crc_core.cam import features_and_logits

        feats, logits = features_and_logits(self.model, self.arch, x)
        return logits, feats


def _export_fp32(lm: LoadedModel, target: Path) -> None:
    wrapper = _CamOutputs(lm.model, lm.arch).to("cpu").eval()
    x = torch.zeros(2, 3, int(lm.input_size), int(lm.input_size))
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, (x,), str(target), input_names=["input"],
            output_names=["logits", "features"], opset_version=OPSET, dynamo=False,
            dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}, "features": {0: "n"}},
        )


def export_onnx(lm: LoadedModel, quantize: str = "none") -> tuple[Path, bool]:
    """The ONNX file of ``lm`` (exported now when not cached) and whether it was exported now.

    ``quantize="int8"``: ONNX Runtime's dynamic int8 quantisation of the float export (weights int8,
    activations quantised per batch; see ``benchmarks/RESULTS.md`` for its speed and accuracy).
    ``"int8-static"``: only from the cache, where :func:`export_static` put it (it needs the run's
    training images to calibrate on; :mod:`crc_core.inference.calibration`).
    """
    if quantize not in QUANTIZE:
        raise ConfigError(f"--quantize {quantize!r}: choose one of {', '.join(QUANTIZE)}")
    target = export_path(lm, quantize)
    if target.is_file():
        return target, False
    if quantize == "int8-static":
        raise ConfigError(
            "--quantize int8-static: this checkpoint has no calibrated int8 model yet; give "
            "--calibrate with the data it was trained on (its training images, found by the run's "
            "split record, calibrate it once; the result is cached)")
    target.parent.mkdir(parents=True, exist_ok=True)
    if quantize == "none":
        with atomic_path(target) as tmp:
            _export_fp32(lm, tmp)
        return target, True
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32, _ = export_onnx(lm, "none")
    logging.disable(logging.WARNING)  # its advice to pre-process the model, on the root logger
    try:
        with atomic_path(target) as tmp:
            quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)
    return target, True


def static_note(lm: LoadedModel) -> str | None:
    """How the cached static int8 model of ``lm`` was calibrated, or ``None`` when there is none."""
    side = export_path(lm, "int8-static").with_suffix(".json")
    try:
        return str(json.loads(side.read_text(encoding="utf-8"))["calibration"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def export_static(lm: LoadedModel, windows: np.ndarray, calibration: str) -> Path:
    """Quantise ``lm``'s float export to int8 (QDQ: int8 weights per channel, uint8 activations
    with MinMax ranges) calibrated on ``windows`` (uint8 ``(N, H, W, 3)`` at the model's input
    size, normalised as every input is), cache it with a note of ``calibration`` and return it."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from crc_core.preprocess import to_float_input

    if not len(windows):
        raise ConfigError("--quantize int8-static: no calibration image")
    fp32, _ = export_onnx(lm, "none")
    target = export_path(lm, "int8-static")
    batches = [np.ascontiguousarray(to_float_input(
        torch.from_numpy(np.ascontiguousarray(windows[i:i + 16])).permute(0, 3, 1, 2),
        lm.mean, lm.std).numpy(), dtype=np.float32) for i in range(0, len(windows), 16)]

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = list(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return {"input": self.left.pop(0)} if self.left else None

    with atomic_path(target.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps({"calibration": calibration, "images": len(windows)}),
                       encoding="utf-8")
    logging.disable(logging.WARNING)  # per-layer notices on the root logger
    try:
        # the shape-inferred intermediate model is scratch: a temporary folder, not the cache
        with tempfile.TemporaryDirectory() as scratch, atomic_path(target) as tmp:
            pre = Path(scratch) / "pre.onnx"
            quant_pre_process(str(fp32), str(pre))
            quantize_static(str(pre), str(tmp), _Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            per_channel=True, calibrate_method=CalibrationMethod.MinMax)
    finally:
        logging.disable(logging.NOTSET)
    return target


@functools.lru_cache(maxsize=4)
def _session(path: str, threads: int) -> Any:
    """An ONNX Runtime CPU session of ``path`` (kept: repeated predictions reuse it)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def default_threads() -> int:
    """CPU threads of the model when none are asked for: PyTorch's default (physical cores)."""
    return max(1, torch.get_num_threads())


class OnnxScorer(Scorer):
    """A :class:`~crc_core.runtime.Scorer` whose forward pass is an ONNX Runtime CPU session."""

    backend = "onnx"
    channels_last = False  # ONNX Runtime takes contiguous NCHW input

    def __init__(self, lm: LoadedModel, batch_size: int = 32, tta: bool = False,
                 threads: int = 0, quantize: str = "none") -> None:
        self.path, self.exported = export_onnx(lm, quantize)
        super().__init__(lm.model, lm.arch, lm.mean, lm.std, torch.device("cpu"), batch_size,
                         amp=False, tta=tta)
        self.threads = int(threads) or default_threads()
        self.quantize = quantize
        self.static_note = static_note(lm) if quantize == "int8-static" else None
        self.session = _session(str(self.path), self.threads)

    @property
    def backend_statement(self) -> str:
        version, _ = onnxruntime_version()
        return f"ONNX Runtime {version} on the CPU, {self.threads} threads{self._q_phrase}"

    @property
    def _q_phrase(self) -> str:
        if self.quantize == "int8":
            return ", int8 dynamic quantisation"
        if self.quantize == "int8-static":
            return f", int8 static quantisation ({self.static_note or 'calibration unrecorded'})"
        return ""

    @property
    def precision(self) -> str:
        return {"int8": "int8 (dynamic quantisation)",
                "int8-static": "int8 (static quantisation)"}.get(self.quantize, "float32")

    def _run(self, x: torch.Tensor, names: list[str]) -> list[np.ndarray]:
        feed = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)  # (N, 3, H, W)
        return self.session.run(names, {"input": feed})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, C)`` float32 of a normalised batch."""
        return torch.from_numpy(self._run(x, ["logits"])[0])

    def logits_and_cams(self, x: torch.Tensor, cam_class: int | None, cam_method: str
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        from crc_core.cam import cams_from_features, classifier_layer

        logits, feats = self._run(x, ["logits", "features"])
        head = classifier_layer(self.model, self.arch)
        return cams_from_features(torch.from_numpy(feats), torch.from_numpy(logits), head,
                                  cam_class, cam_method)  # type: ignore[arg-type]


def make_scorer(lm: LoadedModel, device: torch.device, batch_size: int, amp: bool | None = None,
                tta: bool = False, backend: str = "auto", threads: int = 0,
                quantize: str = "none") -> Scorer:
    """The scorer of a loaded model for ``crc predict`` and ``crc evaluate`` (see module docstring).

    ``threads`` (0: PyTorch's default) sets ONNX Runtime's intra-op threads, or PyTorch's on the
    CPU.
    The checkpoint's stain normalisation is applied where images are read, not here.
    """
    if threads < 0:
        raise ConfigError(f"--threads must be 0 (default) or a positive count, got {threads}")
    chosen, fallback = choose_backend(backend, device)
    if quantize != "none" and chosen != "onnx":
        raise ConfigError(f"--quantize {quantize} needs the onnx backend (ONNX Runtime on the CPU)")
    if chosen == "onnx":
        return OnnxScorer(lm, batch_size, tta, threads, quantize)
    if threads and device.type == "cpu":
        torch.set_num_threads(int(threads))
    scorer = Scorer(lm.model, lm.arch, lm.mean, lm.std, device, batch_size, amp=amp, tta=tta)
    scorer.fallback = fallback
    return scorer
