"""The sans-IO resume core: sequence numbers, the resume decisions, a bounded buffer.

Nothing here owns a clock, a task or a socket; the anyio client drives it.
"""

from __future__ import annotations

__all__ = [
    "DROP",
    "FINISHED",
    "NEW",
    "EventBuffer",
    "GiveUp",
    "Outcome",
    "ReceiveResult",
    "Reconnect",
    "ResumeCore",
    "SequenceGap",
    "SequenceTracker",
    "Verdict",
]

import bisect
import contextlib
import enum
import logging
import random as _random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeAlias, TypeVar

from .._options import check_number
from ..errors import (
    EnvelopeError,
    EnvelopeErrorReason,
    FailureKind,
    LineError,
    LineTooLongError,
    RetryableConnectError,
    SequenceGapError,
    SessionMismatchError,
    StreamFailedError,
)
from ..events import (
    STREAM_EVENT_CLASSES,
    EncryptedEnvelope,
    FinalEvent,
    ParsedEvent,
    StreamEvent,
)
from .machine import (
    DEFAULT_RECONNECTION_CONFIG,
    ConnectionState,
    ReconnectionConfig,
    ReconnectionEvent,
    ReconnectionStateMachine,
    StateChangeEvent,
)

logger = logging.getLogger("enclave_stream")

T = TypeVar("T")


# --- sequence numbers


@dataclass(frozen=True, slots=True)
class SequenceGap:
    """Sequence numbers ``start`` to ``end`` (inclusive) were skipped."""

    start: int
    end: int

    def to_dict(self) -> dict[str, int]:
        """The JSON shape ``{"start", "end"}``."""
        return {"start": self.start, "end": self.end}


@dataclass(frozen=True, slots=True)
class ReceiveResult:
    """What :class:`SequenceTracker` found out about one sequence number.

    Attributes:
        gap: numbers were skipped just before this one.
        missing_start: first skipped number (None when ``gap`` is False).
        missing_end: last skipped number (None when ``gap`` is False).
        duplicate: this number was received before: drop it.
        late: (strict trackers only) this number was missing and arrives
            after higher ones: it fills its gap, out of order.
    """

    gap: bool
    missing_start: int | None = None
    missing_end: int | None = None
    duplicate: bool = False
    late: bool = False

    def to_dict(self) -> dict[str, object]:
        """The JSON shape ``{"gap", "missingStart"?, "missingEnd"?}`` (without ``late``)."""
        if not self.gap:
            return {"gap": False}
        return {"gap": True, "missingStart": self.missing_start, "missingEnd": self.missing_end}


_IN_ORDER: Final = ReceiveResult(gap=False)
_DUPLICATE: Final = ReceiveResult(gap=False, duplicate=True)
_LATE: Final = ReceiveResult(gap=False, late=True)


def _gap_start(gap: SequenceGap) -> int:
    return gap.start


class SequenceTracker:
    """Follows the ``seq`` numbers of a stream: records gaps, flags repeats.

    The first number received is taken as the start; ``last + 1`` advances;
    a jump records a gap ``(last + 1, seq - 1)`` (at most ``max_gaps`` are
    kept; later ones are still reported and counted in :attr:`gaps_dropped`)
    and advances; a number ``<= last`` does not advance and is a
    :attr:`ReceiveResult.duplicate`.

    The default mode keeps the recorded traces, quirks included: a first
    seq 0 means "nothing yet", and a number filling a gap is a duplicate.
    ``strict=True`` drops both: 0 is a start, and a number inside a recorded
    gap is :attr:`ReceiveResult.late` and fills it (docs/compatibility.md, R4).

    :meth:`check` says what :meth:`receive` would, without changing anything.
    Sequence numbers are ints >= 0 (as on the wire); anything else is a
    ``ValueError``.

    >>> t = SequenceTracker()
    >>> [t.receive(s).duplicate for s in (1, 2, 2, 5, 3)]
    [False, False, True, False, True]
    >>> t.last_seq, t.gaps, t.next_seq
    (5, [SequenceGap(start=3, end=4)], 6)
    >>> s = SequenceTracker(strict=True)
    >>> [(r.gap, r.duplicate, r.late) for r in map(s.receive, (0, 3, 1, 1))]
    [(False, False, False), (True, False, False), (False, False, True), (False, True, False)]
    >>> s.gaps
    [SequenceGap(start=2, end=2)]
    """

    def __init__(self, max_gaps: int = 100, *, strict: bool = False) -> None:
        check_number("max_gaps", max_gaps, integer=True)
        self._max_gaps = max_gaps
        self._strict = strict
        self._last_seq = 0
        self._received_any = False
        self._gaps: list[SequenceGap] = []
        self._gaps_dropped = 0

    @property
    def last_seq(self) -> int:
        """The highest number received (0 when nothing was)."""
        return self._last_seq

    @property
    def next_seq(self) -> int | None:
        """The number to ask for when resuming: ``last_seq + 1``; None before any number."""
        return self._last_seq + 1 if self._received_any else None

    @property
    def gaps(self) -> list[SequenceGap]:
        """The recorded gaps, oldest first (a copy)."""
        return list(self._gaps)

    @property
    def max_gaps(self) -> int:
        """How many gaps are kept at most."""
        return self._max_gaps

    @property
    def gaps_dropped(self) -> int:
        """Gaps found while ``max_gaps`` were already kept (reported, not recorded)."""
        return self._gaps_dropped

    def has_gaps(self) -> bool:
        """True when at least one gap is recorded."""
        return bool(self._gaps)

    def check(self, seq: int) -> ReceiveResult:
        """What :meth:`receive` would return for ``seq``; changes nothing."""
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ValueError(f"sequence numbers are ints >= 0, got {seq!r}")
        last = self._last_seq
        if not self._received_any:
            return _IN_ORDER
        if seq == last + 1:
            return _IN_ORDER
        if seq > last:
            if last == 0 and not self._strict:
                return _IN_ORDER  # the quirk: 0 is "nothing yet", so this is a start
            return ReceiveResult(gap=True, missing_start=last + 1, missing_end=seq - 1)
        if self._strict and self._gap_index(seq) is not None:
            return _LATE
        return _DUPLICATE

    def receive(self, seq: int) -> ReceiveResult:
        """Account for one received sequence number."""
        result = self.check(seq)
        self._received_any = True
        if result.gap:
            assert result.missing_start is not None
            assert result.missing_end is not None
            if len(self._gaps) < self._max_gaps:
                self._gaps.append(SequenceGap(result.missing_start, result.missing_end))
            else:
                self._gaps_dropped += 1
        elif result.late:
            self._fill(seq)
        self._last_seq = max(self._last_seq, seq)
        return result

    def receive_next(self, count: int) -> None:
        """Account for the ``count`` numbers after :attr:`last_seq`, in order, in one step.

        The same as :meth:`receive` of ``last_seq + 1``, ``last_seq + 2``, ...
        (each in order, so no result to return); for a run a caller has
        already compared with :attr:`next_seq`. Something must have been
        received before.
        """
        if not self._received_any:
            raise ValueError("receive_next needs a number received before")
        self._last_seq += count

    def clear_gap(self, start: int, end: int) -> None:
        """Forget the gap ``(start, end)`` once it is filled; only an exact match is removed."""
        with contextlib.suppress(ValueError):
            self._gaps.remove(SequenceGap(start, end))

    def reset(self) -> None:
        """Forget everything: the next number is a fresh start."""
        self._last_seq = 0
        self._received_any = False
        self._gaps.clear()
        self._gaps_dropped = 0

    def _gap_index(self, seq: int) -> int | None:
        # Gaps are recorded in increasing order and filling only splits one,
        # so the list stays sorted and disjoint.
        index = bisect.bisect_right(self._gaps, seq, key=_gap_start) - 1
        if index >= 0 and self._gaps[index].end >= seq:
            return index
        return None

    def _fill(self, seq: int) -> None:
        index = self._gap_index(seq)
        assert index is not None  # check() found seq inside a gap
        gap = self._gaps[index]
        pieces = [
            SequenceGap(start, end)
            for start, end in ((gap.start, seq - 1), (seq + 1, gap.end))
            if start <= end
        ]
        self._gaps[index : index + 1] = pieces


# --- the resume core


class Verdict(enum.Enum):
    """What to do with one received event when it does not end the connection."""

    NEW = "deliver it (open it first if it is an envelope), then call accept()"
    DROP = "delivered already: drop it"


NEW: Final = Verdict.NEW
DROP: Final = Verdict.DROP


class Finished(enum.Enum):
    """The stream is over without an error."""

    FINISHED = "the final event was delivered"
    CONSUMER_GONE = "the consumer stopped listening"


FINISHED: Final = Finished.FINISHED


@dataclass(frozen=True, slots=True)
class Reconnect:
    """End this connection and open another one, resuming at :attr:`ResumeCore.next_seq`."""

    reason: str
    cause: Exception | None = None


@dataclass(frozen=True, slots=True)
class GiveUp:
    """End the stream with ``error`` (raised after the events delivered before it)."""

    reason: str
    error: Exception


Outcome: TypeAlias = "Finished | Reconnect | GiveUp"
"""How a connection ends: the stream is over, goes on with another connection, or fails."""


# Events that accept() takes as they are: not an envelope (opened first),
# not final (it ends the stream).
_PLAIN_EVENTS: Final = frozenset(STREAM_EVENT_CLASSES) - {FinalEvent}


class ResumeCore:
    """The decisions of a resumable client, without I/O: a driver feeds it and obeys.

    The driver's loop (``ResumableEventStream`` is one), for each connection::

        core.connection_opened()
        connect(core.next_seq)                   # resume after what was delivered
        for each item parsed from the bytes:
            bad line  -> core.line_error(error)
            an event  -> verdict = core.check(event)
                NEW   -> open it if it is an envelope, deliver it, and
                         core.accept(event, opened) (True: it was final; stop)
                DROP  -> skip it
                other -> an Outcome: end this connection with it
        end of the bytes -> core.connection_ended(cut)
        an error         -> Reconnect(...) or core.give_up(...)

    then ``core.disconnected(reconnect)`` gives the backoff delay (or a
    :class:`GiveUp` when retries are exhausted), and after sleeping it,
    ``core.retry()``; ``core.finish(outcome)`` records the end.

    The rules, in the order they are checked (docs/compatibility.md, R6-R9):

    * with ``refuse_plaintext`` (an encrypted stream), anything but an
      ``enc`` envelope ends the stream (an injected event);
    * the first event delivered pins the session: another session's event
      ends the stream (:class:`SessionMismatchError`);
    * a number already delivered is dropped (a replay that starts early, a resend);
    * a hole: on a connection that has delivered something, reconnect and
      ask for a replay from the first missing number; on a fresh connection
      (that replay skips it too) fail with :class:`SequenceGapError` (or
      :class:`LineTooLongError` when an over-long line came just before),
      or, with ``allow_gaps``, record the gap and go on;
    * the first new event of a connection reports it connected, which
      resets the retry count (R7).

    Args:
        config: retries and backoff.
        allow_gaps: go on past events that even a replay does not have.
        refuse_plaintext: the stream is encrypted: only envelopes may come.
        max_line_bytes: the parser's limit, for :class:`LineTooLongError` (0: not given).
        on_state: called with each new :class:`ConnectionState`; its
            exceptions propagate out of the call that changed the state.
        on_event: called with each event of the state machine before
            ``on_state`` (:class:`DisconnectedEvent` with the reason,
            :class:`RetryScheduledEvent` with the attempt and the delay,
            :class:`FailedEvent` ...), the same way.
        random: jitter source for the backoff (``[0, 1)``).
        from_seq: the first seq wanted, for a process that saved where it
            got to (``last_seq + 1``); events below it are dropped as
            already delivered. None (or 0): from the start.
        on_retry: called as ``on_retry(attempt, delay_seconds, error)`` when
            :meth:`disconnected` schedules a retry; ``error`` is what ended
            the connection (a :class:`RetryableConnectError` with the reason
            when nothing was raised: a stream that ended, a heartbeat timeout).
    """

    def __init__(
        self,
        config: ReconnectionConfig = DEFAULT_RECONNECTION_CONFIG,
        *,
        allow_gaps: bool = False,
        refuse_plaintext: bool = False,
        max_line_bytes: int = 0,
        on_state: Callable[[ConnectionState], object] | None = None,
        on_event: Callable[[ReconnectionEvent], object] | None = None,
        random: Callable[[], float] = _random.random,
        from_seq: int | None = None,
        on_retry: Callable[[int, float, Exception], object] | None = None,
    ) -> None:
        self._on_state = on_state
        self._on_event = on_event
        self._on_retry = on_retry
        self._resume_from: int | None = None  # set by retry(): the next delivery resumes
        self.machine = ReconnectionStateMachine(config, self._on_machine_event, random=random)
        self.tracker = SequenceTracker(strict=True)
        if from_seq is not None:
            check_number("from_seq", from_seq, integer=True)
            if from_seq > 0:  # as if seq from_seq - 1 was delivered before: ask for from_seq
                self.tracker.receive(from_seq - 1)
        self.allow_gaps = allow_gaps
        self.refuse_plaintext = refuse_plaintext
        self.max_line_bytes = max_line_bytes
        self.session_id: str | None = None
        """The session every event must belong to, once the first was delivered."""
        self.delivered = 0
        """Events accepted so far."""
        self._fresh: bool  # nothing new yet on the current connection
        # An over-long line before the first new event of this connection
        # (consulted only while nothing new has come).
        self._too_long: LineError | None
        self.connection_opened()

    @property
    def next_seq(self) -> int | None:
        """The ``seq`` to resume from: None before the first event, then the one after the last."""
        return self.tracker.next_seq

    @property
    def last_seq(self) -> int | None:
        """The ``seq`` of the last event accepted; None before any."""
        following = self.tracker.next_seq
        return None if following is None else following - 1

    @property
    def gaps(self) -> list[SequenceGap]:
        """The gaps gone past with ``allow_gaps`` (the first 100), oldest first."""
        return self.tracker.gaps

    def connect(self) -> None:
        """The first connection is about to be made."""
        self.machine.connect()

    def connection_opened(self) -> None:
        """A connection is about to be made (the first or a retry)."""
        self._fresh = True
        self._too_long = None

    def line_error(self, error: LineError) -> None:
        """A bad line arrived; an over-long one may explain a hole after it."""
        if error.kind is FailureKind.LINE_TOO_LONG:
            self._too_long = error

    def check(self, event: ParsedEvent, line: int | None = None) -> Verdict | Outcome:
        """What to do with a received event (``line``: its line number, for messages)."""
        if self.refuse_plaintext and type(event) is not EncryptedEnvelope:
            return self._plaintext_refused(event, line)
        seq = event.seq
        pinned = self.session_id
        if pinned is not None and event.session_id != pinned:
            error = SessionMismatchError(
                pinned,
                event.session_id,
                seq,
                events_delivered=self.delivered,
                last_seq=self.last_seq,
            )
            return GiveUp(f"an event of session {event.session_id!r} arrived", error)
        result = self.tracker.check(seq)
        if result.duplicate or result.late:
            return DROP
        if result.gap:
            assert result.missing_start is not None
            assert result.missing_end is not None
            return self._on_gap(result.missing_start, result.missing_end)
        return NEW

    def accept(self, event: ParsedEvent, opened: StreamEvent | None = None) -> bool:
        """Record that ``event`` (judged NEW) is delivered, as ``opened`` if it was an envelope.

        Returns True when the delivered event is ``final``: the stream is over.
        The first new event of a connection reports it connected (``on_state``
        may raise from here; the event counts as delivered all the same).
        """
        self.tracker.receive(event.seq)
        self.session_id = event.session_id
        self._delivered(1)
        return type(event if opened is None else opened) is FinalEvent

    def accept_in_order(self, items: Sequence[object]) -> int:
        """Accept the leading run of ``items`` that needs no decision; returns its length.

        The run: events of the pinned session, neither envelopes nor
        ``final``, whose numbers go on from :attr:`next_seq` one by one. For
        them, the result is what :meth:`check` (NEW) then :meth:`accept` of
        each would do, in one step: the usual chunk of a live stream is such
        a run, and the per-event calls would cost more than the parsing.
        """
        pinned = self.session_id
        if pinned is None or self.refuse_plaintext:
            return 0
        following = self.tracker.next_seq
        assert following is not None  # accept() sets it with the session
        expect = following
        for item in items:
            if (
                type(item) not in _PLAIN_EVENTS
                or item.seq != expect  # type: ignore[attr-defined]
                or item.session_id != pinned  # type: ignore[attr-defined]
            ):
                break
            expect += 1
        count = expect - following
        if count:
            self.tracker.receive_next(count)
            self._delivered(count)
        return count

    def connection_ended(self, cut: bool) -> Outcome:
        """The connection's bytes ended (``cut``: in the middle of a line) before ``final``."""
        too_long = self._too_long
        if too_long is not None and self._fresh:
            # A replay that brought nothing new but an over-long line before
            # ending: that line is the missing event (a big final, often).
            return self._line_too_long(too_long)
        where = " in the middle of a line" if cut else ""
        return Reconnect(f"the stream ended{where} before the final event")

    def give_up(self, reason: str, cause: Exception | None = None) -> GiveUp:
        """A :class:`GiveUp` with a :class:`StreamFailedError` that counts what was delivered."""
        return GiveUp(
            reason,
            StreamFailedError(
                reason, cause=cause, events_delivered=self.delivered, last_seq=self.last_seq
            ),
        )

    def disconnected(self, reconnect: Reconnect) -> float | GiveUp:
        """The connection ended: seconds to wait before :meth:`retry`, or a GiveUp."""
        # A server that said how long to wait (Retry-After on a 429 or 503) is
        # not asked again sooner, within the backoff's cap.
        retry_after = getattr(reconnect.cause, "retry_after", None)
        wait_ms = retry_after * 1000 if isinstance(retry_after, int | float) else 0
        self.machine.on_disconnected(reconnect.reason, wait_ms=wait_ms)
        pending = self.machine.pending_retry
        retries = self.machine.config.max_retries
        if pending is None:
            return self.give_up(
                f"gave up after {retries} retries: {reconnect.reason}", reconnect.cause
            )
        logger.info(
            "event stream: retrying in %g s (attempt %d/%s): %s",
            pending.delay_seconds,
            pending.attempt,
            "unlimited" if retries is None else retries,
            reconnect.reason,
        )
        if self._on_retry is not None:
            cause = reconnect.cause
            error = RetryableConnectError(reconnect.reason) if cause is None else cause
            self._on_retry(pending.attempt, pending.delay_seconds, error)
        return pending.delay_seconds

    def retry(self) -> None:
        """The backoff delay has passed: the next connection is about to be made."""
        self._resume_from = self.next_seq
        self.machine.fire_retry()

    def finish(self, outcome: Finished | GiveUp) -> None:
        """The stream is over (closed, or failed with ``outcome``)."""
        if isinstance(outcome, GiveUp):
            logger.info("event stream: gave up: %s", outcome.reason)
            self.machine.on_fatal_error(outcome.reason)
        elif self.machine.state not in (ConnectionState.CLOSED, ConnectionState.FAILED):
            self.machine.close()

    def _delivered(self, count: int) -> None:
        self.delivered += count
        if self._fresh:
            self._fresh = False
            if self._resume_from is not None:
                logger.info("event stream: resumed at seq %d", self._resume_from)
                self._resume_from = None
            self.machine.on_connected()  # on_state may raise: the events count all the same

    def _on_machine_event(self, event: ReconnectionEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)
        if isinstance(event, StateChangeEvent) and self._on_state is not None:
            self._on_state(event.state)

    def _on_gap(self, start: int, end: int) -> Verdict | Outcome:
        if not self._fresh:
            # A hole in a live stream: ask for a replay from the hole before
            # going on, so that order holds.
            return Reconnect(f"events {start}..{end} were skipped; asking for a replay")
        # This connection is a replay from ``start``, and it skips it anyway.
        if not self.allow_gaps:
            if self._too_long is not None:  # the missing event is most likely that line
                return self._line_too_long(self._too_long)
            error = SequenceGapError(
                start, end, events_delivered=self.delivered, last_seq=self.last_seq
            )
            return GiveUp(f"events {start}..{end} are missing", error)
        logger.warning("event stream: events %d..%d are missing; going on without them", start, end)
        return NEW

    def _line_too_long(self, line: LineError) -> GiveUp:
        error = LineTooLongError(
            line.line, self.max_line_bytes, events_delivered=self.delivered, last_seq=self.last_seq
        )
        return GiveUp(f"line {line.line} was longer than max_line_bytes", error)

    def _plaintext_refused(self, event: ParsedEvent, line: int | None) -> GiveUp:
        error = EnvelopeError(
            f"Plaintext {event.type} event (seq {event.seq}) on line {line} refused: "
            f"this stream is encrypted, so every line must be an envelope of its session",
            EnvelopeErrorReason.PLAINTEXT_REFUSED,
        )
        return self.give_up(f"a plaintext event on an encrypted stream: {error.message}", error)


# --- buffering


class EventBuffer(Generic[T]):
    """Holds at most ``max_size`` items in arrival order; a full buffer refuses more.

    Nothing is ever evicted: losing the oldest events silently would break the
    sequence guarantees, so the caller decides what a refusal means.

    >>> buf: EventBuffer[str] = EventBuffer(max_size=2)
    >>> buf.add("a"), buf.add("b"), buf.add("c")
    (True, True, False)
    >>> buf.drain(), len(buf)
    (['a', 'b'], 0)
    """

    def __init__(self, max_size: int = 1000) -> None:
        check_number("max_size", max_size, integer=True)
        self._max_size = max_size
        self._items: list[T] = []

    @property
    def max_size(self) -> int:
        """The capacity."""
        return self._max_size

    def add(self, event: T) -> bool:
        """Append ``event``; returns False (and keeps nothing) when the buffer is full."""
        if len(self._items) >= self._max_size:
            return False
        self._items.append(event)
        return True

    def get_all(self) -> list[T]:
        """The buffered items, oldest first (a copy; the buffer is unchanged)."""
        return list(self._items)

    def drain(self) -> list[T]:
        """Remove and return every buffered item, oldest first."""
        items, self._items = self._items, []
        return items

    def is_full(self) -> bool:
        """True when :meth:`add` would refuse (always for ``max_size=0``)."""
        return len(self._items) >= self._max_size

    def clear(self) -> None:
        """Drop every buffered item."""
        self._items.clear()

    def __len__(self) -> int:
        """How many items are buffered."""
        return len(self._items)
