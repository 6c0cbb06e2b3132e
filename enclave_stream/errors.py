"""Every exception enclave_stream raises on purpose, and the reports it returns for bad lines.

``except EnclaveStreamError`` catches all of them. Errors about input from a
peer say where the problem was (line, field path, byte offset, seq) in
attributes, not only in the message. The tree::

    EnclaveStreamError
    ├── ProtocolError                 a message breaks the wire contract
    │   ├── EventValidationError      (also ValueError) an event fails the schema
    │   └── NdjsonParseError          a bad line in strict mode; .error is its LineError
    ├── Base64DecodeError             (also ValueError) not forgiving-base64
    ├── EncryptionError               .code is an EncryptionErrorCode
    │   ├── EcdhError                 bad public key, curve or scalar
    │   │   └── HandshakeError        a hello refused, or its signature
    │   ├── HkdfError                 key derivation
    │   └── AesGcmError               encryption or decryption
    │       └── EnvelopeError         .reason is an EnvelopeErrorReason
    ├── ReconnectionConfigError       (also ValueError) a backoff setting out of range
    ├── ConnectorError                a connector's verdict on one connection
    │   ├── RetryableConnectError     try again
    │   └── FatalConnectError         give up
    │       ├── SessionStartLostError       a session's start answer lost; not started again
    │       └── EncryptionNotAcceptedError  a session started without the encryption asked
    ├── StreamFailedError             the resumable stream stopped before ``final``
    │   ├── SequenceGapError          events lost for good
    │   ├── SessionMismatchError      an event of another session
    │   └── LineTooLongError          an event's line exceeded max_line_bytes
    ├── ReplayUnavailableError        events the log no longer holds (HTTP 410)
    ├── StreamFinishedError           an append after ``final``
    ├── LogFullError                  an append past the memory budget of unsent events
    ├── StoreUnavailableError         a shared log (Redis) cannot serve now; retry later
    └── BrokerError                   a broker request refused, with its HTTP status

Every class pickles with its attributes (one ``__reduce__`` on the base), so
errors cross process boundaries intact.
"""

from __future__ import annotations

__all__ = [
    "AesGcmError",
    "Base64DecodeError",
    "BrokerError",
    "ConnectorError",
    "EcdhError",
    "EnclaveStreamError",
    "EncryptionError",
    "EncryptionErrorCode",
    "EncryptionNotAcceptedError",
    "EnvelopeError",
    "EnvelopeErrorReason",
    "EventValidationError",
    "FailureKind",
    "FatalConnectError",
    "HandshakeError",
    "HkdfError",
    "LineError",
    "LineTooLongError",
    "LogFullError",
    "NdjsonParseError",
    "ProtocolError",
    "ReconnectionConfigError",
    "ReplayUnavailableError",
    "RetryableConnectError",
    "SequenceGapError",
    "SessionMismatchError",
    "SessionStartLostError",
    "StreamFailedError",
    "StoreUnavailableError",
    "StreamFinishedError",
]

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

import msgspec

from .protocol import StrEnum

if TYPE_CHECKING:
    from typing_extensions import Unpack


def _rebuild(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class EnclaveStreamError(Exception):
    """Base class of every error raised by enclave_stream."""

    def __reduce__(self) -> tuple[Any, ...]:
        # The default replays ``cls(*self.args)``, which fits none of the
        # constructors below (keyword-only and extra attributes); restore the
        # attributes directly instead.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class FailureKind(StrEnum):
    """Why a line was not an event."""

    EMPTY = "empty"
    """Nothing but white space (parse_line reports it; the stream parsers skip it)."""
    JSON = "json"
    """Not JSON text."""
    VALIDATION = "validation"
    """JSON, but not a valid protocol message."""
    LINE_TOO_LONG = "line_too_long"
    """Longer than the parser's ``max_line_bytes``; its bytes were discarded."""


class LineError(msgspec.Struct, frozen=True, gc=False):
    """A line that is not a valid event, as reported by the parsers.

    Attributes:
        line: 1-based line number (every ``\\n``-terminated line counts,
            blank ones included).
        error: what was wrong, in the protocol's wording
            (``JSON parse error: ...``, ``Validation error: ... - at $.seq``).
        content: the trimmed line, cut to 100 UTF-16 code units plus ``...``.
        kind: ``"json"``, ``"validation"`` or ``"line_too_long"``.
        path: for validation errors, the JSON path of the offending field in
            wire names (``"$.payload.callId"``); ``None`` otherwise.
        offset: byte offset of the line's first byte in the stream
            (:class:`NdjsonStreamParser` only; ``None`` from :func:`parse_lines`).
    """

    line: int
    error: str
    content: str
    kind: FailureKind = FailureKind.VALIDATION
    path: str | None = None
    offset: int | None = None


class ProtocolError(EnclaveStreamError):
    """A message does not follow the EnclaveJS wire contract."""


class EventValidationError(ProtocolError, ValueError):
    """An event or message fails the protocol schema.

    Raised by the serializer for an invalid constructed event (so it never
    reaches the wire) and by :func:`enclave_stream.validate_event`.

    Attributes:
        path: JSON path of the offending field in wire names, such as
            ``"$.payload.callId"`` (``"$"`` for the whole value).
        reason: what was expected there.
    """

    def __init__(self, reason: str, path: str = "$") -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"{reason} - at `{path}`" if path != "$" else reason)


class NdjsonParseError(ProtocolError):
    """A line of an NDJSON stream could not be parsed (``strict=True`` mode).

    Attributes:
        error: the :class:`LineError` report for the line.
    """

    def __init__(self, error: LineError) -> None:
        self.error = error
        super().__init__(f"line {error.line}: {error.error}")


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
    """An envelope was refused, or an event could not be sealed (on the wire, an AES-GCM failure).

    Attributes:
        code: ``ENCRYPTION_DECRYPTION_FAILED``, or ``ENCRYPTION_NONCE_REUSE`` for a replay.
        reason: the :class:`EnvelopeErrorReason` naming the failed check.
    """

    def __init__(
        self,
        message: str,
        reason: EnvelopeErrorReason,
        code: EncryptionErrorCode = EncryptionErrorCode.DECRYPTION_FAILED,
    ) -> None:
        self.reason = reason
        super().__init__(message, code)


class HandshakeError(EcdhError):
    """A hello message was refused, or the server's signature did not verify.

    The code says which: ``ENCRYPTION_UNSUPPORTED_ALGORITHM`` (another curve,
    cipher or KDF), ``ENCRYPTION_SIGNATURE_VERIFICATION_FAILED``, or
    ``ENCRYPTION_HANDSHAKE_FAILED`` (any other malformed hello); docs/compatibility.md, C4.
    """


class ReconnectionConfigError(EnclaveStreamError, ValueError):
    """A :class:`ReconnectionConfig` field has a value the backoff rule cannot use."""


class ConnectorError(EnclaveStreamError):
    """A connector's verdict on a failed connection; see the two subclasses.

    Attributes:
        reason: what went wrong, in words (e.g. ``"HTTP 503 Service Unavailable"``).
        status_code: the HTTP status, when the failure was an HTTP response.
    """

    def __init__(self, reason: str, *, status_code: int | None = None) -> None:
        self.reason = reason
        self.status_code = status_code
        super().__init__(reason)


class RetryableConnectError(ConnectorError):
    """The connection failed for a passing reason (server busy, network): retry it.

    Attributes:
        retry_after: seconds the server asked to wait (``Retry-After``), or None.

    >>> raise RetryableConnectError("HTTP 503 Service Unavailable", status_code=503)
    Traceback (most recent call last):
    enclave_stream.errors.RetryableConnectError: HTTP 503 Service Unavailable
    """

    def __init__(
        self, reason: str, *, status_code: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(reason, status_code=status_code)
        self.retry_after = retry_after


class FatalConnectError(ConnectorError):
    """The connection failed for a reason a retry cannot fix (authentication, 4xx): give up."""


class SessionStartLostError(FatalConnectError):
    """The request that starts a session was sent, its answer lost, and it cannot be followed.

    The session may be running (its code may have started): it is not started
    again, as that could run the code twice. This happens when the client
    cannot name the session itself (a server that chooses the ids), or when
    the encrypted session it started gives no way to complete the handshake
    again.

    Attributes:
        session_id: the session's id when the client chose it, else None.
        cancelled: True when a cancel request for it was accepted.
    """

    def __init__(
        self,
        reason: str,
        *,
        session_id: str | None = None,
        cancelled: bool = False,
        status_code: int | None = None,
    ) -> None:
        super().__init__(reason, status_code=status_code)
        self.session_id = session_id
        self.cancelled = cancelled


class EncryptionNotAcceptedError(FatalConnectError):
    """Encryption was asked for, and the server started the session without it.

    The session did start (its code may be running): its answer had no
    ServerHello. The client asked the server to cancel it.

    Attributes:
        session_id: the session the server started.
        cancelled: True when the cancel request was accepted.
    """

    def __init__(self, reason: str, *, session_id: str, cancelled: bool) -> None:
        super().__init__(reason)
        self.session_id = session_id
        self.cancelled = cancelled


class _Progress(TypedDict, total=False):
    # How far the stream got: the keywords of every StreamFailedError.
    events_delivered: int
    last_seq: int | None


class StreamFailedError(EnclaveStreamError):
    """The event stream stopped for good before its ``final`` event.

    Raised from the ``async for`` loop after every event received before the
    failure has been delivered.

    Attributes:
        reason: why, in words (retries exhausted, a fatal error, ...).
        events_delivered: how many events the consumer received.
        last_seq: the sequence number of the last event delivered, None if none was.
        cause: the error behind the failure, if any (also ``__cause__``).
    """

    def __init__(
        self,
        reason: str,
        *,
        events_delivered: int = 0,
        last_seq: int | None = None,
        cause: BaseException | None = None,
    ) -> None:
        self.reason = reason
        self.events_delivered = events_delivered
        self.last_seq = last_seq
        self.cause = cause
        last = "none" if last_seq is None else str(last_seq)
        super().__init__(f"{reason} ({events_delivered} events delivered, last seq {last})")
        self.__cause__ = cause


class SequenceGapError(StreamFailedError):
    """Events ``missing_start`` to ``missing_end`` (inclusive) are lost: not even a replay has them.

    See docs/compatibility.md, R8; ``allow_gaps=True`` goes on without them.

    Attributes:
        missing_start: the first missing sequence number.
        missing_end: the last missing sequence number.
    """

    def __init__(self, missing_start: int, missing_end: int, **progress: Unpack[_Progress]) -> None:
        self.missing_start = missing_start
        self.missing_end = missing_end
        super().__init__(
            f"events {missing_start}..{missing_end} are missing and the replay cannot provide them",
            **progress,
        )


class SessionMismatchError(StreamFailedError):
    """An event of another session arrived: the stream is pinned to its first event's session.

    A resumed request that started a new session, or a server mixing streams,
    would otherwise splice two sessions into one.

    Attributes:
        expected: the session id of the first event delivered.
        received: the session id of the event refused.
        seq: that event's sequence number.
    """

    def __init__(
        self, expected: str, received: str, seq: int, **progress: Unpack[_Progress]
    ) -> None:
        self.expected = expected
        self.received = received
        self.seq = seq
        super().__init__(
            f"event seq {seq} belongs to session {received!r}, not {expected!r}", **progress
        )


class LineTooLongError(StreamFailedError):
    """An event is missing because its line was longer than ``max_line_bytes``.

    Attributes:
        line: the over-long line's number on its connection.
        max_line_bytes: the limit it exceeded; pass a larger one to
            ``open_event_stream`` to receive such events.
    """

    def __init__(self, line: int, max_line_bytes: int, **progress: Unpack[_Progress]) -> None:
        self.line = line
        self.max_line_bytes = max_line_bytes
        last_seq = progress.get("last_seq")
        super().__init__(
            f"line {line} was longer than max_line_bytes={max_line_bytes}, and the event "
            f"after {'seq ' + str(last_seq) if last_seq is not None else 'the start'} was "
            f"not received; raise max_line_bytes to accept it",
            **progress,
        )


class ReplayUnavailableError(EnclaveStreamError):
    """A replay (or a reader that fell behind) asked for events the log no longer holds.

    Over HTTP it is a ``410 Gone`` (docs/compatibility.md, P1).

    >>> error = ReplayUnavailableError(3, first_available_seq=120)
    >>> print(error)
    events from seq 3 are no longer held (the oldest held is 120)

    Attributes:
        requested_seq: the first seq asked for.
        first_available_seq: the oldest seq the log still holds.
        code: ``"REPLAY_UNAVAILABLE"``, the error code sent over HTTP.
    """

    code: ClassVar[str] = "REPLAY_UNAVAILABLE"

    def __init__(self, requested_seq: int, *, first_available_seq: int) -> None:
        self.requested_seq = requested_seq
        self.first_available_seq = first_available_seq
        super().__init__(
            f"events from seq {requested_seq} are no longer held "
            f"(the oldest held is {first_available_seq})"
        )


class LogFullError(EnclaveStreamError):
    """An append refused: the log is at its byte bound with events a holding reader has not sent.

    The creator's response of a session holds every event it has not sent
    yet (docs/compatibility.md, P1): the log cannot drop them to make room,
    so it refuses the event instead of losing one silently. Nothing is
    stored and no ``seq`` is used up; a ``final`` is never refused.

    >>> print(LogFullError("s_1", held_bytes=900, max_bytes=1000, first_unsent_seq=4))
    session s_1: the log holds 900 of its 1000 bytes, unsent from seq 4 on; the event does not fit

    Attributes:
        session_id: the session of the refused event.
        held_bytes: the bytes the log holds.
        max_bytes: the log's byte bound (the session's memory budget).
        first_unsent_seq: the oldest seq the holding reader has not sent.
    """

    def __init__(
        self, session_id: str, *, held_bytes: int, max_bytes: int, first_unsent_seq: int
    ) -> None:
        self.session_id = session_id
        self.held_bytes = held_bytes
        self.max_bytes = max_bytes
        self.first_unsent_seq = first_unsent_seq
        super().__init__(
            f"session {session_id}: the log holds {held_bytes} of its {max_bytes} bytes, "
            f"unsent from seq {first_unsent_seq} on; the event does not fit"
        )


class StoreUnavailableError(EnclaveStreamError):
    """A log kept outside the process (Redis) cannot serve or store events right now.

    The engine is down, lost its data and is being repaired, or the session's
    owner stopped writing. Over HTTP it is a ``503`` (retryable) unless
    :attr:`retryable` is False.

    >>> print(StoreUnavailableError("the Redis server is unreachable"))
    the Redis server is unreachable

    Attributes:
        reason: what is wrong, in words.
        retryable: True when asking again later may succeed.
        code: ``"STORE_UNAVAILABLE"``, the error code sent over HTTP.
    """

    code: ClassVar[str] = "STORE_UNAVAILABLE"

    def __init__(self, reason: str, *, retryable: bool = True) -> None:
        self.reason = reason
        self.retryable = retryable
        super().__init__(reason)


class StreamFinishedError(EnclaveStreamError):
    """An event was appended after the stream's ``final`` event (or after the log closed).

    >>> print(StreamFinishedError("s_1"))
    session s_1 is finished: no event can follow its final event
    """

    def __init__(self, session_id: str | None = None) -> None:
        self.session_id = session_id
        which = "the log" if session_id is None else f"session {session_id}"
        super().__init__(f"{which} is finished: no event can follow its final event")


class BrokerError(EnclaveStreamError):
    """A broker request that cannot be served, with the HTTP status and :meth:`body` to answer it.

    >>> error = BrokerError(404, "NOT_FOUND", "Session s_1 not found")
    >>> error.status, error.body()
    (404, {'code': 'NOT_FOUND', 'message': 'Session s_1 not found'})

    Attributes:
        status: the HTTP status code.
        code: a machine-readable error code (``NOT_FOUND``, ``INVALID_REQUEST``, ...).
        message: what went wrong, in words.
        details: extra JSON-able fields, or None.
        headers: extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(f"{status} {code}: {message}")

    def body(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body
