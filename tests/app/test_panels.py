"""Main-window panels and dialogs: overview, status bar, properties, class scheme, layers, drops."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent, QMouseEvent

from app.main_window import MainWindow
from app.viewer.layers import RasterLayer


@pytest.fixture
def win(qtbot, slides_dir):
    w = MainWindow()
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    qtbot.waitExposed(w)
    assert w.open_path(slides_dir / "cmu-1-small-region.svs")
    return w


def test_status_bar_shows_cursor_in_pixels_and_micrometres(qtbot, win):
    win.view.set_view(1000, 1000, 1.0)
    pos = win.view.l0_to_widget(QPointF(1100, 1200))
    ev = QMouseEvent(
        QMouseEvent.Type.MouseMove,
        pos,
        win.view.mapToGlobal(pos),
        Qt.MouseButton.NoButton,
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
    )
    win.view.mouseMoveEvent(ev)
    text = win.pos_label.text()
    assert "x 1,100" in text and "y 1,200" in text
    assert "µm" in text and "548.9" in text  # 1100 px * 0.499 µm/px


def test_overview_click_moves_the_view(qtbot, win):
    ov = win.overview
    r = ov._image_rect()
    qtbot.mouseClick(
        ov,
        Qt.MouseButton.LeftButton,
        pos=QPoint(int(r.left() + r.width() * 0.25), int(r.top() + r.height() * 0.75)),
    )
    w, h = win.slide.dimensions
    assert win.view.center.x() == pytest.approx(w * 0.25, rel=0.05)
    assert win.view.center.y() == pytest.approx(h * 0.75, rel=0.05)


def test_properties_dialog_shows_label_and_macro_images(qtbot, win):
    from app.dialogs.slide_properties import SlidePropertiesDialog

    dlg = SlidePropertiesDialog(win.slide, win)
    qtbot.addWidget(dlg)
    assert {"label", "macro"} <= set(dlg.image_labels)
    assert not dlg.image_labels["macro"].pixmap().isNull()
    assert not dlg.image_labels["label"].pixmap().isNull()


def test_class_scheme_edit_is_saved_in_the_project(qtbot, win):
    new = win.project.scheme.copy()
    new.rename("adenoma", "Tubular adenoma")
    new.add("Stroma", color=(120, 90, 60))
    win.apply_scheme(new)
    items = [
        win.palette.tree.topLevelItem(i).text(0)
        for i in range(win.palette.tree.topLevelItemCount())
    ]
    assert "Tubular adenoma" in items and "Stroma" in items
    from crc_core.project import Project

    reopened = Project.open(win.project.root)
    assert reopened.scheme.get("adenoma").name == "Tubular adenoma"
    assert reopened.scheme.find("Stroma") is not None


def test_class_visibility_checkbox_hides_the_class(qtbot, win):
    item = win.palette.tree.topLevelItem(1)
    item.setCheckState(0, Qt.CheckState.Unchecked)
    assert not win.ctl.layer.is_class_visible(item.data(0, Qt.ItemDataRole.UserRole))


def test_added_layer_appears_in_the_layers_panel_with_opacity(qtbot, win):
    layer = RasterLayer("Heatmap", np.zeros((4, 4, 4), np.uint8), scale=500, opacity=0.5)
    win.view.layers.add(layer)
    box, slider = win.layers_panel.layer_controls(layer)
    slider.setValue(20)
    assert layer.opacity == pytest.approx(0.2)
    box.setChecked(False)
    assert not layer.visible


def test_dropping_a_slide_opens_it(qtbot, win, slides_dir):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(slides_dir / "tcga-cr-7395-01a-01-ts1.svs"))])
    ev = QDropEvent(
        QPointF(50, 50),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
    )
    with qtbot.waitSignal(win.slideOpened, timeout=20000):
        win.dropEvent(ev)  # opened in a worker thread; the window switches when it is ready
    assert win.slide.path.name == "tcga-cr-7395-01a-01-ts1.svs"
    assert str((slides_dir / "tcga-cr-7395-01a-01-ts1.svs").absolute()) in win.settings.recent


def test_class_scheme_dialog_adds_and_refuses_to_remove_a_class_in_use(
    qtbot, win, monkeypatch, errors_seen
):
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QInputDialog, QPushButton

    from app.dialogs.class_scheme import ClassSchemeDialog

    dlg = ClassSchemeDialog(win.project.scheme, in_use={"normal"}, parent=win)
    qtbot.addWidget(dlg)
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("Stroma", True))
    buttons = {b.text(): b for b in dlg.findChildren(QPushButton)}
    qtbot.mouseClick(buttons["Add…"], Qt.MouseButton.LeftButton)
    assert dlg.result_scheme().find("Stroma") is not None
    dlg.list.setCurrentRow(0)  # Normal, in use
    qtbot.mouseClick(buttons["Remove"], Qt.MouseButton.LeftButton)
    assert errors_seen and "still used" in errors_seen[0][1]
    assert dlg.result_scheme().find("normal") is not None
    assert win.project.scheme.find("Stroma") is None  # the dialog edits a copy


def test_dropping_a_corrupt_file_shows_an_error_and_keeps_the_slide(
    qtbot, win, tmp_path, errors_seen
):
    bad = tmp_path / "broken.ndpi"
    bad.write_bytes(b"\x00" * 5000)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(bad))])
    ev = QDropEvent(
        QPointF(50, 50),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
    )
    win.dropEvent(ev)
    qtbot.waitUntil(lambda: bool(errors_seen), timeout=20000)
    assert "broken.ndpi" in errors_seen[0][1]
    assert win.slide.path.name == "cmu-1-small-region.svs"


def test_activating_a_project_slide_opens_it_in_the_background(qtbot, slides_dir, tmp_path):
    from crc_core.project import Project

    proj = Project.create(tmp_path / "proj")
    proj.add_slide(slides_dir / "cmu-1-small-region.svs")
    proj.add_slide(slides_dir / "tcga-cr-7395-01a-01-ts1.svs")
    proj.save()
    w = MainWindow()
    qtbot.addWidget(w)
    assert w.open_path(tmp_path / "proj")
    assert w.slide.path.name == "cmu-1-small-region.svs"
    tree = w.project_panel.tree
    w.show()
    qtbot.waitExposed(w)
    item = tree.topLevelItem(1)
    tree.scrollToItem(item)
    qtbot.mouseClick(tree.viewport(), Qt.MouseButton.LeftButton,
                     pos=tree.visualItemRect(item).center())  # select the second slide
    assert tree.currentItem() is item
    with qtbot.waitSignal(w.slideOpened, timeout=20000):  # Enter activates it
        qtbot.keyClick(tree, Qt.Key.Key_Return)
    assert w.slide.path.name == "tcga-cr-7395-01a-01-ts1.svs"
    assert w.entry.id == proj.slides[1].id
    w.close()


def test_a_project_opened_from_the_menu_loads_its_first_slide_in_the_background(
        qtbot, slides_dir, tmp_path):
    from crc_core.project import Project

    proj = Project.create(tmp_path / "proj")
    proj.add_slide(slides_dir / "cmu-1-small-region.svs")
    proj.save()
    w = MainWindow()
    qtbot.addWidget(w)
    with qtbot.waitSignal(w.slideOpened, timeout=20000):
        w.open_path_async(tmp_path / "proj")   # File > Open Project, drops and recent files
        # The project is shown at once; its slide arrives from the worker thread.
        assert w.project is not None and w.project.name == proj.name
        assert w.slide is None
    assert w.slide.path.name == "cmu-1-small-region.svs"
    w.close()
