"""Review panel: the areas a pathologist should look at first, stepped through from the keyboard.

The queue (:func:`crc_core.proposals.review_queue`) lists the open slide's proposed and reviewed
areas, the annotations a person drew that the model disagrees with, and the most uncertain
predicted windows no annotation covers, ranked by uncertainty (mean normalised entropy) plus
disagreement, from the prediction shown in the Results panel. With the list focused:

* **N** / **P** (or Down / Up): next / previous item; the view zooms to it and an annotation item
  is selected;
* **1..9**: the item is of the scheme's class 1..9 (its order in the Classes panel): a proposal is
  corrected (or accepted when the class is the same), a window becomes a reviewed annotation;
* **Enter**: accept the item as it is.

A window of a model class that covers several project classes (the shipped model's Adenocarcinoma
on the five-class scheme's three grades) is listed as that class, "(grade not predicted)": Enter
makes it the grade chosen for this prediction in Prediction to Annotations (recorded with its
proposals, :func:`crc_core.proposals.grade_choices`); when none was chosen, Enter is refused with
a status message asking for the grade's number key.

Each review writes ``reviewer`` (the OS user name) and ``reviewed`` (UTC time) into the
annotation's review record (:func:`crc_core.proposals.mark_reviewed`) through the document's undo
stack, so it is undone with Ctrl+Z and autosaved like any edit. The header counts reviewed items
("3 of 12 reviewed"). The list takes these keys before the window's shortcuts (P is also the
Polygon tool, 1..9 the drawing class) only while it has the keyboard focus. The queue is rebuilt
(keeping the current item) when the annotations or the shown prediction change. The panel takes the
window's :class:`crc_core.session.Session` (the open slide's document), the view it zooms, the
Results panel (the prediction shown) and a status callback, not the window. GUI thread only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QFocusEvent, QKeyEvent
from PySide6.QtWidgets import (
    QDockWidget,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.annotate.document import AnnotationDocument
from app.dialogs import errors
from app.dialogs.convert_prediction import push_added
from app.panels.results import ResultsPanel, StatusFn
from app.viewer.view import SlideView
from crc_core.errors import CrcError
from crc_core.inference import Prediction
from crc_core.proposals import (
    ReviewItem,
    grade_choices,
    is_proposed,
    is_reviewed,
    mark_reviewed,
    prediction_model_name,
    review_queue,
    window_annotation,
)
from crc_core.scheme_map import ClassLink, group_note, scheme_map, target_mapping
from crc_core.session import Session
from crc_core.slide import SlideReader

if TYPE_CHECKING:
    from app.main_window import MainWindow

KEY_ROLE = Qt.ItemDataRole.UserRole
_DIGITS = {getattr(Qt.Key, f"Key_{d}"): d for d in range(1, 10)}
_STEP = {Qt.Key.Key_N: 1, Qt.Key.Key_Down: 1, Qt.Key.Key_P: -1, Qt.Key.Key_Up: -1}
_ACCEPT = (Qt.Key.Key_Return, Qt.Key.Key_Enter)


class ReviewList(QListWidget):
    """The queue's list: N/P, 1..9 and Enter go to the panel, before any window shortcut."""

    keyCommanded = Signal(int, int)  # (key, class number 1..9 or 0)

    def _handles(self, ev: QKeyEvent) -> bool:
        plain = ev.modifiers() in (Qt.KeyboardModifier.NoModifier,
                                   Qt.KeyboardModifier.KeypadModifier)
        k = ev.key()
        return plain and (k in _DIGITS or k in _STEP or k in _ACCEPT)

    def event(self, ev: QEvent) -> bool:  # noqa: D102 - take the keys before the shortcuts
        if ev.type() == QEvent.Type.ShortcutOverride and self._handles(ev):  # type: ignore[arg-type]
            ev.accept()
            return True
        return super().event(ev)

    def focusInEvent(self, ev: QFocusEvent) -> None:  # noqa: N802 - Qt API
        # Qt makes the first row current on focus; the first N should show the first item
        none = self.currentRow() < 0
        super().focusInEvent(ev)
        if none and self.currentRow() >= 0:
            self.blockSignals(True)
            self.setCurrentRow(-1)
            self.blockSignals(False)

    def keyPressEvent(self, ev: QKeyEvent) -> None:  # noqa: N802 - Qt API
        if self._handles(ev):
            self.keyCommanded.emit(ev.key(), _DIGITS.get(ev.key(), 0))  # type: ignore[call-overload]
            ev.accept()
            return
        super().keyPressEvent(ev)


class ReviewPanel(QWidget):
    """See the module docstring: the review of ``session``'s slide against ``results``' shown
    prediction, zoomed in ``view``."""

    #: (keys, what) for Help > Keyboard Shortcuts
    KEYS = (("N, Down", "Next item (zooms to it)"), ("P, Up", "Previous item"),
            ("1-9", "Set the item's class and accept it"), ("Enter", "Accept the item as it is"))

    groups: dict[str, ClassLink]  # model class id -> its group of project classes (rebuild)
    chosen: dict[str, str]  # model class id -> the grade chosen for it (rebuild)

    def __init__(
        self, session: Session[AnnotationDocument], view: SlideView, results: ResultsPanel,
        status: StatusFn | None = None, parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.session, self.view, self.results = session, view, results
        self._status = status or (lambda _text, _ms: None)
        self.items: list[ReviewItem] = []
        self.current: str | None = None  # key of the current item
        self._doc: AnnotationDocument | None = None
        self.counter = QLabel("No prediction to review: Analysis > Predict…")
        self.counter.setWordWrap(True)
        self.list = ReviewList()
        self.list.keyCommanded.connect(self._on_list_keyCommanded)
        self.list.currentRowChanged.connect(self._on_list_currentRowChanged)
        self.prev_button = QPushButton("Previous (P)")
        self.next_button = QPushButton("Next (N)")
        self.accept_button = QPushButton("Accept (Enter)")
        self.prev_button.clicked.connect(lambda: self.step(-1))
        self.next_button.clicked.connect(lambda: self.step(1))
        self.accept_button.clicked.connect(lambda: self.review_current(None))
        hint = QLabel("1-9: set the class (Classes panel order) and accept")
        hint.setWordWrap(True)
        row = QHBoxLayout()
        for b in (self.prev_button, self.next_button, self.accept_button):
            row.addWidget(b)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.counter)
        lay.addWidget(self.list, 1)
        lay.addLayout(row)
        lay.addWidget(hint)
        self._rebuild_timer = QTimer(self)
        self._rebuild_timer.setSingleShot(True)
        self._rebuild_timer.setInterval(0)
        self._rebuild_timer.timeout.connect(self.rebuild)
        session.on("slide_changed", self._on_session_slide_changed)
        results.currentChanged.connect(self._rebuild_timer.start)
        results.predictionsChanged.connect(self._rebuild_timer.start)

    # ------------------------------------------------------------------ queue
    def prediction(self) -> Prediction | None:
        entry = self.results.current_entry()
        return entry.pred if entry is not None else None

    def rebuild(self) -> None:
        """Recompute the queue from the document and the shown prediction (keeps the current
        item)."""
        doc, pred = self.session.document, self.prediction()
        self.items = []
        self.groups, self.chosen = {}, {}
        if doc is not None and pred is not None:
            try:
                self.groups = {k.model.id: k for k in scheme_map(pred.scheme, doc.scheme).links
                               if k.kind == "group"}
                self.chosen = {m: c for m, c in grade_choices(
                    doc.annotations, prediction_model_name(pred)).items()
                    if m in self.groups and c in {p.id for p in self.groups[m].project}}
                mapping, _ = target_mapping(pred.scheme, doc.scheme, self.chosen)
                self.items = review_queue(pred, doc.annotations, doc.scheme, mapping)
            except CrcError as exc:
                self.counter.setText(f"Cannot review this prediction: {exc}")
                self.list.clear()
                return
        self._fill()

    def _fill(self) -> None:
        doc = self.session.document
        assert doc is not None or not self.items
        self.list.blockSignals(True)
        self.list.clear()
        for n, it in enumerate(self.items, 1):
            item = QListWidgetItem(self._text(n, it, doc))
            item.setData(KEY_ROLE, it.key)
            item.setToolTip(f"uncertainty {it.uncertainty:.2f} (mean normalised entropy of the "
                            f"prediction inside: 0 certain, 1 all classes equally likely); "
                            f"disagreement {it.disagreement:.2f} (share at odds with the "
                            f"annotations drawn by a person)")
            ann = doc.get(it.ann_id) if (doc is not None and it.ann_id) else None
            f = item.font()
            f.setItalic(ann is None or is_proposed(ann))
            item.setFont(f)
            self.list.addItem(item)
        keys = [it.key for it in self.items]
        if self.current in keys:
            self.list.setCurrentRow(keys.index(self.current))
        self.list.blockSignals(False)
        self._update_counter()

    def _text(self, n: int, it: ReviewItem, doc: AnnotationDocument) -> str:
        ann = doc.get(it.ann_id) if it.ann_id else None
        pred = doc.scheme.find(it.predicted) if it.predicted else None
        group = self.groups.get(it.model_class or "") if ann is None else None
        if group is not None:  # the model's group class: the grade was not predicted
            what = f"window: {group.model.name} (grade not predicted)"
        elif ann is None:
            what = f"window: {pred.name if pred else '?'} predicted"
        else:
            state = ("reviewed" if is_reviewed(ann)
                     else "proposed" if is_proposed(ann) else "drawn")
            what = f"{doc.display_name(ann.id)} ({state})"
        mark = "✓ " if self.is_done(it) else ""
        return (f"{mark}{n}. {what} · {it.uncertainty:.2f}"
                + (f" · disagrees {it.disagreement:.0%}" if it.disagreement else ""))

    def is_done(self, it: ReviewItem) -> bool:
        doc = self.session.document
        ann = doc.get(it.ann_id) if (doc is not None and it.ann_id) else None
        return ann is not None and is_reviewed(ann)

    def reviewed_count(self) -> tuple[int, int]:
        return sum(1 for it in self.items if self.is_done(it)), len(self.items)

    def _update_counter(self) -> None:
        if self.session.document is None or self.prediction() is None:
            self.counter.setText("No prediction to review: Analysis > Predict…")
            return
        done, total = self.reviewed_count()
        self.counter.setText(f"{done} of {total} reviewed")

    def current_item(self) -> ReviewItem | None:
        return next((it for it in self.items if it.key == self.current), None)

    # ------------------------------------------------------------------ commands
    def step(self, delta: int) -> None:
        """Go to the next (``delta`` 1) or previous (-1) item and zoom to it."""
        if not self.items:
            return
        row = self.list.currentRow()
        row = 0 if row < 0 else min(max(row + delta, 0), len(self.items) - 1)
        self.list.setCurrentRow(row)  # -> _on_list_currentRowChanged zooms

    def show_item(self, it: ReviewItem) -> None:
        x0, y0, x1, y1 = it.geometry.bounds
        self.view.zoom_to_rect(QRectF(x0, y0, x1 - x0, y1 - y0), margin=0.5)
        doc = self.session.document
        if doc is not None:
            doc.set_selection([it.ann_id] if it.ann_id else [])

    def review_current(self, class_number: int | None) -> None:
        """Accept the current item (``None``) or set it to class ``class_number`` (1-based)."""
        it, doc = self.current_item(), self.session.document
        if it is None or doc is None:
            return
        class_id = None
        if class_number is not None:
            if class_number > len(doc.scheme):
                self._status(
                    f"there is no class {class_number}: the scheme has {len(doc.scheme)}", 8000)
                return
            class_id = doc.scheme.classes[class_number - 1].id
        ann = doc.get(it.ann_id) if it.ann_id else None
        group = self.groups.get(it.model_class or "") if ann is None else None
        if group is not None and class_id is None and group.model.id not in self.chosen:
            keys = ", ".join(f"{doc.scheme.ids.index(p.id) + 1} = {p.name}"
                             for p in group.project)
            self._status(
                f"The model predicted {group.model.name}, not its grade, and no grade was "
                f"chosen for it in Prediction to Annotations: press the grade's number key "
                f"({keys})", 15000)
            return
        try:
            if ann is not None:
                new = mark_reviewed(ann, class_id)
                doc.update([new], f"Review {doc.display_name(ann.id)}")
            else:
                model = prediction_model_name(self.prediction())
                cls = class_id or it.predicted or ""
                note = group_note(group.model.name, doc.scheme.get(cls).name) if group else ""
                new = window_annotation(it, cls, model, note=note)
                push_added(doc, [new], "Review window")
        except CrcError as exc:
            errors.report(self, "Review", str(exc))

    # ------------------------------------------------------------------ events
    def _on_list_keyCommanded(self, key: int, digit: int) -> None:
        if key in _STEP:
            self.step(_STEP[key])  # type: ignore[index]
        elif digit:
            self.review_current(digit)
        elif key in _ACCEPT:
            self.review_current(None)

    def _on_list_currentRowChanged(self, row: int) -> None:
        if 0 <= row < len(self.items):
            self.current = self.items[row].key
            self.show_item(self.items[row])

    def _on_session_slide_changed(self, _reader: SlideReader | None) -> None:
        for slot in (self._rebuild_timer.start, self._update_counter):
            try:
                if self._doc is not None:
                    self._doc.changed.disconnect(slot)
            except (RuntimeError, TypeError):
                pass
        self._doc = self.session.document
        self.current = None
        if self._doc is not None:
            self._doc.changed.connect(self._update_counter)  # at once; the list follows
            self._doc.changed.connect(self._rebuild_timer.start)
        self._rebuild_timer.start()


def install_review_panel(window: MainWindow) -> ReviewPanel:
    """The window's Review panel in a "Review" dock (tabbed with Annotations)."""
    panel = ReviewPanel(window.session, window.view, window.results_panel,
                        window.statusBar().showMessage)
    dock = QDockWidget("Review", window)
    dock.setObjectName("dock-review")
    dock.setWidget(panel)
    window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
    window.docks["review"] = dock
    window.tabifyDockWidget(window.docks["annotations"], dock)
    window.docks["annotations"].raise_()  # Annotations stays the tab in front
    window.review_panel = panel
    return panel
