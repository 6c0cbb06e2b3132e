"""enclave_stream: the anyio-native SDK for the EnclaveJS streaming protocol."""

from __future__ import annotations

from .encoder import EventEncoder, encode_message, validate_event
from .errors import EnclaveStreamError, EventValidationError, NdjsonParseError, ProtocolError
from .events import *  # noqa: F403
from .events import __all__ as _events_all
from .ndjson import (
    DEFAULT_MAX_LINE_BYTES,
    LineError,
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
from .protocol import *  # noqa: F403
from .protocol import __all__ as _protocol_all
from .streams import (
    NdjsonObjectReceiveStream,
    NdjsonObjectSendStream,
    create_ndjson_parse_stream,
    create_ndjson_serialize_stream,
    parse_ndjson_stream,
    serialize_ndjson_stream,
)
from .wire import FailureKind, decode_message

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
    *_events_all,
    *_protocol_all,
]
