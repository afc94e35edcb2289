"""Check that Qt's xcb platform plugin can load on Linux; name the Debian packages when it cannot.

``make run`` runs this before the GUI. On a fresh Debian/Ubuntu machine PySide6's X11 plugin
(``PySide6/Qt/plugins/platforms/libqxcb.so``) needs system libraries that are often absent, and
Qt's own message ("xcb-cursor0 or libxcb-cursor0 is needed to load the Qt xcb platform plugin")
names only the first of them. Here ``ldd`` lists every library the plugin (and Qt's
``libQt6XcbQpa``) cannot find, and each is mapped to its Debian package, so one
``apt-get install`` line fixes them all.

Exit status: 0 when the plugin's libraries are all found, when another platform is chosen
(``QT_QPA_PLATFORM`` set to something other than ``xcb``), when the system is not Linux, or when
the check cannot run (no PySide6, no ``ldd``: a note says so); 1 when libraries are missing (on a
Wayland session only a warning is printed and the status stays 0, since Qt uses its Wayland plugin
there). Imports no Qt, so it runs even where Qt cannot load.

Usage: ``python tools/check_qt_platform.py [--plugin PATH]``
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

#: Debian package of each library Qt's xcb plugin loads (Debian 12 / Ubuntu 22.04+ names).
DEBIAN_PACKAGES = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-xinput.so.0": "libxcb-xinput0",
    "libxcb-glx.so.0": "libxcb-glx0",
    "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libX11.so.6": "libx11-6",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libSM.so.6": "libsm6",
    "libICE.so.6": "libice6",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libOpenGL.so.0": "libopengl0",
    "libGLX.so.0": "libglx0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
}

_NOT_FOUND = re.compile(r"^\s*(\S+)\s*=>\s*not found\s*$")


def find_plugin() -> Path | None:
    """Path of PySide6's ``libqxcb.so`` (``None`` when PySide6 or the plugin is absent)."""
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        p = Path(base) / "Qt" / "plugins" / "platforms" / "libqxcb.so"
        if p.is_file():
            return p
    return None


def parse_ldd(text: str) -> list[str]:
    """Sonames ``ldd`` reports as ``not found``, each once, in order of appearance."""
    out: list[str] = []
    for line in text.splitlines():
        m = _NOT_FOUND.match(line)
        if m and m.group(1) not in out:
            out.append(m.group(1))
    return out


def debian_package(soname: str) -> str:
    """The Debian package that ships ``soname`` (table above, else Debian's naming rule)."""
    if soname in DEBIAN_PACKAGES:
        return DEBIAN_PACKAGES[soname]
    m = re.match(r"^(.+?)\.so\.(\d+)", soname)
    if not m:
        return soname
    name, major = m.group(1).lower(), m.group(2)
    return f"{name}{'-' if name[-1].isdigit() else ''}{major}"


def missing_libraries(plugin: Path, ldd: str = "ldd") -> list[str]:
    """Sonames the plugin cannot load (``ldd`` resolves the plugin's whole dependency tree)."""
    res = subprocess.run([ldd, str(plugin)], capture_output=True, text=True, timeout=60)
    return parse_ldd(res.stdout + "\n" + res.stderr)


def advice(missing: Sequence[str]) -> str:
    """The message for the user: what is missing and the one command that installs it."""
    packages = list(dict.fromkeys(debian_package(s) for s in missing))
    return (
        "Qt cannot load its X11 (xcb) platform plugin: missing "
        + ", ".join(missing)
        + ".\nInstall them (Debian/Ubuntu) with:\n    sudo apt-get install -y "
        + " ".join(packages)
        + "\n(or run headless with QT_QPA_PLATFORM=offscreen)"
    )


def check(
    plugin: Path | None = None, env: Mapping[str, str] | None = None, ldd: str | None = None
) -> tuple[int, str]:
    """Run the check; ``(status, message)`` as described in the module docstring."""
    env = os.environ if env is None else env
    if not sys.platform.startswith("linux"):
        return 0, ""
    chosen = env.get("QT_QPA_PLATFORM", "").split(":")[0].strip()
    if chosen and chosen != "xcb":
        return 0, ""
    plugin = plugin or find_plugin()
    if plugin is None:
        return 0, "note: PySide6's xcb plugin not found; the Qt platform check was skipped"
    ldd = ldd or shutil.which("ldd")
    if ldd is None:
        return 0, "note: ldd not found; the Qt platform check was skipped"
    missing = missing_libraries(plugin, ldd)
    if not missing:
        return 0, ""
    text = advice(missing)
    if env.get("WAYLAND_DISPLAY") and not chosen:
        return 0, "warning: " + text + "\n(Qt uses its Wayland plugin in this session)"
    return 1, "error: " + text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plugin", type=Path, help="platform plugin to check (default: PySide6's)")
    args = ap.parse_args(argv)
    status, message = check(args.plugin)
    if message:
        print(f"check_qt_platform: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
