"""open_event_stream on a virtual clock: backoff, the retry-count reset rule, the heartbeat."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from enclave_stream import FinalEvent, FinalPayload, HeartbeatEvent, HeartbeatPayload
from enclave_stream.events import StreamEvent
from enclave_stream.reconnect import (
    ReconnectionConfig,
    StreamFailedError,
    open_event_stream,
)
from tests.reconnect.fakes import (
    SESSION_ID,
    Hang,
    Raise,
    Refuse,
    ScriptedConnector,
    Sleep,
    Stall,
    Step,
    consume,
    line,
    make_session,
    replay,
)

pytestmark = pytest.mark.anyio

CUT = Raise(ConnectionResetError("connection reset by peer"))


@pytest.fixture
def anyio_backend(virtual_backend: Any) -> Any:
    return virtual_backend


def backoff(max_retries: int) -> ReconnectionConfig:
    return ReconnectionConfig(max_retries=max_retries, initial_delay_ms=1000, jitter=False)


def lines_of(count: int) -> list[bytes]:
    return [line(event) for event in make_session(count)]


def offsets(connector: ScriptedConnector) -> list[float]:
    return [when - connector.times[0] for when in connector.times]


async def seqs_of(connector: ScriptedConnector, **options: Any) -> list[int]:
    received: list[StreamEvent] = []
    await consume(open_event_stream(connector, **options), received)
    return [event.seq for event in received]


async def test_backoff_doubles_between_failed_connections() -> None:
    connector = ScriptedConnector([Refuse(ConnectionRefusedError())] * 4)
    with pytest.raises(StreamFailedError, match="gave up after 3 retries"):
        await seqs_of(connector, config=backoff(3))
    assert offsets(connector) == pytest.approx([0, 1, 3, 7])


async def test_retry_count_resets_once_a_connection_delivers_a_new_event() -> None:
    lines = lines_of(6)
    # Every connection brings one new event and drops: with max_retries=1 the
    # stream still finishes, and every wait is the initial delay.
    plans: list[Any] = [replay(lines, upto=n, then=[CUT]) for n in range(1, 6)]
    connector = ScriptedConnector([*plans, replay(lines)])
    assert await seqs_of(connector, config=backoff(1)) == list(range(6))
    assert offsets(connector) == pytest.approx([0, 1, 2, 3, 4, 5])


async def test_connections_that_bring_nothing_new_use_up_the_retries() -> None:
    lines = lines_of(6)
    resend_then_cut: list[Step] = [*lines[:3], CUT]  # ignores from_seq: only old events
    connector = ScriptedConnector([resend_then_cut] * 3)
    received: list[StreamEvent] = []
    with pytest.raises(StreamFailedError) as caught:
        await consume(open_event_stream(connector, config=backoff(2)), received)
    assert [event.seq for event in received] == [0, 1, 2]
    assert (caught.value.events_delivered, caught.value.last_seq) == (3, 2)
    assert connector.calls == [None, 3, 3]
    assert offsets(connector) == pytest.approx([0, 1, 3])


async def test_silence_past_the_heartbeat_timeout_reconnects() -> None:
    lines = lines_of(4)
    connector = ScriptedConnector([[lines[0], Sleep(2), lines[1], Stall()], replay(lines)])
    seqs = await seqs_of(connector, config=backoff(3), heartbeat_timeout_ms=5000)
    assert seqs == [0, 1, 2, 3]
    assert connector.calls == [None, 2]
    # Silence from t=2 s (the last bytes) to 7 s, then the 1 s backoff.
    assert offsets(connector) == pytest.approx([0, 8])


async def test_a_line_trickling_in_is_not_progress() -> None:
    """Liveness is judged on new events: bytes of an unfinished line do not count."""
    lines = lines_of(3)
    pieces: list[Any] = []
    for index in range(0, len(lines[1]), 4):
        pieces += [Sleep(4), lines[1][index : index + 4]]
    connector = ScriptedConnector([[lines[0], *pieces, lines[2]], replay(lines)])
    seqs = await seqs_of(connector, config=backoff(3), heartbeat_timeout_ms=5000)
    assert seqs == [0, 1, 2]
    assert connector.calls == [None, 1]
    assert offsets(connector) == pytest.approx([0, 6])  # 5 s with no event, then the backoff


@pytest.mark.parametrize(
    "noise",
    [
        pytest.param(b"\n", id="blank-lines"),
        pytest.param(b"   \t  ", id="whitespace"),
        pytest.param(b"garbage, not json\n", id="bad-lines"),
        pytest.param(line(make_session(3)[0]), id="old-events-resent"),
    ],
)
async def test_noise_does_not_keep_a_dead_stream_alive(noise: bytes) -> None:
    lines = lines_of(3)
    keepalive: list[Step] = [step for _ in range(100) for step in (Sleep(1), noise)]
    connector = ScriptedConnector([[lines[0], lines[1], *keepalive, Stall()], replay(lines)])
    seqs = await seqs_of(connector, config=backoff(3), heartbeat_timeout_ms=5000)
    assert seqs == [0, 1, 2]
    assert connector.calls == [None, 2]
    assert offsets(connector) == pytest.approx([0, 6])


async def test_heartbeat_events_keep_a_quiet_stream_alive() -> None:
    events = make_session(3)
    beats: list[Step] = []
    for seq in range(1, 11):
        beat = HeartbeatEvent(
            session_id=SESSION_ID, seq=seq, payload=HeartbeatPayload("2025-01-01T00:00:00Z")
        )
        beats += [Sleep(4), line(beat)]
    final = FinalEvent(session_id=SESSION_ID, seq=11, payload=FinalPayload(ok=True))
    connector = ScriptedConnector([[line(events[0]), *beats, line(final)]])
    seqs = await seqs_of(connector, config=backoff(3), heartbeat_timeout_ms=5000)
    assert seqs == list(range(12))
    assert connector.calls == [None]
    assert anyio.current_time() - connector.times[0] == pytest.approx(40)


async def test_the_overall_deadline_ends_a_stream_that_keeps_reconnecting() -> None:
    lines = lines_of(10)
    # Every connection brings one new event, then stalls: never final.
    plans: list[Any] = [replay(lines, upto=n, then=[Stall()]) for n in range(1, 10)]
    connector = ScriptedConnector(plans)
    received: list[StreamEvent] = []
    start = anyio.current_time()
    with pytest.raises(StreamFailedError, match="deadline of 15000 ms") as caught:
        await consume(
            open_event_stream(
                connector, config=backoff(5), heartbeat_timeout_ms=5000, deadline_ms=15_000
            ),
            received,
        )
    assert anyio.current_time() - start == pytest.approx(15)
    assert caught.value.events_delivered == len(received) == 3  # at 0, 6 and 12 s


@pytest.mark.parametrize("deadline", [0, -1, float("nan"), float("inf"), True])
def test_the_deadline_is_validated(deadline: Any) -> None:
    with pytest.raises(ValueError, match="deadline_ms"):
        open_event_stream(ScriptedConnector([]), deadline_ms=deadline)


@pytest.mark.parametrize("gap", [0.004, 0.006, 1.5])
async def test_each_new_event_pushes_the_heartbeat_deadline_back_exactly(gap: float) -> None:
    # A new event only records the time (the monitor's task wakes at the old
    # deadline and sleeps on), so even events a few ms apart move it.
    lines = lines_of(3)
    connector = ScriptedConnector([[lines[0], Sleep(gap), lines[1], Stall()], replay(lines)])
    seqs = await seqs_of(connector, config=backoff(3), heartbeat_timeout_ms=5000)
    assert seqs == [0, 1, 2]
    # The timeout 5 s after the second event, then the 1 s backoff.
    assert offsets(connector) == pytest.approx([0, gap + 6])


async def test_the_timeout_covers_connecting() -> None:
    lines = lines_of(2)

    connector = ScriptedConnector([Hang(), Refuse(ConnectionRefusedError()), replay(lines)])
    assert await seqs_of(connector, config=backoff(3), heartbeat_timeout_ms=5000) == [0, 1]
    assert offsets(connector) == pytest.approx([0, 6, 8])


async def test_waiting_for_a_slow_consumer_is_not_silence() -> None:
    lines = lines_of(10)
    connector = ScriptedConnector([[*lines, Stall()]])
    seqs = []
    async with open_event_stream(connector, config=backoff(3), heartbeat_timeout_ms=1000) as events:
        async for event in events:
            seqs.append(event.seq)
            await anyio.sleep(5)
    assert seqs == list(range(10))
    assert connector.calls == [None]


async def test_a_consumer_cancelled_while_waiting_loses_no_event() -> None:
    lines = lines_of(6)
    connector = ScriptedConnector([[step for item in lines for step in (Sleep(1), item)]])
    received: list[StreamEvent] = []
    timeouts = 0
    async with open_event_stream(connector, config=backoff(3), heartbeat_timeout_ms=5000) as events:
        while not received or received[-1].seq < 5:
            with anyio.move_on_after(0.6) as scope:
                received.append(await events.__anext__())
            timeouts += scope.cancelled_caught
    assert [event.seq for event in received] == list(range(6))
    assert timeouts == 6  # each event came after one cancelled wait
    assert connector.calls == [None]


async def test_no_heartbeat_timeout_waits_forever() -> None:
    lines = lines_of(2)
    connector = ScriptedConnector([[lines[0], Sleep(10**6), lines[1]]])
    assert await seqs_of(connector, config=backoff(0), heartbeat_timeout_ms=None) == [0, 1]
    assert connector.calls == [None]


async def test_jittered_backoff_stays_in_its_band() -> None:
    config = ReconnectionConfig(max_retries=3, initial_delay_ms=1000, jitter=True)
    connector = ScriptedConnector([Refuse(ConnectionRefusedError())] * 4)
    with pytest.raises(StreamFailedError):
        await seqs_of(connector, config=config)
    waits = [b - a for a, b in zip(connector.times, connector.times[1:], strict=False)]
    # Delays are whole milliseconds; compare them as such, not as float differences.
    for wait, base in zip(waits, [1000, 2000, 4000], strict=True):
        assert base * 7 // 10 <= round(wait * 1000) <= base * 13 // 10
