"""Session logs on Redis Streams, so that any replica serves any resume.

Needs the ``redis`` extra (``pip install 'enclave-stream[redis]'``).

The replica that accepts ``POST /sessions`` owns the session and is its
only writer: ``keys.py`` names its keys (one cluster slot per session),
``store.py`` is the owner's store (appends stay synchronous, a task writes
them in batches), ``scripts.py`` the Lua that writes them atomically,
``reader.py`` how any replica serves them, ``backend.py`` one replica's
link to Redis (:class:`RedisBackend`), ``limits.py`` the bounds.
"""

from __future__ import annotations

try:
    import coredis as _coredis  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "enclave_stream.redis needs coredis: pip install 'enclave-stream[redis]'"
    ) from exc

from .backend import RedisBackend
from .keys import DEFAULT_PREFIX, SessionKeys
from .limits import RedisLimits
from .reader import OWNER_LOST, RedisReplay, SessionStatus
from .store import FlushOutcome, RedisEventStore

__all__ = [
    "DEFAULT_PREFIX",
    "OWNER_LOST",
    "FlushOutcome",
    "RedisBackend",
    "RedisEventStore",
    "RedisLimits",
    "RedisReplay",
    "SessionKeys",
    "SessionStatus",
]
