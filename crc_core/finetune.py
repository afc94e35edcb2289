"""Fine-tuning from a model on a project's reviewed annotations; the old and new model compared.

``crc train --init CHECKPOINT`` and the Train dialog's "Start from a model" call
:func:`finetune_config`: the run keeps the checkpoint's architecture, classes (names and order) and
input size, starts from all its weights (head included) and trains at a lower learning rate: a
tenth of the rate the checkpoint was trained at (:data:`LR_FACTOR`), or :data:`DEFAULT_LR` when the
checkpoint does not record it, unless a rate is given. The checkpoint's stain normaliser is kept as
it was fitted (``TrainConfig.stain_from``: its reference stain vectors or colour statistics, so the
old weights see inputs normalised as in their training, and the new checkpoint stores the same
parameters); ``refit_stain`` (``crc train --init ... --refit-stain``) refits its method on the new
training tiles instead. A checkpoint trained without one is fine-tuned without one.
:func:`match_checkpoint_classes` (called by :func:`crc_core.training.fit`) refuses data whose
classes differ from the checkpoint's in one line, and puts the data's labels in the checkpoint's
order.

Datasets for fine-tuning come from the project's annotations (``crc extract --project``, Build
Dataset): :func:`exclude_proposed` leaves out areas converted from a prediction that nobody has
reviewed (:mod:`crc_core.proposals`), and says how many; accepted and corrected ones are used.

:func:`compare_job` scores the old and the new model on exactly the same images: the new run's
held-out test images (``split.csv``), written to one CSV that both evaluations read. When the run
held nothing out, it returns a warning instead of a comparison. It also says how many of those
images the old model was trained on (by content key, :mod:`crc_core.splits`), since its score on
them is then optimistic.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

from crc_core.atomic import atomic_write_text
from crc_core.errors import CheckpointError, ConfigError
from crc_core.jobs import Event, Progress

__all__ = ["DEFAULT_LR", "LR_FACTOR", "check_init_args", "checkpoint_meta", "compare_job",
           "comparison_text", "exclude_proposed", "finetune_config", "match_checkpoint_classes",
           "run_table"]

#: The fine-tuning rate is this share of the rate the checkpoint was trained at.
LR_FACTOR = 0.1
#: Fine-tuning rate when the checkpoint does not record its own.
DEFAULT_LR = 1e-4
METRICS = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"))


def _load(path: str | Path) -> dict[str, Any]:
    from crc_core.models import load_checkpoint

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"--init {p}: checkpoint not found")
    return load_checkpoint(p)


def checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """``{"arch", "stain"}`` a checkpoint records, read without its weights
    (:func:`crc_core.models.read_checkpoint_header`); ``stain`` is its stain normalisation method
    (``"none"`` when it was trained without one), ``""`` when it has no record (an older
    checkpoint: the run then takes the dialog's field, as :func:`_stain_setup` does); ``{}`` when
    the file is not a readable checkpoint (the Train dialog then preselects nothing)."""
    from crc_core.models import read_checkpoint_header

    try:
        obj = read_checkpoint_header(path)
    except CheckpointError:
        return {}
    if not isinstance(obj, dict) or not isinstance(obj.get("arch"), str):
        return {}
    pre = obj.get("preprocess")  # where training stores it (crc_core.stain.from_checkpoint)
    stain = pre.get("stain") if isinstance(pre, dict) else None
    if not isinstance(stain, dict):  # an older checkpoint: no record
        return {"arch": obj["arch"], "stain": ""}
    method = stain.get("method")
    return {"arch": obj["arch"], "stain": method if isinstance(method, str) and method
            else "none"}


def _stain_setup(cfg: Any, ckpt: dict[str, Any], path: Path, refit: bool
                 ) -> tuple[str, str | None, str]:
    """(stain method, checkpoint whose normaliser is kept or None, a note) for fine-tuning."""
    from crc_core.stain import from_checkpoint

    pre = ckpt.get("preprocess")
    if not (isinstance(pre, dict) and isinstance(pre.get("stain"), dict)):  # an older checkpoint
        return cfg.stain_norm, None, ""
    norm = from_checkpoint(ckpt)
    if norm is None:
        return "none", None, "no stain normalisation, as the model was trained"
    if refit:
        return norm.method, None, f"its {norm.label} stain normalisation refitted on the new tiles"
    return norm.method, str(path), f"its {norm.label} stain normaliser kept as fitted"


def finetune_config(cfg: Any, checkpoint: str | Path, lr: float | None = None,
                    refit_stain: bool = False) -> Any:
    """``cfg`` (a :class:`crc_core.training.TrainConfig`) set up to fine-tune ``checkpoint``.

    ``lr`` is the rate asked for (``None``: a tenth of the checkpoint's); ``refit_stain`` refits
    the checkpoint's stain normalisation method on the new tiles instead of keeping its fitted
    normaliser. Raises :class:`ConfigError` when ``cfg.arch`` is another architecture than the
    checkpoint's.
    """
    ckpt = _load(checkpoint)
    path = Path(checkpoint).resolve()
    if cfg.arch != ckpt["arch"]:
        raise ConfigError(f"{path.name} is a {ckpt['arch']} model; fine-tuning keeps its "
                          f"architecture: choose {ckpt['arch']}, not {cfg.arch}")
    base = (ckpt.get("config") or {}).get("lr")
    if lr is None:
        ok = isinstance(base, (int, float)) and math.isfinite(base) and base > 0
        lr = base * LR_FACTOR if ok else DEFAULT_LR
        how = (f"a tenth of its training rate {base:g}" if ok
               else f"the default fine-tuning rate; {path.name} does not record its own")
    else:
        how = "as given"
    method, stain_from, stain_note = _stain_setup(cfg, ckpt, path, refit_stain)
    new = dataclasses.replace(
        cfg, weights=str(path), init=str(path), lr=float(lr),
        image_size=int(ckpt["input_size"]), stain_norm=method, stain_from=stain_from)
    new.notes = [*cfg.notes, f"fine-tuned from {path.name} ({ckpt['arch']}, classes "
                 f"{', '.join(ckpt['scheme'].names)}, {ckpt['input_size']} px) at learning rate "
                 f"{lr:g} ({how})" + (f"; {stain_note}" if stain_note else "")]
    return new


def match_checkpoint_classes(table: Any, checkpoint: str | Path) -> Any:
    """``table`` with the checkpoint's class scheme and order; refuses other classes. A data class
    that is a member of a checkpoint class's group (a grade of the model's "Adenocarcinoma",
    :func:`crc_core.scheme_map.model_classes_for_label`) counts as that class.

    Raises
    ------
    CheckpointError
        The data's classes are not the checkpoint's (one line naming both).
    """
    from crc_core.scheme_map import model_classes_for_label

    scheme = _load(checkpoint)["scheme"]
    ids = [c.id for c in scheme]
    hits = [model_classes_for_label(c, scheme) for c in table.scheme]
    order = [ids.index(h[0]) if len(h) == 1 else -1 for h in hits]  # data label -> checkpoint
    if -1 in order or sorted(set(order)) != list(range(len(ids))):
        raise CheckpointError(
            f"{Path(checkpoint).name} was trained on classes {', '.join(scheme.names)}; the data "
            f"has {', '.join(table.scheme.names)}: fine-tuning keeps the checkpoint's classes "
            f"(annotate every one of them, a grade counting as its group, or merge labels with "
            f"--map)")
    samples = [dataclasses.replace(s, label=order[s.label]) for s in table.samples]
    return dataclasses.replace(table, samples=samples, scheme=scheme.copy())


def exclude_proposed(sources: Sequence[Any]) -> tuple[list[Any], list[str]]:
    """Slide sources without their unreviewed proposed areas, and a note saying how many left."""
    from crc_core.proposals import is_proposed

    out, dropped = [], 0
    for src in sources:
        keep = [a for a in src.annotations if not is_proposed(a)]
        dropped += len(src.annotations) - len(keep)
        if keep:
            out.append(dataclasses.replace(src, annotations=keep))
    notes = [f"{dropped} proposed area(s) converted from a prediction and not yet reviewed are "
             f"left out (review them in the viewer's Review panel)"] if dropped else []
    return out, notes


# ----------------------------------------------------------------------------- comparison
def _test_rows(run_dir: Path, table: Any) -> list[tuple[str, str, str]]:
    """(absolute image path, class name, content key) of the run's held-out test images."""
    split = run_dir / "split.csv"
    if not split.is_file():
        return []
    by_rel = {table.relpath(i): i for i in range(len(table))}
    rows = []
    with open(split, newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            i = by_rel.get(r.get("path", ""))
            if r.get("split") == "test" and i is not None:
                s = table.samples[i]
                rows.append((str(Path(s.path).resolve()), table.scheme.names[s.label],
                             r.get("key", "")))
    return rows


def _brief(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m.get(k) for k, _ in METRICS} | {"n": m.get("n")}


def run_table(run_dir: Path, checkpoint: str | Path) -> Any:
    """The labelled images a fine-tuning run read (from its ``config.json``), in the
    checkpoint's class order."""
    from crc_core.runs import read_run_config
    from crc_core.tables import load_table

    try:
        data = read_run_config(run_dir)["data"]
        source = data["source"]
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{run_dir}: not a training run folder (no {exc})") from None
    table = load_table(source, image_column=data.get("image_column"),
                       label_column=data.get("label_column"),
                       group_column=data.get("group_column"),
                       split_column=data.get("split_column"), classes=data.get("classes"),
                       mapping=data.get("map"), group_pattern=data.get("group_pattern"))
    return match_checkpoint_classes(table, checkpoint)


def compare_job(
    old: str | Path,
    new: str | Path,
    run_dir: str | Path,
    device: str = "auto",
    batch_size: int = 32,
) -> Generator[Event, None, dict[str, Any]]:
    """Job: score ``old`` and ``new`` checkpoints on the run's held-out test images (the two
    evaluations' :class:`~crc_core.jobs.JobWarning` events as they come: train_and_evaluate's
    compare phase says each once).

    Writes ``compare/test_images.csv``, ``compare/old/``, ``compare/new/`` (evaluation reports)
    and ``compare.json`` in ``run_dir``. Returns ``{"images", "old", "new", "seen_by_old"}``, or
    ``{"warning": ...}`` when nothing was held out.
    """
    from crc_core.evaluation import evaluate
    from crc_core.models import read_checkpoint_header
    from crc_core.splits import SplitRecord

    run_dir = Path(run_dir)
    rows = _test_rows(run_dir, run_table(run_dir, old))
    if not rows:
        result: dict[str, Any] = {"warning": "nothing was held out for testing (test share 0 "
                                  "and no split column), so the new model is not compared "
                                  "with the old one: give a test share to compare them"}
    else:
        folder = run_dir / "compare"
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["image", "label"])
        w.writerows(r[:2] for r in rows)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "test_images.csv", buf.getvalue())
        scores = {}
        for name, ckpt in (("old", old), ("new", new)):
            yield Progress(0, None, f"scoring the {name} model on {len(rows)} test images")
            m = yield from evaluate(ckpt, folder / "test_images.csv", folder / name,
                                    image_column="image", label_column="label", subset="all",
                                    device=device, batch_size=batch_size)
            scores[name] = _brief(m)
        # The split sits beside the weights, so only the header is read (evaluate read it whole).
        rec = SplitRecord.from_json(read_checkpoint_header(old).get("split"))
        seen = sum(1 for r in rows if rec is not None and r[2] and r[2] in rec.train)
        result = {"images": len(rows), "old": scores["old"], "new": scores["new"],
                  "seen_by_old": seen if rec is not None else None,
                  "old_checkpoint": str(old), "new_checkpoint": str(new)}
    atomic_write_text(run_dir / "compare.json", json.dumps(result, indent=2))
    return result


def check_init_args(args: Any) -> str:
    """``crc train --init``: refuse options that contradict it; the architecture to train."""
    if args.resume:
        raise ConfigError("--init starts a new run from a model; --resume continues a run: "
                          "give one of them")
    if args.weights not in (None, "none"):
        raise ConfigError("--init already gives the starting weights; leave out --weights")
    return str(args.arch or _load(args.init)["arch"])


def comparison_text(result: dict[str, Any]) -> str:
    """A few lines a person reads: old and new scores on the same images, or the warning."""
    if "warning" in result:
        return f"warning: {result['warning']}"
    lines = [f"old and new model on the same {result['images']} held-out test images:"]
    for key, label in METRICS:
        o, n = result["old"].get(key), result["new"].get(key)
        if o is not None and n is not None:
            lines.append(f"  {label}: old {o:.3f} -> new {n:.3f} ({n - o:+.3f})")
    seen = result.get("seen_by_old")
    if seen:
        lines.append(f"  note: the old model was trained on {seen} of these images, so its "
                     f"score on them is optimistic")
    elif seen is None:
        lines.append("  note: the old checkpoint does not record its training images; it may "
                     "have seen some of these")
    return "\n".join(lines)
