"""Loading the recorded test vectors from ``tests/vectors/``.

The files are the reference's recorded behaviour and a trimmed Wycheproof copy
(provenance in ``docs/protocol.md``). They ship with the repository, so a
missing or unreadable file is a test failure with a message naming it, never a
skip: a conformance test that silently vanished would prove nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS_DIR = Path(__file__).resolve().parent / "vectors"


class MissingVectorsError(AssertionError):
    """A vector file is missing or unreadable; the repository copy is incomplete."""


def vectors_path(name: str) -> Path:
    """Path of one vector file; fails if it is not there."""
    path = VECTORS_DIR / name
    if not path.is_file():
        raise MissingVectorsError(f"vector file missing: {path} (restore tests/vectors/ from git)")
    return path


def load_vectors(name: str) -> dict[str, Any]:
    """Load one vector file (``ndjson_parse.json``, ``wycheproof/aes_gcm_test.json`` ...)."""
    path = vectors_path(name)
    try:
        with path.open(encoding="utf-8") as fh:
            data: dict[str, Any] = json.load(fh)
    except (OSError, ValueError) as exc:
        raise MissingVectorsError(f"vector file unreadable: {path}: {exc}") from exc
    return data


def cases(name: str, kind: str | None = None) -> list[dict[str, Any]]:
    """The ``cases`` of a vector file, optionally only those of one ``kind``.

    Used at collection time for ``pytest.mark.parametrize``: a missing file
    raises, so the collection error names it and the run fails.
    """
    found: list[dict[str, Any]] = load_vectors(name)["cases"]
    if kind is not None:
        found = [c for c in found if c.get("kind") == kind]
    if not found:
        raise MissingVectorsError(f"no {kind or ''} cases in {VECTORS_DIR / name}")
    return found


def case_id(case: dict[str, Any]) -> str:
    """A readable pytest id for a vector case."""
    return str(case.get("id", case.get("tcId", "case")))
