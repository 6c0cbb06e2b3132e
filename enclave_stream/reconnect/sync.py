"""The synchronous driver of the resume core: every event once, in order, without an event loop.

:func:`follow_event_stream` is :class:`~enclave_stream.reconnect.ResumableEventStream`
for scripts and synchronous services: the same :class:`ResumeCore` decides
(order, duplicates, gaps, session pinning, which seq to ask for, backoff);
this module only reads the bytes and sleeps.
"""

from __future__ import annotations

__all__ = ["SyncConnector", "follow_event_stream"]

import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import TypeAlias

from .._options import check_number
from ..errors import LineError
from ..events import EncryptedEnvelope, StreamEvent
from ..ndjson import (
    DEFAULT_MAX_LINE_BYTES,
    ErrorHandler,
    FeedResult,
    Judged,
    NdjsonStreamParser,
    report_line_error,
)
from .client import EnvelopeOpener, is_retryable
from .machine import (
    DEFAULT_RECONNECTION_CONFIG,
    ConnectionState,
    ReconnectionConfig,
    ReconnectionEvent,
)
from .resume import DROP, FINISHED, NEW, Finished, GiveUp, Outcome, Reconnect, ResumeCore

SyncConnector: TypeAlias = Callable[[int | None], AbstractContextManager[Iterable[bytes]]]
"""``connect(from_seq)``: a context manager whose value is the response's bytes.

``from_seq`` is None on the first connection, else the first seq wanted.
Silence is bounded by the connector (a read timeout: ``httpx_sync_connector``
sets one), as a synchronous reader cannot watch the clock while it waits.
"""


def follow_event_stream(
    connect: SyncConnector,
    *,
    config: ReconnectionConfig = DEFAULT_RECONNECTION_CONFIG,
    session: EnvelopeOpener | None = None,
    require_encryption: bool = True,
    on_state: Callable[[ConnectionState], object] | None = None,
    on_event: Callable[[ReconnectionEvent], object] | None = None,
    retry_if: Callable[[Exception], bool] | None = None,
    allow_gaps: bool = False,
    on_error: ErrorHandler | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    from_seq: int | None = None,
    on_retry: Callable[[int, float, Exception], object] | None = None,
    deadline_ms: float | None = None,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[StreamEvent]:
    """Yield every event of a stream once, in order, to ``final``, reconnecting as needed.

    The options mean what they mean for
    :class:`~enclave_stream.reconnect.ResumableEventStream`; the retries sleep
    with ``sleep``. Closing the iterator (``break`` out of a ``for`` loop
    closes it when it is collected; ``contextlib.closing`` does it at once)
    closes the connection.

    ``deadline_ms`` bounds the whole stream, by ``clock`` (seconds): it is
    checked as each chunk arrives and before each retry (a retry that would
    start past it is not waited for), so a read that blocks overruns it by
    at most the connector's read timeout.

    Raises:
        StreamFailedError: the stream gave up (retries exhausted, a fatal
            status, a gap, another session's event, an envelope that does
            not open), with ``events_delivered`` and ``last_seq``.
    """
    core = ResumeCore(
        config,
        allow_gaps=allow_gaps,
        refuse_plaintext=session is not None and require_encryption,
        max_line_bytes=max_line_bytes,
        on_state=on_state,
        on_event=on_event,
        from_seq=from_seq,
        on_retry=on_retry,
    )
    deadline = math.inf
    if deadline_ms is not None:
        deadline = clock() + check_number("deadline_ms", deadline_ms, positive=True) / 1000
    late = f"the deadline of {deadline_ms:g} ms passed" if deadline_ms is not None else ""

    def late_by() -> GiveUp | None:
        return core.give_up(late) if clock() >= deadline else None

    outcome: Finished | GiveUp = FINISHED
    try:
        core.connect()
        while True:
            ended: list[Outcome] = []
            yield from _connection(connect, core, session, on_error, retry_if, ended, late_by)
            result = ended[0]
            if isinstance(result, Reconnect) and clock() >= deadline:
                result = core.give_up(late, result.cause)
            if not isinstance(result, Reconnect):
                outcome = result
                break
            delay = core.disconnected(result)
            if isinstance(delay, GiveUp):
                outcome = delay
                break
            if clock() + delay >= deadline:
                outcome = core.give_up(late, result.cause)
                break
            sleep(delay)
            core.retry()
    finally:
        core.finish(outcome)
    if isinstance(outcome, GiveUp):
        raise outcome.error


def _connection(
    connect: SyncConnector,
    core: ResumeCore,
    session: EnvelopeOpener | None,
    on_error: ErrorHandler | None,
    retry_if: Callable[[Exception], bool] | None,
    ended: list[Outcome],
    late_by: Callable[[], GiveUp | None],
) -> Iterator[StreamEvent]:
    """Read one connection to its end, yielding its new events; its outcome goes to ``ended``."""
    core.connection_opened()
    parser = NdjsonStreamParser(max_line_bytes=core.max_line_bytes)
    try:
        with connect(core.next_seq) as chunks:
            for chunk in chunks:
                overdue = late_by()
                if overdue is not None:
                    ended.append(overdue)
                    return
                found = parser.feed(chunk)
                if found:
                    yield from _pass_on(found, found.line_numbers(), core, session, on_error, ended)
                    if ended:
                        return
            found = parser.flush()
            # Text after the last newline is a last line sent without its
            # newline, or what a cut connection left of a line: take a whole
            # event, but do not report a fragment.
            cut = any(isinstance(item, LineError) for item in found)
            if found and not cut:
                yield from _pass_on(found, found.line_numbers(), core, session, on_error, ended)
            if not ended:
                ended.append(core.connection_ended(cut))
    except Exception as exc:
        if not ended:  # an error while closing after a decision changes nothing
            described = f"{type(exc).__name__}: {exc}"
            if is_retryable(exc, retry_if):
                ended.append(Reconnect(described, exc))
            else:
                ended.append(core.give_up(f"fatal error: {described}", exc))


def _pass_on(
    items: FeedResult[Judged],
    lines: list[int],
    core: ResumeCore,
    session: EnvelopeOpener | None,
    on_error: ErrorHandler | None,
    ended: list[Outcome],
) -> Iterator[StreamEvent]:
    """Yield the new events of ``items`` as the core judges them; an outcome goes to ``ended``."""
    for item, line in zip(items, lines, strict=True):
        try:
            if isinstance(item, LineError):
                core.line_error(item)
                report_line_error(item, on_error, False)
                continue
            verdict = core.check(item, line)
        except Exception as exc:
            # A callback (on_error, on_state, on_event) failed: not the
            # transport's doing, so not retried; its error is raised.
            ended.append(GiveUp(f"{type(exc).__name__}: {exc}", exc))
            return
        if verdict is DROP:
            continue
        if verdict is not NEW:
            ended.append(verdict)
            return
        if isinstance(item, EncryptedEnvelope):
            if session is None:
                ended.append(
                    core.give_up(f"received an encrypted event (seq {item.seq}) but no session")
                )
                return
            try:
                event: StreamEvent = session.open(item)
            except Exception as exc:
                ended.append(
                    core.give_up(f"could not open the encrypted event with seq {item.seq}", exc)
                )
                return
        else:
            event = item
        try:
            final = core.accept(item, event)
        except Exception as exc:  # a callback failed, as above
            ended.append(GiveUp(f"{type(exc).__name__}: {exc}", exc))
            return
        yield event
        if final:
            ended.append(FINISHED)
            return
