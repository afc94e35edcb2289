"""Whole-slide reading: ``open_slide()`` returns a thread-safe :class:`SlideReader`.

Two backends sit behind one reader. **OpenSlide** serves every format it reads (Aperio SVS,
Hamamatsu NDPI, MIRAX, Leica SCN, Ventana BIF, generic tiled TIFF, DICOM, ...). **Pillow** is the
fallback for plain images (PNG, JPEG, TIFF, BMP) that OpenSlide rejects; Pillow's decompression-bomb
guard stays on, so an image above ``PIL.Image.MAX_IMAGE_PIXELS`` is refused with a
:class:`~crc_core.errors.SlideError`.

Units and frames: every coordinate at this API is in **level-0 pixels** unless its name says
otherwise (``lv_`` = pixels of the named level, ``col``/``row`` = tile indices at a level). Sizes:
``(w, h)``; arrays are ``(h, w, 3)`` uint8 RGB with transparent or out-of-slide areas composited on
white. ``mpp`` is ``(x, y)`` micrometres per level-0 pixel, or ``None`` when the file does not say
(never guessed); :meth:`SlideReader.set_mpp` sets a user override.

Threading: all read methods may be called from many threads at once. OpenSlide handles are
thread-safe for reads; the Pillow backend decodes once under a lock and then serves crops of an
immutable array. Decoded tiles (:meth:`SlideReader.read_tile`) sit in an LRU cache bounded in bytes
(:class:`TileCache`). Arrays returned from the cache are read-only; copy them before writing.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from crc_core.errors import ConfigError, SlideError
from crc_core.slide_backends import (
    _ACCEPTED,
    MAX_REGION_PIXELS,
    PILLOW_FORMATS,
    WSI_SUFFIXES,
    Backend,
    _ArrayBackend,
    _check_tiff_truncation,
    _openslide_error_types,
    _OpenSlideBackend,
    _PillowBackend,
    _positive_float,
)

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "open_array",
    "MAX_REGION_PIXELS",
    "PILLOW_FORMATS",
    "SlideReader",
    "TileCache",
    "open_slide",
]

#: Default byte budget of a reader's decoded-tile cache (overridable with ``CRC_TILE_CACHE_MB``).
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024


def _env_cache_bytes() -> int:
    raw = os.environ.get("CRC_TILE_CACHE_MB")
    if not raw:
        return DEFAULT_CACHE_BYTES
    try:
        return max(0, int(float(raw) * 1024 * 1024))
    except ValueError:
        return DEFAULT_CACHE_BYTES


# ----------------------------------------------------------------------------------------------
# Tile cache
# ----------------------------------------------------------------------------------------------


class TileCache:
    """Thread-safe LRU of numpy arrays bounded by their total ``nbytes``.

    Parameters
    ----------
    max_bytes
        Byte budget; ``0`` disables caching. An item larger than the budget is not stored.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[Any, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._max = max(0, int(max_bytes))
        self.hits = 0
        self.misses = 0

    @property
    def max_bytes(self) -> int:
        return self._max

    @property
    def current_bytes(self) -> int:
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def get(self, key: Any) -> np.ndarray | None:
        """Return the cached array (marking it recently used) or ``None``."""
        with self._lock:
            arr = self._items.get(key)
            if arr is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return arr

    def put(self, key: Any, arr: np.ndarray) -> None:
        """Store ``arr`` (made read-only) and evict least-recently-used items over the budget."""
        arr.flags.writeable = False
        size = int(arr.nbytes)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= int(old.nbytes)
            if size > self._max:
                return
            self._items[key] = arr
            self._bytes += size
            self._evict()

    def resize(self, max_bytes: int) -> None:
        """Change the byte budget, evicting as needed."""
        with self._lock:
            self._max = max(0, int(max_bytes))
            self._evict()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def _evict(self) -> None:
        while self._bytes > self._max and self._items:
            _, arr = self._items.popitem(last=False)
            self._bytes -= int(arr.nbytes)


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Public reader
# ----------------------------------------------------------------------------------------------


class SlideReader:
    """A whole-slide image opened for reading (see module docstring for frames and threading).

    Create it with :func:`open_slide`. Use it as a context manager or call :meth:`close`.

    Attributes
    ----------
    path : Path
        The slide file.
    backend : {"openslide", "pillow"}
        Which library reads it.
    format : str
        OpenSlide's format name (``"aperio"``, ``"generic-tiff"``, ...) or the Pillow format
        in lower case.
    vendor : str or None
        ``openslide.vendor`` (OpenSlide backend) or ``None``.
    """

    def __init__(
        self,
        path: Path,
        backend: _OpenSlideBackend | _PillowBackend | _ArrayBackend,
        cache_bytes: int,
    ) -> None:
        self.path = path
        self._b = backend
        self.backend: Backend = backend.name
        self.format: str = backend.format
        self.level_dimensions: list[tuple[int, int]] = list(backend.level_dimensions)  # (w, h)
        self.level_downsamples: list[float] = list(backend.level_downsamples)
        self.level_count = len(self.level_dimensions)
        self.dimensions: tuple[int, int] = self.level_dimensions[0]
        self.properties: dict[str, str] = dict(backend.properties)
        self.associated_names: list[str] = list(backend.associated_names)
        self.vendor: str | None = self.properties.get("openslide.vendor") or None
        self.objective_power: float | None = _positive_float(
            self.properties.get("openslide.objective-power")
        )
        if isinstance(backend, (_PillowBackend, _ArrayBackend)):
            self._file_mpp = backend.mpp
        else:
            mx = _positive_float(self.properties.get("openslide.mpp-x"))
            my = _positive_float(self.properties.get("openslide.mpp-y"))
            self._file_mpp = (mx, my) if mx is not None and my is not None else None
        self._user_mpp: tuple[float, float] | None = None
        self.cache = TileCache(cache_bytes)
        self._state = threading.Condition()
        self._active = 0
        self._closed = False
        self._thumbs: OrderedDict[int, np.ndarray] = OrderedDict()
        self._fingerprint: str | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.dimensions
        return (
            f"SlideReader({str(self.path)!r}, backend={self.backend!r}, {w}x{h}, "
            f"levels={self.level_count})"
        )

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release the file; waits for reads in progress. Later reads raise SlideError."""
        with self._state:
            if self._closed:
                return
            self._closed = True
            while self._active:
                self._state.wait()
        self.cache.clear()
        self._thumbs.clear()
        self._b.close()

    def _enter(self) -> None:
        with self._state:
            if self._closed:
                raise SlideError(f"{self.path}: slide is closed")
            self._active += 1

    def _exit(self) -> None:
        with self._state:
            self._active -= 1
            if not self._active:
                self._state.notify_all()

    # -- metadata ------------------------------------------------------------------------------

    @property
    def mpp(self) -> tuple[float, float] | None:
        """(x, y) µm per level-0 pixel: user override if set, else the file's value, else None."""
        return self._user_mpp if self._user_mpp is not None else self._file_mpp

    @property
    def file_mpp(self) -> tuple[float, float] | None:
        """mpp as the file states it (ignores :meth:`set_mpp`)."""
        return self._file_mpp

    @property
    def mpp_source(self) -> Literal["file", "user"] | None:
        if self._user_mpp is not None:
            return "user"
        return "file" if self._file_mpp is not None else None

    def set_mpp(self, mpp: float | tuple[float, float] | None) -> None:
        """Set a user mpp override (a number or ``(x, y)``); ``None`` restores the file's value."""
        if mpp is None:
            self._user_mpp = None
            return
        vals = (mpp, mpp) if isinstance(mpp, (int, float)) else tuple(mpp)
        if len(vals) != 2:
            raise ConfigError(f"mpp must be one number or (x, y); got {mpp!r}")
        x, y = _positive_float(vals[0]), _positive_float(vals[1])
        if x is None or y is None:
            raise ConfigError(f"mpp must be positive finite micrometres per pixel; got {mpp!r}")
        self._user_mpp = (x, y)

    def associated_image(self, name: str) -> np.ndarray:
        """Associated image (label, macro, thumbnail, ...) as (H, W, 3) uint8 RGB."""
        if name not in self.associated_names:
            raise SlideError(
                f"{self.path}: no associated image {name!r}; available: "
                f"{', '.join(self.associated_names) or 'none'}"
            )
        self._enter()
        try:
            return self._b.associated(name)
        finally:
            self._exit()

    def best_level_for_downsample(self, downsample: float) -> int:
        """Highest-index level whose downsample does not exceed ``downsample`` (0.1 % tolerance)."""
        best = 0
        for i, ds in enumerate(self.level_downsamples):
            if ds <= downsample * 1.001:
                best = i
        return best

    def _check_level(self, level: int) -> None:
        if not isinstance(level, (int, np.integer)) or not 0 <= level < self.level_count:
            raise SlideError(
                f"{self.path}: level {level} does not exist; levels are 0..{self.level_count - 1}"
            )

    # -- pixels --------------------------------------------------------------------------------

    def read_region(self, l0_xy: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Read ``size`` = (w, h) pixels of ``level`` whose top-left is at level-0 ``l0_xy``.

        Returns
        -------
        np.ndarray
            (h, w, 3) uint8 RGB; outside the slide and transparent areas are white.
        """
        self._check_level(level)
        x, y = int(l0_xy[0]), int(l0_xy[1])
        w, h = int(size[0]), int(size[1])
        if w <= 0 or h <= 0:
            raise SlideError(f"{self.path}: region size must be positive, got {w}x{h}")
        if w * h > MAX_REGION_PIXELS:
            raise SlideError(
                f"{self.path}: region {w}x{h} exceeds {MAX_REGION_PIXELS:,} px; read it in tiles"
            )
        self._enter()
        try:
            return self._b.read(int(level), (x, y), (w, h))
        except MemoryError:
            raise SlideError(f"{self.path}: out of memory reading a {w}x{h} region") from None
        finally:
            self._exit()

    def tile_grid(self, level: int, tile_size: int = 256) -> tuple[int, int]:
        """(cols, rows) of ``tile_size`` tiles covering ``level``."""
        self._check_level(level)
        w, h = self.level_dimensions[level]
        return (-(-w // tile_size), -(-h // tile_size))

    def read_tile(self, level: int, col: int, row: int, tile_size: int = 256) -> np.ndarray:
        """Tile (col, row) of a ``tile_size`` grid at ``level``, cached in the byte-bounded LRU.

        Edge tiles are clipped to the level (smaller than ``tile_size``). The returned array is
        shared with the cache and read-only.
        """
        if tile_size <= 0:
            raise SlideError(f"tile size must be positive, got {tile_size}")
        cols, rows = self.tile_grid(level, tile_size)
        if not (0 <= col < cols and 0 <= row < rows):
            raise SlideError(
                f"{self.path}: tile ({col}, {row}) is outside level {level}'s {cols}x{rows} grid"
            )
        key = (int(level), int(col), int(row), int(tile_size))
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        lw, lh = self.level_dimensions[level]
        lv_x, lv_y = col * tile_size, row * tile_size
        w, h = min(tile_size, lw - lv_x), min(tile_size, lh - lv_y)
        ds = self.level_downsamples[level]
        l0 = (int(round(lv_x * ds)), int(round(lv_y * ds)))
        arr = self.read_region(l0, level, (w, h))
        self.cache.put(key, arr)
        return arr

    def iter_level_chunks(
        self, level: int, chunk: int = 2048
    ) -> Iterator[tuple[int, int, np.ndarray]]:
        """Yield ``(lv_x, lv_y, rgb)`` chunks covering a whole level in raster order (uncached)."""
        self._check_level(level)
        lw, lh = self.level_dimensions[level]
        ds = self.level_downsamples[level]
        for lv_y in range(0, lh, chunk):
            for lv_x in range(0, lw, chunk):
                w, h = min(chunk, lw - lv_x), min(chunk, lh - lv_y)
                l0 = (int(round(lv_x * ds)), int(round(lv_y * ds)))
                yield lv_x, lv_y, self.read_region(l0, level, (w, h))

    def thumbnail(self, max_px: int = 1024) -> np.ndarray:
        """Whole slide scaled so its longer side is at most ``max_px``; (h, w, 3) uint8 RGB.

        Reads the level nearest above the target size in chunks (memory stays bounded) and keeps
        the last few thumbnails.
        """
        max_px = int(max_px)
        if max_px <= 0:
            raise SlideError(f"thumbnail size must be positive, got {max_px}")
        with self._state:
            cached = self._thumbs.get(max_px)
        if cached is not None:
            return cached
        W, H = self.dimensions
        scale = min(1.0, max_px / max(W, H))
        tw, th = max(1, round(W * scale)), max(1, round(H * scale))
        level = self.best_level_for_downsample(1.0 / scale if scale > 0 else 1.0)
        lw, lh = self.level_dimensions[level]
        if (lw, lh) == (tw, th):
            out = self.read_region((0, 0), level, (lw, lh))
        else:
            sx, sy = tw / lw, th / lh
            canvas = Image.new("RGB", (tw, th), (255, 255, 255))
            chunk = 2048
            for lv_x, lv_y, arr in self.iter_level_chunks(level, chunk):
                tx0, ty0 = math.floor(lv_x * sx), math.floor(lv_y * sy)
                tx1 = math.floor((lv_x + arr.shape[1]) * sx) if lv_x + arr.shape[1] < lw else tw
                ty1 = math.floor((lv_y + arr.shape[0]) * sy) if lv_y + arr.shape[0] < lh else th
                if tx1 <= tx0 or ty1 <= ty0:
                    continue
                part = Image.fromarray(arr).resize((tx1 - tx0, ty1 - ty0), Image.Resampling.BOX)
                canvas.paste(part, (tx0, ty0))
            out = np.asarray(canvas, dtype=np.uint8).copy()
        out.flags.writeable = False
        with self._state:
            self._thumbs[max_px] = out
            while len(self._thumbs) > 4:
                self._thumbs.popitem(last=False)
        return out

    # -- identity and summary ------------------------------------------------------------------

    def fingerprint(self) -> str:
        """Cheap identity of the file: sha256 of its size and first and last MiB (hex).

        For an array slide (:func:`open_array`): sha256 of its shape and pixels.
        """
        if self._fingerprint is None and isinstance(self._b, _ArrayBackend):
            self._fingerprint = self._b.fingerprint()
        if self._fingerprint is None:
            mib = 1 << 20
            try:
                size = self.path.stat().st_size
                h = hashlib.sha256(f"{size}:".encode())
                with open(self.path, "rb") as fh:
                    h.update(fh.read(mib))
                    if size > mib:
                        fh.seek(max(mib, size - mib))
                        h.update(fh.read(mib))
            except OSError as exc:
                raise SlideError(f"{self.path}: cannot read file for fingerprint: {exc}") from None
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def info(self, properties: bool = False) -> dict[str, Any]:
        """Plain-JSON summary (what ``crc info --json`` prints)."""
        mpp = self.mpp
        d: dict[str, Any] = {
            "path": str(self.path),
            "name": self.path.name,
            "backend": self.backend,
            "format": self.format,
            "vendor": self.vendor,
            "width": self.dimensions[0],
            "height": self.dimensions[1],
            "level_count": self.level_count,
            "levels": [
                {"level": i, "width": w, "height": h, "downsample": ds}
                for i, ((w, h), ds) in enumerate(
                    zip(self.level_dimensions, self.level_downsamples, strict=True)
                )
            ],
            "mpp": None if mpp is None else (mpp[0] + mpp[1]) / 2,
            "mpp_x": None if mpp is None else mpp[0],
            "mpp_y": None if mpp is None else mpp[1],
            "mpp_source": self.mpp_source,
            "objective_power": self.objective_power,
            "associated_images": [],
            "fingerprint": self.fingerprint(),
        }
        for name in self.associated_names:
            entry: dict[str, Any] = {"name": name}
            try:
                arr = self.associated_image(name)
                entry["width"], entry["height"] = int(arr.shape[1]), int(arr.shape[0])
            except SlideError as exc:
                entry["error"] = str(exc)
            d["associated_images"].append(entry)
        if properties:
            d["properties"] = dict(self.properties)
        return d


def open_slide(path: str | os.PathLike[str], *, cache_bytes: int | None = None) -> SlideReader:
    """Open a whole-slide image or plain image for reading.

    Parameters
    ----------
    path
        Slide file. OpenSlide formats first; PNG/JPEG/TIFF/BMP through Pillow when OpenSlide
        rejects them.
    cache_bytes
        Byte budget of the decoded-tile LRU (default :data:`DEFAULT_CACHE_BYTES`, or the
        ``CRC_TILE_CACHE_MB`` environment variable).

    Raises
    ------
    SlideError
        Missing file, folder, empty file, truncated or corrupt slide, unsupported or oversized
        image.
    """
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise SlideError(f"{p}: slide file not found")
    if p.is_dir():
        raise SlideError(f"{p}: is a folder, not a slide file; {_ACCEPTED}")
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise SlideError(f"{p}: cannot read file: {exc.strerror or exc}") from None
    if size == 0:
        raise SlideError(f"{p}: file is empty (0 bytes); not a slide")
    budget = _env_cache_bytes() if cache_bytes is None else int(cache_bytes)

    import openslide

    suffix = p.suffix.lower()
    try:
        fmt = openslide.OpenSlide.detect_format(str(p))
    except _openslide_error_types():
        fmt = None
    backend: _OpenSlideBackend | _PillowBackend
    if fmt is not None:
        _check_tiff_truncation(p, size)
        backend = _OpenSlideBackend(p, fmt)
    elif suffix in WSI_SUFFIXES:
        _check_tiff_truncation(p, size)
        raise SlideError(
            f"{p}: not a readable {suffix} slide (OpenSlide does not recognise it: corrupt, "
            f"truncated or not a slide); {_ACCEPTED}"
        )
    else:
        backend = _PillowBackend(p)
    reader = SlideReader(p, backend, budget)
    # OpenSlide: probe one pixel of the smallest level so a broken pyramid fails here with a clear
    # message. Pillow: decode now (bounded by the bomb guard) so truncated data fails at open.
    try:
        reader.read_region((0, 0), reader.level_count - 1, (1, 1))
    except SlideError:
        reader.close()
        raise
    return reader


def open_array(
    arr: np.ndarray,
    *,
    mpp: float | tuple[float, float] | None = None,
    name: str = "array",
    cache_bytes: int | None = None,
) -> SlideReader:
    """Serve an in-memory image as a one-level slide (backend ``"array"``).

    For tests and generated content (tiatoolbox's ``VirtualWSIReader`` plays the same part).

    Parameters
    ----------
    arr
        (h, w, 3) RGB, (h, w, 4) RGBA (composited on white) or (h, w) grey, uint8. Copied.
    mpp
        µm per pixel, one number or ``(x, y)``; ``None`` = unknown.
    name
        Shown as the reader's ``path`` in messages and ``info()``.
    """
    budget = _env_cache_bytes() if cache_bytes is None else int(cache_bytes)
    reader = SlideReader(Path(name), _ArrayBackend(arr, None, name), budget)
    if mpp is not None:
        reader.set_mpp(mpp)
        reader._file_mpp, reader._user_mpp = reader._user_mpp, None  # stated by the caller
    return reader

