"""Loading the reference test vectors from ``../shared/vectors``.

The folder sits beside the repository (``<repo>/../shared/vectors``). A test that
needs it is skipped with a clear message only when the folder is missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
VECTORS_DIR = (REPO_ROOT / ".." / "shared" / "vectors").resolve()


def require_vectors() -> None:
    """Skip the calling test, saying why, if the vectors folder is absent."""
    if not VECTORS_DIR.is_dir():
        pytest.skip(f"reference vectors not found: {VECTORS_DIR} (expected ../shared/vectors)")


def vectors_path(name: str) -> Path:
    """Path of one vector file, skipping the calling test if the folder is absent."""
    require_vectors()
    return VECTORS_DIR / name


def load_vectors(name: str) -> dict[str, Any]:
    """Load one vector file (``ndjson_parse.json``, ``wycheproof/aes_gcm_test.json`` ...)."""
    with vectors_path(name).open(encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def cases(name: str, kind: str | None = None) -> list[dict[str, Any]]:
    """The ``cases`` of a vector file, optionally only those of one ``kind``.

    Used at collection time for ``pytest.mark.parametrize``; returns an empty
    list when the folder is missing so that collection still works (the
    ``test_vectors_present`` test then fails loudly instead).
    """
    path = VECTORS_DIR / name
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as fh:
        data = json.load(fh)
    found: list[dict[str, Any]] = data["cases"]
    if kind is not None:
        found = [c for c in found if c.get("kind") == kind]
    return found


def case_id(case: dict[str, Any]) -> str:
    """A readable pytest id for a vector case."""
    return str(case.get("id", case.get("tcId", "case")))
