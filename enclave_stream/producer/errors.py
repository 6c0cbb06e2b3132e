"""Errors of the producer side: replay logs, event streams and the session broker."""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "ReplayUnavailableError",
    "StreamFinishedError",
]

from typing import Any, ClassVar

from ..errors import EnclaveStreamError


class ReplayUnavailableError(EnclaveStreamError):
    """A client asked for events the log no longer holds.

    Raised when a replay (or a reader that fell behind) asks for ``seq``
    numbers that were evicted to keep the log within its bounds. Skipping
    them silently would hand the client a stream with a hole in it, so the
    client is told instead; over HTTP it is a ``410 Gone``.

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

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.requested_seq, self.first_available_seq))


def _rebuild(requested_seq: int, first_available_seq: int) -> ReplayUnavailableError:
    return ReplayUnavailableError(requested_seq, first_available_seq=first_available_seq)


class StreamFinishedError(EnclaveStreamError):
    """An event was appended after the stream's ``final`` event (or after the log closed).

    ``final`` is the last event of a session: a client stops reading there,
    so anything after it would never be seen.

    >>> print(StreamFinishedError("s_1"))
    session s_1 is finished: no event can follow its final event
    """

    def __init__(self, session_id: str | None = None) -> None:
        self.session_id = session_id
        which = "the log" if session_id is None else f"session {session_id}"
        super().__init__(f"{which} is finished: no event can follow its final event")

    def __reduce__(self) -> tuple[Any, ...]:
        return (StreamFinishedError, (self.session_id,))


class BrokerError(EnclaveStreamError):
    """A broker request that cannot be served, with the HTTP status to answer it with.

    The HTTP layer sends ``{"code": ..., "message": ...}`` (plus ``details``
    when there are any) with :attr:`status`, as the reference broker does.

    >>> error = BrokerError(404, "NOT_FOUND", "Session s_1 not found")
    >>> error.status, error.body()
    (404, {'code': 'NOT_FOUND', 'message': 'Session s_1 not found'})

    Attributes:
        status: the HTTP status code.
        code: a machine-readable error code (``NOT_FOUND``, ``INVALID_REQUEST``, ...).
        message: what went wrong, in words.
        details: extra JSON-able fields, or None.
    """

    def __init__(
        self, status: int, code: str, message: str, *, details: dict[str, Any] | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        super().__init__(f"{status} {code}: {message}")

    def body(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_broker, (self.status, self.code, self.message, self.details))


def _rebuild_broker(
    status: int, code: str, message: str, details: dict[str, Any] | None
) -> BrokerError:
    return BrokerError(status, code, message, details=details)
