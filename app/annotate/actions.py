"""What a person does to annotations they already drew: rename, describe, set the class, lock,
hide, delete, zoom to; from the Edit menu, and from the right-click menus of the canvas and of
the annotation list (one menu builder for both).

Every change is an undoable command of the document (:mod:`app.annotate.document`). Locked
annotations refuse moves, reshapes and deletion there; the refusal is shown in the status bar
by the main window. The properties dialog (:mod:`app.dialogs.annotation_properties`) opens
window-modal and non-blocking (``open()``), kept in :attr:`AnnotationActions.dialog`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QPoint, QPointF, QRectF
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMenu

from app.dialogs.class_scheme import color_icon

if TYPE_CHECKING:
    from app.main_window import MainWindow


class AnnotationActions(QObject):
    """Annotation commands of ``window`` (a :class:`app.main_window.MainWindow`)."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.win = window
        self.ctl = window.ctl
        self.view = window.view
        self.menu: QMenu | None = None  # the last context menu shown (tests read it)
        self.dialog: Any = None  # the open properties dialog

        def act(text: str, slot: Any, shortcut: str = "", tip: str = "") -> QAction:
            a = QAction(text, window)
            if shortcut:
                a.setShortcut(QKeySequence(shortcut))
            a.setStatusTip(tip)
            a.triggered.connect(slot)
            window.addAction(a)
            return a

        self.act_rename = act("&Rename Annotation", self.rename_selected, "F2",
                              "Rename the selected annotation")
        self.act_properties = act("Annotation P&roperties…", self.properties_selected,
                                  "Alt+Return", "Name, class, description, lock, hide")
        self.act_lock = act("&Lock / Unlock", self.toggle_lock_selected, "Ctrl+L",
                            "Locked annotations cannot be moved, reshaped or deleted")
        self.act_hide = act("&Hide / Show", self.toggle_hide_selected, "Ctrl+H",
                            "Hidden annotations are not drawn (still saved and used)")
        self.act_zoom = act("&Zoom to Selection", self.zoom_selected, "Z",
                            "Show the selected annotations")
        self.ctl.annotationActivated.connect(self.show_properties)
        self.view.contextMenuRequested.connect(self._on_view_contextMenuRequested)

    @property
    def actions(self) -> list[QAction]:
        return [self.act_rename, self.act_properties, self.act_lock, self.act_hide, self.act_zoom]

    def update_enabled(self) -> None:
        doc = self.ctl.document
        n = len(doc.selection) if doc is not None else 0
        for a in self.actions:
            a.setEnabled(n > 0)
        self.act_rename.setEnabled(n == 1)
        self.act_properties.setEnabled(n == 1)

    # ----------------------------------------------------------------- commands
    def _selection(self) -> list[str]:
        doc = self.ctl.document
        return list(doc.selection) if doc is not None else []

    def rename_selected(self) -> None:
        """F2: edit the name in the list when the list has the focus, else in the dialog."""
        ids = self._selection()
        if len(ids) != 1:
            return
        if self.win.annotation_list.tree.hasFocus():
            self.win.annotation_list.edit_name(ids[0])
        else:
            self.show_properties(ids[0])

    def properties_selected(self) -> None:
        ids = self._selection()
        if len(ids) == 1:
            self.show_properties(ids[0])

    def show_properties(self, ann_id: str) -> Any:
        """Open the properties dialog of one annotation (name field focused)."""
        from app.dialogs.annotation_properties import AnnotationPropertiesDialog

        doc = self.ctl.document
        if doc is None or doc.get(ann_id) is None:
            return None
        if self.dialog is not None:
            self.dialog.close()
        mpp = self.win.slide.mpp if self.win.slide is not None else None
        self.dialog = AnnotationPropertiesDialog(doc, ann_id, mpp, self.win)
        self.dialog.open()
        self.dialog.name_edit.setFocus()
        return self.dialog

    def set_locked(self, ids: Sequence[str], on: bool) -> None:
        if self.ctl.document is not None:
            self.ctl.document.set_flags(ids, locked=on)

    def set_hidden(self, ids: Sequence[str], on: bool) -> None:
        if self.ctl.document is not None:
            self.ctl.document.set_flags(ids, hidden=on)

    def toggle_lock_selected(self) -> None:
        doc = self.ctl.document
        if doc is not None and doc.selection:
            self.set_locked(doc.selection, not all(a.locked for a in doc.selected()))

    def toggle_hide_selected(self) -> None:
        doc = self.ctl.document
        if doc is not None and doc.selection:
            self.set_hidden(doc.selection, not all(a.hidden for a in doc.selected()))

    def delete(self, ids: Sequence[str]) -> None:
        if self.ctl.document is not None:
            self.ctl.document.remove(ids)

    def set_class(self, ids: Sequence[str], class_id: str) -> None:
        if self.ctl.document is not None:
            self.ctl.document.set_class(ids, class_id)

    def zoom_to(self, ids: Sequence[str]) -> None:
        doc = self.ctl.document
        anns = [a for a in (doc.get(i) for i in ids) if a is not None] if doc is not None else []
        if not anns:
            return
        x0 = min(a.bounds[0] for a in anns)
        y0 = min(a.bounds[1] for a in anns)
        x1 = max(a.bounds[2] for a in anns)
        y1 = max(a.bounds[3] for a in anns)
        self.view.zoom_to_rect(QRectF(x0, y0, x1 - x0, y1 - y0))

    def zoom_selected(self) -> None:
        self.zoom_to(self._selection())

    # ----------------------------------------------------------------- menus
    def menu_for(self, ids: Sequence[str], parent: Any = None) -> QMenu | None:
        """The right-click menu for the annotations ``ids`` (``None`` without a document)."""
        doc = self.ctl.document
        ids = [i for i in ids if doc is not None and doc.get(i) is not None]
        if doc is None or not ids:
            return None
        anns = [doc.get(i) for i in ids]
        menu = QMenu(parent or self.win)
        menu.setObjectName("annotation-menu")
        menu.addSection(doc.names_text(ids))
        if len(ids) == 1:
            menu.addAction("Rename…", lambda: self._rename_from_menu(ids[0]))
            menu.addAction("Properties…", lambda: self.show_properties(ids[0]))
        classes = menu.addMenu("Set Class")
        for c in doc.scheme:
            a = classes.addAction(color_icon(c.color), c.name,
                                  lambda cid=c.id: self.set_class(ids, cid))
            a.setCheckable(True)
            a.setChecked(all(x.class_id == c.id for x in anns))
        locked = all(a.locked for a in anns)
        hidden = all(a.hidden for a in anns)
        menu.addAction("Unlock" if locked else "Lock", lambda: self.set_locked(ids, not locked))
        menu.addAction("Show" if hidden else "Hide", lambda: self.set_hidden(ids, not hidden))
        menu.addSeparator()
        delete = menu.addAction("Delete", lambda: self.delete(ids))
        if all(a.locked for a in anns):
            delete.setEnabled(False)
            delete.setToolTip("Locked: unlock first")
        menu.addAction("Zoom To", lambda: self.zoom_to(ids))
        return menu

    def popup(self, ids: Sequence[str], global_pos: QPoint, parent: Any = None) -> QMenu | None:
        """Show the menu for ``ids`` at ``global_pos`` (non-blocking)."""
        if self.menu is not None:
            self.menu.deleteLater()
        self.menu = self.menu_for(ids, parent)
        if self.menu is not None:
            self.menu.popup(global_pos)
        return self.menu

    def _rename_from_menu(self, ann_id: str) -> None:
        if self.menu is not None and self.menu.parent() is self.win.annotation_list:
            self.win.annotation_list.edit_name(ann_id)
        else:
            self.show_properties(ann_id)

    def _on_view_contextMenuRequested(self, pos: QPoint, l0: QPointF) -> None:
        doc = self.ctl.document
        if doc is None:
            return
        hit = self.ctl.annotation_at((l0.x(), l0.y()), 4 / self.view.scale)
        if hit is None:
            return
        if hit.id not in doc.selection:
            doc.set_selection([hit.id])
        self.popup(list(doc.selection), self.view.mapToGlobal(pos), self.view)
