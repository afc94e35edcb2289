"""One formatter from an exception to the line a user reads (``crc_core.errors.error_message``)."""

from __future__ import annotations

import errno

from crc_core.cli import main
from crc_core.errors import OUT_OF_MEMORY, ConfigError, error_message


def test_error_messages():
    assert error_message(ConfigError("--lr 20 must be a positive number below 10")) == \
        "--lr 20 must be a positive number below 10"
    disk = OSError(errno.ENOSPC, "No space left on device", "/data/run/last.pt")
    assert error_message(disk) == "/data/run/last.pt: No space left on device"
    assert error_message(OSError("broken")) == "broken"
    assert error_message(MemoryError()) == OUT_OF_MEMORY
    assert error_message(KeyError("arch")) == "KeyError: 'arch'"


def test_the_cli_prints_the_same_line(capsys, tmp_path, monkeypatch):
    import crc_core.commands.compare as compare

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "report.html"))

    monkeypatch.setattr(compare, "run", full)
    assert main(["compare", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err == f"crc: error: {tmp_path / 'report.html'}: No space left on device\n"
