"""The main window's actions, menus and toolbar, and which of them are enabled.

:func:`build_actions` creates the window's ``act_*`` actions, ``tool_actions`` (one per annotation
tool, exclusive), ``analysis_actions`` (one per :data:`app.main_window.ANALYSIS_DIALOGS` entry) and
the class keys 1-9 (Shift: apply to the selection); :func:`build_menus` lays them out in the menu
bar (installing the Review dock and the stain view, which add their own entries) and the toolbar;
:func:`update_actions` enables them for the open slide, project and undo stack. The slots are the
window's own methods: this module is the window's wiring, split out of :mod:`app.main_window`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtGui import QAction, QActionGroup, QKeySequence, QShortcut

if TYPE_CHECKING:
    from app.main_window import MainWindow


def add_action(w: MainWindow, text: str, slot: Any, shortcut: Any = None, tip: str = "") -> QAction:
    """A window action (its shortcut active wherever the focus is in the window)."""
    a = QAction(text, w)
    if shortcut is not None:
        a.setShortcut(QKeySequence(shortcut))
    if tip:
        a.setStatusTip(tip)
    a.triggered.connect(slot)
    w.addAction(a)
    return a

def build_actions(w: MainWindow) -> None:
    """The window's actions (see the module docstring)."""
    from app.main_window import ANALYSIS_DIALOGS

    def A(*args: Any) -> QAction:  # noqa: N802
        return add_action(w, *args)

    w.act_open = A("&Open Slide…", w.choose_slide, QKeySequence.StandardKey.Open)
    w.act_open_project = A("Open &Project…", w.choose_project, "Ctrl+Shift+O")
    w.act_new_project = A("&New Project…", w.new_project, "Ctrl+Shift+N")
    w.act_add_slide = A("&Add Slides to Project…", w.add_slides_to_project)
    w.act_open_ann = A("Open &Annotations…", w.choose_annotations)
    w.act_export = A("&Export Annotations…", w.export_annotations, "Ctrl+E")
    w.act_props = A("Slide &Properties…", w.show_properties, "Ctrl+I")
    w.act_mpp = A("Set Pixel &Size (mpp)…", w.ask_mpp)
    w.act_close = A("&Close Slide", w.close_slide, "Ctrl+W",
                    "Close the slide (its annotations are saved) and go back to the start page")
    w.act_quit = A("&Quit", w.close, QKeySequence.StandardKey.Quit)
    w.act_undo = A("&Undo", w.undo, QKeySequence.StandardKey.Undo)
    w.act_redo = A("&Redo", w.redo, QKeySequence.StandardKey.Redo)
    w.act_undo.setProperty("base_text", "Undo")  # its text names the command
    w.act_redo.setProperty("base_text", "Redo")
    # toolbar buttons of fixed text (the menu's "Undo Draw rectangle" would resize the bar)
    w.tb_undo = QAction("Undo", w)
    w.tb_undo.triggered.connect(w.undo)
    w.tb_redo = QAction("Redo", w)
    w.tb_redo.triggered.connect(w.redo)
    w.act_delete = A(
        "&Delete Selection", w.ctl.delete_selection, QKeySequence.StandardKey.Delete
    )
    w.act_select_all = A("Select &All", w.select_all, QKeySequence.StandardKey.SelectAll)
    w.act_scheme = A("Edit &Class Scheme…", w.edit_scheme)
    w.act_fit = A("&Fit to Window", w.view.fit, "F")
    w.act_1to1 = A("&1:1 (Level 0)", w.view.one_to_one, "Ctrl+0")
    w.act_zoom_in = A(
        "Zoom &In", lambda: w.view.zoom_by(1.5), QKeySequence.StandardKey.ZoomIn
    )
    w.act_zoom_out = A(
        "Zoom &Out", lambda: w.view.zoom_by(1 / 1.5), QKeySequence.StandardKey.ZoomOut
    )
    w.tool_group = QActionGroup(w)
    w.tool_group.setExclusive(True)
    w.tool_actions: dict[str, QAction] = {}
    for name, tool in w.ctl.tools.items():
        a = A(
            tool.label,
            lambda _=False, n=name: w.ctl.set_tool(n),
            tool.shortcut,
            f"{tool.label} tool ({tool.shortcut})",
        )
        a.setCheckable(True)
        w.tool_group.addAction(a)
        w.tool_actions[name] = a
    w.tool_actions["pan"].setChecked(True)
    w.ctl.toolChanged.connect(lambda n: w.tool_actions[n].setChecked(True))
    w.analysis_actions = {
        k: A(text, lambda _=False, k=k: w.open_analysis(k))
        for k, (text, *_rest) in ANALYSIS_DIALOGS.items()
    }
    # class keys 1-9: set the class of new shapes (and of the selection with Shift)
    w.class_shortcuts = []
    for digit in "123456789":
        sc = QShortcut(QKeySequence(digit), w)
        sc.activated.connect(lambda d=digit: w.select_class_by_key(d))
        sc2 = QShortcut(QKeySequence(f"Shift+{digit}"), w)
        sc2.activated.connect(lambda d=digit: w.select_class_by_key(d, apply=True))
        w.class_shortcuts += [sc, sc2]

def build_menus(w: MainWindow) -> None:
    """Menu bar and toolbar."""
    mb = w.menuBar()
    f = mb.addMenu("&File")
    for a in (w.act_open, w.act_open_project, w.act_new_project, w.act_add_slide):
        f.addAction(a)
    w.recent_menu = f.addMenu("Open &Recent")
    w.recent_menu.aboutToShow.connect(lambda: fill_recent(w))
    f.addSeparator()
    for a in (w.act_open_ann, w.act_export):
        f.addAction(a)
    f.addSeparator()
    f.addAction(w.act_props)
    f.addAction(w.act_mpp)
    f.addSeparator()
    f.addAction(w.act_close)
    f.addAction(w.act_quit)
    e = mb.addMenu("&Edit")
    for a in (w.act_undo, w.act_redo):
        e.addAction(a)
    e.addSeparator()
    for a in (w.act_delete, w.act_select_all, *w.ann_actions.actions):
        e.addAction(a)
    e.addSeparator()
    e.addAction(w.act_scheme)
    v = mb.addMenu("&View")
    for a in (w.act_fit, w.act_1to1, w.act_zoom_in, w.act_zoom_out):
        v.addAction(a)
    mags = v.addMenu("&Magnification")
    for a in (*w.view_actions.mag_actions.values(), w.view_actions.act_overzoom):
        mags.addAction(a)
    v.addAction(w.view_actions.act_adjust)
    v.addSeparator()
    from app.panels.review import install_review_panel  # Review dock: N/P, 1-9, Enter

    install_review_panel(w)
    for dock in w.docks.values():
        v.addAction(dock.toggleViewAction())
    from app.viewer.stain_view import install_stain_view

    w.stain_view = install_stain_view(w, v)
    t = mb.addMenu("&Tools")
    for a in w.tool_actions.values():
        t.addAction(a)
    an = mb.addMenu("&Analysis")
    for a in w.analysis_actions.values():
        an.addAction(a)
    h = mb.addMenu("&Help")
    h.addAction(add_action(w, "&User Guide", w.show_user_guide, "F1"))
    h.addAction(add_action(w, "&Keyboard Shortcuts", w.show_shortcuts, "Ctrl+/"))
    h.addSeparator()
    h.addAction(add_action(w, "&About", w.about))
    tb = w.addToolBar("Tools")
    tb.setObjectName("toolbar-tools")
    tb.addAction(w.act_open)
    tb.addSeparator()
    for a in w.tool_actions.values():
        tb.addAction(a)
    tb.addSeparator()
    for a in (w.tb_undo, w.tb_redo, w.act_delete, w.act_fit, w.act_1to1):
        tb.addAction(a)
    tb.addSeparator()
    for a in w.view_actions.mag_actions.values():
        tb.addAction(a)

def fill_recent(w: MainWindow) -> None:
    """File > Open Recent, filled as it opens."""
    w.recent_menu.clear()
    items = w.settings.recent
    if not items:
        a = w.recent_menu.addAction("(none)")
        a.setEnabled(False)
    for p in items:
        w.recent_menu.addAction(p, lambda p=p: w.open_path_async(p))

def update_actions(w: MainWindow) -> None:
    """Enable the actions for the open slide, the project and the undo stack."""
    has_slide = w.slide is not None
    for a in (
        w.act_close,
        w.act_delete,
        w.act_export,
        w.act_props,
        w.act_mpp,
        w.act_open_ann,
        w.act_select_all,
        w.act_fit,
        w.act_1to1,
        w.act_zoom_in,
        w.act_zoom_out,
    ):
        a.setEnabled(has_slide)
    w.act_add_slide.setEnabled(w.project is not None and not w.implicit_project)
    # (`is not None`: an empty document has len 0, and its undo must stay available)
    stack = w.document.undo_stack if w.document is not None else None
    w.act_undo.setEnabled(bool(stack and stack.canUndo()))
    w.act_redo.setEnabled(bool(stack and stack.canRedo()))
    w.act_undo.setText(f"&Undo {stack.undoText()}" if stack and stack.canUndo() else "&Undo")
    w.act_redo.setText(f"&Redo {stack.redoText()}" if stack and stack.canRedo() else "&Redo")
    for tb, act in ((w.tb_undo, w.act_undo), (w.tb_redo, w.act_redo)):
        tb.setEnabled(act.isEnabled())
        keys = act.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
        tb.setToolTip(f"{act.text().replace('&', '')} ({keys})")
    w.ann_actions.update_enabled()
    w.view_actions.update_enabled()
