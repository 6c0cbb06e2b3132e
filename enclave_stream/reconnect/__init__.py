"""Reconnection for EnclaveJS streams: a sans-IO core and small anyio drivers.

Sans-IO (no clock, no tasks; time and randomness are injected), in
:mod:`~enclave_stream.reconnect.machine` and :mod:`~enclave_stream.reconnect.resume`:

* :class:`ReconnectionStateMachine` - connection state, retries, exponential
  backoff with jitter (:func:`compute_backoff_ms`), reported as
  :data:`ReconnectionEvent` objects.
* :class:`SequenceTracker` - gaps, repeats and late arrivals in ``seq`` numbers.
* :class:`ResumeCore` - what a resumable client does with each event, and
  where it resumes; both of the above are its parts.
* :class:`EventBuffer` - a bounded buffer that refuses rather than evicts.

anyio drivers, in :mod:`~enclave_stream.reconnect.client`:

* :func:`open_event_stream` - a session's events, each exactly once, across
  reconnects, by driving a :class:`ResumeCore`.
* :class:`HeartbeatMonitor` - calls a handler when heartbeats stop.
* :func:`drive_reconnection` - sleeps each pending retry's delay, then fires it.

Connectors over httpx (:func:`httpx_connector`, :func:`broker_connector`,
:class:`BrokerConnector`) live in :mod:`~enclave_stream.reconnect.http`; they
need the ``httpx`` extra, so that module is imported only when one of them is
asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
    "ResumeCore",
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
from .client import (
    Connector,
    EncryptingConnector,
    EnvelopeOpener,
    HeartbeatMonitor,
    ResumableEventStream,
    drive_reconnection,
    is_retryable,
    open_event_stream,
)
from .machine import (
    DEFAULT_RECONNECTION_CONFIG,
    ConnectedEvent,
    ConnectionState,
    DisconnectedEvent,
    FailedEvent,
    PendingRetry,
    ReconnectionConfig,
    ReconnectionEvent,
    ReconnectionStateMachine,
    RetryScheduledEvent,
    RetryStartedEvent,
    StateChangeEvent,
    compute_backoff_ms,
    js_round,
)
from .resume import (
    EventBuffer,
    ReceiveResult,
    ResumeCore,
    SequenceGap,
    SequenceTracker,
)

if TYPE_CHECKING:
    from .http import BrokerConnector as BrokerConnector
    from .http import broker_connector as broker_connector
    from .http import httpx_connector as httpx_connector


def __getattr__(name: str) -> object:
    # httpx is an optional extra: import what needs it only when asked for.
    if name in ("BrokerConnector", "broker_connector", "httpx_connector"):
        from . import http

        return getattr(http, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
