"""Work around a reference-count bug of the installed PySide6/shiboken6 (6.12.0) on Python 3.11.

In this build every Python call to a Qt function that returns ``void`` (``widget.update()``,
``pool.start(...)``, ``painter.drawImage(...)``...) returns ``None`` without taking a new reference
to
it, and ``signal.emit(...)`` does the same with ``True``. Each call therefore decrements the
reference
count of ``None`` or ``True``. On Python 3.11 these singletons are not immortal (they start with a
few thousand and a few hundred references), so the interpreter soon aborts with ``Fatal Python
error:
none_dealloc`` / ``bool_dealloc``: a viewer painting tiles dies within seconds, a training job
reporting progress after a few hundred epochs' worth of events.

:func:`install` probes once whether the bug is present (a few void calls and emits on a private
``QObject``, comparing ``sys.getrefcount``) and, only then, adds 2**40 references to ``None``,
``True`` and ``False``: the same effect as Python 3.12's immortal singletons, so the stray
decrements
can never reach zero. Nothing else is touched. Imported by ``app/__init__.py``, so it is in place
before any application code runs. On Python >= 3.12 (immortal singletons) it does nothing.
"""

from __future__ import annotations

import ctypes
import sys

_installed = False
_BUMP = 1 << 40


def _leaks() -> bool:
    from PySide6.QtCore import QObject, Signal

    class _Probe(QObject):
        probe = Signal()

    p = _Probe()
    n0, t0 = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(8):
        p.setObjectName("probe")  # void
        p.probe.emit()  # returns True
    return sys.getrefcount(None) < n0 or sys.getrefcount(True) < t0


def install() -> bool:
    """Make None/True/False immortal when this PySide6 has the bug; returns whether it did."""
    global _installed
    if _installed:
        return True
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    try:
        if not _leaks():
            return False
    except ImportError:  # no Qt: nothing to fix
        return False
    for obj in (None, True, False):
        ctypes.c_ssize_t.from_address(id(obj)).value += _BUMP
    _installed = True
    return True
