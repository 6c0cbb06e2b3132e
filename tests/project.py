"""The repository's own files, read the same way on every supported Python."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest itself depends on tomli below 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def load_toml(text: str) -> dict[str, Any]:
    """Parse TOML text (``pyproject.toml``)."""
    return tomllib.loads(text)


def pyproject() -> dict[str, Any]:
    """The parsed ``pyproject.toml``."""
    return load_toml((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
