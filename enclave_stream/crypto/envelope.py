"""Envelopes: a JSON value in, an ``enc`` envelope payload out, and back.

The one envelope path: every envelope of the library is sealed by
:func:`seal_payload` and opened by :func:`open_payload`, whoever asks (the
stand-alone functions below, a context, a session, the stream adapters).
Beside it, only ``EncryptedSession.seal_line`` writes lines from a template,
held to ``seal``'s bytes by a property test. The stand-alone functions keep no
state, so they make no replay or order checks (a session makes them).
"""

from __future__ import annotations

__all__ = [
    "InnerEvent",
    "check_envelope_fields",
    "coerce_event",
    "create_encrypted_envelope",
    "decrypt_json",
    "encrypt_json",
    "event_plaintext",
    "json_plaintext",
    "open_payload",
    "read_event",
    "seal_payload",
]

from collections.abc import Mapping
from typing import Any, Final, TypeAlias, TypeVar, cast, overload

from cryptography.exceptions import InvalidTag

from .._json import js_dumps_bytes, js_loads
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
from .aesgcm import NONCE_LENGTH, AesGcmKey, encrypt, generate_nonce
from .encoding import from_base64, to_base64

InnerEvent: TypeAlias = StreamEvent | Mapping[str, Any]
"""What an envelope line carries: a typed plaintext event, or its wire form as a mapping."""

T = TypeVar("T")

_STREAM_EVENT_TYPES: Final = frozenset(STREAM_EVENT_CLASSES)
_R: Final = EnvelopeErrorReason
_BOM: Final = b"\xef\xbb\xbf"


# --- plaintexts -------------------------------------------------------------------


def coerce_event(event: object) -> StreamEvent:
    """``event`` as a typed plaintext event; a mapping is validated first.

    Raises:
        EnvelopeError: (``invalid_event``) an envelope, or not an event at all.
        EventValidationError: a mapping that breaks the schema.
    """
    if type(event) in _STREAM_EVENT_TYPES:
        return cast(StreamEvent, event)
    if isinstance(event, Mapping):
        event = validate_event(event)
        if type(event) in _STREAM_EVENT_TYPES:
            return cast(StreamEvent, event)
    if isinstance(event, EncryptedEnvelope):
        # An envelope inside an envelope line has no meaning in the protocol
        # and could only confuse a receiver.
        raise EnvelopeError("An enc envelope cannot be encrypted again", _R.INVALID_EVENT)
    raise EnvelopeError(
        f"Expected a protocol event or a mapping, got {type(event).__name__}", _R.INVALID_EVENT
    )


def event_plaintext(event: object) -> bytes:
    """The plaintext of an envelope line: the event's JSON, validated, in the protocol's order."""
    return encode_event(coerce_event(event))


def json_plaintext(data: object) -> bytes:
    """Any JSON value as ``JSON.stringify`` writes it, UTF-8 encoded.

    A protocol event (a Struct) is written as :func:`event_plaintext` writes
    it; mappings keep their key order, non-finite floats become ``null``.

    Raises:
        EnvelopeError: (``invalid_event``) ``data`` holds something JSON has
            no value for (bytes, sets, arbitrary objects).
    """
    if type(data) in _STREAM_EVENT_TYPES:
        return encode_event(cast(StreamEvent, data))
    try:
        return js_dumps_bytes(data)
    except (TypeError, ValueError) as exc:
        raise EnvelopeError(f"Not a JSON value: {exc}", _R.INVALID_EVENT) from None


def _read_json(plaintext: bytes) -> Any:
    # As JSON.parse(new TextDecoder().decode(...)) reads it: invalid UTF-8
    # becomes U+FFFD and a leading byte order mark is dropped.
    if plaintext.startswith(_BOM):
        plaintext = plaintext[len(_BOM) :]
    try:
        return js_loads(plaintext.decode("utf-8", "replace"))
    except ValueError as exc:  # JsonSyntaxError is a ValueError
        raise EnvelopeError(
            f"Decrypted plaintext is not JSON: {exc}", _R.INVALID_PLAINTEXT
        ) from None


def read_event(plaintext: bytes) -> StreamEvent:
    """Judge a decrypted plaintext as a received line: a valid plaintext event, or an error.

    Raises:
        EnvelopeError: (``invalid_plaintext``) not JSON, not a valid event, or
            an ``enc`` envelope.
    """
    result = decode_event(plaintext)
    if type(result) in _STREAM_EVENT_TYPES:
        return result  # type: ignore[return-value]
    if isinstance(result, DecodeFailure):
        raise EnvelopeError(
            f"Decrypted plaintext is not a valid event: {result.message}", _R.INVALID_PLAINTEXT
        )
    raise EnvelopeError(
        "Decrypted plaintext is an enc envelope: nested envelopes are refused",
        _R.INVALID_PLAINTEXT,
    )


def _read_as(plaintext: bytes, type_: Any) -> Any:
    if type_ is None:
        return _read_json(plaintext)
    if type_ is StreamEvent:
        return read_event(plaintext)
    try:
        return decode_message(plaintext, type_)
    except (EventValidationError, ProtocolError) as exc:
        raise EnvelopeError(
            f"Decrypted plaintext is not a valid {getattr(type_, '__name__', type_)}: {exc}",
            _R.INVALID_PLAINTEXT,
        ) from None


# --- payloads -----------------------------------------------------------------------


def seal_payload(
    key: AesGcmKey | bytes, key_id: str, plaintext: bytes, nonce: bytes
) -> EncryptedEnvelopePayload:
    """Encrypt ``plaintext`` under ``nonce``: the payload ``{kid, nonceB64, ciphertextB64}``.

    ``tagB64`` is never written: the tag is the last 16 bytes of the ciphertext.

    Raises:
        AesGcmError: (``ENCRYPTION_DECRYPTION_FAILED``) the nonce is not 12
            bytes, or the cipher refuses the input.
        HkdfError: raw key bytes of a length AES does not have.
    """
    ciphertext = encrypt(key, plaintext, nonce)
    return EncryptedEnvelopePayload(
        kid=key_id, nonce_b64=to_base64(nonce), ciphertext_b64=to_base64(ciphertext)
    )


def check_envelope_fields(session_id: object, seq: object) -> None:
    """Refuse an envelope ``sessionId`` or ``seq`` the protocol would refuse.

    Called before any nonce is used, so a refused envelope costs none.

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


def _coerce_payload(payload: object) -> EncryptedEnvelopePayload:
    # A mapping is the payload's wire form: validate it.
    if type(payload) is EncryptedEnvelopePayload:
        return payload
    if isinstance(payload, Mapping):
        try:
            return decode_message(payload, EncryptedEnvelopePayload)
        except (EventValidationError, ProtocolError) as exc:
            raise EnvelopeError(f"Invalid envelope payload: {exc}", _R.INVALID_ENCODING) from None
    raise EnvelopeError(
        f"Expected an EncryptedEnvelopePayload or a mapping, got {type(payload).__name__}",
        _R.INVALID_ENCODING,
    )


def open_payload(key: AesGcmKey | bytes, payload: EncryptedEnvelopePayload) -> tuple[bytes, bytes]:
    """Check and decrypt a payload; returns ``(nonce, plaintext)``.

    The base64 is read as ``atob`` reads it; ``kid`` and ``tagB64`` are not
    looked at (the tag is the end of ``ciphertextB64``).

    Raises:
        EnvelopeError: with ``ENCRYPTION_DECRYPTION_FAILED`` and reason
            ``invalid_encoding`` (bad base64, a nonce that is not 12 bytes, a
            ciphertext the cipher cannot take) or ``authentication_failed``.
        HkdfError: raw key bytes of a length AES does not have.
    """
    # Every opened envelope comes through here: the two fields are decoded
    # inline rather than through a helper (a Python call each). The cipher is
    # called directly so that each failure maps to its envelope reason.
    field = "nonceB64"
    try:
        nonce = from_base64(payload.nonce_b64)
        if len(nonce) != NONCE_LENGTH:
            raise EnvelopeError(
                f"Invalid nonce length: expected {NONCE_LENGTH}, got {len(nonce)}",
                _R.INVALID_ENCODING,
            )
        field = "ciphertextB64"
        ciphertext = from_base64(payload.ciphertext_b64)
    except Base64DecodeError as exc:
        raise EnvelopeError(f"{field}: {exc}", _R.INVALID_ENCODING) from None
    aead = (key if isinstance(key, AesGcmKey) else AesGcmKey(key)).aead
    try:
        return nonce, aead.decrypt(nonce, ciphertext, None)
    except InvalidTag:
        raise EnvelopeError(
            "Decryption failed: authentication tag mismatch (wrong key or nonce, or the "
            "envelope was altered)",
            _R.AUTHENTICATION_FAILED,
        ) from None
    except (OverflowError, ValueError) as exc:  # e.g. beyond GCM's length limit
        raise EnvelopeError(f"Decryption failed: {exc}", _R.INVALID_ENCODING) from None


# --- the stand-alone functions --------------------------------------------------------


def encrypt_json(
    key: AesGcmKey | bytes, key_id: str, data: object, nonce: bytes | None = None
) -> EncryptedEnvelopePayload:
    """Encrypt any JSON value; returns the envelope payload ``{kid, nonceB64, ciphertextB64}``.

    Args:
        key: the AES key (an :class:`AesGcmKey`, or 16/24/32 raw bytes).
        key_id: written as ``kid``.
        data: any JSON value (see :func:`json_plaintext`); a protocol event
            Struct is written as its wire JSON.
        nonce: 12 bytes that must never repeat under ``key``; by default
            12 random bytes.

    >>> payload = encrypt_json(bytes(32), "k_1", {"a": [1, None]}, bytes(12))
    >>> decrypt_json(bytes(32), payload)
    {'a': [1, None]}

    Raises:
        EnvelopeError: (``invalid_event``) ``data`` is not a JSON value.
        AesGcmError: (``ENCRYPTION_DECRYPTION_FAILED``) the nonce is not 12 bytes.
    """
    plaintext = json_plaintext(data)
    return seal_payload(key, key_id, plaintext, generate_nonce() if nonce is None else nonce)


@overload
def decrypt_json(
    key: AesGcmKey | bytes,
    payload: EncryptedEnvelopePayload | Mapping[str, Any],
    *,
    type: type[T],
) -> T: ...


@overload  # no type (plain JSON), or a type alias such as StreamEvent
def decrypt_json(
    key: AesGcmKey | bytes,
    payload: EncryptedEnvelopePayload | Mapping[str, Any],
    *,
    type: Any = None,
) -> Any: ...


def decrypt_json(
    key: AesGcmKey | bytes,
    payload: EncryptedEnvelopePayload | Mapping[str, Any],
    *,
    type: Any = None,  # msgspec's name for the target type
) -> Any:
    """Decrypt an envelope payload and return the JSON value inside.

    With ``type=None`` the plaintext is read as ``JSON.parse`` reads it and
    returned as plain values; given a type it is validated into that type, as
    ``msgspec.json.decode(..., type=...)`` would (``type=StreamEvent`` judges
    it as a received line and refuses an envelope). docs/compatibility.md, E2.

    Raises:
        EnvelopeError: with ``ENCRYPTION_DECRYPTION_FAILED`` and reason
            ``invalid_encoding`` (bad base64, nonce not 12 bytes),
            ``authentication_failed`` or ``invalid_plaintext`` (not JSON, or
            not of ``type``).
        HkdfError: raw key bytes of a length AES does not have.
    """
    _, plaintext = open_payload(key, _coerce_payload(payload))
    return _read_as(plaintext, type)


def create_encrypted_envelope(
    key: AesGcmKey | bytes,
    key_id: str,
    session_id: str,
    seq: int,
    inner_event: InnerEvent,
    nonce: bytes | None = None,
) -> EncryptedEnvelope:
    """An ``enc`` envelope (protocol version 2) carrying ``inner_event``.

    The inner event and the envelope's ``sessionId``/``seq`` are validated,
    not compared (a session compares them; docs/compatibility.md E2, E3).

    >>> from enclave_stream import StdoutEvent
    >>> from enclave_stream.events import StdoutPayload
    >>> event = StdoutEvent(session_id="s_1", seq=1, payload=StdoutPayload("hi"))
    >>> env = create_encrypted_envelope(bytes(32), "k_1", "s_1", 1, event, bytes(12))
    >>> env.payload.nonce_b64
    'AAAAAAAAAAAAAAAA'
    >>> decrypt_json(bytes(32), env.payload, type=StreamEvent) == event
    True

    Raises:
        EventValidationError: a bad ``session_id`` or ``seq``, or an invalid event.
        EnvelopeError: (``invalid_event``) not an event, or an ``enc`` envelope.
        AesGcmError: (``ENCRYPTION_DECRYPTION_FAILED``) the nonce is not 12 bytes.
    """
    check_envelope_fields(session_id, seq)
    plaintext = event_plaintext(inner_event)
    payload = seal_payload(key, key_id, plaintext, generate_nonce() if nonce is None else nonce)
    return EncryptedEnvelope(session_id=session_id, seq=seq, payload=payload)
