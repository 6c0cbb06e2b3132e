"""HKDF-SHA256 key derivation and the session key schedule."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enclave_stream.crypto import (
    HkdfError,
    SessionCryptoKeys,
    derive_key,
    derive_session_crypto_keys,
    derive_session_keys,
)
from enclave_stream.crypto.hkdf import (
    HKDF_INFO_CLIENT_TO_SERVER,
    HKDF_INFO_SERVER_TO_CLIENT,
    HKDF_MAX_OUTPUT_LENGTH,
)
from enclave_stream.errors import EncryptionErrorCode


def rfc5869_oracle(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 written out with the standard library's HMAC, as an independent oracle."""
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    out, block = b"", b""
    counter = 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


@given(st.binary(max_size=80), st.binary(max_size=40), st.binary(max_size=40), st.integers(0, 600))
def test_matches_rfc5869(ikm: bytes, salt: bytes, info: bytes, length: int) -> None:
    assert derive_key(ikm, salt, info, length) == rfc5869_oracle(ikm, salt, info, length)


def test_info_constants() -> None:
    assert HKDF_INFO_CLIENT_TO_SERVER == "enclavejs-c2s-enc"
    assert HKDF_INFO_SERVER_TO_CLIENT == "enclavejs-s2c-enc"
    assert HKDF_MAX_OUTPUT_LENGTH == 8160


def test_missing_salt_is_32_zero_bytes() -> None:
    secret = bytes(range(32))
    expected = derive_key(secret, bytes(32), "x")
    assert derive_key(secret, None, "x") == expected
    assert derive_key(secret, b"", "x") == expected
    assert derive_key(secret, b"\x01", "x") != expected


def test_string_info_is_utf8() -> None:
    secret = bytes(32)
    assert derive_key(secret, None, "café") == derive_key(secret, None, "café".encode())


def test_lone_surrogates_encode_like_text_encoder() -> None:
    """JavaScript's TextEncoder writes U+FFFD for a lone surrogate and joins a pair."""
    secret = bytes(32)
    assert derive_key(secret, None, "a\ud800b") == derive_key(secret, None, b"a\xef\xbf\xbdb")
    assert derive_key(secret, None, "\ud83d\ude00") == derive_key(secret, None, "😀".encode())
    keys = derive_session_keys(secret, "s_\udfff")
    assert keys == derive_session_keys(secret, "s_\ufffd")


def test_zero_length_gives_empty_bytes() -> None:
    assert derive_key(bytes(32), None, "x", 0) == b""


def test_max_length() -> None:
    assert len(derive_key(bytes(32), None, "x", HKDF_MAX_OUTPUT_LENGTH)) == 8160


@pytest.mark.parametrize("length", [-1, 8161, 10**6, 1.5, True, "32", None])
def test_bad_lengths_are_refused(length: object) -> None:
    with pytest.raises(HkdfError) as info:
        derive_key(bytes(32), None, "x", length)  # type: ignore[arg-type]
    assert info.value.code is EncryptionErrorCode.KEY_DERIVATION_FAILED
    assert info.value.message.startswith("Failed to derive key: key_length")
    assert repr(length) in info.value.message or str(length) in info.value.message


def test_session_keys_are_per_direction() -> None:
    secret = bytes(range(32))
    keys = derive_session_keys(secret, "s_abc")
    salt = b"s_abc"
    assert keys.client_to_server_key == derive_key(secret, salt, "enclavejs-c2s-enc")
    assert keys.server_to_client_key == derive_key(secret, salt, "enclavejs-s2c-enc")
    assert keys.client_to_server_key != keys.server_to_client_key
    assert derive_session_keys(secret, "s_abd") != keys  # the session id is the salt


def test_session_key_reprs_hide_keys() -> None:
    keys = derive_session_keys(bytes(32), "s_x")
    assert keys.client_to_server_key.hex() not in repr(keys)
    crypto_keys = derive_session_crypto_keys(bytes(32), "s_x")
    assert isinstance(crypto_keys, SessionCryptoKeys)
    assert keys.client_to_server_key.hex() not in repr(crypto_keys)
    assert crypto_keys.client_to_server_key.length == 32


@given(st.binary(min_size=32, max_size=32), st.text(max_size=40))
def test_session_keys_share_one_extract(secret: bytes, session_id: str) -> None:
    """One Extract and two single-block Expands give the bytes of two full HKDFs."""
    keys = derive_session_keys(secret, session_id)
    salt = session_id.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace").encode()
    assert keys.client_to_server_key == rfc5869_oracle(secret, salt, b"enclavejs-c2s-enc", 32)
    assert keys.server_to_client_key == rfc5869_oracle(secret, salt, b"enclavejs-s2c-enc", 32)
