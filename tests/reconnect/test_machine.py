"""ReconnectionStateMachine behaviour beyond the reference traces.

The traces themselves are checked in tests/conformance/test_reconnect_vectors.py.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from enclave_stream.reconnect import (
    ConnectionState,
    DisconnectedEvent,
    PendingRetry,
    ReconnectionConfig,
    ReconnectionEvent,
    ReconnectionStateMachine,
    RetryScheduledEvent,
    StateChangeEvent,
)

NO_JITTER = ReconnectionConfig(jitter=False)


def _types(events: list[ReconnectionEvent]) -> list[str]:
    return [event.type for event in events]


def test_defaults() -> None:
    machine = ReconnectionStateMachine()
    assert machine.state is ConnectionState.DISCONNECTED
    assert machine.retry_count == 0
    assert machine.pending_retry is None
    assert machine.can_reconnect()
    assert machine.config.max_retries == 5


def test_works_without_an_observer() -> None:
    machine = ReconnectionStateMachine(NO_JITTER)
    machine.on_disconnected("x")
    assert machine.pending_retry == PendingRetry(attempt=1, delay_ms=1000)
    assert machine.pending_retry.delay_seconds == 1.0
    assert machine.fire_retry()
    assert machine.state is ConnectionState.CONNECTING


def test_default_random_stays_within_the_jitter_bounds() -> None:
    for _ in range(200):
        machine = ReconnectionStateMachine()
        machine.on_disconnected()
        assert machine.pending_retry is not None
        assert 700 <= machine.pending_retry.delay_ms <= 1300


def test_injected_random_is_used() -> None:
    machine = ReconnectionStateMachine(random=lambda: 0.75)
    machine.on_disconnected()
    assert machine.pending_retry == PendingRetry(1, 1150)


def test_drop_while_reconnecting_replaces_the_pending_retry() -> None:
    seen: list[ReconnectionEvent] = []
    machine = ReconnectionStateMachine(NO_JITTER, on_event=seen.append)
    machine.on_disconnected("a")
    first = machine.pending_retry
    seen.clear()
    machine.on_disconnected("b")
    assert [e.to_dict() for e in seen] == [
        {"type": "disconnected", "reason": "b"},
        {"type": "retry_scheduled", "attempt": 1, "delayMs": 1000},
    ]
    assert machine.pending_retry == first
    assert machine.pending_retry is not first


@pytest.mark.parametrize(
    "cancel",
    [
        ReconnectionStateMachine.close,
        ReconnectionStateMachine.reset,
        ReconnectionStateMachine.connect,
        ReconnectionStateMachine.on_connected,
        lambda m: m.on_fatal_error("fatal"),
    ],
    ids=["close", "reset", "connect", "on_connected", "on_fatal_error"],
)
def test_retry_listener_hears_every_change(cancel: object) -> None:
    machine = ReconnectionStateMachine(NO_JITTER)
    heard: list[PendingRetry | None] = []
    remove = machine.add_retry_listener(lambda: heard.append(machine.pending_retry))
    machine.on_disconnected()
    assert heard == [PendingRetry(1, 1000)]
    cancel(machine)  # type: ignore[operator]
    assert heard == [PendingRetry(1, 1000), None]
    assert machine.pending_retry is None
    machine.close()  # nothing pending: nothing to hear
    assert len(heard) == 2
    remove()
    remove()  # idempotent
    machine.reset()
    machine.on_disconnected()
    assert len(heard) == 2


def test_retry_listener_hears_the_change_before_the_observer() -> None:
    order: list[str] = []
    machine = ReconnectionStateMachine(NO_JITTER, on_event=lambda e: order.append(e.type))
    machine.add_retry_listener(lambda: order.append("listener"))
    machine.on_disconnected()
    assert order == ["listener", "disconnected", "state_change", "retry_scheduled"]
    order.clear()
    assert machine.fire_retry()
    assert order == ["listener", "retry_started", "state_change"]


def test_observer_may_call_back_and_sees_events_in_causal_order() -> None:
    seen: list[ReconnectionEvent] = []
    machine: ReconnectionStateMachine

    def observer(event: ReconnectionEvent) -> None:
        seen.append(event)
        if isinstance(event, StateChangeEvent) and event.state is ConnectionState.RECONNECTING:
            # The reference would still arm its timer after this close().
            machine.close()

    machine = ReconnectionStateMachine(NO_JITTER, on_event=observer)
    machine.on_disconnected("x")
    assert [e.to_dict() for e in seen] == [
        {"type": "disconnected", "reason": "x"},
        {"type": "state_change", "state": "reconnecting", "previousState": "disconnected"},
        {"type": "retry_scheduled", "attempt": 1, "delayMs": 1000},
        {"type": "state_change", "state": "closed", "previousState": "reconnecting"},
    ]
    assert machine.state is ConnectionState.CLOSED
    assert machine.pending_retry is None
    assert not machine.fire_retry()


def test_observer_exception_propagates_and_the_machine_stays_usable() -> None:
    seen: list[str] = []

    def observer(event: ReconnectionEvent) -> None:
        if isinstance(event, DisconnectedEvent) and event.reason == "boom":
            raise RuntimeError("observer failed")
        seen.append(event.type)

    machine = ReconnectionStateMachine(NO_JITTER, on_event=observer)
    with pytest.raises(RuntimeError, match="observer failed"):
        machine.on_disconnected("boom")
    # The state changed before delivery; the undelivered events are dropped.
    assert machine.state is ConnectionState.RECONNECTING
    assert machine.pending_retry is not None
    assert machine.fire_retry()
    assert seen == ["retry_started", "state_change"]


class MachineInvariants(RuleBasedStateMachine):
    """Any sequence of calls keeps the machine's invariants."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[ReconnectionEvent] = []
        self.machine = ReconnectionStateMachine(
            ReconnectionConfig(max_retries=3), on_event=self.events.append, random=lambda: 0.5
        )
        self.previous = self.machine.state

    @rule()
    def connect(self) -> None:
        self.machine.connect()

    @rule()
    def on_connected(self) -> None:
        self.machine.on_connected()

    @rule(reason=st.none() | st.sampled_from(["eof", "reset by peer"]))
    def on_disconnected(self, reason: str | None) -> None:
        self.machine.on_disconnected(reason)

    @rule()
    def on_fatal_error(self) -> None:
        self.machine.on_fatal_error("fatal")

    @rule()
    def close(self) -> None:
        self.machine.close()

    @rule()
    def reset(self) -> None:
        self.machine.reset()

    @rule()
    def fire_retry(self) -> None:
        had_pending = self.machine.pending_retry is not None
        assert self.machine.fire_retry() is had_pending

    @invariant()
    def pending_exactly_while_reconnecting(self) -> None:
        assert (self.machine.pending_retry is not None) == (
            self.machine.state is ConnectionState.RECONNECTING
        )

    @invariant()
    def retries_are_bounded(self) -> None:
        assert 0 <= self.machine.retry_count <= self.machine.config.max_retries
        pending = self.machine.pending_retry
        if pending is not None:
            assert pending.attempt == self.machine.retry_count + 1
            assert pending.delay_ms in (1000, 2000, 4000)

    @invariant()
    def state_changes_chain_and_are_real(self) -> None:
        for event in self.events:
            if isinstance(event, StateChangeEvent):
                assert event.previous_state is self.previous
                assert event.state is not event.previous_state
                self.previous = event.state
            if isinstance(event, RetryScheduledEvent):
                assert event.attempt <= self.machine.config.max_retries
        self.events.clear()
        assert self.previous is self.machine.state


TestMachineInvariants = MachineInvariants.TestCase
TestMachineInvariants.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
