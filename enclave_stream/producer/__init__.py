"""The producer side: a session's events, numbered, kept for replay, and served.

``log.py`` holds the replay log (:class:`EventLog`, :class:`EventStore`,
:class:`NdjsonBody`), ``stream.py`` one session (:class:`EventStream`),
``broker.py`` the sessions of a service (:class:`SessionBroker`), with its
limits in ``config.py``, the request it reads in ``requests.py``, what its
routes answer in ``responses.py`` and its shutdown on signals in
``signals.py``; ``access.py`` says who may use them (the authorization hook,
:class:`SessionTokens`); ``shared.py`` what a broker needs of a log its
replicas share (:class:`SessionBackend`).
"""

from __future__ import annotations

from ..errors import BrokerError, LogFullError, ReplayUnavailableError, StreamFinishedError
from ..protocol import SERVER_HELLO_HEADER
from .access import (
    Access,
    Action,
    Authorize,
    Decision,
    Grant,
    HttpRequest,
    SessionTokens,
    token_digest,
)
from .broker import SessionBroker
from .config import BrokerConfig
from .log import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_EVENTS,
    EventEncodeFunction,
    EventLog,
    EventStore,
    LogEntry,
    LogReader,
    NdjsonBody,
)
from .requests import SessionRequest, SessionRequestBody, SessionRunner
from .shared import SessionBackend, SharedSession, StreamBody
from .signals import shutdown_on_signals
from .stream import EventStream

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_EVENTS",
    "SERVER_HELLO_HEADER",
    "Access",
    "Action",
    "Authorize",
    "BrokerConfig",
    "BrokerError",
    "Decision",
    "EventEncodeFunction",
    "EventLog",
    "EventStore",
    "EventStream",
    "Grant",
    "HttpRequest",
    "LogEntry",
    "LogFullError",
    "LogReader",
    "NdjsonBody",
    "ReplayUnavailableError",
    "SessionBackend",
    "SessionBroker",
    "SessionRequest",
    "SessionRequestBody",
    "SessionRunner",
    "SessionTokens",
    "SharedSession",
    "StreamBody",
    "StreamFinishedError",
    "shutdown_on_signals",
    "token_digest",
]
