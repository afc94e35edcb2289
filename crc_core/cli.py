"""`crc`: the command-line face of the workbench (argparse).

Each subcommand lives in ``crc_core/commands/<name>.py`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func=run(args) -> int``. Subcommands are found automatically.
Errors meant for the user (:class:`~crc_core.errors.CrcError`) print one line on stderr and exit 2;
Ctrl-C exits 130. Runs under ``torchrun -m crc_core.cli ...`` as well.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
import warnings
from collections.abc import Sequence

from crc_core import __version__
from crc_core.errors import CrcError, error_message

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse prints usage on errors; keep it to one line and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="crc",
        description="CRC Workbench: colorectal whole-slide viewing, annotation, datasets, "
        "training, evaluation and prediction.",
    )
    parser.add_argument("--version", action="version", version=f"crc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    import crc_core.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"crc_core.commands.{info.name}")
        module.register(sub)
    return parser


def warn(message: str) -> None:
    """One warning line on stderr (used by subcommands for repaired input and skipped items; a
    job's warnings are printed likewise by :func:`crc_core.cli_progress.drive_with_bar`)."""
    from crc_core.cli_progress import warning_line

    sys.stderr.write(warning_line(message))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="crc: %(levelname)s: %(message)s",
    )
    if not args.verbose:
        warnings.filterwarnings("ignore")
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except CrcError as exc:
        sys.stderr.write(f"crc: error: {error_message(exc)}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("crc: interrupted\n")
        return 130
    except BrokenPipeError:
        return EXIT_ERROR
    except OSError as exc:
        # Disk full, permission denied, ...: name the file and the problem, never a traceback.
        sys.stderr.write(f"crc: error: {error_message(exc)}\n")
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
