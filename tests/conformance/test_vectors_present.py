from __future__ import annotations

from tests.vectors import VECTORS_DIR, vectors_path

EXPECTED = [
    "ndjson_parse.json",
    "ndjson_stream.json",
    "ecdh.json",
    "hkdf.json",
    "aesgcm.json",
    "envelopes.json",
    "reconnect.json",
]


def test_vectors_present() -> None:
    """Parametrized conformance tests silently vanish if a file is missing: fail here instead."""
    for name in EXPECTED:
        assert vectors_path(name).is_file(), f"missing vector file {VECTORS_DIR / name}"
