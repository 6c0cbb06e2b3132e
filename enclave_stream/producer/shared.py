"""What a broker needs of a log its replicas share (:class:`enclave_stream.redis.RedisBackend`).

The replica that creates a session owns it and writes it to the shared log;
a replica asked for a session it does not hold serves it from there.
"""

from __future__ import annotations

__all__ = ["SessionBackend", "SharedSession", "StreamBody"]

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

from .access import Grant
from .log import EventEncodeFunction, EventStore


class StreamBody(Protocol):
    """A stream response's body: chunks of NDJSON lines (:class:`~.log.NdjsonBody` is one)."""

    @property
    def next_seq(self) -> int:
        """The ``seq`` of the next line it will send."""
        ...

    def __aiter__(self) -> AsyncIterator[bytes]:
        """The chunks, up to the session's end."""
        ...

    async def aclose(self) -> None:
        """Stop early (idempotent)."""
        ...


@dataclass(frozen=True, slots=True)
class SharedSession:
    """What a replica that does not hold a session needs to serve it.

    Attributes:
        grant: what the authorization hook granted its creator.
        resume_headers: headers of its stream responses (the ServerHello
            of an encrypted session).
    """

    grant: Grant
    resume_headers: Mapping[str, str] = field(default_factory=dict)


class SessionBackend(Protocol):
    """A log shared by the replicas of a service; the broker runs it for its own lifetime."""

    async def __aenter__(self) -> object:
        """Connect, and start what runs in the background (the owners' writers)."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """Write what is left (within a bound), stop, disconnect."""
        ...

    def store_factory(
        self,
        session_id: str,
        *,
        encrypted: bool = False,
        hello: str | None = None,
        grant: Grant | None = None,
        on_cancel: Callable[[], object] | None = None,
    ) -> Callable[[EventEncodeFunction], EventStore]:
        """The store of a session this replica creates (``EventStream(store_factory=...)``).

        ``on_cancel`` is called when another replica asks to cancel it.
        """
        ...

    async def claim(self, session_id: str) -> bool:
        """Reserve ``session_id`` (one a client chose) for a session created here.

        False when a session, on any replica, holds it already.

        Raises:
            BrokerError: 503, retry later.
        """
        ...

    async def release(self, session_id: str) -> None:
        """Give back a claim whose session was not created after all (errors ignored)."""
        ...

    async def request_cancel(self, session_id: str) -> None:
        """Ask the replica that holds the session to cancel it.

        Raises:
            BrokerError: as :meth:`lookup`.
        """
        ...

    async def lookup(self, session_id: str) -> SharedSession:
        """The session as another replica serves it (its creator's grant, for the hook).

        Raises:
            BrokerError: 404 unknown, 410 ended for good, 503 retry later.
        """
        ...

    async def open_replay(self, session_id: str, from_seq: int | None = None) -> StreamBody:
        """The session's lines from ``from_seq`` (None: the start), live to its end.

        Raises:
            BrokerError: as :meth:`lookup`, and 410 ``REPLAY_UNAVAILABLE``.
        """
        ...
