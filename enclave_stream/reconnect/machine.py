"""The sans-IO reconnection state machine: states, settings, backoff, events, the table.

Where a timer would be armed the machine records a :class:`PendingRetry`;
whoever owns time (:func:`~enclave_stream.reconnect.drive_reconnection`, the
resumable client, a test) calls :meth:`ReconnectionStateMachine.fire_retry`.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_RECONNECTION_CONFIG",
    "ConnectedEvent",
    "ConnectionState",
    "DisconnectedEvent",
    "FailedEvent",
    "PendingRetry",
    "ReconnectionConfig",
    "ReconnectionEvent",
    "ReconnectionStateMachine",
    "RetryScheduledEvent",
    "RetryStartedEvent",
    "StateChangeEvent",
    "compute_backoff_ms",
    "js_round",
]

import enum
import math
import random as _random
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import ClassVar, Final, Literal, TypeAlias

from .._options import check_number
from ..errors import ReconnectionConfigError
from ..protocol import StrEnum


class ConnectionState(StrEnum):
    """Where a connection stands; the values are the strings observers see in ``to_dict()``.

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


@dataclass(frozen=True, slots=True)
class ReconnectionConfig:
    """How a :class:`~enclave_stream.reconnect.ReconnectionStateMachine` retries.

    The defaults are those of ``DEFAULT_RECONNECTION_CONFIG``. Invalid
    values raise :class:`ReconnectionConfigError` at construction, so a bad
    setting fails where it is written rather than at the first disconnect.

    Attributes:
        max_retries: retries allowed after a disconnect before giving up
            (an int >= 0; 0 means fail on the first disconnect; None retries
            for ever, as websockets' ``connect()`` does: bound the stream
            with its ``deadline_ms`` then).
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

    max_retries: int | None = 5
    initial_delay_ms: float = 1000
    max_delay_ms: float = 30000
    backoff_multiplier: float = 2
    jitter: bool = True
    jitter_factor: float = 0.3

    def __post_init__(self) -> None:
        if self.max_retries is not None:
            check_number(
                "max_retries", self.max_retries, integer=True, error=ReconnectionConfigError
            )
        check_number("initial_delay_ms", self.initial_delay_ms, error=ReconnectionConfigError)
        check_number("max_delay_ms", self.max_delay_ms, error=ReconnectionConfigError)
        check_number(
            "backoff_multiplier", self.backoff_multiplier, minimum=1, error=ReconnectionConfigError
        )
        if not isinstance(self.jitter, bool):
            raise ReconnectionConfigError(f"jitter must be a bool, got {self.jitter!r}")
        check_number("jitter_factor", self.jitter_factor, maximum=1, error=ReconnectionConfigError)


DEFAULT_RECONNECTION_CONFIG: Final = ReconnectionConfig()
"""The defaults: 5 retries, 1 s doubling up to 30 s, 30 % jitter."""


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
    """The delay (ms) before retry number ``retry_count + 1``.

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
    # 0 * inf is NaN; waiting NaN ms means waiting 0 ms (docs/compatibility.md, R2).
    # Say 0 directly.
    delay = 0.0 if config.initial_delay_ms == 0 else config.initial_delay_ms * growth
    delay = min(delay, config.max_delay_ms)
    if config.jitter:
        # This operation order is part of the recorded traces: float rounding depends on it.
        amount = delay * config.jitter_factor
        delay = delay - amount + random() * amount * 2
    return js_round(delay)


_WORD_START: Final = re.compile(r"_([a-z])")


def _capital(match: re.Match[str]) -> str:
    return match[1].upper()


class _Event:
    """What the event classes share: their JSON shape."""

    __slots__ = ()
    type: ClassVar[str]

    def to_dict(self) -> dict[str, object]:
        """The JSON shape: ``type``, then each field in camelCase; a None field is left out."""
        shape: dict[str, object] = {"type": self.type}
        for field in fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            if isinstance(value, ConnectionState):
                value = value.value
            if value is not None:
                shape[_WORD_START.sub(_capital, field.name)] = value
        return shape


@dataclass(frozen=True, slots=True)
class StateChangeEvent(_Event):
    """The machine moved from ``previous_state`` to ``state`` (never to the same state)."""

    type: ClassVar[Literal["state_change"]] = "state_change"
    state: ConnectionState
    previous_state: ConnectionState


@dataclass(frozen=True, slots=True)
class RetryScheduledEvent(_Event):
    """Retry number ``attempt`` (1-based) will start after ``delay_ms``."""

    type: ClassVar[Literal["retry_scheduled"]] = "retry_scheduled"
    attempt: int
    delay_ms: int


@dataclass(frozen=True, slots=True)
class RetryStartedEvent(_Event):
    """The delay of retry ``attempt`` ran out; the caller should connect now."""

    type: ClassVar[Literal["retry_started"]] = "retry_started"
    attempt: int


@dataclass(frozen=True, slots=True)
class ConnectedEvent(_Event):
    """A connection succeeded (emitted on every ``on_connected()``, even when already connected)."""

    type: ClassVar[Literal["connected"]] = "connected"


@dataclass(frozen=True, slots=True)
class DisconnectedEvent(_Event):
    """The connection was lost; ``reason`` is None when the caller gave none."""

    type: ClassVar[Literal["disconnected"]] = "disconnected"
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class FailedEvent(_Event):
    """The machine gave up (retries exhausted or a fatal error)."""

    type: ClassVar[Literal["failed"]] = "failed"
    reason: str


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


@dataclass(frozen=True, slots=True)
class PendingRetry:
    """A scheduled retry: after ``delay_ms``, call ``fire_retry()`` to start ``attempt``.

    A new object is made for every scheduling, so a driver can tell with ``is``
    whether the retry it slept for is still the pending one.
    """

    attempt: int
    delay_ms: int

    @property
    def delay_seconds(self) -> float:
        """``delay_ms`` in seconds, for ``anyio.sleep`` and cancel-scope deadlines."""
        return self.delay_ms / 1000


class _Input(enum.Enum):
    CONNECT = "connect"
    CONNECTED = "on_connected"
    DISCONNECTED = "on_disconnected"
    FATAL_ERROR = "on_fatal_error"
    CLOSE = "close"
    RESET = "reset"
    RETRY_FIRED = "fire_retry"


@dataclass(frozen=True, slots=True)
class _Rule:
    acts_in: frozenset[ConnectionState]
    """States in which the input does anything; in every other state it is ignored."""
    target: ConnectionState
    when_exhausted: ConnectionState | None = None
    """Target instead of ``target`` when no retries are left."""
    resets_retries: bool = False


_S = ConnectionState
_ALL: Final = frozenset(ConnectionState)

# The whole machine. Besides the state change (reported only when the state
# really changes), every input that acts also cancels the pending retry, which
# exists exactly while the state is RECONNECTING. Events emitted per input, in
# order (the recorded traces check this):
#   connect          state_change
#   on_connected     state_change, connected           (connected even if already so)
#   on_disconnected  disconnected, state_change, retry_scheduled | failed
#   on_fatal_error   state_change, failed              (failed even if already so)
#   close / reset    state_change
#   fire_retry       retry_started, state_change       (retry count goes up first)
_TRANSITIONS: Final[dict[_Input, _Rule]] = {
    # Connecting twice would race two connections: ignored.
    _Input.CONNECT: _Rule(_ALL - {_S.CONNECTED, _S.CONNECTING}, _S.CONNECTING, resets_retries=True),
    # No guard: success is believed even after close/fail (as the traces record).
    _Input.CONNECTED: _Rule(_ALL, _S.CONNECTED, resets_retries=True),
    # A drop after close() or a fatal error is old news, not a reason to retry.
    _Input.DISCONNECTED: _Rule(
        _ALL - {_S.CLOSED, _S.FAILED}, _S.RECONNECTING, when_exhausted=_S.FAILED
    ),
    _Input.FATAL_ERROR: _Rule(_ALL, _S.FAILED),
    _Input.CLOSE: _Rule(_ALL, _S.CLOSED),
    _Input.RESET: _Rule(_ALL, _S.DISCONNECTED, resets_retries=True),
    _Input.RETRY_FIRED: _Rule(frozenset({_S.RECONNECTING}), _S.CONNECTING),
}

_MAX_RETRIES_EXCEEDED: Final = "Max retries exceeded"


class ReconnectionStateMachine:
    """Connection state and retry bookkeeping with exponential backoff, without I/O.

    Tell it what happened (:meth:`connect`, :meth:`on_connected`,
    :meth:`on_disconnected`, :meth:`on_fatal_error`, :meth:`close`,
    :meth:`reset`); it updates :attr:`state`, :attr:`retry_count` and
    :attr:`pending_retry` and reports :data:`~enclave_stream.reconnect.ReconnectionEvent`
    objects to ``on_event``, in the order of the table below.

    A disconnect while retries remain moves to ``reconnecting`` and schedules a
    retry (:attr:`pending_retry`); when the delay has passed, :meth:`fire_retry`
    counts the retry and moves to ``connecting``, and the caller reconnects and
    reports the outcome. The retry count returns to 0 on every successful
    connect, so a long-lived stream's later drops start again at the initial
    delay.

    Args:
        config: backoff settings; :data:`DEFAULT_RECONNECTION_CONFIG` if None.
        on_event: called synchronously with every event.
        random: source of jitter in ``[0, 1)``; inject a fixed one for tests.

    Calls made from inside ``on_event`` are safe: their events are delivered
    after the current ones (docs/compatibility.md, R3). An exception from
    ``on_event`` propagates to the caller; the state has changed by then and
    the events not yet delivered are dropped.

    >>> from enclave_stream.reconnect import ReconnectionConfig
    >>> seen = []
    >>> m = ReconnectionStateMachine(ReconnectionConfig(jitter=False), on_event=seen.append)
    >>> m.connect(); m.on_connected(); m.on_disconnected("network")
    >>> m.state, m.pending_retry
    (<ConnectionState.RECONNECTING: 'reconnecting'>, PendingRetry(attempt=1, delay_ms=1000))
    >>> m.fire_retry()
    True
    >>> m.state, m.retry_count
    (<ConnectionState.CONNECTING: 'connecting'>, 1)
    """

    def __init__(
        self,
        config: ReconnectionConfig | None = None,
        on_event: Callable[[ReconnectionEvent], None] | None = None,
        *,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self._config = DEFAULT_RECONNECTION_CONFIG if config is None else config
        self._on_event = on_event
        self._random = random
        self._state = ConnectionState.DISCONNECTED
        self._retry_count = 0
        self._pending: PendingRetry | None = None
        self._retry_listeners: list[Callable[[], None]] = []
        self._queue: deque[ReconnectionEvent] = deque()
        self._delivering = False

    @property
    def config(self) -> ReconnectionConfig:
        """The backoff settings in use."""
        return self._config

    @property
    def state(self) -> ConnectionState:
        """The current :class:`ConnectionState` (``getState()``)."""
        return self._state

    @property
    def retry_count(self) -> int:
        """Retries started since the last successful connect (``getRetryCount()``)."""
        return self._retry_count

    @property
    def pending_retry(self) -> PendingRetry | None:
        """The scheduled retry, or None; set exactly while the state is ``reconnecting``."""
        return self._pending

    def can_reconnect(self) -> bool:
        """True unless closed, failed, or out of retries (``canReconnect()``)."""
        return (
            self._state not in (ConnectionState.FAILED, ConnectionState.CLOSED)
            and not self._out_of_retries()
        )

    def _out_of_retries(self) -> bool:
        limit = self._config.max_retries
        return limit is not None and self._retry_count >= limit

    def connect(self) -> None:
        """Start connecting; a no-op while connecting or connected.

        Cancels a pending retry and resets the retry count.
        """
        self._deliver(self._apply(_Input.CONNECT))

    def on_connected(self) -> None:
        """Report a successful connection: state ``connected``, retry count 0."""
        events = self._apply(_Input.CONNECTED)
        events.append(ConnectedEvent())
        self._deliver(events)

    def on_disconnected(self, reason: str | None = None, *, wait_ms: float = 0) -> None:
        """Report a lost connection; schedules a retry, or fails when none are left.

        Ignored when closed or failed. Emits ``disconnected`` (with ``reason``),
        then either ``retry_scheduled`` or ``failed`` (with ``reason``, or
        ``"Max retries exceeded"`` when None). ``wait_ms`` is the least delay
        the server asked for (``Retry-After``): the retry waits for the longer
        of the backoff and ``wait_ms`` capped at ``max_delay_ms``.
        """
        if self._state not in _TRANSITIONS[_Input.DISCONNECTED].acts_in:
            return
        events: list[ReconnectionEvent] = [DisconnectedEvent(reason)]
        # A drop while already reconnecting replaces the pending retry (same
        # attempt number, fresh delay) without a state change.
        events += self._apply(_Input.DISCONNECTED)
        if self._state is ConnectionState.RECONNECTING:
            delay_ms = compute_backoff_ms(self._config, self._retry_count, self._random)
            # The jittered backoff may pass max_delay_ms: a capped wait never shortens it.
            delay_ms = max(delay_ms, js_round(min(wait_ms, self._config.max_delay_ms)))
            self._set_pending(PendingRetry(self._retry_count + 1, delay_ms))
            events.append(RetryScheduledEvent(self._retry_count + 1, delay_ms))
        else:
            events.append(FailedEvent(_MAX_RETRIES_EXCEEDED if reason is None else reason))
        self._deliver(events)

    def on_fatal_error(self, reason: str) -> None:
        """Give up at once (for errors a retry cannot fix): state ``failed``."""
        events = self._apply(_Input.FATAL_ERROR)
        events.append(FailedEvent(reason))
        self._deliver(events)

    def close(self) -> None:
        """Close on purpose: state ``closed``; cancels a pending retry."""
        self._deliver(self._apply(_Input.CLOSE))

    def reset(self) -> None:
        """Back to the initial state ``disconnected``, retry count 0, nothing pending."""
        self._deliver(self._apply(_Input.RESET))

    def fire_retry(self) -> bool:
        """Start the pending retry: what a retry timer does when it fires.

        Returns False (and does nothing) when no retry is pending. Otherwise
        the retry count goes up, ``retry_started`` is emitted and the state
        becomes ``connecting``: the caller should now open a connection and
        report the outcome.
        """
        pending = self._pending
        if pending is None:
            return False
        self._retry_count += 1
        events: list[ReconnectionEvent] = [RetryStartedEvent(pending.attempt)]
        events += self._apply(_Input.RETRY_FIRED)
        self._deliver(events)
        return True

    def add_retry_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` whenever :attr:`pending_retry` changes; returns a remover.

        This is how a driver sleeping on a retry learns that it was cancelled
        or replaced. The listener runs synchronously inside the machine's
        method, before any ``on_event`` call for that change, and must not
        raise.
        """
        self._retry_listeners.append(listener)

        def remove() -> None:
            if listener in self._retry_listeners:
                self._retry_listeners.remove(listener)

        return remove

    def _apply(self, inp: _Input) -> list[ReconnectionEvent]:
        """Apply the table's rule for ``inp``; returns the state change, if any."""
        rule = _TRANSITIONS[inp]
        if self._state not in rule.acts_in:
            return []
        self._set_pending(None)
        if rule.resets_retries:
            self._retry_count = 0
        target = rule.target
        if rule.when_exhausted is not None and self._out_of_retries():
            target = rule.when_exhausted
        previous, self._state = self._state, target
        if previous is target:
            return []
        return [StateChangeEvent(state=target, previous_state=previous)]

    def _set_pending(self, pending: PendingRetry | None) -> None:
        if pending is None and self._pending is None:
            return
        self._pending = pending
        for listener in tuple(self._retry_listeners):
            listener()

    def _deliver(self, events: list[ReconnectionEvent]) -> None:
        if self._on_event is None:
            return
        self._queue.extend(events)
        if self._delivering:
            # A call from inside on_event: the outer loop delivers these next.
            return
        self._delivering = True
        try:
            while self._queue:
                self._on_event(self._queue.popleft())
        finally:
            self._delivering = False
            self._queue.clear()
