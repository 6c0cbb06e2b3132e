"""AES-GCM of the protocol: its keys (derived with HKDF-SHA256), nonces, encrypt and decrypt.

Each direction of a session has its own key (RFC 5869 HKDF over the ECDH
secret), so the two sides' counter nonces, which both start at 0, never meet
under one key. Ciphertexts end with the 16-byte tag (WebCrypto's layout).
Nonces are 12 bytes: random for a one-off encryption, or an 8-byte prefix and
a 32-bit big-endian counter for a key's sequence of messages
(:class:`~enclave_stream.crypto.SessionEncryptionContext`).
"""

from __future__ import annotations

__all__ = [
    "HKDF_INFO_CLIENT_TO_SERVER",
    "HKDF_INFO_SERVER_TO_CLIENT",
    "HKDF_MAX_OUTPUT_LENGTH",
    "KEY_LENGTH",
    "MAX_MESSAGES_PER_KEY",
    "NONCE_COUNTER_LIMIT",
    "NONCE_LENGTH",
    "NONCE_PREFIX_LENGTH",
    "TAG_LENGTH",
    "AesGcmKey",
    "SessionCryptoKeys",
    "SessionKeys",
    "decrypt",
    "derive_key",
    "derive_session_crypto_keys",
    "derive_session_keys",
    "encrypt",
    "generate_counter_nonce",
    "generate_nonce",
    "import_aes_gcm_key",
]

import os
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import AesGcmError, EncryptionErrorCode, HkdfError
from .encoding import utf8

NONCE_LENGTH: Final = 12
"""Bytes in an AES-GCM nonce (IV)."""

TAG_LENGTH: Final = 16
"""Bytes in the authentication tag appended to every ciphertext."""

KEY_LENGTH: Final = 32
"""Bytes in a session key (AES-256). 16- and 24-byte keys are accepted too."""

MAX_MESSAGES_PER_KEY: Final = 2**30
"""Messages one session key may encrypt before it must be rotated."""

NONCE_PREFIX_LENGTH: Final = 8
"""Random bytes in front of the 4-byte counter of a counter nonce."""

NONCE_COUNTER_LIMIT: Final = 2**32
"""Counter nonces exist for counters ``0 <= counter < NONCE_COUNTER_LIMIT`` (a uint32)."""

HKDF_INFO_CLIENT_TO_SERVER: Final = "enclavejs-c2s-enc"
"""HKDF ``info`` of the client-to-server key."""

HKDF_INFO_SERVER_TO_CLIENT: Final = "enclavejs-s2c-enc"
"""HKDF ``info`` of the server-to-client key."""

HKDF_MAX_OUTPUT_LENGTH: Final = 255 * 32
"""The most bytes HKDF-SHA256 can produce (255 blocks of the 32-byte hash)."""

# The protocol's default salt. RFC 5869 pads the HMAC key with zeros up to
# the hash block size anyway, so this equals an empty salt.
_ZERO_SALT: Final = bytes(32)
_SHA256: Final = hashes.SHA256()

_AES_KEY_LENGTHS: Final = frozenset((16, 24, 32))
_DECRYPTION_FAILED: Final = EncryptionErrorCode.DECRYPTION_FAILED
_NONCE_REUSE: Final = EncryptionErrorCode.NONCE_REUSE


class AesGcmKey:
    """An imported AES-GCM key, reusable for any number of operations.

    Holding one of these instead of raw bytes skips re-importing the key on
    every call. The key bytes are not kept as an attribute and never appear in
    ``repr``.

    Raises:
        HkdfError: (``ENCRYPTION_KEY_DERIVATION_FAILED``) the key is not 16,
            24 or 32 bytes (the protocol's code for a failed key import).
    """

    __slots__ = ("_aead", "_length")

    def __init__(self, key_bytes: bytes) -> None:
        length = len(key_bytes)
        if length not in _AES_KEY_LENGTHS:
            raise HkdfError(
                f"Failed to import AES key: an AES-GCM key is 16, 24 or 32 bytes, got {length}",
                EncryptionErrorCode.KEY_DERIVATION_FAILED,
            )
        self._aead = AESGCM(key_bytes)
        self._length = length

    @property
    def length(self) -> int:
        """Length of the key in bytes (32 for the protocol's AES-256)."""
        return self._length

    @property
    def aead(self) -> AESGCM:
        """The ``cryptography`` cipher of this key, for code that handles its exceptions itself."""
        return self._aead

    def __repr__(self) -> str:
        return f"<AesGcmKey AES-{self._length * 8}>"


def derive_key(
    shared_secret: bytes,
    salt: bytes | None,
    info: str | bytes,
    key_length: int = KEY_LENGTH,
) -> bytes:
    """Derive ``key_length`` bytes with HKDF-SHA256.

    Args:
        shared_secret: the input key material (the ECDH shared secret).
        salt: the HKDF salt; ``None`` means 32 zero bytes (same as empty).
        info: context string (encoded by :func:`~.encoding.utf8`, as
            ``TextEncoder`` does) or raw bytes.
        key_length: output length in bytes, 0 to 8160; 0 gives ``b""``.

    Raises:
        HkdfError: (``ENCRYPTION_KEY_DERIVATION_FAILED``) ``key_length`` is
            not a whole number in ``[0, 8160]``.
    """
    # bool is an int subclass, but True is not a meaningful length.
    if isinstance(key_length, bool) or not isinstance(key_length, int):
        raise HkdfError(
            f"Failed to derive key: key_length must be a whole number of bytes, got {key_length!r}",
            EncryptionErrorCode.KEY_DERIVATION_FAILED,
        )
    if not 0 <= key_length <= HKDF_MAX_OUTPUT_LENGTH:
        raise HkdfError(
            f"Failed to derive key: key_length must be between 0 and {HKDF_MAX_OUTPUT_LENGTH} "
            f"bytes (255 * SHA-256 size), got {key_length}",
            EncryptionErrorCode.KEY_DERIVATION_FAILED,
        )
    if key_length == 0:
        return b""  # WebCrypto allows a zero-bit derivation; cryptography's HKDF does too.
    info_bytes = utf8(info) if isinstance(info, str) else info
    kdf = HKDF(
        algorithm=_SHA256,
        length=key_length,
        salt=_ZERO_SALT if salt is None else salt,
        info=info_bytes,
    )
    return kdf.derive(shared_secret)


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """The two raw 32-byte keys of a session (kept out of ``repr``)."""

    client_to_server_key: bytes = field(repr=False)
    """Encrypts what the client sends."""
    server_to_client_key: bytes = field(repr=False)
    """Encrypts what the server sends."""


@dataclass(frozen=True, slots=True)
class SessionCryptoKeys:
    """The two keys of a session, imported as reusable :class:`AesGcmKey` objects."""

    client_to_server_key: AesGcmKey
    """Encrypts what the client sends."""
    server_to_client_key: AesGcmKey
    """Encrypts what the server sends."""


def derive_session_keys(shared_secret: bytes, session_id: str) -> SessionKeys:
    """Derive both directions' keys: salt = UTF-8 of the session id (not validated).

    >>> keys = derive_session_keys(bytes(32), "s_x")
    >>> len(keys.client_to_server_key), keys.client_to_server_key == keys.server_to_client_key
    (32, False)
    """
    salt = utf8(session_id)
    return SessionKeys(
        client_to_server_key=derive_key(shared_secret, salt, HKDF_INFO_CLIENT_TO_SERVER),
        server_to_client_key=derive_key(shared_secret, salt, HKDF_INFO_SERVER_TO_CLIENT),
    )


def import_aes_gcm_key(key_bytes: bytes) -> AesGcmKey:
    """Import raw bytes (16, 24 or 32 of them) as an AES-GCM key.

    Raises:
        HkdfError: (``ENCRYPTION_KEY_DERIVATION_FAILED``) any other length.
    """
    return AesGcmKey(key_bytes)


def derive_session_crypto_keys(shared_secret: bytes, session_id: str) -> SessionCryptoKeys:
    """:func:`derive_session_keys`, with both keys imported as :class:`AesGcmKey`."""
    keys = derive_session_keys(shared_secret, session_id)
    return SessionCryptoKeys(
        client_to_server_key=AesGcmKey(keys.client_to_server_key),
        server_to_client_key=AesGcmKey(keys.server_to_client_key),
    )


def _aead_of(key: AesGcmKey | bytes) -> AESGCM:
    return (key if isinstance(key, AesGcmKey) else AesGcmKey(key)).aead


def _bad_nonce_length(length: int) -> AesGcmError:
    # The protocol's code for a bad nonce, when encrypting too.
    return AesGcmError(
        f"Invalid nonce length: expected {NONCE_LENGTH}, got {length}", _DECRYPTION_FAILED
    )


def encrypt(
    key: AesGcmKey | bytes,
    plaintext: bytes,
    nonce: bytes,
    additional_data: bytes | None = None,
) -> bytes:
    """Encrypt with AES-GCM; returns the ciphertext with the 16-byte tag appended.

    Args:
        key: an :class:`AesGcmKey`, or raw key bytes (imported on each call).
        plaintext: the bytes to encrypt.
        nonce: exactly 12 bytes, never used twice with the same key.
        additional_data: authenticated but unencrypted bytes; ``None`` and
            ``b""`` are equivalent.

    Raises:
        AesGcmError: (``ENCRYPTION_DECRYPTION_FAILED``, the protocol's code
            even here) the nonce is not 12 bytes, or the cipher refused the input.
        HkdfError: raw key bytes of a length AES does not have.
    """
    if len(nonce) != NONCE_LENGTH:
        raise _bad_nonce_length(len(nonce))
    aead = _aead_of(key)
    try:
        return aead.encrypt(nonce, plaintext, additional_data)
    except (OverflowError, ValueError) as exc:  # e.g. input beyond GCM's length limit
        raise AesGcmError(f"Encryption failed: {exc}", _DECRYPTION_FAILED) from exc


def decrypt(
    key: AesGcmKey | bytes,
    ciphertext: bytes,
    nonce: bytes,
    additional_data: bytes | None = None,
) -> bytes:
    """Check and decrypt an AES-GCM ciphertext that has its 16-byte tag appended.

    Raises:
        AesGcmError: (``ENCRYPTION_DECRYPTION_FAILED``) the nonce is not 12
            bytes, the ciphertext is shorter than the tag, or authentication
            failed (wrong key, nonce or additional data, or altered bytes).
        HkdfError: raw key bytes of a length AES does not have.
    """
    if len(nonce) != NONCE_LENGTH:
        raise _bad_nonce_length(len(nonce))
    if len(ciphertext) < TAG_LENGTH:
        raise AesGcmError(
            f"Decryption failed: ciphertext is {len(ciphertext)} bytes, shorter than "
            f"the {TAG_LENGTH}-byte authentication tag",
            _DECRYPTION_FAILED,
        )
    aead = _aead_of(key)
    try:
        return aead.decrypt(nonce, ciphertext, additional_data)
    except InvalidTag:
        raise AesGcmError(
            "Decryption failed: authentication tag mismatch (wrong key, nonce or "
            "additional data, or the ciphertext was altered)",
            _DECRYPTION_FAILED,
        ) from None
    except (OverflowError, ValueError) as exc:
        raise AesGcmError(f"Decryption failed: {exc}", _DECRYPTION_FAILED) from exc


def generate_nonce() -> bytes:
    """Twelve random bytes from the OS CSPRNG, for a one-off encryption."""
    return os.urandom(NONCE_LENGTH)


def generate_counter_nonce(prefix: bytes, counter: int) -> bytes:
    """The nonce ``prefix || uint32_be(counter)``.

    Any counter outside ``[0, 2**32)`` is refused rather than wrapped: a
    wrapped counter would repeat an earlier nonce, and a repeated GCM nonce
    under one key leaks the authentication key (compatibility row C1).

    Raises:
        AesGcmError: (``ENCRYPTION_NONCE_REUSE``) the prefix is not 8 bytes, or
            the counter does not fit in 32 unsigned bits.
    """
    if len(prefix) != NONCE_PREFIX_LENGTH:
        raise AesGcmError(
            f"Nonce prefix must be {NONCE_PREFIX_LENGTH} bytes, got {len(prefix)}", _NONCE_REUSE
        )
    try:
        # to_bytes raises OverflowError for negatives and for >= 2**32: the
        # range check costs nothing on the success path.
        return prefix + counter.to_bytes(4, "big")
    except OverflowError:
        raise AesGcmError(
            f"Nonce counter {counter} is outside [0, 2**32): a 32-bit counter nonce would "
            "wrap and repeat an earlier nonce; rotate the key instead",
            _NONCE_REUSE,
        ) from None
