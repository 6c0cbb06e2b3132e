"""The typed protocol model: msgspec Structs for every message of the protocol.

Attributes are snake_case, wire names camelCase (``event.session_id`` <->
``"sessionId"``); events are tagged on ``type``, and ``event.type`` is the
wire string as an :class:`~enclave_stream.EventType`::

    >>> ev = StdoutEvent(session_id="s_1", seq=1, payload=StdoutPayload(chunk="hi"))
    >>> ev.type, ev.protocol_version
    (<EventType.STDOUT: 'stdout'>, 2)

The types carry the schema's constraints (docs/protocol.md, section 2), which
decoding enforces. msgspec does not validate on construction: payloads with
``__post_init__`` checks raise :class:`~enclave_stream.EventValidationError`
when built with a bad value; the encoder validates the rest before anything
reaches the wire. Optional fields default to ``UNSET`` (absent on the wire);
in free-form fields (``args``, ``result``, ``data``) ``None`` is JSON ``null``.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_SESSION_LIMITS",
    "PARSED_EVENT_CLASSES",
    "STREAM_EVENT_CLASSES",
    "CancelMessage",
    "CancelPayload",
    "CatalogChangedEvent",
    "CatalogChangedPayload",
    "ClientHello",
    "CreateSessionRequest",
    "DeadlineExceededEvent",
    "DeadlineExceededPayload",
    "EncryptedEnvelope",
    "EncryptedEnvelopePayload",
    "EncryptionConfig",
    "EncryptionRequest",
    "ErrorDetail",
    "ErrorEvent",
    "ErrorEventPayload",
    "ErrorInfo",
    "ErrorPayload",
    "FinalEvent",
    "FinalPayload",
    "HeartbeatEvent",
    "HeartbeatPayload",
    "LogEvent",
    "LogPayload",
    "ParsedEvent",
    "PartialResultEvent",
    "PartialResultPayload",
    "QuotaInfoDetail",
    "RetryInfoDetail",
    "RuntimeChannelMessage",
    "ServerHello",
    "SessionInitEvent",
    "SessionInitPayload",
    "SessionLimits",
    "SessionStats",
    "StdoutEvent",
    "StdoutPayload",
    "StreamEvent",
    "ToolCallEvent",
    "ToolCallPayload",
    "ToolProgressEvent",
    "ToolProgressPayload",
    "ToolResultAppliedEvent",
    "ToolResultAppliedPayload",
    "ToolResultSubmitMessage",
    "ToolResultSubmitPayload",
    "UpstreamInfoDetail",
    "ValidationInfoDetail",
]

import re
import sys
from typing import Annotated, Any, ClassVar, Final, Literal, Union, cast, get_args

import msgspec
from msgspec import UNSET, Meta, UnsetType

from .errors import EventValidationError
from .protocol import (
    CALL_ID_PREFIX,
    MAX_SAFE_INTEGER,
    EncryptionAlgorithm,
    EncryptionMode,
    ErrorDetailType,
    EventType,
    KeyDerivation,
    LogLevel,
    RuntimeChannelMessageType,
    SupportedCurve,
    ToolProgressPhase,
    is_call_id,
)

# --- constrained scalar types (the schema's rules) ----------------------------

_DBL_MAX = sys.float_info.max
# msgspec bounds must fit an int64; a larger JSON integer fails the fast path
# and is re-read as a JavaScript double (a float) by the slow path.
_INT64_MAX = 2**63 - 1

ProtocolVersion = Literal[1, 2]
# The id prefixes ("s_", "c_") and the datetime format are checked in Python
# (the codec for session ids, __post_init__ for the rest): msgspec's ``pattern``
# runs a regex search per value, which costs more than decoding the event.
SessionId = Annotated[str, Meta(min_length=3, description="'s_' and at least one more")]
CallId = Annotated[str, Meta(min_length=3, description="'c_' and at least one more")]
NonEmptyStr = Annotated[str, Meta(min_length=1)]
# JS numbers are doubles: "int" means a safe integer, "number" means finite.
Seq = Annotated[int, Meta(ge=0, le=MAX_SAFE_INTEGER)]
NonNegativeInt = Annotated[int, Meta(ge=0, le=MAX_SAFE_INTEGER)]
PositiveInt = Annotated[int, Meta(ge=1, le=MAX_SAFE_INTEGER)]
SafeInt = Annotated[int, Meta(ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)]
# int first so that a JSON integer stays an int and re-serializes without ".0".
NonNegativeNumber = Union[
    Annotated[int, Meta(ge=0, le=_INT64_MAX)],
    Annotated[float, Meta(ge=0, le=_DBL_MAX)],
]
PositiveNumber = Union[
    Annotated[int, Meta(gt=0, le=_INT64_MAX)],
    Annotated[float, Meta(gt=0, le=_DBL_MAX)],
]

# zod's ``z.string().datetime()``: a calendar-checked date, a "T", hours and
# minutes, optional seconds with any number of fractional digits, and only a
# literal upper-case "Z" as offset. ``[0-9]`` (not ``\d``, which matches other
# Unicode digits in Python) and ``\Z`` (``$`` would accept a trailing newline).
# The usual dates come first: fullmatch tries the leap day only when they fail.
_DATE = (
    "(?:[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    "|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    "|(?:[0-9]{2}(?:[2468][048]|[13579][26]|0[48])|(?:[02468][048]|[13579][26])00)-02-29)"
)
_TIME = "(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\\.[0-9]+)?)?"
_DATETIME = re.compile(f"{_DATE}T{_TIME}Z")


def _field_error(field: str, expected: str, value: object) -> EventValidationError:
    # A ValueError, so msgspec reports it as a ValidationError at the payload's
    # path; the codec appends this error's own path ("$.callId") to that.
    return EventValidationError(f"Expected {expected}, got {value!r}", f"$.{field}")


_LOG_LEVELS = frozenset(level.value for level in LogLevel)
_CALL_ID_MIN_LENGTH: Final = len(CALL_ID_PREFIX) + 1  # the prefix and one more character


def _normalize_numbers(struct: msgspec.Struct, *fields: str) -> None:
    """Store integral floats of "number" fields as ints, as JavaScript sees them.

    ``JSON.stringify`` writes 1500.0 as ``1500`` and -0.0 as ``0``; holding
    the int makes our encoder write the same bytes.
    """
    for name in fields:
        value = getattr(struct, name)
        if type(value) is float and value.is_integer() and abs(value) <= MAX_SAFE_INTEGER:
            msgspec.structs.force_setattr(struct, name, int(value))


def _check_call_id(value: object) -> None:
    # Runs for every decoded payload that has a call id: is_call_id's rule
    # is tested inline for a plain str, two calls less; the rest asks it.
    if not (
        type(value) is str
        and len(value) >= _CALL_ID_MIN_LENGTH
        and value.startswith(CALL_ID_PREFIX)
    ) and not is_call_id(value):
        raise _field_error("callId", "a call id (a string starting with 'c_')", value)


def _check_datetime(value: object, field: str) -> None:
    if not (isinstance(value, str) and _DATETIME.fullmatch(value)):
        raise _field_error(field, "an ISO-8601 UTC datetime string ending in 'Z'", value)


class _DefaultProtocolVersion(int):
    """The default of ``protocol_version``: a 2 that is not ``int`` itself.

    msgspec fills defaults in when it decodes, but the protocol requires
    ``protocolVersion`` on the wire: ``is DEFAULT_PROTOCOL_VERSION`` after
    decoding means "absent", and the decoder refuses the message.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "2"


DEFAULT_PROTOCOL_VERSION: Final = cast(Literal[2], _DefaultProtocolVersion(2))


# --- shared pieces ------------------------------------------------------------


class ErrorInfo(msgspec.Struct, frozen=True, rename="camel"):
    """Error information of a ``final`` event or a tool result."""

    message: str
    code: str | UnsetType = UNSET
    stack: str | UnsetType = UNSET


class RetryInfoDetail(
    msgspec.Struct, frozen=True, rename="camel", tag_field="type", tag="retry_info"
):
    """Error detail: when to retry."""

    type: ClassVar[ErrorDetailType] = ErrorDetailType.RETRY_INFO
    retry_delay_ms: NonNegativeNumber

    def __post_init__(self) -> None:
        _normalize_numbers(self, "retry_delay_ms")


class UpstreamInfoDetail(
    msgspec.Struct, frozen=True, rename="camel", tag_field="type", tag="upstream_info"
):
    """Error detail: the upstream service that failed."""

    type: ClassVar[ErrorDetailType] = ErrorDetailType.UPSTREAM_INFO
    status_code: SafeInt
    url: str


class ValidationInfoDetail(
    msgspec.Struct, frozen=True, rename="camel", tag_field="type", tag="validation_info"
):
    """Error detail: which field failed validation and why."""

    type: ClassVar[ErrorDetailType] = ErrorDetailType.VALIDATION_INFO
    field: str
    reason: str


class QuotaInfoDetail(
    msgspec.Struct, frozen=True, rename="camel", tag_field="type", tag="quota_info"
):
    """Error detail: a quota and how much of it was used."""

    type: ClassVar[ErrorDetailType] = ErrorDetailType.QUOTA_INFO
    limit: NonNegativeNumber
    used: NonNegativeNumber

    def __post_init__(self) -> None:
        _normalize_numbers(self, "limit", "used")


ErrorDetail = Union[RetryInfoDetail, UpstreamInfoDetail, ValidationInfoDetail, QuotaInfoDetail]
"""One entry of :attr:`ErrorPayload.details`, tagged on ``type``."""


class ErrorPayload(msgspec.Struct, frozen=True, rename="camel"):
    """A structured error (``final.errors`` entries, ``partial_result.error``)."""

    code: str
    message: str
    path: list[str] | UnsetType = UNSET
    details: list[ErrorDetail] | UnsetType = UNSET


class SessionStats(msgspec.Struct, frozen=True, rename="camel", gc=False):
    """Execution statistics of a finished session."""

    duration_ms: NonNegativeNumber
    tool_call_count: NonNegativeInt
    stdout_bytes: NonNegativeInt

    def __post_init__(self) -> None:
        _normalize_numbers(self, "duration_ms")


class EncryptionConfig(msgspec.Struct, frozen=True, rename="camel", gc=False):
    """Whether a session's events are encrypted, and under which key."""

    enabled: bool
    key_id: str | UnsetType = UNSET


# --- payloads -----------------------------------------------------------------


class SessionInitPayload(msgspec.Struct, frozen=True, rename="camel", gc=False):
    """Payload of ``session_init``."""

    cancel_url: str
    expires_at: str
    encryption: EncryptionConfig
    replay_url: str | UnsetType = UNSET

    def __post_init__(self) -> None:
        _check_datetime(self.expires_at, "expiresAt")


class StdoutPayload(msgspec.Struct, frozen=True, rename="camel", gc=False):
    """Payload of ``stdout``: a chunk of the program's output."""

    chunk: str


class LogPayload(msgspec.Struct, frozen=True, rename="camel"):
    """Payload of ``log``."""

    level: LogLevel
    message: str
    data: dict[str, Any] | UnsetType = UNSET

    def __post_init__(self) -> None:
        # Runs for every log event decoded, whose level is a LogLevel member
        # already: that needs no lookup (an enum member hashes in Python).
        level = self.level
        if not (type(level) is LogLevel or (isinstance(level, str) and level in _LOG_LEVELS)):
            raise _field_error("level", "one of 'debug', 'info', 'warn', 'error'", level)
        if type(self.message) is not str:
            raise _field_error("message", "`str`", self.message)
        data = self.data
        if data is UNSET:
            return
        if not isinstance(data, dict):
            raise _field_error("data", "`object`", data)
        # A "__proto__" key is dropped, as a JavaScript receiver loses it
        # (docs/compatibility.md, "matched on purpose").
        if "__proto__" in data:
            msgspec.structs.force_setattr(
                self, "data", {k: v for k, v in data.items() if k != "__proto__"}
            )


class ToolCallPayload(msgspec.Struct, frozen=True, rename="camel"):
    """Payload of ``tool_call``; ``args`` is any JSON value (``UNSET`` when absent)."""

    call_id: CallId
    tool_name: NonEmptyStr
    args: Any = UNSET

    def __post_init__(self) -> None:
        _check_call_id(self.call_id)
        if not (type(self.tool_name) is str and self.tool_name):
            raise _field_error("toolName", "a non-empty `str`", self.tool_name)


class ToolResultAppliedPayload(msgspec.Struct, frozen=True, rename="camel", gc=False):
    """Payload of ``tool_result_applied``."""

    call_id: CallId

    def __post_init__(self) -> None:
        _check_call_id(self.call_id)


class FinalPayload(msgspec.Struct, frozen=True, rename="camel"):
    """Payload of ``final``, the last event of a session."""

    ok: bool
    result: Any = UNSET
    error: ErrorInfo | UnsetType = UNSET
    errors: list[ErrorPayload] | UnsetType = UNSET
    stats: SessionStats | UnsetType = UNSET


class HeartbeatPayload(msgspec.Struct, frozen=True, rename="camel", gc=False):
    """Payload of ``heartbeat``: the sender's clock as an ISO-8601 UTC string."""

    ts: str

    def __post_init__(self) -> None:
        _check_datetime(self.ts, "ts")


class ErrorEventPayload(msgspec.Struct, frozen=True, rename="camel", gc=False):
    """Payload of ``error``."""

    message: str
    code: str | UnsetType = UNSET
    recoverable: bool | UnsetType = UNSET


class PartialResultPayload(msgspec.Struct, frozen=True, rename="camel", kw_only=True):
    """Payload of ``partial_result``."""

    path: list[str]
    data: Any = UNSET
    error: ErrorPayload | UnsetType = UNSET
    has_next: bool


class ToolProgressPayload(msgspec.Struct, frozen=True, rename="camel", kw_only=True, gc=False):
    """Payload of ``tool_progress``."""

    call_id: CallId
    phase: ToolProgressPhase
    bytes_received: NonNegativeInt | UnsetType = UNSET
    total_bytes: NonNegativeInt | UnsetType = UNSET
    elapsed_ms: NonNegativeNumber

    def __post_init__(self) -> None:
        _check_call_id(self.call_id)
        _normalize_numbers(self, "elapsed_ms")


class DeadlineExceededPayload(msgspec.Struct, frozen=True, rename="camel", gc=False):
    """Payload of ``deadline_exceeded``."""

    elapsed_ms: NonNegativeNumber
    budget_ms: PositiveNumber

    def __post_init__(self) -> None:
        _normalize_numbers(self, "elapsed_ms", "budget_ms")


class CatalogChangedPayload(msgspec.Struct, frozen=True, rename="camel", gc=False):
    """Payload of ``catalog_changed``."""

    version: NonEmptyStr
    added_actions: list[str]
    removed_actions: list[str]


class EncryptedEnvelopePayload(msgspec.Struct, frozen=True, rename="camel", gc=False):
    """Payload of an ``enc`` envelope; ``tag_b64`` is optional and never written by default."""

    kid: NonEmptyStr
    nonce_b64: NonEmptyStr
    ciphertext_b64: NonEmptyStr
    tag_b64: str | UnsetType = UNSET


# --- events -------------------------------------------------------------------


class _Versioned(msgspec.Struct, frozen=True, kw_only=True, rename="camel", gc=False):
    # kw_only fields come last in msgspec's field order, so ``protocol_version``
    # can default to 2 while the other fields stay positional.
    protocol_version: ProtocolVersion = DEFAULT_PROTOCOL_VERSION


class _Event(_Versioned, frozen=True, rename="camel", tag_field="type", gc=False):
    """Fields every event carries. ``protocol_version`` defaults to 2."""

    session_id: SessionId
    seq: Seq


class SessionInitEvent(_Event, tag="session_init", frozen=True):
    """First event of a session: where to cancel, when it expires, encryption."""

    type: ClassVar[Literal[EventType.SESSION_INIT]] = EventType.SESSION_INIT
    payload: SessionInitPayload


class StdoutEvent(_Event, tag="stdout", frozen=True):
    """Output written by the program."""

    type: ClassVar[Literal[EventType.STDOUT]] = EventType.STDOUT
    payload: StdoutPayload


class LogEvent(_Event, tag="log", frozen=True):
    """A log record of the program or the runtime."""

    type: ClassVar[Literal[EventType.LOG]] = EventType.LOG
    payload: LogPayload


class ToolCallEvent(_Event, tag="tool_call", frozen=True):
    """The program calls a tool; the client answers with a tool result."""

    type: ClassVar[Literal[EventType.TOOL_CALL]] = EventType.TOOL_CALL
    payload: ToolCallPayload


class ToolResultAppliedEvent(_Event, tag="tool_result_applied", frozen=True):
    """A submitted tool result was handed to the program."""

    type: ClassVar[Literal[EventType.TOOL_RESULT_APPLIED]] = EventType.TOOL_RESULT_APPLIED
    payload: ToolResultAppliedPayload


class FinalEvent(_Event, tag="final", frozen=True):
    """The session ended, with its result or error."""

    type: ClassVar[Literal[EventType.FINAL]] = EventType.FINAL
    payload: FinalPayload


class HeartbeatEvent(_Event, tag="heartbeat", frozen=True):
    """Sent every heartbeat interval so that the client can tell a live stream from a dead one."""

    type: ClassVar[Literal[EventType.HEARTBEAT]] = EventType.HEARTBEAT
    payload: HeartbeatPayload


class ErrorEvent(_Event, tag="error", frozen=True):
    """An error during the session (the session may go on if ``recoverable``)."""

    type: ClassVar[Literal[EventType.ERROR]] = EventType.ERROR
    payload: ErrorEventPayload


class PartialResultEvent(_Event, tag="partial_result", frozen=True):
    """A piece of the result at ``path``, before the session ends."""

    type: ClassVar[Literal[EventType.PARTIAL_RESULT]] = EventType.PARTIAL_RESULT
    payload: PartialResultPayload


class ToolProgressEvent(_Event, tag="tool_progress", frozen=True):
    """Progress of a running tool call."""

    type: ClassVar[Literal[EventType.TOOL_PROGRESS]] = EventType.TOOL_PROGRESS
    payload: ToolProgressPayload


class DeadlineExceededEvent(_Event, tag="deadline_exceeded", frozen=True):
    """The session ran out of its time budget."""

    type: ClassVar[Literal[EventType.DEADLINE_EXCEEDED]] = EventType.DEADLINE_EXCEEDED
    payload: DeadlineExceededPayload


class CatalogChangedEvent(_Event, tag="catalog_changed", frozen=True):
    """The set of available actions changed."""

    type: ClassVar[Literal[EventType.CATALOG_CHANGED]] = EventType.CATALOG_CHANGED
    payload: CatalogChangedPayload


class EncryptedEnvelope(_Event, tag="enc", frozen=True):
    """An encrypted event: ``payload`` holds the AES-GCM ciphertext of the inner event."""

    type: ClassVar[Literal[EventType.ENCRYPTED]] = EventType.ENCRYPTED
    payload: EncryptedEnvelopePayload


StreamEvent = Union[
    SessionInitEvent,
    StdoutEvent,
    LogEvent,
    ToolCallEvent,
    ToolResultAppliedEvent,
    FinalEvent,
    HeartbeatEvent,
    ErrorEvent,
    PartialResultEvent,
    ToolProgressEvent,
    DeadlineExceededEvent,
    CatalogChangedEvent,
]
"""Any of the 12 plaintext stream events."""

ParsedEvent = Union[StreamEvent, EncryptedEnvelope]
"""What a line of a stream decodes to: a plaintext event or an ``enc`` envelope."""

STREAM_EVENT_CLASSES: Final[tuple[type[StreamEvent], ...]] = get_args(StreamEvent)
"""The 12 plaintext event classes (what an envelope may carry)."""

PARSED_EVENT_CLASSES: Final[tuple[type[ParsedEvent], ...]] = (
    *STREAM_EVENT_CLASSES,
    EncryptedEnvelope,
)
"""Every class a line can decode to."""


# --- handshake and session requests ---------------------------------------------


class ClientHello(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The client's half of the key exchange."""

    protocol_version: ProtocolVersion = DEFAULT_PROTOCOL_VERSION
    client_ephemeral_pub_key_b64: NonEmptyStr
    curve: SupportedCurve
    supported_algorithms: Annotated[list[EncryptionAlgorithm], Meta(min_length=1)]

    def to_dict(self) -> dict[str, Any]:
        """The wire form as plain JSON types, camelCase keys: ``post(json=hello.to_dict())``."""
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]

    def to_json(self) -> str:
        """The wire form as compact JSON text (as in the ``X-Enclave-Server-Hello`` header)."""
        return msgspec.json.encode(self).decode()


class ServerHello(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The server's half of the key exchange; ``signature_b64`` is our optional extension."""

    protocol_version: ProtocolVersion = DEFAULT_PROTOCOL_VERSION
    server_ephemeral_pub_key_b64: NonEmptyStr
    curve: SupportedCurve
    selected_algorithm: EncryptionAlgorithm
    kdf: KeyDerivation
    key_id: NonEmptyStr
    signature_b64: str | UnsetType = UNSET

    def to_dict(self) -> dict[str, Any]:
        """The wire form as plain JSON types, camelCase keys: ``post(json=hello.to_dict())``."""
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]

    def to_json(self) -> str:
        """The wire form as compact JSON text (as in the ``X-Enclave-Server-Hello`` header)."""
        return msgspec.json.encode(self).decode()


class EncryptionRequest(msgspec.Struct, frozen=True, rename="camel"):
    """What a client asks for when creating a session."""

    mode: EncryptionMode
    client_hello: ClientHello | UnsetType = UNSET


class SessionLimits(msgspec.Struct, frozen=True, kw_only=True, rename="camel", gc=False):
    """Limits a client may request for a session (all optional)."""

    session_ttl_ms: PositiveInt | UnsetType = UNSET
    max_tool_calls: PositiveInt | UnsetType = UNSET
    max_stdout_bytes: PositiveInt | UnsetType = UNSET
    max_tool_result_bytes: PositiveInt | UnsetType = UNSET
    tool_timeout_ms: PositiveInt | UnsetType = UNSET
    heartbeat_interval_ms: PositiveInt | UnsetType = UNSET
    per_tool_deadline_ms: PositiveInt | UnsetType = UNSET
    deadline_ms: NonNegativeInt | UnsetType = UNSET
    cancel_on_first_error: bool | UnsetType = UNSET


DEFAULT_SESSION_LIMITS = SessionLimits(
    session_ttl_ms=60_000,
    max_tool_calls=50,
    max_stdout_bytes=262_144,
    max_tool_result_bytes=5_242_880,
    tool_timeout_ms=30_000,
    heartbeat_interval_ms=15_000,
)
"""The protocol's default session limits."""


class CreateSessionRequest(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Body of ``POST /sessions``: the code to run, limits and encryption."""

    protocol_version: ProtocolVersion = DEFAULT_PROTOCOL_VERSION
    code: NonEmptyStr
    limits: SessionLimits | UnsetType = UNSET
    encryption: EncryptionRequest | UnsetType = UNSET


class ToolResultSubmitPayload(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Payload of ``tool_result_submit``."""

    call_id: CallId
    ok: bool
    result: Any = UNSET
    error: ErrorInfo | UnsetType = UNSET

    def __post_init__(self) -> None:
        _check_call_id(self.call_id)


class CancelPayload(msgspec.Struct, frozen=True, rename="camel", gc=False):
    """Payload of ``cancel``."""

    reason: str | UnsetType = UNSET


class _RuntimeMessage(_Versioned, frozen=True, rename="camel", tag_field="type", gc=False):
    session_id: SessionId


class ToolResultSubmitMessage(_RuntimeMessage, tag="tool_result_submit", frozen=True):
    """A tool result sent by the client to the runtime."""

    type: ClassVar[Literal[RuntimeChannelMessageType.TOOL_RESULT_SUBMIT]] = (
        RuntimeChannelMessageType.TOOL_RESULT_SUBMIT
    )
    payload: ToolResultSubmitPayload


class CancelMessage(_RuntimeMessage, tag="cancel", frozen=True):
    """Asks the runtime to cancel the session."""

    type: ClassVar[Literal[RuntimeChannelMessageType.CANCEL]] = RuntimeChannelMessageType.CANCEL
    payload: CancelPayload = msgspec.field(default_factory=CancelPayload)


RuntimeChannelMessage = Union[ToolResultSubmitMessage, CancelMessage]
"""A message of the client-to-runtime channel."""
