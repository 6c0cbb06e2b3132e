"""A session broker without a web framework: the streams of a service, by session id.

The broker's routes are plain calls whose failures are
:class:`~enclave_stream.errors.BrokerError` objects carrying the HTTP status
and body; :mod:`enclave_stream.starlette` puts them on Starlette.
docs/compatibility.md (P1-P10) says what they do.

Shutting down is two steps, because an ASGI server closes its connections
before it ends the app's lifespan: :meth:`SessionBroker.shutdown` ends every
running session (a failed ``final``, ``SERVER_SHUTDOWN``) so that every
response body ends and the server can close its connections; leaving the
broker's ``async with`` block then stops what is left.
:func:`shutdown_on_signals` calls it on SIGINT and SIGTERM, before the
server's own handler.
"""

from __future__ import annotations

__all__ = [
    "BrokerConfig",
    "SessionBroker",
    "SessionRequest",
    "SessionRequestConfig",
    "SessionRequestBody",
    "SessionRequestEncryption",
    "SessionRunner",
    "StreamResponse",
    "parse_from_seq",
    "shutdown_on_signals",
    "stream_response",
]

import asyncio
import contextlib
import logging
import math
import re
import signal
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from types import FrameType
from typing import Any, Final

import anyio
import msgspec
from anyio.abc import TaskGroup
from cryptography.hazmat.primitives.asymmetric import ec
from msgspec import UNSET, UnsetType

from .._lifetime import TaskOwner, owned_task_group
from .._options import check_number
from ..codec import encode_message
from ..crypto.handshake import accept_client_hello
from ..crypto.session import EncryptedSession
from ..errors import BrokerError, EncryptionError, ReplayUnavailableError, StreamFinishedError
from ..events import ErrorInfo, PositiveInt, ProtocolVersion, SessionLimits
from ..protocol import (
    DEFAULT_HEARTBEAT_INTERVAL_MS,
    MAX_SAFE_INTEGER,
    SERVER_HELLO_HEADER,
    SESSION_ID_HEADER,
    UPSTREAM_RESUME_PARAM,
    EncryptionMode,
    generate_session_id,
)
from .access import Access, Action, Authorize, Grant, HttpRequest, decide
from .log import DEFAULT_MAX_BYTES, DEFAULT_MAX_EVENTS, EventLog, NdjsonBody
from .stream import CANCELLED, SHUTDOWN, EventStream, Now

logger = logging.getLogger("enclave_stream")


_DIGITS: Final = re.compile(r"[0-9]{1,16}")
_CLIENT_SESSION_ID: Final = re.compile(r"s_[A-Za-z0-9._~:-]{1,200}")


class SessionRequestConfig(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The ``config`` of ``POST /sessions``, as ``@enclave-vm/client`` sends it."""

    max_execution_ms: PositiveInt | UnsetType = UNSET
    max_tool_calls: PositiveInt | UnsetType = UNSET
    heartbeat_interval_ms: PositiveInt | UnsetType = UNSET


class SessionRequestEncryption(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``encryption`` of ``POST /sessions``: the mode and the client's hello."""

    mode: EncryptionMode
    client_hello: dict[str, Any] | UnsetType = UNSET


class SessionRequestBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The body of ``POST /sessions``, in either shape of docs/compatibility.md (P8).

    Where both shapes give a setting, ``limits`` wins. Unknown keys are ignored.

    >>> body = msgspec.json.decode(
    ...     b'{"code": "return 1", "limits": {"heartbeatIntervalMs": 5000}}',
    ...     type=SessionRequestBody,
    ... )
    >>> body.code, body.heartbeat_interval_ms
    ('return 1', 5000)
    """

    code: str
    session_id: str | UnsetType = UNSET
    protocol_version: ProtocolVersion | UnsetType = UNSET
    config: SessionRequestConfig | UnsetType = UNSET
    limits: SessionLimits | UnsetType = UNSET
    encryption: SessionRequestEncryption | UnsetType = UNSET

    @property
    def heartbeat_interval_ms(self) -> int | None:
        """The heartbeat interval asked for (``limits`` first, then ``config``), or None."""
        return _first(self.limits, self.config, "heartbeat_interval_ms", "heartbeat_interval_ms")

    @property
    def ttl_ms(self) -> int | None:
        """The session lifetime asked for (``limits.sessionTtlMs``, ``config.maxExecutionMs``)."""
        return _first(self.limits, self.config, "session_ttl_ms", "max_execution_ms")


class SessionRequest(SessionRequestBody, frozen=True, kw_only=True):
    """A ``POST /sessions`` as a :data:`SessionRunner` gets it: the body, and the HTTP request.

    ``http`` is the request it came with (Starlette's ``Request`` under
    :func:`~enclave_stream.starlette.create_broker_app`: its headers,
    client, ``state``), None when :meth:`SessionBroker.create_session` was
    called without one.
    """

    http: HttpRequest | None = None


def _first(limits: object, config: object, limit_name: str, config_name: str) -> int | None:
    for source, name in ((limits, limit_name), (config, config_name)):
        value = getattr(source, name, UNSET)
        if value is not UNSET:
            return int(value)
    return None


SessionRunner = Callable[[EventStream, SessionRequest], Awaitable[None]]
"""Produces one session: appends its events to the stream, ``final`` last.

Runs in the broker's task group, inside ``async with stream`` (heartbeats
on schedule; a failed ``final`` if it ends without one). An exception it
raises is logged; when the broker cancels it (``cancel``, ``shutdown``),
the ``final`` says which. ``run_session`` in ``examples/serve_starlette.py``
is one.
"""


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """How a :class:`SessionBroker` makes and keeps sessions.

    Attributes:
        max_sessions: sessions held at once, running or finished. A
            finished session is held for ``retention_seconds``, never
            dropped early to make room: when full, a new one is refused
            (503 ``TOO_MANY_SESSIONS``, with ``Retry-After``).
        max_total_bytes: the memory budget of all sessions' replay logs
            together: a running session counts as ``max_bytes`` (what its
            log may grow to), a finished one as the bytes it holds. A new
            session that would take the total past it is refused (503
            ``MEMORY_BUDGET_EXCEEDED``, with ``Retry-After``).
        max_sessions_per_identity: running sessions one identity (the
            ``identity`` of the authorization hook's
            :class:`~enclave_stream.producer.access.Grant`) may hold; more
            is 429 ``TOO_MANY_SESSIONS_FOR_IDENTITY``. None: no limit.
        retention_seconds: how long a finished session stays resumable;
            after it, its readers get 410 ``SESSION_GONE``.
        client_session_ids: accept a ``sessionId`` chosen by the client
            (``@enclave-vm/client`` sends one); otherwise a request with one
            is refused (400) and every id is generated by the server.
        heartbeat_interval_ms: heartbeat interval of the sessions it starts,
            unless the request asks for another.
        min_heartbeat_interval_ms: the shortest heartbeat interval a request
            may ask for (a shorter one is 400 ``INVALID_REQUEST``).
        ttl_ms: lifetime of the sessions it starts (``session_init.expiresAt``),
            unless the request asks for another. A session still running at
            its ``expiresAt`` is stopped: a ``deadline_exceeded`` event and a
            failed ``final`` (``SESSION_EXPIRED``).
        max_ttl_ms: the longest lifetime a request may ask for (a longer
            one is 400 ``INVALID_REQUEST``).
        max_events: replay log bound of the sessions it starts, in events.
        max_bytes: replay log bound of the sessions it starts, in bytes.
        max_request_bytes: largest ``POST /sessions`` body accepted.
        send_timeout_seconds: a reader whose connection takes no bytes for
            this long (a frozen client, its buffers full) is dropped by
            :func:`~enclave_stream.starlette.create_broker_app`; it can
            resume. None: never.
        shutdown_timeout_seconds: on :meth:`SessionBroker.shutdown`, how
            long the producers it cancelled have to end before their
            streams get the shutdown ``final`` anyway; the response bodies
            of clients that keep reading end with it.

    >>> BrokerConfig(max_sessions=10, retention_seconds=30).heartbeat_interval_ms
    15000
    """

    max_sessions: int = 1000
    max_total_bytes: int = 1024 * 1024 * 1024
    max_sessions_per_identity: int | None = None
    retention_seconds: float = 300.0
    client_session_ids: bool = False
    heartbeat_interval_ms: float | None = DEFAULT_HEARTBEAT_INTERVAL_MS
    min_heartbeat_interval_ms: float = 1000.0
    ttl_ms: int = 60_000
    max_ttl_ms: int = 3_600_000
    max_events: int = DEFAULT_MAX_EVENTS
    max_bytes: int = DEFAULT_MAX_BYTES
    max_request_bytes: int = 1024 * 1024
    send_timeout_seconds: float | None = 60.0
    shutdown_timeout_seconds: float = 3.0


@dataclass(frozen=True, slots=True)
class StreamResponse:
    """A session's NDJSON stream response: the stream, its body, every header but the media type.

    The headers are ``Cache-Control: no-cache``, ``X-Accel-Buffering: no``
    and ``X-Session-ID``; for an encrypted session ``POST /sessions`` created,
    also :data:`SERVER_HELLO_HEADER` (on its resumes too).
    """

    stream: EventStream
    body: NdjsonBody
    headers: dict[str, str]


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
    merged = {
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",  # nginx: pass each chunk on at once
        SESSION_ID_HEADER: stream.session_id,
        **(headers or {}),
    }
    return StreamResponse(stream, body, merged)


@dataclass(slots=True)
class _Slot:
    stream: EventStream
    keeper: anyio.CancelScope  # the session's task; cancelled when the slot is dropped
    producer: anyio.CancelScope | None  # the producer's part of it; None: produced elsewhere
    grant: Grant
    expires: float  # anyio time of its expiresAt (inf: never)
    # Why the broker stopped the producer: the error of the final it gets.
    # None when the cancellation came from elsewhere (the broker's block ending).
    stop_reason: ErrorInfo | None = None
    dropped_at: float | None = None  # anyio time its retention ends, once finished
    # An encrypted session's ServerHello, sent again on every resume: a client
    # whose POST response was lost completes its handshake from a GET.
    resume_headers: dict[str, str] | None = None


_request_decoder: Final = msgspec.json.Decoder(SessionRequestBody)


def _invalid_request(message: str) -> BrokerError:
    return BrokerError(400, "INVALID_REQUEST", message)


def _ttl_seconds(stream: EventStream) -> float:
    expires_at = stream.expires_at
    if expires_at is None:
        return math.inf
    return max(0.0, (expires_at - stream.created_at).total_seconds())


class SessionBroker(TaskOwner):
    """The sessions of one service (see the module docstring).

    Use it as ``async with SessionBroker(runner) as broker:`` for the life
    of the service (the Starlette app does it in its lifespan); the task
    group it owns runs every session's producer, stops sessions at their
    ``expiresAt`` and retires finished sessions after ``retention_seconds``.
    Leaving the block cancels the sessions still running (each ends with a
    failed ``final``, ``SESSION_CANCELLED``); :meth:`shutdown` before it
    ends them with ``SERVER_SHUTDOWN`` while their clients are still
    connected.

    Sessions produced elsewhere can be served too: :meth:`add` a stream and
    append to it from the same event loop::

        async with SessionBroker() as broker:
            stream = broker.add(EventStream())
            stream.stdout("hello")   # GET /sessions/{id}/stream serves it

    Every route method asks ``authorize`` first (:mod:`.access`); without
    a hook, everything is allowed, and a session's id (random, from the
    server) is what lets a client use it.

    Args:
        runner: produces the sessions of ``POST /sessions``; without one,
            :meth:`create_session` refuses (404).
        config: limits and defaults (:class:`BrokerConfig`).
        authorize: the authorization hook (:class:`~.access.SessionTokens`
            is a ready one).
        signing_key: the server's static ECDSA P-256 key: the ServerHello of
            encrypted sessions is signed with it (clients may pin it).
        now: wall clock of new streams (timestamps, durations).
    """

    def __init__(
        self,
        runner: SessionRunner | None = None,
        *,
        config: BrokerConfig | None = None,
        authorize: Authorize | None = None,
        signing_key: ec.EllipticCurvePrivateKey | None = None,
        now: Now | None = None,
    ) -> None:
        self._runner = runner
        self._config = config = BrokerConfig() if config is None else config
        check_number("max_sessions", config.max_sessions, minimum=1, integer=True)
        check_number(
            "max_total_bytes", config.max_total_bytes, minimum=config.max_bytes, integer=True
        )
        if config.max_sessions_per_identity is not None:
            check_number(
                "max_sessions_per_identity",
                config.max_sessions_per_identity,
                minimum=1,
                integer=True,
            )
        check_number("min_heartbeat_interval_ms", config.min_heartbeat_interval_ms)
        check_number("max_ttl_ms", config.max_ttl_ms, minimum=1, integer=True)
        check_number("shutdown_timeout_seconds", config.shutdown_timeout_seconds)
        if config.send_timeout_seconds is not None:
            check_number("send_timeout_seconds", config.send_timeout_seconds, positive=True)
        self._authorize = authorize
        self._signing_key = signing_key
        self._now = now
        self._slots: dict[str, _Slot] = {}  # insertion order: oldest first
        # Sessions dropped after their retention, newest last, with their
        # grants: their readers get 410, not a 404 that says they never were.
        self._gone: OrderedDict[str, Grant] = OrderedDict()
        self._task_group: TaskGroup | None = None  # set while inside `async with`
        self._shutting_down = False

    @property
    def config(self) -> BrokerConfig:
        """The broker's limits and defaults."""
        return self._config

    @property
    def running(self) -> bool:
        """True inside the broker's ``async with`` block (sessions can be added)."""
        return self._task_group is not None

    @property
    def shutting_down(self) -> bool:
        """True once :meth:`shutdown` was called (until the block is entered again)."""
        return self._shutting_down

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._slots

    @property
    def held_bytes(self) -> int:
        """The memory budget in use (see :attr:`BrokerConfig.max_total_bytes`)."""
        return sum(self._reserved(slot) for slot in self._slots.values())

    def _reserved(self, slot: _Slot) -> int:
        store = slot.stream.store
        if not isinstance(store, EventLog):  # kept outside this process
            return 0
        return store.size_bytes if store.finished else max(store.size_bytes, self._config.max_bytes)

    # --- lifetime ---------------------------------------------------------------

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[None]:
        try:
            # Leaving it cancels the sessions' tasks and waits for them...
            async with owned_task_group() as task_group:
                self._task_group = task_group
                self._shutting_down = False
                try:
                    yield
                finally:
                    self._task_group = None
        finally:
            # ... then ends the streams still open: those produced elsewhere
            # too, whose readers must not wait forever.
            for slot in self._slots.values():
                if not slot.stream.finished:
                    slot.stream.store.close()
            self._slots.clear()
            self._gone.clear()

    # --- sessions ---------------------------------------------------------------

    def get(self, session_id: str) -> EventStream:
        """The session's stream (no authorization: this is the service's own access).

        Raises:
            BrokerError: 404 ``NOT_FOUND``, 410 ``SESSION_GONE`` after its retention.
        """
        slot = self._slots.get(session_id)
        if slot is None:
            raise self._missing(session_id)
        return slot.stream

    def _missing(self, session_id: str) -> BrokerError:
        if session_id in self._gone:
            return BrokerError(
                410,
                "SESSION_GONE",
                f"Session {session_id} ended and is no longer held "
                f"(retention: {self._config.retention_seconds:g} s)",
            )
        return BrokerError(404, "NOT_FOUND", f"Session {session_id} not found")

    async def _authorized(
        self, action: Action, session_id: str, request: HttpRequest | None
    ) -> _Slot:
        """The session's slot once the hook allows ``action``; a gone session's 410 if allowed."""
        slot = self._slots.get(session_id)
        if slot is not None:
            await decide(
                self._authorize, Access(action, request, session_id, slot.stream, slot.grant)
            )
            # The hook may have waited: the session may have been dropped since.
            if self._slots.get(session_id) is slot:
                return slot
        grant = self._gone.get(session_id)
        if grant is not None:
            await decide(self._authorize, Access(action, request, session_id, None, grant))
        raise self._missing(session_id)

    def add(
        self,
        stream: EventStream,
        run: Callable[[EventStream], Awaitable[None]] | None = None,
        *,
        grant: Grant | None = None,
    ) -> EventStream:
        """Hold ``stream`` (and run ``run(stream)`` inside ``async with stream``, if given).

        :meth:`new_stream` makes one with the broker's settings. Without
        ``run`` the caller produces the stream. Either way, it is
        stopped at its ``expiresAt`` if still running (``SESSION_EXPIRED``)
        and dropped ``retention_seconds`` after its ``final``. ``grant`` is
        what the authorization hook sees for it (:attr:`.Access.grant`), and
        its identity is counted against ``max_sessions_per_identity``.

        Raises:
            BrokerError: 409 ``SESSION_EXISTS``; 429
                ``TOO_MANY_SESSIONS_FOR_IDENTITY``; 503 ``TOO_MANY_SESSIONS``,
                ``MEMORY_BUDGET_EXCEEDED``, or ``SHUTTING_DOWN`` after
                :meth:`shutdown`.
            RuntimeError: the broker is not running.
        """
        task_group = self._task_group
        if task_group is None:
            raise RuntimeError("use the SessionBroker inside its `async with` block")
        self._refuse_if_shutting_down()
        session_id = stream.session_id
        if session_id in self._slots:
            raise BrokerError(409, "SESSION_EXISTS", f"Session {session_id} already exists")
        if session_id in self._gone:
            # A reader of the old session resuming this id would get another
            # session's events: an id is used once.
            raise BrokerError(
                409, "SESSION_EXISTS", f"Session {session_id} existed and ended: choose another id"
            )
        grant = Grant() if grant is None else grant
        self._check_room(grant)
        expires = anyio.current_time() + _ttl_seconds(stream)
        producer = None if run is None else anyio.CancelScope(deadline=expires)
        slot = _Slot(stream, anyio.CancelScope(), producer, grant, expires)
        self._slots[session_id] = slot
        task_group.start_soon(self._keep, slot, run)
        return stream

    def new_stream(
        self,
        run: Callable[[EventStream], Awaitable[None]] | None = None,
        *,
        session: EncryptedSession | None = None,
        grant: Grant | None = None,
        cancel_url: str | None = None,
    ) -> EventStream:
        """A new session made with the broker's settings, held as :meth:`add` holds it.

        The stream gets ``BrokerConfig``'s heartbeat interval, lifetime
        (``ttl_ms``) and replay log bounds, and the broker's clock; for
        your own routes, instead of building an :class:`EventStream`
        yourself. ``session`` encrypts it (its id is the session's).

        Raises:
            BrokerError, RuntimeError: as :meth:`add`.
        """
        config = self._config
        stream = EventStream(
            session=session,
            heartbeat_interval_ms=config.heartbeat_interval_ms,
            ttl_ms=config.ttl_ms,
            max_events=config.max_events,
            max_bytes=config.max_bytes,
            cancel_url=cancel_url,
            now=self._now,
        )
        return self.add(stream, run, grant=grant)

    def _refuse_if_shutting_down(self) -> None:
        if self._shutting_down:
            raise BrokerError(503, "SHUTTING_DOWN", "The server is shutting down")

    def _check_room(self, grant: Grant) -> None:
        """Refuse a new session the limits have no room for (finished ones are never evicted)."""
        config = self._config
        slots = self._slots.values()
        now = anyio.current_time()
        retention = config.retention_seconds
        identity = grant.identity
        limit = config.max_sessions_per_identity
        if identity is not None and limit is not None:
            running = [s for s in slots if s.grant.identity == identity and not s.stream.finished]
            if len(running) >= limit:
                raise BrokerError(
                    429,
                    "TOO_MANY_SESSIONS_FOR_IDENTITY",
                    # Not the identity itself: it may be a credential.
                    f"This identity already runs {len(running)} sessions (the limit is {limit})",
                    headers=_retry_after(min(s.expires for s in running) - now),
                )
        if len(self._slots) >= config.max_sessions:
            raise BrokerError(
                503,
                "TOO_MANY_SESSIONS",
                f"The broker holds {len(self._slots)} sessions (the limit is "
                f"{config.max_sessions}; finished ones are kept {retention:g} s)",
                headers=_retry_after(min(self._dropped_at(s, now) for s in slots) - now),
            )
        held = self.held_bytes
        if held + config.max_bytes > config.max_total_bytes:
            raise BrokerError(
                503,
                "MEMORY_BUDGET_EXCEEDED",
                f"The sessions hold {held} of the broker's {config.max_total_bytes} bytes",
                # A running session frees most of its share when it ends.
                headers=_retry_after(
                    min(
                        (self._dropped_at(s, now) if s.stream.finished else s.expires)
                        for s in slots
                    )
                    - now
                ),
            )

    def _dropped_at(self, slot: _Slot, now: float) -> float:
        """When ``slot`` is dropped at the latest (anyio time): retention after its end."""
        if slot.dropped_at is not None:
            return slot.dropped_at
        end = now if slot.stream.finished else slot.expires
        return end + self._config.retention_seconds

    async def cancel(self, session_id: str, *, request: HttpRequest | None = None) -> None:
        """``POST /sessions/{id}/cancel``, ``DELETE /sessions/{id}``: cancel a session.

        Its stream ends with a failed ``final`` (``SESSION_CANCELLED``): the
        producer the broker runs is cancelled (the ``final`` follows when it
        has unwound); a stream produced elsewhere gets the ``final`` at
        once. A finished session is left as it is.

        Raises:
            BrokerError: the hook's refusal; 404 ``NOT_FOUND``; 410 ``SESSION_GONE``.
        """
        self._stop(await self._authorized(Action.CANCEL, session_id, request), CANCELLED)

    def _stop(self, slot: _Slot, reason: ErrorInfo) -> None:
        if slot.stream.finished:
            return
        if slot.producer is not None:
            slot.stop_reason = reason
            slot.producer.cancel()
        else:
            slot.stream.final(False, error=reason)

    def shutdown(self) -> None:
        """Begin a graceful shutdown: end every running session, refuse new ones.

        Each producer the broker runs is cancelled and its stream ends with
        a failed ``final`` (``SERVER_SHUTDOWN``) once it has unwound; a
        stream produced elsewhere gets that ``final`` at once. A producer
        still running ``shutdown_timeout_seconds`` later (one that shields
        itself from cancellation) has the ``final`` appended for it. The
        response bodies end after their ``final``, so the server can close
        their connections; new sessions are refused (503
        ``SHUTTING_DOWN``). Sessions stay readable until the block ends.
        Calling it again, or outside the broker's block, does nothing. Call
        it from the broker's event loop (:func:`shutdown_on_signals` does,
        on a signal).
        """
        task_group = self._task_group
        if task_group is None or self._shutting_down:
            return
        self._shutting_down = True
        running = [slot for slot in self._slots.values() if not slot.stream.finished]
        logger.info("shutting down: ending %d running session(s)", len(running))
        for slot in running:
            self._stop(slot, SHUTDOWN)
        task_group.start_soon(self._end_after_timeout, running)

    async def _end_after_timeout(self, slots: list[_Slot]) -> None:
        await anyio.sleep(self._config.shutdown_timeout_seconds)
        for slot in slots:
            stream = slot.stream
            if stream.finished:
                continue
            logger.warning(
                "the producer of session %s ignored the shutdown; ending its stream",
                stream.session_id,
            )
            try:
                stream.final(False, error=SHUTDOWN)
            except Exception:  # a store that cannot take it: its readers must end anyway
                logger.exception("appending the final of session %s failed", stream.session_id)
                stream.store.close()

    def _expire(self, slot: _Slot) -> ErrorInfo:
        """Say on the stream that it ran out of its lifetime; the ``final`` error to end it with."""
        stream = slot.stream
        ttl_ms = max(1, round(_ttl_seconds(stream) * 1000))
        if not stream.finished:
            stream.deadline_exceeded(max(stream.stats().duration_ms, ttl_ms), ttl_ms)
        return ErrorInfo(
            message=f"The session reached the end of its lifetime ({ttl_ms} ms)",
            code="SESSION_EXPIRED",
        )

    async def _keep(
        self, slot: _Slot, run: Callable[[EventStream], Awaitable[None]] | None
    ) -> None:
        stream = slot.stream
        with slot.keeper:
            if run is not None and slot.producer is not None:
                await self._produce(slot, run)
            else:
                with anyio.move_on_at(slot.expires):
                    await stream.store.wait_finished()
                if not stream.finished:
                    stream.final(False, error=self._expire(slot))
            await stream.store.wait_finished()
            slot.dropped_at = anyio.current_time() + self._config.retention_seconds
            await anyio.sleep_until(slot.dropped_at)
        if self._slots.get(stream.session_id) is slot:
            del self._slots[stream.session_id]
            gone = self._gone
            gone[stream.session_id] = slot.grant
            while len(gone) > self._config.max_sessions:
                gone.popitem(last=False)

    async def _produce(self, slot: _Slot, run: Callable[[EventStream], Awaitable[None]]) -> None:
        stream = slot.stream
        assert slot.producer is not None
        with slot.producer:
            try:
                async with stream:
                    try:
                        await run(stream)
                    except anyio.get_cancelled_exc_class():
                        # Stopped by the broker (or its expiresAt): the final says why.
                        if slot.stop_reason is None and anyio.current_time() >= slot.expires:
                            slot.stop_reason = self._expire(slot)
                        if slot.stop_reason is not None and not stream.finished:
                            stream.final(False, error=slot.stop_reason)
                        raise
            except StreamFinishedError:
                if slot.stop_reason is None:  # the final was not the broker's
                    logger.exception("the producer of session %s failed", stream.session_id)
            except Exception:
                logger.exception("the producer of session %s failed", stream.session_id)
        if not stream.finished:  # cancelled before the stream was entered
            if slot.stop_reason is None and anyio.current_time() >= slot.expires:
                slot.stop_reason = self._expire(slot)
            stream.final(False, error=slot.stop_reason or CANCELLED)

    # --- the routes -------------------------------------------------------------

    async def create_session(
        self, body: bytes, *, request: HttpRequest | None = None, base_path: str = ""
    ) -> StreamResponse:
        """``POST /sessions``: start a session from the JSON ``body``; stream it from seq 1.

        ``request`` is the HTTP request, for the authorization hook and the
        runner (:attr:`SessionRequest.http`). ``base_path`` is the prefix
        the routes are served under (ASGI ``root_path``):
        ``session_init.cancelUrl`` is ``{base_path}/sessions/{id}/cancel``.
        The response's headers include the :class:`~.access.Grant`'s.

        Raises:
            BrokerError: 400 ``INVALID_REQUEST`` (or an encryption error code)
                for a bad body or handshake; the hook's refusal; 404 when
                the broker has no runner; 409 ``SESSION_EXISTS``; 413; 429
                ``TOO_MANY_SESSIONS_FOR_IDENTITY``; 503 ``TOO_MANY_SESSIONS``,
                ``MEMORY_BUDGET_EXCEEDED`` or ``SHUTTING_DOWN``.
        """
        runner = self._runner
        if runner is None:
            raise BrokerError(404, "NOT_FOUND", "This broker does not start sessions")
        self._refuse_if_shutting_down()
        config = self._config
        limit = config.max_request_bytes
        if len(body) > limit:
            raise BrokerError(413, "REQUEST_TOO_LARGE", f"The request body exceeds {limit} bytes")
        # Everything about the request is checked before the session is
        # registered or its runner started: a refused request leaves nothing.
        try:
            decoded = _request_decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise _invalid_request(f"Invalid request body: {exc}") from None
        except RecursionError:  # msgspec's own depth limit
            raise _invalid_request("Invalid request body: nested too deeply") from None
        session_request = SessionRequest(
            **{name: getattr(decoded, name) for name in decoded.__struct_fields__}, http=request
        )
        session_id = self._session_id(decoded)
        heartbeat = decoded.heartbeat_interval_ms
        if heartbeat is not None and heartbeat < config.min_heartbeat_interval_ms:
            raise _invalid_request(
                f"heartbeatIntervalMs must be at least {config.min_heartbeat_interval_ms:g}, "
                f"got {heartbeat}"
            )
        ttl = config.ttl_ms if decoded.ttl_ms is None else decoded.ttl_ms
        if ttl > config.max_ttl_ms:
            raise _invalid_request(
                f"The session lifetime may be at most {config.max_ttl_ms} ms, got {ttl}"
            )
        grant = await decide(
            self._authorize,
            Access(Action.CREATE, request, session_id, body=session_request),
        )
        # No await from here on: what is checked stays true until it is registered.
        self._refuse_if_shutting_down()
        if session_id in self._slots:
            raise BrokerError(409, "SESSION_EXISTS", f"Session {session_id} already exists")
        self._check_room(grant)  # before the handshake's work
        headers = dict(grant.headers)
        encrypted = None
        encryption = decoded.encryption
        if encryption is not UNSET and encryption.mode is not EncryptionMode.DISABLED:
            if encryption.client_hello is not UNSET:
                try:
                    server_hello, encrypted = accept_client_hello(
                        encryption.client_hello, session_id, signing_key=self._signing_key
                    )
                except EncryptionError as exc:
                    raise BrokerError(400, str(exc.code), str(exc)) from None
                headers[SERVER_HELLO_HEADER] = encode_message(server_hello).decode("ascii")
            elif encryption.mode is EncryptionMode.REQUIRED:
                raise BrokerError(
                    400,
                    "ENCRYPTION_HANDSHAKE_FAILED",
                    "Encryption is required but the request has no clientHello",
                )
        try:
            stream = EventStream(
                session_id,
                session=encrypted,
                heartbeat_interval_ms=config.heartbeat_interval_ms
                if heartbeat is None
                else heartbeat,
                ttl_ms=ttl,
                max_events=config.max_events,
                max_bytes=config.max_bytes,
                cancel_url=f"{base_path.rstrip('/')}/sessions/{session_id}/cancel",
                now=self._now,
            )
        except OverflowError:  # now + ttl is past the year 9999
            raise _invalid_request(
                f"Invalid session lifetime {ttl} ms: its expiry date is out of range"
            ) from None
        # The creator gets every event from seq 1, however many the runner
        # appends before the response's first read (docs/compatibility.md, P1).
        response = stream_response(stream, headers=headers, hold=True)
        self.add(stream, lambda s: runner(s, session_request), grant=grant)
        if SERVER_HELLO_HEADER in headers:
            hello = {SERVER_HELLO_HEADER: headers[SERVER_HELLO_HEADER]}
            self._slots[session_id].resume_headers = hello
        return response

    def _session_id(self, body: SessionRequestBody) -> str:
        if body.session_id is UNSET:
            return generate_session_id()
        session_id = body.session_id
        if not self._config.client_session_ids:
            # A client that picks ids can squat on another's, or guess them.
            raise _invalid_request(
                "This broker generates session ids: send no sessionId "
                "(the X-Session-ID response header gives the id)"
            )
        # A client-chosen id travels in a response header and in URL paths:
        # control characters, non-ASCII or "/" would break one or the other.
        if _CLIENT_SESSION_ID.fullmatch(session_id) is None:
            raise _invalid_request(
                f"Invalid sessionId {session_id!r}: expected 's_' and 1 to 200 of "
                "A-Z a-z 0-9 . _ ~ : -"
            )
        return session_id

    async def open_stream(
        self,
        session_id: str,
        from_seq: str | None = None,
        from_: str | None = None,
        *,
        request: HttpRequest | None = None,
    ) -> StreamResponse:
        """``GET /sessions/{id}/stream?fromSeq=N``: the session from ``seq`` N, live to ``final``.

        ``from_seq`` is the ``fromSeq`` query parameter's text and ``from_``
        that of ``from`` (:data:`UPSTREAM_RESUME_PARAM`, what
        ``@enclave-vm/client`` sends), None when absent. They mean the same;
        when both are given, ``fromSeq`` wins (both must be valid). Neither:
        the whole session.

        Raises:
            BrokerError: 400 ``INVALID_REQUEST`` for a ``fromSeq`` or
                ``from`` that is not a non-negative integer; the hook's
                refusal; 404 ``NOT_FOUND``; 410 ``SESSION_GONE`` after its
                retention, 410 ``REPLAY_UNAVAILABLE`` when events from N
                were dropped (the body's ``details`` hold ``requestedSeq``
                and ``firstAvailableSeq``).
        """
        upstream = parse_from_seq(from_, UPSTREAM_RESUME_PARAM)
        ours = parse_from_seq(from_seq)
        slot = await self._authorized(Action.READ, session_id, request)
        return stream_response(slot.stream, upstream if ours is None else ours, slot.resume_headers)

    async def session_info(
        self, session_id: str, *, request: HttpRequest | None = None
    ) -> dict[str, Any]:
        """``GET /sessions/{id}``: the session's state and figures, as a JSON object.

        ``{"sessionId", "state", "createdAt", "updatedAt", "expiresAt",
        "eventCount", "lastSeq", "stats": {"duration", "toolCallCount",
        "stdoutBytes"}}``: ``state`` is ``running``, ``completed``,
        ``cancelled`` or ``failed``; times are milliseconds since the Unix
        epoch (``updatedAt``: the last event; ``expiresAt`` absent for a date
        Python cannot hold); ``eventCount`` counts the events appended
        (dropped ones too), so it equals ``lastSeq``, the ``seq`` of the
        newest; ``duration`` is in milliseconds, up to ``final`` once there
        is one (docs/compatibility.md, P9).

        Raises:
            BrokerError: the hook's refusal; 404 ``NOT_FOUND``; 410 ``SESSION_GONE``.
        """
        return _info((await self._authorized(Action.INFO, session_id, request)).stream)

    async def list_sessions(self, *, request: HttpRequest | None = None) -> dict[str, Any]:
        """``GET /sessions``: ``{"sessions": [...], "total": n}``, each as :meth:`session_info`.

        Oldest first; finished sessions are listed until they are dropped.

        Raises:
            BrokerError: the hook's refusal (asked once, for the whole list).
        """
        await decide(self._authorize, Access(Action.LIST, request))
        sessions = [_info(slot.stream) for slot in self._slots.values()]
        return {"sessions": sessions, "total": len(sessions)}


def _retry_after(seconds: float) -> dict[str, str]:
    """A ``Retry-After`` header: whole seconds, at least 1."""
    if not math.isfinite(seconds):
        seconds = 60.0
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


@asynccontextmanager
async def shutdown_on_signals(
    broker: SessionBroker, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
) -> AsyncIterator[bool]:
    """While the block runs, ``signals`` shut ``broker`` down, then reach their previous handler.

    An ASGI server (uvicorn, hypercorn) waits for open responses to end
    before it ends the app's lifespan, and a session's response ends only
    with its ``final``: without this, a server asked to stop waits for
    every running session. With it, the signal ends the sessions at once
    (:meth:`SessionBroker.shutdown`) and the server's own handler (which it
    installed before the lifespan started) still runs, so the server shuts
    down as it would have. :func:`enclave_stream.starlette.create_broker_app`
    uses it in its lifespan.

    The signal handler only wakes a task of the block, which calls
    ``shutdown()`` on the event loop (asyncio or trio). It yields True when
    it installed a handler: only in the main thread (the one where Python
    runs signal handlers) and only for a signal that already has a Python
    handler (a server's, or Python's ``KeyboardInterrupt`` for SIGINT); a
    signal left to the system's default action or ignored is not touched.
    On exit, each handler that is still ours is put back.
    """
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    requested = anyio.Event()
    call_soon = _signal_safe_call_soon()
    chained: dict[int, Callable[[int, FrameType | None], Any]] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop has ended
            call_soon(requested.set)
        chained[signum](signum, frame)

    async def shut_down_when_requested() -> None:
        await requested.wait()
        broker.shutdown()

    for signum in signals:
        previous = signal.getsignal(signum)
        if callable(previous):
            chained[signum] = previous
            signal.signal(signum, handler)
    try:
        async with owned_task_group() as task_group:
            task_group.start_soon(shut_down_when_requested)
            yield bool(chained)
    finally:
        for signum, previous in chained.items():
            if signal.getsignal(signum) is handler:
                signal.signal(signum, previous)


def _signal_safe_call_soon() -> Callable[[Callable[[], None]], object]:
    """The current event loop's way to schedule a call from a signal handler or another thread."""
    try:
        return asyncio.get_running_loop().call_soon_threadsafe
    except RuntimeError:  # no asyncio loop: anyio's other backend, trio
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon


def _epoch_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def _info(stream: EventStream) -> dict[str, Any]:
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


def parse_from_seq(text: str | None, name: str = "fromSeq") -> int | None:
    """The ``fromSeq`` (or ``name``) query parameter as an int (None when absent).

    >>> parse_from_seq("12"), parse_from_seq(None)
    (12, None)

    Raises:
        BrokerError: 400 ``INVALID_REQUEST`` unless it is a non-negative
            safe integer in decimal digits.
    """
    if text is None:
        return None
    if not _DIGITS.fullmatch(text) or int(text) > MAX_SAFE_INTEGER:
        raise _invalid_request(f"{name} must be a non-negative integer, got {text[:40]!r}")
    return int(text)
