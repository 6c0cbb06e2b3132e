"""The reader side of the resumable event stream: connections in, batches of new events out.

A :class:`Follower` runs as the one task of a
:class:`~enclave_stream.reconnect.ResumableEventStream`. It opens connections
through the connector, parses them, keeps only events it has not passed on
yet, and sends them, one batch per chunk received, into a memory object
stream that the consumer reads. What ends a connection is an *outcome*:
retry, finish, or give up.
"""

from __future__ import annotations

__all__ = ["Follower"]

import enum
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from ..events import EncryptedEnvelope, FinalEvent, ParsedEvent, StreamEvent
from ..ndjson import LineError, NdjsonStreamParser
from ..streams import ErrorHandler, _aclose, _chunks, _report
from .connector import Connector, EnvelopeOpener
from .errors import SequenceGapError, StreamFailedError, is_retryable
from .machine import ReconnectionStateMachine
from .sequence import SequenceGap
from .state import ConnectionState, ReconnectionConfig, ReconnectionEvent, StateChangeEvent

logger = logging.getLogger("enclave_stream")

# Gaps remembered with allow_gaps=True (as SequenceTracker's default).
_MAX_GAPS = 100


class _End(enum.Enum):
    FINISHED = "the final event was delivered"
    CONSUMER_GONE = "the consumer closed the stream"


@dataclass(frozen=True, slots=True)
class _Retry:
    reason: str
    cause: Exception | None = None


@dataclass(frozen=True, slots=True)
class _Fail:
    """Give up with a StreamFailedError (a SequenceGapError when ``gap`` is set).

    The error is built once the events before it are delivered, so that its
    count is right.
    """

    reason: str
    cause: Exception | None = None
    gap: SequenceGap | None = None


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
        on_state: Callable[[ConnectionState], object] | None,
        retry_if: Callable[[Exception], bool] | None,
        allow_gaps: bool,
        on_error: ErrorHandler | None,
        max_line_bytes: int,
    ) -> None:
        if heartbeat_timeout_ms is None:
            self._timeout_s = math.inf
        elif (
            isinstance(heartbeat_timeout_ms, bool)
            or not isinstance(heartbeat_timeout_ms, int | float)
            or not math.isfinite(heartbeat_timeout_ms)
            or heartbeat_timeout_ms <= 0
        ):
            raise ValueError(
                f"heartbeat_timeout_ms must be a finite number > 0 or None, "
                f"got {heartbeat_timeout_ms!r}"
            )
        else:
            self._timeout_s = heartbeat_timeout_ms / 1000
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be positive, got {max_line_bytes}")
        self._connect = connect
        self._session = session
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
        self._fresh = True  # no new event yet on the current connection
        self._sent = 0  # events handed to the consumer's channel
        self._send: MemoryObjectSendStream[list[StreamEvent]] | None = None
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

    async def run(self, send: MemoryObjectSendStream[list[StreamEvent]]) -> None:
        """Follow the session, sending batches of new events, until ``final`` or giving up.

        Closes ``send`` when done; an error that ends the stream is kept in
        :attr:`failure` rather than raised.
        """
        self._send = send
        with send:
            try:
                await self._follow()
            except Exception as exc:
                self.failure = exc

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
        if fail.gap is not None:
            return SequenceGapError(
                fail.gap.start, fail.gap.end, events_delivered=delivered, last_seq=last
            )
        return StreamFailedError(
            fail.reason, events_delivered=delivered, last_seq=last, cause=fail.cause
        )

    async def _connection(self) -> _Outcome:
        """Read one connection to its end; say what should happen next."""
        from_seq = None if self._expect < 0 else self._expect
        items: list[ParsedEvent | LineError] = []
        parser = NdjsonStreamParser(items.append, items.append, max_line_bytes=self._max_line_bytes)
        self._fresh = True
        outcome: _Outcome | None = None
        timeout = self._timeout_s
        # The heartbeat: this scope's deadline is pushed back by every chunk
        # (not every event, so a slow trickle of one long line counts as life),
        # and covers connecting too.
        with anyio.CancelScope(deadline=anyio.current_time() + timeout) as watchdog:
            try:
                async with self._connect(from_seq) as source:
                    chunks = _chunks(source)
                    try:
                        async for chunk in chunks:
                            watchdog.deadline = anyio.current_time() + timeout
                            parser.feed(chunk)
                            if items:
                                outcome = await self._dispatch(items, watchdog)
                                items.clear()
                                if outcome is not None:
                                    break
                        else:
                            outcome = await self._at_end(parser, items, watchdog)
                    finally:
                        await chunks.aclose()
                        await _aclose(source, forcefully=True)
            except Exception as exc:
                # An error while closing after a decision changes nothing.
                if outcome is None:
                    outcome = self._classify(exc)
        if outcome is None:
            return _Retry(f"no data for {timeout * 1000:g} ms (heartbeat timeout)")
        return outcome

    async def _at_end(
        self,
        parser: NdjsonStreamParser,
        items: list[ParsedEvent | LineError],
        watchdog: anyio.CancelScope,
    ) -> _Outcome:
        parser.flush()
        # Text after the last newline is either a last line sent without its
        # newline, or what a cut connection left of a line: take a whole
        # event, but do not report a fragment as a bad line from the server.
        cut = any(type(item) is LineError for item in items)
        if items and not cut:
            outcome = await self._dispatch(items, watchdog)
            if outcome is not None:
                return outcome
        where = " in the middle of a line" if cut else ""
        return _Retry(f"the stream ended{where} before the final event")

    def _classify(self, error: Exception) -> _Outcome:
        described = f"{type(error).__name__}: {error}"
        if is_retryable(error, self._retry_if):
            return _Retry(described, error)
        return _Fail(f"fatal error: {described}", error)

    async def _dispatch(
        self, items: list[ParsedEvent | LineError], watchdog: anyio.CancelScope
    ) -> _Outcome | None:
        """Pass the new events of ``items`` on; returns an outcome to end the connection."""
        batch: list[StreamEvent] = []
        outcome: _Outcome | None = None
        expect = self._expect
        try:
            for item in items:
                kind = type(item)
                if kind is LineError:
                    _report(item, self._on_error, False)  # type: ignore[arg-type]
                    continue
                seq = item.seq  # type: ignore[union-attr]
                if seq != expect and expect >= 0:
                    if seq < expect:
                        continue  # delivered already: a replay that started early, a resend
                    # Caught before moving past the hole, so that a replay can
                    # still bring the missing events in order.
                    outcome = self._on_gap(expect, seq - 1)
                    if outcome is not None:
                        break
                if kind is EncryptedEnvelope:
                    opened = self._open(item)  # type: ignore[arg-type]
                    if isinstance(opened, _Fail):
                        outcome = opened
                        break
                    item, kind = opened, type(opened)
                batch.append(item)  # type: ignore[arg-type]
                expect = seq + 1
                if kind is FinalEvent:
                    outcome = _End.FINISHED
                    break
            if batch and self._fresh:
                # The retry count resets here, not on connecting: a server that
                # accepts and then fails before anything new runs out of retries.
                self._fresh = False
                self.machine.on_connected()
        except Exception as exc:
            # A callback (on_error, on_state) failed: not the transport's doing.
            outcome = _Raise(exc)
        finally:
            self._expect = expect
        if batch and not await self._deliver(batch, watchdog):
            return _End.CONSUMER_GONE
        return outcome

    def _on_gap(self, start: int, end: int) -> _Outcome | None:
        if not self._fresh:
            # A hole in a live stream: ask for a replay from the hole before
            # going on, so that order holds.
            return _Retry(f"events {start}..{end} were skipped; asking for a replay")
        # This connection is a replay from ``start``, and it skips it anyway.
        if not self._allow_gaps:
            return _Fail(f"events {start}..{end} are missing", gap=SequenceGap(start, end))
        logger.warning("event stream: events %d..%d are missing; going on without them", start, end)
        if len(self._gaps) < _MAX_GAPS:
            self._gaps.append(SequenceGap(start, end))
        return None

    def _open(self, envelope: EncryptedEnvelope) -> StreamEvent | _Fail:
        session = self._session
        if session is None:
            return _Fail(f"received an encrypted event (seq {envelope.seq}) but no session")
        try:
            return session.open(envelope)
        except Exception as exc:
            return _Fail(f"could not open the encrypted event with seq {envelope.seq}", exc)

    async def _deliver(self, batch: list[StreamEvent], watchdog: anyio.CancelScope) -> bool:
        """Hand a batch to the consumer; False if the consumer is gone."""
        assert self._send is not None, "set by run()"
        try:
            try:
                self._send.send_nowait(batch)
            except anyio.WouldBlock:
                # Waiting for a slow consumer is not silence from the server.
                watchdog.deadline = math.inf
                await self._send.send(batch)
                watchdog.deadline = anyio.current_time() + self._timeout_s
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False
        self._sent += len(batch)
        return True
