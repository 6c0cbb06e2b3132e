"""Errors of the resumable event stream, and which failures are worth a retry.

A connector (the function that opens one connection) may raise
:class:`RetryableConnectError` or :class:`FatalConnectError` to say what a
failure means; :func:`is_retryable` applies that and the built-in rules.
When the stream gives up, the consumer gets a :class:`StreamFailedError` (or
its subclass :class:`SequenceGapError`) that says why and how far it got.
"""

from __future__ import annotations

__all__ = [
    "LineTooLongError",
    "SessionMismatchError",
    "ConnectorError",
    "FatalConnectError",
    "RetryableConnectError",
    "SequenceGapError",
    "StreamFailedError",
    "is_retryable",
]

from collections.abc import Callable
from typing import Any

import anyio

from ..errors import EnclaveStreamError


def _rebuild(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class _Picklable(EnclaveStreamError):
    # The default pickling calls ``cls(*self.args)``, which does not fit
    # keyword-only constructors; restore the attributes directly instead.
    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class ConnectorError(_Picklable):
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

    >>> raise RetryableConnectError("HTTP 503 Service Unavailable", status_code=503)
    Traceback (most recent call last):
    enclave_stream.reconnect.errors.RetryableConnectError: HTTP 503 Service Unavailable
    """


class FatalConnectError(ConnectorError):
    """The connection failed for a reason a retry cannot fix (authentication, 4xx): give up."""


class StreamFailedError(_Picklable):
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

    Raised only when a replay asked for exactly the missing events still
    skips them; pass ``allow_gaps=True`` to go on without them.

    Attributes:
        missing_start: the first missing sequence number.
        missing_end: the last missing sequence number.
    """

    def __init__(
        self,
        missing_start: int,
        missing_end: int,
        *,
        events_delivered: int = 0,
        last_seq: int | None = None,
    ) -> None:
        self.missing_start = missing_start
        self.missing_end = missing_end
        super().__init__(
            f"events {missing_start}..{missing_end} are missing and the replay cannot provide them",
            events_delivered=events_delivered,
            last_seq=last_seq,
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
        self,
        expected: str,
        received: str,
        seq: int,
        *,
        events_delivered: int = 0,
        last_seq: int | None = None,
    ) -> None:
        self.expected = expected
        self.received = received
        self.seq = seq
        super().__init__(
            f"event seq {seq} belongs to session {received!r}, not {expected!r}",
            events_delivered=events_delivered,
            last_seq=last_seq,
        )


class LineTooLongError(StreamFailedError):
    """An event is missing because its line was longer than ``max_line_bytes``.

    Attributes:
        line: the over-long line's number on its connection.
        max_line_bytes: the limit it exceeded; pass a larger one to
            ``open_event_stream`` to receive such events.
    """

    def __init__(
        self,
        line: int,
        max_line_bytes: int,
        *,
        events_delivered: int = 0,
        last_seq: int | None = None,
    ) -> None:
        self.line = line
        self.max_line_bytes = max_line_bytes
        super().__init__(
            f"line {line} was longer than max_line_bytes={max_line_bytes}, and the event "
            f"after {'seq ' + str(last_seq) if last_seq is not None else 'the start'} was "
            f"not received; raise max_line_bytes to accept it",
            events_delivered=events_delivered,
            last_seq=last_seq,
        )


# Failures of the byte transport itself: always worth another connection.
# (TimeoutError and ConnectionError are OSErrors.)
_TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
    anyio.IncompleteRead,
    RetryableConnectError,
)


def is_retryable(error: Exception, retry_if: Callable[[Exception], bool] | None = None) -> bool:
    """Whether a connection that failed with ``error`` should be retried.

    :class:`FatalConnectError` never is; :class:`RetryableConnectError`,
    ``OSError`` (including ``TimeoutError`` and ``ConnectionError``) and
    anyio's ``BrokenResourceError``, ``EndOfStream`` and ``IncompleteRead``
    always are; ``retry_if(error)`` decides for any other error, which is fatal
    without it. An exception group is retryable when all its errors are.

    >>> is_retryable(ConnectionResetError()), is_retryable(ValueError())
    (True, False)
    >>> is_retryable(ValueError(), retry_if=lambda e: isinstance(e, ValueError))
    True
    """
    if isinstance(error, FatalConnectError):
        return False
    if isinstance(error, _TRANSPORT_ERRORS):
        return True
    nested: tuple[Exception, ...] | None = getattr(error, "exceptions", None)
    if isinstance(nested, tuple) and nested:
        return all(is_retryable(inner, retry_if) for inner in nested)
    return retry_if is not None and bool(retry_if(error))
