"""The resumable event stream: every event of a session exactly once, across reconnects.

:func:`open_event_stream` connects through a *connector* (a function that
opens one connection and yields its bytes), parses the NDJSON, opens
encrypted envelopes, drops events it has already delivered, and reconnects
with backoff, asking the server to resume after the last event delivered,
until the session's ``final`` event.

The reference's client asks for the replay with ``?from=N`` while its broker
reads ``?fromSeq=N``, and keeps no dedupe, so each reconnect re-delivers the
whole session. Here the connector is told where to resume (see
:func:`~enclave_stream.reconnect.httpx_connector.httpx_connector` for the
broker's ``fromSeq``), and whatever the server sends again is dropped.
"""

from __future__ import annotations

__all__ = ["Connector", "EnvelopeOpener", "ResumableEventStream", "open_event_stream"]

import operator
from collections.abc import Callable, Iterator
from types import TracebackType

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from ..events import StreamEvent
from ..ndjson import DEFAULT_MAX_LINE_BYTES
from ..streams import ErrorHandler
from ._follow import BatchQueue, Follower
from .connector import Connector, EnvelopeOpener
from .sequence import SequenceGap
from .state import DEFAULT_RECONNECTION_CONFIG, ConnectionState, ReconnectionConfig

# How many batches (one per chunk received) may wait for a consumer busy
# elsewhere: enough to overlap parsing with consuming, small enough that a
# slow consumer stops the reader, and with it the socket reads, at once.
_BUFFERED_BATCHES = 2
# How many may wait for a consumer that was woken for the first of them and
# has not run yet (see BatchQueue): room for the chunks of a socket read or
# two (on trio the reader may get two turns before the consumer's comes).
_BUFFERED_BATCHES_WOKEN = 5


class ResumableEventStream:
    """The events of one session, each exactly once and in order, across reconnects.

    Made by :func:`open_event_stream` (which documents the arguments); use it
    as ``async with ... as events: async for event in events: ...``. The
    ``async with`` block owns the task that reads the connections; leaving it
    (also by ``break``, an exception or cancellation) closes the connection,
    and no task outlives it.
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
        retry_if: Callable[[Exception], bool] | None = None,
        allow_gaps: bool = False,
        on_error: ErrorHandler | None = None,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    ) -> None:
        self._follower = Follower(
            connect,
            config=config,
            heartbeat_timeout_ms=heartbeat_timeout_ms,
            session=session,
            require_encryption=require_encryption,
            deadline_ms=deadline_ms,
            on_state=on_state,
            retry_if=retry_if,
            allow_gaps=allow_gaps,
            on_error=on_error,
            max_line_bytes=max_line_bytes,
        )
        self._queue: BatchQueue | None = None
        self._task_group: TaskGroup | None = None
        self._reader_scope = anyio.CancelScope()
        self._batch: list[StreamEvent] = []
        # Where the loop is in the batch: a list iterator, cheaper per event
        # than an index, and its length hint is exactly how many are left.
        self._cursor: Iterator[StreamEvent] = iter(self._batch)
        self._taken = 0  # events in the batches before the current one

    @property
    def state(self) -> ConnectionState:
        """The connection state (``connected`` once a connection delivers a new event)."""
        return self._follower.machine.state

    @property
    def last_seq(self) -> int | None:
        """The seq of the last event read and passed on (it may still wait in the buffer)."""
        return self._follower.last_seq

    @property
    def events_delivered(self) -> int:
        """How many events the ``async for`` loop has received so far."""
        return self._taken + len(self._batch) - operator.length_hint(self._cursor)

    @property
    def gaps(self) -> list[SequenceGap]:
        """The gaps accepted with ``allow_gaps=True`` (the first 100), oldest first."""
        return self._follower.gaps

    def __aiter__(self) -> ResumableEventStream:
        return self

    async def __anext__(self) -> StreamEvent:
        # No checkpoint per event: the consumer yields to the event loop
        # whenever it waits for the reader.
        for event in self._cursor:
            return event
        return await self._next_batch()

    async def _next_batch(self) -> StreamEvent:
        queue = self._queue
        if queue is None:
            raise RuntimeError("use the event stream inside its `async with` block")
        # A batch already waiting is taken without a trip through the event
        # loop: the reader is ahead by a few batches at most.
        batch = await queue.get()
        if batch is None:
            # The end; closed by aclose() or on leaving the block, the stream
            # just stops.
            failure = None if queue.closed else self._follower.failure
            if failure is not None:
                raise failure
            raise StopAsyncIteration
        self._taken += len(self._batch)
        self._batch = batch
        self._cursor = cursor = iter(batch)
        return next(cursor)  # batches are never empty

    async def aclose(self) -> None:
        """Stop reading and close the connection now; iteration then ends."""
        self._reader_scope.cancel()
        self._taken = self.events_delivered
        self._batch = []
        self._cursor = iter(self._batch)
        if self._queue is not None:
            self._queue.close()
        await anyio.lowlevel.checkpoint()

    async def __aenter__(self) -> ResumableEventStream:
        if self._task_group is not None or self._queue is not None:
            raise RuntimeError("an event stream can be entered only once")
        queue = self._queue = BatchQueue(_BUFFERED_BATCHES, _BUFFERED_BATCHES_WOKEN)
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        task_group.start_soon(self._read, queue, name="ResumableEventStream reader")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        task_group, self._task_group = self._task_group, None
        if task_group is None:
            raise RuntimeError("ResumableEventStream.__aexit__ called without __aenter__")
        self._reader_scope.cancel()
        # The reader keeps its errors for the consumer, so the group has
        # nothing to report but cancellation. Hand it only a cancellation:
        # any other exception would come out wrapped in an ExceptionGroup.
        if exc is not None and not isinstance(exc, anyio.get_cancelled_exc_class()):
            exc_type, exc, tb = None, None, None
        try:
            await task_group.__aexit__(exc_type, exc, tb)
        finally:
            if self._queue is not None:
                self._queue.close()
            machine = self._follower.machine
            if machine.state not in (ConnectionState.CLOSED, ConnectionState.FAILED):
                machine.close()
        return None

    async def _read(self, queue: BatchQueue) -> None:
        with self._reader_scope:
            await self._follower.run(queue)


def open_event_stream(
    connect: Connector,
    *,
    config: ReconnectionConfig = DEFAULT_RECONNECTION_CONFIG,
    heartbeat_timeout_ms: float | None = 30_000,
    session: EnvelopeOpener | None = None,
    require_encryption: bool = True,
    deadline_ms: float | None = None,
    on_state: Callable[[ConnectionState], object] | None = None,
    retry_if: Callable[[Exception], bool] | None = None,
    allow_gaps: bool = False,
    on_error: ErrorHandler | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> ResumableEventStream:
    """Follow a session's event stream to its ``final`` event, reconnecting as needed.

    Use it as an async context manager, and iterate::

        async with httpx.AsyncClient() as client:
            connect = httpx_connector(client, f"{broker}/sessions/{sid}/stream")
            async with open_event_stream(connect, session=encrypted_session) as events:
                async for event in events:
                    ...

    Each connection is made with ``connect(from_seq)``: ``from_seq`` is None
    until an event has been delivered, then ``last_seq + 1``. Lines are parsed
    as NDJSON; ``enc`` envelopes are opened with ``session``; events already
    delivered (a replay that starts too early, a resent line) are dropped, so
    the loop sees each sequence number at most once, in increasing order. The
    stream ends after the ``final`` event, which is delivered.

    Reconnection: a connection is retried, after the backoff of ``config``,
    when it fails with a transport error (``OSError``, anyio's
    ``BrokenResourceError``/``EndOfStream``/``IncompleteRead``, a
    :class:`~enclave_stream.reconnect.RetryableConnectError`), when it ends
    before ``final``, and when no new event of the session arrives for
    ``heartbeat_timeout_ms`` (connecting included; a heartbeat event counts,
    while bytes, bad lines and events already delivered do not; time spent
    waiting for a slow consumer does not count). ``retry_if(error)`` decides
    for other errors, which are fatal without it; a
    :class:`~enclave_stream.reconnect.FatalConnectError` always is.
    **The retry count resets once a connection delivers a new event**
    (not when it merely connects), so a long stream's later drops start again
    at the initial delay, while a server that keeps accepting connections and
    dropping them before anything new arrives exhausts ``config.max_retries``.

    Gaps: if a connection skips sequence numbers, the stream reconnects to ask
    for a replay from the first missing one; if that replay skips them too,
    the iteration raises :class:`~enclave_stream.reconnect.SequenceGapError`,
    or with ``allow_gaps=True`` goes on (see ``events.gaps``).

    Encryption and session: with ``session`` (or a connector whose own
    handshake encrypts the stream, like an encrypting ``broker_connector``,
    which then opens the envelopes itself), every line must be an envelope
    of that session; a plaintext event ends the stream with an
    :class:`~enclave_stream.crypto.EnvelopeError` (reason
    ``plaintext_refused``, with the event's type, seq and line) as the
    failure's cause. The first event fixes the session id: an event of another
    session raises :class:`~enclave_stream.reconnect.SessionMismatchError`.

    Failure: giving up (a fatal error, retries exhausted, an envelope that
    cannot be opened, one that arrives with no ``session``, a plaintext event
    on an encrypted stream, another session's event, the overall deadline)
    raises :class:`~enclave_stream.reconnect.StreamFailedError` from the
    loop, after the events received before it; it says why and how many
    events were delivered. An event missing because its line exceeded
    ``max_line_bytes`` raises
    :class:`~enclave_stream.reconnect.LineTooLongError`, which says so. An
    exception raised by ``on_state``, ``on_error`` or ``retry_if`` ends the
    stream and is raised from the loop as it is.

    Args:
        connect: opens one connection; see :data:`Connector`.
        config: retries and backoff.
        heartbeat_timeout_ms: the longest silence allowed on a connection;
            None waits forever.
        session: opens ``enc`` envelopes (an ``EncryptedSession``).
        require_encryption: with ``session``, refuse plaintext events (the
            default). ``False`` lets plaintext events through an encrypted
            stream: for debugging a mixed stream only, never in production,
            since anyone on the path could then inject events.
        deadline_ms: the longest the whole stream may take, reconnects
            included; None (the default) has no limit.
        on_state: called with each new :class:`ConnectionState`, from the
            reader task: ``connecting``, ``connected`` (first new event),
            ``reconnecting``, ``failed``, ``closed``.
        retry_if: classifies errors that are neither transport nor connector errors.
        allow_gaps: go on past events that even a replay does not have.
        on_error: gets each bad line as a :class:`~enclave_stream.LineError`;
            without it they are logged on the ``enclave_stream`` logger.
        max_line_bytes: longest line accepted; longer ones are reported and
            skipped without being buffered.

    The stream reads ahead by a few received chunks at most (two past the
    one being iterated while the loop's body is busy elsewhere); a slow
    consumer slows the reads down (backpressure).
    """
    return ResumableEventStream(
        connect,
        config=config,
        heartbeat_timeout_ms=heartbeat_timeout_ms,
        session=session,
        require_encryption=require_encryption,
        deadline_ms=deadline_ms,
        on_state=on_state,
        retry_if=retry_if,
        allow_gaps=allow_gaps,
        on_error=on_error,
        max_line_bytes=max_line_bytes,
    )
