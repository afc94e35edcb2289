"""CRC Workbench GUI (PySide6). Depends on :mod:`crc_core`; never the other way round."""
