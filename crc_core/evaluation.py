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
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crc_core.atomic import atomic_write_bytes, atomic_write_text
from crc_core.errors import DatasetError
from crc_core.jobs import Progress

OVERALL_KEYS = ["map", "precision", "recall", "specificity", "npv", "auroc"]
PER_CLASS_KEYS = ["precision", "recall", "specificity", "npv", "ap", "auroc", "support"]


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def compute_metrics(y_true: Sequence[int], probs: np.ndarray, class_names: Sequence[str]
                    ) -> dict[str, Any]:
    """All metrics of one evaluation.

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
        ``{"accuracy", "macro": {map, precision, recall, specificity, npv, auroc},
        "per_class": {name: {precision, recall, specificity, npv, ap, auroc, support}},
        "confusion": K x K list (rows true, columns predicted), "classes": names, "n": N}``.
    """
    from sklearn.metrics import (
        average_precision_score,
        confusion_matrix,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    k = len(class_names)
    if p.ndim != 2 or p.shape != (len(y), k):
        raise ValueError(
            f"probabilities of shape {p.shape} do not fit {len(y)} labels x {k} classes")
    if len(y) == 0:
        raise DatasetError("nothing to evaluate: no images")
    pred = p.argmax(1)
    labels = list(range(k))
    cm = confusion_matrix(y, pred, labels=labels)
    prec, rec, _f1, support = precision_recall_fscore_support(
        y, pred, labels=labels, zero_division=0)
    total = cm.sum()
    per_class: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(class_names):
        tp = cm[i, i]
        fp = cm[:, i].sum() - tp
        fn = cm[i, :].sum() - tp
        tn = total - tp - fp - fn
        positives = y == i
        ap = auroc = None
        if positives.any():
            ap = float(average_precision_score(positives, p[:, i]))
            if (~positives).any():
                auroc = float(roc_auc_score(positives, p[:, i]))
        per_class[name] = {
            "precision": float(prec[i]), "recall": float(rec[i]),
            "specificity": _ratio(tn, tn + fp), "npv": _ratio(tn, tn + fn),
            "ap": ap, "auroc": auroc, "support": int(support[i]),
        }

    def mean(key: str) -> float | None:
        vals = [v[key] for v in per_class.values() if v[key] is not None]
        return float(np.mean(vals)) if vals else None

    macro = {"map": mean("ap"), "precision": mean("precision"), "recall": mean("recall"),
             "specificity": mean("specificity"), "npv": mean("npv"), "auroc": mean("auroc")}
    return {"accuracy": float((pred == y).mean()), "macro": macro, "per_class": per_class,
            "confusion": cm.astype(int).tolist(), "classes": list(class_names), "n": int(len(y))}


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
    ax.legend(loc="lower right", fontsize=8)
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


def read_history(path: Path) -> list[dict[str, float | None]]:
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            rows.append({k: (float(v) if v not in ("", None) else None) for k, v in r.items()})
    return rows


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
def _same_file(a: str | None, b: Path) -> bool:
    if not a:
        return True
    try:
        return Path(a).resolve() == b.resolve()
    except OSError:
        return False


def evaluate(
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    group_column: str | None = None,
    split_column: str | None = None,
    classes: str | Sequence[str] | None = None,
    mapping: str | dict[str, str] | None = None,
    group_pattern: str | None = None,
    subset: str = "auto",
    batch_size: int = 64,
    device: str = "auto",
    workers: int = 0,
    name: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> Generator[Progress, None, dict[str, Any]]:
    """Evaluate a checkpoint on labelled images and write the report folder ``out`` (a job).

    Parameters
    ----------
    checkpoint
        A ``.pt`` from :func:`crc_core.training.fit`.
    data
        Dataset folder or CSV; column options default to those the model was trained with.
    subset
        ``auto`` (the validation/test part of the training data when ``data`` is the training data,
        else every image), ``val``, ``test`` or ``all``.

    Returns
    -------
    dict
        The metrics (as in ``metrics.json``) plus ``"out"`` and ``"files"``.
    """
    import torch

    from crc_core.data import TileDataset, collate_skip, load_table, normalize, split_by_group
    from crc_core.models import load_checkpoint, main_logits, model_from_checkpoint
    from crc_core.training import resolve_device

    warn_fn = warn or (lambda msg: None)
    if subset not in ("auto", "val", "test", "all"):
        from crc_core.errors import ConfigError

        raise ConfigError(f"--subset {subset!r}: choose auto, val, test or all")
    ckpt = load_checkpoint(checkpoint, "cpu")
    cfg = ckpt.get("config") or {}
    train_data = cfg.get("data") or {}
    opts = {"image_column": image_column, "label_column": label_column,
            "group_column": group_column, "split_column": split_column, "classes": classes,
            "map": mapping, "group_pattern": group_pattern}
    for k in opts:
        if opts[k] is None:
            opts[k] = train_data.get(k)
    table = load_table(data, image_column=opts["image_column"], label_column=opts["label_column"],
                       group_column=opts["group_column"], split_column=opts["split_column"],
                       classes=opts["classes"], mapping=opts["map"],
                       group_pattern=opts["group_pattern"], warn=warn_fn)
    scheme = ckpt["scheme"]
    unknown = [n for n in table.scheme.names if scheme.find(n) is None]
    if unknown:
        raise DatasetError(f"{table.source}: label(s) {', '.join(unknown)} are not classes of the "
                           f"model ({', '.join(scheme.names)}); use --classes/--map")
    to_model = [scheme.index(n) for n in table.scheme.names]
    sp = None
    if subset != "all" and (subset != "auto"
                            or _same_file(train_data.get("source"), table.source)):
        # The training run's own split (same fractions and seed), computed once.
        sp = split_by_group(table, float(cfg.get("val_fraction", 0.2) or 0.0),
                            int(cfg.get("seed", 0)),
                            test_fraction=float(cfg.get("test_fraction") or 0.0))
    if subset == "auto":
        subset = "all" if sp is None else ("test" if sp.test else ("val" if sp.val else "all"))
    if subset == "all" or sp is None:
        indices = list(range(len(table)))
    else:
        indices = sp.test if subset == "test" else sp.val
    if not indices:
        raise DatasetError(f"{table.source}: the {subset} subset is empty; use --subset all")

    dev = resolve_device(device)
    model, meta = model_from_checkpoint(ckpt, dev)
    model = model.to(memory_format=torch.channels_last)
    size = int(meta["input_size"])
    mean, std = meta["mean"], meta["std"]
    ds = TileDataset(table, indices, size)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers,
                                         collate_fn=collate_skip)
    probs_l: list[np.ndarray] = []
    kept: list[int] = []
    skipped = 0
    done = 0
    n = len(indices)
    yield Progress(0, n, f"evaluating {n} images")
    with torch.inference_mode():
        for x, y, bad in loader:
            start, done = done, done + len(y) + len(bad)
            skipped += len(bad)
            if len(y):
                kept += sorted(set(range(start, done)) - set(bad.tolist()))
                xf = normalize(x.to(dev).float() / 255, mean, std).contiguous(
                    memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                    logits = main_logits(model(xf))
                probs_l.append(torch.softmax(logits.float(), 1).cpu().numpy())
            yield Progress(done, n, f"evaluating {n} images")
    if skipped:
        warn_fn(f"{skipped} unreadable image(s) skipped")
    if not kept:
        raise DatasetError(f"{table.source}: no readable images to evaluate")
    probs = np.concatenate(probs_l)
    rows = [table.samples[indices[j]] for j in kept]
    y_true = np.array([to_model[s.label] for s in rows])
    metrics = compute_metrics(y_true, probs, scheme.names)
    model_name = name or f"{meta['arch']}"
    metrics.update({"model": model_name, "arch": meta["arch"], "checkpoint": str(checkpoint),
                    "data": str(table.source), "subset": subset, "skipped": skipped,
                    "epoch": meta.get("epoch")})

    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    atomic_write_text(outp / "metrics.json", json.dumps(metrics, indent=2))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "label", "predicted"] + [f"prob_{c}" for c in scheme.names])
    base = table.source.parent
    for s, t, pr in zip(rows, y_true, probs, strict=True):
        try:
            shown = str(s.path.relative_to(base))
        except ValueError:
            shown = str(s.path)
        w.writerow([shown, scheme.names[t], scheme.names[int(pr.argmax())]]
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
    hist = Path(checkpoint).parent / "history.csv"
    if hist.is_file():
        history = read_history(hist)
        if history:
            images.insert(0, ("Loss and accuracy", plot_curves(history, outp / "curves.png",
                                                               model_name)))
            files.append("curves.png")
    notes = [f"Checkpoint {checkpoint} ({meta['arch']}, epoch {meta.get('epoch')}), "
             f"data {table.source}, subset {subset}: {len(rows)} images"
             + (f", {skipped} unreadable skipped" if skipped else "") + "."]
    atomic_write_text(outp / "report.html", render_report(f"Evaluation: {model_name}", results,
                                                          images, notes))
    files += ["metrics.json", "predictions.csv", "table3.csv", "table3.md", "table4.csv",
              "table4.md", "confusion.csv", "roc.png", "confusion.png", "report.html"]
    return {**metrics, "out": str(outp), "files": files}


def metrics_from_predictions(path: str | Path) -> dict[str, Any]:
    """Recompute the metrics from a ``predictions.csv`` (label names + ``prob_<class>`` columns)."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = [c for c in (reader.fieldnames or []) if c.startswith("prob_")]
        names = [c[len("prob_"):] for c in cols]
        rows = list(reader)
    y = [names.index(r["label"]) for r in rows]
    probs = np.array([[float(r[c]) for c in cols] for r in rows])
    return compute_metrics(y, probs, names)


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
        try:
            m = json.loads(mfile.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DatasetError(f"{mfile}: not found (give folders written by `crc evaluate`)"
                               ) from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{mfile}: not a metrics.json ({exc})") from None
        if not isinstance(m, dict) or "macro" not in m or "per_class" not in m:
            raise DatasetError(f"{mfile}: not a metrics.json written by `crc evaluate`")
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
