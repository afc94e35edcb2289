"""Annotation files: the format from the extension, the size limit, load and (atomic) save."""

from __future__ import annotations

from pathlib import Path

import shapely

from crc_core.annotations.asap import (
    _read_asap,
    _to_asap,
)
from crc_core.annotations.geojson import (
    GeoJsonCache,
    _read_geojson,
    _to_geojson,
)
from crc_core.annotations.geometry import (
    _Reader,
)
from crc_core.annotations.model import (
    AnnotationSet,
    LoadResult,
)
from crc_core.atomic import atomic_path
from crc_core.classes import ClassScheme
from crc_core.errors import AnnotationError

#: Largest annotation file read (bytes). Parsing JSON takes several times the file size in memory.
MAX_FILE_BYTES = 256 * 1024 * 1024
GEOJSON_SUFFIXES = (".geojson", ".json")
XML_SUFFIXES = (".xml",)


def format_for_path(path: str | Path) -> str:
    """``"geojson"`` or ``"asap"`` from a file name; AnnotationError for other extensions."""
    suffix = Path(path).suffix.lower()
    if suffix in GEOJSON_SUFFIXES:
        return "geojson"
    if suffix in XML_SUFFIXES:
        return "asap"
    raise AnnotationError(
        f"{path}: unknown annotation file type {suffix or '(no extension)'!r}; "
        "use .geojson or .json (QuPath GeoJSON) or .xml (ASAP XML)"
    )


def read_annotations_bytes(
    data: bytes,
    fmt: str,
    scheme: ClassScheme,
    slide_size: tuple[int, int] | None = None,
    source: str = "annotations",
    skip_invalid: bool = False,
) -> LoadResult:
    """Parse annotation file content (``fmt``: ``"geojson"`` or ``"asap"``). See
    :func:`load_annotations`."""
    rd = _Reader(scheme, slide_size, skip_invalid, source)
    if len(data) > MAX_FILE_BYTES:
        raise AnnotationError(
            f"{source}: {len(data) / 2**20:.0f} MiB is larger than the "
            f"{MAX_FILE_BYTES // 2**20} MiB accepted for an annotation file (export annotations "
            "without detections)"
        )
    try:
        if fmt == "geojson":
            anns = _read_geojson(data, rd)
        elif fmt == "asap":
            anns = _read_asap(data, rd)
        else:
            raise AnnotationError(f"{source}: unknown annotation format {fmt!r} (geojson or asap)")
    except AnnotationError:
        raise
    except (RecursionError, MemoryError) as exc:
        raise AnnotationError(
            f"{source}: too large or too deeply nested to read ({type(exc).__name__})"
        ) from None
    except (
        shapely.errors.ShapelyError,
        ValueError,
        TypeError,
        OverflowError,
        LookupError,
        AttributeError,
        IndexError,
    ) as exc:
        # Geometry the checks above let through but GEOS cannot use.
        raise AnnotationError(
            f"{source}: unusable geometry ({type(exc).__name__}: {exc})"[:300]
        ) from None
    return LoadResult(AnnotationSet(anns), rd.finish_warnings(), rd.added, rd.skipped)


def load_annotations(
    path: str | Path,
    scheme: ClassScheme,
    slide_size: tuple[int, int] | None = None,
    skip_invalid: bool = False,
) -> LoadResult:
    """Read a QuPath GeoJSON (``.geojson``/``.json``) or ASAP XML (``.xml``) annotation file.

    Parameters
    ----------
    path
        The file; its extension chooses the format.
    scheme
        The class scheme. **Unknown class names are added to it** (listed in ``added_classes``).
    slide_size
        ``(width, height)`` of the slide's level 0; when given, annotations are clipped to it.
    skip_invalid
        Skip (with a warning) features that would otherwise be refused.

    Returns
    -------
    LoadResult
        ``annotations``, ``warnings`` (one line each, naming the feature), ``added_classes``,
        ``skipped`` (features not read).

    Raises
    ------
    AnnotationError
        On anything that cannot be read; the message names the file and the feature.
    """
    p = Path(path)
    fmt = format_for_path(p)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise AnnotationError(f"{p}: annotation file not found") from None
    except OSError as exc:
        raise AnnotationError(f"{p}: cannot read ({exc.strerror or exc})") from None
    if p.is_dir():
        raise AnnotationError(f"{p}: is a folder, not an annotation file")
    if size > MAX_FILE_BYTES:
        raise AnnotationError(
            f"{p}: {size / 2**20:.0f} MiB is larger than the {MAX_FILE_BYTES // 2**20} MiB "
            "accepted for an annotation file (export annotations without detections)"
        )
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise AnnotationError(f"{p}: cannot read ({exc.strerror or exc})") from None
    return read_annotations_bytes(data, fmt, scheme, slide_size, str(p), skip_invalid)




def annotations_to_bytes(
    aset: AnnotationSet, fmt: str, scheme: ClassScheme, cache: GeoJsonCache | None = None
) -> bytes:
    """Serialise to ``"geojson"`` (QuPath) or ``"asap"`` (ASAP XML) bytes.

    ``cache`` (GeoJSON only) reuses the encoding of annotations unchanged since the last call.
    """
    if fmt == "geojson":
        return _to_geojson(aset, scheme, cache)
    if fmt == "asap":
        return _to_asap(aset, scheme)
    raise AnnotationError(f"unknown annotation format {fmt!r} (geojson or asap)")


def save_annotations(aset: AnnotationSet, path: str | Path, scheme: ClassScheme) -> None:
    """Write annotations atomically; ``.geojson``/``.json`` -> QuPath GeoJSON, ``.xml`` -> ASAP XML.

    The content is built in memory first; then a temporary file beside ``path`` is written,
    fsynced and renamed over it, so a failure at any point leaves the previous file whole.
    """
    p = Path(path)
    data = annotations_to_bytes(aset, format_for_path(p), scheme)
    with atomic_path(p) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
