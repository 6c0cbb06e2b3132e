"""One replica's link to Redis: the client, the owner id, and the task group of its flushers."""

from __future__ import annotations

__all__ = ["RedisBackend"]

import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import coredis
from anyio.abc import TaskGroup

from .._lifetime import TaskOwner, owned_task_group
from .._options import check_number
from ..errors import BrokerError
from ..producer.access import SESSION_TOKEN_HEADER, Grant
from ..producer.log import EventEncodeFunction, EventStore
from ..producer.shared import SharedSession
from ..protocol import SERVER_HELLO_HEADER
from .keys import DEFAULT_PREFIX, SessionKeys
from .limits import RedisLimits
from .reader import (
    RedisReplay,
    SessionStatus,
    encode_grant,
    lookup,
    open_replay,
    read_status,
    recovering,
)
from .scripts import CANCEL, CLAIM, RELEASE
from .store import REDIS_ERRORS, RedisEventStore

logger = logging.getLogger("enclave_stream")


class RedisBackend(TaskOwner):
    """Sessions kept in Redis Streams, so that any replica serves any resume.

    Use it as ``async with RedisBackend("redis://localhost:6379") as backend:``
    (a :class:`~enclave_stream.producer.SessionBroker` given it as
    ``backend=`` runs it for its own lifetime). Inside the block,
    :meth:`store_factory` makes the stores of the sessions this replica
    owns (their flushers run in the backend's task group), and
    :meth:`open_replay` serves any session from Redis. Leaving the block
    gives the flushers ``drain_seconds`` to write what was appended, then
    stops them.

    Args:
        redis: a ``redis://`` URL (the backend makes and closes its client),
            or a ``coredis.Redis`` client you entered (``async with client``)
            and close yourself. Responses must be bytes (the default).
        limits: bounds and timings (:class:`RedisLimits`).
        prefix: the first part of every key name.
        owner_id: this replica's id in the leases; unique by default
            (host, pid, random).
        max_connections: the pool size of each client made from a URL:
            one for the owner's writes and lookups, one for followers, so
            that flushers never wait behind them. A live follower holds one
            connection while it waits (XREAD BLOCK): size it to the
            followers one replica serves at once.
        pool_timeout_seconds: how long a command made from a URL's clients
            waits for a free connection; past it the request is a 503
            (``STORE_UNAVAILABLE``), never a hang.
        token_headers: the grant's headers that hold a capability token
            (:class:`~enclave_stream.producer.SessionTokens`): Redis keeps
            their :func:`~enclave_stream.producer.token_digest` only.
    """

    def __init__(
        self,
        redis: str | coredis.Redis[bytes],
        *,
        limits: RedisLimits | None = None,
        prefix: str = DEFAULT_PREFIX,
        owner_id: str | None = None,
        max_connections: int = 1024,
        pool_timeout_seconds: float = 5.0,
        token_headers: Iterable[str] = (SESSION_TOKEN_HEADER,),
    ) -> None:
        self._token_headers = tuple(token_headers)
        self._max_connections = check_number(
            "max_connections", max_connections, minimum=1, integer=True
        )
        self._pool_timeout = check_number(
            "pool_timeout_seconds", pool_timeout_seconds, positive=True
        )
        self._redis = redis
        self._limits = RedisLimits() if limits is None else limits
        self._prefix = prefix
        self._owner = (
            f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
            if owner_id is None
            else owner_id
        )
        self._client: coredis.Redis[bytes] | None = None
        self._followers: coredis.Redis[bytes] | None = None
        self._task_group: TaskGroup | None = None
        self._flushers: set[RedisEventStore] = set()

    @property
    def limits(self) -> RedisLimits:
        """The bounds and timings of its sessions."""
        return self._limits

    @property
    def owner_id(self) -> str:
        """This replica's id, written in the leases of the sessions it owns."""
        return self._owner

    @property
    def prefix(self) -> str:
        """The first part of every key name."""
        return self._prefix

    @property
    def client(self) -> coredis.Redis[bytes]:
        """The Redis client (inside the block).

        Raises:
            RuntimeError: outside the backend's block.
        """
        if self._client is None:
            raise RuntimeError("use the RedisBackend inside its `async with` block")
        return self._client

    def keys(self, session_id: str) -> SessionKeys:
        """Where ``session_id`` lives in Redis."""
        return SessionKeys.of(self._prefix, session_id)

    def _connect(self, url: str) -> coredis.Redis[bytes]:
        return coredis.Redis.from_url(
            url, max_connections=self._max_connections, pool_timeout=self._pool_timeout
        )

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            given = self._redis
            if isinstance(given, str):
                redis = await stack.enter_async_context(self._connect(given))
                followers = await stack.enter_async_context(self._connect(given))
            else:
                redis = followers = given
            self._client = redis
            self._followers = followers
            try:
                # Marks Redis as known to hold its sessions; an error is not fatal
                # here: Redis may come up later.
                await recovering(redis, self._prefix, self._limits)
            except REDIS_ERRORS as exc:
                logger.warning("Redis is unreachable at start (%s); sessions will wait", exc)
            try:
                async with owned_task_group() as task_group:
                    self._task_group = task_group
                    try:
                        yield
                    finally:
                        self._task_group = None
                        await self._drain()
            finally:
                self._client = None
                self._followers = None

    async def _drain(self) -> None:
        # Sessions ended just before (a shutdown's finals) still have lines to write.
        with anyio.move_on_after(self._limits.drain_seconds, shield=True):
            for store in list(self._flushers):
                await store.wait_written()

    def store_factory(
        self,
        session_id: str,
        *,
        encrypted: bool = False,
        hello: str | None = None,
        grant: Grant | None = None,
        on_cancel: Callable[[], object] | None = None,
    ) -> Callable[[EventEncodeFunction], EventStore]:
        """What :class:`~enclave_stream.producer.EventStream` takes as ``store_factory``.

        The store it makes is owned by this replica: its flusher runs in the
        backend's task group until the session's end is in Redis. ``hello``
        (the ServerHello header) and ``grant`` (what the authorization hook
        granted the creator) are kept beside the lines for other replicas;
        ``on_cancel`` is called when one of them asks to cancel the session
        (:meth:`request_cancel`).

        Raises:
            RuntimeError: (when called) outside the backend's block.
        """

        def make(encode: EventEncodeFunction) -> EventStore:
            return self.open_store(
                session_id,
                encode,
                encrypted=encrypted,
                hello=hello,
                grant=grant,
                on_cancel=on_cancel,
            )

        return make

    def open_store(
        self,
        session_id: str,
        encode: EventEncodeFunction,
        *,
        encrypted: bool = False,
        hello: str | None = None,
        grant: Grant | None = None,
        on_cancel: Callable[[], object] | None = None,
    ) -> RedisEventStore:
        """A :class:`RedisEventStore` for ``session_id``, its flusher started.

        Raises:
            RuntimeError: outside the backend's block.
        """
        task_group = self._task_group
        if task_group is None:
            raise RuntimeError("use the RedisBackend inside its `async with` block")
        store = RedisEventStore(
            self.client,
            self.keys(session_id),
            owner=self._owner,
            encode=encode,
            limits=self._limits,
            encrypted=encrypted,
            hello=hello,
            grant=b"" if grant is None else encode_grant(grant, token_headers=self._token_headers),
            on_cancel=on_cancel,
        )
        task_group.start_soon(self._flush, store)
        return store

    async def _flush(self, store: RedisEventStore) -> None:
        self._flushers.add(store)
        try:
            await store.flush_forever()
        finally:
            self._flushers.discard(store)

    async def lookup(self, session_id: str) -> SharedSession:
        """``session_id`` as this replica serves it: its creator's grant, its ServerHello.

        Raises:
            BrokerError: 404, 410 or 503, as :func:`~.reader.lookup` says.
        """
        status = await lookup(self.client, session_id, prefix=self._prefix, limits=self._limits)
        headers = {SERVER_HELLO_HEADER: status.hello} if status.hello else {}
        return SharedSession(status.grant, headers)

    async def claim(self, session_id: str) -> bool:
        """Reserve ``session_id`` for a session this replica creates (False: taken).

        The claim lasts ``retention_seconds`` unless the session's first
        write takes it over.

        Raises:
            BrokerError: 503 ``STORE_UNAVAILABLE`` (Redis unreachable).
        """
        keys = self.keys(session_id)
        try:
            with anyio.CancelScope(shield=True), anyio.fail_after(self._pool_timeout * 2):
                taken: object = await self.client.register_script(CLAIM)(
                    keys=[keys.meta], args=[self._owner, self._limits.ttl_ms]
                )
        except REDIS_ERRORS as exc:
            raise BrokerError(
                503,
                "STORE_UNAVAILABLE",
                f"The session store is unreachable ({type(exc).__name__})",
                headers={"Retry-After": "1"},
            ) from None
        return bool(taken)

    async def release(self, session_id: str) -> None:
        """Give back a claim whose session was not created after all (errors ignored)."""
        keys = self.keys(session_id)
        try:
            with anyio.CancelScope(shield=True), anyio.fail_after(self._pool_timeout * 2):
                await self.client.register_script(RELEASE)(keys=[keys.meta], args=[self._owner])
        except REDIS_ERRORS as exc:
            logger.warning("giving back the claim on session %s failed: %s", session_id, exc)

    async def request_cancel(self, session_id: str) -> None:
        """Ask the owner of ``session_id`` to cancel it (a finished session is left as it is).

        The owner acts at its next write or lease renewal (within a third of
        ``lease_seconds``).

        Raises:
            BrokerError: 404, 410 or 503, as :func:`~.reader.lookup` says.
        """
        await lookup(self.client, session_id, prefix=self._prefix, limits=self._limits)
        keys = self.keys(session_id)
        try:
            await self.client.register_script(CANCEL)(keys=[keys.meta, keys.wake])
        except REDIS_ERRORS as exc:
            raise BrokerError(
                503,
                "STORE_UNAVAILABLE",
                f"The session store is unreachable ({type(exc).__name__})",
                headers={"Retry-After": "1"},
            ) from None

    async def open_replay(
        self, session_id: str, from_seq: int | None = None, *, chunk_bytes: int = 64 * 1024
    ) -> RedisReplay:
        """Serve ``session_id`` from Redis from ``from_seq`` (None: the start), live to its end.

        Raises:
            BrokerError: 404, 410 or 503, as :func:`~.reader.open_replay` says.
        """
        followers = self._followers
        if followers is None:
            raise RuntimeError("use the RedisBackend inside its `async with` block")
        return await open_replay(
            followers,
            session_id,
            from_seq,
            prefix=self._prefix,
            limits=self._limits,
            chunk_bytes=chunk_bytes,
        )

    async def status(self, session_id: str) -> SessionStatus | None:
        """The session's metadata in Redis, or None when Redis does not hold it."""
        return await read_status(self.client, self.keys(session_id))
