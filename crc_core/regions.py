"""Per-region prediction results: class shares, majority class, confidence, agreement; GeoJSON and CSV.

A region is an annotation (the pathologist's label is its class) or a plain geometry drawn to be
predicted (no label). Its patches are the predicted cells of a :class:`~crc_core.inference.Prediction`
whose window centre lies inside the region (level-0 pixels). For each region: the share of its patches
per class, the majority class, the mean confidence (mean top probability of its patches), the share of
its patches predicted as its label, and whether the majority class agrees with the label (``None``
when the region has no label, the label is not among the model's classes, or no patch was predicted).
A label agrees with the model class that groups it (:mod:`crc_core.scheme_map`): an area annotated
"Adenocarcinoma moderately differentiated" agrees with a three-class model's "Adenocarcinoma".

Exports: QuPath-importable GeoJSON (a FeatureCollection of annotations whose numbers sit in
``properties.measurements``, a name -> number object as QuPath 0.4+ writes it) and CSV, both atomic.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import box, mapping
from shapely.geometry.base import BaseGeometry

from crc_core.atomic import atomic_write_text
from crc_core.classes import ClassScheme
from crc_core.errors import ConfigError
from crc_core.inference import Prediction
from crc_core.scheme_map import model_classes_for_label

__all__ = [
    "RegionResult",
    "region_results",
    "regions_to_csv",
    "regions_to_geojson",
    "save_regions_csv",
    "save_regions_geojson",
    "whole_prediction_region",
]


@dataclass
class RegionResult:
    """The prediction summarised over one region (class fields are class ids of the prediction)."""

    id: str
    name: str
    geometry: BaseGeometry
    label: str | None  # the pathologist's class id (None: no label)
    label_name: str | None
    n_patches: int
    counts: dict[str, int] = field(default_factory=dict)
    shares: dict[str, float] = field(default_factory=dict)
    majority: str | None = None
    majority_name: str | None = None
    mean_confidence: float | None = None
    label_share: float | None = None
    agreement: bool | None = None

    def to_row(self, scheme: ClassScheme) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "label": self.label_name or "",
            "predicted": self.majority_name or "",
            "patches": self.n_patches,
            "mean_confidence": ""
            if self.mean_confidence is None
            else round(self.mean_confidence, 6),
            "label_share": "" if self.label_share is None else round(self.label_share, 6),
            "agreement": "" if self.agreement is None else ("yes" if self.agreement else "no"),
        }
        for c in scheme:
            row[f"share {c.name}"] = round(self.shares.get(c.id, 0.0), 6)
        return row


def whole_prediction_region(pred: Prediction, name: str = "whole slide") -> dict[str, Any]:
    """A region covering the prediction's whole grid (used when no region was given)."""
    g = pred.grid
    x0, y0 = g.origin
    x1 = x0 + (g.cols - 1) * g.stride + g.window
    y1 = y0 + (g.rows - 1) * g.stride + g.window
    return {"id": "whole", "name": name, "geometry": box(x0, y0, x1, y1), "label": None}


def _region_parts(region: Any, index: int) -> tuple[str, str, BaseGeometry, str | None]:
    if isinstance(region, BaseGeometry):
        return f"region-{index + 1}", f"region {index + 1}", region, None
    if isinstance(region, dict):
        geom = region.get("geometry")
        if not isinstance(geom, BaseGeometry):
            raise ConfigError(f"region #{index + 1} has no shapely geometry")
        return (
            str(region.get("id") or f"region-{index + 1}"),
            str(region.get("name") or ""),
            geom,
            region.get("label"),
        )
    geom = getattr(region, "geometry", None)
    if not isinstance(geom, BaseGeometry):
        raise ConfigError(f"region #{index + 1} ({type(region).__name__}) has no shapely geometry")
    return (
        str(getattr(region, "id", f"region-{index + 1}")),
        str(getattr(region, "name", "") or ""),
        geom,
        getattr(region, "class_id", None),
    )


def region_results(
    pred: Prediction, regions: Iterable[Any], label_scheme: ClassScheme | None = None
) -> list[RegionResult]:
    """Summarise ``pred`` over each region.

    Parameters
    ----------
    pred
        The prediction.
    regions
        Annotations (label = ``class_id``), shapely geometries (no label) or dicts with
        ``geometry`` and optional ``id``, ``name``, ``label``.
    label_scheme
        Scheme the labels refer to (for their names and to match labels to the model's classes by
        name when ids differ); default the prediction's scheme.
    """
    scheme = pred.scheme
    lscheme = label_scheme or scheme
    xs, ys = pred.grid.cell_centers()
    ok = pred.predicted
    cx, cy = xs[ok], ys[ok]
    probs = pred.probs[:, ok]  # (C, N)
    top = probs.argmax(axis=0) if probs.size else np.zeros(0, dtype=int)
    conf = probs.max(axis=0) if probs.size else np.zeros(0, dtype=np.float32)
    out: list[RegionResult] = []
    numbers: Counter[str] = Counter()  # "<label name> #<n>" for unnamed regions
    for i, region in enumerate(regions):
        rid, name, geom, label = _region_parts(region, i)
        inside = shapely.contains_xy(geom, cx, cy) if len(cx) else np.zeros(0, dtype=bool)
        n = int(inside.sum())
        label_def = lscheme.find(label) if label else None
        label_name = label_def.name if label_def else (label or None)
        numbers[label_name or ""] += 1
        if not name.strip():  # a person reads names, never a UUID
            name = f"{label_name or 'Region'} #{numbers[label_name or '']}"
        # The label as the model's classes: the same class (by id, else by name), the group that
        # covers it ("Adenocarcinoma" for a graded label) or the members a coarser label merges.
        model_labels = model_classes_for_label(label_def, scheme) if label_def else []
        res = RegionResult(rid, name, geom, label_def.id if label_def else label, label_name, n)
        if n:
            counts = np.bincount(top[inside], minlength=len(scheme))
            res.counts = {c.id: int(counts[k]) for k, c in enumerate(scheme)}
            res.shares = {c.id: float(counts[k] / n) for k, c in enumerate(scheme)}
            maj = int(counts.argmax())
            res.majority, res.majority_name = scheme.classes[maj].id, scheme.classes[maj].name
            res.mean_confidence = float(conf[inside].mean())
            if model_labels:
                res.label_share = float(sum(res.shares[m] for m in model_labels))
                res.agreement = res.majority in model_labels
        out.append(res)
    return out


def regions_to_geojson(
    results: Iterable[RegionResult], scheme: ClassScheme, label_scheme: ClassScheme | None = None
) -> dict[str, Any]:
    """A QuPath-importable FeatureCollection; numbers in ``properties.measurements``."""
    lscheme = label_scheme or scheme
    feats = []
    for r in results:
        meas: dict[str, float] = {"Patches": float(r.n_patches)}
        for c in scheme:
            meas[f"Share {c.name}"] = float(r.shares.get(c.id, 0.0))
        if r.mean_confidence is not None:
            meas["Mean confidence"] = float(r.mean_confidence)
        if r.label_share is not None:
            meas["Label share"] = float(r.label_share)
        if r.agreement is not None:
            meas["Agreement"] = 1.0 if r.agreement else 0.0
        props: dict[str, Any] = {
            "objectType": "annotation",
            "name": r.name,
            "measurements": meas,
        }
        if r.label:
            ldef = lscheme.find(r.label)
            cls = {"name": ldef.name if ldef else r.label}
            if ldef is not None:
                cls["color"] = list(ldef.color)
            props["classification"] = cls
        if r.majority_name:
            props["predicted"] = r.majority_name
        feats.append(
            {"type": "Feature", "id": r.id, "geometry": mapping(r.geometry), "properties": props}
        )
    return {"type": "FeatureCollection", "features": feats}


def save_regions_geojson(
    results: Iterable[RegionResult],
    path: str | os.PathLike[str],
    scheme: ClassScheme,
    label_scheme: ClassScheme | None = None,
) -> Path:
    """Write :func:`regions_to_geojson` atomically."""
    data = regions_to_geojson(results, scheme, label_scheme)
    atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=False))
    return Path(path)


def regions_to_csv(results: Iterable[RegionResult], scheme: ClassScheme) -> str:
    """One row per region: id, name, label, predicted, patches, confidence, label share, agreement, shares."""
    rows = [r.to_row(scheme) for r in results]
    head = [
        "id",
        "name",
        "label",
        "predicted",
        "patches",
        "mean_confidence",
        "label_share",
        "agreement",
    ] + [f"share {c.name}" for c in scheme]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=head, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def save_regions_csv(
    results: Iterable[RegionResult], path: str | os.PathLike[str], scheme: ClassScheme
) -> Path:
    """Write :func:`regions_to_csv` atomically."""
    atomic_write_text(path, regions_to_csv(results, scheme))
    return Path(path)
