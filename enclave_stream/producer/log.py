"""The replay log: every event of a session, numbered, bounded, and followed live.

Each reader starts from its own ``seq`` (``?fromSeq=N``, docs/protocol.md and
docs/compatibility.md P1, P8). Only waiting is asynchronous (one anyio event
per log, set by every append); a log belongs to one event loop: append from
that loop's thread.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_EVENTS",
    "EventEncodeFunction",
    "EventLog",
    "EventStore",
    "LogEntry",
    "LogReader",
    "NdjsonBody",
]

import weakref
from collections.abc import Callable
from typing import Final, NamedTuple, Protocol, cast

import anyio
import anyio.lowlevel
import msgspec

from .._options import check_number
from ..codec import encode_event
from ..errors import LogFullError, ReplayUnavailableError, StreamFinishedError
from ..events import FinalEvent, StreamEvent

DEFAULT_MAX_EVENTS: Final = 10_000
"""How many events an :class:`EventLog` holds by default."""

DEFAULT_MAX_BYTES: Final = 16 * 1024 * 1024
"""How many bytes of encoded lines an :class:`EventLog` holds by default (16 MiB)."""

DEFAULT_CHUNK_BYTES: Final = 64 * 1024
"""The most bytes of lines in one :class:`NdjsonBody` chunk (a longer line is sent whole)."""

EventEncodeFunction = Callable[[StreamEvent], bytes]
"""Turns an event into its wire line, without the newline (``encode_event``, ``seal_line``)."""

# Evicted slots are cut off the list once at least this many have piled up
# (and no fewer than the entries held): amortized O(1) per eviction.
_COMPACT_AFTER: Final = 4096

# What a cut connection may have lost after the server sent it: the
# kernels' socket buffers on both ends and a proxy's, generously.
_IN_FLIGHT_BYTES: Final = 4 * 1024 * 1024


class LogEntry(NamedTuple):
    """One stored event: its number, the event, and the bytes sent for it.

    ``line`` is what goes on the wire, ``\\n`` included: the event's JSON, or
    the JSON of its ``enc`` envelope when the stream is encrypted (sealed once,
    when appended). ``event`` is always the plaintext event.

    >>> from enclave_stream import StdoutEvent
    >>> from enclave_stream.events import StdoutPayload
    >>> entry = EventLog().append(StdoutEvent(session_id="s_1", seq=0, payload=StdoutPayload("hi")))
    >>> entry.seq
    1
    >>> entry.line
    b'{"protocolVersion":2,"sessionId":"s_1","seq":1,"type":"stdout","payload":{"chunk":"hi"}}\\n'
    """

    seq: int
    event: StreamEvent
    line: bytes


class LogReader(Protocol):
    """A reader attached to a log (:class:`NdjsonBody` is one): where it is."""

    @property
    def next_seq(self) -> int:
        """The ``seq`` of the next event it will send (it has sent every one before)."""
        ...


class EventStore(Protocol):
    """What an :class:`~enclave_stream.producer.EventStream` needs from its log.

    :class:`EventLog` is the in-memory implementation. Another store must keep
    the same rules: ``append`` numbers events 1, 2, 3, ... and refuses any
    event after ``final`` (or after ``close``); ``read`` and ``check`` raise
    :class:`ReplayUnavailableError` for a ``seq`` that was appended but is no
    longer held; ``wait_for`` returns once the event with that ``seq`` can be
    read or nothing more will ever be appended. ``read`` may hold back the
    newest events (``enclave_stream.redis`` serves a line only once Redis
    holds it): a finished store's readers end at ``next_seq``. An event that a reader
    attached with ``hold=True`` has not sent is never dropped: past the
    store's bound, ``append`` raises
    :class:`~enclave_stream.errors.LogFullError` instead (never for ``final``).

    A store is given to a stream through a factory that receives the
    encoding function (which seals, for an encrypted stream)::

        stream = EventStream(store_factory=lambda encode: EventLog(encode=encode))
    """

    @property
    def next_seq(self) -> int:
        """The ``seq`` the next appended event gets."""
        ...

    @property
    def finished(self) -> bool:
        """True once ``final`` was appended or the store was closed."""
        ...

    def append(self, event: StreamEvent) -> LogEntry:
        """Number, encode and store ``event``; returns the stored entry."""
        ...

    def close(self) -> None:
        """Accept no more events; readers end after the last stored one."""
        ...

    def check(self, from_seq: int) -> None:
        """Raise :class:`ReplayUnavailableError` unless a replay from ``from_seq`` is complete."""
        ...

    def read(self, from_seq: int, *, max_bytes: int | None = None) -> list[LogEntry]:
        """The stored entries with ``seq >= from_seq``, oldest first, without waiting."""
        ...

    async def wait_for(self, seq: int) -> None:
        """Wait until the entry ``seq`` is stored, or the store is finished."""
        ...

    async def wait_finished(self) -> None:
        """Wait until the store is finished."""
        ...

    def attach(self, reader: LogReader, *, hold: bool = False) -> None:
        """Count ``reader`` in :attr:`lag` until detached; ``hold``: keep what it has not sent."""
        ...

    def detach(self, reader: LogReader) -> None:
        """Forget ``reader`` (idempotent)."""
        ...

    @property
    def lag(self) -> int:
        """How many events the slowest attached reader has not sent (0 without readers)."""
        ...

    async def wait_lag(self, max_lag: int) -> None:
        """Wait until :attr:`lag` is at most ``max_lag``."""
        ...


class EventLog:
    """An in-memory replay log, bounded in events and bytes.

    When an append takes the log past ``max_events`` or ``max_bytes`` (the
    sum of the lines' lengths, newlines included), the oldest events are
    dropped until it fits again; the newest event is always kept, however
    large. A read from a dropped ``seq`` raises
    :class:`~enclave_stream.producer.ReplayUnavailableError`, so a client
    that asks for it fails loudly instead of silently skipping events.

    A reader attached with ``hold=True`` (the creator's response of a
    session) loses nothing: events it has not sent are not dropped, past
    ``max_events`` too. ``max_bytes`` is then the budget: an append that
    cannot fit without dropping one raises
    :class:`~enclave_stream.errors.LogFullError` (a ``final`` is always
    stored). When a holder ends (its client may not have what was sent
    last: a cut is learned late), what it did not send and the last 4 MiB it
    sent stay for that client's resume, within ``max_bytes`` only: past it,
    the oldest are dropped again and the producer goes on. Attached readers also give
    producers backpressure: :attr:`lag` and :meth:`wait_lag`.

    >>> from enclave_stream import StdoutEvent
    >>> from enclave_stream.events import StdoutPayload
    >>> log = EventLog(max_events=2)
    >>> for text in ("a", "b", "c"):
    ...     entry = log.append(StdoutEvent(session_id="s_1", seq=0, payload=StdoutPayload(text)))
    >>> entry.seq, log.first_seq, len(log)
    (3, 2, 2)
    >>> [entry.event.payload.chunk for entry in log.read(2)]
    ['b', 'c']
    >>> try:
    ...     log.read(1)
    ... except ReplayUnavailableError as error:
    ...     print(error)
    events from seq 1 are no longer held (the oldest held is 2)

    Args:
        max_events: the most events held.
        max_bytes: the most bytes of encoded lines held.
        encode: turns an event into its line (no newline); by default the
            validating :func:`~enclave_stream.codec.encode_event`. An
            encrypted stream passes its session's ``seal_line``.
    """

    __slots__ = (
        "_bytes",
        "_changed",
        "_drained",
        "_encode",
        "_entries",
        "_finished",
        "_first_seq",
        "_head",
        "_holders",
        "_max_bytes",
        "_max_events",
        "_next_seq",
        "_readers",
        "_resume_from",
        "_waiting",
    )

    def __init__(
        self,
        *,
        max_events: int = DEFAULT_MAX_EVENTS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        encode: EventEncodeFunction | None = None,
    ) -> None:
        self._max_events = check_number("max_events", max_events, minimum=1, integer=True)
        self._max_bytes = check_number("max_bytes", max_bytes, minimum=1, integer=True)
        self._encode: EventEncodeFunction = encode_event if encode is None else encode
        # _entries[_head:] are the held entries; slots before _head were
        # evicted (set to None) and are cut off now and then.
        self._entries: list[LogEntry | None] = []
        self._head = 0
        self._first_seq = 1  # seq of the oldest held entry (next_seq when empty)
        self._next_seq = 1
        self._bytes = 0
        self._finished = False
        self._changed: anyio.Event | None = None  # made by the first waiter
        self._waiting = 0
        # Weak: a response dropped without ending (its client gone) leaves
        # nothing behind in the log.
        self._readers: weakref.WeakSet[LogReader] = weakref.WeakSet()
        self._holders: weakref.WeakSet[LogReader] = weakref.WeakSet()
        # Where a holder that went away early stopped: kept for its resume.
        self._resume_from: int | None = None
        self._drained: anyio.Event | None = None  # made by the first wait_lag

    # --- state ----------------------------------------------------------------

    @property
    def next_seq(self) -> int:
        """The ``seq`` the next appended event gets (1 for the first)."""
        return self._next_seq

    @property
    def first_seq(self) -> int:
        """The ``seq`` of the oldest event held (``next_seq`` while empty)."""
        return self._first_seq

    @property
    def finished(self) -> bool:
        """True once ``final`` was appended or :meth:`close` was called."""
        return self._finished

    @property
    def max_bytes(self) -> int:
        """The most bytes of lines it holds (the newest line is kept, however large)."""
        return self._max_bytes

    @property
    def size_bytes(self) -> int:
        """The bytes of the lines held (newlines included)."""
        return self._bytes

    @property
    def waiting(self) -> int:
        """How many readers are waiting for the next event right now."""
        return self._waiting

    def __len__(self) -> int:
        return len(self._entries) - self._head

    def __repr__(self) -> str:
        return (
            f"<EventLog held={len(self)} seq={self._first_seq}..{self._next_seq - 1} "
            f"bytes={self._bytes} finished={self._finished}>"
        )

    # --- writing --------------------------------------------------------------

    def append(self, event: StreamEvent) -> LogEntry:
        """Number ``event`` with :attr:`next_seq`, encode it, store it, and wake the readers.

        The event's own ``seq`` is replaced. Appending ``final`` finishes the log.

        Raises:
            StreamFinishedError: the log is finished.
            EventValidationError: the event breaks the schema (nothing is stored,
                no ``seq`` is used up); or whatever ``encode`` raises.
        """
        if self._finished:
            raise StreamFinishedError(event.session_id)
        seq = self._next_seq
        if event.seq != seq:
            event = msgspec.structs.replace(event, seq=seq)
        line = self._encode(event) + b"\n"
        final = type(event) is FinalEvent
        if self._holders or self._resume_from is not None:
            self._make_room(event.session_id, len(line), final)
        entry = LogEntry(seq, event, line)
        entries = self._entries
        entries.append(entry)
        self._next_seq = seq + 1
        self._bytes += len(line)
        if final:
            self._finished = True
        self._evict()
        self._wake()
        return entry

    def close(self) -> None:
        """Accept no more events: readers end after the last stored one (idempotent)."""
        self._finished = True
        self._wake()

    def _make_room(self, session_id: str, size: int, final: bool) -> None:
        """Make room for a line of ``size`` bytes, or refuse it if a holder's events fill it."""
        keep_from = self._keep_from()
        self._evict(keep_from, reserve=size)
        if final or self._bytes + size <= self._max_bytes or keep_from >= self._next_seq:
            return
        if self._resume_from is not None:
            # What a holder that went away did not send is kept within the
            # budget only: past it, those events go (its resume gets 410),
            # and the producer goes on.
            self._resume_from = None
            self._make_room(session_id, size, final)
            return
        raise LogFullError(
            session_id,
            held_bytes=self._bytes,
            max_bytes=self._max_bytes,
            first_unsent_seq=max(keep_from, 1),
        )

    def _keep_from(self) -> int:
        """The oldest seq a holding reader has not sent (``next_seq``: none)."""
        held = min((reader.next_seq for reader in self._holders), default=self._next_seq)
        resume_from = self._resume_from
        return held if resume_from is None else min(held, resume_from)

    def _evict(self, keep_from: int | None = None, *, reserve: int = 0) -> None:
        # Drop the oldest entries while over a bound, counting a line of
        # ``reserve`` bytes about to be appended; never the newest entry,
        # nor one a holder has not sent.
        if keep_from is None:
            held = self._holders or self._resume_from is not None
            keep_from = self._keep_from() if held else self._next_seq
        entries = self._entries
        head = self._head
        coming = 1 if reserve else 0
        last = min(len(entries) - 1 + coming, head + max(0, keep_from - self._first_seq))
        while head < last and (
            len(entries) - head + coming > self._max_events
            or self._bytes + reserve > self._max_bytes
        ):
            evicted = entries[head]
            assert evicted is not None
            self._bytes -= len(evicted.line)
            entries[head] = None  # the line is freed now, the slot later
            head += 1
        self._first_seq += head - self._head
        if head >= _COMPACT_AFTER and head * 2 >= len(entries):
            del entries[:head]
            head = 0
        self._head = head

    def _wake(self) -> None:
        changed = self._changed
        if changed is not None:
            self._changed = None
            changed.set()

    # --- reading --------------------------------------------------------------

    def check(self, from_seq: int) -> None:
        """Raise unless every event with ``seq >= from_seq`` is still held.

        Raises:
            ReplayUnavailableError: some of them were dropped.
            ValueError: ``from_seq`` is not an integer >= 0.
        """
        check_number("from_seq", from_seq, integer=True)
        # Numbering is contiguous from 1: below first_seq, every number from
        # 1 on was appended and then dropped.
        # Seq 0 asks for the whole session, which starts at 1: name that.
        if from_seq < self._first_seq and self._first_seq > 1:
            raise ReplayUnavailableError(max(from_seq, 1), first_available_seq=self._first_seq)

    def read(self, from_seq: int, *, max_bytes: int | None = None) -> list[LogEntry]:
        """The held entries with ``seq >= from_seq``, oldest first; never waits.

        With ``max_bytes``, stops before the entry that would take the lines
        past it (but returns at least one entry when there is one).

        Raises:
            ReplayUnavailableError: events with ``seq >= from_seq`` were dropped.
            ValueError: ``from_seq`` is not an integer >= 0.
        """
        self.check(from_seq)
        # A reader reads when it moves on: the producer's wait_lag rechecks.
        drained = self._drained
        if drained is not None:
            self._drained = None
            drained.set()
        first = self._first_seq
        # Past the newest entry, start is past the end: nothing yet.
        start = self._head + (max(from_seq, first) - first)
        held = cast("list[LogEntry]", self._entries)  # held slots are never None
        if max_bytes is not None:
            # Copy only what is returned: a replay reads a long log chunk by chunk.
            total = 0
            for index in range(start, len(held)):
                total += len(held[index].line)
                if total > max_bytes and index > start:
                    return held[start:index]
        return held[start:]

    async def wait_for(self, seq: int) -> None:
        """Wait until the entry ``seq`` is stored, or the log is finished.

        Returns at once when it already is. Cancelling the wait is safe: the
        log keeps no state for a reader.
        """
        while seq >= self._next_seq and not self._finished:
            changed = self._changed_event()
            self._waiting += 1
            try:
                await changed.wait()
            finally:
                self._waiting -= 1

    async def wait_finished(self) -> None:
        """Wait until ``final`` is appended or the log is closed (not a :attr:`waiting` reader)."""
        while not self._finished:
            await self._changed_event().wait()

    # --- readers and backpressure ----------------------------------------------

    def attach(self, reader: LogReader, *, hold: bool = False) -> None:
        """Count ``reader`` in :attr:`lag` until detached; ``hold``: drop nothing it has not sent.

        :class:`NdjsonBody` attaches itself when made and detaches when it
        ends; the log holds readers weakly, so a dropped one stops counting.
        """
        self._readers.add(reader)
        if hold:
            self._holders.add(reader)

    def detach(self, reader: LogReader) -> None:
        """Forget ``reader`` (idempotent); a holder's events stay (see the class).

        A holder that goes away without detaching (garbage) holds nothing
        either; what it held is dropped at the next append.
        """
        self._readers.discard(reader)
        if reader in self._holders:
            self._holders.discard(reader)
            # A server learns of a cut connection late, after it has sent
            # into it what the network then lost: whatever its end, what it
            # did not send and what may have been in flight stay for its
            # client's resume (within max_bytes).
            keep = self._in_flight_from(reader.next_seq)
            self._resume_from = keep if self._resume_from is None else min(keep, self._resume_from)
            self._evict()
        drained = self._drained
        if drained is not None:
            self._drained = None
            drained.set()

    def _in_flight_from(self, next_seq: int) -> int:
        """The oldest seq of the held lines before ``next_seq`` that fit in the in-flight window."""
        entries = self._entries
        index = self._head + max(0, min(next_seq, self._next_seq) - self._first_seq)
        total = 0
        while index > self._head:
            entry = entries[index - 1]
            assert entry is not None
            total += len(entry.line)
            if total > _IN_FLIGHT_BYTES:
                break
            index -= 1
        return self._first_seq + (index - self._head)

    @property
    def lag(self) -> int:
        """How many appended events the slowest attached reader has not sent (0 without readers)."""
        slowest = min((reader.next_seq for reader in self._readers), default=self._next_seq)
        # A reader asked for future events or for seq 0 (the whole log, from 1).
        return max(0, self._next_seq - max(slowest, 1))

    async def wait_lag(self, max_lag: int) -> None:
        """Wait until :attr:`lag` is at most ``max_lag`` (readers read or detach).

        Cancelling the wait is safe (wrap it in ``anyio.fail_after`` for a timeout).
        """
        check_number("max_lag", max_lag, integer=True)
        while self.lag > max_lag:
            drained = self._drained
            if drained is None:
                drained = self._drained = anyio.Event()
            await drained.wait()

    def _changed_event(self) -> anyio.Event:
        changed = self._changed
        if changed is None:
            changed = self._changed = anyio.Event()
        return changed


class NdjsonBody:
    """The NDJSON lines of a store from ``from_seq`` on, as chunks of bytes, up to ``final``.

    ``async for chunk in body`` joins the lines that are ready into one chunk
    (at most ``chunk_bytes``, but always one whole line) and waits for more
    when there are none: a response body for anything that sends an async
    iterator of bytes. Availability is checked when the body is made, so a
    response can still answer with an error status. The body holds no task;
    it is attached to the store (weakly: a client that goes away leaves
    nothing behind, and the session goes on for the others) until it ends,
    so the store's :attr:`~EventLog.lag` counts it. With ``hold=True`` the
    store drops none of the events it has not sent (the creator's response
    of a session: it starts at seq 1 however much was appended before its
    first read).

    Raises:
        ReplayUnavailableError: when made, or from the loop if the reader falls
            so far behind that the log drops events it has not sent yet.
        ValueError: ``from_seq`` is not an integer >= 0, or ``chunk_bytes``
            not a positive integer.
    """

    __slots__ = ("__weakref__", "_chunk_bytes", "_closed", "_next", "_store")

    def __init__(
        self,
        store: EventStore,
        from_seq: int | None = None,
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        hold: bool = False,
    ) -> None:
        self._chunk_bytes = check_number("chunk_bytes", chunk_bytes, minimum=1, integer=True)
        start = 0 if from_seq is None else check_number("from_seq", from_seq, integer=True)
        store.check(start)
        self._store = store
        self._next = start
        self._closed = False
        store.attach(self, hold=hold)

    @property
    def next_seq(self) -> int:
        """The ``seq`` of the next line this body will send."""
        return self._next

    def __aiter__(self) -> NdjsonBody:
        return self

    async def __anext__(self) -> bytes:
        store = self._store
        # A reader with lines ready would otherwise never yield to the event
        # loop (a server's send seldom blocks): let the others run.
        await anyio.lowlevel.checkpoint()
        try:
            while not self._closed:
                entries = store.read(self._next, max_bytes=self._chunk_bytes)
                if entries:
                    last = entries[-1]
                    self._next = last.seq + 1
                    if len(entries) == 1:
                        return last.line
                    return b"".join([entry.line for entry in entries])
                # A store that writes elsewhere first (Redis) may hold lines it
                # does not serve yet: finished, it ends after the last one.
                if store.finished and max(self._next, 1) >= store.next_seq:
                    break
                await store.wait_for(self._next)
        except ReplayUnavailableError:
            store.detach(self)
            raise
        store.detach(self)
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """End the body early: it stops counting as a reader of the store."""
        self._closed = True
        self._store.detach(self)
