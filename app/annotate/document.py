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

Locked annotations (``Annotation.locked``, QuPath's ``isLocked``) keep their outline: a change
that would move, reshape or delete one is dropped from the command (the rest of the change goes
through) and :attr:`AnnotationDocument.refused` says which, by name. Their name, description,
class and flags can still change (unlocking is such a change). Hidden annotations
(``Annotation.hidden``) are edited like any other; the layer just does not draw them.

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
from crc_core.errors import CrcError, error_message

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
    refused(str): part of an edit was refused (locked annotations); one line naming them.
    """

    changed = Signal()
    selectionChanged = Signal()
    saved = Signal()
    saveFailed = Signal(str)
    refused = Signal(str)

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

    def display_name(self, ann_id: str) -> str:
        """The name a person reads: the annotation's name, else ``"<class name> #<n>"``."""
        return self.annotations.display_name(ann_id, self.scheme)

    def names_text(self, ids: Iterable[str], limit: int = 3) -> str:
        """``"Tumour front, Normal #2 and 3 more"``: annotations named for a message."""
        names = self.annotations.display_names(self.scheme)
        got = [names[i] for i in ids if i in names]
        if len(got) > limit:
            return ", ".join(got[:limit]) + f" and {len(got) - limit} more"
        return " and ".join([", ".join(got[:-1]), got[-1]] if len(got) > 1 else got)

    def check_editable(self, ids: Iterable[str], what: str = "moved, reshaped or deleted") -> bool:
        """``True`` when none of ``ids`` is locked; else say which are (``refused``)."""
        locked = [i for i in ids if (a := self.annotations.find(i)) is not None and a.locked]
        if locked:
            verb = "is" if len(locked) == 1 else "are"
            self.refused.emit(
                f"{self.names_text(locked)} {verb} locked and cannot be {what} (unlock first)"
            )
        return not locked

    # ----------------------------------------------------------------- edits (undoable)
    def push_change(self, before: State, after: State, text: str) -> None:
        """Push one undoable change (no-op when nothing differs).

        Entries that would move, reshape or delete a locked annotation are dropped (``refused``
        names them); the rest of the change is pushed.
        """
        blocked = [
            k
            for k, old in before.items()
            if old is not None
            and old.locked
            and (after.get(k) is None or after[k].geometry is not old.geometry)
        ]
        if blocked:
            self.check_editable(blocked)
            before = {k: v for k, v in before.items() if k not in blocked}
            after = {k: v for k, v in after.items() if k not in blocked}
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

    def remove(self, ids: Iterable[str], text: str = "") -> None:
        before = {i: self.annotations.find(i) for i in ids if i in self.annotations}
        if not before:
            return
        if not text:
            free = [i for i, a in before.items() if a is not None and not a.locked]
            text = (f"Delete {self.display_name(free[0])}" if len(free) == 1
                    else f"Delete {len(free)} annotations")
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
            what = self.display_name(anns[0].id) if len(anns) == 1 else f"{len(anns)} annotations"
            self.update([a.replace(class_id=class_id) for a in anns], f"Set {what} to {name}")

    def rename(self, ann_id: str, name: str) -> None:
        old = self.annotations.get(ann_id)
        name = name.strip()
        if old.name != name:
            before = self.display_name(ann_id)
            self.update([old.replace(name=name)], f"Rename {before}")

    def set_properties(
        self,
        ann_id: str,
        *,
        name: str | None = None,
        notes: str | None = None,
        class_id: str | None = None,
        locked: bool | None = None,
        hidden: bool | None = None,
    ) -> None:
        """Change name, description, class and flags of one annotation in one undo step."""
        old = self.annotations.get(ann_id)
        changes: dict[str, object] = {}
        if name is not None and name.strip() != old.name:
            changes["name"] = name.strip()
        if notes is not None and notes != old.notes:
            changes["notes"] = notes
        if class_id is not None and class_id != old.class_id:
            self.scheme.get(class_id)
            changes["class_id"] = class_id
        new = old.replace(**changes) if changes else old
        if (locked is not None and locked != old.locked) or (
            hidden is not None and hidden != old.hidden
        ):
            new = new.with_flags(locked=locked, hidden=hidden)
        if new is not old:
            self.update([new], f"Edit {self.display_name(ann_id)}")

    def set_flags(
        self, ids: Iterable[str], *, locked: bool | None = None, hidden: bool | None = None
    ) -> None:
        """Lock/unlock and/or hide/show annotations (one undo step)."""
        anns = [
            a
            for a in (self.annotations.find(i) for i in ids)
            if a is not None
            and ((locked is not None and a.locked != locked)
                 or (hidden is not None and a.hidden != hidden))
        ]
        if not anns:
            return
        verb = {(True, None): "Lock", (False, None): "Unlock", (None, True): "Hide",
                (None, False): "Show"}.get((locked, hidden), "Change")
        what = self.display_name(anns[0].id) if len(anns) == 1 else f"{len(anns)} annotations"
        self.update([a.with_flags(locked=locked, hidden=hidden) for a in anns], f"{verb} {what}")

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
            msg = error_message(exc)
            log.error("autosave failed: %s", msg)
            self.saveFailed.emit(f"Annotations could not be saved: {msg}")
            return False
        self.dirty = False
        self.save_count += 1
        self.saved.emit()
        return True
