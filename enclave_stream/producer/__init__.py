"""The producer side: a session's events, numbered, kept for replay, and served.

* :class:`EventStream` (``stream.py``) - one server-side session: builders
  for every event, heartbeats while idle, encryption, and
  :meth:`EventStream.ndjson_body`, a response body for any number of
  clients, each from its own ``seq``.
* :class:`EventLog` (``log.py``) - the bounded in-memory replay log behind
  it; :class:`EventStore`, the protocol another log can implement; and its
  readers, :class:`LogReplay` (entries) and :class:`NdjsonBody` (bytes).
* :class:`SessionBroker` (``broker.py``) - the streams of a service by
  session id, the producers that fill them, and the broker's two routes
  (``POST /sessions``, ``GET /sessions/{id}/stream?fromSeq=N``) without any
  web framework; :mod:`enclave_stream.starlette` puts them on Starlette.
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
    LogReplay,
    NdjsonBody,
)
from .stream import EventStream, StoreFactory

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
    "LogReplay",
    "NdjsonBody",
    "ReplayUnavailableError",
    "SessionBroker",
    "SessionRequest",
    "SessionRunner",
    "StoreFactory",
    "StreamFinishedError",
]
