"""Helpers for tests, benchmarks and tools; not shipped (pyproject's package find leaves it out).

:mod:`crc_testkit.synthetic` writes pyramidal test slides from procedural or real tiles. Tests
import it through pytest's ``pythonpath`` (the repository root); benchmarks and tools put the
repository root on ``sys.path`` first.
"""
