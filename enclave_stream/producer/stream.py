"""The server side of one session: build events, number them, keep them, serve them."""

from __future__ import annotations

__all__ = [
    "CANCELLED",
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_MAX_LAG",
    "SHUTDOWN",
    "EventStream",
    "Now",
    "iso_timestamp",
]

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, Final, TypeVar, cast

import anyio
from msgspec import UNSET

from .._lifetime import TaskOwner, owned_task_group
from .._options import check_number
from ..codec import encode_event
from ..crypto.session import EncryptedSession, SessionRole
from ..errors import LogFullError
from ..events import (
    DEFAULT_SESSION_LIMITS,
    CatalogChangedEvent,
    CatalogChangedPayload,
    DeadlineExceededEvent,
    DeadlineExceededPayload,
    EncryptionConfig,
    ErrorEvent,
    ErrorEventPayload,
    ErrorInfo,
    ErrorPayload,
    FinalEvent,
    FinalPayload,
    HeartbeatEvent,
    HeartbeatPayload,
    LogEvent,
    LogPayload,
    PartialResultEvent,
    PartialResultPayload,
    SessionInitEvent,
    SessionInitPayload,
    SessionStats,
    StdoutEvent,
    StdoutPayload,
    StreamEvent,
    ToolCallEvent,
    ToolCallPayload,
    ToolProgressEvent,
    ToolProgressPayload,
    ToolResultAppliedEvent,
    ToolResultAppliedPayload,
)
from ..protocol import (
    DEFAULT_HEARTBEAT_INTERVAL_MS,
    LogLevel,
    SessionState,
    ToolProgressPhase,
    generate_call_id,
    generate_session_id,
    is_session_id,
)
from .log import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_EVENTS,
    EventEncodeFunction,
    EventLog,
    EventStore,
    NdjsonBody,
)

E = TypeVar("E", bound=StreamEvent)

Now = Callable[[], datetime]
"""A wall clock: returns the current time (timezone-aware; naive means UTC)."""


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso_timestamp(moment: datetime) -> str:
    """``moment`` in UTC as JavaScript's ``Date.toISOString`` writes it (milliseconds, truncated).

    >>> iso_timestamp(datetime(2024, 5, 1, 12, 30, 5, 123999, tzinfo=timezone.utc))
    '2024-05-01T12:30:05.123Z'
    """
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}."
        f"{moment.microsecond // 1000:03d}Z"
    )


_DEFAULT_TTL_MS: Final = cast(int, DEFAULT_SESSION_LIMITS.session_ttl_ms)

CANCELLED: Final = ErrorInfo(message="The session was cancelled", code="SESSION_CANCELLED")
"""The ``final`` error of a cancelled session."""

SHUTDOWN: Final = ErrorInfo(message="The server is shutting down", code="SERVER_SHUTDOWN")
"""The ``final`` error of a session ended by the server's shutdown."""

_CANCELLED_CODES: Final = frozenset({CANCELLED.code, SHUTDOWN.code})

DEFAULT_MAX_LAG: Final = 1000
"""How many events :meth:`EventStream.drain` lets the slowest reader be behind by default."""

# Longer than a response's default send timeout (30 s): a frozen reader is
# dropped, and stops counting, before a producer waiting on it gives up.
DEFAULT_DRAIN_TIMEOUT: Final = 60.0


class EventStream(TaskOwner, once=True):
    """One session's events, as the server produces them.

    An :class:`EventStream` wraps a replay log (:class:`~.log.EventLog` by
    default); any number of clients read it through :meth:`ndjson_body`, each
    from its own ``seq``. Used as ``async with``, it also appends a
    ``heartbeat`` every ``heartbeat_interval_ms``, from a task it owns,
    however busy the stream is: some clients count only heartbeats as signs
    of life (docs/compatibility.md, P3).

    Each builder appends one event with the next ``seq`` and returns it
    (:meth:`tool_call` returns the new call id). Events are validated when
    appended: an invalid one raises
    :class:`~enclave_stream.EventValidationError` and uses up no ``seq``.
    An append that would drop an event the creator's response (a body
    made with ``hold=True``) has not sent raises
    :class:`~enclave_stream.errors.LogFullError` instead, past ``max_bytes``;
    a producer that appends fast awaits :meth:`drain` now and then.
    After :meth:`final` nothing more can be appended
    (:class:`~enclave_stream.producer.StreamFinishedError`).

    >>> stream = EventStream("s_demo", heartbeat_interval_ms=None)
    >>> stream.stdout("hello\\n").seq  # seq 1 is the session_init event
    2
    >>> call_id = stream.tool_call("search", {"q": "enclave"})
    >>> stream.final(True, {"answer": 42}).payload.stats.tool_call_count
    1
    >>> [entry.event.type.value for entry in stream.store.read(0)]
    ['session_init', 'stdout', 'tool_call', 'final']

    In a service::

        async with EventStream(session=encrypted_session) as stream:
            stream.log("info", "starting")
            ...
            stream.final(True, result)

    A stream belongs to one event loop: append from that loop's thread (from
    a worker thread, through ``anyio.from_thread.run_sync``). Leaving the
    ``async with`` block stops the heartbeats, and appends a failed ``final``
    if none was appended (docs/compatibility.md, P6).

    Args:
        session_id: the session's id (``s_...``); generated if None, or
            taken from ``session``.
        session: encrypts the stream: every event is sealed once, when
            appended, and every client gets the same envelope bytes. Must be
            the server's side of the handshake.
        heartbeat_interval_ms: the time between two ``heartbeat`` events,
            the first one interval after the block is entered (only inside
            ``async with``); None or 0: never.
        max_events: the most events the default log holds.
        max_bytes: the most bytes of lines the default log holds.
        store_factory: makes the log instead of the default :class:`EventLog`;
            it is given the function that encodes (and seals) each event.
        cancel_url: ``session_init.cancelUrl``; by default
            ``/sessions/{id}/cancel``.
        expires_at: ``session_init.expiresAt``; by default now plus ``ttl_ms``.
        ttl_ms: the session's lifetime for the default ``expires_at`` (60 s).
        replay_url: ``session_init.replayUrl``, if any.
        now: the wall clock for timestamps and ``durationMs`` (UTC ``datetime``).
    """

    def __init__(
        self,
        session_id: str | None = None,
        *,
        session: EncryptedSession | None = None,
        heartbeat_interval_ms: float | None = DEFAULT_HEARTBEAT_INTERVAL_MS,
        max_events: int = DEFAULT_MAX_EVENTS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        store_factory: Callable[[EventEncodeFunction], EventStore] | None = None,
        cancel_url: str | None = None,
        expires_at: datetime | str | None = None,
        ttl_ms: int = _DEFAULT_TTL_MS,
        replay_url: str | None = None,
        now: Now | None = None,
    ) -> None:
        if session is not None:
            if session.role is not SessionRole.SERVER:
                raise ValueError("an EventStream seals with the server's session, not the client's")
            if session_id is None:
                session_id = session.session_id
            elif session_id != session.session_id:
                raise ValueError(
                    f"session id {session_id!r} differs from the encrypted session's "
                    f"{session.session_id!r}"
                )
        if session_id is None:
            session_id = generate_session_id()
        elif not is_session_id(session_id):
            raise ValueError(f"expected a session id ('s_' and more), got {session_id!r}")
        self._session_id = session_id
        self._session = session
        interval = 0 if heartbeat_interval_ms is None else heartbeat_interval_ms
        check_number("heartbeat_interval_ms", interval)
        self._interval_ms = interval or None  # 0 or None: no heartbeats
        self._now: Now = _utc_now if now is None else now
        self._started_at = self._now()
        encode: EventEncodeFunction | None = None if session is None else session.seal_line
        if store_factory is not None:
            self._log: EventStore = store_factory(encode_event if encode is None else encode)
        else:
            self._log = EventLog(max_events=max_events, max_bytes=max_bytes, encode=encode)
        self._tool_calls = 0
        self._stdout_bytes = 0
        self._final: FinalEvent | None = None
        # Monotonic time of the last append: cheaper per event than the wall
        # clock, which `updated_at` derives from it when asked.
        self._touched = time.monotonic()
        if expires_at is None:
            expires_at = self._started_at + timedelta(milliseconds=ttl_ms)
        self._expires_at = (
            expires_at if isinstance(expires_at, datetime) else _parse_iso(expires_at)
        )
        init = SessionInitPayload(
            cancel_url=f"/sessions/{session_id}/cancel" if cancel_url is None else cancel_url,
            expires_at=expires_at if isinstance(expires_at, str) else iso_timestamp(expires_at),
            encryption=EncryptionConfig(
                enabled=session is not None, key_id=UNSET if session is None else session.key_id
            ),
            replay_url=_unset(replay_url),
        )
        self._emit(SessionInitEvent, init)

    # --- properties -----------------------------------------------------------

    @property
    def session_id(self) -> str:
        """The session id every event carries."""
        return self._session_id

    @property
    def encrypted(self) -> bool:
        """True when every event is sent sealed in an ``enc`` envelope."""
        return self._session is not None

    @property
    def store(self) -> EventStore:
        """The replay log (an :class:`EventLog` unless ``store_factory`` made another)."""
        return self._log

    @property
    def heartbeat_interval_ms(self) -> float | None:
        """The time between two ``heartbeat`` events (None: it sends none)."""
        return self._interval_ms

    @property
    def finished(self) -> bool:
        """True once ``final`` was appended."""
        return self._log.finished

    @property
    def next_seq(self) -> int:
        """The ``seq`` the next event gets."""
        return self._log.next_seq

    @property
    def created_at(self) -> datetime:
        """When the stream was made (its ``now`` clock)."""
        return self._started_at

    @property
    def updated_at(self) -> datetime:
        """When the last event was appended (its ``now`` clock, to the millisecond or so)."""
        return self._now() - timedelta(seconds=time.monotonic() - self._touched)

    @property
    def expires_at(self) -> datetime | None:
        """``session_init.expiresAt`` as a datetime (None for a date Python cannot hold: year 0)."""
        return self._expires_at

    @property
    def state(self) -> SessionState:
        """``running`` until ``final``; then ``completed`` (ok), ``cancelled`` or ``failed``.

        A ``final`` whose error code is ``SESSION_CANCELLED`` or
        ``SERVER_SHUTDOWN`` counts as cancelled; a store closed without a
        ``final`` too.
        """
        final = self._final
        if final is None:
            return SessionState.CANCELLED if self._log.finished else SessionState.RUNNING
        if final.payload.ok:
            return SessionState.COMPLETED
        error = final.payload.error
        code = None if error is UNSET else error.code
        return SessionState.CANCELLED if code in _CANCELLED_CODES else SessionState.FAILED

    # --- appending ------------------------------------------------------------

    def append(self, event: E) -> E:
        """Append a ready-made event of this session; its ``seq`` is replaced with the next one.

        Returns the event as stored (with its ``seq``).

        Raises:
            ValueError: the event belongs to another session.
            StreamFinishedError: ``final`` was appended already.
            EventValidationError: the event breaks the schema.
        """
        if event.session_id != self._session_id:
            raise ValueError(
                f"the event belongs to session {event.session_id!r}, not {self._session_id!r}"
            )
        return self._append(event)

    def _emit(self, event: Callable[[str, int, Any], E], payload: Any) -> E:
        # Every builder's one path: this session, the next seq.
        return self._append(event(self._session_id, self.next_seq, payload))

    def _append(self, event: E) -> E:
        entry = self._log.append(event)
        self._touched = time.monotonic()
        # Counted here, where every event passes, so that append() counts too.
        if isinstance(event, StdoutEvent):
            self._stdout_bytes += len(event.payload.chunk.encode("utf-8", "surrogatepass"))
        elif isinstance(event, ToolCallEvent):
            self._tool_calls += 1
        elif isinstance(event, FinalEvent):
            self._final = cast(FinalEvent, entry.event)
        return cast(E, entry.event)

    def stdout(self, chunk: str) -> StdoutEvent:
        """Append program output."""
        return self._emit(StdoutEvent, StdoutPayload(chunk))

    def log(
        self,
        level: LogLevel | str,
        message: str,
        data: dict[str, Any] | None = None,
    ) -> LogEvent:
        """Append a log record (``level``: ``debug``, ``info``, ``warn`` or ``error``)."""
        payload = LogPayload(level=cast(LogLevel, level), message=message, data=_unset(data))
        return self._emit(LogEvent, payload)

    def tool_call(self, tool_name: str, args: Any = UNSET, *, call_id: str | None = None) -> str:
        """Append a ``tool_call``; returns its call id (generated unless given)."""
        call_id = generate_call_id() if call_id is None else call_id
        payload = ToolCallPayload(call_id=call_id, tool_name=tool_name, args=args)
        self._emit(ToolCallEvent, payload)
        return call_id

    def tool_result_applied(self, call_id: str) -> ToolResultAppliedEvent:
        """Append ``tool_result_applied``: the result of ``call_id`` reached the program."""
        return self._emit(ToolResultAppliedEvent, ToolResultAppliedPayload(call_id))

    def tool_progress(
        self,
        call_id: str,
        phase: ToolProgressPhase | str,
        *,
        elapsed_ms: float,
        bytes_received: int | None = None,
        total_bytes: int | None = None,
    ) -> ToolProgressEvent:
        """Append the progress of a running tool call."""
        payload = ToolProgressPayload(
            call_id=call_id,
            phase=cast(ToolProgressPhase, phase),
            elapsed_ms=elapsed_ms,
            bytes_received=_unset(bytes_received),
            total_bytes=_unset(total_bytes),
        )
        return self._emit(ToolProgressEvent, payload)

    def partial_result(
        self,
        path: Sequence[str],
        data: Any = UNSET,
        *,
        has_next: bool,
        error: ErrorPayload | None = None,
    ) -> PartialResultEvent:
        """Append a piece of the result at ``path`` (``has_next``: more pieces follow)."""
        payload = PartialResultPayload(
            path=list(path),
            data=data,
            error=_unset(error),
            has_next=has_next,
        )
        return self._emit(PartialResultEvent, payload)

    def error(
        self, message: str, *, code: str | None = None, recoverable: bool | None = None
    ) -> ErrorEvent:
        """Append an ``error`` event (the session goes on; ``final`` ends it)."""
        payload = ErrorEventPayload(
            message=message,
            code=_unset(code),
            recoverable=_unset(recoverable),
        )
        return self._emit(ErrorEvent, payload)

    def deadline_exceeded(self, elapsed_ms: float, budget_ms: float) -> DeadlineExceededEvent:
        """Append ``deadline_exceeded``: the session ran out of its time budget."""
        payload = DeadlineExceededPayload(elapsed_ms=elapsed_ms, budget_ms=budget_ms)
        return self._emit(DeadlineExceededEvent, payload)

    def catalog_changed(
        self, version: str, added_actions: Sequence[str] = (), removed_actions: Sequence[str] = ()
    ) -> CatalogChangedEvent:
        """Append ``catalog_changed``: the set of available actions changed."""
        payload = CatalogChangedPayload(
            version=version,
            added_actions=list(added_actions),
            removed_actions=list(removed_actions),
        )
        return self._emit(CatalogChangedEvent, payload)

    def heartbeat(self) -> HeartbeatEvent:
        """Append a ``heartbeat`` stamped with the wall clock (on a schedule in ``async with``)."""
        return self._emit(HeartbeatEvent, HeartbeatPayload(ts=iso_timestamp(self._now())))

    def final(
        self,
        ok: bool,
        result: Any = UNSET,
        *,
        error: ErrorInfo | str | None = None,
        errors: Sequence[ErrorPayload] | None = None,
        stats: SessionStats | None = None,
        include_stats: bool = True,
    ) -> FinalEvent:
        """Append ``final``, the last event: ``ok``, and the ``result`` or the ``error``.

        ``result`` is any JSON value (absent unless given; None sends
        ``null``). ``error`` may be a plain message. ``stats`` are counted by
        the stream unless given (``durationMs`` since the stream was made,
        the ``tool_call`` count, the UTF-8 bytes of ``stdout``);
        ``include_stats=False`` leaves them out.
        """
        if stats is None and include_stats:
            stats = self.stats()
        payload = FinalPayload(
            ok=ok,
            result=result,
            error=ErrorInfo(message=error) if isinstance(error, str) else _unset(error),
            errors=UNSET if errors is None else list(errors),
            stats=_unset(stats),
        )
        return self._emit(FinalEvent, payload)

    def stats(self) -> SessionStats:
        """The session's statistics so far, as :meth:`final` sends them (after it: what it sent)."""
        final = self._final
        if final is not None and final.payload.stats is not UNSET:
            return final.payload.stats
        elapsed = self._now() - self._started_at
        duration_ms = max(0, round(elapsed.total_seconds() * 1000))
        return SessionStats(
            duration_ms=duration_ms,
            tool_call_count=self._tool_calls,
            stdout_bytes=self._stdout_bytes,
        )

    # --- reading --------------------------------------------------------------

    def ndjson_body(
        self,
        from_seq: int | None = None,
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        hold: bool = False,
    ) -> NdjsonBody:
        """The session as NDJSON bytes from ``from_seq`` (None: from the start), up to ``final``.

        Encrypted streams send the envelopes sealed at append time. Give it
        to any streaming response (:func:`enclave_stream.starlette.ndjson_response`
        does, for Starlette). ``hold=True`` keeps every event it has not
        sent in the log (the creator's response): appends past ``max_bytes``
        raise :class:`~enclave_stream.errors.LogFullError` until it reads.

        Raises:
            ReplayUnavailableError: events from ``from_seq`` were dropped.
            ValueError: ``from_seq`` is not an integer >= 0.
        """
        return NdjsonBody(self._log, from_seq, chunk_bytes=chunk_bytes, hold=hold)

    async def drain(
        self,
        max_lag: int = DEFAULT_MAX_LAG,
        *,
        # A default timeout: a frozen reader must not stall a producer for ever.
        timeout: float | None = DEFAULT_DRAIN_TIMEOUT,  # noqa: ASYNC109
    ) -> None:
        """Wait while the slowest attached reader is more than ``max_lag`` events behind.

        Returns at once without readers. Readers are the response bodies
        being sent (:meth:`ndjson_body`); one that ends or whose client goes
        away stops counting.

        Raises:
            TimeoutError: still too far behind after ``timeout`` seconds
                (None: wait as long as it takes).
            ValueError: ``max_lag`` is not an integer >= 0.
        """
        check_number("max_lag", max_lag, integer=True)
        with anyio.fail_after(timeout):
            await self._log.wait_lag(max_lag)

    # --- the heartbeat task -----------------------------------------------------

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[None]:
        async with owned_task_group() as task_group:
            if self._interval_ms is not None:
                task_group.start_soon(self._heartbeats, self._interval_ms / 1000)
            try:
                yield
            except BaseException as exc:
                self._end_unfinished(exc)
                raise
            else:
                self._end_unfinished(None)

    def _end_unfinished(self, exc: BaseException | None) -> None:
        """Append a failed ``final`` saying why the block ended, unless ``final`` was appended."""
        if self._log.finished:
            return
        if exc is None:
            info = ErrorInfo(
                message="The session closed without a final event", code="SESSION_CLOSED"
            )
        elif isinstance(exc, anyio.get_cancelled_exc_class()):
            info = CANCELLED
        else:
            # Only the type: an exception's text may hold what clients must not see.
            info = ErrorInfo(
                message=f"The session failed: {type(exc).__name__}", code="EXECUTION_ERROR"
            )
        self.final(False, error=info)

    async def _heartbeats(self, interval_s: float) -> None:
        # On a fixed schedule, not after idle time: other events do not count
        # as liveness for every client. A late wake-up (a blocked loop) sends
        # one heartbeat and starts the schedule again from now, not a burst.
        log = self._log
        due = anyio.current_time() + interval_s
        while True:
            await anyio.sleep_until(due)
            if log.finished:
                return
            # A log full of what the creator has not read yet refuses it;
            # the events the producer appends matter more than this one.
            with contextlib.suppress(LogFullError):
                self.heartbeat()
            now = anyio.current_time()
            due = due + interval_s if due + interval_s > now else now + interval_s

    def __repr__(self) -> str:
        return (
            f"<EventStream {self._session_id} next_seq={self.next_seq} "
            f"encrypted={self.encrypted} finished={self.finished}>"
        )


def _unset(value: Any) -> Any:
    return UNSET if value is None else value


def _parse_iso(text: str) -> datetime | None:
    try:
        # Python before 3.11 does not read the "Z" that toISOString writes.
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)
