"""`crc annotations from-prediction PREDICTION.npz OUT.geojson`: a prediction's class map as
annotations (status "proposed"), written as QuPath GeoJSON (or ASAP XML by extension) in level-0
pixels. Registered by :mod:`crc_core.commands.annotations`; the work is
:func:`crc_core.proposals.prediction_to_annotations`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from crc_core.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    f = sub.add_parser(
        "from-prediction",
        help="turn a prediction (.npz) into annotations marked 'proposed'",
        description="Contiguous cells of one predicted class become one annotation (holes kept); "
        "each carries the model, its mean confidence and the status 'proposed' until a person "
        "reviews it in the viewer.",
    )
    f.add_argument("prediction", type=Path, metavar="PREDICTION", help="prediction file (.npz)")
    f.add_argument("output", type=Path, metavar="OUT",
                   help="annotation file to write (.geojson, .xml)")
    f.add_argument("--min-confidence", type=float, default=0.0, metavar="F",
                   help="leave out cells whose top probability is below F (0-1; default 0)")
    f.add_argument("--min-area", type=float, default=0.0, metavar="UM2",
                   help="leave out areas smaller than this, in µm² (in level-0 px² when the "
                   "prediction has no pixel size; the output says which)")
    f.add_argument("--classes", nargs="+", default=None, metavar="CLASS",
                   help="only these predicted classes (names or ids; default all)")
    f.add_argument("--scheme", type=Path, default=None, metavar="JSON",
                   help="class scheme of the output (default: the prediction's classes)")
    f.add_argument("--map", dest="mapping", default=None, metavar="A=B,...",
                   help="map prediction classes onto --scheme classes, e.g. 'Adenoma=Adenoma LG'")
    f.set_defaults(func=run)


def _mapping(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    out: dict[str, str] = {}
    for part in text.split(","):
        a, sep, b = part.partition("=")
        if not sep or not a.strip() or not b.strip():
            raise ConfigError(f"--map {text!r}: expected PREDICTED=SCHEME pairs, comma-separated")
        out[a.strip()] = b.strip()
    return out


def run(args: argparse.Namespace) -> int:
    from crc_core.annotations import AnnotationSet, format_for_path, save_annotations
    from crc_core.classes import ClassScheme
    from crc_core.cli import warn
    from crc_core.inference import load_prediction
    from crc_core.proposals import prediction_to_annotations

    format_for_path(args.output)  # refuse an unknown OUT extension before any work
    pred = load_prediction(args.prediction)
    scheme = ClassScheme.load(args.scheme) if args.scheme else pred.scheme
    res = prediction_to_annotations(
        pred, scheme, min_confidence=args.min_confidence, min_area=args.min_area,
        classes=args.classes, mapping=_mapping(args.mapping))
    for note in res.notes:
        warn(note)
    save_annotations(AnnotationSet(res.annotations), args.output, scheme)
    n = len(res.annotations)
    print(f"wrote {n} proposed annotation{'s' if n != 1 else ''} to {args.output} "
          f"(areas >= {args.min_area:g} {res.area_unit}, confidence >= {args.min_confidence:g})")
    return 0
