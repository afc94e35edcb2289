"""Error types of the core: one clear message naming the problem and what is accepted.

The CLI prints ``str(err)`` as a single line on stderr and exits with code 2; the GUI shows it in a
dialog. Messages name the file (or feature, or option) and, where there is one, the fix.
:func:`error_message` is the one place any exception becomes that line.
"""

from __future__ import annotations


class CrcError(Exception):
    """Base class of every error meant for the user (never shown as a traceback)."""

    def __init__(self, message: str) -> None:
        # One line: the CLI prints it as is.
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return str(self)


class SlideError(CrcError):
    """A slide cannot be opened or read (missing, corrupt, unsupported, too large)."""


class AnnotationError(CrcError):
    """An annotation file cannot be read or written (not JSON/XML, wrong types, hostile XML)."""


class ClassSchemeError(CrcError):
    """A class scheme edit or file is invalid (duplicate name, class still in use, bad colour)."""


class ProjectError(CrcError):
    """A project folder or project.json is invalid (escaping paths, newer format, missing file)."""


class DatasetError(CrcError):
    """A patch dataset or CSV manifest is unusable (empty, one class, missing column)."""


class CheckpointError(CrcError):
    """A checkpoint is truncated, of another architecture or class scheme, or not a checkpoint."""


class ConfigError(CrcError):
    """An option or configuration value is out of range or unknown."""


class Cancelled(CrcError):
    """A job was cancelled by the user."""


#: What :func:`error_message` says for :class:`MemoryError`.
OUT_OF_MEMORY = "out of memory: try a smaller batch size or a lower resolution"


def error_message(exc: BaseException) -> str:
    """The one line a user is shown for ``exc`` (the CLI after ``crc: error:``, the GUI in a
    dialog or status line).

    A :class:`CrcError` says its own message; an :class:`OSError` names its file and the problem
    (``"/data/x.svs: Permission denied"``); a :class:`MemoryError` suggests a smaller batch; any
    other exception (a bug) is ``"<type>: <message>"``.
    """
    if isinstance(exc, CrcError):
        return str(exc)
    if isinstance(exc, OSError):
        name = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        return f"{name}{exc.strerror or exc}"
    if isinstance(exc, MemoryError):
        return OUT_OF_MEMORY
    return f"{type(exc).__name__}: {exc}"
