"""Subcommands of `crc`: one module each, with ``register(subparsers)``; found by
``crc_core.cli``."""
