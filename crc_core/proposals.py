"""Predictions become annotations ("proposed" until a person reviews them), and the review queue.

Conversion (:func:`prediction_to_annotations`). The class map of a
:class:`~crc_core.inference.Prediction` (the top class of each predicted cell, cells below a
confidence threshold left out) is cut into 4-connected components of one class
(``skimage.measure.label``); each component becomes one annotation whose outline is the union of
its cells' footprints (``shapely.union_all`` of boxes, so holes are kept and neighbouring
annotations share their edges exactly). A cell's footprint is the ``stride`` square centred on its
window (the window itself when windows do not overlap), in **level-0 pixels**. Components smaller
than ``min_area`` are dropped: µm² when the prediction records the slide's pixel size, else level-0
px² (:attr:`ConvertResult.area_unit` and the notes say which). The prediction's classes are matched
to the target scheme by id, then by name, or through an explicit ``mapping`` (prediction class ->
scheme class, names or ids; several prediction classes may map onto one scheme class).

Review state. A converted annotation carries, in ``Annotation.properties["review"]`` (kept on a
GeoJSON round trip; QuPath ignores it), ``{"status": "proposed", "source": "prediction", "model",
"confidence", "cells"}`` and, in ``properties["measurements"]``, its mean confidence (QuPath shows
measurements). :func:`mark_reviewed` sets ``status`` to ``"accepted"`` (class kept) or
``"corrected"`` (class changed) and records ``reviewer`` (the OS user name) and ``reviewed`` (UTC,
ISO 8601). An annotation without ``review`` was drawn by a person. A proposal of a model's *group*
class (the shipped model's "Adenocarcinoma" on a scheme of its grades) also records
``"model_class"`` (the prediction's class id) and ``"grade_chosen"`` (whether a person chose the
grade it is proposed as, in Prediction to Annotations, or it is only the group's first member);
:func:`grade_choices` reads the chosen grades back for the review of that prediction's windows.

Review queue (:func:`review_queue`). Items are (1) annotations converted from a prediction (or made
in review), (2) annotations drawn by a person whose predicted majority class disagrees with their
label, and (3) predicted windows that no annotation covers (at most ``max_windows``, the most
uncertain). Uncertainty is the mean normalised entropy of the cells inside (0: one class is
certain, 1: all classes equally likely); disagreement is, for a converted area, the share of its
area covered by a person's annotation of another class, and for a person's annotation, one minus
the share of its cells predicted as its label. Items are ranked by ``uncertainty + disagreement``,
highest first. Qt-free; pure functions of their inputs.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import math
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from crc_core.annotations import Annotation, clean_geometry
from crc_core.classes import ClassScheme
from crc_core.errors import ClassSchemeError, ConfigError
from crc_core.inference import GridSpec, Prediction
from crc_core.jobs import Progress

__all__ = [
    "ConvertResult",
    "REVIEW_KEY",
    "ReviewItem",
    "cell_entropy",
    "class_targets",
    "conversion_job",
    "grade_choices",
    "is_proposed",
    "is_reviewed",
    "mark_reviewed",
    "prediction_mpp",
    "prediction_model_name",
    "prediction_to_annotations",
    "rasterize",
    "review_info",
    "review_queue",
    "reviewed_count",
    "window_annotation",
]

REVIEW_KEY = "review"
PROPOSED, ACCEPTED, CORRECTED = "proposed", "accepted", "corrected"
CONFIDENCE_MEASUREMENT = "Prediction confidence"


# ----------------------------------------------------------------------------- review state
def review_info(ann: Annotation) -> dict[str, Any] | None:
    """The annotation's review record, ``None`` for an annotation drawn by a person."""
    info = ann.properties.get(REVIEW_KEY)
    return info if isinstance(info, dict) else None


def is_proposed(ann: Annotation) -> bool:
    """Converted from a prediction and not yet reviewed by a person."""
    info = review_info(ann)
    return info is not None and info.get("status") == PROPOSED


def is_reviewed(ann: Annotation) -> bool:
    """A person accepted or corrected it (the record names who)."""
    info = review_info(ann)
    return info is not None and bool(info.get("reviewer"))


def mark_reviewed(
    ann: Annotation,
    class_id: str | None = None,
    reviewer: str | None = None,
    when: _dt.datetime | None = None,
) -> Annotation:
    """A copy accepted as is (``class_id`` None or unchanged) or corrected to ``class_id``.

    ``reviewer`` defaults to the OS user name (``getpass.getuser()``), ``when`` to now (UTC).
    """
    info = dict(review_info(ann) or {"source": "person"})
    new_class = class_id if class_id is not None else ann.class_id
    changed = new_class != ann.class_id or info.get("status") == CORRECTED
    if new_class != ann.class_id:
        info.setdefault("proposed_class", ann.class_id)
    info["status"] = CORRECTED if changed else ACCEPTED
    info["reviewer"] = reviewer or _user()
    info["reviewed"] = (when or _dt.datetime.now(_dt.UTC)).isoformat(timespec="seconds")
    props = {**ann.properties, REVIEW_KEY: info}
    return ann.replace(class_id=new_class, properties=props)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in the environment or the password database
        return "unknown"


def reviewed_count(annotations: Iterable[Annotation]) -> tuple[int, int]:
    """(reviewed, with a review record) among ``annotations``."""
    recs = [a for a in annotations if review_info(a) is not None]
    return sum(1 for a in recs if is_reviewed(a)), len(recs)


# ----------------------------------------------------------------------------- classes and cells
def class_targets(
    pred_scheme: ClassScheme, scheme: ClassScheme, mapping: dict[str, str] | None = None
) -> list[str]:
    """The target scheme's class id for each prediction class (in the prediction's order).

    Raises
    ------
    ClassSchemeError
        A prediction class has no counterpart in ``scheme`` and no mapping.
    """
    mapping = {k.casefold(): v for k, v in (mapping or {}).items()}
    out: list[str] = []
    missing: list[str] = []
    for c in pred_scheme:
        want = mapping.get(c.id.casefold()) or mapping.get(c.name.casefold())
        target = scheme.find(want) if want else (scheme.find(c.id) or scheme.find_name(c.name))
        if target is None:
            missing.append(f"{c.name} -> {want}" if want else c.name)
        else:
            out.append(target.id)
    if missing:
        raise ClassSchemeError(
            f"the prediction's classes {', '.join(missing)} are not in the class scheme "
            f"({', '.join(scheme.names)}); map them to classes of the scheme or add them"
        )
    return out


def prediction_mpp(pred: Prediction) -> float | None:
    """µm per level-0 pixel of the predicted slide, when the prediction records it."""
    for v in (pred.slide.get("mpp"), pred.resolution.get("slide_mpp")):
        if isinstance(v, (int, float)) and v > 0:
            return float(v)
        if isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) for x in v):
            return float(np.mean(v))
    return None


def _footprints(grid: GridSpec, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Shapely boxes of cells ``(rows[i], cols[i])``: the stride square centred on each window."""
    off = (grid.window - grid.stride) / 2
    x0 = grid.origin[0] + cols * grid.stride + off
    y0 = grid.origin[1] + rows * grid.stride + off
    return shapely.box(x0, y0, x0 + grid.stride, y0 + grid.stride)


def cell_entropy(pred: Prediction) -> np.ndarray:
    """(rows, cols) normalised entropy of each cell's probabilities in [0, 1]; NaN off the
    prediction."""
    out = np.full(pred.grid.shape, np.nan, dtype=np.float32)
    ok = pred.predicted
    n = pred.probs.shape[0]
    if ok.any() and n > 1:
        p = np.clip(pred.probs[:, ok], 1e-12, 1.0)
        out[ok] = -(p * np.log(p)).sum(axis=0) / math.log(n)
    elif ok.any():
        out[ok] = 0.0
    return out


def _cells_in(geom: BaseGeometry, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Bool mask (same shape as ``xs``) of cell centres inside ``geom``, bounds checked first."""
    x0, y0, x1, y1 = geom.bounds
    near = (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
    out = np.zeros(xs.shape, dtype=bool)
    if near.any():
        out[near] = shapely.contains_xy(geom, xs[near], ys[near])
    return out


# ----------------------------------------------------------------------------- conversion
@dataclass
class ConvertResult:
    """What :func:`prediction_to_annotations` made and what it left out."""

    annotations: list[Annotation]
    area_unit: str  # "µm²" or "px²" (level-0 pixels squared)
    dropped_small: int = 0
    notes: list[str] = field(default_factory=list)


def _class_filter(pred_scheme: ClassScheme, targets: list[str], scheme: ClassScheme,
                  classes: Sequence[str] | None) -> set[int]:
    """Prediction class indices kept by ``classes`` (names or ids of either scheme)."""
    if not classes:
        return set(range(len(pred_scheme)))
    keep: set[int] = set()
    for name in classes:
        key = name.strip().casefold()
        hits = {
            i for i, c in enumerate(pred_scheme)
            if key in (c.id.casefold(), c.name.casefold())
            or (scheme.find(targets[i]) is not None
                and key in (targets[i].casefold(), scheme.get(targets[i]).name.casefold()))
        }
        if not hits:
            raise ConfigError(
                f"class {name!r} is not predicted; choose from {', '.join(pred_scheme.names)}"
            )
        keep |= hits
    return keep


def prediction_to_annotations(pred: Prediction, scheme: ClassScheme | None = None,
                              **options: Any) -> ConvertResult:
    """Annotations (status "proposed") from the class map of ``pred``; the options are those of
    :func:`conversion_job`, which this runs to the end."""
    job = conversion_job(pred, scheme, **options)
    while True:
        try:
            next(job)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


def conversion_job(
    pred: Prediction,
    scheme: ClassScheme | None = None,
    *,
    min_confidence: float = 0.0,
    min_area: float = 0.0,
    classes: Sequence[str] | None = None,
    region: BaseGeometry | None = None,
    mapping: dict[str, str] | None = None,
    notes: dict[str, str] | None = None,
    chosen: Iterable[str] = (),
) -> Generator[Progress, None, ConvertResult]:
    """Job (see :mod:`crc_core.jobs`): annotations from the class map of ``pred``, one
    :class:`Progress` per class; see the module docstring.

    Parameters
    ----------
    scheme
        Classes of the annotations (default: the prediction's own).
    min_confidence
        Cells whose top probability is below it are left out (0-1).
    min_area
        Smallest annotation kept: µm² when the prediction knows the slide's pixel size, else px².
    classes
        Only these classes (names or ids); default all.
    region
        Only cells whose window centre lies inside it (level-0 px); default the whole prediction.
    mapping
        Prediction class -> scheme class (see :func:`class_targets`).
    notes
        Prediction class id -> a note kept as ``note`` in the review record of its proposals
        (that the model predicted a group, not the grade: see
        :func:`crc_core.scheme_map.target_mapping`); each such proposal also records its
        ``model_class``.
    chosen
        Prediction class ids (of ``notes``) whose target a person chose: their proposals record
        ``grade_chosen`` true (:func:`grade_choices`).
    """
    from skimage.measure import label

    if not 0.0 <= min_confidence <= 1.0:
        raise ConfigError(f"minimum confidence {min_confidence} must be between 0 and 1")
    if not (min_area >= 0 and math.isfinite(min_area)):
        raise ConfigError(f"minimum area {min_area} must be a non-negative number")
    scheme = scheme or pred.scheme
    targets = class_targets(pred.scheme, scheme, mapping)
    keep = _class_filter(pred.scheme, targets, scheme, classes)
    cmap = pred.class_map(threshold=min_confidence)
    if region is not None:
        xs, ys = pred.grid.cell_centers()
        cmap[~_cells_in(region, xs, ys)] = -1
    conf = pred.confidence()
    mpp = prediction_mpp(pred)
    unit = "µm²" if mpp else "px²"
    px2_per_unit = 1.0 / (mpp * mpp) if mpp else 1.0
    res = ConvertResult([], unit)
    if not mpp:
        res.notes.append("the slide's pixel size is unknown: areas are in level-0 px²")
    model = prediction_model_name(pred)
    chosen = set(chosen)
    # one class id per *target* class: prediction classes mapped onto one class are merged
    wanted = list(dict.fromkeys(targets[i] for i in sorted(keep)))
    pred_ids = [c.id for c in pred.scheme]
    for done, target in enumerate(wanted):
        yield Progress(done, len(wanted), f"outlining {scheme.get(target).name}")
        members = [i for i in keep if targets[i] == target]
        grouped = [pred_ids[i] for i in sorted(members) if pred_ids[i] in (notes or {})]
        extra: dict[str, Any] = {}
        if grouped:  # a group class of the model: its grade was not predicted
            extra = {"note": "; ".join(dict.fromkeys((notes or {})[m] for m in grouped)),
                     "model_class": grouped[0], "grade_chosen": grouped[0] in chosen}
        labels, n = label(np.isin(cmap, members), connectivity=1, return_num=True)
        for k in range(1, n + 1):
            ann = _component(pred, labels == k, target, conf, model, extra)
            if ann.area < min_area * px2_per_unit:
                res.dropped_small += 1
            else:
                res.annotations.append(ann)
    if res.dropped_small:
        res.notes.append(f"{res.dropped_small} area(s) under {min_area:g} {unit} left out")
    return res


def _component(pred: Prediction, cells: np.ndarray, class_id: str, conf: np.ndarray,
               model: str, extra: dict[str, Any] | None = None) -> Annotation:
    rows, cols = np.nonzero(cells)
    geom = shapely.simplify(shapely.union_all(_footprints(pred.grid, rows, cols)), 0)
    geom, _ = clean_geometry(geom)
    c = float(np.nanmean(conf[cells]))
    review = {"status": PROPOSED, "source": "prediction", "model": model,
              "confidence": round(c, 4), "cells": int(cells.sum())}
    review.update(extra or {})
    props = {REVIEW_KEY: review, "measurements": {CONFIDENCE_MEASUREMENT: round(c, 4)}}
    return Annotation.new(class_id, geom, properties=props)


def prediction_model_name(pred: Prediction) -> str:
    """The model name a prediction's proposals record (its name, else its checkpoint)."""
    return str(pred.model.get("name") or pred.model.get("checkpoint") or "")


def grade_choices(annotations: Iterable[Annotation], model: str) -> dict[str, str]:
    """Model group class id -> the project class a person chose for it in Prediction to
    Annotations, read from the proposals of ``model`` (:func:`prediction_model_name`) that record
    ``grade_chosen``; the latest conversion wins. Empty when no grade was chosen."""
    out: dict[str, str] = {}
    for a in annotations:
        info = review_info(a) or {}
        if (info.get("source") == "prediction" and info.get("model") == model
                and info.get("grade_chosen") and info.get("model_class")):
            out[str(info["model_class"])] = str(info.get("proposed_class") or a.class_id)
    return out


def rasterize(annotations: Iterable[Annotation], grid: GridSpec, classes: Sequence[str]
              ) -> np.ndarray:
    """(rows, cols) int16: index in ``classes`` (class ids) of the annotation holding each cell's
    centre, -1 where none does (later annotations win where they overlap)."""
    xs, ys = grid.cell_centers()
    out = np.full(grid.shape, -1, dtype=np.int16)
    index = {c: i for i, c in enumerate(classes)}
    for a in annotations:
        if a.class_id in index:
            out[_cells_in(a.geometry, xs, ys)] = index[a.class_id]
    return out


# ----------------------------------------------------------------------------- review queue
@dataclass
class ReviewItem:
    """One thing to look at: an annotation (``ann_id``) or an uncovered window (``cell``)."""

    key: str  # "ann:<id>" or "win:<row>,<col>"
    kind: str  # "annotation" | "window"
    geometry: BaseGeometry
    predicted: str | None  # the prediction's majority class, as a class id of the scheme
    uncertainty: float
    disagreement: float
    ann_id: str | None = None
    cell: tuple[int, int] | None = None
    model_class: str | None = None  # a window's predicted class, as the prediction's class id

    @property
    def score(self) -> float:
        return self.uncertainty + self.disagreement


def _window_key(ann: Annotation) -> str | None:
    cell = (review_info(ann) or {}).get("cell")
    if isinstance(cell, list) and len(cell) == 2:
        return f"win:{int(cell[0])},{int(cell[1])}"
    return None


@dataclass
class _Cells:
    """Per-cell arrays of one prediction, computed once per queue."""

    targets: list[str]
    cmap: np.ndarray
    ent: np.ndarray
    ok: np.ndarray
    xs: np.ndarray
    ys: np.ndarray
    people: dict[str, BaseGeometry]  # class id -> union of the areas people drew


def _own_cell(info: dict[str, Any] | None, cells: _Cells) -> tuple[int, int] | None:
    """The predicted cell a reviewed window was made from (its review record's ``cell``)."""
    cell = (info or {}).get("cell")
    if not (isinstance(cell, list) and len(cell) == 2):
        return None
    r, c = int(cell[0]), int(cell[1])
    ok = 0 <= r < cells.ok.shape[0] and 0 <= c < cells.ok.shape[1] and bool(cells.ok[r, c])
    return (r, c) if ok else None


def _annotation_item(a: Annotation, cells: _Cells) -> ReviewItem | None:
    targets = cells.targets
    inside = _cells_in(a.geometry, cells.xs, cells.ys) & cells.ok
    if not inside.any():
        return None
    counts = np.bincount(cells.cmap[inside], minlength=len(targets))
    by_target: dict[str, int] = {}
    for i, t in enumerate(targets):
        by_target[t] = by_target.get(t, 0) + int(counts[i])
    majority = max(by_target, key=lambda t: by_target[t])
    unc = float(np.nanmean(cells.ent[inside]))
    info = review_info(a)
    cell = _own_cell(info, cells)
    if cell is not None:  # a reviewed window keeps its window's rank and class (never moves)
        unc, majority = float(cells.ent[cell]), targets[int(cells.cmap[cell])]
    # ranked by the class it had before review, so a review never moves an item in the queue
    label = str(info.get("proposed_class") or a.class_id) if info else a.class_id
    if info is None or info.get("source") == "person":  # a person's label against the model
        dis = 1.0 - by_target.get(label, 0) / int(inside.sum())
        if info is None and majority == label:
            return None
    else:
        other = [g for c, g in cells.people.items() if c != label]
        cover = shapely.union_all(other).intersection(a.geometry).area if other else 0.0
        dis = float(cover / a.area) if a.area else 0.0
    key = _window_key(a) or f"ann:{a.id}"
    return ReviewItem(key, "annotation", a.geometry, majority, unc, dis, ann_id=a.id)


def review_queue(
    pred: Prediction,
    annotations: Iterable[Annotation],
    scheme: ClassScheme | None = None,
    mapping: dict[str, str] | None = None,
    max_windows: int = 50,
) -> list[ReviewItem]:
    """Items to review, most uncertain or most disagreeing first (see the module docstring)."""
    scheme = scheme or pred.scheme
    targets = class_targets(pred.scheme, scheme, mapping)
    anns = list(annotations)
    ent = cell_entropy(pred)
    xs, ys = pred.grid.cell_centers()
    people: dict[str, list[BaseGeometry]] = {}
    for a in anns:
        if review_info(a) is None:
            people.setdefault(a.class_id, []).append(a.geometry)
    cmap = pred.class_map()
    cells = _Cells(targets, cmap, ent, pred.predicted, xs, ys,
                   {c: shapely.union_all(g) for c, g in people.items()})
    items = [it for a in anns if (it := _annotation_item(a, cells)) is not None]
    covered = np.zeros(pred.grid.shape, dtype=bool)
    for a in anns:
        covered |= _cells_in(a.geometry, xs, ys)
    free = pred.predicted & ~covered
    rows, cols = np.nonzero(free)
    order = np.argsort(-ent[rows, cols], kind="stable")[: max(0, max_windows)]
    for r, c in zip(rows[order], cols[order], strict=True):
        x, y, w, h = pred.grid.cell_rect(int(r), int(c))
        items.append(ReviewItem(f"win:{r},{c}", "window", box(x, y, x + w, y + h),
                                targets[int(cmap[r, c])], float(ent[r, c]), 0.0,
                                cell=(int(r), int(c)),
                                model_class=pred.scheme.classes[int(cmap[r, c])].id))
    items.sort(key=lambda it: (-it.score, it.key))
    return items


def window_annotation(item: ReviewItem, class_id: str, model: str = "",
                      reviewer: str | None = None, note: str = "") -> Annotation:
    """The annotation a reviewed window becomes: its window, reviewed as ``class_id``; ``note``
    (the model predicted a group, not the grade) is kept in its review record."""
    if item.cell is None:
        raise ConfigError("only a window item becomes a new annotation")
    review: dict[str, Any] = {"status": PROPOSED, "source": "window", "model": model,
                              "cell": [item.cell[0], item.cell[1]]}
    if note:
        review["note"] = note
    ann = Annotation.new(item.predicted or class_id, item.geometry,
                         properties={REVIEW_KEY: review})
    return mark_reviewed(ann, class_id, reviewer=reviewer)
