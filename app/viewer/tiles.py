"""Background tile loading for the slide view: a QThreadPool reader and a GUI-side image cache.

Coordinates: a tile key is ``(level, tile_col, tile_row)`` on a grid of ``tile_size`` pixels *at
that
level*; its level-0 rectangle is the grid cell scaled by ``level_downsamples[level]``.

Threading: :class:`TileLoader` lives in the GUI thread. Each missing tile is read by a
:class:`_TileJob` in a ``QThreadPool`` through ``source.read_tile(level, col, row, tile_size)`` (the
slide reader's own byte-bounded LRU sits under it), converted to a ``QImage`` in that worker (a
``QImage`` is a plain reentrant value; no ``QPixmap`` and no widget is touched off the GUI thread)
and
handed to the GUI thread by a queued signal. The GUI thread only ever looks up finished images in
the
cache, so it never waits on slide I/O.

Stale work is dropped: every call to :meth:`TileLoader.request` starts a new *generation* and
replaces
the queue of wanted tiles; pool workers pop from that queue when they are free, so a tile that left
the
view before a worker reached it is never read.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np
from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal
from PySide6.QtGui import QImage

log = logging.getLogger(__name__)

TileKey = tuple[int, int, int]  # (level, tile_col, tile_row)


class TileSource(Protocol):
    """What the viewer needs from a slide (``crc_core.slide.SlideReader`` satisfies it)."""

    level_count: int
    level_dimensions: list[tuple[int, int]]
    level_downsamples: list[float]
    dimensions: tuple[int, int]

    def read_tile(self, level: int, col: int, row: int, tile_size: int = 256) -> np.ndarray: ...

    def thumbnail(self, max_px: int) -> np.ndarray: ...


def array_to_qimage(arr: np.ndarray) -> QImage:
    """An owning ``QImage`` (RGB888 or RGBA8888) copied from an ``(h, w, 3|4)`` uint8 array."""
    a = np.ascontiguousarray(arr, dtype=np.uint8)
    if a.ndim == 2:
        a = np.ascontiguousarray(np.repeat(a[:, :, None], 3, axis=2))
    h, w, c = a.shape
    fmt = QImage.Format.Format_RGBA8888 if c == 4 else QImage.Format.Format_RGB888
    img = QImage(a.data, w, h, a.strides[0], fmt)
    return img.copy()  # detach from the numpy buffer


class _Emitter(QObject):
    tileLoaded = Signal(object, int, object)  # key, generation, QImage (null: the read failed)
    thumbnailLoaded = Signal(object)  # QImage | None


class _TileJob(QRunnable):
    """A pool worker that reads queued tiles until the loader's queue is empty.

    Workers are not bound to a tile: each one pops the next wanted key at the moment it is free, so
    replacing the queue (a new generation) drops stale requests without touching the pool.
    """

    def __init__(self, loader: TileLoader):
        super().__init__()
        self.loader = loader

    def run(self) -> None:
        loader = self.loader
        while True:
            with loader._lock:
                if loader._closed or not loader._queue:
                    loader._workers -= 1
                    return
                key = loader._queue.pop(0)
                generation = loader.generation
                loader._in_flight.add(key)
            level, col, row = key
            try:
                arr = loader.source.read_tile(level, col, row, loader.tile_size)
                img = array_to_qimage(arr).convertToFormat(QImage.Format.Format_RGB32)
            except Exception as exc:  # a broken tile must not kill the viewer
                log.warning("tile %s could not be read: %s", key, exc)
                img = QImage()
            loader._emitter.tileLoaded.emit(key, generation, img)


class _ThumbJob(QRunnable):
    def __init__(self, loader: TileLoader, max_px: int):
        super().__init__()
        self.loader = loader
        self.max_px = max_px
        self.source = loader.source

    def run(self) -> None:
        try:
            img: QImage | None = array_to_qimage(self.source.thumbnail(self.max_px))
        except Exception as exc:
            log.warning("thumbnail could not be read: %s", exc)
            img = None
        if self.source is self.loader.source:  # not replaced meanwhile (replace_source)
            self.loader._emitter.thumbnailLoaded.emit(img)


class TileLoader(QObject):
    """Reads tiles in background threads and keeps the decoded images in a byte-bounded LRU.

    Signals
    -------
    tileReady(key): a tile image is now in the cache (the view repaints).
    thumbnailReady(): the whole-slide thumbnail used as the last-resort stand-in is available.
    """

    tileReady = Signal(object)
    thumbnailReady = Signal()

    def __init__(
        self,
        source: Any,
        tile_size: int = 256,
        cache_bytes: int = 256 * 1024 * 1024,
        threads: int | None = None,
        thumbnail_px: int = 512,
        parent: QObject | None = None,
    ):
        super().__init__(parent)
        self.source = source
        self.tile_size = tile_size
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[TileKey, QImage] = OrderedDict()
        self._cache_used = 0
        self._failed: set[TileKey] = set()
        self._queue: list[TileKey] = []  # wanted tiles not yet started, by priority
        self._in_flight: set[TileKey] = set()
        self._workers = 0
        self.generation = 0
        self.dropped = 0  # requests dropped because their tile left the view
        self.thumbnail: QImage | None = None
        self._thumb_pending = False
        self._closed = False
        self._lock = threading.Lock()
        self.pool = QThreadPool(self)
        # reads release the GIL in OpenSlide; more threads than cores only contend for it
        self.pool.setMaxThreadCount(threads or max(2, min(4, os.cpu_count() or 2)))
        self._emitter = _Emitter()
        self._emitter.tileLoaded.connect(self._on_job_tileLoaded)
        self._emitter.thumbnailLoaded.connect(self._on_job_thumbnailLoaded)
        self._thumbnail_px = thumbnail_px
        self._source_generation = 0  # tiles requested before replace_source() are dropped

    # ----------------------------------------------------------------- geometry
    def level_tile_grid(self, level: int) -> tuple[int, int]:
        w, h = self.source.level_dimensions[level]
        ts = self.tile_size
        return (w + ts - 1) // ts, (h + ts - 1) // ts

    def tile_rect_l0(self, key: TileKey) -> tuple[float, float, float, float]:
        """Level-0 ``(x, y, w, h)`` covered by a tile (edge tiles are clipped to the level)."""
        level, col, row = key
        ds = float(self.source.level_downsamples[level])
        lw, lh = self.source.level_dimensions[level]
        ts = self.tile_size
        x0, y0 = col * ts, row * ts
        w, h = min(ts, lw - x0), min(ts, lh - y0)
        return x0 * ds, y0 * ds, w * ds, h * ds

    def tiles_in_rect(
        self, level: int, x0: float, y0: float, x1: float, y1: float
    ) -> list[TileKey]:
        """Tiles of ``level`` intersecting the level-0 rectangle [x0, x1) x [y0, y1)."""
        ds = float(self.source.level_downsamples[level])
        ts = self.tile_size * ds
        ncol, nrow = self.level_tile_grid(level)
        c0, c1 = max(0, int(x0 // ts)), min(ncol - 1, int((x1 - 1e-9) // ts))
        r0, r1 = max(0, int(y0 // ts)), min(nrow - 1, int((y1 - 1e-9) // ts))
        return [(level, c, r) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]

    # ----------------------------------------------------------------- cache
    def get(self, key: TileKey) -> QImage | None:
        img = self._cache.get(key)
        if img is not None:
            self._cache.move_to_end(key)
        return img

    def has(self, key: TileKey) -> bool:
        return key in self._cache or key in self._failed

    def _put(self, key: TileKey, img: QImage) -> None:
        if key in self._cache:
            return
        self._cache[key] = img
        self._cache_used += img.sizeInBytes()
        while self._cache_used > self.cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cache_used -= old.sizeInBytes()

    @property
    def cache_used_bytes(self) -> int:
        return self._cache_used

    # ----------------------------------------------------------------- requests
    def request(self, wanted: Iterable[TileKey]) -> int:
        """Make ``wanted`` (in priority order) the tiles to load; forget queued requests for others.

        Returns the number of tiles still missing (being read or queued).
        """
        if self._closed:
            return 0
        wanted = [k for k in wanted if not self.has(k)]
        with self._lock:
            self.generation += 1
            old = set(self._queue)
            self._queue = [k for k in wanted if k not in self._in_flight]
            self.dropped += len(old - set(self._queue))
            start = min(self.pool.maxThreadCount(), len(self._queue)) - self._workers
            self._workers += max(0, start)
        for _ in range(max(0, start)):
            self.pool.start(_TileJob(self))
        return len(wanted)

    def request_thumbnail(self) -> None:
        if self.thumbnail is None and not self._thumb_pending and not self._closed:
            self._thumb_pending = True
            self.pool.start(_ThumbJob(self, self._thumbnail_px), priority=10_000)

    @property
    def busy(self) -> bool:
        with self._lock:
            return bool(self._queue or self._in_flight) or self._thumb_pending

    def _on_job_tileLoaded(self, key: TileKey, generation: int, img: QImage) -> None:
        with self._lock:
            self._in_flight.discard(key)
        if self._closed or generation < self._source_generation:
            return
        if img.isNull():
            self._failed.add(key)
        else:
            self._put(key, img)
        self.tileReady.emit(key)

    def _on_job_thumbnailLoaded(self, img: QImage | None) -> None:
        self._thumb_pending = False
        if self._closed:
            return
        self.thumbnail = img if img is not None and not img.isNull() else None
        self.thumbnailReady.emit()

    def replace_source(self, source: Any) -> None:
        """Read the same tiles from ``source`` from now on (same geometry, other pixels, e.g. the
        stain view): the cache is emptied and tiles still being read from the old source are
        dropped when they arrive."""
        with self._lock:
            self.source = source
            self.generation += 1
            self._source_generation = self.generation
            self._queue = []
        self._cache.clear()
        self._cache_used = 0
        self._failed.clear()
        self.thumbnail = None
        self._thumb_pending = False
        self.request_thumbnail()

    def close(self, wait_ms: int = 5000) -> None:
        """Stop loading: drop queued jobs and join the running ones."""
        with self._lock:
            self._closed = True
            self._queue = []
        self.pool.waitForDone(wait_ms)
