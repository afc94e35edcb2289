"""CRC Workbench core: the Qt-free library behind the `crc` CLI and the `crc-viewer` GUI.

Everything here runs headless (tests, batch jobs, torchrun). Nothing in this package imports Qt.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
