"""The measure library shipped as package data: measure YAML, shared libraries, project value sets.

This module only locates files; parsing belongs to ``definitions``.
"""

from __future__ import annotations

from pathlib import Path

LIBRARY_DIR = Path(__file__).resolve().parent
LIB_DIR = LIBRARY_DIR / "lib"
VALUESETS_DIR = LIBRARY_DIR / "valuesets"
SYNTHETIC_VALUESETS_DIR = VALUESETS_DIR / "synthetic"


def measure_files() -> list[Path]:
    """The library's measure definitions (top-level ``*.yaml``), sorted by name."""
    return sorted(LIBRARY_DIR.glob("*.yaml"))


def library_files() -> list[Path]:
    """The shared libraries that measures include (``lib/*.yaml``)."""
    return sorted(LIB_DIR.glob("*.yaml"))


def valueset_files() -> list[Path]:
    """The project's own value-set files (the synthetic world's), searched recursively."""
    return sorted(VALUESETS_DIR.rglob("*.yaml"))
