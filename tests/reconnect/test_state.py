"""ReconnectionConfig validation, JavaScript rounding, backoff and event shapes."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from enclave_stream.errors import EnclaveStreamError
from enclave_stream.reconnect import (
    DEFAULT_RECONNECTION_CONFIG,
    ConnectedEvent,
    ConnectionState,
    DisconnectedEvent,
    FailedEvent,
    ReconnectionConfig,
    ReconnectionConfigError,
    ReconnectionEvent,
    RetryScheduledEvent,
    RetryStartedEvent,
    StateChangeEvent,
    compute_backoff_ms,
    js_round,
)


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
