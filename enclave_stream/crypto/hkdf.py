"""HKDF-SHA256 (RFC 5869) key derivation: from the ECDH secret to the two session keys.

Each direction of a session gets its own key, so the client's and the
server's counter nonces (which both start at 0) never meet under one key.
"""

from __future__ import annotations

__all__ = [
    "HKDF_INFO_CLIENT_TO_SERVER",
    "HKDF_INFO_SERVER_TO_CLIENT",
    "HKDF_MAX_OUTPUT_LENGTH",
    "SessionCryptoKeys",
    "SessionKeys",
    "derive_key",
    "derive_session_crypto_keys",
    "derive_session_keys",
    "import_aes_gcm_key",
]

from dataclasses import dataclass, field
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import EncryptionErrorCode, HkdfError
from .aesgcm import KEY_LENGTH, AesGcmKey
from .encoding import utf8

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
