"""Calibration of a static int8 model (``--quantize int8-static``) on the run's training images.

Static quantisation fixes each activation's int8 range from images run through the float model.
Those images must be ones the model trained on: a test image would let the test set choose
something, and the figures on it would no longer be honest. They are found as evaluation finds
its test images, by content (:mod:`crc_core.splits`): the checkpoint's split record names the
training images, and a labelled set (CSV, dataset folder, image folder) is searched for them, so a
moved or copied dataset works. Up to ``n`` of them, drawn with a fixed seed, are decoded, stain
normalised and resampled exactly as evaluation and prediction do, and the quantised model is cached
beside the float export (:func:`crc_core.inference.backends.export_static`), with a note saying
what calibrated it.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from crc_core.errors import ConfigError
from crc_core.jobs import Event, Progress

__all__ = ["CALIBRATION_IMAGES", "cached_note", "calibrate", "ensure_static_model", "static_model",
           "training_rows"]

#: Training images the int8 ranges are fitted on (ONNX Runtime's MinMax calibration).
CALIBRATION_IMAGES = 64


def _record(ckpt: dict[str, Any]) -> Any:
    """The checkpoint's split record; refused when it names no training image."""
    from crc_core.splits import SplitRecord

    record = SplitRecord.from_json(ckpt.get("split"))
    if record is None or not record.train:
        raise ConfigError("--quantize int8-static: the checkpoint records no split, so its "
                          "training images cannot be told apart; use --quantize none")
    return record


def training_rows(ckpt: dict[str, Any], data: str | Path, eligible: list[int], keys: list[Any]
                  ) -> list[int]:
    """The rows of ``data`` (``eligible`` rows with their content ``keys``) that are the run's
    training images; refused when there are none."""
    record = _record(ckpt)
    rows = [i for i, k in zip(eligible, keys, strict=True) if record.role(k) == "train"]
    if not rows:
        raise ConfigError(f"--calibrate {data}: none of its images is one this model trained on "
                          f"(its split record names {len(record.train)}); give the data it was "
                          f"trained on")
    return rows


def static_model(ckpt: dict[str, Any], checkpoint: str | Path) -> Any:
    """The float model of ``ckpt`` on the CPU, keyed by the file's fingerprint as its exports
    are; ``static_note`` of it says whether a calibrated int8 model is cached."""
    import torch

    from crc_core.inference.model import _file_fingerprint, load_model

    lm = load_model(ckpt, torch.device("cpu"))
    lm.identity["fingerprint"] = _file_fingerprint(Path(checkpoint))  # the export's cache key
    return lm


def cached_note(lm: Any) -> str | None:
    """The note of the cached int8 model of ``lm``, ``None`` when there is none yet."""
    from crc_core.inference.backends import export_path, static_note

    if export_path(lm, "int8-static").is_file():
        return static_note(lm) or "calibration unrecorded"
    return None


def calibrate(lm: Any, table: Any, rows: list[int], n: int = CALIBRATION_IMAGES, seed: int = 0,
              mpp: float | None = None) -> Generator[Event, None, str]:
    """Calibrate and cache the int8 model of ``lm`` on up to ``n`` of ``rows`` of ``table`` (the
    run's training images), drawn with ``seed``; returns the note of what calibrated it."""
    from crc_core.image_scale import scale_to_model, table_stated
    from crc_core.inference.backends import export_static
    from crc_core.preprocess import decode_windows

    pick = sorted(np.random.default_rng(seed).choice(rows, min(n, len(rows)), replace=False))
    meta = {"input_size": lm.input_size, "patch_size": lm.patch_size, "mpp": lm.mpp}
    stated = yield from table_stated(table, pick)
    factor, _, _ = scale_to_model(meta, table, mpp, stated)
    windows = []
    for j, i in enumerate(pick):
        windows.append(decode_windows(table.samples[i].path, factor, lm.input_size, lm.stain))
        yield Progress(j + 1, len(pick) + 1, "decoding calibration images (training images)")
    note = (f"calibrated on {len(pick)} of the run's {len(rows)} training images in "
            f"{table.source}")
    yield Progress(len(pick), len(pick) + 1, "calibrating int8 ranges")
    export_static(lm, np.concatenate(windows), note)
    return note


def ensure_static_model(checkpoint: str | Path, data: str | Path, opts: dict[str, Any] | None = None,
                        n: int = CALIBRATION_IMAGES, seed: int = 0, mpp: float | None = None,
                        ) -> Generator[Event, None, str]:
    """Make the cached static int8 model of ``checkpoint`` unless it exists (a job); returns the
    note of what calibrated it. ``opts``: the columns of ``data`` as ``crc evaluate`` takes them.
    (``crc evaluate`` calibrating on the data it scores reuses its own table instead:
    :func:`training_rows`, :func:`calibrate`.)"""
    from crc_core.evaluation import _eval_table
    from crc_core.models import load_checkpoint
    from crc_core.splits import content_keys

    ckpt = load_checkpoint(checkpoint, "cpu")  # read once: the model and its split record
    lm = static_model(ckpt, checkpoint)
    note = cached_note(lm)
    if note is not None:
        return note
    _record(ckpt)  # refused before the data is read when the checkpoint has no split
    opts = {"image_column": None, "label_column": None, "classes": None, "map": None,
            "label": None, **(opts or {})}
    ed = yield from _eval_table(ckpt, data, opts)  # its warnings: JobWarning events
    table = ed.table
    eligible = [i for i, s in enumerate(table.samples) if ed.to_model[s.label] is not None]
    keys = yield from content_keys(table, eligible)
    rows = training_rows(ckpt, data, eligible, keys)
    return (yield from calibrate(lm, table, rows, n, seed, mpp))
