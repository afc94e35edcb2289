"""Opening slides for the main window: the slide file read in a worker, the implicit project.

:class:`SlideOpener` opens a slide file or one slide of a project and hands the ready reader to the
window through the callbacks it was given (no reference to the window itself):

* ``show(reader, project, entry, implicit, annotation_file)``: show it (GUI thread; may raise, the
  window is then left as it was);
* ``shown()``: the reader the window shows now (a reader it did not take is closed here);
* ``failed(path, title, message)``: tell the user an open failed;
* ``status(text)``: a status-bar line ("" clears it).

From the UI (menu, drop, recent files, project panel) the file is opened in a
:class:`app.workers.JobWorker` (:meth:`open_file_async`, :meth:`open_entry_async`): the GUI never
waits on the slide file; a newer request makes an older one's reader close when it arrives. The
synchronous forms (:meth:`open_file`, :meth:`open_entry`) serve the command line and tests.

A bare slide opens in an *implicit project* (:func:`implicit_project`) under
``settings.data_home()/slides/<stem>-<fingerprint>/``, so its annotations and pixel size come back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from pathlib import Path

from PySide6.QtCore import QObject

from app.settings import data_home
from app.workers import JobWorker
from crc_core.errors import CrcError, error_message
from crc_core.jobs import Event, Progress
from crc_core.project import PROJECT_FILE, Project, SlideEntry
from crc_core.slide import SlideReader, open_slide

log = logging.getLogger(__name__)

ShowSlide = Callable[[SlideReader, Project, SlideEntry, bool, "Path | None"], None]


def implicit_project_root(slide_path: Path, fingerprint: str) -> Path:
    """Where the annotations of a slide opened without a project live."""
    return data_home() / "slides" / f"{slide_path.stem[:40]}-{fingerprint[:16]}"


def implicit_project(reader: SlideReader) -> tuple[Project, SlideEntry]:
    """The implicit project of a bare slide (opened or created) and the slide's entry in it."""
    root = implicit_project_root(reader.path, reader.fingerprint())
    if (root / PROJECT_FILE).exists():
        project = Project.open(root)
    else:
        project = Project.create(root, name=reader.path.stem)
    resolved = reader.path.resolve()
    entry = None
    for e in project.slides:
        try:
            if project.slide_path(e) == resolved:
                entry = e
        except CrcError:
            pass
    if entry is None and len(project.slides) == 1:  # the same file, moved
        entry = project.set_slide_path(project.slides[0], reader.path)
    if entry is None:
        entry = project.add_slide(reader.path)
    if project.dirty:  # saves (with fsync) only when something changed
        project.save()
    return project, entry


def open_job(path: Path) -> Generator[Event, None, SlideReader]:
    """The worker's part: open the slide file, read its fingerprint (2 MiB, cached on it)."""
    yield Progress(0, 1, f"Opening {path.name}")
    reader = open_slide(path)
    try:
        reader.fingerprint()
    except BaseException:
        reader.close()
        raise
    return reader


class SlideOpener(QObject):
    """Opens slide files for a window (see the module docstring for the callbacks)."""

    def __init__(
        self,
        *,
        show: ShowSlide,
        shown: Callable[[], SlideReader | None],
        failed: Callable[[Path | str, str, str], None],
        status: Callable[[str], None],
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._show, self._shown, self._failed, self._status = show, shown, failed, status
        self._worker: JobWorker | None = None
        self._token: object | None = None
        self.delivering = False  # True while a reader opened in the worker is being shown

    # ------------------------------------------------------------------ synchronous
    def open_file(self, path: Path, annotations: Path | None) -> None:
        """Open a bare slide file now (in its implicit project); raises on failure."""
        reader = open_slide(path)
        self._show_in_implicit(reader, annotations)

    def open_entry(self, project: Project, entry_id: str, implicit: bool) -> bool:
        """Open one slide of ``project`` now; False (the user told) on failure."""
        try:
            entry = project.get_slide(entry_id)
            reader = open_slide(project.slide_path(entry))
        except Exception as exc:
            self._failed(entry_id, "Cannot open slide", error_message(exc))
            return False
        try:
            self._show(reader, project, entry, implicit, None)
        except Exception as exc:
            self._close_unless_shown(reader)
            self._failed(reader.path, "Cannot open slide", error_message(exc))
            return False
        return True

    # ------------------------------------------------------------------ in a worker
    def open_file_async(
        self, path: Path, annotations: Path | None, opened: Callable[[], None]
    ) -> None:
        """Open a bare slide file in a worker; ``opened()`` once it is shown."""

        def ready(reader: SlideReader) -> None:
            try:
                self._show_in_implicit(reader, annotations)
            except Exception as exc:
                self._failed(path, "Cannot open", error_message(exc))
                return
            opened()

        self._start(path, ready)

    def open_entry_async(
        self, project: Project, entry_id: str, implicit: bool,
        current: Callable[[], Project | None],
    ) -> None:
        """Open one slide of ``project`` in a worker; dropped if ``current()`` is another project
        when the reader arrives."""
        try:
            entry = project.get_slide(entry_id)
            path = project.slide_path(entry)
        except CrcError as exc:
            self._failed(entry_id, "Cannot open slide", error_message(exc))
            return

        def ready(reader: SlideReader) -> None:
            if current() is not project:  # another project was opened meanwhile
                reader.close()
                return
            try:
                self._show(reader, project, entry, implicit, None)
            except Exception as exc:
                self._close_unless_shown(reader)
                self._failed(path, "Cannot open slide", error_message(exc))

        self._start(path, ready)

    # ------------------------------------------------------------------ internals
    def _show_in_implicit(self, reader: SlideReader, annotations: Path | None) -> None:
        try:
            project, entry = implicit_project(reader)
            self._show(reader, project, entry, True, annotations)
        except Exception:
            self._close_unless_shown(reader)
            raise

    def _close_unless_shown(self, reader: SlideReader) -> None:
        if self._shown() is not reader:
            reader.close()

    def _start(self, path: Path, ready: Callable[[SlideReader], None]) -> None:
        if self._worker is not None:
            self._worker.cancel()  # its reader is closed when it arrives
        token = object()
        self._token = token
        worker = JobWorker(lambda: open_job(path), self)

        def done(reader: SlideReader) -> None:
            if self._token is not token:
                reader.close()
                return
            self._worker = None
            self._status("")
            self.delivering = True
            try:
                ready(reader)
            finally:
                self.delivering = False

        def failed(msg: str) -> None:
            if self._token is token:
                self._worker = None
                self._status("")
                self._failed(path, "Cannot open", msg)

        worker.finished_ok.connect(done)
        worker.failed.connect(failed)
        worker.finished.connect(worker.deleteLater)
        self._worker = worker
        self._status(f"Opening {path.name}…")
        worker.start()
