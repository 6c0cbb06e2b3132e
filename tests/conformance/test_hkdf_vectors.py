"""hkdf.json: HKDF-SHA256 and the session key schedule against the reference."""

from __future__ import annotations

from typing import Any

import pytest

from enclave_stream.crypto import (
    AesGcmKey,
    HkdfError,
    decrypt,
    derive_key,
    derive_session_crypto_keys,
    derive_session_keys,
    encrypt,
)
from enclave_stream.errors import EncryptionErrorCode
from tests.vectors import case_id, cases

FILE = "hkdf.json"


@pytest.mark.parametrize("case", cases(FILE, "derive_key"), ids=case_id)
def test_derive_key(case: dict[str, Any]) -> None:
    secret = bytes.fromhex(case["secret_hex"])
    salt = None if case["salt_hex"] is None else bytes.fromhex(case["salt_hex"])
    assert case["info"].encode() == bytes.fromhex(case["info_hex"])
    if case["accept"]:
        expected = case["output_hex"]
        assert derive_key(secret, salt, case["info"], case["key_length"]).hex() == expected
        # info given as the raw bytes derives the same key.
        info_bytes = bytes.fromhex(case["info_hex"])
        assert derive_key(secret, salt, info_bytes, case["key_length"]).hex() == expected
        if case["key_length"] == 32:
            assert derive_key(secret, salt, case["info"]).hex() == expected
    else:
        with pytest.raises(HkdfError) as info:
            derive_key(secret, salt, case["info"], case["key_length"])
        assert info.value.code == case["error"]["code"]
        assert info.value.code is EncryptionErrorCode.KEY_DERIVATION_FAILED
        assert str(case["key_length"]) in info.value.message


@pytest.mark.parametrize("case", cases(FILE, "derive_session_keys"), ids=case_id)
def test_derive_session_keys(case: dict[str, Any]) -> None:
    secret = bytes.fromhex(case["secret_hex"])
    keys = derive_session_keys(secret, case["session_id"])
    assert keys.client_to_server_key.hex() == case["client_to_server_hex"]
    assert keys.server_to_client_key.hex() == case["server_to_client_hex"]

    # The imported forms are the same keys: check by encrypting with each.
    crypto_keys = derive_session_crypto_keys(secret, case["session_id"])
    nonce = bytes(12)
    for raw, imported in (
        (keys.client_to_server_key, crypto_keys.client_to_server_key),
        (keys.server_to_client_key, crypto_keys.server_to_client_key),
    ):
        assert isinstance(imported, AesGcmKey)
        sealed = encrypt(imported, b"probe", nonce)
        assert sealed == encrypt(raw, b"probe", nonce)
        assert decrypt(raw, sealed, nonce) == b"probe"
