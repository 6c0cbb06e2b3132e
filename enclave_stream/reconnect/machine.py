"""The sans-IO reconnection state machine.

It owns no clock, no task and no timer: where the reference arms a
``setTimeout`` the machine records a :class:`PendingRetry`, and whoever owns
time (:func:`~enclave_stream.reconnect.drive_reconnection`, or a test) calls
:meth:`ReconnectionStateMachine.fire_retry` once that delay has passed.
"""

from __future__ import annotations

__all__ = ["PendingRetry", "ReconnectionStateMachine"]

import enum
import random as _random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from .state import (
    DEFAULT_RECONNECTION_CONFIG,
    ConnectedEvent,
    ConnectionState,
    DisconnectedEvent,
    FailedEvent,
    ReconnectionConfig,
    ReconnectionEvent,
    RetryScheduledEvent,
    RetryStartedEvent,
    StateChangeEvent,
    compute_backoff_ms,
)


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
# order (from the reference):
#   connect          state_change
#   on_connected     state_change, connected           (connected even if already so)
#   on_disconnected  disconnected, state_change, retry_scheduled | failed
#   on_fatal_error   state_change, failed              (failed even if already so)
#   close / reset    state_change
#   fire_retry       retry_started, state_change       (retry count goes up first)
_TRANSITIONS: Final[dict[_Input, _Rule]] = {
    # Connecting twice would race two connections; the reference ignores it.
    _Input.CONNECT: _Rule(_ALL - {_S.CONNECTED, _S.CONNECTING}, _S.CONNECTING, resets_retries=True),
    # No guard in the reference: success is believed even after close/fail.
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
    objects to ``on_event``, in the reference's order.

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

    Calls made from inside ``on_event`` are safe: their events are queued and
    delivered after the ones already being delivered, so observers always see
    events in the order the changes happened (the state an observer reads may
    then already be newer than the event it handles). An exception from
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
        """The current :class:`ConnectionState` (the reference's ``getState()``)."""
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
            and self._retry_count < self._config.max_retries
        )

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

    def on_disconnected(self, reason: str | None = None) -> None:
        """Report a lost connection; schedules a retry, or fails when none are left.

        Ignored when closed or failed. Emits ``disconnected`` (with ``reason``),
        then either ``retry_scheduled`` or ``failed`` (with ``reason``, or
        ``"Max retries exceeded"`` when None).
        """
        if self._state not in _TRANSITIONS[_Input.DISCONNECTED].acts_in:
            return
        events: list[ReconnectionEvent] = [DisconnectedEvent(reason)]
        # A drop while already reconnecting replaces the pending retry (same
        # attempt number, fresh delay) without a state change.
        events += self._apply(_Input.DISCONNECTED)
        if self._state is ConnectionState.RECONNECTING:
            delay_ms = compute_backoff_ms(self._config, self._retry_count, self._random)
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
        """Do what the reference's retry timer does when it fires.

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
        if rule.when_exhausted is not None and self._retry_count >= self._config.max_retries:
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
