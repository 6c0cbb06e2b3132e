"""open_event_stream: resume, dedupe, gaps, failures, callbacks, and structured concurrency."""

from __future__ import annotations

import inspect
import logging
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import ByteReceiveStream

from enclave_stream import FailureKind, FinalEvent, LineError, StdoutEvent
from enclave_stream.events import FinalPayload, StdoutPayload, StreamEvent
from enclave_stream.reconnect import (
    ConnectionState,
    ConnectorError,
    DisconnectedEvent,
    FailedEvent,
    FatalConnectError,
    LineTooLongError,
    ReconnectionConfig,
    ReconnectionEvent,
    RetryableConnectError,
    RetryScheduledEvent,
    SequenceGap,
    SequenceGapError,
    SessionMismatchError,
    StreamFailedError,
    is_retryable,
    open_event_stream,
)
from enclave_stream.reconnect.client import ResumableEventStream
from tests.clock import on_virtual_clock
from tests.reconnect.fakes import (
    SESSION_ID,
    FakeSession,
    Raise,
    Refuse,
    ScriptedConnector,
    Sleep,
    Stall,
    consume,
    line,
    make_session,
    replay,
)

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup  # type: ignore[import-not-found, unused-ignore]

pytestmark = pytest.mark.anyio

FAST = ReconnectionConfig(max_retries=3, initial_delay_ms=0, jitter=False)
CUT = Raise(ConnectionResetError("connection reset by peer"))


def lines_of(count: int, start: int = 0) -> list[bytes]:
    return [line(event) for event in make_session(count, start=start)]


async def collect(stream: ResumableEventStream) -> list[StreamEvent]:
    async with stream as events:
        return [event async for event in events]


def seqs(events: list[StreamEvent]) -> list[int]:
    return [event.seq for event in events]


async def test_delivers_every_event_then_stops_after_final() -> None:
    lines = lines_of(5)
    after_final = line(make_session(7)[5])  # a stdout with seq 5, after the final
    connector = ScriptedConnector([[b"".join(lines) + after_final, Stall()]])
    stream = open_event_stream(connector, config=FAST)
    events = await collect(stream)
    assert events == make_session(5)
    assert connector.calls == [None]
    assert connector.open_connections == 0
    assert connector.closed_iterators == 1
    assert stream.state is ConnectionState.CLOSED
    assert stream.events_delivered == 5
    assert stream.last_seq == 4


async def test_resumes_after_the_last_event_and_drops_what_is_sent_again() -> None:
    lines = lines_of(10)
    connector = ScriptedConnector(
        [
            [*lines[:3], lines[3][:7], CUT],  # cut in the middle of line 3
            lambda from_seq: [*lines[1:6], lines[4], CUT],  # starts early, repeats a line
            replay(lines),
        ]
    )
    events = await collect(open_event_stream(connector, config=FAST))
    assert seqs(events) == list(range(10))
    assert connector.calls == [None, 3, 6]


async def test_a_session_starting_at_seq_0_is_delivered_exactly_once() -> None:
    lines = lines_of(4)
    # The resumed connection (from_seq=1) sends seq 0 twice, and then everything.
    connector = ScriptedConnector([[lines[0], CUT], [lines[0], *lines]])
    events = await collect(open_event_stream(connector, config=FAST))
    assert seqs(events) == [0, 1, 2, 3]
    assert connector.calls == [None, 1]


async def test_a_session_may_start_at_any_seq() -> None:
    lines = lines_of(5, start=100)
    connector = ScriptedConnector([[*lines[:2], CUT], [*lines[1:]]])
    events = await collect(open_event_stream(connector, config=FAST))
    assert seqs(events) == [100, 101, 102, 103, 104]
    assert connector.calls == [None, 102]


async def test_a_gap_right_after_seq_0_is_seen() -> None:
    lines = lines_of(6)
    connector = ScriptedConnector([[lines[0], CUT], [lines[0], *lines[3:]]])
    received: list[StreamEvent] = []
    with pytest.raises(SequenceGapError) as caught:
        await consume(open_event_stream(connector, config=FAST), received)
    assert (caught.value.missing_start, caught.value.missing_end) == (1, 2)
    assert caught.value.events_delivered == 1
    assert caught.value.last_seq == 0
    assert seqs(received) == [0]


async def test_allow_gaps_goes_on_and_records_the_gap_after_seq_0() -> None:
    lines = lines_of(6)
    connector = ScriptedConnector([[lines[0], CUT], [lines[0], *lines[3:]]])
    stream = open_event_stream(connector, config=FAST, allow_gaps=True)
    events = await collect(stream)
    assert seqs(events) == [0, 3, 4, 5]
    assert stream.gaps == [SequenceGap(1, 2)]


async def test_a_hole_in_a_live_stream_is_filled_by_a_replay_in_order() -> None:
    lines = lines_of(8)
    connector = ScriptedConnector([[*lines[:3], *lines[5:]], replay(lines)])
    events = await collect(open_event_stream(connector, config=FAST))
    assert seqs(events) == list(range(8))
    assert connector.calls == [None, 3]


async def test_a_hole_that_the_replay_also_skips_is_an_error() -> None:
    lines = lines_of(8)
    connector = ScriptedConnector([[*lines[:3], *lines[5:]], [*lines[5:]]])
    received: list[StreamEvent] = []
    with pytest.raises(SequenceGapError) as caught:
        await consume(open_event_stream(connector, config=FAST), received)
    assert (caught.value.missing_start, caught.value.missing_end) == (3, 4)
    assert caught.value.events_delivered == 3
    assert seqs(received) == [0, 1, 2]
    assert "3..4" in str(caught.value)


async def test_a_fatal_connect_error_stops_at_once_with_the_count() -> None:
    lines = lines_of(8)
    denied = FatalConnectError("HTTP 401 Unauthorized", status_code=401)
    connector = ScriptedConnector([[*lines[:3], CUT], Refuse(denied)])
    received: list[StreamEvent] = []
    states: list[ConnectionState] = []
    with pytest.raises(StreamFailedError) as caught:
        await consume(open_event_stream(connector, config=FAST, on_state=states.append), received)
    error = caught.value
    assert error.cause is denied
    assert error.__cause__ is denied
    assert "401" in str(error)
    assert "3 events delivered" in str(error)
    assert (error.events_delivered, error.last_seq) == (3, 2)
    assert seqs(received) == [0, 1, 2]
    assert connector.calls == [None, 3]
    assert states[-1] is ConnectionState.FAILED


async def test_an_unknown_error_is_fatal_unless_retry_if_says_otherwise() -> None:
    class Flaky(Exception):
        pass

    lines = lines_of(4)
    connector = ScriptedConnector([[lines[0], Raise(Flaky("odd"))]])
    with pytest.raises(StreamFailedError) as caught:
        await collect(open_event_stream(connector, config=FAST))
    assert isinstance(caught.value.cause, Flaky)
    assert connector.calls == [None]

    connector = ScriptedConnector([[lines[0], Raise(Flaky("odd"))], replay(lines)])
    stream = open_event_stream(
        connector, config=FAST, retry_if=lambda error: isinstance(error, Flaky)
    )
    assert seqs(await collect(stream)) == [0, 1, 2, 3]
    assert connector.calls == [None, 1]


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError("refused"),
        TimeoutError("slow"),
        anyio.BrokenResourceError(),
        anyio.EndOfStream(),
        RetryableConnectError("HTTP 503 Service Unavailable", status_code=503),
    ],
    ids=lambda error: type(error).__name__,
)
async def test_transport_errors_are_retried(error: Exception) -> None:
    lines = lines_of(3)
    connector = ScriptedConnector([Refuse(error), [lines[0], Raise(error)], replay(lines)])
    events = await collect(open_event_stream(connector, config=FAST))
    assert seqs(events) == [0, 1, 2]
    assert connector.calls == [None, None, 1]


async def test_retries_run_out_with_the_last_reason_and_cause() -> None:
    refused = ConnectionRefusedError("nobody home")
    connector = ScriptedConnector([Refuse(refused)] * 4)
    with pytest.raises(StreamFailedError) as caught:
        await collect(open_event_stream(connector, config=FAST))
    assert "gave up after 3 retries" in caught.value.reason
    assert "nobody home" in caught.value.reason
    assert caught.value.cause is refused
    assert caught.value.__cause__ is refused
    assert not isinstance(caught.value.__context__, anyio.EndOfStream)  # no plumbing shown
    assert (caught.value.events_delivered, caught.value.last_seq) == (0, None)
    assert len(connector.calls) == 4


async def test_a_stream_that_ends_before_final_is_resumed() -> None:
    lines = lines_of(5)
    connector = ScriptedConnector([lines[:2], [*lines[2:4], lines[4][:10]], replay(lines)])
    reported: list[LineError] = []
    events = await collect(open_event_stream(connector, config=FAST, on_error=reported.append))
    assert seqs(events) == list(range(5))
    assert connector.calls == [None, 2, 4]
    # The fragment a cut left at the end is the cut's doing, not a bad line.
    assert reported == []


async def test_a_last_line_without_newline_is_taken() -> None:
    lines = lines_of(3)
    connector = ScriptedConnector([[*lines[:2], lines[2].rstrip(b"\n")]])
    events = await collect(open_event_stream(connector, config=FAST))
    assert seqs(events) == [0, 1, 2]
    assert connector.calls == [None]


async def test_bad_lines_go_to_on_error_or_the_log(caplog: pytest.LogCaptureFixture) -> None:
    lines = lines_of(3)
    body = [lines[0], b"{not json}\n", lines[1], b'{"seq": 1}\n', lines[2]]
    reported: list[LineError] = []
    events = await collect(
        open_event_stream(ScriptedConnector([body]), config=FAST, on_error=reported.append)
    )
    assert seqs(events) == [0, 1, 2]
    assert [(error.line, error.kind) for error in reported] == [
        (2, FailureKind.JSON),
        (4, FailureKind.VALIDATION),
    ]

    with caplog.at_level(logging.WARNING, logger="enclave_stream"):
        events = await collect(open_event_stream(ScriptedConnector([body]), config=FAST))
    assert seqs(events) == [0, 1, 2]
    assert sum("bad NDJSON line" in r.getMessage() for r in caplog.records) == 2


async def test_an_over_long_line_is_reported_and_skipped() -> None:
    lines = lines_of(3)
    reported: list[LineError] = []
    body = [lines[0], b'{"x":"' + b"y" * 500, b"z" * 500, b'"}\n', *lines[1:]]
    stream = open_event_stream(
        ScriptedConnector([body]), config=FAST, on_error=reported.append, max_line_bytes=256
    )
    assert seqs(await collect(stream)) == [0, 1, 2]
    assert [error.kind for error in reported] == [FailureKind.LINE_TOO_LONG]


async def test_on_state_reports_each_state_change() -> None:
    lines = lines_of(6)
    states: list[ConnectionState] = []
    connector = ScriptedConnector(
        [[*lines[:2], CUT], Refuse(ConnectionResetError()), replay(lines)]
    )
    await collect(open_event_stream(connector, config=FAST, on_state=states.append))
    S = ConnectionState
    assert states == [
        S.CONNECTING,
        S.CONNECTED,
        S.RECONNECTING,
        S.CONNECTING,
        S.RECONNECTING,
        S.CONNECTING,
        S.CONNECTED,
        S.CLOSED,
    ]


async def test_callback_errors_end_the_stream_as_they_are() -> None:
    lines = lines_of(3)

    def fussy(error: LineError) -> None:
        raise KeyError("no bad lines please")

    connector = ScriptedConnector([[lines[0], b"nope\n", *lines[1:]]])
    received: list[StreamEvent] = []
    with pytest.raises(KeyError, match="no bad lines"):
        await consume(open_event_stream(connector, config=FAST, on_error=fussy), received)
    assert seqs(received) == [0]
    assert connector.calls == [None]


class _Bytes(ByteReceiveStream):
    """An anyio byte stream over fixed chunks (a socket's shape, without the socket)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = False

    async def receive(self, max_bytes: int = 65536) -> bytes:
        await anyio.lowlevel.checkpoint()
        if not self.chunks:
            raise anyio.EndOfStream
        return self.chunks.pop(0)

    async def aclose(self) -> None:
        self.closed = True


async def test_a_connector_may_yield_an_anyio_byte_stream() -> None:
    lines = lines_of(4)
    streams = [_Bytes([lines[0], lines[1][:5]]), _Bytes(lines[1:])]

    @asynccontextmanager
    async def connect(from_seq: int | None) -> AsyncIterator[ByteReceiveStream]:
        yield streams.pop(0)

    first, second = streams
    events = await collect(open_event_stream(connect, config=FAST))
    assert seqs(events) == [0, 1, 2, 3]
    assert first.closed
    assert second.closed


# --- encryption -------------------------------------------------------------------


async def test_envelopes_are_opened_once_each_across_resends() -> None:
    sender = FakeSession()
    plain = make_session(12)
    sealed = [line(sender.seal(event)) for event in plain]
    receiver = FakeSession()  # same key; refuses to open a nonce twice
    connector = ScriptedConnector(
        [
            [*sealed[:4], sealed[4][:20], CUT],
            lambda from_seq: [*sealed[:8], sealed[2], CUT],
            replay(sealed),
        ]
    )
    events = await collect(open_event_stream(connector, config=FAST, session=receiver))
    assert events == plain
    assert receiver.open_count == 12
    assert connector.calls == [None, 4, 8]


async def test_an_envelope_without_a_session_is_an_error() -> None:
    sealed = line(FakeSession().seal(make_session(2)[0]))
    with pytest.raises(StreamFailedError, match="no session"):
        await collect(open_event_stream(ScriptedConnector([[sealed]]), config=FAST))


async def test_an_envelope_that_cannot_be_opened_is_an_error() -> None:
    plain = make_session(3)
    good = [line(FakeSession().seal(event)) for event in plain[:1]]
    forged = line(FakeSession(key=bytes(32)).seal(plain[1]))
    received: list[StreamEvent] = []
    with pytest.raises(StreamFailedError, match="could not open the encrypted event with seq 1"):
        await consume(
            open_event_stream(
                ScriptedConnector([[*good, forged]]), config=FAST, session=FakeSession()
            ),
            received,
        )
    assert received == plain[:1]


# --- structured concurrency ----------------------------------------------------


def _task_count() -> int:
    return len(anyio.get_running_tasks())


async def test_breaking_out_closes_the_connection_and_leaves_no_task() -> None:
    lines = lines_of(50)
    connector = ScriptedConnector([[*lines[:10], Stall()]])
    before = _task_count()
    states: list[ConnectionState] = []
    async with open_event_stream(connector, config=FAST, on_state=states.append) as events:
        async for event in events:
            if event.seq == 3:
                break
        assert _task_count() == before + 2  # the reader and its heartbeat monitor
    assert _task_count() == before
    assert connector.open_connections == 0
    assert connector.closed_iterators == 1
    assert states[-1] is ConnectionState.CLOSED


@on_virtual_clock()
async def test_cancelling_closes_the_connection() -> None:
    lines = lines_of(50)
    connector = ScriptedConnector([[*lines[:5], Stall()]])
    before = _task_count()
    received: list[StreamEvent] = []
    with anyio.move_on_after(0.05) as scope:
        await consume(open_event_stream(connector, config=FAST), received)
    assert scope.cancelled_caught
    assert seqs(received) == [0, 1, 2, 3, 4]
    assert connector.open_connections == 0
    assert _task_count() == before


async def test_an_error_in_the_body_comes_out_unwrapped() -> None:
    connector = ScriptedConnector([[*lines_of(5)[:2], Stall()]])

    async def buggy_consumer() -> None:
        async with open_event_stream(connector, config=FAST) as events:
            async for _ in events:
                raise ValueError("consumer bug")

    with pytest.raises(ValueError, match="consumer bug"):
        await buggy_consumer()
    assert connector.open_connections == 0


async def test_aclose_ends_the_iteration() -> None:
    connector = ScriptedConnector([[*lines_of(5)[:3], Stall()]])
    received: list[StreamEvent] = []
    async with open_event_stream(connector, config=FAST) as events:
        async for event in events:
            received.append(event)
            if event.seq == 1:
                # The reader may have read ahead of what the loop has received.
                assert re.fullmatch(
                    r"<ResumableEventStream state=connected delivered=2 last_seq=[12]>",
                    repr(events),
                )
                await events.aclose()
                assert events.state is ConnectionState.CLOSED  # at once, inside the block
        with pytest.raises(StopAsyncIteration):
            await events.__anext__()
        assert re.fullmatch(
            r"<ResumableEventStream state=closed delivered=2 last_seq=[12]>", repr(events)
        )
    assert seqs(received) == [0, 1]
    assert events.events_delivered == 2
    assert connector.open_connections == 0


@on_virtual_clock()
async def test_a_consumer_cancelled_while_waiting_loses_nothing() -> None:
    lines = lines_of(6)
    connector = ScriptedConnector([[*lines[:3], Sleep(1), *lines[3:]]])
    received: list[StreamEvent] = []
    async with open_event_stream(connector, config=FAST) as events:
        received.extend([await events.__anext__() for _ in range(3)])
        with anyio.move_on_after(0.5) as scope:
            received.append(await events.__anext__())  # the reader is asleep
        assert scope.cancelled_caught
        received.extend([event async for event in events])
    assert seqs(received) == [0, 1, 2, 3, 4, 5]
    assert events.events_delivered == 6


async def test_aclose_stops_a_reader_held_back_by_a_full_buffer() -> None:
    connector = ScriptedConnector([[*lines_of(100), Stall()]])
    async with open_event_stream(connector, config=FAST) as events:
        await events.__anext__()
        for _ in range(20):
            await anyio.lowlevel.checkpoint()
        assert connector.open_connections == 1  # the reader waits for room
        await events.aclose()
        for _ in range(20):
            await anyio.lowlevel.checkpoint()
        assert connector.open_connections == 0
    assert events.state is ConnectionState.CLOSED


async def test_a_slow_consumer_holds_the_reader_back() -> None:
    lines = lines_of(200)
    connector = ScriptedConnector([[*lines, Stall()]])
    async with open_event_stream(connector, config=FAST) as events:
        first = await events.__anext__()
        for _ in range(20):
            await anyio.lowlevel.checkpoint()
        # One batch (chunk) per line: the one taken, plus at most four that
        # the reader queued before the consumer it woke got to run.
        assert first.seq == 0
        assert events.last_seq is not None
        assert events.last_seq <= 4
        assert events.events_delivered == 1


async def test_a_busy_consumer_keeps_the_reader_two_batches_ahead() -> None:
    lines = lines_of(200)
    connector = ScriptedConnector([[*lines, Stall()]])
    async with open_event_stream(connector, config=FAST) as events:
        for expected in range(20):
            event = await events.__anext__()
            assert event.seq == expected
            for _ in range(20):
                await anyio.lowlevel.checkpoint()
            # One batch (chunk) per line. Until the consumer woken for the
            # first one runs, the reader (whose source never yields) may queue
            # five; with the consumer busy elsewhere since, no more than two
            # wait past the one it is in.
            assert events.last_seq is not None
            assert expected < events.last_seq <= max(expected + 2, 4)
        assert events.events_delivered == 20


async def test_the_stream_must_be_entered() -> None:
    stream = open_event_stream(ScriptedConnector([]), config=FAST)
    with pytest.raises(RuntimeError, match="async with"):
        await stream.__anext__()
    async with stream:
        pass
    with pytest.raises(RuntimeError, match="only once"):
        async with stream:
            pass


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), True])
def test_heartbeat_timeout_is_validated(timeout: Any) -> None:
    with pytest.raises(ValueError, match="heartbeat_timeout_ms"):
        open_event_stream(ScriptedConnector([]), heartbeat_timeout_ms=timeout)


def test_max_line_bytes_is_validated() -> None:
    with pytest.raises(ValueError, match="max_line_bytes"):
        open_event_stream(ScriptedConnector([]), max_line_bytes=0)


# --- the session is pinned; an over-long line says so ---------------------------------


@pytest.mark.parametrize("live", [True, False], ids=["same-connection", "after-a-reconnect"])
async def test_an_event_of_another_session_is_fatal(live: bool) -> None:
    ours = lines_of(6)
    theirs = [line(event) for event in make_session(8, session_id="s_other")]
    if live:
        plans: list[Any] = [[*ours[:3], *theirs[3:]]]
    else:  # the resumed request started a new session: seq 3.. of another one
        plans = [[*ours[:3], Raise(ConnectionResetError())], replay(theirs)]
    connector = ScriptedConnector(plans)
    received: list[StreamEvent] = []
    with pytest.raises(SessionMismatchError) as caught:
        await consume(open_event_stream(connector, config=FAST), received)
    assert seqs(received) == [0, 1, 2]
    error = caught.value
    assert (error.expected, error.received, error.seq) == (SESSION_ID, "s_other", 3)
    assert (error.events_delivered, error.last_seq) == (3, 2)


async def test_an_event_longer_than_the_line_limit_is_named_not_blamed_on_the_server() -> None:
    events = make_session(4)
    events[2] = StdoutEvent(session_id=SESSION_ID, seq=2, payload=StdoutPayload("x" * 5000))
    lines = [line(event) for event in events]
    connector = ScriptedConnector([replay(lines)] * 3)
    received: list[StreamEvent] = []
    reported: list[LineError] = []
    stream = open_event_stream(
        connector, config=FAST, max_line_bytes=1000, on_error=reported.append
    )
    with pytest.raises(LineTooLongError) as caught:
        await consume(stream, received)
    assert seqs(received) == [0, 1]
    assert caught.value.line == 1  # the first line of the replay from seq 2
    assert caught.value.max_line_bytes == 1000
    assert "raise max_line_bytes" in str(caught.value)
    assert [error.kind for error in reported] == [FailureKind.LINE_TOO_LONG] * 2
    assert connector.calls == [None, 2]


async def test_a_final_event_longer_than_the_line_limit_is_named_too() -> None:
    """No event follows a too-long final, so no gap: the replay that ends after it says so."""
    events = make_session(3)
    events[2] = FinalEvent(session_id=SESSION_ID, seq=2, payload=FinalPayload(True, "x" * 5000))
    lines = [line(event) for event in events]
    connector = ScriptedConnector([replay(lines)] * 3)
    received: list[StreamEvent] = []
    stream = open_event_stream(connector, config=FAST, max_line_bytes=1000, on_error=lambda e: None)
    with pytest.raises(LineTooLongError) as caught:
        await consume(stream, received)
    assert seqs(received) == [0, 1]
    assert (caught.value.line, caught.value.max_line_bytes) == (1, 1000)
    assert connector.calls == [None, 2]


async def test_open_event_stream_takes_the_parameters_of_the_stream_it_makes() -> None:
    # Declared once, on ResumableEventStream; help() shows them on both.
    ours = inspect.signature(open_event_stream)
    assert ours.parameters == inspect.signature(ResumableEventStream).parameters
    assert "heartbeat_timeout_ms" in ours.parameters
    async with open_event_stream(ScriptedConnector([]), heartbeat_timeout_ms=None) as stream:
        assert isinstance(stream, ResumableEventStream)


# --- is_retryable: which connection failures are worth another try


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (OSError("network unreachable"), True),
        (anyio.BrokenResourceError(), True),
        (anyio.EndOfStream(), True),
        (anyio.IncompleteRead(), True),
        (RetryableConnectError("busy"), True),
        (FatalConnectError("denied"), False),
        (ConnectorError("unclassified"), False),
        (ValueError("bug"), False),
        (anyio.ClosedResourceError(), False),
        (ExceptionGroup("all transport", [OSError(), anyio.EndOfStream()]), True),
        (ExceptionGroup("one fatal", [OSError(), FatalConnectError("no")]), False),
    ],
)
def test_classification(error: Exception, retryable: bool) -> None:
    assert is_retryable(error) is retryable


def test_retry_if_decides_only_for_other_errors() -> None:
    def always(error: Exception) -> bool:
        return True

    def never(error: Exception) -> bool:
        return False

    assert is_retryable(ValueError(), always)
    assert not is_retryable(FatalConnectError("no"), always)
    assert is_retryable(ConnectionResetError(), never)


@on_virtual_clock()
async def test_max_retries_none_outlasts_any_count_of_failures() -> None:
    lines = lines_of(4)
    connector = ScriptedConnector([Refuse(OSError("down"))] * 50 + [[*lines]])
    config = ReconnectionConfig(max_retries=None, initial_delay_ms=10, jitter=False)
    async with open_event_stream(connector, config=config) as events:
        received = [event async for event in events]
    assert seqs(received) == [0, 1, 2, 3]
    assert len(connector.calls) == 51


@on_virtual_clock()
async def test_a_retry_waits_as_long_as_the_server_asked_within_the_cap() -> None:
    lines = lines_of(3)
    busy = RetryableConnectError("HTTP 503 Service Unavailable", status_code=503, retry_after=3)
    much_too_busy = RetryableConnectError("HTTP 429 Too Many Requests", retry_after=3600)
    connector = ScriptedConnector([Refuse(busy), Refuse(much_too_busy), [*lines]])
    config = ReconnectionConfig(initial_delay_ms=200, max_delay_ms=10_000, jitter=False)
    async with open_event_stream(connector, config=config) as events:
        received = [event async for event in events]
    assert seqs(received) == [0, 1, 2]
    first, second, third = connector.times
    assert second - first == pytest.approx(3.0)  # not the 0.2 s backoff
    assert third - second == pytest.approx(10.0)  # an hour asked: max_delay_ms caps it


@on_virtual_clock()
async def test_retries_are_logged_and_reported_with_their_reasons(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lines = lines_of(4)
    connector = ScriptedConnector(
        [[*lines[:2], CUT], Refuse(OSError("refused")), [*lines[2:]], Refuse(OSError("down"))]
    )
    seen: list[ReconnectionEvent] = []
    config = ReconnectionConfig(max_retries=3, initial_delay_ms=100, jitter=False)
    with caplog.at_level(logging.INFO, logger="enclave_stream"):
        async with open_event_stream(connector, config=config, on_event=seen.append) as events:
            received = [event async for event in events]
    assert seqs(received) == [0, 1, 2, 3]
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0].startswith("event stream: retrying in 0.1 s (attempt 1/3): ")
    assert messages[1] == "event stream: retrying in 0.2 s (attempt 2/3): OSError: refused"
    assert messages[2] == "event stream: resumed at seq 2"
    scheduled = [(e.attempt, e.delay_ms) for e in seen if isinstance(e, RetryScheduledEvent)]
    assert scheduled == [(1, 100), (2, 200)]
    reasons = [e.reason for e in seen if isinstance(e, DisconnectedEvent)]
    assert reasons[1] == "OSError: refused"


async def test_giving_up_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    connector = ScriptedConnector([Refuse(FatalConnectError("HTTP 401", status_code=401))])
    seen: list[ReconnectionEvent] = []
    with caplog.at_level(logging.INFO, logger="enclave_stream"):
        async with open_event_stream(connector, config=FAST, on_event=seen.append) as events:
            with pytest.raises(StreamFailedError):
                await events.__anext__()
    reason = "fatal error: FatalConnectError: HTTP 401"
    assert [record.getMessage() for record in caplog.records] == [
        f"event stream: gave up: {reason}"
    ]
    assert [e.reason for e in seen if isinstance(e, FailedEvent)] == [reason]


async def test_a_stream_can_start_from_a_saved_position() -> None:
    lines = lines_of(8)
    # A server that ignores the position and sends from 4 on: the old ones are dropped.
    connector = ScriptedConnector([[*lines[4:6], CUT], [*lines[6:]]])
    async with open_event_stream(connector, config=FAST, from_seq=5) as events:
        received = [event async for event in events]
    assert seqs(received) == [5, 6, 7]
    assert connector.calls == [5, 6]
    with pytest.raises(ValueError, match="from_seq"):
        open_event_stream(connector, from_seq=-1)
