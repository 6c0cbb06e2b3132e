"""Reconnection for EnclaveJS streams: a sans-IO core and small anyio drivers.

Sans-IO (no clock, no tasks; time and randomness are injected):

* :class:`ReconnectionStateMachine` - connection state, retries, exponential
  backoff with jitter (:func:`compute_backoff_ms`), reported as
  :data:`ReconnectionEvent` objects.
* :class:`SequenceTracker` - gaps and duplicates in ``seq`` numbers.
* :class:`EventBuffer` - a bounded buffer that refuses rather than evicts.

anyio drivers:

* :func:`drive_reconnection` - sleeps each pending retry's delay, then fires it.
* :class:`HeartbeatMonitor` - calls a handler when heartbeats stop.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_RECONNECTION_CONFIG",
    "ConnectedEvent",
    "ConnectionState",
    "DisconnectedEvent",
    "EventBuffer",
    "FailedEvent",
    "HeartbeatMonitor",
    "PendingRetry",
    "ReceiveResult",
    "ReconnectionConfig",
    "ReconnectionConfigError",
    "ReconnectionEvent",
    "ReconnectionStateMachine",
    "RetryScheduledEvent",
    "RetryStartedEvent",
    "SequenceGap",
    "SequenceTracker",
    "StateChangeEvent",
    "compute_backoff_ms",
    "drive_reconnection",
    "js_round",
]

from .buffer import EventBuffer
from .driver import drive_reconnection
from .heartbeat import HeartbeatMonitor
from .machine import PendingRetry, ReconnectionStateMachine
from .sequence import ReceiveResult, SequenceGap, SequenceTracker
from .state import (
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
