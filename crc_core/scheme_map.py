"""A model's classes mapped onto a project's class scheme, with class groups, checked up front.

A model trained on coarser classes than the project's is usable on it when each model class is a
project class (same id, else same name) or the *group* of several project classes: the model's
"Adenocarcinoma" covers the project's "Adenocarcinoma well / moderately / poorly differentiated".
The reverse also holds: a finer model's three grades are all *members* of a coarser project's
"Adenocarcinoma" (they are merged there). A project class belongs to the group of a model class when
:data:`GROUPS` lists it under the model class's id, or when its name is the model class's name
followed by a qualifier ("Adenocarcinoma, moderately differentiated"). A model class with no
counterpart refuses the model, with a message naming the class and the project's classes.

A group class is painted in the model's colour for it unless that colour is (very nearly, RGB
distance <= :data:`CLOSE`) the colour of a project class, which would make the map read as that
class (the shipped model's Adenocarcinoma #ffc107 is the five-class scheme's "Adenocarcinoma well
differentiated"): it is then painted in :func:`distinct_color`, deterministic and far from every
project class colour, and the mapping statement says so.

:func:`read_checkpoint_summary` reads a checkpoint's architecture and class list through
``torch.load(weights_only=True, mmap=True)`` without touching the weights (tens of milliseconds for
the 47 MB demo model against seconds for a full load), so :func:`checked_predict` refuses an
unusable model before its weights are loaded. Qt-free; the mapping is plain data, thread-safe.
"""

from __future__ import annotations

import colorsys
import math
import os
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crc_core.classes import RGB, ClassDef, ClassScheme
from crc_core.errors import CheckpointError, ClassSchemeError
from crc_core.jobs import Event, Progress

#: Known groups: a model class id -> the project class ids it covers (besides the name rule).
GROUPS: dict[str, tuple[str, ...]] = {
    "adenocarcinoma": ("adc-well", "adc-moderate", "adc-poor"),
}
_QUALIFIER_START = (" ", ",", ":", "(", "-", "/", ";")
#: RGB distance at or under which two class colours read as the same.
CLOSE = 24.0
#: Colours tried, in order, for a group whose own colour is a project class's.
_DISTINCT: tuple[RGB, ...] = ((156, 39, 176), (0, 150, 136), (121, 85, 72), (63, 81, 181),
                              (233, 30, 99), (0, 188, 212), (205, 220, 57), (96, 125, 139))
_WELL_APART = 80.0  # the first of _DISTINCT at least this far from every colour avoided is taken


def is_member(member: ClassDef, group: ClassDef) -> bool:
    """Whether class ``member`` is one of the classes that class ``group`` covers."""
    if member.id == group.id or member.name.casefold() == group.name.casefold():
        return False
    if member.id in GROUPS.get(group.id, ()):
        return True
    head, name = group.name.strip().casefold(), member.name.strip().casefold()
    return name.startswith(head) and name[len(head):len(head) + 1] in _QUALIFIER_START


def _same(a: ClassDef, scheme: ClassScheme) -> ClassDef | None:
    """The class of ``scheme`` that is ``a`` (same id, else same name)."""
    return next((q for q in scheme if q.id == a.id), None) or scheme.find_name(a.name)


@dataclass(frozen=True)
class ClassLink:
    """One model class and the project classes it stands for.

    ``kind``: ``"same"`` (one project class), ``"group"`` (the model class covers several project
    classes) or ``"member"`` (the project merges this and other model classes into one class).
    ``color`` is what the class map paints it in; ``color_note`` says where that colour comes from.
    """

    model: ClassDef
    project: tuple[ClassDef, ...]
    kind: str
    color: RGB
    color_note: str = ""

    def describe(self) -> str:
        names = [p.name for p in self.project]
        if self.kind == "group":
            return (f"model class {self.model.name} covers the project's classes "
                    f"{_join(names)} ({self.color_note})")
        if self.kind == "member":
            return f"model class {self.model.name} is counted as the project's class {names[0]}"
        if self.model.name != names[0]:
            return f"model class {self.model.name} is the project's class {names[0]}"
        return ""


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


@dataclass
class SchemeMap:
    """How a model's classes (in its output order) relate to a project's class scheme."""

    model_scheme: ClassScheme
    project_scheme: ClassScheme
    links: list[ClassLink] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return all(k.kind == "same" and k.model.name == k.project[0].name for k in self.links) and \
            len(self.links) == len(self.project_scheme)

    def display_scheme(self) -> ClassScheme:
        """The model's classes in its output order (its ids) with the project's names and colours
        where they are the same class; what a prediction is labelled and painted with."""
        out = []
        for k in self.links:
            name = k.project[0].name if k.kind == "same" else k.model.name
            src = k.project[0] if k.kind == "same" else k.model
            out.append(ClassDef(k.model.id, name, k.color, src.key, src.description))
        return ClassScheme(out)

    def project_classes(self, model_class: str) -> list[str]:
        """Project class ids a model class (id or name) stands for."""
        m = self.model_scheme.get(model_class)
        return [p.id for k in self.links if k.model.id == m.id for p in k.project]

    def model_classes(self, project_class: str) -> list[str]:
        """Model class ids that predict a project class (id or name); [] when none does."""
        p = self.project_scheme.get(project_class)
        return [k.model.id for k in self.links if any(q.id == p.id for q in k.project)]

    def never_predicted(self) -> list[str]:
        covered = {p.id for k in self.links for p in k.project}
        return [p.name for p in self.project_scheme if p.id not in covered]

    def statement(self) -> str:
        """One paragraph for the user: groups, merges, renames, classes never predicted."""
        if self.identical:
            return ""
        parts = [d for d in (k.describe() for k in self.links) if d]
        missing = self.never_predicted()
        if missing:
            parts.append(f"never predicted: {_join(missing)}")
        head = (f"The model's classes ({', '.join(self.model_scheme.names)}) mapped onto the "
                f"project's ({len(self.project_scheme)} classes)")
        return head + (": " + "; ".join(parts) if parts else "") + "."


def _hex(color: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*color)


def distinct_color(avoid: list[RGB]) -> RGB:
    """A colour far from every colour in ``avoid``: the first of a fixed list at least
    ``_WELL_APART`` from all of them, else the farthest of that list and a 36-hue wheel."""
    def margin(c: RGB) -> float:
        return min((math.dist(c, a) for a in avoid), default=math.inf)

    for c in _DISTINCT:
        if margin(c) >= _WELL_APART:
            return c
    wheel = [tuple(round(v * 255) for v in colorsys.hsv_to_rgb(h / 36, 0.8, 0.75))
             for h in range(36)]
    return max([*_DISTINCT, *wheel], key=margin)  # type: ignore[arg-type]


def _group_color(model: ClassDef, project: ClassScheme, used: list[RGB]) -> tuple[RGB, str]:
    """The colour a group class is painted in (see the module docstring) and the note saying
    where it comes from; ``used`` are the colours of the groups mapped before it."""
    near = [p.name for p in project if math.dist(p.color, model.color) <= CLOSE]
    if not near and all(math.dist(u, model.color) > CLOSE for u in used):
        return model.color, f"painted in the group's colour {model.hex}, the model's {model.name}"
    color = distinct_color([p.color for p in project] + used)
    why = (f"the model's own {model.hex} is the project's colour for {_join(near)}" if near
           else f"the model's own {model.hex} is another group's")
    return color, f"painted in {_hex(color)}, a colour of no project class: {why}"


def _link(c: ClassDef, project: ClassScheme, taken: set[str], used: list[RGB]
          ) -> ClassLink | None:
    same = _same(c, project)
    if same is not None:
        return ClassLink(c, (same,), "same", same.color)
    members = [p for p in project if p.id not in taken and is_member(p, c)]
    if members:
        color, note = _group_color(c, project, used)
        used.append(color)
        return ClassLink(c, tuple(members), "group", color, note)
    parent = next((p for p in project if is_member(c, p)), None)
    if parent is not None:
        return ClassLink(c, (parent,), "member", parent.color,
                         f"painted in the colour of {parent.name}")
    return None


def scheme_map(model_scheme: ClassScheme, project_scheme: ClassScheme | None) -> SchemeMap:
    """Map ``model_scheme`` (a checkpoint's classes) onto ``project_scheme`` (see module docstring).

    Raises
    ------
    ClassSchemeError
        A model class has no counterpart in the project, or two model classes are the same
        project class.
    """
    if project_scheme is None:
        project_scheme = model_scheme
    taken = {s.id for c in model_scheme if (s := _same(c, project_scheme)) is not None}
    links, missing, used = [], [], []
    for c in model_scheme:
        k = _link(c, project_scheme, taken, used)
        if k is None:
            missing.append(c.name)
        else:
            links.append(k)
    if missing:
        raise ClassSchemeError(
            f"the model's class{'es' if len(missing) > 1 else ''} {_join(missing)} "
            f"{'have' if len(missing) > 1 else 'has'} no counterpart in the project's class scheme "
            f"({', '.join(project_scheme.names)}): neither the same class nor a group of its "
            f"classes; add {'them' if len(missing) > 1 else 'it'} to the project (Edit > Class "
            f"scheme) or choose a model trained on these classes")
    same_ids = [k.project[0].id for k in links if k.kind == "same"]
    if len(set(same_ids)) != len(same_ids):
        raise ClassSchemeError(
            f"two of the model's classes ({', '.join(model_scheme.names)}) are the same project "
            f"class; the model cannot be mapped onto the project's scheme")
    return SchemeMap(model_scheme.copy(), project_scheme.copy(), links)


def model_classes_for_label(label: ClassDef, model_scheme: ClassScheme) -> list[str]:
    """Ids of the model classes that agree with an annotation labelled ``label`` (a project
    class): the same class, the group that covers it, or the members it merges."""
    same = _same(label, model_scheme)
    if same is not None:
        return [same.id]
    group = [c.id for c in model_scheme if is_member(label, c)]
    return group or [c.id for c in model_scheme if is_member(c, label)]


# ------------------------------------------------------------------------- the checkpoint, cheaply
@dataclass
class CheckpointSummary:
    """What a checkpoint says about itself, read without its weights."""

    path: Path
    arch: str
    scheme: ClassScheme
    input_size: int | None
    seconds: float


def read_checkpoint_summary(path: str | os.PathLike[str]) -> CheckpointSummary:
    """Architecture and classes of a checkpoint, memory-mapped (``weights_only=True, mmap=True``):
    no weight is read from disk and no code is run.

    Raises
    ------
    CheckpointError
        Missing, not a CRC Workbench checkpoint, or without a valid class list.
    """
    from crc_core.models import read_checkpoint_header

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} not found; choose a .pt file from `crc train`")
    t0 = time.perf_counter()
    ckpt = read_checkpoint_header(p)
    if not isinstance(ckpt, dict) or "classes" not in ckpt or "arch" not in ckpt:
        raise CheckpointError(f"{p} is not a CRC Workbench checkpoint (no class list)")
    try:
        scheme = ClassScheme.from_json(ckpt["classes"], where=f"{p} classes")
    except ClassSchemeError as exc:
        raise CheckpointError(f"checkpoint {p} has an invalid class scheme: {exc}") from None
    size = ckpt.get("input_size")
    return CheckpointSummary(p, str(ckpt["arch"]), scheme, size if isinstance(size, int) else None,
                             time.perf_counter() - t0)


def check_checkpoint(checkpoint: str | os.PathLike[str], project_scheme: ClassScheme | None
                     ) -> tuple[SchemeMap, CheckpointSummary]:
    """The checkpoint's classes (read without its weights) mapped onto ``project_scheme``.

    Raises
    ------
    CheckpointError, ClassSchemeError
        Unreadable checkpoint; a class without counterpart (the message says it was refused before
        the weights were loaded and how long the check took).
    """
    summary = read_checkpoint_summary(checkpoint)
    try:
        return scheme_map(summary.scheme, project_scheme), summary
    except ClassSchemeError as exc:
        raise ClassSchemeError(f"{summary.path.name} refused: {exc} (checked in "
                               f"{summary.seconds:.2f} s, before loading its weights)") from None


def check_job(checkpoint: str | os.PathLike[str], project_scheme: ClassScheme | None
              ) -> Generator[Progress, None, tuple[SchemeMap, CheckpointSummary]]:
    """:func:`check_checkpoint` as a job (for a GUI worker)."""
    yield Progress(0, None, "reading the model's classes")
    return check_checkpoint(checkpoint, project_scheme)


@dataclass(frozen=True)
class MappingChosen:
    """Event payload of :func:`checked_predict`: the checkpoint's classes were accepted."""

    map: SchemeMap
    summary: CheckpointSummary


def checked_predict(slide: Any, checkpoint: str | os.PathLike[str],
                    project_scheme: ClassScheme | None, **options: Any
                    ) -> Generator[Event, None, Any]:
    """:func:`crc_core.inference.predict` after the class check: the checkpoint's classes are read
    and mapped onto ``project_scheme`` first (a refusal costs no weight loading). Yields a
    :class:`MappingChosen` payload before predict's events; the prediction is labelled with
    :meth:`SchemeMap.display_scheme`."""
    from crc_core.inference import predict

    yield Progress(0, None, "reading the model's classes")
    smap, summary = check_checkpoint(checkpoint, project_scheme)
    yield Progress(0, None, smap.statement() or "the model's classes are the project's",
                   MappingChosen(smap, summary))
    options.pop("scheme", None)
    return (yield from predict(slide, checkpoint, scheme=smap.display_scheme(), **options))


def group_note(model_name: str, chosen: str) -> str:
    """What a proposal of a group class records: the model did not predict the member."""
    return (f"the model predicted {model_name}, not its grade: proposed as {chosen}; set the grade "
            f"in review")


def target_mapping(pred_scheme: ClassScheme, project_scheme: ClassScheme,
                   choices: dict[str, str] | None = None
                   ) -> tuple[dict[str, str] | None, dict[str, str]]:
    """How a prediction's classes become project classes, and the notes of those that are a guess.

    Returns ``(mapping, notes)``: ``mapping`` (prediction class id -> project class id, for
    :func:`crc_core.proposals.class_targets`) is ``None`` when every prediction class is a project
    class. A group class (the model's "Adenocarcinoma") becomes ``choices[its id]`` (a project class
    id) or else its first member, and ``notes[its id]`` (:func:`group_note`) says the member was not
    predicted; a member class becomes the project class that merges it.

    Raises
    ------
    ClassSchemeError
        A prediction class has no counterpart (see :func:`scheme_map`), or a choice is not a member
        of its group.
    """
    smap = scheme_map(pred_scheme, project_scheme)
    if all(k.kind == "same" for k in smap.links):
        return None, {}
    mapping: dict[str, str] = {}
    notes: dict[str, str] = {}
    for k in smap.links:
        target = k.project[0]
        if k.kind == "group":
            want = (choices or {}).get(k.model.id)
            if want is not None:
                hits = [p for p in k.project if want in (p.id, p.name)]
                if not hits:
                    raise ClassSchemeError(f"{want} is not one of the classes that the model's "
                                           f"{k.model.name} covers")
                target = hits[0]
            notes[k.model.id] = group_note(k.model.name, target.name)
        mapping[k.model.id] = target.id
    return mapping, notes
