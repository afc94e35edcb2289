"""PyInstaller entry point for the CLI bundle (`crc`)."""

from crc_core.cli import main

raise SystemExit(main())
