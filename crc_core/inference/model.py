"""A checkpoint ready for prediction (:class:`LoadedModel`); its classes in a project's scheme."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crc_core.classes import ClassDef, ClassScheme
from crc_core.errors import CheckpointError, ClassSchemeError


@dataclass
class LoadedModel:
    """A classifier ready for prediction, with what is needed to cut its windows.

    ``arch`` is the registry name (``resnet50`` ...) or ``None`` for a generic module with
    ``features`` and a linear ``classifier`` (see :mod:`crc_core.cam`). ``patch_size`` is the window
    side in pixels at ``level`` or at ``mpp`` µm/px; windows are resized to ``input_size``.
    """

    model: nn.Module
    arch: str | None
    scheme: ClassScheme
    input_size: int
    patch_size: int
    level: int | None = None
    mpp: float | None = None
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    identity: dict[str, Any] = field(default_factory=dict)
    patch_known: bool = True  # False: the checkpoint does not record its patch size
    stain: Any = None  # crc_core.stain.StainNormalizer the model was trained with, or None


def _file_fingerprint(path: Path) -> str:
    mib = 1 << 20
    size = path.stat().st_size
    h = hashlib.sha256(f"{size}:".encode())
    with open(path, "rb") as fh:
        h.update(fh.read(mib))
        if size > mib:
            fh.seek(max(mib, size - mib))
            h.update(fh.read(mib))
    return h.hexdigest()


def load_model(
    checkpoint_or_model: str | os.PathLike[str] | dict[str, Any] | LoadedModel,
    device: torch.device | str = "cpu",
) -> LoadedModel:
    """A :class:`LoadedModel` from a checkpoint path, a dict from ``load_checkpoint`` or itself.

    Raises
    ------
    CheckpointError
        Anything wrong with the checkpoint (see :func:`crc_core.models.load_checkpoint`).
    """
    if isinstance(checkpoint_or_model, LoadedModel):
        checkpoint_or_model.model.to(device).eval()
        return checkpoint_or_model
    from crc_core.models import load_checkpoint, model_from_checkpoint

    identity: dict[str, Any] = {}
    if isinstance(checkpoint_or_model, dict):
        ckpt = checkpoint_or_model
    elif isinstance(checkpoint_or_model, (str, os.PathLike)):
        path = Path(checkpoint_or_model)
        ckpt = load_checkpoint(path, map_location="cpu")
        identity = {
            "checkpoint": str(path.resolve()),
            "name": path.stem,
            "fingerprint": _file_fingerprint(path),
        }
    else:
        raise CheckpointError(
            f"expected a checkpoint path, a loaded checkpoint or a LoadedModel, "
            f"got {type(checkpoint_or_model).__name__}"
        )
    from crc_core.stain import from_checkpoint

    stain = from_checkpoint(ckpt)
    model, meta = model_from_checkpoint(ckpt, device=device)
    identity.update({"arch": meta["arch"], "epoch": meta.get("epoch")})
    identity.setdefault("name", meta["arch"])
    input_size = int(meta["input_size"])
    patch = meta.get("patch_size")
    return LoadedModel(
        model=model,
        arch=meta["arch"],
        scheme=meta["scheme"],
        input_size=input_size,
        patch_size=int(patch) if isinstance(patch, int) and patch > 0 else input_size,
        level=meta.get("level") if isinstance(meta.get("level"), int) else None,
        mpp=float(meta["mpp"])
        if isinstance(meta.get("mpp"), (int, float)) and meta["mpp"] > 0
        else None,
        mean=tuple(float(v) for v in meta["mean"]),  # type: ignore[arg-type]
        std=tuple(float(v) for v in meta["std"]),  # type: ignore[arg-type]
        identity=identity,
        patch_known=isinstance(patch, int) and patch > 0,
        stain=stain,
    )


def map_scheme(
    model_scheme: ClassScheme, project_scheme: ClassScheme | None
) -> tuple[ClassScheme, str | None]:
    """The classes of a model's outputs expressed in the project's scheme.

    Each model class is matched to a project class by id, else by name (case-insensitive). When all
    match, the returned scheme has the project's ids, names and colours in the *model's* output order,
    and a message describes any renaming, reordering or project class the model cannot predict. When
    ``project_scheme`` is ``None`` or identical, the model's scheme is returned with no message.

    Raises
    ------
    ClassSchemeError
        A model class has no counterpart in the project (the checkpoint is refused).
    """
    if project_scheme is None:
        return model_scheme.copy(), None
    same = [(c.id, c.name.casefold()) for c in model_scheme] == [
        (c.id, c.name.casefold()) for c in project_scheme
    ]
    if same:
        return project_scheme.copy(), None
    mapped: list[ClassDef] = []
    missing: list[str] = []
    renamed: list[str] = []
    for c in model_scheme:
        p = next((q for q in project_scheme if q.id == c.id), None) or next(
            (q for q in project_scheme if q.name.casefold() == c.name.strip().casefold()), None
        )
        if p is None:
            missing.append(c.name)
            continue
        if p.name != c.name:
            renamed.append(f"{c.name} -> {p.name}")
        mapped.append(ClassDef(p.id, p.name, p.color, p.key, p.description))
    if missing:
        raise ClassSchemeError(
            f"the checkpoint's classes {', '.join(missing)} are not in the project's class scheme "
            f"({', '.join(project_scheme.names)}); add them to the project or use a checkpoint "
            f"trained on this scheme"
        )
    if len({c.id for c in mapped}) != len(mapped):
        raise ClassSchemeError(
            f"the checkpoint's classes ({', '.join(model_scheme.names)}) map onto the same project "
            f"class twice; the scheme cannot be mapped"
        )
    parts = [f"checkpoint classes ({', '.join(model_scheme.names)}) mapped to the project's scheme"]
    if renamed:
        parts.append("renamed " + ", ".join(renamed))
    unused = [q.name for q in project_scheme if q.id not in {c.id for c in mapped}]
    if unused:
        parts.append("never predicted: " + ", ".join(unused))
    return ClassScheme(mapped), "; ".join(parts)

