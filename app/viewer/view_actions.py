"""View-menu actions of the main window: magnification buttons (5×, 10×, 20×, 40×), zooming
past the scan's resolution on purpose, brightness/contrast, and the magnification readout.

Magnification comes from the slide's objective power, else its pixel size (see
:mod:`app.viewer.display`); when neither is known the buttons are disabled and say why. A button
above the scan's magnification stops at the scan's resolution and says so in the status bar,
unless it is Shift-clicked or View > Zoom Past Scan Resolution is on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QApplication

from app.viewer.display import MAGNIFICATIONS, format_magnification

if TYPE_CHECKING:
    from app.main_window import MainWindow


class ViewActions(QObject):
    """The actions and the readout; ``window`` is the main window (view, status bar)."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.win = window
        self.view = window.view
        self.dialog: Any = None
        self.mag_group = QActionGroup(self)
        self.mag_group.setExclusive(False)
        self.mag_actions: dict[int, QAction] = {}
        for m in MAGNIFICATIONS:
            a = QAction(f"{m}×", window)
            a.setObjectName(f"mag-{m}x")
            a.triggered.connect(lambda _=False, m=m: self.zoom_to_magnification(m))
            self.mag_group.addAction(a)
            self.mag_actions[m] = a
        self.act_overzoom = QAction("Zoom &Past Scan Resolution", window)
        self.act_overzoom.setCheckable(True)
        self.act_overzoom.setStatusTip("Let zooming magnify past the resolution the slide was "
                                       "scanned at (Shift with the wheel does it once)")
        self.act_overzoom.toggled.connect(self._on_overzoom_toggled)
        self.act_adjust = QAction("&Brightness / Contrast…", window)
        self.act_adjust.setStatusTip("Adjust how the slide is shown (view only)")
        self.act_adjust.triggered.connect(self.show_adjust)
        self.view.zoomCapped.connect(self._on_view_zoomCapped)
        self.update_enabled()

    def update_enabled(self) -> None:
        """Buttons enabled when the magnification is known; tooltips say why not."""
        has = self.view.source is not None
        native = self.view.native_magnification() if has else None
        for m, a in self.mag_actions.items():
            a.setEnabled(native is not None)
            if not has:
                a.setToolTip(f"Zoom to {m}× (open a slide first)")
            elif native is None:
                a.setToolTip("Magnification unknown: the slide has no objective power and no "
                             "pixel size (File > Set Pixel Size)")
            else:
                past = m > native * (1 + 1e-6)
                a.setToolTip(f"Zoom to {m}×" + (
                    f" (scanned at {format_magnification(native)}: stops there unless "
                    "Shift-clicked)" if past else ""))
        self.act_adjust.setEnabled(has)

    def zoom_to_magnification(self, mag: float) -> bool:
        """Zoom to ``mag``×; Shift held (or the View toggle) lets it pass the scan's."""
        native = self.view.native_magnification()
        if self.view.source is None or native is None:
            self.win.statusBar().showMessage(
                "Magnification unknown: this slide records no objective power and no pixel "
                "size (File > Set Pixel Size)", 10000)
            return False
        shift = bool(QApplication.keyboardModifiers() & Qt.KeyboardModifier.ShiftModifier)
        return self.view.set_magnification(mag, overzoom=shift)

    def _on_view_zoomCapped(self) -> None:
        native = self.view.native_magnification()
        at = f" ({format_magnification(native)})" if native else ""
        self.win.statusBar().showMessage(
            f"Zoom stops at the scan's resolution{at}: hold Shift (wheel or magnification "
            "button) or turn on View > Zoom Past Scan Resolution to magnify further", 10000)

    def _on_overzoom_toggled(self, on: bool) -> None:
        self.view.allow_overzoom = on

    def show_adjust(self) -> Any:
        from app.dialogs.display_adjust import DisplayAdjustDialog

        if self.dialog is None:
            self.dialog = DisplayAdjustDialog(self.view, self.win)
        self.dialog.show()
        self.dialog.raise_()
        return self.dialog
