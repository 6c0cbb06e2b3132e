"""AES-GCM one-shot functions, keys and nonce helpers; HKDF-SHA256 and the session key schedule."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from enclave_stream.crypto import (
    AesGcmError,
    AesGcmKey,
    HkdfError,
    SessionCryptoKeys,
    decrypt,
    derive_key,
    derive_session_crypto_keys,
    derive_session_keys,
    encrypt,
    generate_counter_nonce,
    generate_nonce,
    import_aes_gcm_key,
)
from enclave_stream.crypto.aesgcm import (
    HKDF_INFO_CLIENT_TO_SERVER,
    HKDF_INFO_SERVER_TO_CLIENT,
    HKDF_MAX_OUTPUT_LENGTH,
    KEY_LENGTH,
    MAX_MESSAGES_PER_KEY,
    NONCE_COUNTER_LIMIT,
    NONCE_LENGTH,
    NONCE_PREFIX_LENGTH,
    TAG_LENGTH,
)
from enclave_stream.errors import EncryptionErrorCode

keys = st.sampled_from([16, 24, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n))
nonces = st.binary(min_size=12, max_size=12)
aads = st.none() | st.binary(max_size=40)


def test_constants() -> None:
    assert (NONCE_LENGTH, TAG_LENGTH, KEY_LENGTH) == (12, 16, 32)
    assert (MAX_MESSAGES_PER_KEY, NONCE_PREFIX_LENGTH, NONCE_COUNTER_LIMIT) == (2**30, 8, 2**32)


@given(keys, st.binary(max_size=2000), nonces, aads)
def test_round_trip(key_bytes: bytes, plaintext: bytes, nonce: bytes, aad: bytes | None) -> None:
    key = AesGcmKey(key_bytes)
    sealed = encrypt(key, plaintext, nonce, aad)
    assert len(sealed) == len(plaintext) + TAG_LENGTH
    # Same layout as the underlying library (ciphertext || tag), key form irrelevant.
    assert sealed == AESGCM(key_bytes).encrypt(nonce, plaintext, aad)
    assert encrypt(key_bytes, plaintext, nonce, aad) == sealed
    assert decrypt(key, sealed, nonce, aad) == plaintext
    assert decrypt(key_bytes, sealed, nonce, aad) == plaintext


@given(keys, st.binary(max_size=64), nonces, st.data())
def test_any_flipped_bit_is_refused(
    key_bytes: bytes, plaintext: bytes, nonce: bytes, data: st.DataObject
) -> None:
    sealed = bytearray(encrypt(key_bytes, plaintext, nonce))
    index = data.draw(st.integers(0, len(sealed) - 1))
    sealed[index] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(AesGcmError) as info:
        decrypt(key_bytes, bytes(sealed), nonce)
    assert info.value.code is EncryptionErrorCode.DECRYPTION_FAILED
    assert "authentication tag mismatch" in info.value.message


def test_empty_aad_equals_no_aad() -> None:
    key = AesGcmKey(bytes(32))
    assert encrypt(key, b"x", bytes(12), b"") == encrypt(key, b"x", bytes(12))


@pytest.mark.parametrize("length", [0, 8, 11, 13, 16])
def test_wrong_nonce_length_is_refused_both_ways(length: int) -> None:
    key = AesGcmKey(bytes(32))
    sealed = encrypt(key, b"data", bytes(12))
    calls: list[Callable[[], bytes]] = [
        lambda: encrypt(key, b"data", bytes(length)),
        lambda: decrypt(key, sealed, bytes(length)),
    ]
    for call in calls:
        with pytest.raises(AesGcmError) as info:
            call()
        # The reference's code, even when encrypting.
        assert info.value.code is EncryptionErrorCode.DECRYPTION_FAILED
        assert info.value.message == f"Invalid nonce length: expected 12, got {length}"


def test_ciphertext_shorter_than_tag() -> None:
    with pytest.raises(AesGcmError) as info:
        decrypt(AesGcmKey(bytes(32)), bytes(15), bytes(12))
    assert info.value.code is EncryptionErrorCode.DECRYPTION_FAILED
    assert "15 bytes" in info.value.message


@pytest.mark.parametrize("length", [0, 15, 20, 31, 33, 64])
def test_key_length_must_be_an_aes_size(length: int) -> None:
    with pytest.raises(HkdfError) as info:
        import_aes_gcm_key(bytes(length))
    assert info.value.code is EncryptionErrorCode.KEY_DERIVATION_FAILED
    assert f"got {length}" in info.value.message
    # Raw bytes given to encrypt go through the same import.
    with pytest.raises(HkdfError):
        encrypt(bytes(length), b"", bytes(12))


def test_key_object() -> None:
    secret = bytes(range(32))
    key = import_aes_gcm_key(secret)
    assert key.length == 32
    assert AesGcmKey(secret[:16]).length == 16
    assert secret.hex() not in repr(key)
    assert "AES-256" in repr(key)


def test_generate_nonce_is_random() -> None:
    nonces_seen = {generate_nonce() for _ in range(100)}
    assert len(nonces_seen) == 100
    assert all(len(n) == NONCE_LENGTH for n in nonces_seen)


@given(st.binary(min_size=8, max_size=8), st.integers(0, 2**32 - 1))
def test_counter_nonce_layout(prefix: bytes, counter: int) -> None:
    nonce = generate_counter_nonce(prefix, counter)
    assert nonce[:8] == prefix
    assert int.from_bytes(nonce[8:], "big") == counter
    assert len(nonce) == NONCE_LENGTH


@pytest.mark.parametrize("counter", [-1, -(2**32), 2**32, 2**32 + 5, 2**64])
def test_counter_nonce_never_wraps(counter: int) -> None:
    with pytest.raises(AesGcmError) as info:
        generate_counter_nonce(bytes(8), counter)
    assert info.value.code is EncryptionErrorCode.NONCE_REUSE
    assert str(counter) in info.value.message


@pytest.mark.parametrize("length", [0, 7, 9, 12])
def test_counter_nonce_prefix_length(length: int) -> None:
    with pytest.raises(AesGcmError) as info:
        generate_counter_nonce(bytes(length), 0)
    assert info.value.code is EncryptionErrorCode.NONCE_REUSE
    assert info.value.message == f"Nonce prefix must be 8 bytes, got {length}"


# --- HKDF and the session key schedule ---


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
