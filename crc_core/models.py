"""Model registry and checkpoint format shared by training, evaluation and inference.

Three torchvision backbones are built with ``weights=None`` and a head of the class scheme's size:
``resnet50``, ``densenet121`` and ``inception_v3``. Each :class:`ModelSpec` names the native input
size, the smallest size the network accepts, the normalisation, the layer whose feature map class
activation maps (CAM) read and the final linear classifier. Images enter the networks as float
tensors of shape ``(N, 3, H, W)`` in [0, 1] normalised with ``(x - mean) / std``.

InceptionV3 keeps torchvision's auxiliary head: in training mode it returns
``InceptionOutputs(logits, aux_logits)``, in eval mode plain logits (the auxiliary head is then
unused). Its normalisation is the Inception one (mean = std = 0.5, i.e. inputs in [-1, 1]);
torchvision's ImageNet weights expect exactly that (their ``transform_input`` maps
ImageNet-normalised input to it), so ``transform_input`` is always off here.

Checkpoints are plain dicts (strings, numbers, lists, dicts and tensors only) written atomically
with ``torch.save`` and read with ``torch.load(weights_only=True)``: a file that would run code on
load is refused, never executed. Keys: ``format``, ``kind``, ``arch``, ``classes``
(``ClassScheme.to_json()``), ``num_classes``, ``input_size``, ``patch_size``, ``level``, ``mpp``,
``mean``, ``std``, ``model`` (state_dict), ``weights_dtype``, ``config``, ``epoch``, ``optimizer``,
``scheduler``, ``metrics``.
"""

from __future__ import annotations

import json
import math
import pickle
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crc_core.atomic import atomic_path
from crc_core.classes import ClassScheme
from crc_core.errors import CheckpointError, ClassSchemeError, ConfigError

CHECKPOINT_FORMAT = 1
CHECKPOINT_KIND = "crc-workbench-checkpoint"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ModelSpec:
    """What the rest of the workbench needs to know about one architecture.

    Attributes
    ----------
    name
        Registry key (``--arch``).
    input_size
        Native input side in pixels (224 or 299); any side >= ``min_input_size`` works.
    min_input_size
        Smallest input side the network accepts (in training mode for InceptionV3's auxiliary head).
    mean, std
        Per-channel normalisation of [0, 1] RGB input.
    cam_layer
        Attribute name of the module whose output is the CAM feature map (before global pooling).
    classifier_attr
        Attribute name of the final ``nn.Linear`` (its weights turn feature maps into CAMs).
    feature_channels
        Channels of the CAM feature map.
    imagenet_file
        File name of torchvision's ImageNet weights in the torch hub cache (``<hub>/checkpoints/``).
    imagenet_url
        Where that file comes from (named in the error when it is missing; nothing is downloaded).
    """

    name: str
    input_size: int
    min_input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    cam_layer: str
    classifier_attr: str
    feature_channels: int
    imagenet_file: str
    imagenet_url: str
    aux_classifier_attr: str | None = None
    aux_min_input_size: int | None = None


MODELS: dict[str, ModelSpec] = {
    "resnet50": ModelSpec(
        "resnet50", 224, 32, IMAGENET_MEAN, IMAGENET_STD, "layer4", "fc", 2048,
        "resnet50-0676ba61.pth", "https://download.pytorch.org/models/resnet50-0676ba61.pth"),
    "densenet121": ModelSpec(
        "densenet121", 224, 32, IMAGENET_MEAN, IMAGENET_STD, "features", "classifier", 1024,
        "densenet121-a639ec97.pth", "https://download.pytorch.org/models/densenet121-a639ec97.pth"),
    "inception_v3": ModelSpec(
        "inception_v3", 299, 75, INCEPTION_MEAN, INCEPTION_STD, "Mixed_7c", "fc", 2048,
        "inception_v3_google-0cc3c7bd.pth",
        "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
        aux_classifier_attr="AuxLogits.fc", aux_min_input_size=299),
}

_REQUIRED_KEYS = ("format", "arch", "classes", "model")


def get_spec(arch: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``arch``; :class:`ConfigError` naming the choices otherwise."""
    try:
        return MODELS[arch]
    except KeyError:
        raise ConfigError(
            f"unknown architecture {arch!r}; choose one of {', '.join(MODELS)}") from None


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DistributedDataParallel and/or ``torch.compile`` wrapper."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        elif isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        else:
            return model


def _get_attr(model: nn.Module, dotted: str) -> nn.Module:
    obj: Any = model
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _set_attr(model: nn.Module, dotted: str, value: nn.Module) -> None:
    *parents, last = dotted.split(".")
    obj: Any = model
    for part in parents:
        obj = getattr(obj, part)
    setattr(obj, last, value)


def _new(arch: str, num_classes: int, aux_logits: bool = True) -> nn.Module:
    import torchvision.models as tvm

    if arch == "resnet50":
        return tvm.resnet50(weights=None, num_classes=num_classes)
    if arch == "densenet121":
        return tvm.densenet121(weights=None, num_classes=num_classes)
    if arch == "inception_v3":
        return tvm.inception_v3(weights=None, num_classes=num_classes, aux_logits=aux_logits,
                                transform_input=False, init_weights=True)
    raise ConfigError(f"unknown architecture {arch!r}; choose one of {', '.join(MODELS)}")


def uses_aux(arch: str, image_size: int) -> bool:
    """Whether InceptionV3's auxiliary head can be trained at ``image_size`` (needs >= 299 px)."""
    spec = get_spec(arch)
    return spec.aux_min_input_size is not None and image_size >= spec.aux_min_input_size


def imagenet_weights_path(arch: str) -> Path:
    """Where torchvision keeps the ImageNet weights of ``arch`` in the local torch hub cache."""
    return Path(torch.hub.get_dir()) / "checkpoints" / get_spec(arch).imagenet_file


def classifier(model: nn.Module, arch: str) -> nn.Linear:
    """The final linear layer (its ``weight`` is ``(num_classes, feature_channels)``)."""
    return _get_attr(unwrap(model), get_spec(arch).classifier_attr)  # type: ignore[return-value]


def _replace_heads(model: nn.Module, spec: ModelSpec, num_classes: int) -> None:
    for attr in (spec.classifier_attr, spec.aux_classifier_attr):
        if attr is None or getattr(model, attr.split(".")[0], None) is None:
            continue
        old = _get_attr(model, attr)
        assert isinstance(old, nn.Linear)
        new = nn.Linear(old.in_features, num_classes)
        if spec.name == "densenet121":
            nn.init.constant_(new.bias, 0)
        _set_attr(model, attr, new)


def _load_plain_state(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a weights file (a CRC checkpoint or a bare state_dict), weights only."""
    obj = _torch_load(path, "cpu")
    if (isinstance(obj, dict) and obj.get("kind") == CHECKPOINT_KIND
            and isinstance(obj.get("model"), dict)):
        obj = obj["model"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise CheckpointError(
            f"{path}: not a weights file (expected a CRC checkpoint or a torch state_dict of "
            f"tensors)")
    # Checkpoints saved from DDP or torch.compile carry prefixes.
    out: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def _load_backbone(model: nn.Module, spec: ModelSpec, state: dict[str, torch.Tensor],
                   where: str) -> None:
    """Load every tensor but the classifier head(s) from ``state``; the rest must match exactly."""
    own = model.state_dict()
    heads = tuple(a + "." for a in (spec.classifier_attr, spec.aux_classifier_attr) if a)
    # InceptionV3's auxiliary branch is optional on both sides (trained only at >= 299 px).
    optional = ("AuxLogits.",) if spec.aux_classifier_attr else ()
    body = {k: v for k, v in state.items()
            if not k.startswith(heads) and not (k.startswith(optional) and k not in own)}
    own_body = {k for k in own if not k.startswith(heads)
                and not (k.startswith(optional) and k not in state)}
    missing = sorted(own_body - set(body))
    unexpected = sorted(set(body) - own_body)
    if missing or unexpected:
        detail = (f"missing {len(missing)} tensors (e.g. {missing[0]})" if missing
                  else f"{len(unexpected)} unknown tensors (e.g. {unexpected[0]})")
        raise CheckpointError(f"{where}: weights do not fit {spec.name}: {detail}; "
                              f"is it a checkpoint of another architecture?")
    for k, v in body.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(f"{where}: weights do not fit {spec.name}: tensor {k} has shape "
                                  f"{tuple(v.shape)}, expected {tuple(own[k].shape)}")
    # Heads are kept when they fit (same class count), else stay freshly initialised.
    for k, v in state.items():
        if k.startswith(heads) and k in own and tuple(v.shape) == tuple(own[k].shape):
            body[k] = v
    model.load_state_dict(body, strict=False)


def build_model(arch: str, num_classes: int, weights: str | Path | None = None,
                aux_logits: bool = True) -> nn.Module:
    """Build ``arch`` with a head of ``num_classes`` outputs.

    Parameters
    ----------
    arch
        ``resnet50``, ``densenet121`` or ``inception_v3``.
    num_classes
        Size of the classification head (>= 2).
    weights
        ``None`` (random initialisation), ``"imagenet"`` (torchvision's ImageNet weights, only when
        already in the local torch hub cache: nothing is downloaded) or a path to a weights file (a
        CRC checkpoint of any class count, or a torch state_dict) whose backbone is loaded; the
        head is
        kept only when its class count matches.
    aux_logits
        InceptionV3 only: build the auxiliary head (training at >= 299 px, see :func:`uses_aux`).

    Raises
    ------
    ConfigError
        Unknown architecture or class count below 2.
    CheckpointError
        Weights missing from the cache, unreadable, or of another architecture.
    """
    spec = get_spec(arch)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
    if weights is None or (isinstance(weights, str) and weights.lower() in ("", "none", "random")):
        return _new(arch, num_classes, aux_logits)
    if isinstance(weights, str) and weights.lower() == "imagenet":
        file = imagenet_weights_path(arch)
        if not file.is_file():
            raise CheckpointError(
                f"ImageNet weights for {arch} are not in the local torch cache ({file}); "
                f"nothing is "
                f"downloaded at run time: fetch {spec.imagenet_url} once (e.g. `python -c \"import "
                f"torchvision; torchvision.models.{arch}(weights='IMAGENET1K_V1')\"` on a machine "
                f"with internet) and copy it to {file}, or train with --weights none")
        state = _load_plain_state(file)
        model = _new(arch, 1000, aux_logits)
        _load_backbone(model, spec, state, str(file))
        _replace_heads(model, spec, num_classes)
        return model
    path = Path(weights)
    if not path.is_file():
        raise CheckpointError(
            f"weights file {path} not found; --weights accepts none, imagenet or a checkpoint file")
    state = _load_plain_state(path)
    model = _new(arch, num_classes, aux_logits)
    _load_backbone(model, spec, state, str(path))
    return model


# ----------------------------------------------------------------------------- CAM features
def features_and_logits(model: nn.Module, arch: str, x: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """The CAM feature map and the logits of one forward pass (no hooks, no auxiliary head).

    Parameters
    ----------
    model
        A model from :func:`build_model` (wrappers are unwrapped), normally in eval mode.
    x
        ``(N, 3, H, W)`` normalised input.

    Returns
    -------
    features, logits
        ``(N, C, h, w)`` feature map of the CAM layer (after its activation) and ``(N, K)`` logits.
        ``CAM_k = sum_c classifier(model, arch).weight[k, c] * features[:, c]``.
    """
    m: Any = unwrap(model)
    if arch == "resnet50":
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        feats = m.layer4(m.layer3(m.layer2(m.layer1(x))))
        logits = m.fc(torch.flatten(m.avgpool(feats), 1))
    elif arch == "densenet121":
        feats = F.relu(m.features(x))
        logits = m.classifier(torch.flatten(F.adaptive_avg_pool2d(feats, 1), 1))
    elif arch == "inception_v3":
        x = m._transform_input(x)
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a",
                     "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b",
                     "Mixed_7c"):
            x = getattr(m, name)(x)
        feats = x
        logits = m.fc(m.dropout(torch.flatten(m.avgpool(feats), 1)))
    else:
        get_spec(arch)
        raise AssertionError(arch)
    return feats, logits


def main_logits(output: Any) -> torch.Tensor:
    """Logits of a model output (InceptionV3's ``InceptionOutputs`` in training, else a tensor)."""
    if isinstance(output, torch.Tensor):
        return output
    return output[0]


# ----------------------------------------------------------------------------- checkpoints
def _plain(value: Any, where: str) -> Any:
    """``value`` as JSON-like plain types (numpy scalars, tuples, Paths converted)."""
    try:
        return json.loads(json.dumps(value, default=_json_default))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot store {where} in a checkpoint: {exc}") from None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return obj.tolist()
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not a plain value")


def model_state(model: nn.Module, half: bool = False) -> dict[str, torch.Tensor]:
    """A CPU copy of the model's state_dict (floating tensors in float16 when ``half``)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in unwrap(model).state_dict().items():
        v = v.detach().to("cpu")
        if half and v.is_floating_point():
            v = v.to(torch.float16)
        out[k] = v.clone()
    return out


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    arch: str,
    classes: ClassScheme,
    input_size: int | None = None,
    patch_size: int | None = None,
    level: int | None = None,
    mpp: float | None = None,
    config: dict[str, Any] | None = None,
    epoch: int | None = None,
    optimizer: dict[str, Any] | None = None,
    scheduler: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    half: bool = False,
    extra: dict[str, Any] | None = None,
    ema: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file, fsync, rename): a kill never leaves half a file.

    Parameters
    ----------
    path
        Target file (``.pt``).
    model
        The model (DDP / compiled wrappers are unwrapped).
    arch, classes
        Registry name and the class scheme whose order is the head's output order.
    input_size, patch_size, level, mpp
        Network input side, side of the extracted patches in pixels at ``level``, pyramid level and
        µm/px of the patches (``None`` when unknown): what prediction needs to cut the same patches.
    config, metrics
        Plain JSON-like dicts (training options, validation metrics).
    epoch, optimizer, scheduler
        Completed epochs and ``state_dict()``s needed to resume (optimizer state holds tensors).
    half
        Store floating weights as float16 (compact release checkpoints; the optimizer is then best
        left out).
    ema
        State of the moving average of the weights (``AveragedModel.state_dict()``), kept in
        ``last.pt`` so a resumed run continues it.
    extra
        Further plain entries (``split``: the run's split by content, ``preprocess``,
        ``mpp_source``); they may not replace the keys above.
    """
    spec = get_spec(arch)
    head = classifier(model, arch)
    if head.out_features != len(classes):
        raise CheckpointError(f"model has {head.out_features} outputs but the class scheme has "
                              f"{len(classes)} classes")
    ckpt: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "kind": CHECKPOINT_KIND,
        "arch": arch,
        "classes": _plain(classes.to_json(), "classes"),
        "num_classes": len(classes),
        "input_size": int(input_size or spec.input_size),
        "patch_size": None if patch_size is None else int(patch_size),
        "level": None if level is None else int(level),
        "mpp": None if mpp is None else float(mpp),
        "mean": list(spec.mean),
        "std": list(spec.std),
        "model": model_state(model, half=half),
        "weights_dtype": "float16" if half else "float32",
        "config": _plain(config or {}, "config"),
        "epoch": None if epoch is None else int(epoch),
        "optimizer": optimizer,
        "ema": ema,
        "scheduler": _plain(scheduler, "scheduler") if scheduler is not None else None,
        "metrics": _plain(metrics or {}, "metrics"),
        "torch_version": str(torch.__version__),
    }
    for k, v in (extra or {}).items():
        if k in ckpt:
            raise CheckpointError(f"checkpoint entry {k!r} cannot be replaced by an extra entry")
        ckpt[k] = _plain(v, k)
    target = Path(path)
    with atomic_path(target) as tmp:
        torch.save(ckpt, tmp)
    return target


def _torch_load(path: Path, map_location: Any) -> Any:
    """``torch.load(weights_only=True)``; every failure becomes one clear CheckpointError."""
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} not found")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): an interrupted copy?")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported operand" in text:  # text, or a pickle using opcodes weights never need
            raise CheckpointError(
                f"{path} is not a checkpoint: unreadable pickle data, or Python objects that could "
                f"run code when loaded; only weights are accepted, nothing was run"
            ) from None
        if "Weights only load failed" in text or "global" in text.lower():
            import re

            found = re.search(r"GLOBAL ([\w.]+)", text)
            what = f" ({found.group(1)})" if found else ""
            raise CheckpointError(
                f"checkpoint {path} refused: it holds Python objects{what} that could run code "
                f"when "
                f"loaded; only weights (tensors and plain values) are accepted, nothing was run"
            ) from None
        raise CheckpointError(f"{path} is not a checkpoint (unreadable pickle data)") from None
    except (EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or damaged ({type(exc).__name__}); "
                              f"use an intact copy (e.g. last.pt or best.pt)") from None
    except RuntimeError as exc:
        text = str(exc)
        if "zip archive" in text or "central directory" in text or "PytorchStreamReader" in text:
            raise CheckpointError(f"checkpoint {path} is truncated or damaged (not a whole torch "
                                  f"zip archive); use an intact copy") from None
        raise CheckpointError(f"checkpoint {path} cannot be read: {text.splitlines()[0]}") from None
    except (ValueError, TypeError, AttributeError, IndexError, KeyError, UnicodeDecodeError,
            OverflowError, MemoryError) as exc:
        raise CheckpointError(
            f"{path} is not a checkpoint (unreadable data: {type(exc).__name__})") from None
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {exc.strerror or exc}") from None


def _expected_names(expect: ClassScheme | Sequence[str] | int) -> list[str] | int:
    if isinstance(expect, ClassScheme):
        return expect.names
    if isinstance(expect, int):
        return expect
    return list(expect)


def read_checkpoint_header(path: str | Path) -> Any:
    """A checkpoint file read without its weights (``torch.load(weights_only=True, mmap=True)``:
    tensors memory-mapped, not read, and no code run), for the entries beside them (architecture,
    classes, stain normalisation, split). Not validated: callers check it is the dict they need.

    Raises :class:`CheckpointError` (the cause's first line) when the file is missing or
    unreadable.
    """
    import warnings

    p = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear error
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(f"{p} is not a readable CRC Workbench checkpoint ({first}); nothing "
                              f"was run") from None
    return obj


def load_checkpoint(
    path: str | Path,
    map_location: Any = "cpu",
    expect_arch: str | None = None,
    expect_classes: ClassScheme | Sequence[str] | int | None = None,
) -> dict[str, Any]:
    """Read and validate a checkpoint (``torch.load(weights_only=True)``: no code is ever run).

    Parameters
    ----------
    path
        The ``.pt`` file.
    map_location
        Passed to ``torch.load`` (``"cpu"``, a device).
    expect_arch
        Refuse a checkpoint of another architecture.
    expect_classes
        Refuse a checkpoint of another class scheme: a scheme or list of names (compared by name, in
        order, case-insensitively) or a class count.

    Returns
    -------
    dict
        The checkpoint dict, plus ``"scheme"``: the :class:`ClassScheme` it was trained on.

    Raises
    ------
    CheckpointError
        Missing, empty, truncated, not a checkpoint, a pickle that would run code, a newer format,
        an unknown or unexpected architecture, another class scheme, weights that do not fit.
    """
    p = Path(path)
    ckpt = _torch_load(p, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("kind") != CHECKPOINT_KIND or any(
            k not in ckpt for k in _REQUIRED_KEYS):
        hint = ""
        if isinstance(ckpt, dict) and ckpt and all(
                isinstance(v, torch.Tensor) for v in ckpt.values()):
            hint = " (it is a bare state_dict: use it with --weights to initialise a backbone)"
        raise CheckpointError(f"{p} is not a CRC Workbench checkpoint{hint}")
    fmt = ckpt.get("format")
    if not isinstance(fmt, int) or fmt > CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {p} has format {fmt!r}; this version reads format "
                              f"{CHECKPOINT_FORMAT} or older: update CRC Workbench")
    arch = ckpt.get("arch")
    if arch not in MODELS:
        raise CheckpointError(f"checkpoint {p} is of unknown architecture {arch!r}; "
                              f"known: {', '.join(MODELS)}")
    if expect_arch is not None and arch != expect_arch:
        raise CheckpointError(f"checkpoint {p} is a {arch} model, not {expect_arch}")
    try:
        scheme = ClassScheme.from_json(ckpt["classes"], where=f"{p} classes")
    except ClassSchemeError as exc:
        raise CheckpointError(f"checkpoint {p} has an invalid class scheme: {exc}") from None
    if len(scheme) < 2:
        raise CheckpointError(f"checkpoint {p} has {len(scheme)} class(es); at least 2 are needed")
    state = ckpt["model"]
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"checkpoint {p}: 'model' is not a state_dict of tensors")
    spec = MODELS[arch]
    w = state.get(spec.classifier_attr + ".weight")
    if w is None or w.ndim != 2 or w.shape[0] != len(scheme):
        raise CheckpointError(f"checkpoint {p}: classifier weights do not match its {len(scheme)} "
                              f"classes (damaged or edited checkpoint)")
    if expect_classes is not None:
        want = _expected_names(expect_classes)
        if isinstance(want, int):
            if want != len(scheme):
                raise CheckpointError(f"checkpoint {p} has {len(scheme)} classes "
                                      f"({', '.join(scheme.names)}), expected {want}")
        elif [n.casefold() for n in want] != [n.casefold() for n in scheme.names]:
            raise CheckpointError(
                f"checkpoint {p} was trained on another class scheme: {len(scheme)} classes "
                f"({', '.join(scheme.names)}), expected {len(want)} ({', '.join(want)})")
    for key in ("mean", "std"):
        v = ckpt.get(key)
        if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, int | float) for x in v)
                and all(math.isfinite(x) for x in v)):
            ckpt[key] = list(spec.mean if key == "mean" else spec.std)
    if not isinstance(ckpt.get("input_size"), int) or ckpt["input_size"] < spec.min_input_size:
        ckpt["input_size"] = spec.input_size
    ckpt["scheme"] = scheme
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], device: str | torch.device = "cpu"
                          ) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model of a loaded checkpoint, in eval mode on ``device``.

    Returns
    -------
    model, meta
        ``meta`` is the checkpoint without the weights and optimizer state: ``arch``, ``scheme``
        (:class:`ClassScheme`), ``classes``, ``input_size``, ``patch_size``, ``level``, ``mpp``,
        ``mean``, ``std``, ``config``, ``epoch``, ``metrics``.
    """
    if "scheme" not in ckpt:
        raise CheckpointError("model_from_checkpoint needs a dict returned by load_checkpoint")
    arch = ckpt["arch"]
    model = _new(arch, len(ckpt["scheme"]),
                 aux_logits=any(k.startswith("AuxLogits.") for k in ckpt["model"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "mismatched tensors"
        raise CheckpointError(f"checkpoint weights do not fit {arch}: {first}") from None
    model.to(device).eval()
    meta = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "ema")}
    return model, meta
