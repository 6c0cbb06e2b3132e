"""Encoding protocol messages: the reference's bytes, validated before they leave.

Events are written with their base fields in the reference's order
(``protocolVersion, sessionId, seq, type, payload``; msgspec alone would put the
tag first and ``protocolVersion`` last). The part before ``seq`` depends only on
the event type, version and session id, so it is built once per session and
kept as a ``%``-template; an event then costs one msgspec encode of its payload
and one formatting operation.

msgspec never validates on construction, so the encoder validates: cheap type
checks for ``stdout`` events, nothing more for payloads whose ``__post_init__``
already checked every field, and a validating decode of the encoded payload for
the rest (so the rules are exactly the decoder's).
"""

from __future__ import annotations

__all__ = ["EventEncoder", "encode_event", "encode_message", "validate_event"]

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, cast

import msgspec

from ._jsjson import js_dumps
from .errors import EventValidationError
from .events import (
    DEFAULT_PROTOCOL_VERSION,
    PARSED_EVENT_CLASSES,
    CancelMessage,
    EncryptedEnvelopePayload,
    HeartbeatPayload,
    LogPayload,
    ParsedEvent,
    PartialResultPayload,
    StdoutPayload,
    ToolCallPayload,
    ToolResultAppliedPayload,
    ToolResultSubmitMessage,
)
from .protocol import MAX_SAFE_INTEGER, SESSION_ID_PREFIX
from .wire import FAST_PATH_ERRORS, DecodeFailure, decode_event_slow, decode_message

# Payloads whose __post_init__ checks every field: they are frozen and their
# only mutable parts are free-form JSON values, which no change can make
# invalid, so an instance is valid by construction.
_VALID_BY_CONSTRUCTION: Final = frozenset(
    {HeartbeatPayload, LogPayload, ToolCallPayload, ToolResultAppliedPayload}
)


def _partial_result_is_valid(payload: PartialResultPayload) -> bool:
    # Its path list is mutable, so it is checked at encoding time; a nested
    # error is left to the full check.
    path = payload.path
    return (
        type(payload.has_next) is bool
        and payload.error is msgspec.UNSET
        and type(path) is list
        and all(type(part) is str for part in path)
    )


def _envelope_is_valid(payload: EncryptedEnvelopePayload) -> bool:
    tag = payload.tag_b64
    return (
        type(payload.kid) is str
        and type(payload.nonce_b64) is str
        and type(payload.ciphertext_b64) is str
        and bool(payload.kid and payload.nonce_b64 and payload.ciphertext_b64)
        and (tag is msgspec.UNSET or type(tag) is str)
    )


# Cheap checks that prove a payload valid (False means "run the full check").
_QUICK_CHECKS: Final[dict[Any, Callable[[Any], bool]]] = {
    PartialResultPayload: _partial_result_is_valid,
    EncryptedEnvelopePayload: _envelope_is_valid,
}

_TEMPLATE_CACHE_SIZE: Final = 1024
_ENCODE_ERRORS: Final = (UnicodeEncodeError, RecursionError, TypeError, OverflowError)
_SESSION_ID_WORDS: Final = "a session id (a string starting with 's_' and at least 3 characters)"


class _EventKind:
    """What the encoder needs per event class."""

    __slots__ = ("decoder", "payload_type", "quick_check", "tag", "templates", "trusted")

    def __init__(self, event_type: type[msgspec.Struct]) -> None:
        self.tag = str(event_type.__struct_config__.tag)
        fields = msgspec.structs.fields(event_type)
        self.payload_type: Any = next(f.type for f in fields if f.name == "payload")
        self.trusted = self.payload_type in _VALID_BY_CONSTRUCTION
        self.quick_check = _QUICK_CHECKS.get(self.payload_type)
        self.decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(self.payload_type)
        # protocol version -> session id -> b'{"protocolVersion":2,...,"seq":%d,...%s}'
        self.templates: dict[int, dict[str, bytes]] = {1: {}, 2: {}}


def enc_hook(value: Any) -> Any:
    """msgspec's ``enc_hook`` for protocol Structs (the protocolVersion-default marker)."""
    if isinstance(value, int):  # the DEFAULT_PROTOCOL_VERSION marker is an int subclass
        return int(value)
    raise TypeError(f"Objects of type {type(value).__name__} are not JSON values")


class EventEncoder:
    """Encodes events as compact JSON lines, validating each one first.

    Reuse one instance (it keeps a msgspec ``Encoder`` and per-session
    templates). An invalid event raises
    :class:`~enclave_stream.EventValidationError` naming the field, so it never
    reaches the wire.

    >>> from enclave_stream import StdoutEvent, StdoutPayload
    >>> EventEncoder().encode(StdoutEvent(session_id="s_1", seq=1, payload=StdoutPayload("hi")))
    b'{"protocolVersion":2,"sessionId":"s_1","seq":1,"type":"stdout","payload":{"chunk":"hi"}}'
    """

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder(enc_hook=enc_hook)
        self._kinds = {cls: _EventKind(cls) for cls in PARSED_EVENT_CLASSES}

    def encode(self, event: ParsedEvent | Mapping[str, Any]) -> bytes:
        """One event as a JSON line, without a newline."""
        return self.encode_all((event,))[0]

    def encode_lines(self, events: Iterable[ParsedEvent | Mapping[str, Any]]) -> bytes:
        """Events as NDJSON, every line ending in ``\\n``."""
        lines = self.encode_all(events)
        return b"\n".join(lines) + b"\n" if lines else b""

    def encode_all(self, events: Iterable[ParsedEvent | Mapping[str, Any]]) -> list[bytes]:
        """Each event as a JSON line (no newlines), in order."""
        kinds = self._kinds
        encode = self._encoder.encode
        default_version = DEFAULT_PROTOCOL_VERSION
        max_seq = MAX_SAFE_INTEGER
        stdout = StdoutPayload
        out: list[bytes] = []
        append = out.append
        # One loop for everything: a function call per event would cost as
        # much as the checks themselves.
        event: Any
        for event in events:
            try:
                kind = kinds[type(event)]
            except KeyError:
                event = _coerce(event)
                kind = kinds[type(event)]
            version = event.protocol_version
            if version is default_version:
                version = 2
            elif type(version) is not int:  # True == 1 would find version 1's templates
                raise _bad_version(version)
            try:
                template = kind.templates[version][event.session_id]
            except (KeyError, TypeError):
                template = self._template(kind, version, event.session_id)
            seq = event.seq
            if type(seq) is not int or seq < 0 or seq > max_seq:
                raise EventValidationError(
                    f"Expected `int` >= 0 and <= {MAX_SAFE_INTEGER}, got {seq!r}", "$.seq"
                )
            payload = event.payload
            payload_type = type(payload)
            if payload_type is kind.payload_type and (
                kind.trusted or (payload_type is stdout and type(payload.chunk) is str)
            ):
                try:
                    append(template % (seq, encode(payload)))
                    continue
                except _ENCODE_ERRORS:
                    pass  # _payload() says why, or falls back
            append(template % (seq, self._payload(kind, payload)))
        return out

    def _payload(self, kind: _EventKind, payload: Any) -> bytes:
        try:
            body = self._encoder.encode(payload)
        except (UnicodeEncodeError, RecursionError):
            body = _js_encode(payload)
        except (TypeError, OverflowError) as exc:
            raise EventValidationError(str(exc), "$.payload") from None
        if type(payload) is kind.payload_type and (
            kind.trusted or (kind.quick_check is not None and kind.quick_check(payload))
        ):
            return body
        _validate_payload(kind, body)
        return body

    def _template(self, kind: _EventKind, version: int, session_id: object) -> bytes:
        templates = kind.templates.get(version)
        if templates is None:
            raise _bad_version(version)
        if not (
            type(session_id) is str
            and session_id.startswith(SESSION_ID_PREFIX)
            and len(session_id) >= 3
        ):
            raise EventValidationError(
                f"Expected {_SESSION_ID_WORDS}, got {session_id!r}", "$.sessionId"
            )
        try:
            quoted = self._encoder.encode(session_id)
        except UnicodeEncodeError:
            quoted = _js_encode(session_id)
        template = b'{"protocolVersion":%d,"sessionId":%s,"seq":%%d,"type":"%s","payload":%%s}' % (
            version,
            quoted.replace(b"%", b"%%"),
            kind.tag.encode(),
        )
        if len(templates) >= _TEMPLATE_CACHE_SIZE:
            templates.clear()
        templates[session_id] = template
        return template


def _bad_version(version: object) -> EventValidationError:
    return EventValidationError(
        f"Expected protocol version 1 or 2, got {version!r}", "$.protocolVersion"
    )


def _coerce(item: object) -> ParsedEvent:
    if isinstance(item, Mapping):
        return validate_event(item)
    raise EventValidationError(f"Expected a protocol event or a mapping, got {type(item).__name__}")


def _js_encode(value: Any, path: str = "$.payload") -> bytes:
    try:
        return js_dumps(value).encode("utf-8")
    except TypeError as exc:
        raise EventValidationError(str(exc), path) from None


def _validate_payload(kind: _EventKind, body: bytes) -> None:
    try:
        kind.decoder.decode(body)
        return
    except FAST_PATH_ERRORS:
        pass
    result = decode_event_slow(body, kind.payload_type)
    if isinstance(result, DecodeFailure):
        raise EventValidationError(result.reason, "$.payload" + (result.path or "$")[1:])


def validate_event(event: ParsedEvent | Mapping[str, Any]) -> ParsedEvent:
    """Check an event against the protocol schema; return it as a typed event.

    A mapping is read as its wire form (camelCase keys), the way the reference
    would read ``JSON.stringify(mapping)``. Raises
    :class:`~enclave_stream.EventValidationError` naming the offending field.
    """
    if isinstance(event, Mapping):
        result = decode_event_slow(_js_encode(event, "$"))
        if isinstance(result, DecodeFailure):
            raise EventValidationError(result.reason, result.path or "$")
        return cast(ParsedEvent, result)
    _default_encoder.encode(event)
    return event


_default_encoder: Final = EventEncoder()


def encode_event(event: ParsedEvent | Mapping[str, Any]) -> bytes:
    """Encode one event with a shared :class:`EventEncoder`."""
    return _default_encoder.encode(event)


_RUNTIME_TAGS: Final[dict[type, str]] = {
    ToolResultSubmitMessage: "tool_result_submit",
    CancelMessage: "cancel",
}
_message_encoder: Final = msgspec.json.Encoder(enc_hook=enc_hook)


def encode_message(message: msgspec.Struct) -> bytes:
    """Encode a message that is not a stream event (hello, request, runtime message).

    Validated like a received message; keys come out in the reference's order.
    """
    tag = _RUNTIME_TAGS.get(type(message))
    if tag is not None:
        runtime = cast("ToolResultSubmitMessage | CancelMessage", message)
        head = {
            "protocolVersion": int(runtime.protocol_version),
            "sessionId": runtime.session_id,
            "type": tag,
            "payload": runtime.payload,
        }
        data = _js_encode(head, "$")
    else:
        try:
            data = _message_encoder.encode(message)
        except (UnicodeEncodeError, RecursionError):
            data = _js_encode(message, "$")
        except (TypeError, OverflowError) as exc:
            raise EventValidationError(str(exc)) from None
    decode_message(data, type(message))
    return data
