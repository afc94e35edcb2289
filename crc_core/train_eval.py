"""Train several architectures one after another, then evaluate each: the job behind the Train
dialog and ``crc train --evaluate`` (issue 16: the CLI and the GUI on the same jobs).

:func:`train_and_evaluate` runs, for each :class:`RunPlan` in turn, three phases joined with
``yield from``:

``train``
    :func:`crc_core.training.fit` into the run folder (``last.pt``, ``best.pt``, ``history.csv``,
    ``config.json``, ``split.csv``, ``summary.json``).
``evaluate``
    :func:`crc_core.evaluation.evaluate` of the run's ``best.pt`` into ``<run>/eval`` (the report
    folder: ``metrics.json``, ``predictions.csv``, tables, plots, ``report.html``), on the run's
    test split when it has one, else its validation split (``subset="auto"``).
``compare``
    only for a fine-tuning run (``config.init``, :mod:`crc_core.finetune`): the old and the new
    model scored on the same held-out test images (``<run>/compare/``, ``<run>/compare.json``).

Every event says which run and phase it belongs to: each :class:`~crc_core.jobs.Progress` carries
a typed payload, :class:`PhaseStarted`, :class:`PhaseStep` (one event of the phase's own job, with
the epoch under way while training), :class:`~crc_core.jobs.EpochEnded` (fit's, with ``run`` set)
or :class:`PhaseEnded` (fit's summary, evaluate's metrics, the comparison). ``done``/``total`` of
the outer event count the whole job (:data:`UNITS` per run), so a plain progress bar works.
The phases' :class:`~crc_core.jobs.JobWarning` events are passed on, each message once per phase
(the comparison loads its ``test_images.csv`` twice, once per model, and said "no group column"
twice).
:func:`finetune_plans` (a job too) sets plans up to fine-tune a checkpoint; it reads the checkpoint,
so the Train dialog runs it in its worker before this job.
Closing the generator cancels the phase under way (fit keeps every completed epoch in ``last.pt``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from crc_core.errors import CheckpointError, ConfigError
from crc_core.jobs import EpochEnded, Event, JobWarning, Progress, TrainingStep, with_warnings

__all__ = ["UNITS", "EpochEnded", "EvalOptions", "PhaseEnded", "PhaseStarted", "PhaseStep",
           "PlansReady", "RunInfo", "RunPlan", "RunResult", "check_run_folders",
           "finetune_plans", "run_folders", "train_and_evaluate"]

T = TypeVar("T")
#: Units of the outer progress per run.
UNITS = 1000
#: Share of a run's progress each phase takes (normalised over the phases the run has).
PHASE_WEIGHTS = {"train": 8.0, "evaluate": 2.0, "compare": 2.0}


@dataclass(frozen=True)
class RunPlan:
    """One run to train: architecture, run folder, :class:`~crc_core.training.TrainConfig`."""

    arch: str
    out: Path
    config: Any


@dataclass(frozen=True)
class EvalOptions:
    """How each trained model is evaluated (and compared, for a fine-tuning run)."""

    device: str = "auto"
    batch_size: int = 32
    tta: bool = False


@dataclass(frozen=True)
class RunInfo:
    """Which run an event belongs to."""

    index: int       # 0-based
    count: int
    arch: str
    out: Path
    epochs: int
    held_out: str    # what the report is computed on when the data has no split: test | validation
    phases: tuple[str, ...] = ("train",)   # the phases this run goes through, in order

    @property
    def label(self) -> str:
        return f"{self.arch} ({self.index + 1} of {self.count})"


@dataclass(frozen=True)
class PhaseStarted:
    run: RunInfo
    phase: str       # train | evaluate | compare


@dataclass(frozen=True)
class PhaseStep:
    """One event of the phase's own job (``step``: its done/total/message)."""

    run: RunInfo
    phase: str
    step: Progress
    epoch: int | None = None    # training: the epoch under way (1-based), when known


@dataclass(frozen=True)
class PhaseEnded:
    """A phase ended: ``result`` is fit's summary, evaluate's metrics or the comparison."""

    run: RunInfo
    phase: str
    result: dict[str, Any]


@dataclass(frozen=True)
class PlansReady:
    """:func:`finetune_plans` read the checkpoint: the plans as they will run."""

    plans: tuple[RunPlan, ...]


@dataclass
class RunResult:
    """What one run produced (the job returns one per :class:`RunPlan`)."""

    arch: str
    out: Path
    summary: dict[str, Any]
    metrics: dict[str, Any] | None = None
    comparison: dict[str, Any] | None = None


# ----------------------------------------------------------------------------- run folders
def run_folders(template: str, archs: Sequence[str], stamp: str | None = None
                ) -> list[tuple[str, Path]]:
    """The run folder of each architecture: ``{arch}`` and ``{time}`` in ``template`` filled in;
    several architectures without ``{arch}`` go into one subfolder each."""
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    out = []
    for a in archs:
        t = template
        if "{arch}" not in t and len(archs) > 1:
            t = str(Path(t) / "{arch}")
        out.append((a, Path(t.replace("{arch}", a).replace("{time}", stamp)).expanduser()))
    return out


def check_run_folders(runs: Sequence[RunPlan], resume: bool = False) -> None:
    """Refuse, before anything is trained, run folders that cannot be written (one line)."""
    if not runs:
        raise ConfigError("choose at least one architecture")
    outs = [Path(r.out).resolve() for r in runs]
    if len(set(outs)) < len(outs):
        raise ConfigError("two architectures would write the same run folder: put {arch} in "
                          "the run folder's name")
    if resume and len(runs) > 1:
        raise ConfigError("--resume continues one run: give one architecture")
    for r in runs:
        if not resume and (Path(r.out) / "last.pt").exists():
            raise ConfigError(f"{r.out} already holds a training run (last.pt): choose another "
                              f"run folder, or continue it with crc train --resume")


# ----------------------------------------------------------------------------- event plumbing
def _drive(gen: Generator[Event, None, T], each: Callable[[Event], Iterator[Event]]
           ) -> Generator[Event, None, T]:
    """Job: ``gen`` with each of its events replaced by what ``each(event)`` yields; closing
    this job closes ``gen``."""
    try:
        while True:
            try:
                ev = next(gen)
            except StopIteration as stop:
                return stop.value
            yield from each(ev)
    finally:
        gen.close()


class _Phases:
    """Maps one run's phases onto the outer progress (``index * UNITS`` + its share)."""

    def __init__(self, run: RunInfo) -> None:
        self.run = run
        self.current, self.fraction = "", 0.0
        total = sum(PHASE_WEIGHTS[p] for p in run.phases)
        self.span: dict[str, tuple[float, float]] = {}
        start = 0.0
        for p in run.phases:
            share = PHASE_WEIGHTS[p] / total
            self.span[p] = (start, share)
            start += share

    def outer(self, phase: str, fraction: float | None, message: str, payload: Any) -> Progress:
        """The outer event. A step without a total (starting, decoding, validating) keeps the
        last value and has no total either (a bar then shows no percentage for it)."""
        start, share = self.span[phase]
        if phase != self.current:
            self.current, self.fraction = phase, 0.0
        if fraction is not None:
            self.fraction = max(self.fraction, fraction)
        done = (self.run.index + start + share * self.fraction) * UNITS
        return Progress(round(done), None if fraction is None else self.run.count * UNITS,
                        f"{self.run.label} {phase}: {message}".rstrip(": "), payload)

    def _wrap(self, phase: str, ev: Event) -> Iterator[Event]:
        """One event of the phase's job as this job's event (a warning as it is)."""
        run = self.run
        if isinstance(ev, JobWarning):
            yield ev
            return
        if isinstance(ev.payload, EpochEnded):
            yield self.outer(phase, ev.fraction, ev.message,
                             dataclasses.replace(ev.payload, run=run))
        else:
            epoch = ev.payload.epoch if isinstance(ev.payload, TrainingStep) else None
            yield self.outer(phase, ev.fraction, ev.message, PhaseStep(run, phase, ev, epoch))

    def phase(self, phase: str, job: Generator[Event, None, T]) -> Generator[Event, None, T]:
        """Job: ``job`` as the phase ``phase`` of this run, its events wrapped (its warnings
        each once)."""
        run = self.run
        yield self.outer(phase, None, "starting", PhaseStarted(run, phase))
        result = yield from _drive(with_warnings(lambda _warn: job),
                                   lambda ev: self._wrap(phase, ev))
        ended = result if isinstance(result, dict) else {}
        yield self.outer(phase, 1.0, "done", PhaseEnded(run, phase, ended))
        return result


# ----------------------------------------------------------------------------- the jobs
def finetune_plans(plans: Sequence[RunPlan], checkpoint: str | Path
                   ) -> Generator[Event, None, list[RunPlan]]:
    """Job: ``plans`` set up to fine-tune ``checkpoint``
    (:func:`crc_core.finetune.finetune_config`: its architecture, classes, input size and stain
    method kept, a lower rate). It reads the checkpoint, weights included, so a GUI runs it in a
    worker; its last event's payload is :class:`PlansReady`."""
    from crc_core.finetune import finetune_config

    yield Progress(0, None, f"reading {Path(checkpoint).name}")
    ready = [dataclasses.replace(p, config=finetune_config(p.config, checkpoint)) for p in plans]
    yield Progress(0, None, f"{Path(checkpoint).name} read", PlansReady(tuple(ready)))
    return ready


def train_and_evaluate(
    data: str | Path,
    runs: Sequence[RunPlan],
    options: EvalOptions | None = None,
    *,
    evaluate: bool = True,
    compare: bool = True,
    resume: bool = False,
    fit_job: Callable[..., Generator[Event, None, dict[str, Any]]] | None = None,
    evaluate_job: Callable[..., Generator[Event, None, dict[str, Any]]] | None = None,
    compare_job: Callable[..., Generator[Event, None, dict[str, Any]]] | None = None,
) -> Generator[Event, None, list[RunResult]]:
    """Job: train each of ``runs`` in turn, then evaluate its ``best.pt`` (see the module doc).

    Parameters
    ----------
    data
        Dataset folder or CSV manifest (the runs' configs say how to read it).
    runs
        One :class:`RunPlan` per architecture; checked first (:func:`check_run_folders`).
    options
        Device, batch size and test-time augmentation of the evaluation and comparison.
    evaluate, compare
        Run the evaluation phase; run the comparison phase of fine-tuning runs.
    resume
        Continue the (single) run from its ``last.pt``.
    fit_job, evaluate_job, compare_job
        The phases' jobs (default :func:`crc_core.training.fit`,
        :func:`crc_core.evaluation.evaluate`, :func:`crc_core.finetune.compare_job`), with their
        signatures; tests pass small fakes.

    Returns
    -------
    list[RunResult]
        One per run, in order.
    """
    if fit_job is None:
        from crc_core.training import fit as fit_job
    if evaluate_job is None:
        from crc_core.evaluation import evaluate as evaluate_job
    if compare_job is None:
        from crc_core.finetune import compare_job
    options = options or EvalOptions()
    check_run_folders(runs, resume)
    results = []
    for i, plan in enumerate(runs):
        cfg, out = plan.config, Path(plan.out)
        comparing = bool(compare and getattr(cfg, "init", None))
        info = RunInfo(i, len(runs), plan.arch, out, int(cfg.epochs),
                       "test" if float(cfg.test_fraction or 0) > 0 else "validation",
                       ("train", *(["evaluate"] if evaluate else []),
                        *(["compare"] if comparing else [])))
        phases = _Phases(info)
        summary = yield from phases.phase("train", fit_job(data, out, cfg, resume=resume))
        res = RunResult(plan.arch, out, summary if isinstance(summary, dict) else {})
        best = out / "best.pt"
        if (evaluate or comparing) and not best.is_file():
            raise CheckpointError(f"{best}: no checkpoint was written, so {plan.arch} cannot be "
                                  f"evaluated")
        if evaluate:
            res.metrics = yield from phases.phase("evaluate", evaluate_job(
                best, data, out / "eval", device=options.device,
                batch_size=max(2, int(options.batch_size)), tta=options.tta))
        if comparing:
            res.comparison = yield from phases.phase("compare", compare_job(
                cfg.init, best, out, device=options.device))
        results.append(res)
    return results
