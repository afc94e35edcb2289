"""Synthetic pyramidal slides: tiled JPEG pyramidal TIFFs that OpenSlide reads as ``generic-tiff``.

Used by tests, the bundled demo and the benchmarks to get slides of any size (50,000 px and more on
a side) with a known content. The writer never holds the whole image: level 0 is produced one band
of tile rows at a time from a *tile source*; each tile is JPEG-encoded and streamed into the TIFF
and halved (2x2 mean) into the next level's band, cascading down the pyramid. Lower-level tiles are
JPEG-encoded as soon as their band is complete and spooled to a temporary file next to the output
until level 0 is written; memory stays at a few tile rows per level.

Tile sources are callables ``source(l0_x, l0_y, w, h) -> (h, w, 3) uint8 RGB`` in level-0 pixels.
Two are provided: :class:`TissuePattern` (fast tissue-like blobs with texture and nuclei) and
:class:`TileMosaic` (real RGB tiles, e.g. EBHI, laid in a grid, with :meth:`TileMosaic.tile_at`
telling which tile sits where).

Layout written (what the OpenSlide generic-tiff driver expects): page 0 is level 0, tiled
``tile x tile``, JPEG (YCbCr 2x2), with X/YResolution in pixels per centimetre so OpenSlide reports
``openslide.mpp-x/y``; each further page is a half-size level with ``subfiletype=1`` (reduced
image).
"""

from __future__ import annotations

import functools
import math
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from crc_core.atomic import atomic_path
from crc_core.errors import ConfigError
from crc_core.jobs import Progress, run_job

__all__ = [
    "TileSource",
    "TissuePattern",
    "TileMosaic",
    "pyramid_levels",
    "pyramid_tiff_job",
    "write_pyramid_tiff",
]

TileSource = Callable[[int, int, int, int], np.ndarray]
_WHITE_BG = (242, 240, 243)


# ----------------------------------------------------------------------------------------------
# Tile sources
# ----------------------------------------------------------------------------------------------


def _hash2(a: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic integer hash of two int arrays -> uint32 (vectorised, no state)."""
    h = (a.astype(np.uint64) * np.uint64(0x9E3779B1)) ^ (
        b.astype(np.uint64) * np.uint64(0x85EBCA77)
    )
    h ^= np.uint64(seed * 0xC2B2AE3D + 0x27D4EB2F)
    h ^= h >> np.uint64(15)
    h *= np.uint64(0x2C1B3C6D)
    h ^= h >> np.uint64(12)
    return (h & np.uint64(0xFFFFFFFF)).astype(np.uint32)


class _BlobField:
    """Smooth low-frequency field in level-0 px; ``> threshold`` is tissue (blobs ~``scale`` px)."""

    def __init__(self, seed: int, scale: float = 6000.0) -> None:
        rng = np.random.default_rng(seed)
        n = 6
        self.freq = rng.uniform(0.6, 1.6, size=(n, 2)) * (2 * math.pi / scale)
        self.freq *= rng.choice([-1.0, 1.0], size=(n, 2))
        self.phase = rng.uniform(0, 2 * math.pi, size=n)
        self.amp = rng.uniform(0.5, 1.0, size=n)

    def __call__(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Field at coordinates ``xs`` (1-D, columns) x ``ys`` (1-D, rows) -> (len(ys), len(xs))."""
        out = np.zeros((ys.size, xs.size), dtype=np.float32)
        for (fx, fy), ph, a in zip(self.freq, self.phase, self.amp, strict=True):
            # sin(fx x + fy y + ph) = sin(fx x) cos(fy y + ph) + cos(fx x) sin(fy y + ph)
            sx, cx = np.sin(fx * xs), np.cos(fx * xs)
            sy, cy = np.sin(fy * ys + ph), np.cos(fy * ys + ph)
            out += a * (np.outer(cy, sx) + np.outer(sy, cx)).astype(np.float32)
        return out / float(self.amp.sum())


class TissuePattern:
    """Fast procedural H&E-like pattern: pink tissue blobs with texture and purple nuclei on white.

    A pure function of level-0 coordinates (same pixels whatever the call's region), so regions can
    be compared exactly. Texture comes from a few pre-rendered periodic 1024 px textures picked per
    1024 px block; the tissue outline from a smooth field sampled every 4 px.

    Parameters
    ----------
    seed
        Changes the blob layout and textures.
    tissue_fraction
        Roughly the share of the slide covered by tissue (0..1).
    """

    period = 1024
    mask_step = 4

    def __init__(self, seed: int = 0, tissue_fraction: float = 0.5) -> None:
        self.seed = int(seed)
        self.field = _BlobField(self.seed)
        # threshold of a roughly symmetric field in [-1, 1] for the wanted coverage
        self.threshold = float(np.clip(0.5 - tissue_fraction, -0.49, 0.49)) * 0.6
        self.textures = _textures(self.seed)
        self.background = np.array(_WHITE_BG, dtype=np.uint8)

    @staticmethod
    def _texture(rng: np.random.Generator) -> np.ndarray:
        p = TissuePattern.period
        yy, xx = np.mgrid[0:p, 0:p].astype(np.float32)
        # stroma: eosin pink with periodic fibres (integer frequencies keep the texture periodic)
        fib = np.zeros((p, p), np.float32)
        ax = np.arange(p, dtype=np.float32) * np.float32(2 * np.pi / p)
        for _ in range(5):
            kx, ky = rng.integers(-12, 13, size=2)
            ph = rng.uniform(0, 6.3)
            # sin(kx x + ky y + ph) separably: outer products are cheap, a 2-D sin is not
            sx, cx = np.sin(kx * ax), np.cos(kx * ax)
            sy, cy = np.sin(ky * ax + ph), np.cos(ky * ax + ph)
            fib += np.outer(cy, sx) + np.outer(sy, cx)
        fib = fib / 5.0
        base = np.array([232, 160, 196], np.float32)
        img = base[None, None, :] + fib[..., None] * np.array([10, 22, 14], np.float32)
        # noise so JPEG is not trivial
        img += rng.normal(0, 6, size=(p, p, 1)).astype(np.float32)
        # nuclei: dark purple discs on a jittered 24 px grid (each disc inside its cell)
        cell = 24
        n = p // cell
        present = rng.random((n, n)) < 0.45
        cy = np.arange(n)[:, None] * cell + rng.integers(7, cell - 7, size=(n, n))
        cx = np.arange(n)[None, :] * cell + rng.integers(7, cell - 7, size=(n, n))
        rad = rng.uniform(3.0, 6.5, size=(n, n))
        shade = rng.uniform(0.75, 1.0, size=(n, n))
        gy = np.minimum(np.arange(p) // cell, n - 1)
        gi, gj = gy[:, None], gy[None, :]
        dy = (yy - cy[gi, gj]) * 1.3
        dx = xx - cx[gi, gj]
        inside = present[gi, gj] & (dx * dx + dy * dy <= rad[gi, gj] ** 2)
        nuc = np.array([95, 55, 140], np.float32)[None, None, :] * shade[gi, gj][..., None]
        img = np.where(inside[..., None], nuc, img)
        tex = np.clip(img, 0, 255).astype(np.uint8)
        return np.tile(tex, (2, 2, 1))  # 2x2 so any crop of <= period is one slice

    def _mask(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        s = self.mask_step
        gx0, gy0 = x // s, y // s
        gx1, gy1 = -(-(x + w) // s), -(-(y + h) // s)
        xs = (np.arange(gx0, gx1, dtype=np.float64) + 0.5) * s
        ys = (np.arange(gy0, gy1, dtype=np.float64) + 0.5) * s
        coarse = self.field(xs, ys) > self.threshold
        full = np.repeat(np.repeat(coarse, s, axis=0), s, axis=1)
        return full[y - gy0 * s : y - gy0 * s + h, x - gx0 * s : x - gx0 * s + w]

    def tissue_at(self, l0_x: float, l0_y: float) -> bool:
        """Whether the pattern has tissue at a level-0 point."""
        return bool(self._mask(int(l0_x), int(l0_y), 1, 1)[0, 0])

    def tissue_grid(self, width: int, height: int, step: int) -> np.ndarray:
        """Tissue (True) or background of the ``step``-px cells covering ``width x height`` px.

        Each cell is judged at the mask sample nearest its centre; shape ``(ceil(h/step),
        ceil(w/step))``. The known answer for tissue-detection checks on a written slide.
        """
        s = self.mask_step
        cx = np.arange(0, width, step, dtype=np.float64) + step / 2
        cy = np.arange(0, height, step, dtype=np.float64) + step / 2
        return self.field((cx // s + 0.5) * s, (cy // s + 0.5) * s) > self.threshold

    def __call__(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        out = np.empty((h, w, 3), dtype=np.uint8)
        out[:] = self.background
        mask = self._mask(x, y, w, h)
        if not mask.any():
            return out
        p = self.period
        for by in range(y // p, -(-(y + h) // p)):
            for bx in range(x // p, -(-(x + w) // p)):
                rx0, ry0 = max(x, bx * p), max(y, by * p)
                rx1, ry1 = min(x + w, (bx + 1) * p), min(y + h, (by + 1) * p)
                k = int(_hash2(np.array([bx]), np.array([by]), self.seed)[0]) % len(self.textures)
                tex = self.textures[k]
                ox, oy = rx0 % p, ry0 % p
                crop = tex[oy : oy + ry1 - ry0, ox : ox + rx1 - rx0]
                m = mask[ry0 - y : ry1 - y, rx0 - x : rx1 - x]
                dst = out[ry0 - y : ry1 - y, rx0 - x : rx1 - x]
                np.copyto(dst, crop, where=m[..., None])
        return out


@functools.lru_cache(maxsize=8)
def _textures(seed: int) -> tuple[np.ndarray, ...]:
    """The read-only textures of ``TissuePattern(seed)`` (shared between instances)."""
    rng = np.random.default_rng(seed + 1)
    out = tuple(TissuePattern._texture(rng) for _ in range(4))
    for t in out:
        t.flags.writeable = False
    return out


class TileMosaic:
    """Real RGB tiles (all the same size) laid in a grid to make a slide of real tissue.

    Cell ``(col, row)`` holds ``tiles[index]`` where the index comes from ``layout(col, row)`` when
    given (return ``-1`` for background) or else a seeded hash; with ``tissue_fraction < 1`` a
    smooth blob field leaves background cells so the slide looks like tissue on glass.

    Parameters
    ----------
    tiles
        Sequence of (h, w, 3) uint8 arrays of identical shape.
    seed
        Seeds the default layout.
    tissue_fraction
        Share of cells filled by the default layout (1.0 = every cell).
    layout
        Optional ``layout(col, row) -> int`` choosing the tile of each cell (``-1`` = background).
    """

    def __init__(
        self,
        tiles: Sequence[np.ndarray],
        *,
        seed: int = 0,
        tissue_fraction: float = 1.0,
        layout: Callable[[int, int], int] | None = None,
        background: tuple[int, int, int] = _WHITE_BG,
    ) -> None:
        if not tiles:
            raise ConfigError("TileMosaic needs at least one RGB tile")
        shapes = {tuple(np.asarray(t).shape) for t in tiles}
        if len(shapes) != 1:
            raise ConfigError(
                f"TileMosaic tiles must all have the same shape; got {sorted(shapes)}"
            )
        shape = shapes.pop()
        if len(shape) != 3 or shape[2] != 3:
            raise ConfigError(f"TileMosaic tiles must be (h, w, 3) RGB arrays; got {shape}")
        self.bank = np.stack([np.asarray(t, dtype=np.uint8) for t in tiles])  # (n, th, tw, 3)
        self.cell_h, self.cell_w = int(shape[0]), int(shape[1])
        self.seed = int(seed)
        self.tissue_fraction = float(tissue_fraction)
        self.layout = layout
        self.field = _BlobField(self.seed, scale=self.cell_w * 30.0)
        self.threshold = float(np.clip(0.5 - self.tissue_fraction, -0.49, 0.49)) * 0.6
        self.background = np.array(background, dtype=np.uint8)

    @classmethod
    def from_files(cls, paths: Sequence[str | os.PathLike[str]], **kwargs: object) -> TileMosaic:
        """Load image files (Pillow) as the tile bank; all must have the same size."""
        from PIL import Image

        tiles = []
        for p in paths:
            with Image.open(p) as im:
                tiles.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
        return cls(tiles, **kwargs)  # type: ignore[arg-type]

    def cell_index(self, col: int, row: int) -> int:
        """Tile index in cell (col, row), or -1 for background."""
        return int(self._indices(np.array([col]), np.array([row]))[0, 0])

    def tile_at(self, l0_x: float, l0_y: float) -> int:
        """Tile index under a level-0 point, or -1 for background."""
        return self.cell_index(int(l0_x // self.cell_w), int(l0_y // self.cell_h))

    def _indices(self, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(len(rows), len(cols)) int array of tile indices (-1 = background)."""
        if self.layout is not None:
            return np.array(
                [[int(self.layout(int(c), int(r))) for c in cols] for r in rows], dtype=np.int64
            )
        cc, rr = np.meshgrid(cols, rows)
        idx = (_hash2(cc, rr, self.seed) % np.uint32(len(self.bank))).astype(np.int64)
        if self.tissue_fraction < 1.0:
            xs = (cols.astype(np.float64) + 0.5) * self.cell_w
            ys = (rows.astype(np.float64) + 0.5) * self.cell_h
            idx[self.field(xs, ys) <= self.threshold] = -1
        return idx

    def __call__(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        out = np.empty((h, w, 3), dtype=np.uint8)
        out[:] = self.background
        ch, cw = self.cell_h, self.cell_w
        cols = np.arange(x // cw, -(-(x + w) // cw))
        rows = np.arange(y // ch, -(-(y + h) // ch))
        idx = self._indices(cols, rows)
        for j, r in enumerate(rows):
            for i, c in enumerate(cols):
                k = idx[j, i]
                if k < 0:
                    continue
                rx0, ry0 = max(x, c * cw), max(y, r * ch)
                rx1, ry1 = min(x + w, (c + 1) * cw), min(y + h, (r + 1) * ch)
                out[ry0 - y : ry1 - y, rx0 - x : rx1 - x] = self.bank[
                    k, ry0 - r * ch : ry1 - r * ch, rx0 - c * cw : rx1 - c * cw
                ]
        return out


# ----------------------------------------------------------------------------------------------
# Writer
# ----------------------------------------------------------------------------------------------


def pyramid_levels(
    width: int, height: int, tile: int = 256, levels: int | None = None
) -> list[tuple[int, int]]:
    """(w, h) of each level: level k+1 is ceil(level k / 2); by default until it fits one tile."""
    dims = [(int(width), int(height))]
    while True:
        w, h = dims[-1]
        if levels is not None and len(dims) >= levels:
            break
        if levels is None and max(w, h) <= tile:
            break
        if w == 1 and h == 1:
            break
        dims.append(((w + 1) // 2, (h + 1) // 2))
    return dims


def _halve(band: np.ndarray) -> np.ndarray:
    """2x2 box mean of an (h, w, 3) uint8 band -> (ceil(h/2), ceil(w/2), 3); odd edges average
    the pixels present (Pillow ``reduce``, C speed)."""
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(band)).reduce(2), dtype=np.uint8)


class _Level:
    """Accumulates rows of one level and emits full bands of tile rows."""

    def __init__(self, width: int, height: int, tile: int) -> None:
        self.width, self.height, self.tile = width, height, tile
        self.rows_done = 0  # rows already emitted
        self.parts: list[np.ndarray] = []
        self.pending = 0
        self.index: list[tuple[int, int]] = []  # (offset, length) of each encoded tile in the spool

    def add(self, rows: np.ndarray) -> list[np.ndarray]:
        """Add rows; return complete bands (tile rows, last one possibly shorter)."""
        self.parts.append(rows)
        self.pending += rows.shape[0]
        bands = []
        while self.pending >= self.tile or (
            self.pending and self.rows_done + self.pending >= self.height
        ):
            buf = np.concatenate(self.parts, axis=0) if len(self.parts) > 1 else self.parts[0]
            n = min(self.tile, self.pending, self.height - self.rows_done)
            bands.append(buf[:n])
            rest = buf[n:]
            self.parts = [rest] if rest.shape[0] else []
            self.pending = rest.shape[0]
            self.rows_done += n
        return bands


def _encode_tile(tile_arr: np.ndarray, tile: int, quality: int) -> bytes:
    """One tile as a baseline YCbCr 4:2:0 JPEG stream (imagecodecs, else Pillow's libjpeg).

    Pillow is the fallback for machines without imagecodecs (the GPU check machine): both write
    a complete JPEG stream per tile, which libtiff/OpenSlide decode alike.
    """
    h, w = tile_arr.shape[:2]
    if h != tile or w != tile:  # pad edge tiles by replication (avoids dark JPEG ringing)
        tile_arr = np.pad(tile_arr, ((0, tile - h), (0, tile - w), (0, 0)), mode="edge")
    try:
        import imagecodecs
    except ImportError:
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(tile_arr), "RGB").save(
            buf, "JPEG", quality=quality, subsampling="4:2:0")
        return buf.getvalue()
    return bytes(
        imagecodecs.jpeg_encode(
            np.ascontiguousarray(tile_arr),
            level=quality,
            colorspace="RGB",
            outcolorspace="YCBCR",
            subsampling=(2, 2),
        )
    )


def _pillow_jpeg_encode(data: Any, level: int = 85, **_: Any) -> bytes:
    arr = np.asarray(data)
    return _encode_tile(arr, max(arr.shape[0], arr.shape[1]), int(level))


def _ensure_jpeg_compressor(tifffile: Any) -> None:
    """Without imagecodecs, tifffile refuses ``compression="jpeg"`` even for tiles we encode
    ourselves: register Pillow's encoder for the JPEG tag (7) in its codec table."""
    try:
        import imagecodecs  # noqa: F401
        return
    except ImportError:
        pass
    codecs = getattr(getattr(tifffile.TIFF, "COMPRESSORS", None), "_codecs", None)
    if isinstance(codecs, dict):
        codecs.setdefault(7, _pillow_jpeg_encode)


class _Stop(Exception):
    """Raised inside the writer thread when the job is closed (cancelled)."""


def pyramid_tiff_job(
    path: str | os.PathLike[str],
    width: int,
    height: int,
    tile_source: TileSource | None = None,
    *,
    tile: int = 256,
    levels: int | None = None,
    mpp: float | None = 0.5,
    quality: int = 85,
    workers: int | None = None,
) -> Generator[Progress, None, Path]:
    """Job generator form of :func:`write_pyramid_tiff` (yields one Progress per level-0 tile row).

    tifffile pulls tiles from a generator inside one ``write`` call, so the file is written by a
    helper thread and progress comes back through a queue. Closing this generator cancels: the
    helper stops at the next tile, the partial file is removed and ``path`` is left untouched.
    """
    width, height, tile = int(width), int(height), int(tile)
    if width <= 0 or height <= 0:
        raise ConfigError(f"slide size must be positive, got {width}x{height}")
    if tile <= 0 or tile % 16:
        raise ConfigError(f"tile size must be a positive multiple of 16, got {tile}")
    if levels is not None and levels < 1:
        raise ConfigError(f"levels must be at least 1, got {levels}")
    if not 1 <= int(quality) <= 100:
        raise ConfigError(f"JPEG quality must be 1..100, got {quality}")
    if mpp is not None and not (math.isfinite(mpp) and mpp > 0):
        raise ConfigError(f"mpp must be a positive number of micrometres per pixel, got {mpp}")
    source: TileSource = tile_source if tile_source is not None else TissuePattern()
    out_path = Path(os.fspath(path))
    events: queue.Queue[Progress | BaseException | None] = queue.Queue()
    stop = threading.Event()
    total = -(-height // tile) + 1

    def target() -> None:
        try:
            writer = _PyramidWriter(
                width, height, source, tile, levels, mpp, int(quality), events.put, stop
            )
            writer.write(out_path, workers or max(1, min(4, os.cpu_count() or 1)))
            events.put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread
            events.put(exc)

    thread = threading.Thread(target=target, name="pyramid-tiff-writer", daemon=True)
    thread.start()
    try:
        while True:
            item = events.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                if isinstance(item, _Stop):
                    break
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
    yield Progress(total, total, "done")
    return out_path


class _PyramidWriter:
    """Writes the pyramid (in the helper thread of :func:`pyramid_tiff_job`).

    Level 0 is rendered band by band (one tile row) in a thread pool, encoded, and halved into the
    next level as it goes; the tiles of levels >= 1 wait in a spool file until tifffile writes
    their page, so memory holds one band per level, never a level.
    """

    def __init__(
        self,
        width: int,
        height: int,
        source: TileSource,
        tile: int,
        levels: int | None,
        mpp: float | None,
        quality: int,
        report: Callable[[Progress], None],
        stop: threading.Event,
    ) -> None:
        self.width, self.height, self.source, self.tile = width, height, source, tile
        self.mpp, self.quality, self.report, self.stop = mpp, quality, report, stop
        self.dims = pyramid_levels(width, height, tile, levels)
        self.rows0 = -(-height // tile)
        self.total = self.rows0 + 1
        self.lv = [_Level(w, h, tile) for (w, h) in self.dims]
        self.pool: ThreadPoolExecutor | None = None
        self.spool: BinaryIO | None = None

    def write(self, out_path: Path, nworkers: int) -> None:
        import tifffile

        _ensure_jpeg_compressor(tifffile)
        bigtiff = sum(w * h * 3 for w, h in self.dims) > (2 << 30)
        with atomic_path(out_path) as tmp, ThreadPoolExecutor(nworkers) as self.pool:
            self.spool = tempfile.TemporaryFile(dir=out_path.parent, prefix=".pyramid-spool-")
            try:
                with tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tw:
                    self._write_pages(tw)
            finally:
                self.spool.close()

    def _write_pages(self, tw: Any) -> None:
        common: dict[str, object] = {
            "dtype": np.uint8,
            "tile": (self.tile, self.tile),
            "photometric": "rgb",
            "compression": "jpeg",
            "compressionargs": {"level": self.quality},
            "subsampling": (2, 2),
            "metadata": None,
        }
        tw.write(
            self._level0_tiles(),
            shape=(self.height, self.width, 3),
            description="CRC Workbench synthetic pyramid",
            software="crc_testkit.synthetic",
            **self._resolution(0),
            **common,
        )
        for k in range(1, len(self.dims)):
            if self.stop.is_set():
                raise _Stop()
            w, h = self.dims[k]
            expected = (-(-w // self.tile)) * (-(-h // self.tile))
            if len(self.lv[k].index) != expected:  # an internal invariant, not user input
                raise RuntimeError(f"level {k}: {len(self.lv[k].index)} tiles, expected {expected}")
            tw.write(
                self._level_tiles(k),
                shape=(h, w, 3),
                subfiletype=1,
                **self._resolution(k),
                **common,
            )
            n = len(self.dims)
            self.report(Progress(self.rows0 + k / n, self.total, f"level {k}/{n - 1}"))

    def _encode(self, a: np.ndarray) -> bytes:
        return _encode_tile(a, self.tile, self.quality)

    def _encode_halve(self, a: np.ndarray) -> tuple[bytes, np.ndarray]:
        # tiles are tile-wide (even) except the last column, so halving tile by tile and
        # concatenating equals halving the whole band
        return _encode_tile(a, self.tile, self.quality), _halve(a)

    def _band_work(self, k: int, parts: list[np.ndarray]) -> tuple[list[bytes], np.ndarray | None]:
        """Encode the tiles of one band of level k (in the pool) and halve them for level k+1."""
        pool = self.pool
        assert pool is not None
        if k + 1 < len(self.lv):
            done = list(pool.map(self._encode_halve, parts))
            return [d for d, _ in done], np.concatenate([h for _, h in done], axis=1)
        return list(pool.map(self._encode, parts)), None

    def _cascade(self, k: int, rows: np.ndarray) -> None:
        """Feed rows into level k (k >= 1); encode full bands to the spool; recurse."""
        spool, tile = self.spool, self.tile
        assert spool is not None
        for band in self.lv[k].add(rows):
            parts = [band[:, x : x + tile] for x in range(0, band.shape[1], tile)]
            encoded, half = self._band_work(k, parts)
            for data in encoded:
                self.lv[k].index.append((spool.tell(), len(data)))
                spool.write(data)
            if half is not None:
                self._cascade(k + 1, half)

    def _render(self, x0: int, y0: int, h: int) -> np.ndarray:
        w = min(self.tile, self.width - x0)
        arr = np.asarray(self.source(x0, y0, w, h))
        if arr.shape != (h, w, 3) or arr.dtype != np.uint8:
            raise ConfigError(
                f"tile source returned {arr.shape} {arr.dtype} for a {w}x{h} region; "
                "expected (h, w, 3) uint8"
            )
        return arr

    def _level0_tiles(self) -> Generator[bytes, None, None]:
        xs = list(range(0, self.width, self.tile))
        pool = self.pool
        assert pool is not None
        for r in range(self.rows0):
            if self.stop.is_set():
                raise _Stop()
            y0 = r * self.tile
            h = min(self.tile, self.height - y0)
            tiles = list(pool.map(self._render, xs, [y0] * len(xs), [h] * len(xs)))
            encoded, half = self._band_work(0, tiles)
            del tiles
            # cascade before yielding: tifffile stops pulling after the last tile
            if half is not None:
                self._cascade(1, half)
            self.report(Progress(r + 1, self.total, f"level 0 tile row {r + 1}/{self.rows0}"))
            yield from encoded

    def _level_tiles(self, k: int) -> Generator[bytes, None, None]:
        spool = self.spool
        assert spool is not None
        for off, length in self.lv[k].index:
            spool.seek(off)
            yield spool.read(length)

    def _resolution(self, k: int) -> dict[str, object]:
        if self.mpp is None:
            return {}
        ds_x, ds_y = self.width / self.dims[k][0], self.height / self.dims[k][1]
        return {
            "resolution": (1e4 / (self.mpp * ds_x), 1e4 / (self.mpp * ds_y)),
            "resolutionunit": "CENTIMETER",
        }


def write_pyramid_tiff(
    path: str | os.PathLike[str],
    width: int,
    height: int,
    tile_source: TileSource | None = None,
    **options: Any,
) -> Path:
    """Write a tiled JPEG pyramidal TIFF that OpenSlide opens as ``generic-tiff``.

    Parameters
    ----------
    path
        Output file (written atomically).
    width, height
        Level-0 size in pixels.
    tile_source
        ``source(l0_x, l0_y, w, h) -> (h, w, 3) uint8``; default ``TissuePattern(seed=0)``.
    **options
        Keyword-only, as :func:`pyramid_tiff_job`: ``tile`` (edge in pixels, a multiple of 16;
        256), ``levels`` (default: halve until the smallest level fits in one tile), ``mpp`` (µm
        per level-0 pixel stored as resolution in px/cm, 0.5; ``None`` writes no resolution),
        ``quality`` (JPEG 1..100, 85), ``workers`` (threads rendering and encoding tiles; up to 4).

    Returns
    -------
    Path
        ``path``.
    """
    return run_job(pyramid_tiff_job(path, width, height, tile_source, **options))
