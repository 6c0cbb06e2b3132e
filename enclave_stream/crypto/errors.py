"""Errors of the crypto layer: the protocol's encryption error codes and typed exceptions.

Every error carries an :class:`EncryptionErrorCode` in ``.code`` (the wire
string the reference puts in its errors), so a caller can branch on the code
without parsing messages. The subclass says which primitive failed, as the
reference's ``EcdhError`` / ``HkdfError`` / ``AesGcmError`` do.
"""

from __future__ import annotations

__all__ = [
    "AesGcmError",
    "Base64DecodeError",
    "EcdhError",
    "EncryptionError",
    "EncryptionErrorCode",
    "HkdfError",
]

from typing import Any

from ..errors import EnclaveStreamError
from ..protocol import StrEnum


class EncryptionErrorCode(StrEnum):
    """The protocol's encryption error codes; each value is the wire string."""

    HANDSHAKE_FAILED = "ENCRYPTION_HANDSHAKE_FAILED"
    KEY_DERIVATION_FAILED = "ENCRYPTION_KEY_DERIVATION_FAILED"
    DECRYPTION_FAILED = "ENCRYPTION_DECRYPTION_FAILED"
    NONCE_REUSE = "ENCRYPTION_NONCE_REUSE"
    KEY_EXPIRED = "ENCRYPTION_KEY_EXPIRED"
    UNSUPPORTED_ALGORITHM = "ENCRYPTION_UNSUPPORTED_ALGORITHM"
    INVALID_PUBLIC_KEY = "ENCRYPTION_INVALID_PUBLIC_KEY"
    SIGNATURE_VERIFICATION_FAILED = "ENCRYPTION_SIGNATURE_VERIFICATION_FAILED"


class EncryptionError(EnclaveStreamError):
    """Base class of the crypto layer's errors.

    Attributes:
        code: the protocol error code (an :class:`EncryptionErrorCode`).
        message: what went wrong, in words.
    """

    def __init__(self, message: str, code: EncryptionErrorCode) -> None:
        self.message = message
        self.code = code
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        # The default reduce replays ``self.args`` (only the message), which
        # would lose the code when the error crosses a process boundary.
        return (type(self), (self.message, self.code))


class EcdhError(EncryptionError):
    """The key agreement failed: a bad or unsupported public key, curve or private scalar."""


class HkdfError(EncryptionError):
    """Key derivation (or importing derived bytes as an AES key) failed."""


class AesGcmError(EncryptionError):
    """Encryption or decryption failed, or a nonce could not be produced safely."""


class Base64DecodeError(EnclaveStreamError, ValueError):
    """Text is not base64 by the WHATWG forgiving-base64 rules (what ``atob`` accepts).

    Attributes:
        reason: why the text was refused.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"invalid base64: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason,))
