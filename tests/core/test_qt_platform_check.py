"""tools/check_qt_platform.py: which Debian packages Qt's xcb plugin is missing (no Qt imported)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location(
    "check_qt_platform", ROOT / "tools" / "check_qt_platform.py"
)
cqp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cqp)

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="ldd check is Linux-only"
)


def test_real_ldd_output_of_a_fresh_debian_names_every_missing_package():
    # `ldd libqxcb.so` of PySide6 6.12 on Debian 12 with only libxcb-cursor0 installed
    text = (ROOT / "tests" / "data" / "ldd_libqxcb_debian12.txt").read_text()
    missing = cqp.parse_ldd(text)
    assert missing == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1"]
    msg = cqp.advice(missing)
    assert "sudo apt-get install -y libxcb-icccm4 libxcb-keysyms1" in msg


def test_debian_package_names_follow_debian_rules_for_unknown_libraries():
    assert cqp.debian_package("libxcb-cursor.so.0") == "libxcb-cursor0"
    assert cqp.debian_package("libxkbcommon-x11.so.0") == "libxkbcommon-x11-0"
    assert cqp.debian_package("libxcb-foo.so.2") == "libxcb-foo2"
    assert cqp.debian_package("libFoo2.so.5") == "libfoo2-5"


@linux_only
def test_a_plugin_with_a_missing_library_fails_and_names_its_package(tmp_path):
    gcc, ldd = shutil.which("gcc"), shutil.which("ldd")
    if gcc is None or ldd is None:
        pytest.skip("needs gcc and ldd to build a plugin with a missing library")
    lib = tmp_path / "lib"
    lib.mkdir()
    (tmp_path / "dep.c").write_text("int crc_dep(void) { return 1; }\n")
    (tmp_path / "plugin.c").write_text(
        "extern int crc_dep(void);\nint f(void) { return crc_dep(); }\n"
    )
    dep = lib / "libcrc-absent.so.3"
    subprocess.run([gcc, "-shared", "-fPIC", "-o", str(dep), "-Wl,-soname,libcrc-absent.so.3",
                    str(tmp_path / "dep.c")], check=True)
    plugin = tmp_path / "libqxcb.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-o", str(plugin), str(tmp_path / "plugin.c"),
                    str(dep), "-Wl,-rpath,$ORIGIN/lib"], check=True)
    assert cqp.check(plugin, env={}) == (0, "")  # the library is there: nothing to say
    dep.unlink()
    status, msg = cqp.check(plugin, env={})
    assert status == 1
    assert "libcrc-absent.so.3" in msg and "apt-get install -y libcrc-absent3" in msg
    # another platform chosen: nothing to check; a Wayland session: a warning only
    assert cqp.check(plugin, env={"QT_QPA_PLATFORM": "offscreen"}) == (0, "")
    status, msg = cqp.check(plugin, env={"WAYLAND_DISPLAY": "wayland-0"})
    assert status == 0 and msg.startswith("warning:")


@linux_only
def test_the_script_exits_non_zero_with_the_install_line(tmp_path):
    plugin = cqp.find_plugin()
    if plugin is None or shutil.which("ldd") is None:
        pytest.skip("PySide6's xcb plugin or ldd not available")
    missing = cqp.missing_libraries(plugin)
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "check_qt_platform.py")],
                         capture_output=True, text=True, env=env)
    if missing:
        assert res.returncode == 1
        for soname in missing:
            assert cqp.debian_package(soname) in res.stderr
    else:
        assert res.returncode == 0 and res.stderr == ""
