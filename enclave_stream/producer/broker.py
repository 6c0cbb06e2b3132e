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
:func:`~.signals.shutdown_on_signals` calls it on SIGINT and SIGTERM, before the
server's own handler.
"""

from __future__ import annotations

__all__ = ["ServedResponse", "SessionBroker"]

import ipaddress
import logging
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskGroup
from cryptography.hazmat.primitives.asymmetric import ec
from msgspec import UNSET

from .._lifetime import TaskOwner, owned_task_group
from ..codec import encode_message
from ..crypto.handshake import accept_client_hello
from ..crypto.session import EncryptedSession
from ..errors import BrokerError, EncryptionError, StreamFinishedError
from ..events import ErrorInfo
from ..protocol import (
    SERVER_HELLO_HEADER,
    UPSTREAM_RESUME_PARAM,
    EncryptionMode,
    generate_session_id,
)
from .access import Access, Action, Authorize, Grant, HttpRequest, decide
from .config import BrokerConfig
from .log import EventEncodeFunction, EventLog, EventStore
from .requests import (
    SessionRequest,
    SessionRequestBody,
    SessionRunner,
    decode_session_request,
    invalid_request,
    parse_from_seq,
)
from .responses import StreamResponse, session_info_json, shared_stream_response, stream_response
from .shared import SessionBackend
from .stream import CANCELLED, SHUTDOWN, EventStream, Now

logger = logging.getLogger("enclave_stream")


@dataclass(slots=True)
class _Slot:
    stream: EventStream
    keeper: anyio.CancelScope  # the session's task; cancelled when the slot is dropped
    producer: anyio.CancelScope | None  # the producer's part of it; None: produced elsewhere
    grant: Grant
    owner: str | None  # what max_sessions_per_identity counts it against
    expires: float  # anyio time of its expiresAt (inf: never)
    # Counted by its client's address (no hook identity): an address may be
    # shared (a proxy) or chosen (X-Forwarded-For), so it never evicts.
    by_address: bool = False
    # Why the broker stopped the producer: the error of the final it gets.
    # None when the cancellation came from elsewhere (the broker's block ending).
    stop_reason: ErrorInfo | None = None
    dropped_at: float | None = None  # anyio time its retention ends, once finished
    # An encrypted session's ServerHello, sent again on every resume: a client
    # whose POST response was lost completes its handshake from a GET.
    resume_headers: dict[str, str] | None = None


@dataclass(slots=True, eq=False)  # each is itself: held in sets
class ServedResponse:
    """One response being sent (:meth:`SessionBroker.serving`)."""

    cancel_scope: anyio.CancelScope
    """Send the response inside it: the broker cancels it to cut the response."""
    last_sent: float
    """When the client last took bytes (anyio time)."""

    def sent(self) -> None:
        """Say that a send went through: the client is taking bytes."""
        self.last_sent = anyio.current_time()


@dataclass(frozen=True, slots=True)
class _Gone:
    grant: Grant
    until: float  # anyio time: remembered at least until then (its retention)


# Ended sessions remembered (for 410, and so that their id is not used
# again) per session the broker may hold: bounded, so a client making
# sessions without end cannot grow it.
_GONE_PER_SESSION = 10


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
        backend: a log shared with the service's other replicas
            (:class:`enclave_stream.redis.RedisBackend`), run for the
            broker's lifetime: the sessions this broker makes are written
            there, and a resume of a session it does not hold is served
            from there, so any replica serves any resume.
    """

    def __init__(
        self,
        runner: SessionRunner | None = None,
        *,
        config: BrokerConfig | None = None,
        authorize: Authorize | None = None,
        signing_key: ec.EllipticCurvePrivateKey | None = None,
        now: Now | None = None,
        backend: SessionBackend | None = None,
    ) -> None:
        self._runner = runner
        self._backend = backend
        self._config = config = BrokerConfig() if config is None else config
        self._authorize = authorize
        self._signing_key = signing_key
        self._now = now
        self._slots: dict[str, _Slot] = {}  # insertion order: oldest first
        # Sessions dropped after their retention, newest last, with their
        # grants: their readers get 410, not a 404 that says they never were.
        self._gone: OrderedDict[str, _Gone] = OrderedDict()
        self._task_group: TaskGroup | None = None  # set while inside `async with`
        self._shutting_down = False
        # The responses being sent (serving()), cut when a shutdown's time is up.
        self._responses: dict[str, set[ServedResponse]] = {}
        self._responses_cut = False

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
        return store.size_bytes if store.finished else max(store.size_bytes, store.max_bytes)

    # --- lifetime ---------------------------------------------------------------

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[None]:
        if self._backend is None:
            async with self._sessions():
                yield
            return
        # Outside the sessions: the owners' writers outlive their last events.
        async with self._backend, self._sessions():
            yield

    @asynccontextmanager
    async def _sessions(self) -> AsyncIterator[None]:
        try:
            # Leaving it cancels the sessions' tasks and waits for them...
            async with owned_task_group() as task_group:
                self._task_group = task_group
                self._shutting_down = False
                self._responses_cut = False
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
        gone = self._gone.get(session_id)
        if gone is not None:
            await decide(self._authorize, Access(action, request, session_id, None, gone.grant))
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
        self._check_limits(stream)
        grant = Grant() if grant is None else grant
        return self._hold(stream, run, grant, grant.identity)

    def _hold(
        self,
        stream: EventStream,
        run: Callable[[EventStream], Awaitable[None]] | None,
        grant: Grant,
        owner: str | None,
        by_address: bool = False,
    ) -> EventStream:
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
        for dropped in self._room_for(owner, by_address=by_address):
            self._retire(dropped)
        expires = anyio.current_time() + _ttl_seconds(stream)
        producer = None if run is None else anyio.CancelScope(deadline=expires)
        slot = _Slot(stream, anyio.CancelScope(), producer, grant, owner, expires, by_address)
        self._slots[session_id] = slot
        task_group.start_soon(self._keep, slot, run)
        return stream

    def _check_limits(self, stream: EventStream) -> None:
        """Refuse a stream made with settings past the broker's limits (:meth:`add`)."""
        config = self._config
        interval = stream.heartbeat_interval_ms
        # The broker's own default may be below the floor it sets for requests.
        floor = min(config.min_heartbeat_interval_ms, config.heartbeat_interval_ms or math.inf)
        if interval is not None and interval < floor:
            raise ValueError(
                f"the stream's heartbeat_interval_ms ({interval:g}) is below the broker's "
                f"floor ({floor:g})"
            )
        ttl_ms = _ttl_seconds(stream) * 1000
        if ttl_ms > config.max_ttl_ms:
            raise ValueError(
                f"the stream's lifetime ({ttl_ms:.0f} ms) is past the broker's "
                f"max_ttl_ms ({config.max_ttl_ms})"
            )
        store = stream.store
        if isinstance(store, EventLog) and store.max_bytes > config.max_bytes:
            raise ValueError(
                f"the stream's max_bytes ({store.max_bytes}) is past the broker's "
                f"max_bytes ({config.max_bytes})"
            )

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
        session_id = generate_session_id() if session is None else session.session_id
        stream = EventStream(
            session_id,
            session=session,
            store_factory=self._store_factory(session_id, session is not None, None, grant),
            heartbeat_interval_ms=config.heartbeat_interval_ms,
            ttl_ms=config.ttl_ms,
            max_events=config.max_events,
            max_bytes=config.max_bytes,
            cancel_url=cancel_url,
            now=self._now,
        )
        try:
            return self.add(stream, run, grant=grant)
        except BaseException:
            stream.store.close()  # a shared log's writer ends with it
            raise

    def _refuse_if_shutting_down(self) -> None:
        if self._shutting_down:
            raise BrokerError(503, "SHUTTING_DOWN", "The server is shutting down")

    def _room_for(self, owner: str | None, *, by_address: bool = False) -> list[_Slot]:
        """Refuse a new session the limits have no room for; the sessions to drop to make room.

        Finished sessions are kept for their retention, never dropped to
        make room for someone else's: an identity at its limit has its own
        oldest finished sessions dropped (their readers get 410; only those
        whose producer has returned), and is refused when none can go. An
        identity that is only a client's address counts its running sessions
        and never drops any.
        """
        config = self._config
        now = anyio.current_time()
        retention = config.retention_seconds
        limit = config.max_sessions_per_identity
        own = [] if owner is None else [s for s in self._slots.values() if s.owner == owner]
        if by_address:
            own = [s for s in own if not s.stream.finished]
        dropping: list[_Slot] = []
        if limit is not None and len(own) >= limit:
            need = len(own) - limit + 1
            # Finished, and its producer returned (code after final may run).
            done = [s for s in own if s.dropped_at is not None]
            if by_address or len(done) < need:
                running = [s for s in own if s.dropped_at is None]
                raise BrokerError(
                    429,
                    "TOO_MANY_SESSIONS_FOR_IDENTITY",
                    # Not the identity itself: it may be a credential.
                    f"This identity already runs {len(running)} sessions (the limit is {limit})",
                    headers=_retry_after(min(s.expires for s in running) - now),
                )
            dropping = done[:need]
        slots = [s for s in self._slots.values() if s not in dropping]
        gone = self._gone
        if len(gone) >= _GONE_PER_SESSION * config.max_sessions:
            # Ended ids are remembered for their retention at least (their
            # readers get 410, and the id is never used again): churn waits.
            oldest = gone[next(iter(gone))]
            if oldest.until > now:
                raise BrokerError(
                    503,
                    "TOO_MANY_SESSIONS",
                    "Too many sessions ended within the retention time",
                    headers=_retry_after(oldest.until - now),
                )
        if len(slots) >= config.max_sessions:
            raise BrokerError(
                503,
                "TOO_MANY_SESSIONS",
                f"The broker holds {len(slots)} sessions (the limit is "
                f"{config.max_sessions}; finished ones are kept {retention:g} s)",
                headers=_retry_after(min(self._dropped_at(s, now) for s in slots) - now),
            )
        held = sum(self._reserved(s) for s in slots)
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
        return dropping

    def _retire(self, slot: _Slot) -> None:
        """Drop a finished session: from now on its routes answer 410 ``SESSION_GONE``."""
        session_id = slot.stream.session_id
        if self._slots.get(session_id) is not slot:
            return
        del self._slots[session_id]
        slot.keeper.cancel()
        # Its responses still being sent would hold its log outside the budget.
        for served in self._responses.get(session_id, ()):
            served.cancel_scope.cancel()
        gone = self._gone
        now = anyio.current_time()
        gone[session_id] = _Gone(slot.grant, now + self._config.retention_seconds)
        while len(gone) > _GONE_PER_SESSION * self._config.max_sessions:
            gone.popitem(last=False)

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
        once. A finished session is left as it is. With a ``backend``, a
        session another replica holds is cancelled by that replica, when it
        reads the request (within a third of its lease).

        Raises:
            BrokerError: the hook's refusal; 404 ``NOT_FOUND``; 410 ``SESSION_GONE``.
        """
        backend = self._shared(session_id)
        if backend is not None:
            # Another replica's session: its owner cancels it when it reads the request.
            shared = await backend.lookup(session_id)
            access = Access(Action.CANCEL, request, session_id, None, shared.grant)
            await decide(self._authorize, access)
            await backend.request_cancel(session_id)
            return
        self._stop(await self._authorized(Action.CANCEL, session_id, request), CANCELLED)

    def _shared(self, session_id: str) -> SessionBackend | None:
        """The shared log, when ``session_id`` is not this replica's to answer for."""
        if self._backend is None or session_id in self._slots or session_id in self._gone:
            return None
        return self._backend

    def _cancel_requested(self, session_id: str) -> None:
        slot = self._slots.get(session_id)
        if slot is not None:
            self._stop(slot, CANCELLED)

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

    @contextmanager
    def serving(self, session_id: str) -> Iterator[ServedResponse]:
        """Where to send one response of ``session_id``: a cancel scope, and its progress.

        The broker cancels the scope when the session is dropped (its log
        must not outlive its place in the memory budget) and when a
        shutdown's time is up for a response that has stopped taking bytes
        (a client that reads nothing must not hold the server; one still
        reading gets to its ``final``). Call :meth:`ServedResponse.sent`
        after each send. :func:`~enclave_stream.starlette.create_broker_app`
        sends every stream response this way. A response served from the
        shared log for a session another replica holds is cut as soon as
        the shutdown's time is up (its client resumes on another replica).
        """
        served = ServedResponse(anyio.CancelScope(), anyio.current_time())
        # A session another replica holds is served from the shared log.
        dropped = session_id not in self._slots and self._backend is None
        if self._responses_cut or dropped:
            served.cancel_scope.cancel()
        group = self._responses.setdefault(session_id, set())
        group.add(served)
        try:
            yield served
        finally:
            group.discard(served)
            if not group:
                self._responses.pop(session_id, None)

    async def _end_after_timeout(self, slots: list[_Slot]) -> None:
        timeout = self._config.shutdown_timeout_seconds
        await anyio.sleep(timeout)
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
        # Readers take their final; one that takes no bytes for a timeout
        # would keep its connection, and the server, open for ever.
        self._responses_cut = True
        # A session another replica holds may run on for long: its readers
        # resume on a replica that stays.
        for session_id, group in list(self._responses.items()):
            if session_id not in self._slots:
                for each in list(group):
                    each.cancel_scope.cancel()
        while True:
            await anyio.sleep(timeout)
            now = anyio.current_time()
            served = [each for group in self._responses.values() for each in group]
            stalled = [each for each in served if now - each.last_sent >= timeout]
            if stalled:
                logger.warning("shutting down: cutting %d stalled response(s)", len(stalled))
            for each in stalled:
                each.cancel_scope.cancel()
            if len(stalled) == len(served):
                return

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
            # The runner and its request (the code, the HTTP request) are not
            # kept through the retention: only the log counts in the budget.
            run = None
            await stream.store.wait_finished()
            slot.dropped_at = anyio.current_time() + self._config.retention_seconds
            await anyio.sleep_until(slot.dropped_at)
        self._retire(slot)

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
        # Everything about the request is checked before the session is
        # registered or its runner started: a refused request leaves nothing.
        decoded = decode_session_request(body, config.max_request_bytes)
        session_request = SessionRequest(
            **{name: getattr(decoded, name) for name in decoded.__struct_fields__}, http=request
        )
        session_id = self._session_id(decoded)
        heartbeat = decoded.heartbeat_interval_ms
        if heartbeat is not None and heartbeat < config.min_heartbeat_interval_ms:
            raise invalid_request(
                f"heartbeatIntervalMs must be at least {config.min_heartbeat_interval_ms:g}, "
                f"got {heartbeat}"
            )
        ttl = config.ttl_ms if decoded.ttl_ms is None else decoded.ttl_ms
        if ttl > config.max_ttl_ms:
            raise invalid_request(
                f"The session lifetime may be at most {config.max_ttl_ms} ms, got {ttl}"
            )
        grant = await decide(
            self._authorize,
            Access(Action.CREATE, request, session_id, body=session_request),
        )
        # A client's own id may be held by a session on another replica.
        async with self._claimed(session_id, chosen=decoded.session_id is not UNSET):
            # No await from here on: what is checked stays true until it is registered.
            self._refuse_if_shutting_down()
            if session_id in self._slots:
                raise BrokerError(409, "SESSION_EXISTS", f"Session {session_id} already exists")
            # Without a hook, the client's address is the identity.
            by_address = self._authorize is None
            owner = _address(request) if by_address else grant.identity
            self._room_for(owner, by_address=by_address)  # refused before the handshake's work
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
                    store_factory=self._store_factory(
                        session_id, encrypted is not None, headers.get(SERVER_HELLO_HEADER), grant
                    ),
                )
            except OverflowError:  # now + ttl is past the year 9999
                raise invalid_request(
                    f"Invalid session lifetime {ttl} ms: its expiry date is out of range"
                ) from None
            # The creator gets every event from seq 1, however many the runner
            # appends before the response's first read (docs/compatibility.md, P1).
            response = stream_response(stream, headers=headers, hold=True)
            self._hold(stream, lambda s: runner(s, session_request), grant, owner, by_address)
            if SERVER_HELLO_HEADER in headers:
                hello = {SERVER_HELLO_HEADER: headers[SERVER_HELLO_HEADER]}
                self._slots[session_id].resume_headers = hello
            return response

    @asynccontextmanager
    async def _claimed(self, session_id: str, *, chosen: bool) -> AsyncIterator[None]:
        """Claim a client's chosen id in the shared log; give it back if the block fails."""
        backend = self._backend
        if backend is None or not chosen or session_id in self._slots:
            yield
            return
        if not await backend.claim(session_id):
            raise BrokerError(409, "SESSION_EXISTS", f"Session {session_id} already exists")
        try:
            yield
        except BaseException:
            await backend.release(session_id)
            raise

    def _session_id(self, body: SessionRequestBody) -> str:
        if body.session_id is UNSET:
            return generate_session_id()
        if not self._config.client_session_ids:
            # A client that picks ids can squat on another's, or guess them.
            raise invalid_request(
                "This broker generates session ids: send no sessionId "
                "(the X-Session-ID response header gives the id)"
            )
        return body.session_id

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
        start = upstream if ours is None else ours
        backend = self._shared(session_id)
        if backend is not None:
            # Another replica's session, served from the shared log.
            shared = await backend.lookup(session_id)
            access = Access(Action.READ, request, session_id, None, shared.grant)
            await decide(self._authorize, access)
            body = await backend.open_replay(session_id, start)
            return shared_stream_response(session_id, body, shared.resume_headers)
        slot = await self._authorized(Action.READ, session_id, request)
        return stream_response(slot.stream, start, slot.resume_headers)

    def _store_factory(
        self, session_id: str, encrypted: bool, hello: str | None, grant: Grant | None
    ) -> Callable[[EventEncodeFunction], EventStore] | None:
        """The shared log's store for a session made here (None: the in-memory default)."""
        if self._backend is None:
            return None
        return self._backend.store_factory(
            session_id,
            encrypted=encrypted,
            hello=hello,
            grant=grant,
            on_cancel=lambda: self._cancel_requested(session_id),
        )

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
        return session_info_json((await self._authorized(Action.INFO, session_id, request)).stream)

    async def list_sessions(self, *, request: HttpRequest | None = None) -> dict[str, Any]:
        """``GET /sessions``: ``{"sessions": [...], "total": n}``, each as :meth:`session_info`.

        Oldest first; finished sessions are listed until they are dropped.
        The hook is asked for the list, then for the info of each session:
        the list holds those the caller may see.

        Raises:
            BrokerError: the hook's refusal of the list.
        """
        await decide(self._authorize, Access(Action.LIST, request))
        sessions = []
        for session_id, slot in list(self._slots.items()):
            # Each is shown only to a caller the hook lets see its info.
            try:
                await decide(
                    self._authorize,
                    Access(Action.INFO, request, session_id, slot.stream, slot.grant),
                )
            except BrokerError:
                continue
            sessions.append(session_info_json(slot.stream))
        return {"sessions": sessions, "total": len(sessions)}


def _address(request: HttpRequest | None) -> str | None:
    """The client's address (Starlette's ``request.client``) as an identity.

    An IPv6 client is its /64: one host commonly holds the whole prefix.
    """
    host = getattr(getattr(request, "client", None), "host", None)
    if not isinstance(host, str):
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"address {host}"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"address {address.ipv4_mapped}"
        return f"address {ipaddress.ip_network(f'{host}/64', strict=False)}"
    return f"address {address}"


def _retry_after(seconds: float) -> dict[str, str]:
    """A ``Retry-After`` header: whole seconds, at least 1."""
    if not math.isfinite(seconds):
        seconds = 60.0
    return {"Retry-After": str(max(1, math.ceil(seconds)))}
