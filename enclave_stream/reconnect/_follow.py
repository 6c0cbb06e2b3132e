"""The reader side of the resumable event stream: connections in, batches of new events out.

A :class:`Follower` runs as the one task of a
:class:`~enclave_stream.reconnect.ResumableEventStream`. It opens connections
through the connector, parses them, keeps only events it has not passed on
yet, and puts them, one batch per chunk received, into a :class:`BatchQueue`
that the consumer reads. What ends a connection is an *outcome*: retry,
finish, or give up.
"""

from __future__ import annotations

__all__ = ["BatchQueue", "Follower"]

import enum
import functools
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias, cast

import anyio

from ..crypto.streams import open_off_loop
from ..errors import (
    EnvelopeError,
    EnvelopeErrorReason,
    FailureKind,
    LineError,
    LineTooLongError,
    SequenceGapError,
    SessionMismatchError,
    StreamFailedError,
)
from ..events import EncryptedEnvelope, FinalEvent, ParsedEvent, StreamEvent
from ..ndjson import NdjsonStreamParser, SlowLine
from ..streams import ErrorHandler, aclose_source, iter_chunks, judge_off_loop, report_line_error
from .connector import Connector, EncryptingConnector, EnvelopeOpener, is_retryable
from .machine import ReconnectionStateMachine
from .sequence import SequenceGap
from .state import ConnectionState, ReconnectionConfig, ReconnectionEvent, StateChangeEvent

logger = logging.getLogger("enclave_stream")

# Gaps remembered with allow_gaps=True (as SequenceTracker's default).
_MAX_GAPS = 100


@dataclass(frozen=True, slots=True)
class _Plaintext:
    """A plaintext event on an encrypted stream, and its line: refused, fatally."""

    event: ParsedEvent
    line: int


_Item: TypeAlias = "ParsedEvent | LineError | _Plaintext | SlowLine"
"""What the parser hands the follower: slow lines are judged before _select sees them."""

# The kinds of item that need more than a seq check: a chunk with none of them
# (nearly every chunk) is checked in one tight pass.
_SPECIAL_KINDS = frozenset((LineError, EncryptedEnvelope, FinalEvent, _Plaintext))

# The heartbeat deadline is moved forward only once this fraction of the
# timeout has passed since it was last moved, rather than on every batch of
# new events (moving a cancel scope's deadline reschedules a timer, a few
# microseconds, which adds up at thousands of batches a second). The silence
# allowed is therefore between (1 - _HEARTBEAT_SLACK) and 1 times the timeout.
_HEARTBEAT_SLACK = 1 / 1000


class BatchQueue:
    """The batches of events between the reader task and the consumer.

    The reader adds batches with :meth:`put`, waits in :meth:`wait_for_room`
    while the queue is :attr:`full` before it reads on, and calls
    :meth:`finish` when no more will come. The consumer takes them in order
    with :meth:`get`, and calls :meth:`close` when it stops listening, which
    drops what is left and tells the reader that the consumer is gone.

    The queue is full at ``limit`` batches, or at ``woken_limit`` while the
    consumer has been woken for a batch and has not run yet: such a consumer
    is about to take what waits, and stopping the reader for it would cost a
    round through the event loop (dear on trio) each time the reader gets
    several chunks from one socket read before the consumer's turn comes.

    Not an anyio memory object stream: its ``receive()`` passes through the
    event loop before looking for an item, and each wait builds a receiver
    record and hands the item to the waiting task. Here a batch stays in the
    deque until the consumer takes it (so a consumer cancelled while waiting
    loses nothing), a waiting side is woken with one :class:`anyio.Event`,
    and taking a batch that is already there does not go through the event
    loop.
    """

    def __init__(self, limit: int, woken_limit: int) -> None:
        if not 1 <= limit <= woken_limit:
            raise ValueError(f"need 1 <= limit <= woken_limit, got {limit} and {woken_limit}")
        self._batches: deque[list[StreamEvent]] = deque()
        self._limit = limit
        self._woken_limit = woken_limit
        self._finished = False
        self._closed = False
        self._batch_ready: anyio.Event | None = None  # the consumer waits on it
        self._woken = False  # _batch_ready was set, and the consumer has not run since
        self._room: anyio.Event | None = None  # the reader waits on it

    @property
    def closed(self) -> bool:
        """True once the consumer has closed the queue."""
        return self._closed

    @property
    def full(self) -> bool:
        """True if the reader should wait for the consumer before it reads on."""
        waiting = len(self._batches)
        return waiting >= self._woken_limit or (waiting >= self._limit and not self._woken)

    # --- the reader's side

    def put(self, batch: list[StreamEvent]) -> bool:
        """Add a batch, even to a full queue; False (and it is dropped) if the consumer is gone."""
        if self._closed:
            return False
        self._batches.append(batch)
        self._wake_consumer()
        return True

    async def wait_for_room(self) -> bool:
        """Wait while the queue is full; False if the consumer is gone."""
        while self.full and not self._closed:
            room = self._room
            if room is None:
                room = self._room = anyio.Event()
            await room.wait()
        return not self._closed

    def finish(self) -> None:
        """No more batches: the consumer gets the ones waiting, then the end."""
        self._finished = True
        self._wake_consumer()

    def _wake_consumer(self) -> None:
        ready = self._batch_ready
        if ready is not None:
            self._batch_ready = None
            self._woken = True
            ready.set()

    # --- the consumer's side

    async def get(self) -> list[StreamEvent] | None:
        """The next batch, waiting for it if need be; None at the end or once closed.

        Returns at once, without a checkpoint, if a batch is waiting or the
        queue is finished or closed.
        """
        batches = self._batches
        while not batches:
            if self._finished or self._closed:
                return None
            ready = self._batch_ready
            if ready is None:
                ready = self._batch_ready = anyio.Event()
            try:
                await ready.wait()
            except BaseException:
                # Cancelled: unless other consumers wait on it too, forget the
                # event, so that the next batch does not count as waking one.
                if self._batch_ready is ready and not ready.statistics().tasks_waiting:
                    self._batch_ready = None
                raise
            finally:
                self._woken = False
        batch = batches.popleft()
        room = self._room
        if room is not None and not self.full:
            self._room = None
            room.set()
        return batch

    def close(self) -> None:
        """Stop listening: drop the batches left, and wake the reader so that it stops."""
        self._closed = True
        self._batches.clear()
        room, self._room = self._room, None
        if room is not None:
            room.set()
        self._wake_consumer()


class _End(enum.Enum):
    FINISHED = "the final event was delivered"
    CONSUMER_GONE = "the consumer closed the stream"


@dataclass(frozen=True, slots=True)
class _Retry:
    reason: str
    cause: Exception | None = None


@dataclass(frozen=True, slots=True)
class _Fail:
    """Give up with a StreamFailedError (or the subclass ``make`` builds).

    The error is built once the events before it are delivered, so that its
    count is right: ``make(events_delivered=..., last_seq=...)``.
    """

    reason: str
    cause: Exception | None = None
    make: Callable[..., StreamFailedError] | None = None


@dataclass(frozen=True, slots=True)
class _Raise:
    """Give up with this exception, as it is (it came from a callback)."""

    error: Exception


_Outcome: TypeAlias = "_End | _Retry | _Fail | _Raise"


class Follower:
    """Follows one session through as many connections as it takes (see ``open_event_stream``).

    Arguments are checked at construction; :meth:`run` does the work. The
    state it keeps (the next seq wanted, the counts) is read by the consumer
    side through the properties.
    """

    def __init__(
        self,
        connect: Connector,
        *,
        config: ReconnectionConfig,
        heartbeat_timeout_ms: float | None,
        session: EnvelopeOpener | None,
        require_encryption: bool,
        deadline_ms: float | None,
        on_state: Callable[[ConnectionState], object] | None,
        retry_if: Callable[[Exception], bool] | None,
        allow_gaps: bool,
        on_error: ErrorHandler | None,
        max_line_bytes: int,
    ) -> None:
        self._timeout_s = _seconds("heartbeat_timeout_ms", heartbeat_timeout_ms)
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be positive, got {max_line_bytes}")
        self._deadline_s = _seconds("deadline_ms", deadline_ms)
        if session is None and isinstance(connect, EncryptingConnector) and connect.encrypted:
            session = connect  # its handshake makes the stream encrypted
        self._connect = connect
        self._session = session
        # An encrypted stream carries envelopes only: a plaintext event is an
        # injection (a relayed genuine hello does not make the body genuine).
        self._refuse_plaintext = session is not None and require_encryption
        self._on_state = on_state
        self._retry_if = retry_if
        self._allow_gaps = allow_gaps
        self._on_error = on_error
        self._max_line_bytes = max_line_bytes
        self.machine = ReconnectionStateMachine(config, on_event=self._on_machine_event)
        # The next seq wanted: -1 until the first event (whatever its number).
        # Numbers passed on only ever go up, so anything below is a repeat.
        self._expect = -1
        self._gaps: list[SequenceGap] = []
        # The first event's session: every later event must belong to it.
        self._session_id: str | None = None
        # A line over max_line_bytes since the last new event: the likely
        # reason for a hole that follows it.
        self._too_long: LineError | None = None
        self._fresh = True  # no new event yet on the current connection
        self._sent = 0  # events put into the consumer's queue
        self._queue: BatchQueue | None = None
        self.failure: Exception | None = None
        """Why :meth:`run` gave up, for the consumer to raise after the last event."""

    @property
    def last_seq(self) -> int | None:
        """The seq of the last event passed on (it may wait in the buffer); None before any."""
        return None if self._expect < 0 else self._expect - 1

    @property
    def gaps(self) -> list[SequenceGap]:
        """The gaps accepted with ``allow_gaps=True`` (the first 100), oldest first."""
        return list(self._gaps)

    async def run(self, queue: BatchQueue) -> None:
        """Follow the session, putting batches of new events in ``queue``, to ``final`` or failure.

        Finishes ``queue`` when done, also when cancelled; an error that ends
        the stream is kept in :attr:`failure` rather than raised.
        """
        self._queue = queue
        try:
            with anyio.move_on_after(self._deadline_s) as overall:
                await self._follow()
        except Exception as exc:
            self.failure = exc
        else:
            if overall.cancelled_caught:
                reason = f"the deadline of {self._deadline_s * 1000:g} ms passed"
                self.machine.on_fatal_error(reason)
                self.failure = self._failed(_Fail(reason))
        finally:
            queue.finish()

    def _on_machine_event(self, event: ReconnectionEvent) -> None:
        if isinstance(event, StateChangeEvent) and self._on_state is not None:
            self._on_state(event.state)

    async def _follow(self) -> None:
        machine = self.machine
        machine.connect()
        while True:
            outcome = await self._connection()
            if isinstance(outcome, _End):
                machine.close()
                return
            if isinstance(outcome, _Raise):
                machine.on_fatal_error(f"{type(outcome.error).__name__}: {outcome.error}")
                raise outcome.error
            if isinstance(outcome, _Fail):
                machine.on_fatal_error(outcome.reason)
                raise self._failed(outcome)
            logger.info("event stream disconnected: %s", outcome.reason)
            machine.on_disconnected(outcome.reason)
            pending = machine.pending_retry
            if pending is None:
                reason = f"gave up after {machine.config.max_retries} retries: {outcome.reason}"
                raise self._failed(_Fail(reason, outcome.cause))
            await anyio.sleep(pending.delay_seconds)
            machine.fire_retry()

    def _failed(self, fail: _Fail) -> StreamFailedError:
        delivered, last = self._sent, self.last_seq
        if fail.make is not None:
            return fail.make(events_delivered=delivered, last_seq=last)
        return StreamFailedError(
            fail.reason, events_delivered=delivered, last_seq=last, cause=fail.cause
        )

    async def _connection(self) -> _Outcome:
        """Read one connection to its end; say what should happen next."""
        assert self._queue is not None, "set by run()"
        queue = self._queue
        from_seq = None if self._expect < 0 else self._expect
        items: list[_Item] = []
        slow_lines: list[SlowLine] = []  # lines to judge off the event loop, in items too
        on_event: Callable[[ParsedEvent], object] = items.append
        if self._refuse_plaintext:

            def on_event(event: ParsedEvent) -> None:
                if type(event) is EncryptedEnvelope:
                    items.append(event)
                else:
                    items.append(_Plaintext(event, parser.line_number))

        def on_slow_line(line: SlowLine) -> None:
            slow_lines.append(line)
            items.append(line)  # replaced by its verdict before use

        parser = NdjsonStreamParser(
            on_event,
            items.append,
            max_line_bytes=self._max_line_bytes,
            on_slow_line=on_slow_line,
        )
        self._fresh = True
        self._too_long = None
        outcome: _Outcome | None = None
        timeout = self._timeout_s
        slack = timeout * _HEARTBEAT_SLACK
        clock = anyio.current_time
        # The heartbeat: this scope's deadline covers connecting, and only new
        # events of the session push it back (a heartbeat event is one).
        # Bytes alone do not: whitespace, bad lines or old events resent
        # would keep a dead stream open for ever.
        armed = clock()  # when the deadline was last moved
        with anyio.CancelScope(deadline=armed + timeout) as watchdog:
            try:
                async with self._connect(from_seq) as source:
                    chunks = iter_chunks(source)
                    try:
                        async for chunk in chunks:
                            parser.feed(chunk)
                            if slow_lines:
                                await self._judge(items)
                                slow_lines.clear()
                            if items:
                                sent = self._sent
                                outcome = await self._pass_on(items)
                                if self._sent != sent:
                                    now = clock()
                                    if now - armed >= slack:
                                        armed = now
                                        watchdog.deadline = now + timeout
                                if outcome is None and queue.full:
                                    # Waiting for a slow consumer is not
                                    # silence from the server.
                                    watchdog.deadline = math.inf
                                    if not await queue.wait_for_room():
                                        outcome = _End.CONSUMER_GONE
                                    armed = clock()
                                    watchdog.deadline = armed + timeout
                                if outcome is not None:
                                    break
                        else:
                            parser.flush()
                            if slow_lines:
                                await self._judge(items)
                            outcome = await self._at_end(items)
                    finally:
                        await chunks.aclose()
                        await aclose_source(source, forcefully=True)
            except Exception as exc:
                # An error while closing after a decision changes nothing.
                if outcome is None:
                    outcome = self._classify(exc)
        if outcome is None:
            return _Retry(f"no new event for {timeout * 1000:g} ms (heartbeat timeout)")
        return outcome

    async def _judge(self, items: list[_Item]) -> None:
        """Replace the slow lines of ``items`` by their verdicts (judged off the loop)."""
        judged: list[_Item] = []
        for item in items:
            if type(item) is not SlowLine:
                judged.append(item)
                continue
            verdict = await judge_off_loop(item)
            if verdict is None:
                continue
            if self._refuse_plaintext and not isinstance(verdict, LineError | EncryptedEnvelope):
                judged.append(_Plaintext(verdict, item.number))
            else:
                judged.append(verdict)
        items[:] = judged

    async def _at_end(self, items: list[_Item]) -> _Outcome:
        # Text after the last newline is either a last line sent without its
        # newline, or what a cut connection left of a line: take a whole
        # event, but do not report a fragment as a bad line from the server.
        cut = any(type(item) is LineError for item in items)
        if items and not cut:
            # No wait for room here: this connection is over, and the next
            # one waits after its first batch if the queue is still full.
            outcome = await self._pass_on(items)
            if outcome is not None:
                return outcome
        too_long = self._too_long
        if too_long is not None and self._fresh:
            # A replay that brought nothing new but an over-long line before
            # ending: that line is the missing event (a big final, often).
            return self._line_too_long(too_long)
        where = " in the middle of a line" if cut else ""
        return _Retry(f"the stream ended{where} before the final event")

    def _line_too_long(self, line: LineError) -> _Fail:
        return _Fail(
            f"line {line.line} was longer than max_line_bytes",
            make=functools.partial(LineTooLongError, line.line, self._max_line_bytes),
        )

    def _classify(self, error: Exception) -> _Outcome:
        described = f"{type(error).__name__}: {error}"
        if is_retryable(error, self._retry_if):
            return _Retry(described, error)
        return _Fail(f"fatal error: {described}", error)

    async def _pass_on(self, items: list[_Item]) -> _Outcome | None:
        """Queue the new events of ``items``, then clear it; an outcome ends the connection."""
        assert self._queue is not None, "set by run()"
        batch, outcome = await self._select(items)
        items.clear()
        if batch:
            if not self._queue.put(batch):
                return _End.CONSUMER_GONE
            self._sent += len(batch)
        return outcome

    async def _select(self, items: list[_Item]) -> tuple[list[StreamEvent], _Outcome | None]:
        """The new events of ``items``, opened, and an outcome if one ends the connection."""
        expect = self._expect
        pinned = self._session_id
        if expect >= 0 and _SPECIAL_KINDS.isdisjoint(set(map(type, items))):
            # The usual chunk: plain events of the session that go on from the
            # last one. Anything else (a repeat, a hole, another session)
            # takes the general path below.
            for item in items:
                if item.seq != expect or item.session_id != pinned:  # type: ignore[union-attr]
                    break
                expect += 1
            else:
                self._expect = expect
                plain = cast("list[StreamEvent]", items.copy())  # no envelope, no error
                if self._fresh:
                    try:
                        self._mark_connected()
                    except Exception as exc:  # on_state failed
                        return plain, _Raise(exc)
                return plain, None
            expect = self._expect
        batch: list[StreamEvent] = []
        outcome: _Outcome | None = None
        try:
            for item in items:
                kind = type(item)
                if kind is LineError:
                    if item.kind is FailureKind.LINE_TOO_LONG:  # type: ignore[union-attr]
                        self._too_long = item  # type: ignore[assignment]
                    report_line_error(item, self._on_error, False)  # type: ignore[arg-type]
                    continue
                if kind is _Plaintext:
                    outcome = _plaintext_refused(item)  # type: ignore[arg-type]
                    break
                seq = item.seq  # type: ignore[union-attr]
                session_id = item.session_id  # type: ignore[union-attr]
                if session_id != pinned:
                    if pinned is not None:
                        outcome = _Fail(
                            f"an event of session {session_id!r} arrived",
                            make=functools.partial(SessionMismatchError, pinned, session_id, seq),
                        )
                        break
                    pinned = self._session_id = session_id
                if seq != expect and expect >= 0:
                    if seq < expect:
                        continue  # delivered already: a replay that started early, a resend
                    # Caught before moving past the hole, so that a replay can
                    # still bring the missing events in order.
                    outcome = self._on_gap(expect, seq - 1)
                    if outcome is not None:
                        break
                if kind is EncryptedEnvelope:
                    opened = await self._open(item)  # type: ignore[arg-type]
                    if isinstance(opened, _Fail):
                        outcome = opened
                        break
                    item, kind = opened, type(opened)
                batch.append(item)  # type: ignore[arg-type]
                self._too_long = None
                expect = seq + 1
                if kind is FinalEvent:
                    outcome = _End.FINISHED
                    break
            if batch and self._fresh:
                self._mark_connected()
        except Exception as exc:
            # A callback (on_error, on_state) failed: not the transport's doing.
            outcome = _Raise(exc)
        finally:
            self._expect = expect
        return batch, outcome

    def _mark_connected(self) -> None:
        # The retry count resets here, on the connection's first new event,
        # not on connecting: a server that accepts and then fails before
        # anything new runs out of retries.
        self._fresh = False
        self.machine.on_connected()

    def _on_gap(self, start: int, end: int) -> _Outcome | None:
        if not self._fresh:
            # A hole in a live stream: ask for a replay from the hole before
            # going on, so that order holds.
            return _Retry(f"events {start}..{end} were skipped; asking for a replay")
        # This connection is a replay from ``start``, and it skips it anyway.
        if not self._allow_gaps:
            too_long = self._too_long
            if too_long is not None:  # the missing event is most likely that line
                return self._line_too_long(too_long)
            return _Fail(
                f"events {start}..{end} are missing",
                make=functools.partial(SequenceGapError, start, end),
            )
        logger.warning("event stream: events %d..%d are missing; going on without them", start, end)
        if len(self._gaps) < _MAX_GAPS:
            self._gaps.append(SequenceGap(start, end))
        return None

    async def _open(self, envelope: EncryptedEnvelope) -> StreamEvent | _Fail:
        session = self._session
        if session is None:
            return _Fail(f"received an encrypted event (seq {envelope.seq}) but no session")
        try:
            return await open_off_loop(session.open, envelope)
        except Exception as exc:
            return _Fail(f"could not open the encrypted event with seq {envelope.seq}", exc)


def _plaintext_refused(item: _Plaintext) -> _Fail:
    event = item.event
    error = EnvelopeError(
        f"Plaintext {event.type} event (seq {event.seq}) on line {item.line} refused: "
        f"this stream is encrypted, so every line must be an envelope of its session",
        EnvelopeErrorReason.PLAINTEXT_REFUSED,
    )
    return _Fail(f"a plaintext event on an encrypted stream: {error.message}", error)


def _seconds(name: str, value_ms: float | None) -> float:
    """A duration option in ms as seconds (None: no limit), checked."""
    if value_ms is None:
        return math.inf
    if (
        isinstance(value_ms, bool)
        or not isinstance(value_ms, int | float)
        or not math.isfinite(value_ms)
        or value_ms <= 0
    ):
        raise ValueError(f"{name} must be a finite number > 0 or None, got {value_ms!r}")
    return value_ms / 1000
