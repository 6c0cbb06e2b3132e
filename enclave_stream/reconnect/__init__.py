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
* :func:`open_event_stream` - a session's events, each exactly once, across
  reconnects. :func:`enclave_stream.reconnect.httpx_connector.httpx_connector`
  connects it to an HTTP broker; that module needs the ``httpx`` extra, so it
  is not imported here.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_RECONNECTION_CONFIG",
    "ConnectedEvent",
    "ConnectionState",
    "Connector",
    "ConnectorError",
    "DisconnectedEvent",
    "EncryptingConnector",
    "EnvelopeOpener",
    "EventBuffer",
    "FailedEvent",
    "FatalConnectError",
    "HeartbeatMonitor",
    "PendingRetry",
    "ReceiveResult",
    "ReconnectionConfig",
    "ReconnectionConfigError",
    "ReconnectionEvent",
    "LineTooLongError",
    "ReconnectionStateMachine",
    "ResumableEventStream",
    "RetryScheduledEvent",
    "RetryStartedEvent",
    "RetryableConnectError",
    "SequenceGap",
    "SequenceGapError",
    "SequenceTracker",
    "SessionMismatchError",
    "StateChangeEvent",
    "StreamFailedError",
    "compute_backoff_ms",
    "drive_reconnection",
    "is_retryable",
    "js_round",
    "open_event_stream",
]

from ..errors import (
    ConnectorError,
    FatalConnectError,
    LineTooLongError,
    ReconnectionConfigError,
    RetryableConnectError,
    SequenceGapError,
    SessionMismatchError,
    StreamFailedError,
)
from .buffer import EventBuffer
from .client import Connector, EnvelopeOpener, ResumableEventStream, open_event_stream
from .connector import EncryptingConnector, is_retryable
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
    ReconnectionEvent,
    RetryScheduledEvent,
    RetryStartedEvent,
    StateChangeEvent,
    compute_backoff_ms,
    js_round,
)
