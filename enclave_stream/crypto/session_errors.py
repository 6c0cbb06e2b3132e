"""Errors of the envelope, handshake and session layers.

Both kinds keep the protocol's :class:`EncryptionErrorCode` in ``.code``; an
envelope error also names the exact check that failed in ``.reason``, so a
caller (or a test) can tell a replay from a forgery without parsing messages.
"""

from __future__ import annotations

__all__ = ["EnvelopeError", "EnvelopeErrorReason", "HandshakeError"]

from typing import Any

from ..protocol import StrEnum
from .errors import AesGcmError, EcdhError, EncryptionErrorCode


class EnvelopeErrorReason(StrEnum):
    """Which check refused an envelope (or an event to seal)."""

    AUTHENTICATION_FAILED = "authentication_failed"
    """The AES-GCM tag did not verify: wrong key, altered bytes, or a forgery."""
    SESSION_FAILED = "session_failed"
    """An earlier envelope failed authentication; the session accepts no more input."""
    UNKNOWN_KEY_ID = "unknown_key_id"
    """The envelope's ``kid`` is not the session's key id."""
    REPLAY = "replay"
    """The nonce was already accepted under this key (or is older than the replay window)."""
    SESSION_MISMATCH = "session_mismatch"
    """A session id differs: envelope vs. session, or inner event vs. envelope."""
    SEQ_MISMATCH = "seq_mismatch"
    """The inner event's ``seq`` differs from the envelope's."""
    SEQ_REGRESSION = "seq_regression"
    """The envelope's ``seq`` is not above the last accepted one."""
    INVALID_ENCODING = "invalid_encoding"
    """``nonceB64`` or ``ciphertextB64`` is not base64, or the nonce is not 12 bytes."""
    INVALID_PLAINTEXT = "invalid_plaintext"
    """The authentic plaintext is not JSON, not a valid event, or is itself an envelope."""
    INVALID_EVENT = "invalid_event"
    """An event handed to ``seal`` cannot be sealed (wrong type or session)."""
    PLAINTEXT_REFUSED = "plaintext_refused"
    """A plaintext event arrived where encryption is required."""
    TRUNCATED = "truncated"
    """The stream ended before its ``final`` event (when one is required)."""


class EnvelopeError(AesGcmError):
    """An envelope was refused, or an event could not be sealed.

    A subclass of :class:`AesGcmError` (the reference reports every envelope
    failure as one), so ``except AesGcmError`` still catches it.

    Attributes:
        code: the protocol error code (``ENCRYPTION_DECRYPTION_FAILED`` for
            most reasons, ``ENCRYPTION_NONCE_REUSE`` for a replay).
        reason: the :class:`EnvelopeErrorReason` naming the failed check.
        message: what went wrong, in words.
    """

    def __init__(
        self,
        message: str,
        reason: EnvelopeErrorReason,
        code: EncryptionErrorCode = EncryptionErrorCode.DECRYPTION_FAILED,
    ) -> None:
        self.reason = reason
        super().__init__(message, code)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.reason, self.code))


class HandshakeError(EcdhError):
    """A hello message was refused, or the server's signature did not verify.

    A subclass of :class:`EcdhError`, as the reference reports every hello
    failure. The code says which: ``ENCRYPTION_UNSUPPORTED_ALGORITHM`` (another
    curve, cipher or KDF), ``ENCRYPTION_SIGNATURE_VERIFICATION_FAILED``, or
    ``ENCRYPTION_HANDSHAKE_FAILED`` (any other malformed hello). A bad public
    key is an :class:`EcdhError` with ``ENCRYPTION_INVALID_PUBLIC_KEY``.
    """
