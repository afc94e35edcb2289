"""PyInstaller entry point for the GUI bundle (`crc-viewer`)."""

from app.__main__ import main

raise SystemExit(main())
