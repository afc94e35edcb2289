"""The backends behind :class:`crc_core.slide.SlideReader`: OpenSlide, Pillow (plain images) and
a numpy array (the test double), with the checks made before a file is handed to them (TIFF
truncation, plausible mpp). Frames, units and threading as in :mod:`crc_core.slide`; not public API.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from crc_core.errors import SlideError

#: Largest region one ``read_region`` call may return (pixels); read bigger areas tile by tile.
MAX_REGION_PIXELS = 1 << 27  # 134 Mpx: 512 MiB as RGBA inside OpenSlide, 384 MiB as RGB
#: Pillow formats accepted by the fallback backend.
PILLOW_FORMATS = frozenset({"PNG", "JPEG", "TIFF", "BMP", "MPO"})
#: Suffixes of whole-slide formats: these never fall back to Pillow (a broken .svs is an error,
#: not a plain image).
WSI_SUFFIXES = frozenset(
    {".svs", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".vmu", ".svslide", ".dcm", ".czi"}
)
#: mpp read from plain-image resolution tags is kept only inside this range (µm/px); outside it the
#: tag is a screen/print default (72 dpi = 353 µm/px), not a microscope calibration.
_PLAUSIBLE_MPP = (0.02, 50.0)
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_ACCEPTED = (
    "accepted: whole-slide formats OpenSlide reads (.svs, .ndpi, .mrxs, .scn, .bif, "
    "tiled .tif, ...) and plain PNG, JPEG, TIFF or BMP images"
)

Backend = Literal["openslide", "pillow", "array"]


def _rgba_to_rgb(arr: np.ndarray) -> np.ndarray:
    """(h, w, 4) straight-alpha RGBA uint8 -> (h, w, 3) RGB composited on white."""
    rgb = arr[..., :3]
    alpha = arr[..., 3]
    if alpha.min(initial=255) == 255:
        return np.ascontiguousarray(rgb)
    a = alpha.astype(np.uint16)[..., None]
    out = (rgb.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    """Any Pillow image -> (h, w, 3) uint8 RGB, transparency composited on white."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        hi = (
            65535.0 if mode.startswith("I;16") else max(float(np.nanmax(a)) if a.size else 1.0, 1.0)
        )
        g = np.clip(np.nan_to_num(a) * (255.0 / hi), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy()
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        return _rgba_to_rgb(np.asarray(img.convert("RGBA"), dtype=np.uint8))
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def _positive_float(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def resolution_mpp(img: Image.Image) -> tuple[float, float] | None:
    """µm/px (x, y) from an open image's TIFF resolution tags (unit inch or cm) or PNG/JPEG dpi,
    when plausible (:data:`_PLAUSIBLE_MPP`); else ``None``. Only what Pillow parsed on open."""
    xres = yres = None
    per_um: float | None = None
    tags = getattr(img, "tag_v2", None)
    if tags is not None and 282 in tags and 283 in tags:
        unit = int(tags.get(296, 2))
        per_um = {2: 25400.0, 3: 10000.0}.get(unit)
        xres, yres = _positive_float(tags[282]), _positive_float(tags[283])
    elif "dpi" in img.info:
        dpi = img.info["dpi"]
        per_um = 25400.0
        xres, yres = _positive_float(dpi[0]), _positive_float(dpi[1])
    if per_um is None or xres is None or yres is None:
        return None
    mx, my = per_um / xres, per_um / yres
    lo, hi = _PLAUSIBLE_MPP
    if lo <= mx <= hi and lo <= my <= hi:
        return (mx, my)
    return None


class _DropRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextlib.contextmanager
def _quiet_tifffile() -> Iterator[None]:
    """Silence tifffile's log warnings while probing a possibly broken file (errors are ours)."""
    log = logging.getLogger("tifffile")
    filt = _DropRecords()
    log.addFilter(filt)
    try:
        yield
    finally:
        log.removeFilter(filt)


def _ifd_chain_end(path: Path, size: int) -> int | None:
    """Walk the TIFF directory chain; return the first byte position past the file it needs, if any.

    Returns ``None`` when every directory (and its entry table) lies inside the file, or when the
    file is not a TIFF this walker understands.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
            if len(head) < 8:
                return 16
            order = "<" if head[:2] == b"II" else ">"
            version = struct.unpack(order + "H", head[2:4])[0]
            if version == 42:
                off_fmt, cnt_fmt, entry, first = (
                    "I",
                    "H",
                    12,
                    struct.unpack(order + "I", head[4:8])[0],
                )
            elif version == 43 and len(head) >= 16:
                off_fmt, cnt_fmt, entry, first = (
                    "Q",
                    "Q",
                    20,
                    struct.unpack(order + "Q", head[8:16])[0],
                )
            else:
                return None
            off_size, cnt_size = struct.calcsize(off_fmt), struct.calcsize(cnt_fmt)
            seen: set[int] = set()
            offset = int(first)
            while offset and offset not in seen and len(seen) < 100_000:
                seen.add(offset)
                if offset + cnt_size > size:
                    return offset + cnt_size
                fh.seek(offset)
                (count,) = struct.unpack(order + cnt_fmt, fh.read(cnt_size))
                table_end = offset + cnt_size + count * entry + off_size
                if table_end > size:
                    return table_end
                fh.seek(offset + cnt_size + count * entry)
                (offset,) = struct.unpack(order + off_fmt, fh.read(off_size))
    except (OSError, struct.error):
        return None
    return None


def _check_tiff_truncation(path: Path, size: int) -> None:
    """Raise SlideError when a TIFF-based file's image data points past its end (truncated copy).

    OpenSlide often opens a truncated SVS (its directories sit near the start) and fails only when a
    missing tile is read; checking every page's strip/tile extents against the file size catches it
    at open time. Files tifffile cannot parse are left for OpenSlide to judge.
    """
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError:
        return
    if magic not in _TIFF_MAGIC:
        return
    needed = _ifd_chain_end(path, size)
    if needed is not None:
        raise SlideError(
            f"{path}: truncated or corrupt slide file: its image directories run to byte "
            f"{needed:,} but the file has only {size:,} bytes (copy it again from the source)"
        )
    try:
        import tifffile

        with _quiet_tifffile(), tifffile.TiffFile(path) as tf:
            end = 0
            for page in tf.pages:
                offsets = getattr(page, "dataoffsets", None)
                counts = getattr(page, "databytecounts", None)
                if not offsets or not counts:
                    continue
                off = np.asarray(offsets, dtype=np.int64)
                cnt = np.asarray(counts, dtype=np.int64)
                used = cnt > 0
                if used.any():
                    end = max(end, int((off[used] + cnt[used]).max()))
    except Exception:  # noqa: BLE001 - unparseable TIFF: OpenSlide decides below
        return
    if end > size:
        raise SlideError(
            f"{path}: truncated or corrupt slide file: image data runs to byte {end:,} but the "
            f"file has only {size:,} bytes (copy it again from the source)"
        )


def _openslide_error_types() -> tuple[type[BaseException], ...]:
    import openslide

    return (openslide.OpenSlideError, openslide.OpenSlideUnsupportedFormatError)


# ----------------------------------------------------------------------------------------------
# Backends (internal): each exposes metadata and read_level_region(level, l0_xy, size) -> RGB
# ----------------------------------------------------------------------------------------------


class _OpenSlideBackend:
    name: Backend = "openslide"

    def __init__(self, path: Path, fmt: str) -> None:
        import openslide

        self.path = path
        self.format = fmt
        try:
            self._osr = openslide.OpenSlide(str(path))
        except _openslide_error_types() as exc:
            raise SlideError(
                f"{path}: OpenSlide cannot open this {fmt} slide (corrupt or truncated?): {exc}"
            ) from None
        osr = self._osr
        self.level_dimensions = [tuple(int(v) for v in d) for d in osr.level_dimensions]
        self.level_downsamples = [float(d) for d in osr.level_downsamples]
        self.properties = {str(k): str(v) for k, v in osr.properties.items()}
        self.associated_names = list(osr.associated_images.keys())

    def read(self, level: int, l0_xy: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        try:
            img = self._osr.read_region(l0_xy, level, size)
        except _openslide_error_types() as exc:
            raise SlideError(
                f"{self.path}: reading level {level} at {l0_xy} failed; the slide is corrupt or "
                f"truncated and cannot be read further: {exc}"
            ) from None
        return _rgba_to_rgb(np.asarray(img, dtype=np.uint8))

    def associated(self, name: str) -> np.ndarray:
        try:
            img = self._osr.associated_images[name]
        except KeyError:
            raise
        except _openslide_error_types() as exc:
            raise SlideError(
                f"{self.path}: associated image {name!r} cannot be read: {exc}"
            ) from None
        return _pil_to_rgb(img)

    def close(self) -> None:
        self._osr.close()


class _PillowBackend:
    name: Backend = "pillow"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._array: np.ndarray | None = None
        try:
            img = Image.open(path)
        except Image.DecompressionBombError as exc:
            raise SlideError(
                f"{path}: image too large for the plain-image reader ({exc}); convert it to a "
                "tiled pyramidal TIFF that OpenSlide reads"
            ) from None
        except UnidentifiedImageError:
            raise SlideError(
                f"{path}: not a slide or image this program can read; {_ACCEPTED}"
            ) from None
        except Exception as exc:  # noqa: BLE001 - corrupt headers raise many types
            raise SlideError(f"{path}: cannot read image header: {exc}") from None
        try:
            if img.format not in PILLOW_FORMATS:
                raise SlideError(f"{path}: {img.format} images are not supported; {_ACCEPTED}")
            w, h = img.size
            limit = Image.MAX_IMAGE_PIXELS or (1 << 30)
            if w <= 0 or h <= 0:
                raise SlideError(f"{path}: image header gives an empty size {w}x{h}")
            if w * h > limit:
                raise SlideError(
                    f"{path}: image of {w}x{h} px exceeds the plain-image limit of {limit:,} px "
                    "(decompression-bomb guard); convert it to a tiled pyramidal TIFF"
                )
            self.format = str(img.format).lower()
            self._orientation = int(img.getexif().get(0x0112, 1) or 1)
            if self._orientation in (5, 6, 7, 8):
                w, h = h, w
            self.level_dimensions = [(int(w), int(h))]
            self.level_downsamples = [1.0]
            self.associated_names: list[str] = []
            self.properties = {
                "pillow.format": str(img.format),
                "pillow.mode": str(img.mode),
            }
            self.mpp = resolution_mpp(img)
            if self.mpp is not None:
                self.properties["pillow.mpp-x"] = repr(self.mpp[0])
                self.properties["pillow.mpp-y"] = repr(self.mpp[1])
        finally:
            img.close()

    def _load(self) -> np.ndarray:
        arr = self._array
        if arr is not None:
            return arr
        with self._lock:
            if self._array is None:
                try:
                    with Image.open(self.path) as img:
                        img.load()
                        img = ImageOps.exif_transpose(img) if self._orientation != 1 else img
                        arr = _pil_to_rgb(img)
                except SlideError:
                    raise
                except Exception as exc:  # noqa: BLE001 - truncated data raises OSError & co.
                    raise SlideError(
                        f"{self.path}: image data cannot be decoded (corrupt or truncated?): {exc}"
                    ) from None
                arr.flags.writeable = False
                self._array = arr
            return self._array

    def read(self, level: int, l0_xy: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        return _crop_white(self._load(), l0_xy, size)

    def associated(self, name: str) -> np.ndarray:
        raise KeyError(name)

    def close(self) -> None:
        with self._lock:
            self._array = None


def _crop_white(arr: np.ndarray, l0_xy: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Region of an in-memory RGB image; outside it is white."""
    h, w = arr.shape[:2]
    x, y = l0_xy
    rw, rh = size
    out = np.full((rh, rw, 3), 255, dtype=np.uint8)
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + rw, w), min(y + rh, h)
    if x1 > x0 and y1 > y0:
        out[y0 - y : y1 - y, x0 - x : x1 - x] = arr[y0:y1, x0:x1]
    return out


class _ArrayBackend:
    """A numpy image served as a one-level slide (test double, generated content)."""

    name: Backend = "array"

    def __init__(self, arr: np.ndarray, mpp: tuple[float, float] | None, name: str) -> None:
        a = np.asarray(arr)
        if (
            a.dtype != np.uint8
            or a.ndim not in (2, 3)
            or (a.ndim == 3 and a.shape[2] not in (3, 4))
        ):
            raise SlideError(
                f"{name}: an array slide must be (h, w), (h, w, 3) or (h, w, 4) uint8; "
                f"got {a.shape} {a.dtype}"
            )
        if a.shape[0] == 0 or a.shape[1] == 0:
            raise SlideError(f"{name}: an array slide cannot be empty ({a.shape})")
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        elif a.shape[2] == 4:
            a = _rgba_to_rgb(a)
        a = np.array(a, dtype=np.uint8, copy=True)
        a.flags.writeable = False
        self._array = a
        self.path = Path(name)
        self.format = "array"
        self.level_dimensions = [(int(a.shape[1]), int(a.shape[0]))]
        self.level_downsamples = [1.0]
        self.associated_names: list[str] = []
        self.properties: dict[str, str] = {}
        self.mpp = mpp

    def read(self, level: int, l0_xy: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        return _crop_white(self._array, l0_xy, size)

    def associated(self, name: str) -> np.ndarray:
        raise KeyError(name)

    def fingerprint(self) -> str:
        h = hashlib.sha256(f"array:{self._array.shape}:".encode())
        h.update(self._array.tobytes())
        return h.hexdigest()

    def close(self) -> None:
        pass
