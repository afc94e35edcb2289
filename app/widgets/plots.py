"""Matplotlib plots embedded in Qt: live training curves, ROC curves per class, confusion matrix.

Each plot is a ``FigureCanvasQTAgg`` (matplotlib's Qt backend, which supports PySide6) over a
plain ``matplotlib.figure.Figure``; pyplot is never used here, so its global backend (Agg in the
core) does not matter. Updates call ``draw_idle``, so several changes in one event-loop turn cost
one redraw. GUI thread only: workers hand rows over through signals.

A plot with nothing to show hides its axes and says why in the middle of the figure
(:attr:`_Canvas.empty_message`), instead of drawing empty axes with meaningless limits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from PySide6.QtWidgets import QSizePolicy, QWidget

SPLITS = ("train", "val")
_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "val_bal_acc")
_STYLE = {"train": "-", "val": "--"}


class _Canvas(FigureCanvasQTAgg):
    def __init__(self, figsize: tuple[float, float], parent: QWidget | None = None) -> None:
        self.figure = Figure(figsize=figsize, layout="constrained")
        super().__init__(self.figure)
        self.setParent(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(280, 200)
        self._empty = self.figure.text(0.5, 0.5, "", ha="center", va="center", wrap=True,
                                       color="0.35", fontsize=10)

    @property
    def empty_message(self) -> str:
        """What the plot says instead of empty axes ("" when it shows data)."""
        return str(self._empty.get_text()) if self._empty.get_visible() else ""

    def _set_empty(self, message: str) -> None:
        """Hide the axes and say ``message``; ``""`` shows the axes again."""
        for ax in self.figure.axes:
            ax.set_visible(not message)
        self._empty.set_text(message)
        self._empty.set_visible(bool(message))


class CurvesCanvas(_Canvas):
    """Loss and accuracy per epoch, training (solid) and validation (dashed), one colour per run.

    :meth:`start_run` begins a new run (e.g. the next architecture); :meth:`add_row` appends one
    history row (``epoch``, ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc`` and, dotted,
    ``val_bal_acc``; missing or
    ``None`` values leave a gap); :meth:`set_history` replaces a run's rows at once.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__((8.0, 3.2), parent)
        self.ax_loss, self.ax_acc = self.figure.subplots(1, 2)
        self.runs: dict[str, dict[str, list[float]]] = {}
        self._lines: dict[tuple[str, str, str], Any] = {}
        self._current: str | None = None
        self._style_axes()
        self._set_empty(self.EMPTY)
        self.draw_idle()

    EMPTY = "No epochs yet: loss and accuracy are drawn here as each epoch ends."

    def _color(self, index: int) -> str:
        return f"C{index % 10}"

    def _style_axes(self) -> None:
        self.ax_loss.set(xlabel="Epoch", ylabel="Loss", title="Loss")
        self.ax_acc.set(xlabel="Epoch", ylabel="Accuracy", title="Accuracy", ylim=(0, 1.02))
        for ax in (self.ax_loss, self.ax_acc):
            ax.grid(True, alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)

    def clear(self) -> None:
        """Forget every run and empty both axes."""
        self.runs.clear()
        self._lines.clear()
        self._current = None
        self.ax_loss.clear()
        self.ax_acc.clear()
        self._style_axes()
        self._set_empty(self.EMPTY)
        self.draw_idle()

    def start_run(self, name: str) -> None:
        """Begin (or restart) the run ``name``; its lines get the next colour."""
        if name in self.runs:
            for key in [k for k in self._lines if k[0] == name]:
                self._lines.pop(key).remove()
        color = self._color(len(self.runs) if name not in self.runs
                            else list(self.runs).index(name))
        self.runs[name] = {k: [] for k in ("epoch", *_KEYS)}
        for ax, metric in ((self.ax_loss, "loss"), (self.ax_acc, "acc")):
            for split in SPLITS:
                (line,) = ax.plot([], [], _STYLE[split], color=color, marker="o", markersize=3,
                                  label=f"{name} {split}")
                self._lines[(name, split, metric)] = line
        # Validation balanced accuracy (dotted): in the legend once a row carries it.
        (line,) = self.ax_acc.plot([], [], ":", color=color, marker=".", markersize=3,
                          label="_nolegend_")
        self._lines[(name, "val", "bal_acc")] = line
        self._current = name
        self._refresh_legend()

    def add_row(self, row: Mapping[str, Any], run: str | None = None) -> None:
        """Append one epoch's history row to ``run`` (default: the current run)."""
        name = run or self._current
        if name is None:
            name = "run"
            self.start_run(name)
        elif name not in self.runs:
            self.start_run(name)
        data = self.runs[name]
        data["epoch"].append(float(row.get("epoch") or len(data["epoch"]) + 1))
        for key in _KEYS:
            v = row.get(key)
            data[key].append(np.nan if v is None else float(v))
        self._update_lines(name)
        self.draw_idle()

    def set_history(self, rows: Iterable[Mapping[str, Any]], run: str = "run") -> None:
        """Replace the rows of ``run`` with ``rows`` (a whole ``history.csv``)."""
        self.start_run(run)
        for row in rows:
            data = self.runs[run]
            data["epoch"].append(float(row.get("epoch") or len(data["epoch"]) + 1))
            for key in _KEYS:
                v = row.get(key)
                data[key].append(np.nan if v is None else float(v))
        self._update_lines(run)
        self.draw_idle()

    def series(self, key: str, run: str | None = None) -> list[float]:
        """The plotted values of ``key`` (e.g. ``"val_loss"``) of ``run`` (default: current)."""
        name = run or self._current
        return list(self.runs[name][key]) if name in self.runs else []

    def _update_lines(self, name: str) -> None:
        data = self.runs[name]
        ep = data["epoch"]
        self._set_empty("" if any(d["epoch"] for d in self.runs.values()) else self.EMPTY)
        for split in SPLITS:
            self._lines[(name, split, "loss")].set_data(ep, data[f"{split}_loss"])
            self._lines[(name, split, "acc")].set_data(ep, data[f"{split}_acc"])
        bal = self._lines[(name, "val", "bal_acc")]
        bal.set_data(ep, data["val_bal_acc"])
        if bal.get_label() == "_nolegend_" and not np.all(np.isnan(data["val_bal_acc"])):
            bal.set_label(f"{name} val balanced")
            self._refresh_legend()
        for ax in (self.ax_loss, self.ax_acc):
            ax.relim()
            ax.autoscale_view()
        xmax = max((max(d["epoch"]) for d in self.runs.values() if d["epoch"]), default=1.0)
        for ax in (self.ax_loss, self.ax_acc):
            ax.set_xlim(0.5, max(1.5, xmax + 0.5))
        self.ax_acc.set_ylim(0, 1.02)
        self._refresh_legend()

    def _refresh_legend(self) -> None:
        for ax in (self.ax_loss, self.ax_acc):
            if ax.get_lines():
                ax.legend(fontsize=7, loc="best")


class RocCanvas(_Canvas):
    """One-vs-rest ROC curve per class with its AUC (paper Fig. 7)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__((4.6, 4.0), parent)
        self.ax = self.figure.subplots()
        self.curves: dict[str, float] = {}   # class name -> AUC of the plotted curves
        self.plot(np.zeros(0, dtype=int), np.zeros((0, 0)), [])

    def plot(self, y_true: np.ndarray, probs: np.ndarray, names: Sequence[str],
             colors: Sequence[tuple[int, int, int]] | None = None, title: str = "") -> None:
        """Draw the curves of ``(N,)`` labels against ``(N, K)`` probabilities."""
        from sklearn.metrics import roc_auc_score, roc_curve

        ax = self.ax
        ax.clear()
        self.curves = {}
        y = np.asarray(y_true)
        for i, name in enumerate(names):
            pos = y == i
            if not pos.any() or pos.all():
                continue          # AUC undefined: class absent, or nothing else present
            fpr, tpr, _ = roc_curve(pos, probs[:, i])
            auc = float(roc_auc_score(pos, probs[:, i]))
            color = None if colors is None else tuple(c / 255 for c in colors[i])
            ax.plot(fpr, tpr, color=color, label=f"{name} (AUC {auc:.3f})")
            self.curves[name] = auc
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8)
        ax.set(xlabel="False positive rate", ylabel="True positive rate", xlim=(0, 1),
               ylim=(0, 1.02), title=title or "ROC per class")
        ax.grid(True, alpha=0.3)
        if self.curves:
            ax.legend(loc="lower right", fontsize=7)
            self._set_empty("")
        elif len(y):
            self._set_empty(f"{title or 'ROC'}: no curve, every image is of one class "
                            "(a ROC curve needs positives and negatives)")
        else:
            self._set_empty(f"{title or 'ROC'}: nothing evaluated yet")
        self.draw_idle()


class ConfusionCanvas(_Canvas):
    """Confusion matrix: counts with row-normalised shading (paper Fig. 8)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__((4.6, 4.0), parent)
        self.ax = self.figure.subplots()
        self.matrix = np.zeros((0, 0), dtype=int)
        self.plot(self.matrix, [])

    def plot(self, cm: np.ndarray | Sequence[Sequence[int]], names: Sequence[str],
             title: str = "") -> None:
        """Draw ``cm`` (rows true, columns predicted) labelled with ``names``."""
        ax = self.ax
        ax.clear()
        cm = np.asarray(cm, dtype=int).reshape(len(names), len(names))
        self.matrix = cm
        k = len(names)
        ax.set(title=title or "Confusion matrix")
        if k:
            norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
            ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
            small = 9 if k <= 4 else (8 if k <= 6 else 6)
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, f"{cm[i, j]}\n{norm[i, j]:.0%}", ha="center", va="center",
                            color="white" if norm[i, j] > 0.5 else "black", fontsize=small)
            ax.set_xticks(range(k), names, rotation=35, ha="right", fontsize=small)
            ax.set_yticks(range(k), names, fontsize=small)
            ax.set(xlabel="Predicted", ylabel="True")
            self._set_empty("")
        else:
            ax.set_xticks([])
            ax.set_yticks([])
            self._set_empty(f"{title or 'Confusion matrix'}: nothing evaluated yet")
        self.draw_idle()
