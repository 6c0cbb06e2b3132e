"""enclave_stream: the anyio-native SDK for the EnclaveJS streaming protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .codec import EventEncoder, decode_message, encode_message, validate_event
from .crypto import *  # noqa: F403
from .crypto import __all__ as _crypto_all
from .errors import (
    EnclaveStreamError,
    EventValidationError,
    FailureKind,
    LineError,
    NdjsonParseError,
    ProtocolError,
)
from .events import *  # noqa: F403
from .events import __all__ as _events_all
from .ndjson import (
    DEFAULT_MAX_LINE_BYTES,
    NdjsonStreamParser,
    ParseFailure,
    ParseLinesResult,
    ParseResult,
    ParseSuccess,
    parse_line,
    parse_lines,
    serialize_event,
    serialize_events,
)
from .producer import *  # noqa: F403
from .producer import __all__ as _producer_all
from .protocol import *  # noqa: F403
from .protocol import __all__ as _protocol_all
from .reconnect import *  # noqa: F403
from .reconnect import __all__ as _reconnect_all
from .streams import (
    NdjsonObjectReceiveStream,
    NdjsonObjectSendStream,
    create_ndjson_parse_stream,
    create_ndjson_serialize_stream,
    parse_ndjson_stream,
    serialize_ndjson_stream,
)

if TYPE_CHECKING:
    from .reconnect.http import BrokerConnector, broker_connector, httpx_connector

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "EnclaveStreamError",
    "EventEncoder",
    "EventValidationError",
    "FailureKind",
    "LineError",
    "NdjsonObjectReceiveStream",
    "NdjsonObjectSendStream",
    "NdjsonParseError",
    "NdjsonStreamParser",
    "ParseFailure",
    "ParseLinesResult",
    "ParseResult",
    "ParseSuccess",
    "ProtocolError",
    "create_ndjson_parse_stream",
    "create_ndjson_serialize_stream",
    "decode_message",
    "encode_message",
    "parse_line",
    "parse_lines",
    "parse_ndjson_stream",
    "serialize_event",
    "serialize_events",
    "serialize_ndjson_stream",
    "validate_event",
    "BrokerConnector",
    "broker_connector",
    "httpx_connector",
    *_crypto_all,
    *_events_all,
    *_producer_all,
    *_protocol_all,
    *_reconnect_all,
]


_NEEDS_HTTPX = {
    "httpx_connector": "http",
    "broker_connector": "http",
    "BrokerConnector": "http",
}


def __getattr__(name: str) -> object:
    # httpx is an optional extra: import what needs it only when asked for.
    module = _NEEDS_HTTPX.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".reconnect.{module}", __name__), name)
