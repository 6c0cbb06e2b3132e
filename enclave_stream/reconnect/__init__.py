"""Reconnection for EnclaveJS streams: a sans-IO core and small anyio drivers.

Sans-IO: :mod:`.machine` (the state machine, backoff) and :mod:`.resume`
(sequence numbers, the resume decisions, the event buffer). anyio:
:mod:`.client` (:func:`open_event_stream`, :class:`HeartbeatMonitor`,
:func:`drive_reconnection`). httpx: :mod:`.http`, imported on first use of
one of its names (the ``httpx`` extra).
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
    "EncryptionNotAcceptedError",
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
    "SessionStartLostError",
    "StateChangeEvent",
    "StreamFailedError",
    "compute_backoff_ms",
    "drive_reconnection",
    "is_retryable",
    "js_round",
    "open_event_stream",
    "SyncConnector",
    "follow_event_stream",
]

from ..errors import (
    ConnectorError,
    EncryptionNotAcceptedError,
    FatalConnectError,
    LineTooLongError,
    ReconnectionConfigError,
    RetryableConnectError,
    SequenceGapError,
    SessionMismatchError,
    SessionStartLostError,
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
from .sync import SyncConnector, follow_event_stream

if TYPE_CHECKING:
    from .aiohttp import aiohttp_connector as aiohttp_connector
    from .http import BrokerConnector as BrokerConnector
    from .http import NdjsonSource as NdjsonSource
    from .http import SessionConnector as SessionConnector
    from .http import aconnect_ndjson as aconnect_ndjson
    from .http import broker_connector as broker_connector
    from .http import httpx_connector as httpx_connector
    from .http import httpx_sync_connector as httpx_sync_connector
    from .http import session_connector as session_connector


_NEEDS_HTTPX = (
    "BrokerConnector",
    "NdjsonSource",
    "SessionConnector",
    "aconnect_ndjson",
    "broker_connector",
    "httpx_connector",
    "httpx_sync_connector",
    "session_connector",
)


def __getattr__(name: str) -> object:
    # httpx is an optional extra: import what needs it only when asked for.
    if name in _NEEDS_HTTPX:
        from . import http

        return getattr(http, name)
    if name == "aiohttp_connector":  # aiohttp, also optional
        from . import aiohttp

        return aiohttp.aiohttp_connector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
