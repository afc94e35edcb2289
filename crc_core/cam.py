"""Class activation maps: CAM (Zhou et al., 2016) and Grad-CAM for the GAP + linear classifiers.

All three registered architectures (``resnet50``, ``densenet121``, ``inception_v3``) end in a
convolutional feature map ``F`` of shape ``(N, K, h, w)``, global average pooling and one linear layer
``W`` (``(C, K)``). The CAM of class ``c`` is ``sum_k W[c, k] * F[:, k]`` (``(N, h, w)``, the bias is left
out as in the paper). Grad-CAM weights each channel by the spatial mean of ``d score_c / d F``; for a
GAP + linear head that gradient is ``W[c, k] / (h w)``, so Grad-CAM equals ``ReLU(CAM) / (h w)``: it is
offered because it is the usual reference, computed by autograd, not by that identity.

Per-patch maps are upsampled to the patch's footprint in a slide heatmap and stitched by
:class:`HeatmapAccumulator`, which averages overlapping windows. Maps entering the slide heatmap are
normalised per patch to [0, 1] (ReLU, divided by the patch maximum): they show *where in each patch*
the model found evidence, which is what Fig. 9 of the study shows.

Besides the registered architectures any ``nn.Module`` with a ``features`` module (input to feature
map) and a ``classifier`` ``nn.Linear`` whose forward is ``classifier(mean(features(x), (2, 3)))`` works
(``arch=None``): the deterministic stand-in models of the tests use that.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crc_core.errors import ConfigError

Method = Literal["cam", "gradcam"]
METHODS: tuple[str, ...] = ("cam", "gradcam")

__all__ = [
    "METHODS",
    "HeatmapAccumulator",
    "cam_from_features",
    "cams_from_features",
    "classifier_layer",
    "compute_cams",
    "features_and_logits",
    "normalize_cams",
    "upsample_cams",
]


def _is_registered(arch: str | None) -> bool:
    if arch is None:
        return False
    from crc_core.models import MODELS

    return arch in MODELS


def _check_generic(model: nn.Module) -> None:
    if not (
        hasattr(model, "features") and isinstance(getattr(model, "classifier", None), nn.Linear)
    ):
        raise ConfigError(
            f"CAM needs a registered architecture (resnet50, densenet121, inception_v3) or a module "
            f"with 'features' and a linear 'classifier'; got {type(model).__name__}"
        )


def classifier_layer(model: nn.Module, arch: str | None) -> nn.Linear:
    """The final linear layer whose weights turn feature maps into CAMs."""
    if _is_registered(arch):
        from crc_core.models import classifier

        return classifier(model, arch)  # type: ignore[arg-type]
    _check_generic(model)
    return model.classifier  # type: ignore[return-value]


def features_and_logits(
    model: nn.Module, arch: str | None, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature map ``(N, K, h, w)`` and logits ``(N, C)`` of one forward pass of ``x`` ``(N, 3, H, W)``."""
    if _is_registered(arch):
        from crc_core.models import features_and_logits as fl

        return fl(model, arch, x)  # type: ignore[arg-type]
    _check_generic(model)
    feats = model.features(x)  # type: ignore[operator]
    logits = model.classifier(feats.mean(dim=(2, 3)))  # type: ignore[operator]
    return feats, logits


def cam_from_features(
    features: torch.Tensor, weight: torch.Tensor, class_idx: torch.Tensor
) -> torch.Tensor:
    """CAM of one class per sample.

    Parameters
    ----------
    features : (N, K, h, w) tensor
    weight : (C, K) tensor, the classifier weight
    class_idx : (N,) long tensor, the class of each sample

    Returns
    -------
    (N, h, w) float tensor, ``sum_k weight[class_idx[n], k] * features[n, k]``.
    """
    w = weight[class_idx].to(features.dtype)  # (N, K)
    return torch.einsum("nk,nkhw->nhw", w, features).float()


def compute_cams(
    model: nn.Module,
    arch: str | None,
    x: torch.Tensor,
    class_index: int | None = None,
    method: Method = "cam",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and raw class activation maps of a batch.

    Parameters
    ----------
    model, arch
        The classifier (eval mode) and its registry name (``None`` for a generic module, see module doc).
    x : (N, 3, H, W) normalised input
    class_index
        Class whose map is computed; ``None``: each sample's predicted class.
    method
        ``"cam"`` (Zhou 2016, no gradients) or ``"gradcam"`` (autograd).

    Returns
    -------
    logits : (N, C) float tensor
    cams : (N, h, w) float tensor (raw; CAM may be negative, Grad-CAM is ReLU'd)
    """
    if method not in METHODS:
        raise ConfigError(f"unknown CAM method {method!r}; choose one of {', '.join(METHODS)}")
    with torch.no_grad():
        feats, logits = features_and_logits(model, arch, x)
    return cams_from_features(feats, logits, classifier_layer(model, arch), class_index, method)


def cams_from_features(
    feats: torch.Tensor,
    logits: torch.Tensor,
    head: nn.Linear,
    class_index: int | None = None,
    method: Method = "cam",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and raw maps from a forward pass's feature map: the part of :func:`compute_cams` after
    the backbone, shared by every inference backend (an ONNX model exports ``feats`` and ``logits``).

    Parameters
    ----------
    feats : (N, K, h, w) feature map of the CAM layer
    logits : (N, C) logits of the same pass
    head : the final linear layer (:func:`classifier_layer`)
    class_index, method : as in :func:`compute_cams`
    """
    if method not in METHODS:
        raise ConfigError(f"unknown CAM method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "cam":
        idx = _target(logits, class_index)
        return logits.float(), cam_from_features(feats, head.weight.detach(), idx)
    with torch.enable_grad():
        feats = feats.detach().float().requires_grad_(True)
        # The head after the feature map: global average pooling and the linear layer.
        out = F.linear(
            feats.mean(dim=(2, 3)),
            head.weight.detach().float(),
            None if head.bias is None else head.bias.detach().float(),
        )
        idx = _target(out.detach(), class_index)
        score = out.gather(1, idx[:, None]).sum()
        (grads,) = torch.autograd.grad(score, feats)  # (N, K, h, w)
        alpha = grads.mean(dim=(2, 3))  # (N, K)
        cams = F.relu(torch.einsum("nk,nkhw->nhw", alpha, feats.detach()))
    return out.detach(), cams


def _target(logits: torch.Tensor, class_index: int | None) -> torch.Tensor:
    n, c = logits.shape
    if class_index is None:
        return logits.argmax(dim=1)
    if not 0 <= int(class_index) < c:
        raise ConfigError(
            f"CAM class index {class_index} is out of range; the model has {c} classes"
        )
    return torch.full((n,), int(class_index), dtype=torch.long, device=logits.device)


def normalize_cams(cams: torch.Tensor) -> torch.Tensor:
    """Per-sample ReLU and division by the sample's maximum: ``(N, h, w)`` in [0, 1] (0 where flat)."""
    c = F.relu(cams.float())
    mx = c.amax(dim=(1, 2), keepdim=True)
    return torch.where(mx > 0, c / mx.clamp_min(1e-12), torch.zeros_like(c))


def upsample_cams(cams: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear upsampling of ``(N, h, w)`` maps to ``(N, size, size)`` (the patch footprint)."""
    if cams.shape[-2:] == (size, size):
        return cams
    return F.interpolate(
        cams[:, None].float(), size=(size, size), mode="bilinear", align_corners=False
    )[:, 0]


class HeatmapAccumulator:
    """A slide heatmap stitched from per-patch tiles; overlapping tiles are averaged.

    Parameters
    ----------
    shape
        ``(h, w)`` of the heatmap in heatmap pixels.

    Tiles are placed by their top-left heatmap pixel; parts falling outside the heatmap are clipped.
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self._sum = np.zeros(self.shape, dtype=np.float32)
        self._count = np.zeros(self.shape, dtype=np.uint16)

    def add(self, top: int, left: int, tile: np.ndarray) -> None:
        """Add one ``(s, s)`` tile with its top-left at heatmap pixel ``(top, left)``."""
        h, w = self.shape
        t0, l0 = max(0, top), max(0, left)
        t1, l1 = min(h, top + tile.shape[0]), min(w, left + tile.shape[1])
        if t1 <= t0 or l1 <= l0:
            return
        part = tile[t0 - top : t1 - top, l0 - left : l1 - left]
        self._sum[t0:t1, l0:l1] += part
        self._count[t0:t1, l0:l1] += 1

    def result(self) -> np.ndarray:
        """The averaged heatmap, float32, NaN where no tile landed."""
        out = np.full(self.shape, np.nan, dtype=np.float32)
        np.divide(self._sum, self._count, out=out, where=self._count > 0)
        return out
