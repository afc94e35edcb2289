"""Evaluation as in the paper: per-class and macro metrics, tables 3 and 4, ROC, confusion, report.

Metrics come from scikit-learn (``confusion_matrix``, ``precision_recall_fscore_support``,
``average_precision_score``, ``roc_auc_score``, ``roc_curve``); specificity ``TN / (TN + FP)`` and
negative predictive value ``TN / (TN + FN)`` are computed one-vs-rest from the confusion matrix. A
ratio whose denominator is zero counts as 0 (scikit-learn's ``zero_division=0``); average precision
and AUROC of a class absent from the labels are ``null`` and left out of the macro means. mAP is the
mean of the per-class average precisions.

Outputs of :func:`evaluate` (all written atomically into one folder): ``metrics.json``,
``predictions.csv`` (image, label, predicted, ``prob_<class>`` ...), ``table3.csv/.md`` (overall),
``table4.csv/.md`` (per class), ``confusion.csv``, ``roc.png``, ``confusion.png``, ``curves.png``
(when the run's ``history.csv`` is next to the checkpoint) and a self-contained ``report.html``.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crc_core.atomic import atomic_write_bytes, atomic_write_text
from crc_core.classes import ClassScheme
from crc_core.errors import ConfigError, DatasetError
from crc_core.image_scale import images_scale, said_fields
from crc_core.jobs import Event, JobWarning, Progress
from crc_core.runs import read_history, read_metrics
from crc_core.splits import SplitRecord, choose_subset, content_keys
from crc_core.tables import TileTable, load_table, parse_map

OVERALL_KEYS = ["map", "precision", "recall", "specificity", "npv", "auroc"]
PER_CLASS_KEYS = ["precision", "recall", "specificity", "npv", "ap", "auroc", "support"]


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def _class_metrics(cm: np.ndarray, y: np.ndarray, p: np.ndarray, i: int) -> dict[str, Any]:
    """One-vs-rest figures of class ``i``; ``None`` where a figure is undefined on this data."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    total = int(cm.sum())
    tp = int(cm[i, i])
    fp = int(cm[:, i].sum()) - tp
    fn = int(cm[i, :].sum()) - tp
    tn = total - tp - fp - fn
    pos, neg = tp + fn, total - (tp + fn)
    both = pos > 0 and neg > 0
    return {
        # Never predicted: precision 0 for a class that is there (it was missed), else undefined.
        "precision": _ratio(tp, tp + fp) if tp + fp else (0.0 if pos else None),
        "recall": _ratio(tp, pos) if pos else None,
        "specificity": _ratio(tn, tn + fp) if neg else None,
        "npv": _ratio(tn, tn + fn) if neg else None,
        "ap": float(average_precision_score(y == i, p[:, i])) if both else None,
        "auroc": float(roc_auc_score(y == i, p[:, i])) if both else None,
        "support": pos,
    }


def compute_metrics(y_true: Sequence[int], probs: np.ndarray, class_names: Sequence[str]
                    ) -> dict[str, Any]:
    """All metrics of one evaluation.

    One rule for the macro means: a class absent from the evaluated labels is listed in
    ``absent_classes`` and left out of *every* macro mean (mAP, precision, recall, specificity,
    NPV, AUROC) alike; a figure undefined on this data (e.g. AUROC when all images are of one class)
    is ``None`` and left out of its mean.

    Parameters
    ----------
    y_true
        ``(N,)`` true class indices into ``class_names``.
    probs
        ``(N, K)`` class probabilities (rows sum to 1); the prediction is the argmax.
    class_names
        The K class names, in index order.

    Returns
    -------
    dict
        ``{"accuracy", "balanced_accuracy", "macro": {map, precision, recall, specificity, npv,
        auroc}, "per_class": {name: {precision, recall, specificity, npv, ap, auroc, support}},
        "confusion": K x K list (rows true, columns predicted), "classes": names,
        "absent_classes": names, "n": N}``.
    """
    from sklearn.metrics import confusion_matrix

    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    k = len(class_names)
    if p.ndim != 2 or p.shape != (len(y), k):
        raise ValueError(
            f"probabilities of shape {p.shape} do not fit {len(y)} labels x {k} classes")
    if len(y) == 0:
        raise DatasetError("nothing to evaluate: no images")
    pred = p.argmax(1)
    cm = confusion_matrix(y, pred, labels=list(range(k)))
    per_class = {name: _class_metrics(cm, y, p, i) for i, name in enumerate(class_names)}
    present = [n for n in class_names if per_class[n]["support"] > 0]

    def mean(key: str) -> float | None:
        vals = [per_class[n][key] for n in present if per_class[n][key] is not None]
        return float(np.mean(vals)) if vals else None

    macro = {"map": mean("ap"), "precision": mean("precision"), "recall": mean("recall"),
             "specificity": mean("specificity"), "npv": mean("npv"), "auroc": mean("auroc")}
    return {"accuracy": float((pred == y).mean()), "balanced_accuracy": macro["recall"],
            "macro": macro, "per_class": per_class, "confusion": cm.astype(int).tolist(),
            "classes": list(class_names),
            "absent_classes": [n for n in class_names if n not in present], "n": int(len(y))}


# ----------------------------------------------------------------------------- tables
def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def _md(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow(["" if c is None else (f"{c:.6f}" if isinstance(c, float) else c) for c in r])
    return buf.getvalue()


def table3(results: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Overall performance per model (paper Table 3): mAP, precision, recall, specificity, NPV."""
    header = ["Model", "mAP", "Precision", "Recall", "Specificity", "NPV", "AUROC", "Accuracy"]
    rows = [[name] + [m["macro"][k] for k in OVERALL_KEYS] + [m["accuracy"]]
            for name, m in results.items()]
    return header, rows


def table4(results: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Per-class performance per model (paper Table 4): precision, recall, specificity, NPV."""
    header = ["Class", "Model", "Precision", "Recall", "Specificity", "NPV", "AP", "AUROC",
              "Support"]
    classes: list[str] = []
    for m in results.values():
        classes += [c for c in m["per_class"] if c not in classes]
    rows = []
    for c in classes:
        for name, m in results.items():
            v = m["per_class"].get(c)
            if v is not None:
                rows.append([c, name] + [v[k] for k in PER_CLASS_KEYS])
    return header, rows


def write_tables(results: dict[str, dict[str, Any]], out: Path) -> dict[str, str]:
    """table3/table4 as CSV and Markdown in ``out``; returns the Markdown texts."""
    texts = {}
    for name, fn in (("table3", table3), ("table4", table4)):
        header, rows = fn(results)
        atomic_write_text(out / f"{name}.csv", _csv(header, rows))
        texts[name] = _md(header, rows)
        atomic_write_text(out / f"{name}.md", texts[name])
    return texts


# ----------------------------------------------------------------------------- plots
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save_fig(fig: Any, path: Path) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return data


def plot_roc(y_true: np.ndarray, probs: np.ndarray, names: Sequence[str], path: Path,
             colors: Sequence[tuple[int, int, int]] | None = None, title: str = "") -> bytes:
    """One-vs-rest ROC curve per class (paper Fig. 7)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for i, name in enumerate(names):
        pos = y_true == i
        if not pos.any() or pos.all():
            continue
        fpr, tpr, _ = roc_curve(pos, probs[:, i])
        auc = roc_auc_score(pos, probs[:, i])
        color = None if colors is None else tuple(c / 255 for c in colors[i])
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})", color=color)
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8)
    ax.set(xlabel="False positive rate", ylabel="True positive rate", xlim=(0, 1), ylim=(0, 1.02),
           title=title or "ROC per class")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.text(0.5, 0.55, "no ROC curve: a class needs positive and negative images",
                ha="center", fontsize=9, color="dimgrey")
    return _save_fig(fig, path)


def plot_confusion(cm: np.ndarray, names: Sequence[str], path: Path, title: str = "") -> bytes:
    """Confusion matrix with counts and row-normalised shading (paper Fig. 8)."""
    plt = _plt()
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(names)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2.5, 1.1 * k + 2))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{cm[i, j]}\n{norm[i, j]:.0%}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(k), names, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set(xlabel="Predicted", ylabel="True", title=title or "Confusion matrix")
    return _save_fig(fig, path)


def plot_curves(history: list[dict[str, float | None]], path: Path, title: str = "") -> bytes:
    """Loss and accuracy per epoch, training and validation (paper Fig. 6)."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    ep = [r["epoch"] for r in history]
    for ax, key, label in ((a1, "loss", "Loss"), (a2, "acc", "Accuracy")):
        for split, style in (("train", "-"), ("val", "--")):
            vals = [r.get(f"{split}_{key}") for r in history]
            if any(v is not None for v in vals):
                ax.plot(ep, [np.nan if v is None else v for v in vals], style, marker=".",
                        label=split)
        ax.set(xlabel="Epoch", ylabel=label, title=f"{title} {label.lower()}".strip())
        ax.legend()
    return _save_fig(fig, path)


def _img(data: bytes, alt: str) -> str:
    return (f'<img alt="{html.escape(alt)}" src="data:image/png;base64,'
            f'{base64.b64encode(data).decode()}">')


def _html_table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_report(title: str, results: dict[str, dict[str, Any]], images: list[tuple[str, bytes]],
                  notes: list[str]) -> str:
    """One self-contained HTML page (tables and base64-embedded plots)."""
    parts = ["<!doctype html><html><head><meta charset='utf-8'>"
             f"<title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;"
             "padding:3px 8px;text-align:right}th{background:#eee}td:first-child{text-align:left}"
             "img{max-width:100%;margin:0.5em 0}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(n)}</p>" for n in notes]
    parts.append("<h2>Overall (Table 3 layout)</h2>" + _html_table(*table3(results)))
    parts.append("<h2>Per class (Table 4 layout)</h2>" + _html_table(*table4(results)))
    for caption, data in images:
        parts.append(f"<h2>{html.escape(caption)}</h2>{_img(data, caption)}")
    parts.append("</body></html>")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- evaluate
@dataclass
class _EvalData:
    """The labelled images to score, expressed in the model's classes."""

    table: TileTable
    to_model: list[int | None]          # table class index -> model class index (None: left out)
    notes: list[str] = field(default_factory=list)
    left_out_labels: dict[str, int] = field(default_factory=dict)


def _model_vocabulary(ckpt: dict[str, Any]) -> tuple[ClassScheme, dict[str, str]]:
    """The model's classes and the label map it was trained with (raw label -> class name)."""
    cfg = ckpt.get("config") or {}
    mapping = parse_map((cfg.get("data") or {}).get("map"))
    return ckpt["scheme"], mapping


def _eval_table(ckpt: dict[str, Any], data: str | Path, opts: dict[str, Any]
                ) -> Generator[JobWarning, None, _EvalData]:
    """Read ``data`` with the caller's options (columns guessed otherwise, the label column also
    from the model's class names) and match its labels to the model's classes: by id or name, else
    through the label map the model was trained with, else as a member of a model class's group (a
    grade of its "Adenocarcinoma"); other labels are left out and counted."""
    from crc_core.scheme_map import model_classes_for_label

    scheme, train_map = _model_vocabulary(ckpt)
    hints = [*scheme.names, *scheme.ids, *train_map]
    said: list[str] = []
    table = load_table(data, image_column=opts["image_column"], label_column=opts["label_column"],
                       classes=opts["classes"], mapping=opts["map"], label=opts["label"],
                       label_hints=hints, min_classes=1, warn=said.append,
                       need_groups=False)
    yield from map(JobWarning, said)
    ed = _EvalData(table, [])
    lookup = {k.casefold(): v for k, v in train_map.items()}
    for name in table.scheme.names:
        cls = scheme.find(name) or scheme.find(table.scheme.get(name).id)
        via = lookup.get(name.casefold())
        if cls is None and via is not None and scheme.find(via) is not None:
            cls = scheme.find(via)
            ed.notes.append(f"label {name!r} counted as {cls.name!r} (the model's training map)")
        group = [] if cls is not None else model_classes_for_label(table.scheme.get(name), scheme)
        if len(group) == 1:  # a grade of the model's coarser class
            cls = scheme.get(group[0])
            ed.notes.append(f"label {name!r} counted as its group {cls.name!r}")
        ed.to_model.append(None if cls is None else scheme.index(cls.id))
    counts = table.counts()
    ed.left_out_labels = {n: counts[n] for n, m in zip(table.scheme.names, ed.to_model,
                                                       strict=True) if m is None and counts[n]}
    if ed.left_out_labels:
        left = ", ".join(f"{v} image(s) labelled {k!r}" for k, v in ed.left_out_labels.items())
        yield JobWarning(f"left out, not classes of the model ({', '.join(scheme.names)}): {left}")
    if all(m is None for m in ed.to_model):
        raise DatasetError(f"{table.source}: none of its labels ({', '.join(table.scheme.names)}) "
                           f"is a class of the model ({', '.join(scheme.names)}); use --map "
                           f"\"LABEL=CLASS\" or --label CLASS")
    return ed


def _score(table: TileTable, indices: Sequence[int], scorer: Any, factor: float, size: int,
           threads: int, transform: Any = None, fields: list[float] | None = None,
           ) -> Generator[Progress, None, tuple[np.ndarray, list[int], int]]:
    """Mean window probabilities of each image (one window for a tile of the patch size);
    ``transform`` (stain normalisation) at each image's own resolution. ``fields`` collects,
    per image kept, the share of the model's window it covers at the model's scale
    (:func:`crc_core.preprocess.window_coverage`; below 1 the rest was mirrored)."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from crc_core.preprocess import decode_windows_covering

    cover: dict[int, float] = {}

    def load(i: int) -> np.ndarray | None:
        try:
            wins, cover[i] = decode_windows_covering(table.samples[i].path, factor, size,
                                                     transform)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return None
        return wins

    n, probs, kept, skipped = len(indices), [], [], 0
    yield Progress(0, n, f"evaluating {n} images")
    chunk = max(1, scorer.batch_size)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for s in range(0, n, chunk):
            part = list(indices[s:s + chunk])
            wins = list(pool.map(load, part))
            good = [(i, w) for i, w in zip(part, wins, strict=True) if w is not None]
            skipped += len(part) - len(good)
            if good:
                p, _ = scorer.run(np.concatenate([w for _, w in good]))
                bounds = np.cumsum([0] + [len(w) for _, w in good])
                probs += [p[bounds[j]:bounds[j + 1]].mean(0) for j in range(len(good))]
                kept += [i for i, _ in good]
            yield Progress(min(n, s + chunk), n, f"evaluating {n} images")
    if fields is not None:
        fields += [cover[i] for i in kept]
    return (np.stack(probs) if probs else np.zeros((0, 0))), kept, skipped


def _check_arguments(subset: str, mpp: float | None) -> None:
    if subset not in ("auto", "val", "test", "all"):
        raise ConfigError(f"--subset {subset!r}: choose auto, val, test or all")
    if mpp is not None and not (0 < float(mpp) < 1000):
        raise ConfigError(f"--mpp {mpp}: give the images' µm per pixel, e.g. 0.5")


def _write_outputs(outp: Path, metrics: dict[str, Any], table: TileTable, kept: Sequence[int],
                   y_true: np.ndarray, probs: np.ndarray, scheme: ClassScheme, model_name: str,
                   checkpoint: str | Path) -> list[str]:
    outp.mkdir(parents=True, exist_ok=True)
    atomic_write_text(outp / "metrics.json", json.dumps(metrics, indent=2))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "label", "predicted"] + [f"prob_{c}" for c in scheme.names])
    for i, t, pr in zip(kept, y_true, probs, strict=True):
        w.writerow([table.relpath(i), scheme.names[t], scheme.names[int(pr.argmax())]]
                   + [f"{v:.6f}" for v in pr])
    atomic_write_text(outp / "predictions.csv", buf.getvalue())
    results = {model_name: metrics}
    write_tables(results, outp)
    cm = np.array(metrics["confusion"])
    atomic_write_text(outp / "confusion.csv", _csv(["true \\ predicted"] + scheme.names,
                                                   [[c] + list(r) for c, r in
                                                    zip(scheme.names, cm.tolist(), strict=True)]))
    images = [("ROC per class", plot_roc(y_true, probs, scheme.names, outp / "roc.png",
                                         scheme.colors, f"{model_name} ROC")),
              ("Confusion matrix", plot_confusion(cm, scheme.names, outp / "confusion.png",
                                                  f"{model_name} confusion"))]
    files = ["metrics.json", "predictions.csv", "table3.csv", "table3.md", "table4.csv",
             "table4.md", "confusion.csv", "roc.png", "confusion.png", "report.html"]
    hist = Path(checkpoint).parent / "history.csv"
    history = read_history(hist) if hist.is_file() else []
    if history:
        images.insert(0, ("Loss and accuracy", plot_curves(history, outp / "curves.png",
                                                           model_name)))
        files.append("curves.png")
    atomic_write_text(outp / "report.html", render_report(f"Evaluation: {model_name}", results,
                                                          images, report_notes(metrics)))
    return files


def report_notes(m: dict[str, Any]) -> list[str]:
    """The sentences every report states beside its figures: what was scored, and how."""
    notes = [f"Checkpoint {m.get('checkpoint')} ({m.get('arch')}, epoch {m.get('epoch')}); data "
             f"{m.get('data')}."]
    notes.append(f"Scored: {m.get('n')} images, subset {m.get('subset')!r}: "
                 f"{m.get('subset_how')}.")
    if m.get("left_out"):
        notes.append("Left out: " + ", ".join(f"{v} {k}" for k, v in m["left_out"].items())
                     + " image(s).")
    if m.get("left_out_labels"):
        notes.append("Labels that are not classes of the model, left out: "
                     + ", ".join(f"{k} ({v})" for k, v in m["left_out_labels"].items()) + ".")
    if m.get("absent_classes"):
        notes.append("Classes absent from these images, left out of every macro mean: "
                     + ", ".join(m["absent_classes"]) + ".")
    sc = m.get("scoring") or {}
    notes.append(f"Scale: {m.get('scale')}. Scoring: "
                 f"{sc.get('backend_statement') or sc.get('device')}, {sc.get('precision')}, "
                 f"{'test-time augmentation (8 views)' if sc.get('tta', 1) > 1 else 'no TTA'}, "
                 f"resampling {sc.get('resampling')}.")
    if sc.get("fallback"):
        notes.append(sc["fallback"] + ".")
    notes += list(m.get("notes") or [])
    if m.get("skipped"):
        notes.append(f"{m['skipped']} unreadable image(s) skipped.")
    return notes


def _scorer(model: Any, meta: dict[str, Any], checkpoint: str | Path, device: Any,
            batch_size: int, tta: bool, backend: dict[str, Any]) -> Any:
    """The scorer ``crc predict`` would use for this checkpoint (same backend, same code path)."""
    from crc_core.inference import LoadedModel, _file_fingerprint, make_scorer

    size = int(meta["input_size"])
    lm = LoadedModel(model, meta["arch"], meta["scheme"], size, size,
                     mean=tuple(meta["mean"]), std=tuple(meta["std"]),
                     identity={"fingerprint": _file_fingerprint(Path(checkpoint))})
    return make_scorer(lm, device, batch_size, tta=tta, **backend)


def _calibrated(ckpt: dict[str, Any], checkpoint: str | Path, data: str | Path, table: TileTable,
                eligible: list[int], keys: list[Any], mpp: float | None,
                calibrate: str | Path | None) -> Generator[Progress, None, None]:
    """``int8-static``: the cached int8 model, else one calibrated now on the run's training
    images of ``calibrate``, by default among the evaluated rows already read and keyed."""
    from crc_core.inference import calibration as cal

    if calibrate is not None:  # other data: read there
        yield from cal.ensure_static_model(checkpoint, calibrate)
        return
    lm = cal.static_model(ckpt, checkpoint)
    if cal.cached_note(lm) is None:
        rows = cal.training_rows(ckpt, data, eligible, keys)
        yield from cal.calibrate(lm, table, rows, mpp=mpp)


def _stain_facts(stain: Any, notes: list[str]) -> dict[str, Any]:
    """metrics.json's ``notes`` (with the stain statement) and ``stain``."""
    return {"notes": notes + [stain.statement("images") + "." if stain else
                              "No stain normalisation (the checkpoint has none)."],
            "stain": (stain.to_json() | {"counts": dict(stain.counts)} if stain
                      else {"method": "none"})}


def evaluate(
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    classes: str | Sequence[str] | None = None,
    mapping: str | dict[str, str] | None = None,
    label: str | None = None,
    mpp: float | None = None,
    subset: str = "auto",
    batch_size: int = 64,
    device: str = "auto",
    workers: int = 0,
    name: str | None = None,
    tta: bool = False,
    backend: str = "auto",
    threads: int = 0,
    quantize: str = "none",
    calibrate: str | Path | None = None,
) -> Generator[Event, None, dict[str, Any]]:
    """Evaluate a checkpoint on labelled images and write the report folder ``out`` (a job).

    Parameters
    ----------
    checkpoint
        A ``.pt`` from :func:`crc_core.training.fit`.
    data
        Dataset folder, CSV, or image folder (class subfolders, or ``label`` for all); columns are
        guessed (:func:`crc_core.tables.load_table`) unless given; one class is enough.
    label
        Every image is of this class (a folder or CSV of one class's images).
    mpp
        µm/px of the images when the data does not state it: they are resampled to the model's
        scale (without it they are taken at the model's scale, and the report says so).
    subset
        ``auto``: the run's test images when the data holds any, else images the run never trained
        or validated on, else its validation images; never a training image. ``val``, ``test``:
        the run's own; ``all``: every image. Images are recognised by content
        (:mod:`crc_core.splits`), so moving or copying the dataset does not change the choice.
    tta
        Average the eight flips and rotations (:mod:`crc_core.runtime`).
    backend, threads, quantize
        What runs the model, as in ``crc predict`` (:func:`crc_core.inference.make_scorer`: the
        same scorer, so a checkpoint scores the same here and on a slide).
    calibrate
        ``int8-static``: data whose training images calibrate it (default ``data``).
    (Yields ``Progress``, and a ``JobWarning`` for labels left out, images skipped, a fallback.)

    Returns
    -------
    dict
        The metrics (as in ``metrics.json``) plus ``"out"`` and ``"files"``.
    """
    from crc_core.models import load_checkpoint, model_from_checkpoint
    from crc_core.runtime import describe, resolve_device
    from crc_core.stain import from_checkpoint

    _check_arguments(subset, mpp)
    ckpt = load_checkpoint(checkpoint, "cpu")
    opts = {"image_column": image_column, "label_column": label_column, "classes": classes,
            "map": mapping, "label": label}
    ed = yield from _eval_table(ckpt, data, opts)
    table = ed.table
    eligible = [i for i, s in enumerate(table.samples) if ed.to_model[s.label] is not None]
    keys = yield from content_keys(table, eligible)
    if quantize == "int8-static":
        yield from _calibrated(ckpt, checkpoint, data, table, eligible, keys, mpp, calibrate)
    sub = choose_subset(SplitRecord.from_json(ckpt.get("split")), keys, subset)
    indices = [eligible[j] for j in sub.indices]
    model, meta = model_from_checkpoint(ckpt, resolve_device(device))
    scheme: ClassScheme = meta["scheme"]
    factor, scale_note = yield from images_scale(meta, table, indices, mpp, workers or 4)
    stain = from_checkpoint(ckpt)       # the checkpoint's stain normalisation, applied likewise
    scorer = _scorer(model, meta, checkpoint, resolve_device(device), batch_size, tta,
                     {"backend": backend, "threads": threads, "quantize": quantize})
    if scorer.fallback:
        yield JobWarning(scorer.fallback)
    fields: list[float] = []
    probs, kept, skipped = yield from _score(table, indices, scorer, factor,
                                             int(meta["input_size"]), workers or 4, stain, fields)
    scale_note += yield from said_fields(fields)
    if skipped:
        yield JobWarning(f"{skipped} unreadable image(s) skipped")
    if not kept:
        raise DatasetError(f"{table.source}: no readable images to evaluate")
    y_true = np.array([ed.to_model[table.samples[i].label] for i in kept])
    metrics = compute_metrics(y_true, probs, scheme.names)
    model_name = name or f"{meta['arch']}"
    metrics.update({
        "model": model_name, "arch": meta["arch"], "checkpoint": str(checkpoint),
        "data": str(table.source), "subset": sub.name, "subset_how": sub.how,
        "left_out": sub.left_out, "left_out_labels": ed.left_out_labels, "skipped": skipped,
        "epoch": meta.get("epoch"), "scale": scale_note, "scoring": describe(scorer),
        **_stain_facts(stain, ed.notes)})
    files = _write_outputs(Path(out), metrics, table, kept, y_true, probs, scheme, model_name,
                           checkpoint)
    return {**metrics, "out": str(out), "files": files}


def compare(dirs: Sequence[str | Path], out: str | Path) -> dict[str, Any]:
    """Side-by-side tables (paper Tables 3 and 4) and a report from several evaluation folders."""
    from crc_core.jobs import run_job

    return run_job(compare_job(dirs, out))


def compare_job(dirs: Sequence[str | Path],
                out: str | Path) -> Generator[Progress, None, dict[str, Any]]:
    """:func:`compare` as a job: one progress step per folder read, one for the report."""
    results: dict[str, dict[str, Any]] = {}
    images: list[tuple[str, bytes]] = []
    total = len(dirs) + 1
    for i, d in enumerate(dirs):
        yield Progress(i, total, f"reading {d}")
        p = Path(d)
        mfile = p / "metrics.json" if p.is_dir() else p
        m = read_metrics(mfile)
        name = str(m.get("model") or p.name)
        while name in results:
            name = f"{name} ({p.name})"
        results[name] = m
        for png, caption in (("roc.png", "ROC"), ("confusion.png", "Confusion matrix"),
                             ("curves.png", "Loss and accuracy")):
            f = mfile.parent / png
            if f.is_file():
                images.append((f"{name}: {caption}", f.read_bytes()))
    if not results:
        raise DatasetError("nothing to compare: give evaluation folders")
    yield Progress(len(dirs), total, "writing tables and report")
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    texts = write_tables(results, outp)
    atomic_write_text(outp / "report.html", render_report(
        "Model comparison", results, images, [f"{len(results)} evaluations: "
                                              + ", ".join(results)]))
    return {"out": str(outp), "models": list(results), **texts}
