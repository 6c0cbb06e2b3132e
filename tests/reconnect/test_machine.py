"""The machine module: the state machine beyond the recorded traces, config, backoff, events.

The traces themselves are checked in tests/conformance/test_reconnect_vectors.py.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from enclave_stream.errors import EnclaveStreamError
from enclave_stream.reconnect import (
    DEFAULT_RECONNECTION_CONFIG,
    ConnectedEvent,
    ConnectionState,
    DisconnectedEvent,
    FailedEvent,
    PendingRetry,
    ReconnectionConfig,
    ReconnectionConfigError,
    ReconnectionEvent,
    ReconnectionStateMachine,
    RetryScheduledEvent,
    RetryStartedEvent,
    StateChangeEvent,
    compute_backoff_ms,
    js_round,
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


_S = ConnectionState


def _run_calls(calls: str) -> ReconnectionStateMachine:
    machine = ReconnectionStateMachine(ReconnectionConfig(max_retries=3, jitter=False))
    act = {
        "connect": machine.connect,
        "connected": machine.on_connected,
        "drop": machine.on_disconnected,
        "retry": machine.fire_retry,
        "reset": machine.reset,
        "close": machine.close,
        "fatal": lambda: machine.on_fatal_error("fatal"),
    }
    for call in calls.split():
        act[call]()
    return machine


@pytest.mark.parametrize(
    ("calls", "state", "retries", "next_delay"),
    [
        ("drop retry", _S.CONNECTING, 1, 2000),
        ("drop retry drop retry", _S.CONNECTING, 2, 4000),
        # connect() while connecting or connected is a no-op: the count stays.
        ("drop retry connect", _S.CONNECTING, 1, 2000),
        ("drop retry drop retry connect", _S.CONNECTING, 2, 4000),
        ("drop retry connected connect", _S.CONNECTED, 0, 1000),
        # Anywhere else connect() starts afresh: count 0, nothing pending.
        ("drop retry drop connect", _S.CONNECTING, 0, 1000),
        ("drop retry close connect", _S.CONNECTING, 0, 1000),
        ("drop retry fatal connect", _S.CONNECTING, 0, 1000),
        # reset() is the initial state again, whatever came before.
        ("drop retry reset", _S.DISCONNECTED, 0, 1000),
        ("drop retry drop reset", _S.DISCONNECTED, 0, 1000),
        ("drop retry connected reset", _S.DISCONNECTED, 0, 1000),
        ("drop retry drop retry drop retry drop reset", _S.DISCONNECTED, 0, 1000),
        # Closed or failed: a drop is old news, and the count is left as it was.
        ("drop retry close", _S.CLOSED, 1, None),
        ("drop retry fatal", _S.FAILED, 1, None),
        ("drop retry drop retry drop retry drop", _S.FAILED, 3, None),  # out of retries
    ],
)
def test_retry_count_after_each_call(
    calls: str, state: ConnectionState, retries: int, next_delay: int | None
) -> None:
    machine = _run_calls(calls)
    assert (machine.state, machine.retry_count) == (state, retries)
    assert machine.pending_retry is None
    machine.on_disconnected()
    pending = machine.pending_retry
    assert (None if pending is None else pending.delay_ms) == next_delay
    if pending is not None:
        assert pending.attempt == retries + 1


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

    returned: list[int] = []

    def observer(event: ReconnectionEvent) -> None:
        seen.append(event)
        if isinstance(event, StateChangeEvent) and event.state is ConnectionState.RECONNECTING:
            # The reference would still arm its timer after this close().
            machine.close()
            returned.append(len(seen))  # close() returned before its events came

    machine = ReconnectionStateMachine(NO_JITTER, on_event=observer)
    machine.on_disconnected("x")
    assert [e.to_dict() for e in seen] == [
        {"type": "disconnected", "reason": "x"},
        {"type": "state_change", "state": "reconnecting", "previousState": "disconnected"},
        {"type": "retry_scheduled", "attempt": 1, "delayMs": 1000},
        {"type": "state_change", "state": "closed", "previousState": "reconnecting"},
    ]
    assert returned == [2]
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


# --- states, settings, backoff and event shapes


def test_defaults_match_the_reference() -> None:
    reference = ReconnectionConfig(
        max_retries=5,
        initial_delay_ms=1000,
        max_delay_ms=30000,
        backoff_multiplier=2,
        jitter=True,
        jitter_factor=0.3,
    )
    assert reference == DEFAULT_RECONNECTION_CONFIG


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_RECONNECTION_CONFIG.max_retries = 1  # type: ignore[misc]


def test_connection_state_values_are_the_wire_strings() -> None:
    assert [s.value for s in ConnectionState] == [
        "disconnected",
        "connecting",
        "connected",
        "reconnecting",
        "failed",
        "closed",
    ]
    assert ConnectionState("failed") is ConnectionState.FAILED
    assert str(ConnectionState.CLOSED) == "closed"
    assert isinstance(ConnectionState.CLOSED, str)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_retries", -1, "max_retries must be >= 0"),
        ("max_retries", 1.5, "max_retries must be an int"),
        ("max_retries", True, "max_retries must be an int"),
        ("initial_delay_ms", -1, "initial_delay_ms must be >= 0"),
        ("initial_delay_ms", math.nan, "initial_delay_ms must be finite"),
        ("initial_delay_ms", "1000", "initial_delay_ms must be a number"),
        ("max_delay_ms", math.inf, "max_delay_ms must be finite"),
        ("max_delay_ms", -0.5, "max_delay_ms must be >= 0"),
        ("backoff_multiplier", 0.5, "backoff_multiplier must be >= 1"),
        ("backoff_multiplier", None, "backoff_multiplier must be a number"),
        ("jitter", 1, "jitter must be a bool"),
        ("jitter_factor", 1.5, "jitter_factor must be between 0 and 1"),
        ("jitter_factor", -0.1, "jitter_factor must be between 0 and 1"),
        ("jitter_factor", False, "jitter_factor must be a number"),
    ],
)
def test_invalid_config_is_refused_with_a_clear_error(field: str, value: Any, message: str) -> None:
    with pytest.raises(ReconnectionConfigError, match=message) as info:
        ReconnectionConfig(**{field: value})
    assert isinstance(info.value, EnclaveStreamError)
    assert isinstance(info.value, ValueError)


def test_edge_values_are_accepted() -> None:
    config = ReconnectionConfig(
        max_retries=0, initial_delay_ms=0, max_delay_ms=0, backoff_multiplier=1, jitter_factor=1
    )
    assert compute_backoff_ms(config, 0, lambda: 0.5) == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.5, 1),
        (1.5, 2),
        (2.5, 3),
        (-0.5, 0),
        (-2.5, -2),
        (-2.6, -3),
        (2.4999999999999996, 2),
        (0.49999999999999994, 0),  # floor(x + 0.5) would give 1
        (4503599627370495.5, 4503599627370496),  # 2**52 - 0.5
        (9007199254740993.0, 9007199254740992),  # already an integer double
        (0.0, 0),
        (7.0, 7),
    ],
)
def test_js_round(value: float, expected: int) -> None:
    assert js_round(value) == expected
    assert type(js_round(value)) is int


def test_backoff_overflow_is_capped() -> None:
    config = ReconnectionConfig(jitter=False, max_retries=100_000)
    assert compute_backoff_ms(config, 2000, lambda: 0.0) == 30000  # 2.0**2000 overflows
    assert compute_backoff_ms(config, 100_000, lambda: 0.0) == 30000


def test_backoff_with_zero_initial_delay_never_becomes_nan() -> None:
    config = ReconnectionConfig(jitter=True, initial_delay_ms=0)
    assert compute_backoff_ms(config, 5000, lambda: 0.9) == 0


def test_backoff_calls_random_once_per_delay_only_with_jitter() -> None:
    calls: list[int] = []

    def rnd() -> float:
        calls.append(1)
        return 0.5

    compute_backoff_ms(ReconnectionConfig(jitter=False), 0, rnd)
    assert calls == []
    assert compute_backoff_ms(ReconnectionConfig(), 0, rnd) == 1000
    assert calls == [1]


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            StateChangeEvent(ConnectionState.CONNECTED, ConnectionState.CONNECTING),
            {"type": "state_change", "state": "connected", "previousState": "connecting"},
        ),
        (RetryScheduledEvent(2, 1500), {"type": "retry_scheduled", "attempt": 2, "delayMs": 1500}),
        (RetryStartedEvent(2), {"type": "retry_started", "attempt": 2}),
        (ConnectedEvent(), {"type": "connected"}),
        (DisconnectedEvent(), {"type": "disconnected"}),
        (DisconnectedEvent("eof"), {"type": "disconnected", "reason": "eof"}),
        (FailedEvent("auth"), {"type": "failed", "reason": "auth"}),
    ],
    ids=lambda v: getattr(v, "type", ""),
)
def test_event_shapes(event: ReconnectionEvent, expected: dict[str, object]) -> None:
    assert event.to_dict() == expected
    assert event.type == expected["type"]
    assert type(event).type == expected["type"]


def test_events_are_frozen_and_matchable() -> None:
    scheduled = RetryScheduledEvent(attempt=1, delay_ms=1000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        scheduled.attempt = 2  # type: ignore[misc]
    event: ReconnectionEvent = scheduled
    match event:
        case RetryScheduledEvent(delay_ms=delay):
            assert delay == 1000
        case _:
            pytest.fail("no match")


def test_max_retries_none_retries_for_ever_with_capped_delays() -> None:
    config = ReconnectionConfig(
        max_retries=None, initial_delay_ms=100, max_delay_ms=1000, jitter=False
    )
    machine = ReconnectionStateMachine(config)
    machine.connect()
    machine.on_connected()
    delays = []
    for _ in range(1000):
        machine.on_disconnected("cut")
        assert machine.state is ConnectionState.RECONNECTING
        assert machine.can_reconnect()
        pending = machine.pending_retry
        assert pending is not None
        delays.append(pending.delay_seconds)
        machine.fire_retry()
    assert machine.retry_count == 1000
    assert delays[:5] == [0.1, 0.2, 0.4, 0.8, 1.0]
    assert set(delays[4:]) == {1.0}
    with pytest.raises(ReconnectionConfigError):
        ReconnectionConfig(max_retries=-1)
