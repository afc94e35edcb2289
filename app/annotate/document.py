"""The annotations of the open slide as an editable document: undo commands and autosave.

Every edit goes through :class:`AnnotationDocument`, which pushes one :class:`ChangeCommand` onto a
``QUndoStack``: a change maps annotation ids to their state before and after (``None`` = absent), so
adding, deleting, moving, reshaping, painting with the brush and changing classes are all one kind
of
command and undo exactly.

Autosave: after each change (including undo and redo) the document saves itself through its
``saver`` callback (``saver(annotation_set)``; the main window passes ``Project.save_annotations``
or
``crc_core.annotations.save_annotations``, both atomic) once the edits pause for ``autosave_ms``
(default 150 ms), and :meth:`AnnotationDocument.flush` saves at once (on quit, before switching
slide).
A killed process therefore loses at most the last 150 ms of edits, and never the file itself.

Threading: GUI thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack
from shapely.geometry.base import BaseGeometry

from crc_core.annotations import Annotation, AnnotationSet
from crc_core.classes import ClassScheme
from crc_core.errors import CrcError

log = logging.getLogger(__name__)

State = dict[str, Annotation | None]


class ChangeCommand(QUndoCommand):
    """Set annotations to ``after`` on redo and back to ``before`` on undo (``None``: absent)."""

    def __init__(self, doc: AnnotationDocument, before: State, after: State, text: str):
        super().__init__(text)
        self.doc = doc
        self.before = before
        self.after = after
        # original drawing positions, so an undone delete comes back in place
        self.positions = {k: doc.annotations.index(k) for k, v in before.items() if v is not None}

    def redo(self) -> None:
        self.doc._apply(self.after, {})

    def undo(self) -> None:
        self.doc._apply(self.before, self.positions)


class AnnotationDocument(QObject):
    """Annotations of one slide with undo/redo, selection and autosave.

    Signals
    -------
    changed(): the annotations changed (edit, undo, redo, reload).
    selectionChanged(): the selected ids changed.
    saved(): an autosave or flush wrote the file.
    saveFailed(str): a save failed; one-line message for the user.
    """

    changed = Signal()
    selectionChanged = Signal()
    saved = Signal()
    saveFailed = Signal(str)

    def __init__(
        self,
        scheme: ClassScheme,
        annotations: AnnotationSet | None = None,
        saver: Callable[[AnnotationSet], None] | None = None,
        autosave_ms: int = 150,
        parent: QObject | None = None,
    ):
        super().__init__(parent)
        self.scheme = scheme
        self.annotations = annotations if annotations is not None else AnnotationSet()
        self.saver = saver
        self.undo_stack = QUndoStack(self)
        self.undo_stack.setUndoLimit(500)
        self.selection: list[str] = []
        self.dirty = False
        self.save_count = 0
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(autosave_ms)
        self._timer.timeout.connect(self.flush)

    # ----------------------------------------------------------------- queries
    def __len__(self) -> int:
        return len(self.annotations)

    def __iter__(self):
        return iter(self.annotations)

    def get(self, ann_id: str) -> Annotation | None:
        return self.annotations.find(ann_id)

    def selected(self) -> list[Annotation]:
        return [a for a in (self.annotations.find(i) for i in self.selection) if a is not None]

    # ----------------------------------------------------------------- edits (undoable)
    def push_change(self, before: State, after: State, text: str) -> None:
        """Push one undoable change (no-op when nothing differs)."""
        if all(before.get(k) is after.get(k) for k in set(before) | set(after)):
            return
        self.undo_stack.push(ChangeCommand(self, before, after, text))

    def add(
        self, class_id: str, geometry: BaseGeometry, name: str = "", text: str = "Add annotation"
    ) -> Annotation:
        ann = Annotation.new(class_id, geometry, name=name)
        self.push_change({ann.id: None}, {ann.id: ann}, text)
        self.set_selection([ann.id])
        return ann

    def add_annotations(self, anns: Iterable[Annotation], text: str = "Add annotations") -> None:
        anns = list(anns)
        self.push_change({a.id: None for a in anns}, {a.id: a for a in anns}, text)

    def remove(self, ids: Iterable[str], text: str = "Delete annotation") -> None:
        before = {i: self.annotations.find(i) for i in ids if i in self.annotations}
        if not before:
            return
        if len(before) > 1 and text == "Delete annotation":
            text = f"Delete {len(before)} annotations"
        self.push_change(before, {i: None for i in before}, text)

    def update(self, new: Iterable[Annotation], text: str) -> None:
        """Replace annotations (same ids) with changed copies."""
        new = [a for a in new if a.id in self.annotations]
        self.push_change(
            {a.id: self.annotations.get(a.id) for a in new}, {a.id: a for a in new}, text
        )

    def set_geometry(
        self, ann_id: str, geometry: BaseGeometry | None, text: str = "Edit shape"
    ) -> None:
        """Change one annotation's geometry (``None`` or empty removes it)."""
        old = self.annotations.get(ann_id)
        if geometry is None or geometry.is_empty:
            self.push_change({ann_id: old}, {ann_id: None}, text)
        else:
            self.push_change({ann_id: old}, {ann_id: old.replace(geometry=geometry)}, text)

    def set_class(self, ids: Iterable[str], class_id: str) -> None:
        self.scheme.get(class_id)
        anns = [
            a
            for a in (self.annotations.find(i) for i in ids)
            if a is not None and a.class_id != class_id
        ]
        if anns:
            name = self.scheme.get(class_id).name
            self.update([a.replace(class_id=class_id) for a in anns], f"Set class to {name}")

    def rename(self, ann_id: str, name: str) -> None:
        old = self.annotations.get(ann_id)
        if old.name != name:
            self.update([old.replace(name=name)], "Rename annotation")

    # ----------------------------------------------------------------- raw apply (commands)
    def _apply(self, state: State, positions: dict[str, int]) -> None:
        aset = self.annotations
        for ann_id, ann in state.items():
            present = ann_id in aset
            if ann is None:
                if present:
                    aset.remove(ann_id)
            elif present:
                aset.replace(ann)
        # re-insert in original order so undone deletions return to their place
        for ann_id, ann in sorted(
            ((k, v) for k, v in state.items() if v is not None and k not in aset),
            key=lambda kv: positions.get(kv[0], 1 << 30),
        ):
            aset.add(ann, positions.get(ann_id))
        sel = [i for i in self.selection if i in aset]
        if sel != self.selection:
            self.selection = sel
            self.selectionChanged.emit()
        self._changed()

    def _changed(self) -> None:
        self.dirty = True
        self.changed.emit()
        if self.saver is not None:
            self._timer.start()

    # ----------------------------------------------------------------- selection
    def set_selection(self, ids: Iterable[str]) -> None:
        ids = [i for i in dict.fromkeys(ids) if i in self.annotations]
        if ids != self.selection:
            self.selection = ids
            self.selectionChanged.emit()

    # ----------------------------------------------------------------- saving
    def flush(self) -> bool:
        """Save now if anything changed since the last save; ``False`` when the save failed."""
        self._timer.stop()
        if not self.dirty or self.saver is None:
            return True
        try:
            self.saver(self.annotations)
        except (CrcError, OSError) as exc:
            msg = (
                str(exc)
                if isinstance(exc, CrcError)
                else f"{getattr(exc, 'filename', '')}: {exc.strerror or exc}"
            )
            log.error("autosave failed: %s", msg)
            self.saveFailed.emit(f"Annotations could not be saved: {msg}")
            return False
        self.dirty = False
        self.save_count += 1
        self.saved.emit()
        return True

    def replace_all(self, aset: AnnotationSet) -> None:
        """Load a new set (not undoable: clears the undo history)."""
        self.undo_stack.clear()
        self.annotations = aset
        self.selection = []
        self.selectionChanged.emit()
        self.changed.emit()
