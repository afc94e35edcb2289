"""Viewer benchmark: open -> first complete paint, frame times over scripted pans and zooms, GUI
stalls.

Prints one JSON object. The slide is a generated pyramidal TIFF of at least 50,000 x 50,000 px
(``crc_testkit.synthetic.write_pyramid_tiff``, cached under /tmp; pass ``--slide`` to use another).
Runs the real main window on the offscreen Qt platform.

Measured
--------
* ``first_paint_ms``: from ``MainWindow.open_path`` to the first frame with every visible tile at
its
  final resolution (includes opening the file and the implicit project).
* Frame times: duration of each ``SlideView.paintEvent`` during a scripted sequence of pans and
zooms
  (``repaint()`` after each step). ``cold``: first pass, tiles still loading (stand-ins drawn);
  ``cached``: the same sequence again once every tile it shows is in the cache.
* ``longest_stall_ms``: the longest gap between ticks of a 1 ms timer in the GUI event loop over the
  whole navigation (both passes), i.e. the longest time the GUI thread did not serve events.

Goals (issue 3): first paint < 300 ms, cached median frame < 16 ms, no stall > 50 ms.

Usage::

    python benchmarks/viewer_bench.py [--slide PATH] [--size 1400x900] [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

DEFAULT_SLIDE = Path("/tmp/crc_viewer_bench_50k.tif")
SIDE = 50_000


def ensure_slide(path: Path) -> float:
    """Generate the synthetic slide if it is missing; returns seconds spent (0 when cached)."""
    if path.exists():
        return 0.0
    from crc_testkit.synthetic import write_pyramid_tiff  # the root is on sys.path (main guard)

    t = time.perf_counter()
    write_pyramid_tiff(path, SIDE, SIDE, mpp=0.25)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slide", type=Path, default=DEFAULT_SLIDE)
    ap.add_argument("--size", default="1400x900")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=None, help="tile reader threads")
    ap.add_argument(
        "--switch-ms", type=float, default=1.0, help="sys.setswitchinterval in ms (crc-viewer: 1)"
    )
    args = ap.parse_args()
    gen_s = ensure_slide(args.slide)
    os.environ["CRC_VIEWER_HOME"] = tempfile.mkdtemp(prefix="viewer-bench-")

    from PySide6.QtCore import QElapsedTimer, Qt, QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(["viewer-bench"])
    from app.main_window import MainWindow

    w, h = (int(v) for v in args.size.split("x"))
    win = MainWindow()
    win.resize(w, h)
    win.show()
    app.processEvents()
    view = win.view
    view.tile_threads = args.threads
    if args.switch_ms is not None:
        sys.setswitchinterval(args.switch_ms / 1000)

    def wait(cond, timeout_s: float = 120.0) -> bool:  # type: ignore[no-untyped-def]
        end = time.perf_counter() + timeout_s
        while time.perf_counter() < end:
            app.processEvents()
            if cond():
                return True
            time.sleep(0.0005)
        return False

    # ---------------------------------------------------------------- open -> first complete paint
    t0 = time.perf_counter()
    c0 = time.thread_time()
    if not win.open_path(args.slide, quiet=True):
        print(json.dumps({"error": f"cannot open {args.slide}"}))
        return 2
    opened_ms = (time.perf_counter() - t0) * 1000
    ok = wait(lambda: view.is_complete() and view._complete)
    first_paint_ms = (time.perf_counter() - t0) * 1000
    first_paint_cpu_ms = (time.thread_time() - c0) * 1000  # GUI thread only
    slide = win.slide

    # ---------------------------------------------------------------- stall probe
    gaps: list[float] = []
    clock = QElapsedTimer()
    last = [0]

    gap_cpu: list[float] = []
    last_cpu = [time.thread_time()]

    def tick() -> None:
        now = clock.nsecsElapsed()
        cpu = time.thread_time()
        gaps.append((now - last[0]) / 1e6)
        gap_cpu.append((cpu - last_cpu[0]) * 1000)
        last[0] = now
        last_cpu[0] = cpu

    probe = QTimer()
    probe.setTimerType(Qt.TimerType.PreciseTimer)
    probe.timeout.connect(tick)

    # ---------------------------------------------------------------- scripted navigation
    W, H = slide.dimensions
    script = []
    for i in range(args.steps):
        k = i % 6
        if k in (0, 1, 2):
            script.append(("pan", (240.0, 90.0 if i % 2 else -90.0)))
        elif k == 3:
            script.append(("zoom", 2.0))
        elif k == 4:
            script.append(("zoom", 0.5))
        else:
            fx = 0.2 + 0.6 * ((i * 37) % 100) / 100
            fy = 0.2 + 0.6 * ((i * 61) % 100) / 100
            script.append(("goto", (fx * W, fy * H)))

    def run_pass(wait_each: bool) -> list[float]:
        """Replay the script from the event loop, one step per 20 ms timer tick (a fast user).

        With ``wait_each`` a step waits until the previous one is fully painted (fills the cache).
        """
        from PySide6.QtCore import QEventLoop

        view.set_view(W * 0.5, H * 0.5, 0.25)
        wait(lambda: view.is_complete() and view._complete)
        frames: list[float] = []
        cpu: list[float] = cpu_cold if wait_each else cpu_cached
        pending = list(script)
        loop = QEventLoop()
        driver = QTimer()

        def step() -> None:
            if wait_each and not (view.is_complete() and view._complete):
                return
            if not pending:
                driver.stop()
                loop.quit()
                return
            kind, arg = pending.pop(0)
            if kind == "pan":
                view.pan_by(*arg)
            elif kind == "zoom":
                view.zoom_by(arg)
            else:
                view.set_view(arg[0], arg[1])
            view.repaint()
            frames.append(view.last_frame_ms)
            cpu.append(view.last_frame_cpu_ms)

        driver.timeout.connect(step)
        driver.start(20)
        loop.exec()
        return frames

    cpu_cold: list[float] = []
    cpu_cached: list[float] = []
    clock.start()
    last[0] = clock.nsecsElapsed()
    last_cpu[0] = time.thread_time()
    probe.start(1)
    cold = run_pass(wait_each=True)
    n_cold = len(gaps)
    cached = run_pass(wait_each=False)
    probe.stop()
    stall_cold = max(gaps[1:n_cold], default=0.0)
    stall_cached = max(gaps[n_cold + 1 :], default=0.0)
    loader = view.loader

    def stats(v: list[float]) -> dict[str, float]:
        return {
            "median_ms": round(statistics.median(v), 2),
            "max_ms": round(max(v), 2),
            "p95_ms": round(sorted(v)[int(0.95 * (len(v) - 1))], 2),
        }

    out = {
        "benchmark": "viewer",
        "slide": str(args.slide),
        "slide_size": [W, H],
        "levels": slide.level_count,
        "window": [w, h],
        "view": [view.width(), view.height()],
        "generated_slide_s": round(gen_s, 1),
        "open_call_ms": round(opened_ms, 1),
        "first_paint_ms": round(first_paint_ms, 1),
        "first_paint_cpu_ms": round(first_paint_cpu_ms, 1),
        "first_paint_complete": ok,
        "steps": len(script),
        "tile_threads": view.loader.pool.maxThreadCount() if view.loader else None,
        "switch_interval_ms": sys.getswitchinterval() * 1000,
        "frames_cold": stats(cold),
        "frames_cached": stats(cached),
        "frames_cold_cpu": stats(cpu_cold),
        "frames_cached_cpu": stats(cpu_cached),
        "longest_stall_ms": round(max(gaps[1:]) if len(gaps) > 1 else 0.0, 1),
        "probe_ticks": len(gaps),
        "longest_stall_cold_ms": round(stall_cold, 1),
        "longest_stall_cached_ms": round(stall_cached, 1),
        "longest_stalls_ms": [round(g, 1) for g in sorted(gaps)[-5:]],
        # GUI-thread CPU inside those gaps: small = the thread was waiting (OS, GIL), not working
        "longest_stalls_gui_cpu_ms": [
            round(gap_cpu[i], 1) for i in sorted(range(len(gaps)), key=gaps.__getitem__)[-5:]
        ],
        "load_average_1min": round(os.getloadavg()[0], 2),
        "tiles_cached": len(loader._cache) if loader else 0,
        "requests_dropped": loader.dropped if loader else 0,
        "goals": {"first_paint_ms": 300, "median_frame_cached_ms": 16, "stall_ms": 50},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "qpa": os.environ["QT_QPA_PLATFORM"],
        },
    }
    out["goals_met"] = {
        "first_paint": out["first_paint_ms"] < 300,
        "median_frame_cached": out["frames_cached"]["median_ms"] < 16,
        "stall": out["longest_stall_ms"] <= 50,
    }
    print(json.dumps(out))
    win.close()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
