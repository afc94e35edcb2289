"""One runtime for training, evaluation and prediction: device choice, precision and the
out-of-memory back-off live in ``crc_core.runtime`` and nowhere else in the core (issue 16)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from crc_core import runtime
from crc_core.errors import CrcError

ROOT = Path(__file__).resolve().parents[2]

# Calls that decide where or how a model runs: only crc_core/runtime.py makes them.
RUNTIME_CALLS = {"torch.autocast", "torch.cuda.empty_cache", "torch.cuda.amp.autocast"}


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def runtime_rules_outside(files: list[Path]) -> list[str]:
    """``path:line what`` for each autocast, CUDA cache release, OOM exception type, CUDA device
    built by hand or ``resolve_device`` defined outside the runtime module."""
    out = []
    for p in files:
        rel = p.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            what = None
            if isinstance(node, ast.Call):
                name = _dotted(node.func)
                first = node.args[0] if node.args else None
                if name in RUNTIME_CALLS:
                    what = name
                elif (name == "torch.device" and isinstance(first, ast.Constant)
                      and str(first.value).startswith("cuda")):
                    what = "torch.device('cuda', ...)"
            elif isinstance(node, ast.Attribute) and _dotted(node) == "torch.OutOfMemoryError":
                what = "torch.OutOfMemoryError"
            elif isinstance(node, ast.FunctionDef) and node.name == "resolve_device":
                what = "def resolve_device"
            if what:
                out.append(f"{rel}:{node.lineno} {what}")
    return out


def test_device_precision_and_oom_are_decided_in_the_runtime_only():
    files = [p for p in sorted((ROOT / "crc_core").rglob("*.py"))
             if p != ROOT / "crc_core" / "runtime.py"]
    found = runtime_rules_outside(files)
    assert not found, "use crc_core.runtime (resolve_device, training_autocast, " \
                      "inference_autocast, OOM_ERRORS, halved_batch): " + "; ".join(found)


def test_the_check_catches_offenders(tmp_path: Path):
    global ROOT
    src = tmp_path / "bad.py"
    src.write_text("import torch\n"
                   "def resolve_device(n):\n    return torch.device('cuda', 1)\n"
                   "with torch.autocast('cuda'):\n    pass\n"
                   "try:\n    pass\nexcept torch.OutOfMemoryError:\n    torch.cuda.empty_cache()\n")
    saved, ROOT = ROOT, tmp_path
    try:
        found = runtime_rules_outside([src])
    finally:
        ROOT = saved
    assert sorted(found) == sorted([
        "bad.py:2 def resolve_device", "bad.py:3 torch.device('cuda', ...)",
        "bad.py:4 torch.autocast", "bad.py:8 torch.OutOfMemoryError",
        "bad.py:9 torch.cuda.empty_cache"])


def test_training_evaluation_and_prediction_resolve_devices_alike():
    from crc_core import inference, training

    assert training.resolve_device is runtime.resolve_device
    assert inference.resolve_device is runtime.resolve_device
    assert runtime.resolve_device("cpu") == torch.device("cpu")


def test_under_torchrun_auto_is_this_process_gpu(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert runtime.resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert runtime.resolve_device("cuda", local_rank=3) == torch.device("cuda", 1)
    assert runtime.resolve_device("cuda:0", local_rank=1) == torch.device("cuda", 0)


def test_halved_batch_halves_and_refuses_below_one():
    cpu = torch.device("cpu")
    assert runtime.halved_batch(8, cpu, "advice") == 4
    assert runtime.halved_batch(3, cpu, "advice") == 1
    with pytest.raises(CrcError, match="even with a batch of 1; use --device cpu"):
        runtime.halved_batch(1, cpu, "use --device cpu")


def test_oom_errors_are_recognised():
    assert runtime.is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert runtime.is_oom(RuntimeError("CUDA error: out of memory"))
    assert not runtime.is_oom(RuntimeError("shape mismatch"))
    assert issubclass(torch.OutOfMemoryError, runtime.OOM_ERRORS)


def test_the_cpu_runs_float32_in_training_and_scoring():
    cpu = torch.device("cpu")
    for ctx in (runtime.training_autocast(cpu, True), runtime.inference_autocast(cpu, True)):
        with ctx:
            y = torch.nn.Linear(4, 2)(torch.ones(1, 4))
        assert y.dtype == torch.float32
