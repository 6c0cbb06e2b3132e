"""The anyio side of reconnection: the resumable event stream and its small helpers."""

from __future__ import annotations

__all__ = [
    "Connector",
    "EncryptingConnector",
    "EnvelopeOpener",
    "HeartbeatMonitor",
    "ResumableEventStream",
    "drive_reconnection",
    "is_retryable",
    "open_event_stream",
]

import inspect
import logging
import math
import operator
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    asynccontextmanager,
    nullcontext,
)
from dataclasses import dataclass
from typing import NoReturn, Protocol, TypeAlias, runtime_checkable

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup, TaskStatus

from .._lifetime import TaskOwner, owned_task_group
from .._options import check_number
from ..crypto.streams import open_off_loop
from ..errors import FatalConnectError, LineError, RetryableConnectError
from ..events import EncryptedEnvelope, ParsedEvent, StreamEvent
from ..ndjson import DEFAULT_MAX_LINE_BYTES, ErrorHandler, NdjsonStreamParser, report_line_error
from ..streams import ByteSource, aclose_source, iter_chunks, settle
from .machine import (
    DEFAULT_RECONNECTION_CONFIG,
    ConnectionState,
    ReconnectionConfig,
    ReconnectionEvent,
    ReconnectionStateMachine,
)
from .resume import (
    DROP,
    FINISHED,
    NEW,
    Finished,
    GiveUp,
    Outcome,
    Reconnect,
    ResumeCore,
    SequenceGap,
)

logger = logging.getLogger("enclave_stream")


# --- what the stream is built on

Connector: TypeAlias = Callable[[int | None], AbstractAsyncContextManager[ByteSource]]
"""Opens one connection: ``connect(from_seq)`` is an async context manager
yielding the response's bytes (an async iterable of bytes, or an anyio byte
stream).

``from_seq`` is None for a fresh start, else the first sequence number
wanted: send the events with ``seq >= from_seq``. To say what a failure
means, raise :class:`~enclave_stream.reconnect.RetryableConnectError` or
:class:`~enclave_stream.reconnect.FatalConnectError`; ``OSError`` and anyio's
stream errors are retried anyway. The stream closes the iterator it is given
and leaves the context manager as soon as it is done with a connection::

    @asynccontextmanager
    async def connect(from_seq: int | None) -> AsyncIterator[ByteReceiveStream]:
        async with await anyio.connect_tcp(host, port) as tcp:
            await tcp.send(stream_request(from_seq))  # your protocol here
            yield tcp
"""


class EnvelopeOpener(Protocol):
    """Decrypts ``enc`` envelopes; an encrypted session (``EncryptedSession``) is one."""

    def open(self, envelope: EncryptedEnvelope) -> StreamEvent:
        """The plaintext event inside ``envelope``; raises if it cannot be decrypted."""
        ...


@runtime_checkable
class EncryptingConnector(EnvelopeOpener, Protocol):
    """A connector that sets up the stream's encryption itself (``broker_connector``).

    When its ``encrypted`` is true, ``open_event_stream`` opens envelopes with
    it and refuses plaintext even if no ``session`` was passed: the stream is
    encrypted once its handshake is.
    """

    @property
    def encrypted(self) -> bool:
        """True when the stream it connects to is encrypted."""
        ...


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


# --- timers


async def drive_reconnection(
    machine: ReconnectionStateMachine,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Fire the machine's pending retries when their delays run out; runs until cancelled.

    A retry cancelled or replaced while it sleeps is not fired (the new one
    is slept for). React to the ``retry_started`` event (or the
    ``connecting`` state) to reconnect.

    Start it in a task group and cancel the group's scope to stop it; with
    ``await tg.start(...)`` it is listening before ``start`` returns::

        async with anyio.create_task_group() as tg:
            await tg.start(drive_reconnection, machine)
            ...
            tg.cancel_scope.cancel()
    """
    changed = anyio.Event()

    def wake() -> None:
        changed.set()

    remove = machine.add_retry_listener(wake)
    try:
        task_status.started()
        while True:
            pending = machine.pending_retry
            if pending is None:
                await changed.wait()
            else:
                with anyio.move_on_after(pending.delay_seconds):
                    await changed.wait()
                # Fire only the retry we slept for: if it was cancelled or
                # replaced meanwhile, the next round sleeps for the new one.
                if machine.pending_retry is pending:
                    machine.fire_retry()
            # Events cannot be reset; the listener sets whichever is current.
            changed = anyio.Event()
    finally:
        remove()


class _Run:
    """One run of the monitor task: a task winding down after ``stop()`` keeps its own."""

    __slots__ = ("scope", "wait_scope")

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()
        self.wait_scope: anyio.CancelScope | None = None


class HeartbeatMonitor(TaskOwner):
    """Calls ``on_timeout`` when ``timeout_ms`` pass without :meth:`on_heartbeat`.

    It fires once per silence and re-arms on the next :meth:`on_heartbeat` or
    :meth:`reset`; :meth:`pause` stops the clock until the next heartbeat
    (docs/compatibility.md, R5). ``on_timeout`` is a plain or a coroutine
    function; it runs in the monitor's task, and what it raises propagates
    through the task group (out of the ``async with``).

    Use it as a context manager that owns its task::

        async with HeartbeatMonitor(30_000, on_timeout=stream_is_dead) as monitor:
            async for event in events:
                monitor.on_heartbeat()

    or in a task group of your own with :meth:`start` and :meth:`stop`.
    Time is ``anyio.current_time()``, so a virtual clock drives it in tests.

    Raises:
        ValueError: ``timeout_ms`` is not a finite number > 0.
    """

    def __init__(self, timeout_ms: float, on_timeout: Callable[[], object]) -> None:
        self._timeout_s = check_number("timeout_ms", timeout_ms, positive=True) / 1000
        self._timeout_ms = timeout_ms
        self._on_timeout = on_timeout
        self._last: float | None = None
        # After a timeout or a pause there is no deadline until the next heartbeat.
        self._idle = False
        self._run: _Run | None = None

    @property
    def timeout_ms(self) -> float:
        """The allowed silence, in milliseconds."""
        return self._timeout_ms

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._run is not None

    @property
    def time_since_last_heartbeat_ms(self) -> float:
        """Milliseconds since the last heartbeat (or since :meth:`start`); 0.0 before either."""
        last = self._last
        return 0.0 if last is None else (anyio.current_time() - last) * 1000

    def on_heartbeat(self) -> None:
        """Record a sign of life: the timeout restarts from now (and re-arms after a timeout)."""
        self._last = anyio.current_time()
        self._idle = False
        run = self._run
        # Usually this only records the time: the task wakes at the old
        # deadline and sleeps on. It needs waking only when the deadline came
        # closer: after a timeout or a pause it waits without one.
        wait_scope = None if run is None else run.wait_scope
        deadline = self._deadline()
        if wait_scope is not None and wait_scope.deadline > deadline:
            wait_scope.deadline = deadline

    def reset(self) -> None:
        """Restart the timeout from now, e.g. after reconnecting (same as :meth:`on_heartbeat`)."""
        self.on_heartbeat()

    def pause(self) -> None:
        """Stop the clock (a wait that is not the peer's silence) until the next heartbeat."""
        self._idle = True

    def start(self, task_group: TaskGroup) -> None:
        """Start the monitor task in ``task_group``; the timeout counts from now.

        A stopped monitor may be started again.

        Raises:
            RuntimeError: if it is already running.
        """
        if self._run is not None:
            raise RuntimeError("HeartbeatMonitor is already running")
        run = self._run = _Run()
        self._last = anyio.current_time()
        self._idle = False
        task_group.start_soon(self._watch, run, name="HeartbeatMonitor")

    def stop(self) -> None:
        """Stop the monitor task (idempotent); ``on_timeout`` will not be called after this."""
        run, self._run = self._run, None
        if run is not None:
            run.scope.cancel()

    def _deadline(self) -> float:
        if self._last is None or self._idle:
            return math.inf
        return self._last + self._timeout_s

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[None]:
        async with owned_task_group() as task_group:
            self.start(task_group)
            try:
                yield
            finally:
                self.stop()

    async def _watch(self, run: _Run) -> None:
        with run.scope:
            while True:
                deadline = self._deadline()
                if anyio.current_time() < deadline:
                    with anyio.CancelScope(deadline=deadline) as wait:
                        run.wait_scope = wait
                        await anyio.sleep_forever()
                    run.wait_scope = None
                    continue
                self._idle = True  # once per silence
                result = self._on_timeout()
                if inspect.isawaitable(result):
                    await result


class _NoMonitor:
    """Stands in for the heartbeat monitor when there is no heartbeat timeout."""

    def on_heartbeat(self) -> None:
        pass

    def pause(self) -> None:
        pass


_NO_MONITOR = _NoMonitor()


# --- the resumable event stream


@dataclass(frozen=True, slots=True)
class _Plaintext:
    """A plaintext event on an encrypted stream, with its line number (for the message)."""

    event: ParsedEvent
    line: int


_Item: TypeAlias = "ParsedEvent | LineError | _Plaintext"


class _Lines:
    """The NDJSON parser of one connection: chunks in, lists of items out.

    The one place that talks to the parser. Lines the fast decoder refuses
    are judged off the event loop; on an encrypted stream a plaintext event
    is wrapped in :class:`_Plaintext` with its line number.
    """

    __slots__ = ("_mark_plaintext", "_parser")

    def __init__(self, max_line_bytes: int, *, mark_plaintext: bool) -> None:
        self._mark_plaintext = mark_plaintext
        self._parser = NdjsonStreamParser(max_line_bytes=max_line_bytes, defer_slow_lines=True)

    async def feed(self, chunk: bytes | bytearray | None) -> list[_Item]:
        """The items completed by ``chunk``; None: the end of the bytes (flush)."""
        found = await settle(self._parser.flush() if chunk is None else self._parser.feed(chunk))
        if not self._mark_plaintext:
            return found  # type: ignore[return-value]  # events and LineErrors
        # On an encrypted stream a plaintext event is refused, by its line.
        return [
            item if isinstance(item, LineError | EncryptedEnvelope) else _Plaintext(item, number)
            for item, number in zip(found, found.line_numbers(), strict=True)
        ]


# How many batches (one per chunk received) may wait for a consumer busy
# elsewhere: enough to overlap parsing with consuming, small enough that a
# slow consumer stops the reader, and with it the socket reads, soon.
_BUFFERED_BATCHES = 1


class ResumableEventStream(TaskOwner, once=True):
    """The events of one session, each exactly once and in order, across reconnects.

    :func:`open_event_stream` is another name for this class. Use it as an
    async context manager, and iterate::

        async with httpx.AsyncClient() as client:
            connect = httpx_connector(client, f"{broker}/sessions/{sid}/stream")
            async with open_event_stream(connect, session=encrypted_session) as events:
                async for event in events:
                    ...

    Each connection is ``connect(from_seq)``, resuming after the last event
    delivered; the stream ends after the ``final`` event, which is delivered.
    What happens to each event (drop a repeat, reconnect for a hole, pin the
    session, refuse plaintext on an encrypted stream) is
    :class:`~enclave_stream.reconnect.ResumeCore`'s rule set; how it differs
    from the reference is docs/compatibility.md, R5-R11.

    A connection is retried, after the backoff of ``config``, when it fails
    with an error :func:`is_retryable` accepts, when it ends before ``final``,
    and when no new event of the session arrives for ``heartbeat_timeout_ms``
    (connecting included; time spent waiting for a slow consumer does not
    count). The retry count resets once a connection delivers a new event.

    Args:
        connect: opens one connection; see :data:`Connector`.
        config: retries and backoff.
        heartbeat_timeout_ms: the longest silence allowed on a connection;
            None waits forever.
        session: opens ``enc`` envelopes (an ``EncryptedSession``); a
            connector whose own handshake encrypts (an encrypting
            ``broker_connector``) is used when none is given.
        require_encryption: with ``session``, refuse plaintext events (the
            default). ``False`` is for debugging a mixed stream only: anyone
            on the path could then inject events.
        deadline_ms: the longest the whole stream may take, reconnects
            included; None (the default) has no limit.
        on_state: called with each new :class:`ConnectionState`, from the
            reader task: ``connecting``, ``connected`` (first new event),
            ``reconnecting``, ``failed``, ``closed``.
        on_event: called with each event of the reconnection state machine,
            before ``on_state``: ``DisconnectedEvent`` (with the reason),
            ``RetryScheduledEvent`` (attempt, delay), ``FailedEvent`` (reason)
            ... The same decisions are logged at INFO on the
            ``enclave_stream`` logger ("retrying in 0.4 s (attempt 2/5):
            reason", "resumed at seq 12", "gave up: reason").
        retry_if: classifies errors that are neither transport nor connector errors.
        allow_gaps: go on past events that even a replay does not have.
        on_error: gets each bad line as a :class:`~enclave_stream.LineError`;
            without it they are logged on the ``enclave_stream`` logger.
        max_line_bytes: longest line accepted; longer ones are reported and
            skipped without being buffered.
        from_seq: start from a saved position: the first connection asks
            for ``from_seq`` (a process that restarts passes the
            ``last_seq + 1`` it saved); None: from the start.
        on_retry: called as ``on_retry(attempt, delay_seconds, error)``
            each time a retry is scheduled, with the error that ended the
            connection (a ``RetryableConnectError`` saying why when nothing
            was raised: the stream ended before ``final``, a heartbeat
            timeout).

    Raises (from the loop, after the events received before):
        StreamFailedError: the stream gave up (retries exhausted, a fatal
            error, an envelope that cannot be opened or comes without a
            ``session``, a plaintext event on an encrypted stream, the
            deadline); it says why and how many events were delivered. Its
            subclasses say more: :class:`SequenceGapError`,
            :class:`SessionMismatchError`, :class:`LineTooLongError`.
        Exception: whatever ``on_state``, ``on_error`` or ``retry_if`` raised.

    The ``async with`` block owns the task that reads the connections;
    leaving it (also by ``break``, an exception or cancellation) closes the
    connection, and no task outlives it. The stream reads ahead by a few
    received chunks at most: a slow consumer slows the reads down.
    """

    def __init__(
        self,
        connect: Connector,
        *,
        config: ReconnectionConfig = DEFAULT_RECONNECTION_CONFIG,
        heartbeat_timeout_ms: float | None = 30_000,
        session: EnvelopeOpener | None = None,
        require_encryption: bool = True,
        deadline_ms: float | None = None,
        on_state: Callable[[ConnectionState], object] | None = None,
        on_event: Callable[[ReconnectionEvent], object] | None = None,
        retry_if: Callable[[Exception], bool] | None = None,
        allow_gaps: bool = False,
        on_error: ErrorHandler | None = None,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        from_seq: int | None = None,
        on_retry: Callable[[int, float, Exception], object] | None = None,
    ) -> None:
        # None means no limit.
        if heartbeat_timeout_ms is not None:
            check_number("heartbeat_timeout_ms", heartbeat_timeout_ms, positive=True)
        self._deadline_s = (
            math.inf
            if deadline_ms is None
            else check_number("deadline_ms", deadline_ms, positive=True) / 1000
        )
        check_number("max_line_bytes", max_line_bytes, integer=True, minimum=1)
        if session is None and isinstance(connect, EncryptingConnector) and connect.encrypted:
            session = connect  # its handshake makes the stream encrypted
        self._connect = connect
        self._heartbeat_timeout_ms = heartbeat_timeout_ms
        self._session = session
        self._retry_if = retry_if
        self._on_error = on_error
        # An encrypted stream carries envelopes only: a plaintext event is an
        # injection (a relayed genuine hello does not make the body genuine).
        self._core = ResumeCore(
            config,
            allow_gaps=allow_gaps,
            refuse_plaintext=session is not None and require_encryption,
            max_line_bytes=max_line_bytes,
            on_state=on_state,
            on_event=on_event,
            from_seq=from_seq,
            on_retry=on_retry,
        )
        self._send, self._receive = anyio.create_memory_object_stream[list[StreamEvent]](
            _BUFFERED_BATCHES
        )
        self._entered = False
        self._reader_scope = anyio.CancelScope()
        self._failure: Exception | None = None
        self._batch: list[StreamEvent] = []
        # Where the loop is in the batch: a list iterator, cheaper per event
        # than an index, and its length hint is exactly how many are left.
        self._cursor: Iterator[StreamEvent] = iter(self._batch)
        self._taken = 0  # events in the batches before the current one

    @property
    def state(self) -> ConnectionState:
        """The connection state (``connected`` once a connection delivers a new event)."""
        return self._core.machine.state

    @property
    def last_seq(self) -> int | None:
        """The seq of the last event read and passed on (it may still wait in the buffer)."""
        return self._core.last_seq

    @property
    def events_delivered(self) -> int:
        """How many events the ``async for`` loop has received so far."""
        return self._taken + len(self._batch) - operator.length_hint(self._cursor)

    @property
    def gaps(self) -> list[SequenceGap]:
        """The gaps accepted with ``allow_gaps=True`` (the first 100), oldest first."""
        return self._core.gaps

    def __repr__(self) -> str:
        return (
            f"<ResumableEventStream state={self.state.value} "
            f"delivered={self.events_delivered} last_seq={self.last_seq}>"
        )

    def __aiter__(self) -> ResumableEventStream:
        return self

    async def __anext__(self) -> StreamEvent:
        # No checkpoint per event: the consumer yields to the event loop
        # whenever it waits for the reader.
        for event in self._cursor:
            return event
        if not self._entered:
            raise RuntimeError("use the event stream inside its `async with` block")
        try:
            batch = await self._receive.receive()
        except anyio.EndOfStream:
            batch = None  # the reader is done
        except anyio.ClosedResourceError:  # aclose(), or the block has ended
            raise StopAsyncIteration from None
        if batch is None:
            if self._failure is not None:
                raise self._failure
            raise StopAsyncIteration
        self._taken += len(self._batch)
        self._batch = batch
        self._cursor = cursor = iter(batch)
        return next(cursor)  # batches are never empty

    async def aclose(self) -> None:
        """Stop reading and close the connection now; iteration then ends (state ``closed``)."""
        self._reader_scope.cancel()
        # The reader is suspended at an await, where the cancellation lands:
        # it changes no state after this, so the stream is closed from here on.
        self._core.finish(FINISHED)
        self._taken = self.events_delivered
        self._batch = []
        self._cursor = iter(self._batch)
        self._receive.close()
        await anyio.lowlevel.checkpoint()

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[None]:
        """Owns the reader task while the consumer's block runs."""
        self._entered = True
        try:
            async with owned_task_group() as task_group:
                task_group.start_soon(self._read, name="ResumableEventStream reader")
                try:
                    yield
                finally:
                    self._reader_scope.cancel()
                    self._receive.close()
        finally:
            self._core.finish(FINISHED)  # closed, unless it failed

    async def _read(self) -> None:
        core = self._core
        outcome: Finished | GiveUp | None = None
        try:
            with self._reader_scope, anyio.move_on_after(self._deadline_s) as overall:
                outcome = await self._follow()
            if overall.cancelled_caught:
                outcome = core.give_up(f"the deadline of {self._deadline_s * 1000:g} ms passed")
            if outcome is not None:
                core.finish(outcome)
        except Exception as exc:  # a callback (on_state) failed
            self._failure = exc
        finally:
            if isinstance(outcome, GiveUp) and self._failure is None:
                self._failure = outcome.error
            self._send.close()

    async def _follow(self) -> Finished | GiveUp:
        core = self._core
        core.connect()
        while True:
            outcome = await self._connection()
            if not isinstance(outcome, Reconnect):
                return outcome
            delay = core.disconnected(outcome)
            if isinstance(delay, GiveUp):
                return delay
            await anyio.sleep(delay)
            core.retry()

    async def _connection(self) -> Outcome:
        """Read one connection to its end; say what should happen next."""
        self._core.connection_opened()
        ended: list[Outcome] = []  # kept even if the heartbeat cancels the closing
        timeout_ms = self._heartbeat_timeout_ms
        with anyio.CancelScope() as scope:
            # Only new events of the session push the heartbeat deadline back:
            # bytes, bad lines or old events resent would keep a dead stream
            # open for ever. Its clock runs from before connecting.
            monitor = (
                nullcontext(_NO_MONITOR)
                if timeout_ms is None
                else HeartbeatMonitor(timeout_ms, on_timeout=scope.cancel)
            )
            async with monitor as heartbeat:
                await self._read_connection(heartbeat, ended)
        if ended:
            return ended[0]
        return Reconnect(f"no new event for {timeout_ms:g} ms (heartbeat timeout)")

    async def _read_connection(
        self, heartbeat: HeartbeatMonitor | _NoMonitor, ended: list[Outcome]
    ) -> None:
        core = self._core
        lines = _Lines(core.max_line_bytes, mark_plaintext=core.refuse_plaintext)
        try:
            async with self._connect(core.next_seq) as source:
                chunks = iter_chunks(source)
                try:
                    async for chunk in chunks:
                        items = await lines.feed(chunk)
                        if items and await self._pass_on(items, heartbeat, ended):
                            return
                    items = await lines.feed(None)
                    # Text after the last newline is a last line sent without
                    # its newline, or what a cut connection left of a line:
                    # take a whole event, but do not report a fragment.
                    cut = any(type(item) is LineError for item in items)
                    if not (items and not cut and await self._pass_on(items, heartbeat, ended)):
                        ended.append(core.connection_ended(cut))
                finally:
                    await chunks.aclose()
                    await aclose_source(source, forcefully=True)
        except Exception as exc:
            # An error while closing after a decision changes nothing.
            if not ended:
                ended.append(self._classify(exc))

    def _classify(self, error: Exception) -> Outcome:
        described = f"{type(error).__name__}: {error}"
        if is_retryable(error, self._retry_if):
            return Reconnect(described, error)
        return self._core.give_up(f"fatal error: {described}", error)

    async def _pass_on(
        self, items: list[_Item], heartbeat: HeartbeatMonitor | _NoMonitor, ended: list[Outcome]
    ) -> bool:
        """Send the new events of ``items`` to the consumer; True: an outcome in ``ended``."""
        core = self._core
        outcome: Outcome | None = None
        before = core.delivered
        try:
            try:
                core.accept_in_order(items)
            finally:  # even if on_state failed: the run counts as delivered
                run = core.delivered - before
                # The usual chunk is one such run: then it is the batch.
                batch: list[StreamEvent] = items if run == len(items) else items[:run]  # type: ignore[assignment]
            for item in items[run:]:
                kind = type(item)
                if kind is LineError:
                    core.line_error(item)  # type: ignore[arg-type]
                    report_line_error(item, self._on_error, False)  # type: ignore[arg-type]
                    continue
                if kind is _Plaintext:
                    verdict = core.check(item.event, item.line)  # type: ignore[union-attr]
                else:
                    verdict = core.check(item)  # type: ignore[arg-type]
                if verdict is DROP:
                    continue
                if verdict is not NEW:
                    outcome = verdict
                    break
                event: StreamEvent = item  # type: ignore[assignment]
                if kind is EncryptedEnvelope:
                    opened = await self._open(item)  # type: ignore[arg-type]
                    if isinstance(opened, GiveUp):
                        outcome = opened
                        break
                    event = opened
                batch.append(event)
                if core.accept(item, event):  # type: ignore[arg-type]
                    outcome = FINISHED
                    break
        except Exception as exc:
            # A callback (on_error, on_state) failed: not the transport's doing.
            outcome = GiveUp(f"{type(exc).__name__}: {exc}", exc)
        if batch:
            heartbeat.on_heartbeat()
            try:
                self._send.send_nowait(batch)
            except anyio.WouldBlock:
                # Waiting for a slow consumer is not silence from the server.
                heartbeat.pause()
                try:
                    await self._send.send(batch)
                except anyio.BrokenResourceError:
                    outcome = Finished.CONSUMER_GONE
                heartbeat.on_heartbeat()
            except anyio.BrokenResourceError:
                outcome = Finished.CONSUMER_GONE
        if outcome is not None:
            ended.append(outcome)
        return outcome is not None

    async def _open(self, envelope: EncryptedEnvelope) -> StreamEvent | GiveUp:
        session = self._session
        if session is None:
            return self._core.give_up(
                f"received an encrypted event (seq {envelope.seq}) but no session"
            )
        try:
            return await open_off_loop(session.open, envelope)
        except Exception as exc:
            return self._core.give_up(
                f"could not open the encrypted event with seq {envelope.seq}", exc
            )


open_event_stream = ResumableEventStream
"""``open_event_stream(connect, **options)`` is ``ResumableEventStream(connect, **options)``."""
