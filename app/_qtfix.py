"""Work around a PySide6 6.12.0 reference-count bug in ``SignalInstance.emit``.

In PySide6/shiboken6 6.12.0, every Python call to ``signal.emit(...)`` returns ``True`` without
taking a new reference to it, so each emission decrements ``True``'s reference count. On Python 3.11
(where ``True`` is not immortal; it starts with a few hundred references) the interpreter aborts with
``Fatal Python error: bool_dealloc`` after a few hundred emissions: a viewer painting tiles, or a
training job reporting progress, dies within seconds.

:func:`install` probes once whether ``emit`` has the bug (one emission on a private object, comparing
``sys.getrefcount(True)``) and, only then, wraps ``SignalInstance.emit`` to add the missing reference.
Imported by ``app/__init__.py``, so it is in place before any application code emits a signal.
"""

from __future__ import annotations

import ctypes
import sys

_installed = False


def _emit_leaks() -> bool:
    from PySide6.QtCore import QObject, Signal

    class _Probe(QObject):
        probe = Signal()

    p = _Probe()
    before = sys.getrefcount(True)
    for _ in range(4):
        p.probe.emit()
    return sys.getrefcount(True) < before


def install() -> bool:
    """Patch ``SignalInstance.emit`` when this PySide6 has the bug; returns whether it patched."""
    global _installed
    if _installed:
        return True
    try:
        from PySide6.QtCore import SignalInstance
    except ImportError:  # no Qt: nothing to fix
        return False
    if not _emit_leaks():
        return False
    original = SignalInstance.emit
    incref = ctypes.pythonapi.Py_IncRef
    incref.argtypes = [ctypes.py_object]
    incref.restype = None

    def emit(self, *args):  # type: ignore[no-untyped-def]
        result = original(self, *args)
        incref(result)
        return result

    SignalInstance.emit = emit
    _installed = True
    return True
