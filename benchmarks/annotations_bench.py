"""Annotation I/O figures: large outlines (load or refusal time, peak memory) and autosave cost.

Usage::

    python benchmarks/annotations_bench.py            # all cases
    python benchmarks/annotations_bench.py --case big-xml --vertices 400000

Each large-outline case runs in a fresh subprocess so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _circle(n: int) -> tuple[list[float], list[float]]:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    xs = (50000 + 40000 * np.cos(t)).round(1).tolist()
    return xs, (50000 + 40000 * np.sin(t)).round(1).tolist()


def _write_big(folder: Path, fmt: str, n: int) -> Path:
    xs, ys = _circle(n)
    if fmt == "xml":
        body = "".join(
            f'<Coordinate Order="{k}" X="{a}" Y="{b}"/>'
            for k, (a, b) in enumerate(zip(xs, ys, strict=True))
        )
        path = folder / "big.xml"
        path.write_text(
            '<ASAP_Annotations><Annotations><Annotation Name="f" Type="Polygon" '
            'PartOfGroup="Normal">'
            f"<Coordinates>{body}</Coordinates></Annotation></Annotations></ASAP_Annotations>"
        )
    else:
        body = ",".join(f"[{a},{b}]" for a, b in zip(xs, ys, strict=True))
        path = folder / "big.geojson"
        path.write_text(
            '{"type":"Feature","geometry":{"type":"Polygon","coordinates":[[' + body + "]]},"
            '"properties":{"classification":{"name":"Normal"}}}'
        )
    return path


def _hwm_mib() -> int:
    """Peak resident memory of this process (VmHWM; ru_maxrss survives exec on Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def _child(path: str) -> None:
    from crc_core.annotations import load_annotations
    from crc_core.classes import ClassScheme

    before = _hwm_mib()
    t0 = time.perf_counter()
    try:
        res = load_annotations(path, ClassScheme.paper())
        outcome = f"loaded {len(res.annotations)}"
    except Exception as exc:  # report, do not hide: the figure is the outcome
        outcome = f"{type(exc).__name__}: ...{str(exc)[-70:]}"
    dt = time.perf_counter() - t0
    peak = _hwm_mib()
    print(json.dumps({"seconds": round(dt, 2), "rss_before_mib": before,
                      "rss_peak_mib": peak, "outcome": outcome}))


def big_case(fmt: str, n: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        path = _write_big(Path(d), fmt, n)
        size = path.stat().st_size
        out = subprocess.run([sys.executable, __file__, "--child", str(path)], capture_output=True,
                             text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        r.update(case=f"{fmt} {n:,} vertices", file_mib=round(size / 2**20, 1))
        return r


def autosave_case(n_ann: int, n_vert: int) -> dict:
    """A busy slide: n_ann freehand outlines of n_vert vertices; project autosave and reload."""
    from crc_core.annotations import Annotation, AnnotationSet
    from crc_core.project import Project

    rng = np.random.default_rng(0)
    anns = []
    for i in range(n_ann):
        t = np.linspace(0, 2 * np.pi, n_vert, endpoint=False)
        r = 300 + 40 * rng.random(n_vert)
        cx, cy = 1000 + (i % 25) * 900, 1000 + (i // 25) * 900
        outline = zip(cx + r * np.cos(t), cy + r * np.sin(t), strict=True)
        anns.append(Annotation.polygon("normal", list(outline)))
    aset = AnnotationSet(anns)
    with tempfile.TemporaryDirectory() as d:
        proj = Project.create(Path(d) / "p")
        slide = Path(d) / "s.svs"
        slide.write_bytes(b"x")
        e = proj.add_slide(slide)
        t0 = time.perf_counter()
        proj.autosave(e, aset)
        first = time.perf_counter() - t0
        extra = Annotation.rectangle("adenoma", 0, 0, 10, 10)
        aset.add(extra)
        t0 = time.perf_counter()
        proj.autosave(e, aset)
        edit = time.perf_counter() - t0
        t0 = time.perf_counter()
        proj.autosave(e, aset)
        unchanged = time.perf_counter() - t0
        t0 = time.perf_counter()
        proj.load_annotations(e)
        load = time.perf_counter() - t0
        size = proj.annotations_path(e).stat().st_size
    return {"case": f"autosave {n_ann} outlines x {n_vert} vertices",
            "file_mib": round(size / 2**20, 1),
            "first_save_s": round(first, 3), "save_after_edit_s": round(edit, 3),
            "unchanged_s": round(unchanged, 3), "load_s": round(load, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", default=None)
    ap.add_argument("--case", choices=("big-xml", "big-geojson", "autosave", "all"), default="all")
    ap.add_argument("--vertices", type=int, default=0)
    args = ap.parse_args()
    if args.child:
        _child(args.child)
        return
    if args.case in ("big-geojson", "all"):
        for n in [args.vertices] if args.vertices else [400_000, 1_000_000]:
            print(json.dumps(big_case("geojson", n)))
    if args.case in ("big-xml", "all"):
        for n in [args.vertices] if args.vertices else [400_000, 1_000_000]:
            print(json.dumps(big_case("xml", n)))
    if args.case in ("autosave", "all"):
        print(json.dumps(autosave_case(500, 200)))


if __name__ == "__main__":
    main()
