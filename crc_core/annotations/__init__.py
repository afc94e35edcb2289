"""Annotations on shapely geometry, and their QuPath GeoJSON and ASAP XML files.

Geometry is in **level-0 pixels** of the slide (x to the right, y down), as shapely ``Polygon`` or
``MultiPolygon`` (rectangles, polygons and freehand outlines are all polygons; holes are interior
rings). Every annotation has a UUID (``id``), a class (``class_id``, an id of a
:class:`~crc_core.classes.ClassScheme`), an optional name and notes, and free ``properties`` that
are kept on a GeoJSON round trip (QuPath measurements, ``isLocked``...).

Files
-----
* ``.geojson`` / ``.json``: QuPath-compatible GeoJSON. Read: a FeatureCollection, a bare Feature, or
  a list of features (QuPath 0.2-0.6 exports), with ``properties.objectType`` (``"annotation"``;
  detections, cells and tiles are skipped with one warning), ``properties.classification`` as
  ``{name | names, color: [r, g, b] | colorRGB: int}`` or a plain string, ``name``, and notes in
  ``notes``, ``description`` or QuPath's ``metadata.ANNOTATION_DESCRIPTION``. Written: a
  FeatureCollection of ``Feature`` objects with ``id``, ``geometry`` and ``properties {objectType:
  "annotation", classification: {name, color}, name, description, metadata:
  {ANNOTATION_DESCRIPTION}, isLocked, isHidden (only when true), ...}`` that QuPath 0.4+ imports
  (QuPath shows the name, the description and the lock; it ignores ``isHidden``).
* ``.xml``: ASAP XML (``ASAP_Annotations/Annotations/Annotation`` with ``Coordinates/Coordinate``
  and ``AnnotationGroups/Group``), parsed by defusedxml's SAX reader with DTDs forbidden (no
  external entity is read and no entity is expanded; no element tree is built). The class is the
  annotation's ``PartOfGroup``. ``Spline`` outlines are read as the polygon through their control
  points; ``Dot``/``PointSet`` annotations are skipped with a warning.

ASAP encoding of holes and multipolygons
-----------------------------------------
ASAP draws single outlines only, so an annotation is written as one ``Annotation`` element per
outline, all with the same ``Name`` and extra attributes ASAP ignores: ``Id`` (the annotation's
UUID), ``Role`` (``"shell"`` or ``"hole"``) and, when set, ``Locked="1"`` / ``Hidden="1"``. Each
polygon part is a ``Role="shell"`` element in its class group; each hole is a ``Role="hole"``
element in the group ``Exclusion`` (the convention ASAP users follow for regions cut out of an
annotation). On reading, elements sharing an ``Id`` are merged back into one (multi)polygon and
their holes subtracted, so areas, holes and parts survive XML -> GeoJSON -> XML. Files without these
attributes (drawn in ASAP, or saved again by ASAP, which drops unknown attributes) still keep their
areas: every element of a group named ``Exclusion``/``_exclusion``/``exclude`` (any case), or ``_2``
in a Camelyon16 file (groups ``_0``/``_1`` with ``_2`` for exclusions), is subtracted from the
outlines that contain it.

Repair and refusal
------------------
Loading repairs what is safe and reports it as a warning naming the feature (``feature #3 (id
..., name ...)``): a self-intersecting or otherwise invalid outline (``shapely.make_valid``, keeping
the polygonal parts), an unclosed ring (closed), repeated points (removed), a degenerate hole
(dropped), an unknown class name (added to the scheme), coordinates outside the slide when
``slide_size`` is given (clipped; an annotation entirely outside is skipped). Points, lines and
other non-area objects are skipped with a warning. Refused with an :class:`AnnotationError` naming
the feature: fewer than three distinct points, NaN or infinite coordinates, wrong JSON types, and
an annotation of more than :data:`MAX_VERTICES_PER_ANNOTATION` vertices (a million-vertex outline
is refused before any geometry is built: simplify it in QuPath first). Measured on the 2-core
dev machine: a 400,000-vertex outline loads in about 1.4 s from GeoJSON and 3.5 s from ASAP XML;
a 1,000,000-vertex one is refused in 2-4 s (``benchmarks/annotations_bench.py``).
``skip_invalid=True`` turns these refusals into skips with a warning. Files above
:data:`MAX_FILE_BYTES` are refused before they are read, so a huge file never exhausts memory.
Any malformed input gives an ``AnnotationError``, never another exception.

Saves are atomic (temporary file, fsync, rename): a crash mid-save leaves the previous file whole.
Nothing here is thread-safe; the GUI owns an ``AnnotationSet`` on its own thread.

Modules: :mod:`~crc_core.annotations.model` (Annotation, AnnotationSet, LoadResult,
clean_geometry), :mod:`~crc_core.annotations.geometry` (outline checks and repair shared by the
readers, ``MAX_VERTICES_PER_ANNOTATION``), :mod:`~crc_core.annotations.geojson` (QuPath GeoJSON,
GeoJsonCache), :mod:`~crc_core.annotations.asap` (ASAP XML) and :mod:`~crc_core.annotations.io`
(load, save, bytes, ``MAX_FILE_BYTES``). Everything public is importable from this package.
"""

from __future__ import annotations

from crc_core.annotations.geojson import GeoJsonCache
from crc_core.annotations.geometry import MAX_VERTICES_PER_ANNOTATION
from crc_core.annotations.io import (
    GEOJSON_SUFFIXES,
    MAX_FILE_BYTES,
    XML_SUFFIXES,
    annotations_to_bytes,
    format_for_path,
    load_annotations,
    read_annotations_bytes,
    save_annotations,
)
from crc_core.annotations.model import (
    HIDDEN_KEY,
    LOCKED_KEY,
    MAX_WARNINGS,
    QUPATH_DESCRIPTION_KEY,
    UNCLASSIFIED,
    Annotation,
    AnnotationSet,
    Geometry,
    LoadResult,
    clean_geometry,
)

__all__ = [
    "GEOJSON_SUFFIXES",
    "HIDDEN_KEY",
    "LOCKED_KEY",
    "MAX_WARNINGS",
    "QUPATH_DESCRIPTION_KEY",
    "XML_SUFFIXES",
    "Geometry",
    "Annotation",
    "AnnotationSet",
    "GeoJsonCache",
    "LoadResult",
    "MAX_FILE_BYTES",
    "MAX_VERTICES_PER_ANNOTATION",
    "UNCLASSIFIED",
    "clean_geometry",
    "load_annotations",
    "read_annotations_bytes",
    "save_annotations",
    "annotations_to_bytes",
    "format_for_path",
]
