"""What the broker's routes answer: a stream response, a session's state as JSON."""

from __future__ import annotations

__all__ = [
    "DEFAULT_SEND_TIMEOUT_SECONDS",
    "StreamResponse",
    "session_info_json",
    "shared_stream_response",
    "stream_response",
]

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from ..errors import BrokerError, ReplayUnavailableError
from ..protocol import SESSION_ID_HEADER
from .shared import StreamBody
from .stream import EventStream

DEFAULT_SEND_TIMEOUT_SECONDS: Final = 30.0
"""How long a stream response waits for its reader to take bytes before dropping it.

Shorter than a producer's default ``drain()`` timeout, so that a frozen
reader stops counting before a producer waiting on it gives up.
"""


@dataclass(frozen=True, slots=True)
class StreamResponse:
    """A session's NDJSON stream response: the stream, its body, every header but the media type.

    The headers are ``Cache-Control: no-cache``, ``X-Accel-Buffering: no``
    and ``X-Session-ID``; for an encrypted session ``POST /sessions`` created,
    also :data:`SERVER_HELLO_HEADER` (on its resumes too). ``stream`` is None
    for a session served from a log shared with other replicas
    (:mod:`.shared`), held by another.
    """

    stream: EventStream | None
    body: StreamBody
    headers: dict[str, str]

    @property
    def session_id(self) -> str:
        """The session's id."""
        return self.headers[SESSION_ID_HEADER]


def shared_stream_response(
    session_id: str, body: StreamBody, headers: Mapping[str, str] | None = None
) -> StreamResponse:
    """The response for ``body``, a session served from a shared log (no local stream)."""
    return StreamResponse(None, body, _headers(session_id, headers))


def _headers(session_id: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",  # nginx: pass each chunk on at once
        SESSION_ID_HEADER: session_id,
        **(extra or {}),
    }


def stream_response(
    stream: EventStream,
    from_seq: int | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    hold: bool = False,
) -> StreamResponse:
    """``stream`` from ``from_seq`` (None: from the start), with the headers of a stream response.

    ``hold=True`` for the response of the request that created the session:
    the log drops none of the events it has not sent (``EventStream.ndjson_body``).

    >>> stream_response(EventStream("s_1", heartbeat_interval_ms=None)).headers
    {'Cache-Control': 'no-cache', 'X-Accel-Buffering': 'no', 'X-Session-ID': 's_1'}

    Raises:
        BrokerError: 410 ``REPLAY_UNAVAILABLE`` when events from ``from_seq``
            were dropped (``details`` hold ``requestedSeq`` and ``firstAvailableSeq``).
        ValueError: ``from_seq`` is not an integer >= 0.
    """
    try:
        body = stream.ndjson_body(from_seq, hold=hold)
    except ReplayUnavailableError as exc:
        details = {"requestedSeq": exc.requested_seq, "firstAvailableSeq": exc.first_available_seq}
        raise BrokerError(410, exc.code, str(exc), details=details) from None
    return StreamResponse(stream, body, _headers(stream.session_id, headers))


def _epoch_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def session_info_json(stream: EventStream) -> dict[str, Any]:
    last_seq = stream.next_seq - 1
    stats = stream.stats()
    info: dict[str, Any] = {
        "sessionId": stream.session_id,
        "state": stream.state.value,
        "createdAt": _epoch_ms(stream.created_at),
        "updatedAt": _epoch_ms(stream.updated_at),
    }
    if stream.expires_at is not None:
        info["expiresAt"] = _epoch_ms(stream.expires_at)
    info["eventCount"] = last_seq
    info["lastSeq"] = last_seq
    info["stats"] = {
        "duration": stats.duration_ms,
        "toolCallCount": stats.tool_call_count,
        "stdoutBytes": stats.stdout_bytes,
    }
    return info
