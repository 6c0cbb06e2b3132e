"""Where a session lives in Redis: its key names, all in one cluster slot.

>>> keys = SessionKeys.of("enclave", "s_abc")
>>> keys.log, keys.meta, keys.lease, keys.wake
('enclave:{s_abc}:log', 'enclave:{s_abc}:meta', 'enclave:{s_abc}:lease', 'enclave:{s_abc}:wake')
"""

from __future__ import annotations

__all__ = ["DEFAULT_PREFIX", "SessionKeys", "recovery_key"]

from dataclasses import dataclass
from typing import Final

DEFAULT_PREFIX: Final = "enclave"
"""The first part of every key name (several services may share one Redis)."""


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """The keys of one session; the ``{session id}`` hash tag puts them in one cluster slot.

    Attributes:
        log: the stream of lines, entry id ``<seq>-0``, field ``l`` the line
            (``f`` marks the ``final``).
        meta: a hash: ``owner``, ``state`` (``running``, ``finished`` or
            ``lost``), ``top`` and ``first`` (the newest and oldest seq held),
            ``bytes``, ``end`` (the last seq, once finished), ``enc``,
            ``hello`` (the ServerHello header), ``created``.
        lease: the owner's id while it is alive (expires unless refreshed).
        wake: the channel a wake-up is published on after each write.
    """

    log: str
    meta: str
    lease: str
    wake: str

    @classmethod
    def of(cls, prefix: str, session_id: str) -> SessionKeys:
        """The keys of ``session_id`` under ``prefix``."""
        # A session id has no braces (s_ and URL-safe characters), so the tag is exactly it.
        base = f"{prefix}:{{{session_id}}}"
        return cls(f"{base}:log", f"{base}:meta", f"{base}:lease", f"{base}:wake")


def recovery_key(prefix: str) -> str:
    """The key whose absence says Redis lost its data (its value: when it was set, in ms)."""
    return f"{prefix}:recovery"
