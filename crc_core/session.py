"""The working session of one viewer window: the project, the open slide, its annotations and
predictions, with plain-Python events. Qt-free: panels and dialogs take a :class:`Session` (and,
where they need one, a status callback) instead of the main window.

What it holds::

    project           Project | None     the open project (an implicit one for a bare slide)
    entry             SlideEntry | None  the open slide's entry in it
    reader            SlideReader | None the open slide (the session closes it)
    document          D | None           the open slide's annotations as the editor holds them:
                                         any object with ``annotations`` (an AnnotationSet) and
                                         ``scheme`` (the GUI's AnnotationDocument)
    annotation_file   Path | None        an annotation file opened instead of the project's
    predictions       {name: Prediction} the open slide's finished predictions (and their files)

Events (``session.on(name, fn)`` returns a function that unsubscribes; listeners run in the order
they subscribed, on the thread that changed the session, the GUI's in the viewer):

* ``project_changed(project)``: another project (or ``None``);
* ``slide_changed(reader)``: a slide was opened (project, entry, document already set);
* ``slide_closed()``: the slide was closed (its reader closed, predictions dropped);
* ``prediction_added(name, prediction)`` / ``prediction_removed(name)``.

The project owns the folder layout (:mod:`crc_core.project_folders`); the session only says which
slide a prediction belongs to. Not thread-safe: one thread owns a session.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from crc_core.annotations import AnnotationSet
from crc_core.classes import ClassScheme
from crc_core.project import Project, SlideEntry
from crc_core.slide import SlideReader

if TYPE_CHECKING:
    from crc_core.inference import Prediction

__all__ = ["EVENTS", "AnnotationHolder", "Session"]

EVENTS = frozenset(
    {"project_changed", "slide_changed", "slide_closed", "prediction_added", "prediction_removed"}
)


class AnnotationHolder(Protocol):
    """What the session needs of the open slide's annotation document."""

    annotations: AnnotationSet
    scheme: ClassScheme


D = TypeVar("D", bound=AnnotationHolder)
Listener = Callable[..., Any]


class Session(Generic[D]):
    """See the module docstring. ``Session(project)`` starts with a project and no slide."""

    def __init__(self, project: Project | None = None) -> None:
        self.project: Project | None = project
        self.entry: SlideEntry | None = None
        self.reader: SlideReader | None = None
        self.document: D | None = None
        self.annotation_file: Path | None = None
        self.implicit_project = False
        #: the slide was opened from the UI (in a worker): what follows it loads in workers too
        self.opened_in_background = False
        self.predictions: dict[str, Prediction] = {}
        self.prediction_files: dict[str, Path] = {}
        self._listeners: dict[str, list[Listener]] = {name: [] for name in EVENTS}

    # ------------------------------------------------------------------ events
    def on(self, event: str, fn: Listener) -> Callable[[], None]:
        """Call ``fn`` on ``event`` (see the module docstring); returns the unsubscriber."""
        if event not in EVENTS:
            raise ValueError(f"unknown session event {event!r}; one of {sorted(EVENTS)}")
        self._listeners[event].append(fn)
        return lambda: self.off(event, fn)

    def off(self, event: str, fn: Listener) -> None:
        """Stop calling ``fn`` on ``event`` (nothing when it was not subscribed)."""
        if fn in self._listeners.get(event, []):
            self._listeners[event].remove(fn)

    def _emit(self, event: str, *args: Any) -> None:
        for fn in list(self._listeners[event]):  # a listener may unsubscribe itself
            fn(*args)

    # ------------------------------------------------------------------ state
    @property
    def slide_path(self) -> Path | None:
        return self.reader.path if self.reader is not None else None

    @property
    def scheme(self) -> ClassScheme | None:
        """The project's class scheme (``None`` without a project)."""
        return self.project.scheme if self.project is not None else None

    @property
    def annotations(self) -> AnnotationSet | None:
        """The open slide's annotations as edited (``None`` without a slide)."""
        return self.document.annotations if self.document is not None else None

    def set_project(self, project: Project | None, implicit: bool = False) -> None:
        """Make ``project`` current, with no slide open (close the slide first)."""
        changed = project is not self.project
        self.project, self.implicit_project, self.entry = project, implicit, None
        if changed:
            self._emit("project_changed", project)

    def open_slide(
        self, reader: SlideReader, project: Project, entry: SlideEntry, document: D, *,
        implicit: bool = False, annotation_file: Path | None = None, background: bool = False,
    ) -> None:
        """The slide ``reader`` (``entry`` of ``project``) is open with ``document``: a previous
        reader is closed, predictions dropped, then ``project_changed`` (when it is another) and
        ``slide_changed`` are emitted."""
        if self.reader is not None and self.reader is not reader:
            self.reader.close()
        project_changed = project is not self.project
        self.project, self.entry, self.implicit_project = project, entry, implicit
        self.reader, self.document, self.annotation_file = reader, document, annotation_file
        self.opened_in_background = background
        self.predictions.clear()
        self.prediction_files.clear()
        if project_changed:
            self._emit("project_changed", project)
        self._emit("slide_changed", reader)

    def close_slide(self) -> None:
        """Close the open slide (its reader too) and drop its predictions; the project stays."""
        had = self.reader is not None or self.document is not None
        if self.reader is not None:
            self.reader.close()
        self.reader, self.document = None, None
        self.predictions.clear()
        self.prediction_files.clear()
        if had:
            self._emit("slide_closed")

    # ------------------------------------------------------------------ predictions
    def prediction_folder(self) -> Path | None:
        """Where the open slide's predictions are saved (``None`` without a project slide)."""
        if self.project is None or self.entry is None:
            return None
        return self.project.prediction_folder(self.entry)

    def save_prediction(self, name: str, pred: Prediction) -> Path | None:
        """Save ``pred`` as the open slide's prediction ``name`` in the project (``None`` without
        a project slide); raises ``CrcError``/``OSError`` when it cannot be written."""
        if self.project is None or self.entry is None:
            return None
        return self.project.save_prediction(self.entry, name, pred)

    def add_prediction(self, name: str, pred: Prediction, path: Path | None = None) -> None:
        """Record the finished prediction ``name`` of the open slide (replacing one of that
        name); emits ``prediction_added``."""
        self.predictions[name] = pred
        if path is not None:
            self.prediction_files[name] = path
        else:
            self.prediction_files.pop(name, None)
        self._emit("prediction_added", name, pred)

    def remove_prediction(self, name: str) -> None:
        """Forget the prediction ``name`` (its file stays); emits ``prediction_removed`` when
        there was one."""
        self.prediction_files.pop(name, None)
        if self.predictions.pop(name, None) is not None:
            self._emit("prediction_removed", name)

    # ------------------------------------------------------------------ annotations
    def open_annotation_sets(self) -> dict[str, AnnotationSet]:
        """``{slide id: a copy of its annotations}`` for the open slide of the project, edits not
        yet autosaved included (empty when no project slide is open, or when its annotations
        come from a file of their own)."""
        if self.entry is None or self.document is None or self.annotation_file is not None:
            return {}
        return {self.entry.id: self.document.annotations.copy()}
