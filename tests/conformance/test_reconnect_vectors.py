"""Conformance with the reference's reconnect.ts traces (tests/vectors/reconnect.json).

The reference's fake ``setTimeout`` becomes the machine's ``pending_retry``
and its ``fire_timer`` step becomes ``fire_retry()``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from enclave_stream.reconnect import (
    ConnectionState,
    EventBuffer,
    ReconnectionConfig,
    ReconnectionEvent,
    ReconnectionStateMachine,
    SequenceTracker,
    compute_backoff_ms,
)
from tests.vectors import case_id, cases, load_vectors

_CONFIG_KEYS = {
    "maxRetries": "max_retries",
    "initialDelayMs": "initial_delay_ms",
    "maxDelayMs": "max_delay_ms",
    "backoffMultiplier": "backoff_multiplier",
    "jitter": "jitter",
    "jitterFactor": "jitter_factor",
}

_KINDS = ("state_machine", "backoff", "jitter", "sequence_tracker", "event_buffer")

# The largest double below 1: the top of Math.random()'s range.
_RANDOM_MAX = 1 - 2**-53


def _config(partial: dict[str, Any]) -> ReconnectionConfig:
    """The reference merges a partial config over the defaults; so does this."""
    return ReconnectionConfig(**{_CONFIG_KEYS[key]: value for key, value in partial.items()})


def _fixed(r: float) -> Callable[[], float]:
    return lambda: r


def _no_random() -> float:
    raise AssertionError("random() must not be called with jitter off")


def test_every_case_kind_is_checked() -> None:
    kinds = Counter(case["kind"] for case in load_vectors("reconnect.json")["cases"])
    assert set(kinds) == set(_KINDS), f"unhandled kinds: {set(kinds) - set(_KINDS)}"


@pytest.mark.parametrize("case", cases("reconnect.json", "state_machine"), ids=case_id)
def test_state_machine_trace(case: dict[str, Any]) -> None:
    seen: list[ReconnectionEvent] = []
    machine = ReconnectionStateMachine(
        _config(case["config"]), on_event=seen.append, random=_no_random
    )
    assert machine.state == case["initial"]["state"]
    assert machine.retry_count == case["initial"]["retryCount"]

    for index, step in enumerate(case["steps"]):
        where = f"step {index} ({step['call']})"
        seen.clear()
        call = step["call"]
        if call == "connect":
            machine.connect()
        elif call == "onConnected":
            machine.on_connected()
        elif call == "onDisconnected":
            if "arg" in step:
                machine.on_disconnected(step["arg"])
            else:
                machine.on_disconnected()
        elif call == "onFatalError":
            machine.on_fatal_error(step["arg"])
        elif call == "close":
            machine.close()
        elif call == "reset":
            machine.reset()
        elif call == "fire_timer":
            assert machine.fire_retry() is step["fired"], where
        else:
            pytest.fail(f"unknown call {call!r} in {where}")

        assert [event.to_dict() for event in seen] == step["events"], where
        assert machine.state == step["state"], where
        assert isinstance(machine.state, ConnectionState), where
        assert machine.retry_count == step["retryCount"], where
        assert machine.can_reconnect() is step["canReconnect"], where
        # The reference keeps a list of timers; the traces never hold more than one.
        pending = [] if machine.pending_retry is None else [machine.pending_retry.delay_ms]
        assert pending == step["pendingTimers"], where


def _delay_seen_by_machine(config: ReconnectionConfig, retry_count: int, r: float) -> int:
    """Drive a machine to ``retry_count`` retries and read the next retry_scheduled delay."""
    config = ReconnectionConfig(**{**_fields(config), "max_retries": retry_count + 1})
    machine = ReconnectionStateMachine(config, random=lambda: r)
    machine.connect()
    for _ in range(retry_count):
        machine.on_disconnected()
        assert machine.fire_retry()
    machine.on_disconnected()
    assert machine.pending_retry is not None
    assert machine.pending_retry.attempt == retry_count + 1
    return machine.pending_retry.delay_ms


def _fields(config: ReconnectionConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in _CONFIG_KEYS.values()}


@pytest.mark.parametrize("case", cases("reconnect.json", "backoff"), ids=case_id)
def test_backoff(case: dict[str, Any]) -> None:
    config = _config(case["config"])
    for row in case["delays"]:
        retry_count, expected = row["retry_count"], row["delayMs"]
        got = compute_backoff_ms(config, retry_count, _no_random)
        assert got == expected, f"retry_count {retry_count}"
        assert type(got) is int
        assert _delay_seen_by_machine(config, retry_count, 0.0) == expected


@pytest.mark.parametrize("case", cases("reconnect.json", "jitter"), ids=case_id)
def test_jitter(case: dict[str, Any]) -> None:
    config = _config(case["config"])
    for row in case["rows"]:
        retry_count, bounds = row["retry_count"], row["bounds"]
        for sample in row["samples"]:
            r, expected = sample["random"], sample["delayMs"]
            assert compute_backoff_ms(config, retry_count, _fixed(r)) == expected, (
                f"retry_count {retry_count}, random {r}"
            )
            assert _delay_seen_by_machine(config, retry_count, r) == expected
            assert bounds["min"] <= expected <= bounds["max"]
        assert compute_backoff_ms(config, retry_count, lambda: 0.0) == bounds["min"]
        assert compute_backoff_ms(config, retry_count, lambda: _RANDOM_MAX) == bounds["max"]


@pytest.mark.parametrize("case", cases("reconnect.json", "sequence_tracker"), ids=case_id)
def test_sequence_tracker(case: dict[str, Any]) -> None:
    tracker = SequenceTracker() if case["maxGaps"] is None else SequenceTracker(case["maxGaps"])
    for index, step in enumerate(case["steps"]):
        where = f"step {index} ({step['call']} {step['args']})"
        if step["call"] == "receive":
            assert tracker.receive(*step["args"]).to_dict() == step["result"], where
        elif step["call"] == "clearGap":
            tracker.clear_gap(*step["args"])
        elif step["call"] == "reset":
            tracker.reset()
        else:
            pytest.fail(f"unknown call in {where}")
        assert tracker.last_seq == step["lastSeq"], where
        assert [gap.to_dict() for gap in tracker.gaps] == step["gaps"], where
        assert tracker.has_gaps() is step["hasGaps"], where


def _matches(got: list[dict[str, Any]], expected: Any) -> bool:
    """Compare with a full list, or with the ``{length, first, last}`` summary of a long one."""
    if isinstance(expected, list):
        return got == expected
    return bool(
        len(got) == expected["length"]
        and got[0]["seq"] == expected["first"]["seq"]
        and got[-1]["seq"] == expected["last"]["seq"]
    )


@pytest.mark.parametrize("case", cases("reconnect.json", "event_buffer"), ids=case_id)
def test_event_buffer(case: dict[str, Any]) -> None:
    buffer: EventBuffer[dict[str, Any]]
    buffer = EventBuffer() if case["maxSize"] is None else EventBuffer(case["maxSize"])
    next_seq = 0
    for index, step in enumerate(case["steps"]):
        where = f"step {index} ({step['call']})"
        call = step["call"]
        if call == "add":
            assert buffer.add(step["event"]) is step["result"], where
        elif call == "add_n":
            accepted = 0
            for _ in range(step["n"]):
                accepted += buffer.add({"seq": next_seq})
                next_seq += 1
            assert accepted == step["accepted"], where
        elif call == "getAll":
            before = len(buffer)
            assert _matches(buffer.get_all(), step["result"]), where
            assert len(buffer) == before, where
        elif call == "drain":
            assert _matches(buffer.drain(), step["result"]), where
        elif call == "clear":
            buffer.clear()
        else:
            pytest.fail(f"unknown call in {where}")
        assert len(buffer) == step["size"], where
        assert buffer.is_full() is step["isFull"], where
