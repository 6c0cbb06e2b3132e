"""Connection states, reconnection settings, observer events and the backoff rule.

Everything here is plain data plus one pure function (:func:`compute_backoff_ms`);
the state machine that uses them lives in :mod:`enclave_stream.reconnect.machine`.
"""

from __future__ import annotations

from ..errors import ReconnectionConfigError

__all__ = [
    "DEFAULT_RECONNECTION_CONFIG",
    "ConnectedEvent",
    "ConnectionState",
    "DisconnectedEvent",
    "FailedEvent",
    "ReconnectionConfig",
    "ReconnectionEvent",
    "RetryScheduledEvent",
    "RetryStartedEvent",
    "StateChangeEvent",
    "compute_backoff_ms",
    "js_round",
]

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Final, Literal, TypeAlias

from ..protocol import StrEnum


class ConnectionState(StrEnum):
    """Where a connection stands; the values are the reference's strings.

    >>> ConnectionState.RECONNECTING == "reconnecting"
    True
    """

    DISCONNECTED = "disconnected"
    """Not connected, and nothing scheduled (the initial state)."""
    CONNECTING = "connecting"
    """A connection attempt is under way."""
    CONNECTED = "connected"
    """The connection is up."""
    RECONNECTING = "reconnecting"
    """The connection was lost; a retry is scheduled."""
    FAILED = "failed"
    """Gave up: retries exhausted or a fatal error."""
    CLOSED = "closed"
    """Closed on purpose by the caller."""


def _check_number(
    name: str, value: object, *, minimum: float, maximum: float | None = None
) -> None:
    # bool is an int subclass; `jitter_factor=True` is a mistake, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ReconnectionConfigError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ReconnectionConfigError(f"{name} must be finite, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ReconnectionConfigError(f"{name} must be {bound}, got {value!r}")


@dataclass(frozen=True, slots=True)
class ReconnectionConfig:
    """How a :class:`~enclave_stream.reconnect.ReconnectionStateMachine` retries.

    The defaults equal the reference's ``DEFAULT_RECONNECTION_CONFIG``. Invalid
    values raise :class:`ReconnectionConfigError` at construction, so a bad
    setting fails where it is written rather than at the first disconnect.

    Attributes:
        max_retries: retries allowed after a disconnect before giving up
            (an int >= 0; 0 means fail on the first disconnect).
        initial_delay_ms: delay before the first retry (finite, >= 0).
        max_delay_ms: cap on any delay before jitter (finite, >= 0).
        backoff_multiplier: growth factor per retry (finite, >= 1).
        jitter: whether to spread delays randomly around the computed value.
        jitter_factor: relative spread, between 0 and 1: a delay ``d`` becomes
            a value in ``[d - d*f, d + d*f)``.

    >>> import dataclasses
    >>> fast = dataclasses.replace(DEFAULT_RECONNECTION_CONFIG, initial_delay_ms=100, jitter=False)
    >>> fast.max_retries
    5
    """

    max_retries: int = 5
    initial_delay_ms: float = 1000
    max_delay_ms: float = 30000
    backoff_multiplier: float = 2
    jitter: bool = True
    jitter_factor: float = 0.3

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise ReconnectionConfigError(f"max_retries must be an int, got {self.max_retries!r}")
        if self.max_retries < 0:
            raise ReconnectionConfigError(f"max_retries must be >= 0, got {self.max_retries!r}")
        _check_number("initial_delay_ms", self.initial_delay_ms, minimum=0)
        _check_number("max_delay_ms", self.max_delay_ms, minimum=0)
        _check_number("backoff_multiplier", self.backoff_multiplier, minimum=1)
        if not isinstance(self.jitter, bool):
            raise ReconnectionConfigError(f"jitter must be a bool, got {self.jitter!r}")
        _check_number("jitter_factor", self.jitter_factor, minimum=0, maximum=1)


DEFAULT_RECONNECTION_CONFIG: Final = ReconnectionConfig()
"""The reference defaults: 5 retries, 1 s doubling up to 30 s, 30 % jitter."""


def js_round(value: float) -> int:
    """Round like JavaScript's ``Math.round``: halves go up, towards +infinity.

    Python's :func:`round` sends halves to the even neighbour (``round(2.5) == 2``),
    and ``floor(x + 0.5)`` is wrong for ``0.49999999999999994`` (the sum rounds
    up to 1.0), so the fraction is compared on its own; ``x - floor(x)`` is exact.

    >>> js_round(2.5), js_round(-2.5), js_round(0.49999999999999994)
    (3, -2, 0)
    """
    floor = math.floor(value)
    return floor + 1 if value - floor >= 0.5 else floor


def compute_backoff_ms(
    config: ReconnectionConfig, retry_count: int, random: Callable[[], float]
) -> int:
    """The delay (ms) before retry number ``retry_count + 1``, as the reference computes it.

    ``d = min(initial * multiplier ** retry_count, max)``; with jitter
    ``d = d - d*f + random()*d*f*2``; then :func:`js_round`. ``random`` is called
    only when jitter is on, and must return a float in ``[0, 1)``.

    >>> cfg = ReconnectionConfig(jitter=False)
    >>> [compute_backoff_ms(cfg, r, random=lambda: 0.0) for r in range(6)]
    [1000, 2000, 4000, 8000, 16000, 30000]
    """
    try:
        growth = float(config.backoff_multiplier) ** retry_count
    except OverflowError:
        # JavaScript's Math.pow overflows to Infinity; the cap below absorbs it.
        growth = math.inf
    # 0 * inf is NaN in both languages; the reference then hands NaN to
    # setTimeout, which waits 0 ms. Say 0 directly.
    delay = 0.0 if config.initial_delay_ms == 0 else config.initial_delay_ms * growth
    delay = min(delay, config.max_delay_ms)
    if config.jitter:
        # Same operation order as the reference, so float rounding agrees too.
        amount = delay * config.jitter_factor
        delay = delay - amount + random() * amount * 2
    return js_round(delay)


@dataclass(frozen=True, slots=True)
class StateChangeEvent:
    """The machine moved from ``previous_state`` to ``state`` (never to the same state)."""

    type: ClassVar[Literal["state_change"]] = "state_change"
    state: ConnectionState
    previous_state: ConnectionState

    def to_dict(self) -> dict[str, object]:
        """The reference's JSON shape: ``{"type", "state", "previousState"}``."""
        return {
            "type": self.type,
            "state": self.state.value,
            "previousState": self.previous_state.value,
        }


@dataclass(frozen=True, slots=True)
class RetryScheduledEvent:
    """Retry number ``attempt`` (1-based) will start after ``delay_ms``."""

    type: ClassVar[Literal["retry_scheduled"]] = "retry_scheduled"
    attempt: int
    delay_ms: int

    def to_dict(self) -> dict[str, object]:
        """The reference's JSON shape: ``{"type", "attempt", "delayMs"}``."""
        return {"type": self.type, "attempt": self.attempt, "delayMs": self.delay_ms}


@dataclass(frozen=True, slots=True)
class RetryStartedEvent:
    """The delay of retry ``attempt`` ran out; the caller should connect now."""

    type: ClassVar[Literal["retry_started"]] = "retry_started"
    attempt: int

    def to_dict(self) -> dict[str, object]:
        """The reference's JSON shape: ``{"type", "attempt"}``."""
        return {"type": self.type, "attempt": self.attempt}


@dataclass(frozen=True, slots=True)
class ConnectedEvent:
    """A connection succeeded (emitted on every ``on_connected()``, even when already connected)."""

    type: ClassVar[Literal["connected"]] = "connected"

    def to_dict(self) -> dict[str, object]:
        """The reference's JSON shape: ``{"type": "connected"}``."""
        return {"type": self.type}


@dataclass(frozen=True, slots=True)
class DisconnectedEvent:
    """The connection was lost; ``reason`` is None when the caller gave none."""

    type: ClassVar[Literal["disconnected"]] = "disconnected"
    reason: str | None = None

    def to_dict(self) -> dict[str, object]:
        """The reference's JSON shape; without a reason there is no ``"reason"`` key."""
        if self.reason is None:
            return {"type": self.type}
        return {"type": self.type, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class FailedEvent:
    """The machine gave up (retries exhausted or a fatal error)."""

    type: ClassVar[Literal["failed"]] = "failed"
    reason: str

    def to_dict(self) -> dict[str, object]:
        """The reference's JSON shape: ``{"type", "reason"}``."""
        return {"type": self.type, "reason": self.reason}


ReconnectionEvent: TypeAlias = (
    StateChangeEvent
    | RetryScheduledEvent
    | RetryStartedEvent
    | ConnectedEvent
    | DisconnectedEvent
    | FailedEvent
)
"""Any event a :class:`~enclave_stream.reconnect.ReconnectionStateMachine` emits.

Dispatch on the class (``match event: case RetryScheduledEvent(delay_ms=d): ...``)
or on ``event.type``.
"""
