"""The producer side: a session's events, numbered, kept for replay, and served.

* :class:`EventStream` (``stream.py``) - one server-side session: a builder
  for every event, heartbeats while idle, encryption, and
  :meth:`EventStream.ndjson_body`, a response body for any number of
  clients, each from its own ``seq``.
* :class:`EventLog` (``log.py``) - the bounded in-memory replay log behind
  it; :class:`EventStore`, the protocol another log implements;
  :class:`NdjsonBody`, the reader of a log as bytes.
* :class:`SessionBroker` (``broker.py``) - the streams of a service by
  session id and the broker's routes without a web framework;
  :mod:`enclave_stream.starlette` puts them on Starlette.
"""

from __future__ import annotations

from ..errors import BrokerError, ReplayUnavailableError, StreamFinishedError
from ..protocol import SERVER_HELLO_HEADER
from .broker import BrokerConfig, SessionBroker, SessionRequest, SessionRunner
from .log import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_EVENTS,
    EventEncodeFunction,
    EventLog,
    EventStore,
    LogEntry,
    NdjsonBody,
)
from .stream import EventStream

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_EVENTS",
    "SERVER_HELLO_HEADER",
    "BrokerConfig",
    "BrokerError",
    "EventEncodeFunction",
    "EventLog",
    "EventStore",
    "EventStream",
    "LogEntry",
    "NdjsonBody",
    "ReplayUnavailableError",
    "SessionBroker",
    "SessionRequest",
    "SessionRunner",
    "StreamFinishedError",
]
