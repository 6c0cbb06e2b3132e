"""enclave_stream: the anyio-native SDK for the EnclaveJS streaming protocol.

The everyday API is here; the rest has one home each:

* :mod:`enclave_stream.events` - a msgspec Struct for every message and payload.
* :mod:`enclave_stream.protocol` - constants, string enums, ids, header names.
* :mod:`enclave_stream.errors` - every exception, with the tree drawn.
* :mod:`enclave_stream.crypto` - ECDH, HKDF, AES-GCM, envelopes, the handshake
  and encrypted sessions.
* :mod:`enclave_stream.reconnect` - the reconnection state machine, the sans-IO
  resume core and the resumable client; httpx connectors in
  :mod:`enclave_stream.reconnect.http` (the ``httpx`` extra).
* :mod:`enclave_stream.producer` - event logs, event streams and the session
  broker; ASGI routes in :mod:`enclave_stream.starlette` (the ``starlette`` extra).

``aconnect_ndjson`` (one checked NDJSON response), ``httpx_connector``,
``httpx_sync_connector``, ``broker_connector``, ``BrokerConnector``, ``session_connector`` and
``SessionConnector`` are also reachable here,
imported on first use, and are not in ``__all__`` because they need httpx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .codec import EventEncoder, decode_message, encode_message, validate_event
from .crypto import (
    ClientHandshake,
    EncryptedSession,
    accept_client_hello,
    decrypt_events,
    encrypt_events,
)
from .errors import (
    BrokerError,
    ConnectorError,
    EnclaveStreamError,
    EncryptionError,
    EnvelopeError,
    EventValidationError,
    FailureKind,
    FatalConnectError,
    HandshakeError,
    LineError,
    NdjsonParseError,
    ProtocolError,
    ReplayUnavailableError,
    RetryableConnectError,
    SequenceGapError,
    StreamFailedError,
    StreamFinishedError,
)
from .events import (
    CatalogChangedEvent,
    CreateSessionRequest,
    DeadlineExceededEvent,
    EncryptedEnvelope,
    ErrorEvent,
    FinalEvent,
    HeartbeatEvent,
    LogEvent,
    ParsedEvent,
    PartialResultEvent,
    SessionInitEvent,
    StdoutEvent,
    StreamEvent,
    ToolCallEvent,
    ToolProgressEvent,
    ToolResultAppliedEvent,
)
from .ndjson import (
    DEFAULT_MAX_LINE_BYTES,
    FeedResult,
    NdjsonStreamParser,
    ParseFailure,
    ParseLinesResult,
    ParseResult,
    ParseSuccess,
    iter_ndjson_stream,
    parse_line,
    parse_lines,
    serialize_event,
    serialize_events,
)
from .producer import BrokerConfig, EventLog, EventStream, SessionBroker
from .protocol import (
    NDJSON_MEDIA_TYPE,
    PROTOCOL_VERSION,
    RESUME_PARAM,
    SERVER_HELLO_HEADER,
    SESSION_ID_HEADER,
    EncryptionMode,
    EventType,
    LogLevel,
    SessionState,
    generate_session_id,
    is_session_id,
)
from .reconnect import (
    ConnectionState,
    ReconnectionConfig,
    ResumableEventStream,
    follow_event_stream,
    open_event_stream,
)
from .streams import (
    create_ndjson_parse_stream,
    create_ndjson_serialize_stream,
    parse_ndjson_stream,
    serialize_ndjson_stream,
)

if TYPE_CHECKING:
    from .reconnect.aiohttp import aiohttp_connector as aiohttp_connector

    # For type checkers; at run time __getattr__ imports them on first use.
    from .reconnect.http import BrokerConnector as BrokerConnector
    from .reconnect.http import NdjsonSource as NdjsonSource
    from .reconnect.http import SessionConnector as SessionConnector
    from .reconnect.http import aconnect_ndjson as aconnect_ndjson
    from .reconnect.http import broker_connector as broker_connector
    from .reconnect.http import httpx_connector as httpx_connector
    from .reconnect.http import httpx_sync_connector as httpx_sync_connector
    from .reconnect.http import session_connector as session_connector

__version__ = "0.1.0"

__all__ = [
    # codec: lines and streams of events
    "DEFAULT_MAX_LINE_BYTES",
    "EventEncoder",
    "FeedResult",
    "NdjsonStreamParser",
    "ParseFailure",
    "ParseLinesResult",
    "ParseResult",
    "ParseSuccess",
    "create_ndjson_parse_stream",
    "create_ndjson_serialize_stream",
    "decode_message",
    "encode_message",
    "parse_line",
    "parse_lines",
    "iter_ndjson_stream",
    "parse_ndjson_stream",
    "serialize_event",
    "serialize_events",
    "serialize_ndjson_stream",
    "validate_event",
    # events
    "CatalogChangedEvent",
    "CreateSessionRequest",
    "DeadlineExceededEvent",
    "EncryptedEnvelope",
    "ErrorEvent",
    "FinalEvent",
    "HeartbeatEvent",
    "LogEvent",
    "ParsedEvent",
    "PartialResultEvent",
    "SessionInitEvent",
    "StdoutEvent",
    "StreamEvent",
    "ToolCallEvent",
    "ToolProgressEvent",
    "ToolResultAppliedEvent",
    # protocol
    "NDJSON_MEDIA_TYPE",
    "PROTOCOL_VERSION",
    "RESUME_PARAM",
    "SERVER_HELLO_HEADER",
    "SESSION_ID_HEADER",
    "EncryptionMode",
    "EventType",
    "LogLevel",
    "SessionState",
    "generate_session_id",
    "is_session_id",
    # errors
    "BrokerError",
    "ConnectorError",
    "EnclaveStreamError",
    "EncryptionError",
    "EnvelopeError",
    "EventValidationError",
    "FailureKind",
    "FatalConnectError",
    "HandshakeError",
    "LineError",
    "NdjsonParseError",
    "ProtocolError",
    "ReplayUnavailableError",
    "RetryableConnectError",
    "SequenceGapError",
    "StreamFailedError",
    "StreamFinishedError",
    # encryption
    "ClientHandshake",
    "EncryptedSession",
    "accept_client_hello",
    "decrypt_events",
    "encrypt_events",
    # reconnection
    "ConnectionState",
    "ReconnectionConfig",
    "ResumableEventStream",
    "open_event_stream",
    "follow_event_stream",
    # producing
    "BrokerConfig",
    "EventLog",
    "EventStream",
    "SessionBroker",
]


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
        from .reconnect import http

        return getattr(http, name)
    if name == "aiohttp_connector":  # aiohttp, also optional
        from .reconnect import aiohttp

        return aiohttp.aiohttp_connector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
