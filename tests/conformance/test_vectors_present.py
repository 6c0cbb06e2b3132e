"""The vector files ship with the repository, each readable and non-empty."""

from __future__ import annotations

import pytest

from tests.vectors import VECTORS_DIR, MissingVectorsError, load_vectors, vectors_path

REFERENCE = [
    "ndjson_parse.json",
    "ndjson_stream.json",
    "ecdh.json",
    "hkdf.json",
    "aesgcm.json",
    "envelopes.json",
    "reconnect.json",
]
WYCHEPROOF = [
    "wycheproof/aes_gcm_test.json",
    "wycheproof/ecdh_secp256r1_ecpoint_test.json",
    "wycheproof/hkdf_sha256_test.json",
]


@pytest.mark.parametrize("name", REFERENCE)
def test_reference_file_has_cases(name: str) -> None:
    assert load_vectors(name)["cases"]


@pytest.mark.parametrize("name", WYCHEPROOF)
def test_wycheproof_file_has_tests(name: str) -> None:
    groups = load_vectors(name)["testGroups"]
    assert sum(len(group["tests"]) for group in groups) > 0


def test_wycheproof_licence_and_provenance_are_kept() -> None:
    assert "Apache License" in vectors_path("wycheproof/LICENSE").read_text(encoding="utf-8")
    assert "commit" in vectors_path("wycheproof/README.md").read_text(encoding="utf-8")


def test_no_file_is_left_unchecked() -> None:
    """A new vector file must be added to the lists above (and so to a test)."""
    found = {str(p.relative_to(VECTORS_DIR)) for p in VECTORS_DIR.rglob("*.json")}
    assert found == set(REFERENCE + WYCHEPROOF)


def test_a_missing_file_fails_instead_of_skipping() -> None:
    with pytest.raises(MissingVectorsError, match="vector file missing"):
        load_vectors("no_such_file.json")
