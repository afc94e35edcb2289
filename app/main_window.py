"""The pathologist's main window: slide view, overview, class palette, annotation list, project.

Opening
-------
* A **project folder** (holding ``project.json``): its slides are listed in the Project panel;
  annotations autosave to ``annotations/<slide-id>.geojson`` in the project.
* A **bare slide file**: the window opens (or creates) an *implicit project* for it under
  ``settings.data_home()/slides/<fingerprint>/`` (the slide is referenced by its absolute path,
  never
  copied). Its annotations and a user-set pixel size autosave there, so reopening the same slide
  brings them back; nothing is written beside the slide (which may be on read-only storage).
  File > Export annotations writes them anywhere as QuPath GeoJSON or ASAP XML.
* ``--annotations FILE`` (or File > Open annotations): that file is the annotation store for the
  session: read from it, and every edit autosaves back to it.

Autosave: every edit is an undoable command; the document saves atomically 150 ms after the last
change, and at once on quit or before another slide opens (:mod:`app.annotate.document`).

Threading: the window runs on the GUI thread. Slides opened from the UI (menu, drop, recent files,
project panel) are opened in a worker thread (:meth:`MainWindow.open_path_async`, through
:class:`app.slide_opening.SlideOpener`); the programmatic :meth:`MainWindow.open_path` (command
line, tests) opens synchronously. The actions, menus and toolbar are built by
:mod:`app.window_menus`. Tiles are read in the view's
thread pool; long jobs
(Analysis menu) use :mod:`app.workers`. Errors are shown with :func:`app.dialogs.errors.show_error`
and leave the window usable.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from PySide6.QtCore import QByteArray, QPointF, Qt, Signal
from PySide6.QtGui import (
    QCloseEvent,
    QDragEnterEvent,
    QDropEvent,
    QIcon,
)
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QStackedWidget,
    QWidget,
)

from app.annotate.actions import AnnotationActions
from app.annotate.controller import AnnotationController
from app.annotate.document import AnnotationDocument
from app.annotate.palette import ClassPalette
from app.demo import bundle_root
from app.dialogs import errors
from app.messages import MessageLog, MessagesPanel
from app.messages import attach_to_window as attach_messages
from app.messages import install as install_messages
from app.panels.annotation_list import AnnotationList
from app.panels.layers_panel import LayersPanel
from app.panels.project_panel import ProjectPanel
from app.settings import Settings
from app.slide_opening import SlideOpener
from app.start_page import StartPage
from app.viewer.overview import OverviewWidget
from app.viewer.view import SlideView
from app.viewer.view_actions import ViewActions
from app.window_menus import build_actions, build_menus, update_actions
from crc_core.annotations import AnnotationSet, load_annotations, save_annotations
from crc_core.classes import ClassScheme
from crc_core.errors import CrcError, error_message
from crc_core.project import PROJECT_FILE, Project, SlideEntry
from crc_core.session import Session
from crc_core.slide import SlideReader

log = logging.getLogger(__name__)

SLIDE_FILTER = (
    "Slides (*.svs *.tif *.tiff *.ndpi *.vms *.vmu *.scn *.mrxs *.svslide *.bif *.dcm "
    "*.png *.jpg *.jpeg *.bmp);;All files (*)"
)
ANNOTATION_FILTER = "QuPath GeoJSON (*.geojson *.json);;ASAP XML (*.xml)"

ANALYSIS_DIALOGS = {
    "build": ("Build Dataset…", "app.dialogs.build_dataset", "BuildDatasetDialog",
              "session-project"),
    "train": ("Train…", "app.dialogs.train", "TrainDialog", "project-optional"),
    "predict": ("Predict…", "app.dialogs.predict", "PredictDialog", "session"),
    "convert": ("Prediction to Annotations…", "app.dialogs.convert_prediction",
                "ConvertPredictionDialog", "session-convert"),
}


class MainWindow(QMainWindow):
    """The slide viewer and annotation editor.

    Signals
    -------
    slideOpened(str): path of the slide now shown.
    openFailed(str, str): a slide or project could not be opened (path, one-line message).
    """

    slideOpened = Signal(str)
    openFailed = Signal(str, str)

    def __init__(self, settings: Settings | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings or Settings()
        self.setWindowTitle("CRC Workbench")
        icon = bundle_root() / "resources" / "icon.png"
        if icon.is_file():
            self.setWindowIcon(QIcon(str(icon)))
        self.setAcceptDrops(True)
        # the project, the open slide, its document and predictions: panels and dialogs take it
        self.session: Session[AnnotationDocument] = Session()
        self.session.on("slide_changed", self._on_session_slide_changed)  # first: the window's
        self.analysis_dialogs: dict[str, QWidget] = {}
        self.opener = SlideOpener(show=self._show_slide, shown=lambda: self.slide,
                                  failed=self._open_failed, status=self._show_status, parent=self)

        self.view = SlideView()
        self.start_page = StartPage()  # shown while no slide is open
        self.pages = QStackedWidget()
        self.pages.addWidget(self.start_page)
        self.pages.addWidget(self.view)
        self.setCentralWidget(self.pages)
        self.ctl = AnnotationController(self.view, self)
        self.ctl.layer.fill_opacity = float(self.settings.get("fill_opacity"))
        self.ctl.brush_radius_px = float(self.settings.get("brush_radius_px"))

        self.overview = OverviewWidget(self.view)
        self.palette = ClassPalette(self.ctl)
        self.annotation_list = AnnotationList(
            self.ctl, lambda: self.slide.mpp if self.slide else None
        )
        self.ann_actions = AnnotationActions(self)
        self.annotation_list.set_actions(self.ann_actions)
        self.view_actions = ViewActions(self)
        self.messages = MessageLog(self)
        install_messages(self.messages)  # Python warnings and logged warnings come here
        self.project_panel = ProjectPanel()
        self.project_panel.slideActivated.connect(self._on_project_slideActivated)
        self.layers_panel = LayersPanel(self.view.layers)
        self.docks: dict[str, QDockWidget] = {}
        for key, title, widget, area in [
            ("overview", "Overview", self.overview, Qt.DockWidgetArea.RightDockWidgetArea),
            ("classes", "Classes", self.palette, Qt.DockWidgetArea.RightDockWidgetArea),
            (
                "annotations",
                "Annotations",
                self.annotation_list,
                Qt.DockWidgetArea.RightDockWidgetArea,
            ),
            ("project", "Project", self.project_panel, Qt.DockWidgetArea.LeftDockWidgetArea),
            ("layers", "Layers", self.layers_panel, Qt.DockWidgetArea.LeftDockWidgetArea),
            ("messages", "Messages", MessagesPanel(self.messages),
             Qt.DockWidgetArea.BottomDockWidgetArea),
        ]:
            dock = QDockWidget(title, self)
            dock.setObjectName(f"dock-{key}")
            dock.setWidget(widget)
            self.addDockWidget(area, dock)
            self.docks[key] = dock
        # Prediction results dock (app/panels/results.py): class map / heatmap layers, region table,
        # saved predictions reopened with each slide.
        from app.panels.results import install_results_panel

        self.results_panel = install_results_panel(self)
        # Results shares a tabbed dock with Annotations, so the right column keeps room for both
        self.tabifyDockWidget(self.docks["annotations"], self.docks["results"])
        self.docks["annotations"].raise_()
        self.docks["messages"].hide()  # View > Messages, or the status bar's warning button

        self.pos_label = QLabel("")
        self.zoom_label = QLabel("")
        self.statusBar().addWidget(self.pos_label, 1)
        self.warn_button = attach_messages(self, self.messages)  # "⚠ 2": opens View > Messages
        self.statusBar().addPermanentWidget(self.zoom_label)
        self.view.cursorMoved.connect(self._on_view_cursorMoved)
        self.view.viewChanged.connect(self._update_zoom_label)
        self.ctl.measured.connect(lambda text: self.statusBar().showMessage(text, 15000))
        self.start_page.openSlideRequested.connect(self.choose_slide)
        self.start_page.openProjectRequested.connect(self.choose_project)
        self.start_page.demoRequested.connect(self.open_demo)
        self.start_page.recentActivated.connect(self.open_path_async)
        self.start_page.set_recent(self.settings.recent)
        self.openFailed.connect(self._on_openFailed)
        build_actions(self)
        build_menus(self)
        self.resize(1400, 900)
        for key, restore in (
            ("window_geometry", self.restoreGeometry),
            ("window_state", self.restoreState),
        ):
            value = self.settings.get(key)
            if value:
                try:
                    restore(QByteArray.fromHex(value.encode()))
                except Exception:  # a bad stored layout never stops start-up
                    log.warning("settings: %s ignored", key)
        self._update_actions()

    # ================================================================= the session's state
    @property
    def slide(self) -> SlideReader | None:
        return self.session.reader

    @property
    def project(self) -> Project | None:
        return self.session.project

    @property
    def entry(self) -> SlideEntry | None:
        return self.session.entry

    @property
    def document(self) -> AnnotationDocument | None:
        return self.session.document

    @property
    def implicit_project(self) -> bool:
        return self.session.implicit_project

    @property
    def annotation_file(self) -> Path | None:
        return self.session.annotation_file

    # ================================================================= actions and menus
    def _update_actions(self) -> None:
        update_actions(self)

    # ================================================================= opening
    def open_path(
        self, path: str | Path, annotations: str | Path | None = None, quiet: bool = False,
        wait: bool = True,
    ) -> bool:
        """Open a slide file or a project folder; errors go to a dialog (raise when ``quiet``).

        A project's first slide opens in a worker thread when not ``wait``."""
        p = Path(path).expanduser()
        try:
            if p.is_dir() or p.name == PROJECT_FILE:
                self._open_project(p if p.is_dir() else p.parent, wait=wait)
            else:
                self.opener.open_file(p, Path(annotations) if annotations else None)
        except Exception as exc:
            if quiet:
                raise
            log.debug("open failed", exc_info=True)
            self._open_failed(p, "Cannot open", error_message(exc))
            return False
        self.settings.add_recent(p)
        return True

    def open_path_async(self, path: str | Path, annotations: str | Path | None = None) -> None:
        """Open from the UI (menu, drop, recent): slide files are opened in a worker thread, so
        the GUI never waits on the slide file; the window switches when the reader is ready."""
        p = Path(path).expanduser()
        if p.is_dir() or p.name == PROJECT_FILE:
            # project.json is small: read here; its first slide opens in the worker.
            self.open_path(p, wait=False)
            return
        ann = Path(annotations) if annotations else None
        self.opener.open_file_async(p, ann, opened=lambda: self.settings.add_recent(p))

    def open_entry_async(self, entry_id: str) -> None:
        """Open one slide of the current project without blocking the GUI (project panel)."""
        if self.project is not None:
            self.opener.open_entry_async(self.project, entry_id, self.implicit_project,
                                         current=lambda: self.project)

    def open_entry(self, entry_id: str) -> bool:
        """Open one slide of the current project."""
        if self.project is None:
            return False
        return self.opener.open_entry(self.project, entry_id, self.implicit_project)

    def _open_project(self, root: Path, wait: bool = True) -> None:
        """Open a project and its first available slide (in a worker when not ``wait``)."""
        project = Project.open(root)
        self._close_slide()
        self.session.set_project(project)
        self.project_panel.set_project(project)
        self.docks["project"].show()
        self.setWindowTitle(f"CRC Workbench — {project.name}")
        self._update_actions()
        first = next((e for e in project.slides if e.exists), None)
        if first is not None:
            if wait:
                self.open_entry(first.id)
            else:
                self.open_entry_async(first.id)

    def _show_status(self, text: str) -> None:
        if text:
            self.statusBar().showMessage(text)
        else:
            self.statusBar().clearMessage()

    def _show_slide(
        self,
        reader: SlideReader,
        project: Project,
        entry: SlideEntry,
        implicit: bool,
        annotation_file: Path | None = None,
    ) -> None:
        # save pending edits first: reopening the same slide must read them back
        if self.document is not None:
            self.document.flush()
        # load annotations before replacing anything: a bad file leaves the window as it was
        scheme = project.scheme
        if annotation_file is not None:
            if annotation_file.exists():
                res = load_annotations(annotation_file, scheme, slide_size=reader.dimensions)
            else:
                res = None
        else:
            res = project.load_annotations(entry, slide_size=reader.dimensions)
        if res is not None and res.added_classes:
            project.save()
        self._close_slide()
        if entry.mpp:
            reader.set_mpp(entry.mpp)
        if annotation_file is not None:

            def saver(
                aset: AnnotationSet, f: Path = annotation_file, s: ClassScheme = scheme
            ) -> None:
                save_annotations(aset, f, s)
        else:

            def saver(aset: AnnotationSet, p: Project = project, e: SlideEntry = entry) -> None:
                p.autosave(e, aset)

        doc = AnnotationDocument(
            scheme, res.annotations if res is not None else AnnotationSet(), saver, parent=self
        )
        doc.saveFailed.connect(lambda msg: errors.report(self, "Autosave failed", msg))
        doc.refused.connect(lambda msg: self.statusBar().showMessage(msg, 10000))
        doc.selectionChanged.connect(self.ann_actions.update_enabled)
        doc.saved.connect(self._on_document_saved)
        doc.changed.connect(self._on_document_changed)
        doc.undo_stack.indexChanged.connect(self._on_undo_indexChanged)
        # opened from the UI: what follows the slide (saved predictions) loads in workers too;
        # the window's own part runs first (_on_session_slide_changed), then the panels'
        self.session.open_slide(reader, project, entry, doc, implicit=implicit,
                                annotation_file=annotation_file,
                                background=self.opener.delivering)
        if res is not None and res.warnings:
            self.statusBar().showMessage(
                f"{len(res.warnings)} annotation warnings: {res.warnings[0]}", 15000
            )
        self.slideOpened.emit(str(reader.path))

    def _on_session_slide_changed(self, reader: SlideReader) -> None:
        """Show the session's new slide: editor, view, project panel, title, actions."""
        doc, project, entry = self.document, self.project, self.entry
        assert doc is not None and project is not None and entry is not None
        self.ctl.set_document(doc)
        self.palette.refresh()
        self.annotation_list.attach()
        self.pages.setCurrentWidget(self.view)
        self.start_page.set_problem("")
        self.view.set_source(reader)
        self.project_panel.set_project(project, entry.id)
        self.project_panel.set_count(entry.id, len(doc))
        title = f"{reader.path.name}" + ("" if self.implicit_project else f" — {project.name}")
        self.setWindowTitle(f"CRC Workbench — {title}")
        self._update_actions()
        self._update_zoom_label()

    def close_slide(self) -> None:
        """File > Close Slide: save and close the open slide, back to the start page."""
        self._close_slide()
        self._update_actions()

    def _close_slide(self) -> None:
        doc = self.document
        if doc is not None:
            doc.flush()
            doc.undo_stack.indexChanged.disconnect(self._on_undo_indexChanged)
            self.ctl.set_document(None)
            doc.deleteLater()
        self.view.set_source(None)
        self.session.close_slide()  # closes the reader
        self.annotation_list.attach()
        self.palette.refresh()
        self.start_page.set_recent(self.settings.recent)
        self.pages.setCurrentWidget(self.start_page)

    def _on_undo_indexChanged(self, _index: int) -> None:
        self._update_actions()

    def _on_document_saved(self) -> None:
        if self.project is not None and self.entry is not None and self.annotation_file is None:
            self.project_panel.refresh(self.entry.id)

    def _on_document_changed(self) -> None:
        if self.entry is not None and self.document is not None:
            self.project_panel.set_count(self.entry.id, len(self.document))

    def _on_project_slideActivated(self, entry_id: str) -> None:
        if self.entry is None or entry_id != self.entry.id:
            self.open_entry_async(entry_id)

    # ================================================================= file actions
    def choose_slide(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open slide", "", SLIDE_FILTER)
        if path:
            self.open_path_async(path)

    def choose_project(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open project folder")
        if path:
            self.open_path_async(path)

    def new_project(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder for the new project")
        if not path:
            return
        try:
            Project.create(path)
        except CrcError as exc:
            errors.report(self, "Cannot create project", str(exc))
            return
        self.open_path_async(path)

    def add_slides_to_project(self) -> None:
        if self.project is None or self.implicit_project:
            return
        paths, _ = QFileDialog.getOpenFileNames(self, "Add slides", "", SLIDE_FILTER)
        added = []
        for p in paths:
            try:
                added.append(self.project.add_slide(p))
            except CrcError as exc:
                errors.report(self, "Cannot add slide", str(exc))
        if added:
            self.project.save()
            self.project_panel.refresh(self.entry.id if self.entry else None)
            if self.slide is None:
                self.open_entry_async(added[0].id)

    def choose_annotations(self) -> None:
        if self.slide is None:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Open annotations", "", ANNOTATION_FILTER)
        if path:
            self.open_path_async(self.slide.path, annotations=path)

    def export_annotations(self, path: str | Path | None = None) -> bool:
        if self.document is None:
            return False
        if not path:
            path, _ = QFileDialog.getSaveFileName(self, "Export annotations", "", ANNOTATION_FILTER)
            if not path:
                return False
        try:
            save_annotations(self.document.annotations, path, self.document.scheme)
        except (CrcError, OSError) as exc:
            errors.report(self, "Export failed", error_message(exc))
            return False
        self.statusBar().showMessage(f"Exported {len(self.document)} annotations to {path}", 8000)
        return True

    def show_properties(self) -> None:
        if self.slide is None:
            return
        from app.dialogs.slide_properties import SlidePropertiesDialog

        SlidePropertiesDialog(self.slide, self).exec()

    def ask_mpp(self) -> None:
        if self.slide is None:
            return
        from app.dialogs.slide_properties import MppDialog

        dlg = MppDialog(self.slide.mpp, self)
        if dlg.exec():
            self.set_mpp(dlg.value())

    def set_mpp(self, mpp: tuple[float, float] | None) -> None:
        """Set (or clear) the user's pixel size of the open slide; stored in the project."""
        if self.slide is None:
            return
        try:
            if self.project is not None and self.entry is not None:
                self.project.set_mpp(self.entry, mpp)
                self.project.save()
            self.slide.set_mpp(mpp)
        except (CrcError, OSError) as exc:
            errors.report(self, "Cannot set pixel size", error_message(exc))
            return
        self.view.mpp = self.slide.mpp
        self.view.update()
        self.annotation_list.refresh()
        self._update_actions()  # magnification buttons follow the pixel size
        self._update_zoom_label()

    # ================================================================= edit actions
    def undo(self) -> None:
        if self.document is not None:
            self.view.tool.cancel() if self.view.tool is not None else None
            self.document.undo_stack.undo()

    def redo(self) -> None:
        if self.document is not None:
            self.document.undo_stack.redo()

    def select_all(self) -> None:
        if self.document is not None:
            self.document.set_selection([a.id for a in self.ctl.visible_annotations()])

    def select_class_by_key(self, key: str, apply: bool = False) -> None:
        if self.document is None:
            return
        c = self.document.scheme.by_key(key)
        if c is None:
            return
        self.ctl.set_current_class(c.id)
        if apply:
            self.ctl.set_selection_class(c.id)

    def edit_scheme(self) -> None:
        scheme = self.project.scheme if self.project is not None else None
        if scheme is None:
            errors.report(self, "Class scheme", "open a slide or a project first")
            return
        from app.dialogs.class_scheme import ClassSchemeDialog

        in_use = (self.document.annotations.classes_in_use()
                  if self.document is not None else set())
        dlg = ClassSchemeDialog(scheme, in_use, self)
        if dlg.exec():
            self.apply_scheme(dlg.result_scheme())

    def apply_scheme(self, new: ClassScheme) -> None:
        """Make ``new`` the project's scheme (in place, so every holder sees it) and save."""
        if self.project is None:
            return
        self.project.scheme.classes[:] = new.classes
        try:
            self.project.save()
        except (CrcError, OSError) as exc:
            errors.report(self, "Cannot save project", error_message(exc))
        if self.document is not None:
            self.document.changed.emit()
            self.ctl.set_document(self.document)
        self.palette.refresh()
        self.annotation_list.refresh()

    # ================================================================= analysis
    def open_analysis(self, key: str) -> QWidget | None:
        """Open one of the Analysis dialogs (written in their own modules, imported on demand)."""
        text, module, cls_name, arg = ANALYSIS_DIALOGS[key]
        try:
            mod = importlib.import_module(module)
            cls = getattr(mod, cls_name)
        except (ImportError, AttributeError) as exc:
            errors.report(
                self, text.rstrip("…"), f"{text.rstrip('…')} is not available in this build ({exc})"
            )
            return None
        if arg == "session-project" and self.project is None:
            errors.report(self, text.rstrip("…"), "open a project or a slide first (File > Open)")
            return None
        try:
            dlg = cls(*self._dialog_args(arg), self)
        except CrcError as exc:
            errors.report(self, text.rstrip("…"), str(exc))
            return None
        self.analysis_dialogs[key] = dlg
        dlg.show()
        return dlg

    def _dialog_args(self, arg: str) -> tuple[object, ...]:
        """What an Analysis dialog takes (before its parent): the session, not the window."""
        if arg == "project-optional":  # Training needs no slide: else a dataset folder or CSV
            return (self.project,)
        if arg == "session-project":  # the open slide's areas as they are in memory
            return (self.session,)
        if arg == "session-convert":
            return (self.session, self.view, self.statusBar().showMessage,
                    self.results_panel.current)
        return (self.session, self.view, self.settings, self.results_panel)

    # ================================================================= status
    def _on_view_cursorMoved(self, pt: QPointF | None) -> None:
        if pt is None or self.slide is None:
            self.pos_label.setText("")
            return
        text = f"x {pt.x():,.0f}  y {pt.y():,.0f} px"
        mpp = self.slide.mpp
        if mpp:
            text += f"   ({pt.x() * mpp[0]:,.1f}, {pt.y() * mpp[1]:,.1f} µm)"
        self.pos_label.setText(text)

    def _update_zoom_label(self) -> None:
        if self.slide is None:
            self.zoom_label.setText("")
            return
        lv = self.view.target_level()
        self.zoom_label.setText(f"{self.view.magnification_text()}   level {lv}")
        self.zoom_label.setToolTip(self.view.magnification_tooltip())

    def _open_failed(self, path: Path | str, title: str, message: str) -> None:
        """Tell the user (dialog) and the listeners (start page, exit status) an open failed."""
        self.openFailed.emit(str(path), message)
        errors.report(self, title, message)

    def _on_openFailed(self, path: str, message: str) -> None:
        if self.slide is None:
            self.start_page.set_recent(self.settings.recent)
            self.start_page.set_problem(message, f"Could not open {Path(path).name}")
            self.pages.setCurrentWidget(self.start_page)

    def open_demo(self) -> None:
        """Open the demo project (installed into the data folder on first use)."""
        from app.demo import install_demo

        try:
            root = install_demo()
        except CrcError as exc:
            self._open_failed("the demo project", "Cannot open the demo", str(exc))
            return
        self.open_path_async(root)

    def show_shortcuts(self) -> QWidget:
        """Help > Keyboard Shortcuts: every shortcut, generated from the actions."""
        from app.help import ShortcutsDialog

        dlg = ShortcutsDialog(self)
        self.analysis_dialogs["shortcuts"] = dlg
        dlg.show()
        return dlg

    def show_user_guide(self) -> QWidget:
        """Help > User Guide: docs/USER_GUIDE.md with its screenshots."""
        from app.help import UserGuideWindow

        dlg = UserGuideWindow(parent=self)
        self.analysis_dialogs["guide"] = dlg
        dlg.show()
        return dlg

    def about(self) -> QWidget:
        """Help > About: version, the study, EBHI-Seg and OpenSlide credits, licences."""
        from app.dialogs.about import AboutDialog

        dlg = AboutDialog(self)
        self.analysis_dialogs["about"] = dlg  # kept alive while shown; tests read it
        dlg.show()
        return dlg

    # ================================================================= drag and drop, close
    def dragEnterEvent(self, ev: QDragEnterEvent) -> None:  # noqa: N802
        if ev.mimeData().hasUrls():
            ev.acceptProposedAction()

    def dropEvent(self, ev: QDropEvent) -> None:  # noqa: N802
        urls = [u.toLocalFile() for u in ev.mimeData().urls() if u.isLocalFile()]
        if urls:
            ev.acceptProposedAction()
            self.open_path_async(urls[0])

    def closeEvent(self, ev: QCloseEvent) -> None:  # noqa: N802
        if self.document is not None and not self.document.flush():
            box = QMessageBox.question(
                self, "Quit", "The annotations could not be saved. Quit anyway?"
            )
            if box != QMessageBox.StandardButton.Yes:
                ev.ignore()
                return
        from app.workers import cancel_all_workers

        cancel_all_workers(5000)
        self.settings.set("fill_opacity", self.ctl.layer.fill_opacity)
        self.settings.set("brush_radius_px", self.ctl.brush_radius_px)
        self.settings.set("window_geometry", bytes(self.saveGeometry().toHex()).decode())
        self.settings.set("window_state", bytes(self.saveState().toHex()).decode())
        self.settings.save()
        self._close_slide()
        super().closeEvent(ev)
