"""CRC Workbench GUI (PySide6). Depends on :mod:`crc_core`; never the other way round."""

# PySide6 6.12.0 drops references to None/True on void calls and emits (crash); see _qtfix.
from app import _qtfix as _qtfix  # noqa: E402

_qtfix.install()
