"""The plaintext and base64 framing shared by envelopes, contexts and sessions.

An envelope's plaintext is the inner event's JSON exactly as the reference's
``JSON.stringify`` writes it (the validating :class:`~enclave_stream.EventEncoder`
gives those bytes), and a decrypted plaintext is judged like any received line.
This module holds only that framing; it knows nothing about keys.
"""

from __future__ import annotations

__all__ = [
    "STREAM_EVENT_TYPES",
    "InnerEvent",
    "authentication_failed",
    "NONCE_LENGTH",
    "b64decode",
    "b64decode_canonical",
    "canonical_payload_bytes",
    "check_envelope_fields",
    "coerce_inner",
    "coerce_payload",
    "decode_inner",
    "encode_inner",
    "invalid_plaintext",
    "payload_bytes",
    "to_b64",
    "undecryptable",
]

import binascii
import sys
from collections.abc import Mapping
from typing import Any, Final, TypeAlias, cast

from ..codec import DecodeFailure, decode_event, decode_message, encode_event, validate_event
from ..errors import (
    Base64DecodeError,
    EnvelopeError,
    EnvelopeErrorReason,
    EventValidationError,
    ProtocolError,
)
from ..events import (
    STREAM_EVENT_CLASSES,
    EncryptedEnvelope,
    EncryptedEnvelopePayload,
    StreamEvent,
)
from ..protocol import MAX_SAFE_INTEGER, is_session_id
from ._b64 import from_base64

STREAM_EVENT_TYPES: Final = frozenset(STREAM_EVENT_CLASSES)
"""The 12 plaintext event classes: what an envelope may carry."""

InnerEvent: TypeAlias = StreamEvent | Mapping[str, Any]
"""What may be encrypted: a typed plaintext event, or its wire form as a mapping."""

NONCE_LENGTH: Final = 12
_INVALID_EVENT: Final = EnvelopeErrorReason.INVALID_EVENT


def to_b64(data: bytes) -> str:
    """Standard padded base64 (``btoa``'s output)."""
    return binascii.b2a_base64(data, newline=False).decode("ascii")


_NONCE_B64_LENGTH: Final = 16  # 12 bytes, no padding

if sys.version_info >= (3, 11):

    def b64decode_canonical(text: str) -> bytes:
        """Decode canonical padded base64 only; raise ``ValueError`` for anything else.

        What this accepts, ``atob`` decodes to the same bytes; for the rest,
        ask :func:`b64decode` (or :func:`from_base64`) for the exact verdict.
        """
        # Strict binascii still takes '=' after a complete quantum ("QUJD=");
        # with a length that is a multiple of 4, that shows as "===" at the end.
        if len(text) % 4 or text.endswith("==="):
            raise ValueError("not canonical base64")
        return binascii.a2b_base64(text, strict_mode=True)

    def canonical_payload_bytes(nonce_b64: str, ciphertext_b64: str) -> tuple[bytes, bytes]:
        """``(nonce, ciphertext)`` when both are canonical base64 and the nonce is 12 bytes.

        Raises ``ValueError`` (or ``TypeError``) otherwise: then
        :func:`payload_bytes` gives ``atob``'s verdict. This is
        :func:`b64decode_canonical` twice, in one call, for the hot path.
        """
        if (
            len(nonce_b64) != _NONCE_B64_LENGTH
            or len(ciphertext_b64) % 4
            or ciphertext_b64.endswith("===")
        ):
            raise ValueError("not canonical base64")
        nonce = binascii.a2b_base64(nonce_b64, strict_mode=True)
        if len(nonce) != NONCE_LENGTH:  # "...==" is canonical but too short
            raise ValueError("not a 12-byte nonce")
        return nonce, binascii.a2b_base64(ciphertext_b64, strict_mode=True)

else:  # pragma: no cover - Python 3.10 has no strict mode

    def b64decode_canonical(text: str) -> bytes:
        """Decode base64 as ``atob`` does (3.10 has no strict ``binascii`` mode)."""
        return from_base64(text)  # Base64DecodeError is a ValueError

    def canonical_payload_bytes(nonce_b64: str, ciphertext_b64: str) -> tuple[bytes, bytes]:
        """``(nonce, ciphertext)``, or ``ValueError`` (see the 3.11+ version)."""
        nonce = from_base64(nonce_b64)
        if len(nonce) != NONCE_LENGTH:
            raise ValueError("not a 12-byte nonce")
        return nonce, from_base64(ciphertext_b64)


def b64decode(text: str) -> bytes:
    """Base64 as ``atob`` reads it, fast for canonical text.

    Strict ``binascii`` accepts only canonical padded base64, which ``atob``
    decodes to the same bytes; anything else (whitespace, missing padding,
    bad characters) gets :func:`from_base64`'s exact verdict.
    """
    try:
        return b64decode_canonical(text)
    except (ValueError, TypeError):  # binascii.Error is a ValueError
        return from_base64(text)


def coerce_inner(event: object) -> StreamEvent:
    """``event`` as a typed plaintext event; a mapping is validated first.

    Raises:
        EnvelopeError: (``invalid_event``) an envelope, or not an event at all.
        EventValidationError: a mapping that breaks the schema.
    """
    if type(event) in STREAM_EVENT_TYPES:
        return cast(StreamEvent, event)
    if isinstance(event, Mapping):
        event = validate_event(event)
        if type(event) in STREAM_EVENT_TYPES:
            return cast(StreamEvent, event)
    if isinstance(event, EncryptedEnvelope):
        # The reference would encrypt anything; an envelope inside an envelope
        # has no meaning in the protocol and could only confuse a receiver.
        raise EnvelopeError("An enc envelope cannot be encrypted again", _INVALID_EVENT)
    raise EnvelopeError(
        f"Expected a protocol event or a mapping, got {type(event).__name__}", _INVALID_EVENT
    )


def encode_inner(event: object) -> bytes:
    """The plaintext of an envelope: the event's JSON, validated, in the reference's bytes."""
    return encode_event(coerce_inner(event))


def decode_inner(plaintext: bytes) -> StreamEvent:
    """Judge a decrypted plaintext as a received event.

    Raises:
        EnvelopeError: (``invalid_plaintext``) not JSON, not a valid event, or
            an ``enc`` envelope.
    """
    result = decode_event(plaintext)
    if type(result) in STREAM_EVENT_TYPES:
        return cast(StreamEvent, result)
    raise invalid_plaintext(result)


def invalid_plaintext(result: object) -> EnvelopeError:
    """The error for a plaintext that :func:`~enclave_stream.wire.decode_event` did not
    turn into a plaintext event (``result`` is its :class:`DecodeFailure` or envelope)."""
    if isinstance(result, DecodeFailure):
        return EnvelopeError(
            f"Decrypted plaintext is not a valid event: {result.message}",
            EnvelopeErrorReason.INVALID_PLAINTEXT,
        )
    return EnvelopeError(
        "Decrypted plaintext is an enc envelope: nested envelopes are refused",
        EnvelopeErrorReason.INVALID_PLAINTEXT,
    )


def coerce_payload(payload: object) -> EncryptedEnvelopePayload:
    """An envelope payload, validated when given as a mapping (its wire form)."""
    if type(payload) is EncryptedEnvelopePayload:
        return payload
    if isinstance(payload, Mapping):
        try:
            return decode_message(payload, EncryptedEnvelopePayload)
        except (EventValidationError, ProtocolError) as exc:
            raise EnvelopeError(
                f"Invalid envelope payload: {exc}", EnvelopeErrorReason.INVALID_ENCODING
            ) from None
    raise EnvelopeError(
        f"Expected an EncryptedEnvelopePayload or a mapping, got {type(payload).__name__}",
        EnvelopeErrorReason.INVALID_ENCODING,
    )


def payload_bytes(payload: EncryptedEnvelopePayload) -> tuple[bytes, bytes]:
    """``(nonce, ciphertext_with_tag)`` of a payload, decoded as ``atob`` would.

    ``tagB64`` is ignored, as by the reference: the tag is the last 16 bytes
    of ``ciphertextB64``.

    Raises:
        EnvelopeError: (``invalid_encoding``) a field is not base64, or the
            nonce is not 12 bytes.
    """
    try:
        nonce = b64decode(payload.nonce_b64)
    except (Base64DecodeError, AttributeError) as exc:
        raise _bad_encoding("nonceB64", exc) from None
    if len(nonce) != NONCE_LENGTH:
        raise EnvelopeError(
            f"Invalid nonce length: expected {NONCE_LENGTH}, got {len(nonce)}",
            EnvelopeErrorReason.INVALID_ENCODING,
        )
    try:
        ciphertext = b64decode(payload.ciphertext_b64)
    except (Base64DecodeError, AttributeError) as exc:
        raise _bad_encoding("ciphertextB64", exc) from None
    return nonce, ciphertext


def _bad_encoding(field: str, exc: Exception) -> EnvelopeError:
    reason = exc if isinstance(exc, Base64DecodeError) else "not a string"
    return EnvelopeError(f"{field}: {reason}", EnvelopeErrorReason.INVALID_ENCODING)


def authentication_failed() -> EnvelopeError:
    """The error of a tag that does not verify (the reference's message prefix)."""
    return EnvelopeError(
        "Decryption failed: authentication tag mismatch (wrong key or nonce, or the "
        "envelope was altered)",
        EnvelopeErrorReason.AUTHENTICATION_FAILED,
    )


def undecryptable(exc: Exception) -> EnvelopeError:
    """The error of a ciphertext the cipher refuses before checking it (e.g. too long)."""
    return EnvelopeError(f"Decryption failed: {exc}", EnvelopeErrorReason.INVALID_ENCODING)


def check_envelope_fields(session_id: object, seq: object) -> None:
    """Refuse an envelope session id or seq the protocol would refuse.

    Raises:
        EventValidationError: naming ``$.sessionId`` or ``$.seq``.
    """
    if not is_session_id(session_id):
        raise EventValidationError(
            f"Expected a session id (a string starting with 's_'), got {session_id!r}",
            "$.sessionId",
        )
    if type(seq) is not int or not 0 <= seq <= MAX_SAFE_INTEGER:
        raise EventValidationError(
            f"Expected `int` >= 0 and <= {MAX_SAFE_INTEGER}, got {seq!r}", "$.seq"
        )
