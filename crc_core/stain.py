"""Stain normalisation (Macenko, Reinhard): fitted on reference tiles, stored in checkpoints.

A :class:`StainNormalizer` maps every image to the stain of a reference. It is fitted once, on the
tissue pixels of up to ``n`` training tiles (seeded choice, :func:`fit_images` /
:func:`fit_from_table`), kept as plain JSON-able parameters in the checkpoint
(``extra["preprocess"]["stain"]``), and applied by one function, :meth:`StainNormalizer.__call__`,
wherever a model sees pixels: the Build Dataset preview, training (at decode time, so the image
cache holds normalised images and augmentation comes after it), ``crc evaluate`` and ``crc predict``
(through :class:`crc_core.runtime.Scorer`'s ``transform``).

Methods.

* ``macenko`` (Macenko et al., ISBI 2009): optical density ``OD = -ln((I + 1) / 240)``; pixels with
  ``OD >= 0.15`` in every channel (and not pen ink) are tissue; the plane of the two largest
  eigenvectors of their OD covariance; the H and E vectors at the 1st and 99th percentile angles;
  concentrations by least squares; each stain rescaled so its 99th percentile concentration is the
  reference's (negative concentrations, pixels outside the two stains' cone, taken as 0); the image
  rebuilt with the reference's stain vectors. These are the steps, constants
  and nearest-rank percentiles of torchstain's ``TorchMacenkoNormalizer`` (which fits the reference
  here); the apply step is the same algorithm vectorised over a batch (torchstain handles one image
  at a time), with the checks below, and a test holds it to torchstain image by image.
* ``reinhard`` (Reinhard et al. 2001): each CIELAB channel (scikit-image's ``rgb2lab``) standardised
  by the image's tissue-pixel mean and standard deviation and given the reference's (statistics over
  tissue pixels, as HistomicsTK's ``reinhard`` with a mask, so glass does not shift them).

Fails safe. A window is passed through unchanged, and counted, when it has too little tissue
(``background``: fewer than 2 % or 64 of its pixels), too much ink (``pen``: more than 10 % of its
pixels by :func:`crc_core.tissue.ink_pixels`) or stain estimates that are not usable
(``unestimable``: not finite, a stain vector with negative components or more than 40 degrees from
the reference's, H and E vectors closer than 3 degrees, a concentration maximum near zero). Never an
exception, never a NaN. :attr:`StainNormalizer.counts` adds up what happened (thread-safe) and
:meth:`StainNormalizer.statement` says it in one sentence for reports and predictions.

Everything runs on the CPU in float32 (float64 for the 3 x 3 eigen-decomposition) on uint8
``(N, H, W, 3)`` batches.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crc_core.errors import CheckpointError, ConfigError, DatasetError
from crc_core.jobs import Progress

__all__ = [
    "METHODS", "StainNormalizer", "estimate_stains", "fit_from_table", "fit_images",
    "from_checkpoint", "normalizer_from_json", "slide_stain_job", "slide_tissue_windows",
]

#: ``--stain-norm`` choices.
METHODS = ("none", "macenko", "reinhard")
#: Transmitted light intensity, OD threshold of a tissue pixel and the angle percentile
#: (torchstain's defaults).
IO, BETA, ALPHA = 240.0, 0.15, 1.0
#: Percentile of the concentrations taken as a stain's maximum.
MAX_PERCENTILE = 99.0
#: A window needs this share (and at least ``MIN_TISSUE_PIXELS``) of tissue pixels to be normalised.
MIN_TISSUE_FRACTION = 0.02
MIN_TISSUE_PIXELS = 64
#: A window with more than this share of ink pixels is passed through.
MAX_INK_FRACTION = 0.10
#: Stain vectors further than this from the reference's are not trusted (degrees).
MAX_ANGLE = 40.0
#: H and E vectors closer than this are one stain, not two (degrees).
MIN_SEPARATION = 3.0
#: Pixels kept from the reference tiles for the fit (uniformly subsampled beyond).
MAX_FIT_PIXELS = 2_000_000
#: Reference tiles by default.
DEFAULT_TILES = 64
#: The stain vectors torchstain starts from (Macenko's H&E reference), rows H, E (RGB OD, unit).
DEFAULT_HE = ((0.5626, 0.7201, 0.4062), (0.2159, 0.8012, 0.5581))
REASONS = ("background", "pen", "unestimable")


# ----------------------------------------------------------------------------- batch primitives
def _od(imgs: np.ndarray) -> torch.Tensor:
    """``(N, P, 3)`` float32 optical density of uint8 ``(N, H, W, 3)``."""
    arr = np.ascontiguousarray(imgs)
    x = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    x = x.reshape(len(imgs), -1, 3).float()
    return -torch.log((x + 1.0) / IO)


def _screen(imgs: np.ndarray, od: torch.Tensor, strict: bool
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tissue mask ``(N, P)`` and per-image verdicts: too little tissue, too much ink.

    ``strict`` (Macenko): every channel's OD >= BETA; else (Reinhard) any channel's.
    """
    from crc_core.tissue import ink_pixels

    n, p = od.shape[:2]
    ink = torch.from_numpy(ink_pixels(imgs).reshape(n, p))
    dense = (od >= BETA).all(-1) if strict else (od >= BETA).any(-1)
    mask = dense & ~ink
    need = max(MIN_TISSUE_PIXELS, math.ceil(MIN_TISSUE_FRACTION * p))
    background = mask.sum(1) < need
    pen = ink.float().mean(1) > MAX_INK_FRACTION
    return mask, background & ~pen, pen


def _masked_percentiles(v: torch.Tensor, mask: torch.Tensor, qs: Sequence[float]
                        ) -> list[torch.Tensor]:
    """Nearest-rank percentiles ``qs`` of ``v[i][mask[i]]`` per row (torchstain's rule; one sort).

    Returns one ``(N,)`` tensor per percentile.
    """
    n = mask.sum(1)
    ordered, _ = torch.sort(torch.where(mask, v, torch.full_like(v, math.inf)), dim=1)
    out = []
    for q in qs:
        k = torch.round(0.01 * q * (n - 1).clamp(min=0).double()).long()
        k = k.clamp(min=0, max=v.shape[1] - 1)
        out.append(ordered.gather(1, k[:, None])[:, 0])
    return out


def _angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle in degrees between rows of ``a`` and ``b`` (``(..., 3)``)."""
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp(min=1e-12)
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))


def _macenko_vectors(od: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per image ``(N, 2, 3)`` unit H and E OD vectors (rows) from the tissue pixels."""
    w = mask.to(od.dtype)[..., None]                                   # (N, P, 1)
    cnt = w.sum(1).clamp(min=2.0)                                      # (N, 1)
    mu = (od * w).sum(1) / cnt                                         # (N, 3)
    d = (od - mu[:, None]) * w
    cov = d.transpose(1, 2).double() @ d.double() / (cnt - 1).double()[:, :, None]
    cov = torch.nan_to_num(cov) + 1e-12 * torch.eye(3, dtype=torch.float64)
    _, vecs = torch.linalg.eigh(cov)
    ev = vecs[:, :, 1:3].to(od.dtype)                                  # (N, 3, 2)
    t = od @ ev                                                        # (N, P, 2)
    phi = torch.atan2(t[..., 1], t[..., 0])
    lo, hi = _masked_percentiles(phi, mask, (ALPHA, 100.0 - ALPHA))
    v_lo = (ev @ torch.stack([lo.cos(), lo.sin()], -1)[..., None])[..., 0]   # (N, 3)
    v_hi = (ev @ torch.stack([hi.cos(), hi.sin()], -1)[..., None])[..., 0]
    # Eigenvectors have no sign: point each stain vector into positive OD.
    v_lo = v_lo * torch.where(v_lo.sum(-1, keepdim=True) < 0, -1.0, 1.0)
    v_hi = v_hi * torch.where(v_hi.sum(-1, keepdim=True) < 0, -1.0, 1.0)
    # Hematoxylin absorbs more red than eosin does (torchstain's heuristic).
    first = (v_lo[:, 0] > v_hi[:, 0])[:, None]
    h = torch.where(first, v_lo, v_hi)
    e = torch.where(first, v_hi, v_lo)
    return torch.stack([h, e], 1)


def _concentrations(od: torch.Tensor, he: torch.Tensor) -> torch.Tensor:
    """``(N, 2, P)`` least-squares H and E concentrations of every pixel."""
    pinv = torch.linalg.pinv(he.transpose(1, 2))                       # (N, 2, 3)
    return pinv @ od.transpose(1, 2)


def _max_conc(c: torch.Tensor) -> torch.Tensor:
    """``(N, 2)`` nearest-rank 99th percentile of every stain's concentration (all pixels)."""
    p = c.shape[-1]
    k = 1 + round(0.01 * MAX_PERCENTILE * (p - 1))
    return c.kthvalue(k, dim=-1).values


def _usable(he: torch.Tensor, max_c: torch.Tensor, ref_he: torch.Tensor) -> torch.Tensor:
    """``(N,)`` True where the stain estimates can be trusted (see module docstring)."""
    finite = torch.isfinite(he).flatten(1).all(1) & torch.isfinite(max_c).all(1)
    positive = (he > -0.05).flatten(1).all(1) & (max_c > 1e-3).all(1)
    near = (_angle(he, ref_he[None]) <= MAX_ANGLE).all(1)
    apart = _angle(he[:, 0], he[:, 1]) >= MIN_SEPARATION
    return finite & positive & near & apart


def _plausible(he: torch.Tensor, max_c: torch.Tensor) -> bool:
    """A reference fit is H&E-like: finite, positive, two stains, within 60 degrees of Macenko's."""
    ok = bool(_usable(he[None], max_c[None], he)[0])
    return bool(ok and (_angle(he, torch.tensor(DEFAULT_HE)) <= 60.0).all())


def _macenko_estimate(imgs: np.ndarray, ref_he: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                 dict[str, torch.Tensor]]:
    """OD, stain vectors, concentrations, maxima and per-image verdicts of a batch."""
    od = _od(imgs)
    mask, background, pen = _screen(imgs, od, strict=True)
    he = _macenko_vectors(od, mask)
    # A blank window has no vectors (NaN): stand the reference in so the algebra stays finite; the
    # window is passed through anyway.
    finite = torch.isfinite(he).flatten(1).all(1)
    he = torch.where(finite[:, None, None], he, ref_he[None])
    c = _concentrations(od, he)
    max_c = _max_conc(c)
    bad = ~(_usable(he, max_c, ref_he) & finite) & ~background & ~pen
    return od, he, c, max_c, {"background": background, "pen": pen, "unestimable": bad}


# ----------------------------------------------------------------------------- colour spaces
def _lab(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    return rgb2lab(rgb.astype(np.float32) / 255.0).astype(np.float32)


def _rgb(lab: np.ndarray) -> np.ndarray:
    import warnings

    from skimage.color import lab2rgb

    with warnings.catch_warnings():     # out-of-gamut values are clipped, which is what we want
        warnings.simplefilter("ignore", UserWarning)
        rgb = lab2rgb(lab)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def _lab_stats(lab: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image ``(N, 3)`` mean and standard deviation of the masked pixels (``lab`` (N, P, 3))."""
    w = mask[..., None].astype(np.float64)
    cnt = np.maximum(w.sum(1), 1.0)
    mu = (lab * w).sum(1) / cnt
    var = (((lab - mu[:, None]) ** 2) * w).sum(1) / cnt
    return mu.astype(np.float32), np.sqrt(var).astype(np.float32)


# ----------------------------------------------------------------------------- the normaliser
@dataclass
class StainNormalizer:
    """A fitted stain normaliser: ``__call__`` maps uint8 ``(N, H, W, 3)`` batches to the reference.

    Parameters
    ----------
    method
        ``macenko`` or ``reinhard``.
    params
        Plain numbers: Macenko ``stain_vectors`` ([H, E] RGB OD unit vectors) and
        ``max_concentrations`` ([H, E]); Reinhard ``lab_mean`` and ``lab_std`` (CIELAB).
    reference
        How it was fitted (tiles, pixels, seed, source), for the statements.
    """

    method: str
    params: dict[str, Any]
    reference: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: {"normalised": 0, **dict.fromkeys(
        REASONS, 0)})
    #: Set when a fine-tuning run keeps the normaliser of the model it starts from (that model's
    #: file name): said in the statements, never stored.
    kept_from: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.method not in METHODS[1:]:
            raise ConfigError(f"stain normalisation {self.method!r}: choose "
                              f"{', '.join(METHODS)}")
        self._lock = threading.Lock()

    # -- serialisation
    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able parameters (stored in checkpoints as ``preprocess.stain``)."""
        return {"method": self.method, "params": _plain(self.params),
                "reference": _plain(self.reference)}

    @property
    def label(self) -> str:
        return {"macenko": "Macenko", "reinhard": "Reinhard"}[self.method]

    def describe(self) -> str:
        """One sentence: which method and what it was fitted on."""
        ref = self.reference
        what = ref.get("source") or "reference tiles"
        n = ref.get("tiles")
        fitted = ((f"{n} {what}" if n else str(what))
                  + (f" (seed {ref['seed']})" if ref.get("seed") is not None else ""))
        if self.kept_from:
            return (f"{self.label} stain normalisation of {self.kept_from}, kept as it was "
                    f"fitted on {fitted} of that model's run (not refitted)")
        return f"{self.label} stain normalisation fitted on {fitted}"

    # -- counts
    def reset_counts(self) -> None:
        with self._lock:
            for k in self.counts:
                self.counts[k] = 0

    def _count(self, normalised: int, why: dict[str, torch.Tensor]) -> None:
        with self._lock:
            self.counts["normalised"] += int(normalised)
            for k in REASONS:
                self.counts[k] += int(why[k].sum())

    @property
    def passed_through(self) -> int:
        return sum(self.counts[k] for k in REASONS)

    def statement(self, unit: str = "images") -> str:
        """What was done, with the counts: for report notes and prediction warnings."""
        c = self.counts
        text = f"{self.describe()}: {c['normalised']} {unit} normalised"
        if self.passed_through:
            text += (f", {self.passed_through} passed through unchanged ("
                     f"{c['background']} too little tissue, {c['pen']} pen-marked, "
                     f"{c['unestimable']} stain vectors not estimable)")
        return text

    # -- apply
    def __call__(self, imgs: np.ndarray) -> np.ndarray:
        """Normalised copy of uint8 ``(N, H, W, 3)`` (or one ``(H, W, 3)``) images."""
        arr = np.asarray(imgs)
        single = arr.ndim == 3
        batch = arr[None] if single else arr
        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
            raise ValueError(f"expected uint8 (N, H, W, 3) images, got {arr.dtype} {arr.shape}")
        if len(batch) == 0 or batch.shape[1] * batch.shape[2] == 0:
            return arr.copy()
        out, keep = (self._macenko if self.method == "macenko" else self._reinhard)(batch)
        out[keep] = batch[keep]
        return out[0] if single else out

    def _macenko(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ref = torch.tensor(self.params["stain_vectors"], dtype=torch.float32)     # (2, 3)
        ref_max = torch.tensor(self.params["max_concentrations"], dtype=torch.float32)
        od, he, c, max_c, why = _macenko_estimate(batch, ref)
        keep = why["background"] | why["pen"] | why["unestimable"]
        # A negative least-squares concentration is a pixel outside the cone of the two stains
        # (JPEG noise, pigment): rebuilt with the reference's vectors it would turn green or
        # yellow, so it is taken as no stain (torchstain keeps it; the only difference).
        c = c.clamp(min=0) * (ref_max / torch.where(keep[:, None], 1.0, max_c))[..., None]
        rgb = IO * torch.exp(-(ref.T[None] @ c))                                  # (N, 3, P)
        rgb = torch.nan_to_num(rgb, nan=255.0, posinf=255.0).clamp(0, 255).round()
        out = rgb.to(torch.uint8).transpose(1, 2).reshape(batch.shape).numpy().copy()
        self._count(int((~keep).sum()), why)
        return out, keep.numpy()

    def _reinhard(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(batch)
        od = _od(batch)
        mask, background, pen = _screen(batch, od, strict=False)
        lab = _lab(batch).reshape(n, -1, 3)
        mu, sd = _lab_stats(lab, mask.numpy())
        ref_mu = np.asarray(self.params["lab_mean"], np.float32)
        ref_sd = np.asarray(self.params["lab_std"], np.float32)
        bad = torch.from_numpy(~np.isfinite(sd).all(1) | (sd < 1e-3).any(1)) & ~background & ~pen
        keep = (background | pen | bad).numpy()
        sd_safe = np.where(keep[:, None], 1.0, sd)
        lab = (lab - mu[:, None]) / sd_safe[:, None] * ref_sd + ref_mu
        lab[..., 0] = np.clip(lab[..., 0], 0.0, 100.0)
        out = _rgb(lab.reshape(batch.shape))
        self._count(int((~keep).sum()), {"background": background, "pen": pen,
                                         "unestimable": bad})
        return out, keep


def _plain(v: Any) -> Any:
    """Floats, lists and dicts only (checkpoint-safe)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


# ----------------------------------------------------------------------------- fitting
def _tissue_pixels(images: Sequence[np.ndarray], strict: bool) -> tuple[np.ndarray, int]:
    """Tissue pixels ``(P, 3)`` uint8 of the images that have enough, and how many images had."""
    parts, used = [], 0
    for im in images:
        arr = np.asarray(im)[None]
        od = _od(arr)
        mask, background, pen = _screen(arr, od, strict)
        if bool(background[0]) or bool(pen[0]):
            continue
        parts.append(arr.reshape(-1, 3)[mask[0].numpy()])
        used += 1
    if not parts:
        return np.zeros((0, 3), np.uint8), 0
    return np.concatenate(parts), used


def _subsample(px: np.ndarray, seed: int) -> np.ndarray:
    if len(px) <= MAX_FIT_PIXELS:
        return px
    rng = np.random.default_rng(seed)
    return px[np.sort(rng.choice(len(px), MAX_FIT_PIXELS, replace=False))]


def fit_images(images: Sequence[np.ndarray], method: str, seed: int = 0,
               source: str = "reference tiles") -> StainNormalizer:
    """Fit ``method`` on the tissue pixels of uint8 ``(H, W, 3)`` ``images``.

    Images with too little tissue or too much ink are left out. Macenko is fitted by torchstain's
    ``TorchMacenkoNormalizer`` on the pooled tissue pixels; Reinhard takes their CIELAB mean and
    standard deviation.

    Raises
    ------
    DatasetError
        No image has enough tissue, or the stain vectors of the pooled pixels are not H&E-like.
    """
    if method not in METHODS[1:]:
        raise ConfigError(f"--stain-norm {method!r}: choose {', '.join(METHODS)}")
    px, used = _tissue_pixels(images, strict=method == "macenko")
    if used == 0 or len(px) < MIN_TISSUE_PIXELS:
        raise DatasetError(f"cannot fit {method} stain normalisation: none of the "
                           f"{len(images)} {source} has enough tissue")
    px = _subsample(px, seed)
    ref = {"tiles": used, "pixels": int(len(px)), "seed": seed, "source": source}
    if method == "reinhard":
        lab = _lab(px[None])[0]
        return StainNormalizer("reinhard", {"lab_mean": lab.mean(0).tolist(),
                                            "lab_std": lab.std(0).tolist()}, ref)
    from torchstain.torch.normalizers import TorchMacenkoNormalizer

    norm = TorchMacenkoNormalizer()
    norm.fit(torch.from_numpy(px.T[:, None, :].copy()), Io=IO, alpha=ALPHA, beta=BETA)
    he = norm.HERef.T.float()                                     # (2, 3) rows H, E
    he = he * torch.where(he.sum(-1, keepdim=True) < 0, -1.0, 1.0)
    max_c = norm.maxCRef.float().abs()
    if not _plausible(he, max_c):
        raise DatasetError(f"cannot fit macenko stain normalisation: the {source} do not look "
                           f"like H&E (stain vectors {he.tolist()})")
    return StainNormalizer("macenko", {"stain_vectors": he.tolist(),
                                       "max_concentrations": max_c.tolist()}, ref)


def fit_from_table(table: Any, indices: Sequence[int], method: str, size: int,
                   n: int = DEFAULT_TILES, seed: int = 0,
                   ) -> Generator[Progress, None, StainNormalizer]:
    """Fit on up to ``n`` images of ``table`` rows ``indices`` (seeded choice), each at its own
    resolution (where the normaliser is applied; ``size`` is kept for callers and unused).

    A job generator (decoding is the slow part). Unreadable images are left out.
    """
    from crc_core.preprocess import decode_rgb

    rng = np.random.default_rng(seed)
    pick = list(indices)
    if len(pick) > n:
        pick = [pick[i] for i in sorted(rng.choice(len(pick), n, replace=False))]
    images = []
    for j, i in enumerate(pick):
        try:
            images.append(decode_rgb(table.samples[i].path))
        except (OSError, ValueError, SyntaxError):
            continue
        yield Progress(j + 1, len(pick), f"fitting {method} stain normalisation")
    return fit_images(images, method, seed, source="training tiles")


# ----------------------------------------------------------------------------- checkpoints
def normalizer_from_json(doc: Any) -> StainNormalizer | None:
    """The normaliser of a ``preprocess.stain`` entry (``None`` or ``{"method": "none"}``: none).

    Raises :class:`CheckpointError` for an entry that cannot be used.
    """
    if doc is None or (isinstance(doc, dict) and doc.get("method") in (None, "none")):
        return None
    try:
        method, params = doc["method"], doc["params"]
        if method == "macenko":
            he = np.asarray(params["stain_vectors"], float)
            mc = np.asarray(params["max_concentrations"], float)
            ok = he.shape == (2, 3) and mc.shape == (2,)
        else:
            ok = (np.asarray(params["lab_mean"], float).shape == (3,)
                  and np.asarray(params["lab_std"], float).shape == (3,))
        if not ok or not all(np.isfinite(np.asarray(v, float)).all() for v in params.values()):
            raise ValueError
        return StainNormalizer(method, dict(params), dict(doc.get("reference") or {}))
    except (KeyError, TypeError, ValueError, ConfigError):
        raise CheckpointError("the checkpoint's stain normalisation entry (preprocess.stain) is "
                              "damaged or of an unknown method; retrain or use another "
                              "checkpoint") from None


def from_checkpoint(ckpt: dict[str, Any]) -> StainNormalizer | None:
    """The stain normaliser a checkpoint (dict from ``load_checkpoint``) was trained with."""
    pre = ckpt.get("preprocess")
    return normalizer_from_json(pre.get("stain") if isinstance(pre, dict) else None)


def from_checkpoint_file(path: str | Path) -> StainNormalizer | None:
    """The stain normaliser stored in the checkpoint at ``path``, as fitted (its parameters and
    reference unchanged), read without its weights (``weights_only``, memory-mapped); ``None`` when
    it was trained without one. Fine-tuning uses it instead of fitting a new one
    (:func:`crc_core.finetune.finetune_config`).

    Raises :class:`CheckpointError` when the file is unreadable or its entry damaged.
    """
    from crc_core.models import read_checkpoint_header

    try:
        ckpt = read_checkpoint_header(path)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: cannot read its stain normalisation ({exc})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not a CRC Workbench checkpoint")
    return from_checkpoint(ckpt)


# ----------------------------------------------------------------------------- estimation
def estimate_stains(images: Sequence[np.ndarray] | np.ndarray) -> dict[str, Any]:
    """Macenko stain vectors and concentration maxima of the pooled tissue of ``images``.

    For the viewer's slide properties and the stain measurements of ``benchmarks/``: H and E unit
    OD vectors (RGB), their 99th percentile concentrations, and how many images and pixels they
    came from. ``{"ok": False, "reason": ...}`` when there is not enough H&E-like tissue.
    """
    try:
        norm = fit_images(list(images), "macenko", source="images")
    except DatasetError as exc:
        return {"ok": False, "reason": str(exc)}
    p = norm.params
    return {"ok": True, "hematoxylin": p["stain_vectors"][0], "eosin": p["stain_vectors"][1],
            "max_concentrations": p["max_concentrations"], "images": norm.reference["tiles"],
            "pixels": norm.reference["pixels"]}


def slide_tissue_windows(slide: Any, n: int = 32, size: int = 224, seed: int = 0,
                         min_tissue: float = 0.8) -> Generator[Progress, None, np.ndarray]:
    """Up to ``n`` level-0 windows of ``size`` px that are at least ``min_tissue`` tissue.

    A job generator: candidate cells come from the thumbnail's tissue mask
    (:func:`crc_core.tissue.tissue_mask`), are visited in a seeded random order and kept when the
    window itself passes :func:`crc_core.tissue.tissue_fraction`. Returns ``(k, size, size, 3)``
    uint8, ``k <= n`` (0 when the slide shows no such tissue).
    """
    from crc_core.tissue import tissue_fraction, tissue_mask

    w, h = slide.dimensions
    thumb = np.asarray(slide.thumbnail(1024))
    mask = tissue_mask(thumb)
    sy, sx = mask.shape[0] / h, mask.shape[1] / w
    cells = []
    for y in range(0, h - size + 1, size):
        for x in range(0, w - size + 1, size):
            m = mask[int(y * sy):max(int(y * sy) + 1, int((y + size) * sy)),
                     int(x * sx):max(int(x * sx) + 1, int((x + size) * sx))]
            if m.mean() >= min_tissue * 0.75:        # the thumbnail is coarse: a loose first cut
                cells.append((x, y))
    out: list[np.ndarray] = []
    for k, i in enumerate(np.random.default_rng(seed).permutation(len(cells))):
        tile = np.asarray(slide.read_region(cells[i], 0, (size, size)))[..., :3]
        if tissue_fraction(tile) >= min_tissue:
            out.append(tile)
        yield Progress(len(out), n, f"reading tissue windows ({k + 1} looked at)")
        if len(out) >= n:
            break
    return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


def slide_stain_job(slide: Any, n: int = 32, size: int = 224, seed: int = 0
                    ) -> Generator[Progress, None, dict[str, Any]]:
    """The Macenko stain vectors of a slide's tissue (:func:`estimate_stains` of up to ``n``
    tissue windows; a job generator for the viewer's slide properties)."""
    windows = yield from slide_tissue_windows(slide, n, size, seed)
    yield Progress(len(windows), n, "estimating stain vectors")
    res = estimate_stains(list(windows)) if len(windows) else {
        "ok": False, "reason": "no window of the slide is mostly tissue"}
    return {**res, "windows": int(len(windows)), "window_px": size}


Transform = Callable[[np.ndarray], np.ndarray]
