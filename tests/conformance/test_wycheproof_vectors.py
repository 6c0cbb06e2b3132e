"""Project Wycheproof vectors for the three primitives, restricted to what the protocol uses.

* ECDH secp256r1 with raw X9.62 points: every case. ``valid`` must give the
  shared secret; ``invalid`` must be refused as an invalid public key.
  ``acceptable`` (only tcId 2, a compressed point) is refused too: the
  protocol sends uncompressed points only, so we accept nothing else.
* AES-GCM: the groups with a 256-bit key, 96-bit IV and 128-bit tag.
* HKDF-SHA256: every case.
"""

from __future__ import annotations

from typing import Any

import pytest

from enclave_stream.crypto import (
    AesGcmError,
    EcdhError,
    HkdfError,
    decrypt,
    derive_key,
    derive_shared_secret,
    encrypt,
    import_aes_gcm_key,
    import_public_key,
    to_base64,
)
from enclave_stream.crypto.ecdh import key_pair_from_private_scalar
from enclave_stream.errors import EncryptionErrorCode
from tests.vectors import load_vectors


def _tests(name: str, keep: Any = lambda group: True) -> list[Any]:
    """``(group, test)`` pairs of a Wycheproof file as pytest params with readable ids."""
    data = load_vectors(name)
    return [
        pytest.param(group, test, id=f"tc{test['tcId']}-{test['result']}")
        for group in data["testGroups"]
        if keep(group)
        for test in group["tests"]
    ]


ECDH_FILE = "wycheproof/ecdh_secp256r1_ecpoint_test.json"
AES_FILE = "wycheproof/aes_gcm_test.json"
HKDF_FILE = "wycheproof/hkdf_sha256_test.json"


def _is_protocol_gcm(group: dict[str, Any]) -> bool:
    return bool(group["keySize"] == 256 and group["ivSize"] == 96 and group["tagSize"] == 128)


@pytest.mark.parametrize(("group", "test"), _tests(ECDH_FILE))
def test_ecdh(group: dict[str, Any], test: dict[str, Any]) -> None:
    assert group["curve"] == "secp256r1"
    assert group["encoding"] == "ecpoint"
    private_key = key_pair_from_private_scalar(int(test["private"], 16)).private_key
    point = bytes.fromhex(test["public"])
    if test["result"] == "valid":
        peer = import_public_key(to_base64(point))
        assert derive_shared_secret(private_key, peer).hex() == test["shared"]
    else:
        # "invalid", and "acceptable" (compressed): refused at import.
        assert test["result"] == "invalid" or "CompressedPoint" in test["flags"]
        with pytest.raises(EcdhError) as info:
            import_public_key(to_base64(point))
        assert info.value.code is EncryptionErrorCode.INVALID_PUBLIC_KEY


def test_ecdh_file_covers_every_result_kind() -> None:
    results = {test.values[1]["result"] for test in _tests(ECDH_FILE)}
    assert results == {"valid", "invalid", "acceptable"}


@pytest.mark.parametrize(("group", "test"), _tests(AES_FILE, _is_protocol_gcm))
def test_aes_gcm(group: dict[str, Any], test: dict[str, Any]) -> None:
    key = import_aes_gcm_key(bytes.fromhex(test["key"]))
    iv, aad = bytes.fromhex(test["iv"]), bytes.fromhex(test["aad"])
    msg = bytes.fromhex(test["msg"])
    sealed = bytes.fromhex(test["ct"] + test["tag"])
    if test["result"] == "valid":
        assert encrypt(key, msg, iv, aad) == sealed
        assert decrypt(key, sealed, iv, aad) == msg
    else:
        assert test["result"] == "invalid"
        with pytest.raises(AesGcmError) as info:
            decrypt(key, sealed, iv, aad)
        assert info.value.code is EncryptionErrorCode.DECRYPTION_FAILED


def test_aes_gcm_selection_is_not_empty() -> None:
    selected = _tests(AES_FILE, _is_protocol_gcm)
    assert len(selected) > 50
    assert {p.values[1]["result"] for p in selected} == {"valid", "invalid"}


@pytest.mark.parametrize(("group", "test"), _tests(HKDF_FILE))
def test_hkdf(group: dict[str, Any], test: dict[str, Any]) -> None:
    ikm, salt = bytes.fromhex(test["ikm"]), bytes.fromhex(test["salt"])
    info_bytes = bytes.fromhex(test["info"])
    if test["result"] == "valid":
        assert derive_key(ikm, salt, info_bytes, test["size"]).hex() == test["okm"]
    else:
        with pytest.raises(HkdfError) as info:
            derive_key(ikm, salt, info_bytes, test["size"])
        assert info.value.code is EncryptionErrorCode.KEY_DERIVATION_FAILED
