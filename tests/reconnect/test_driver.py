"""drive_reconnection: the anyio timer of the state machine."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from enclave_stream.reconnect import (
    ConnectionState,
    FailedEvent,
    ReconnectionConfig,
    ReconnectionEvent,
    ReconnectionStateMachine,
    RetryStartedEvent,
    drive_reconnection,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend(virtual_backend: Any) -> Any:
    return virtual_backend


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
