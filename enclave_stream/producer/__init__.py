"""The producer side: a session's events, numbered, kept for replay, and served.

``log.py`` holds the replay log (:class:`EventLog`, :class:`EventStore`,
:class:`NdjsonBody`), ``stream.py`` one session (:class:`EventStream`),
``broker.py`` the sessions of a service (:class:`SessionBroker`).
"""

from __future__ import annotations

from ..errors import BrokerError, ReplayUnavailableError, StreamFinishedError
from ..protocol import SERVER_HELLO_HEADER
from .broker import (
    BrokerConfig,
    SessionBroker,
    SessionRequest,
    SessionRunner,
    shutdown_on_signals,
)
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
    "shutdown_on_signals",
]
