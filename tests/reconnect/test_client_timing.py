"""The timers of client.py on a virtual clock.

open_event_stream (backoff, the retry-count reset rule, the heartbeat),
HeartbeatMonitor (timeout, re-arming, reset, stop, callbacks) and
drive_reconnection (the state machine's timer).
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest

from enclave_stream import FinalEvent, HeartbeatEvent
from enclave_stream.events import FinalPayload, HeartbeatPayload, StreamEvent
from enclave_stream.reconnect import (
    ConnectionState,
    FailedEvent,
    HeartbeatMonitor,
    ReconnectionConfig,
    ReconnectionEvent,
    ReconnectionStateMachine,
    RetryStartedEvent,
    StreamFailedError,
    drive_reconnection,
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


# --- HeartbeatMonitor


def _leaves(exc: BaseException) -> list[BaseException]:
    nested: tuple[BaseException, ...] | None = getattr(exc, "exceptions", None)
    if nested is None:
        return [exc]
    return [leaf for inner in nested for leaf in _leaves(inner)]


class Recorder:
    """A sync on_timeout that records when it was called."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.called = anyio.Event()

    def __call__(self) -> None:
        self.calls.append(anyio.current_time())
        self.called.set()


@pytest.mark.parametrize("timeout_ms", [0, -5, float("nan"), float("inf"), True, "1", None])
def test_timeout_is_validated(timeout_ms: Any) -> None:
    with pytest.raises(ValueError, match="timeout_ms"):
        HeartbeatMonitor(timeout_ms, lambda: None)


class TestLifecycle:
    """Firing, re-arming, stopping, errors."""

    async def test_fires_once_after_silence(self) -> None:
        on_timeout = Recorder()
        async with HeartbeatMonitor(1000, on_timeout) as monitor:
            t0 = anyio.current_time()
            await on_timeout.called.wait()
            await anyio.sleep(5.0)
            assert monitor.running
        assert len(on_timeout.calls) == 1
        assert on_timeout.calls[0] - t0 >= 1.0 * 0.99
        assert on_timeout.calls[0] - t0 == pytest.approx(1.0)

    async def test_heartbeat_after_timeout_rearms(self) -> None:
        on_timeout = Recorder()
        async with HeartbeatMonitor(1000, on_timeout) as monitor:
            await on_timeout.called.wait()
            on_timeout.called = anyio.Event()
            monitor.on_heartbeat()
            await on_timeout.called.wait()
        assert len(on_timeout.calls) == 2
        assert on_timeout.calls[1] - on_timeout.calls[0] >= 1.0 * 0.99

    async def test_async_callback_is_awaited(self) -> None:
        done = anyio.Event()

        async def on_timeout() -> None:
            await anyio.lowlevel.checkpoint()
            done.set()

        async with HeartbeatMonitor(1000, on_timeout):
            await done.wait()

    async def test_stop_prevents_the_call_and_ends_the_task(self) -> None:
        on_timeout = Recorder()
        monitor = HeartbeatMonitor(1000, on_timeout)
        tasks_before = len(anyio.get_running_tasks())
        async with anyio.create_task_group() as tg:
            monitor.start(tg)
            assert monitor.running
            await anyio.sleep(0.5)
            monitor.stop()
            monitor.stop()  # idempotent
            assert not monitor.running
            # The group exits without being cancelled: the task ended by itself.
        assert len(anyio.get_running_tasks()) == tasks_before
        await anyio.sleep(2.0)
        assert on_timeout.calls == []

    async def test_callback_errors_propagate(self) -> None:
        def on_timeout() -> None:
            raise LookupError("stale")

        caught: BaseException | None = None
        try:
            async with HeartbeatMonitor(1000, on_timeout):
                await anyio.sleep_forever()
        except BaseException as exc:  # an ExceptionGroup (a backport on 3.10)
            caught = exc
        assert caught is not None
        assert [str(leaf) for leaf in _leaves(caught)] == ["stale"]

    async def test_start_twice_is_refused_and_restart_after_stop_works(self) -> None:
        on_timeout = Recorder()
        monitor = HeartbeatMonitor(1000, on_timeout)
        async with anyio.create_task_group() as tg:
            monitor.start(tg)
            with pytest.raises(RuntimeError, match="already running"):
                monitor.start(tg)
            monitor.stop()
            monitor.start(tg)
            await on_timeout.called.wait()
            monitor.stop()
        assert len(on_timeout.calls) == 1

    async def test_callback_may_stop_the_monitor(self) -> None:
        monitor: HeartbeatMonitor

        def on_timeout() -> None:
            monitor.stop()

        monitor = HeartbeatMonitor(1000, on_timeout)
        with anyio.fail_after(1.0 * 100):
            async with anyio.create_task_group() as tg:
                monitor.start(tg)
        assert not monitor.running


class TestExactTiming:
    """When the callback fires, to the virtual millisecond."""

    async def test_heartbeats_push_the_deadline(self) -> None:
        on_timeout = Recorder()
        async with HeartbeatMonitor(30_000, on_timeout) as monitor:
            for _ in range(10):
                await anyio.sleep(29.9)
                monitor.on_heartbeat()
            last = anyio.current_time()
            assert on_timeout.calls == []
            await on_timeout.called.wait()
        assert on_timeout.calls == [pytest.approx(last + 30)]

    async def test_pause_stops_the_clock_until_the_next_heartbeat(self) -> None:
        on_timeout = Recorder()
        async with HeartbeatMonitor(1000, on_timeout) as monitor:
            await anyio.sleep(0.5)
            monitor.pause()
            await anyio.sleep(60)
            assert on_timeout.calls == []
            resumed = anyio.current_time()
            monitor.on_heartbeat()
            await on_timeout.called.wait()
        assert on_timeout.calls == [pytest.approx(resumed + 1)]

    async def test_reset_restarts_the_timeout(self) -> None:
        on_timeout = Recorder()
        async with HeartbeatMonitor(1000, on_timeout) as monitor:
            await anyio.sleep(0.75)
            monitor.reset()
            t_reset = anyio.current_time()
            await on_timeout.called.wait()
        assert on_timeout.calls == [pytest.approx(t_reset + 1)]

    async def test_time_since_last_heartbeat(self) -> None:
        monitor = HeartbeatMonitor(1000, lambda: None)
        assert monitor.time_since_last_heartbeat_ms == 0.0
        async with monitor:
            await anyio.sleep(0.25)
            assert monitor.time_since_last_heartbeat_ms == pytest.approx(250)
            monitor.on_heartbeat()
            assert monitor.time_since_last_heartbeat_ms == 0.0
            await anyio.sleep(0.1)
            assert monitor.time_since_last_heartbeat_ms == pytest.approx(100)

    async def test_heartbeat_during_a_slow_callback_rearms(self) -> None:
        calls: list[float] = []
        second = anyio.Event()
        monitor: HeartbeatMonitor

        async def on_timeout() -> None:
            calls.append(anyio.current_time())
            if len(calls) == 1:
                await anyio.sleep(0.5)
                monitor.on_heartbeat()  # arrives while the handler still runs
                await anyio.sleep(0.5)
            else:
                second.set()

        monitor = HeartbeatMonitor(1000, on_timeout)
        async with monitor:
            t0 = anyio.current_time()
            await second.wait()
        assert calls == [pytest.approx(t0 + 1), pytest.approx(t0 + 2.5)]


# --- drive_reconnection


def _state(machine: ReconnectionStateMachine) -> ConnectionState:
    """Read the state through a call, so that mypy does not narrow it across awaits."""
    return machine.state


def _config(max_retries: int = 3) -> ReconnectionConfig:
    return ReconnectionConfig(max_retries=max_retries, initial_delay_ms=1000, jitter=False)


async def test_fires_each_retry_after_its_delay() -> None:
    started: list[tuple[int, float]] = []
    failed = anyio.Event()
    machine: ReconnectionStateMachine

    def observer(event: ReconnectionEvent) -> None:
        if isinstance(event, RetryStartedEvent):
            started.append((event.attempt, anyio.current_time()))
            machine.on_disconnected("still down")  # every retry fails at once
        elif isinstance(event, FailedEvent):
            failed.set()

    machine = ReconnectionStateMachine(_config(), on_event=observer)
    async with anyio.create_task_group() as tg:
        await tg.start(drive_reconnection, machine)
        t0 = anyio.current_time()
        machine.connect()
        machine.on_disconnected("network")
        await failed.wait()
        tg.cancel_scope.cancel()

    assert [attempt for attempt, _ in started] == [1, 2, 3]
    assert machine.state is ConnectionState.FAILED
    offsets = [when - t0 for _, when in started]
    expected = [1.0, 3.0, 7.0]  # 1 s, +2 s, +4 s
    assert offsets == pytest.approx(expected)


async def test_picks_up_a_retry_scheduled_before_it_started() -> None:
    fired_at: list[float] = []
    fired = anyio.Event()

    def observer(event: ReconnectionEvent) -> None:
        if isinstance(event, RetryStartedEvent):
            fired_at.append(anyio.current_time())
            fired.set()

    machine = ReconnectionStateMachine(_config(), on_event=observer)
    t0 = anyio.current_time()
    machine.on_disconnected()
    async with anyio.create_task_group() as tg:
        tg.start_soon(drive_reconnection, machine)
        await fired.wait()
        tg.cancel_scope.cancel()
    assert machine.state is ConnectionState.CONNECTING
    assert fired_at == [pytest.approx(t0 + 1.0)]


async def test_cancelled_retry_is_not_fired() -> None:
    seen: list[str] = []
    machine = ReconnectionStateMachine(_config(), on_event=lambda e: seen.append(e.type))
    async with anyio.create_task_group() as tg:
        await tg.start(drive_reconnection, machine)
        machine.on_disconnected()
        await anyio.sleep(0.5)
        machine.on_connected()  # the connection came back by itself
        await anyio.sleep(3.0)
        assert "retry_started" not in seen
        assert machine.state is ConnectionState.CONNECTED
        tg.cancel_scope.cancel()


async def test_replaced_retry_uses_the_new_delay() -> None:
    """A retry rescheduled by a later drop counts from the later drop."""
    machine = ReconnectionStateMachine(_config())
    async with anyio.create_task_group() as tg:
        await tg.start(drive_reconnection, machine)
        machine.on_disconnected("a")
        await anyio.sleep(0.6)
        machine.on_disconnected("b")  # replaces the pending retry: 1 s from now
        await anyio.sleep(0.6)
        assert _state(machine) is ConnectionState.RECONNECTING
        await anyio.sleep(0.6)
        assert _state(machine) is ConnectionState.CONNECTING
        tg.cancel_scope.cancel()


async def test_two_drivers_fire_a_retry_once() -> None:
    started: list[int] = []
    machine = ReconnectionStateMachine(
        _config(),
        on_event=lambda e: started.append(e.attempt) if isinstance(e, RetryStartedEvent) else None,
    )
    async with anyio.create_task_group() as tg:
        await tg.start(drive_reconnection, machine)
        await tg.start(drive_reconnection, machine)
        machine.on_disconnected()
        await anyio.sleep(1.5)
        tg.cancel_scope.cancel()
    assert started == [1]


async def test_cancellation_leaves_nothing_behind() -> None:
    machine = ReconnectionStateMachine(_config())
    tasks_before = len(anyio.get_running_tasks())
    machine.on_disconnected()
    async with anyio.create_task_group() as tg:
        await tg.start(drive_reconnection, machine)
        await anyio.sleep(0.1)
        t_cancel = anyio.current_time()
        tg.cancel_scope.cancel()
    assert anyio.current_time() == t_cancel  # no waiting for the retry's delay
    assert len(anyio.get_running_tasks()) == tasks_before
    # Nobody listens or fires any more.
    await anyio.sleep(2.0)
    assert machine.state is ConnectionState.RECONNECTING
    assert machine.fire_retry()
