"""Any replica's side of a session kept in Redis: replay with XRANGE, follow with XREAD BLOCK.

:func:`open_replay` answers as the in-memory log does: an unknown session
is 404, a trimmed start 410 naming the first ``seq`` still held; and what
only a shared engine can answer: Redis down, or back empty while owners put
their sessions back, is 503 (retryable). :class:`RedisReplay` serves the
lines, and never skips one: a line missing between two it serves ends it
with :class:`~enclave_stream.errors.ReplayUnavailableError`.
"""

from __future__ import annotations

__all__ = [
    "OWNER_LOST",
    "RedisReplay",
    "SessionStatus",
    "decode_grant",
    "encode_grant",
    "end_lost_session",
    "lookup",
    "open_replay",
    "read_status",
    "recovering",
]

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, cast

import anyio
import anyio.lowlevel
import coredis
import msgspec
from coredis.response.types import StreamEntry

from .._options import check_number
from ..codec import encode_event
from ..errors import BrokerError, ReplayUnavailableError, StoreUnavailableError
from ..events import ErrorInfo, FinalEvent, FinalPayload
from ..producer.access import Grant, token_digest
from .keys import SessionKeys, recovery_key
from .limits import RedisLimits
from .scripts import LOSE, RECOVERY, STATUS
from .store import REDIS_ERRORS

logger = logging.getLogger("enclave_stream")

OWNER_LOST: Final = ErrorInfo(
    message="The server running the session stopped (its lease expired)",
    code="SESSION_OWNER_LOST",
)
"""The ``final`` error of a plain session whose owner stopped renewing its lease."""

_RETRY_AFTER: Final = {"Retry-After": "1"}
_BATCH: Final = 512
# How long a command may take beyond its own blocking time (a pool wait included).
_MARGIN: Final = 10.0


@dataclass(frozen=True, slots=True)
class SessionStatus:
    """A consistent snapshot of a session's metadata in Redis.

    Attributes:
        state: ``running``, ``finished`` or ``lost`` (an encrypted session
            whose owner stopped).
        top: the newest ``seq`` held (0: none yet).
        first: the oldest ``seq`` held.
        end: the last ``seq`` of a finished session, else None.
        encrypted: the lines are sealed.
        hello: the ServerHello header of an encrypted session ('' if none).
        grant: what the authorization hook granted its creator.
        leased: the owner's lease is alive.
    """

    state: str
    top: int
    first: int
    end: int | None
    encrypted: bool
    hello: str
    grant: Grant
    leased: bool

    @property
    def owner_lost(self) -> bool:
        """Running, but its owner's lease expired."""
        return self.state == "running" and not self.leased


class _GrantJson(msgspec.Struct, frozen=True):
    identity: str | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)


def encode_grant(grant: Grant, *, token_headers: Iterable[str] = ()) -> bytes:
    """``grant`` as the JSON kept in the session's metadata.

    The values of ``token_headers`` (any case) are kept as their
    :func:`~enclave_stream.producer.token_digest`: a token never sits in Redis.

    >>> encode_grant(Grant("alice", {"X-Session-Token": "t"}))
    b'{"identity":"alice","headers":{"X-Session-Token":"t"}}'
    >>> encode_grant(Grant(None, {"X-Session-Token": "t"}), token_headers=["x-session-token"])
    b'{"identity":null,"headers":{"X-Session-Token":"sha256:e3b98a4da31a127d4bde6e43033f66ba274cab0eb7eb1c70ec41402bf6273dd8"}}'
    """
    secret = {name.lower() for name in token_headers}
    headers = {
        name: token_digest(value) if name.lower() in secret else value
        for name, value in grant.headers.items()
    }
    return msgspec.json.encode(_GrantJson(grant.identity, headers))


def decode_grant(data: bytes) -> Grant:
    """The grant kept as JSON by :func:`encode_grant` (an empty one for b'')."""
    if not data:
        return Grant()
    decoded = msgspec.json.decode(data, type=_GrantJson)
    return Grant(decoded.identity, decoded.headers)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def read_status(client: coredis.Redis[bytes], keys: SessionKeys) -> SessionStatus | None:
    """The session's metadata, or None when Redis does not hold it.

    Raises:
        coredis.exceptions.RedisError, OSError: Redis did not answer.
    """
    reply: Any = await client.register_script(STATUS)(keys=[keys.meta, keys.lease])
    assert isinstance(reply, list)
    state, top, first, end, enc, hello, grant, leased = reply
    if state is None:
        return None
    return SessionStatus(
        state=_text(state),
        top=int(top or 0),
        first=int(first or 1),
        end=None if end is None else int(end),
        encrypted=_text(enc) == "1",
        hello="" if hello is None else _text(hello),
        grant=decode_grant(grant or b""),
        leased=bool(leased),
    )


async def end_lost_session(
    client: coredis.Redis[bytes],
    keys: SessionKeys,
    session_id: str,
    status: SessionStatus,
    limits: RedisLimits,
) -> None:
    """End a running session whose owner's lease expired (a no-op if it changed meanwhile).

    A plain session gets a failed ``final`` (:data:`OWNER_LOST`) as its next
    event, written with the next entry id: an owner that was only slow can
    no longer write it. An encrypted one cannot be sealed by anyone else:
    it is marked ``lost``, its readers end and resumes get 410.
    """
    line = b""
    if not status.encrypted:
        final = FinalEvent(session_id, status.top + 1, FinalPayload(ok=False, error=OWNER_LOST))
        line = encode_event(final) + b"\n"
    outcome: Any = await client.register_script(LOSE)(
        keys=[keys.log, keys.meta, keys.lease, keys.wake],
        args=[status.top, line, limits.ttl_ms],
    )
    if _text(outcome) == "LOST":
        logger.warning("session %s: its owner's lease expired; ended it", session_id)


async def recovering(client: coredis.Redis[bytes], prefix: str, limits: RedisLimits) -> bool:
    """True while Redis may still be getting its sessions back (new, or restarted empty).

    Owners notice a loss within a third of the lease and put their sessions
    back; until a lease has passed since Redis was found without its
    recovery key, a session it lacks may be on its way back.
    """
    age: Any = await client.register_script(RECOVERY)(keys=[recovery_key(prefix)])
    return int(age) < limits.lease_ms


def _unavailable(message: str, code: str = "STORE_UNAVAILABLE") -> BrokerError:
    return BrokerError(503, code, message, headers=_RETRY_AFTER)


async def lookup(
    client: coredis.Redis[bytes], session_id: str, *, prefix: str, limits: RedisLimits
) -> SessionStatus:
    """The session's status, once it is known to be servable (its owner's loss handled).

    A running session whose owner's lease expired is ended first
    (:func:`end_lost_session`).

    Raises:
        BrokerError: 404 ``NOT_FOUND``; 410 ``SESSION_OWNER_LOST`` (an
            encrypted session whose owner stopped); 503 ``STORE_UNAVAILABLE``
            (Redis unreachable) or ``STORE_RECOVERING`` (Redis lost its data
            and the owners are putting it back), both with ``Retry-After``.
    """
    keys = SessionKeys.of(prefix, session_id)
    try:
        # Never cut mid-command (a client leaving): coredis would lose the pool slot.
        with anyio.CancelScope(shield=True), anyio.fail_after(_MARGIN):
            status = await read_status(client, keys)
            if status is not None and status.owner_lost:
                await end_lost_session(client, keys, session_id, status, limits)
                status = await read_status(client, keys)
            still_recovering = status is None and await recovering(client, prefix, limits)
        await anyio.lowlevel.checkpoint()
        if status is None:
            if still_recovering:
                raise _unavailable(
                    f"Session {session_id} is not in Redis yet: Redis restarted and its "
                    "sessions are being restored",
                    "STORE_RECOVERING",
                )
            raise BrokerError(404, "NOT_FOUND", f"Session {session_id} not found")
    except REDIS_ERRORS as exc:
        logger.warning("reading session %s from Redis failed: %s", session_id, exc)
        raise _unavailable(f"The session store is unreachable ({type(exc).__name__})") from None
    if status.state == "lost":
        raise BrokerError(
            410,
            OWNER_LOST.code,  # type: ignore[arg-type]
            f"Session {session_id} ended: the server running it stopped, and its "
            "encrypted events cannot be finished by another",
        )
    return status


async def open_replay(
    client: coredis.Redis[bytes],
    session_id: str,
    from_seq: int | None,
    *,
    prefix: str,
    limits: RedisLimits,
    chunk_bytes: int = 64 * 1024,
) -> RedisReplay:
    """The lines of ``session_id`` from ``from_seq`` (None: from the start), up to its end.

    Raises:
        BrokerError: as :func:`lookup`; 410 ``REPLAY_UNAVAILABLE`` (``details``:
            ``requestedSeq``, ``firstAvailableSeq``) when Redis no longer
            holds the events from ``from_seq``.
    """
    start = 0 if from_seq is None else check_number("from_seq", from_seq, integer=True)
    status = await lookup(client, session_id, prefix=prefix, limits=limits)
    if start < status.first and status.first > 1:
        error = ReplayUnavailableError(max(start, 1), first_available_seq=status.first)
        details = {"requestedSeq": error.requested_seq, "firstAvailableSeq": status.first}
        raise BrokerError(410, error.code, str(error), details=details)
    keys = SessionKeys.of(prefix, session_id)
    return RedisReplay(client, keys, session_id, start, limits=limits, chunk_bytes=chunk_bytes)


class RedisReplay:
    """A session's lines from Redis as chunks of bytes, live up to its end.

    ``async for chunk in replay``: stored lines first (XRANGE), then, once
    caught up, new ones as they come (XREAD BLOCK). Between two blocks that brought nothing it
    looks at the session's state: it ends after the last line of a finished
    session, ends a session whose owner's lease expired
    (:func:`end_lost_session`), and stops an encrypted one that was lost.

    Raises (from the loop):
        ReplayUnavailableError: the next line was trimmed, or not put back
            after Redis lost it.
        StoreUnavailableError: Redis is unreachable, or no longer holds the
            session.
    """

    __slots__ = (
        "_chunk_bytes",
        "_client",
        "_closed",
        "_done",
        "_following",
        "_keys",
        "_limits",
        "_next",
        "_session_id",
    )

    def __init__(
        self,
        client: coredis.Redis[bytes],
        keys: SessionKeys,
        session_id: str,
        from_seq: int,
        *,
        limits: RedisLimits,
        chunk_bytes: int = 64 * 1024,
    ) -> None:
        self._client = client
        self._keys = keys
        self._session_id = session_id
        self._next = max(from_seq, 1)
        self._limits = limits
        self._chunk_bytes = check_number("chunk_bytes", chunk_bytes, minimum=1, integer=True)
        self._done = False
        self._closed = False
        self._following = False  # caught up: XREAD BLOCK from here on

    @property
    def session_id(self) -> str:
        """The session it reads."""
        return self._session_id

    @property
    def next_seq(self) -> int:
        """The ``seq`` of the next line it will send."""
        return self._next

    def __aiter__(self) -> RedisReplay:
        return self

    async def __anext__(self) -> bytes:
        await anyio.lowlevel.checkpoint()
        client = self._client
        log = self._keys.log
        block_ms = max(1, round(self._limits.follow_block_seconds * 1000))
        while not (self._done or self._closed):
            try:
                if self._following:
                    # Returns at once when lines are there, else waits for one.
                    # coredis loses a pool slot for good when a command is
                    # cancelled mid-flight (a follower's client leaving): the
                    # block runs to its end, bounded, and the cancellation is
                    # taken after it.
                    with anyio.CancelScope(shield=True):
                        with anyio.fail_after(self._limits.follow_block_seconds + _MARGIN):
                            reply = await client.xread(
                                {log: f"{self._next - 1}-0"}, count=_BATCH, block=block_ms
                            )
                    await anyio.lowlevel.checkpoint()
                    entries = () if reply is None else reply.get(log.encode(), ())
                    if not entries:
                        with anyio.CancelScope(shield=True), anyio.fail_after(_MARGIN):
                            await self._check()
                        await anyio.lowlevel.checkpoint()
                        continue
                else:
                    with anyio.CancelScope(shield=True):
                        with anyio.fail_after(_MARGIN):
                            entries = await client.xrange(log, f"{self._next}-0", "+", count=_BATCH)
                    await anyio.lowlevel.checkpoint()
                    self._following = len(entries) < _BATCH
                    if not entries:
                        continue
            except REDIS_ERRORS as exc:
                raise StoreUnavailableError(
                    f"session {self._session_id}: Redis is unreachable ({type(exc).__name__})"
                ) from exc
            chunk = self._take(entries)
            if chunk:
                return chunk
        raise StopAsyncIteration

    def _take(self, entries: tuple[StreamEntry, ...]) -> bytes:
        expected = self._next
        lines: list[bytes] = []
        size = 0
        for entry in entries:
            seq = int(_text(entry.identifier).partition("-")[0])
            if seq < expected:
                continue
            if seq > expected:  # never a silent gap
                if lines:
                    break  # serve what is contiguous; the next call raises
                raise ReplayUnavailableError(expected, first_available_seq=seq)
            fields = entry.field_values
            line = cast(bytes, fields[b"l"])
            lines.append(line)
            expected += 1
            size += len(line)
            if b"f" in fields:
                self._done = True
                break
            if size >= self._chunk_bytes:
                break
        self._next = expected
        return b"".join(lines)

    async def _check(self) -> None:
        status = await read_status(self._client, self._keys)
        if status is None:
            raise StoreUnavailableError(
                f"session {self._session_id} is no longer in Redis (expired, or Redis lost it)"
            )
        if status.state == "lost" or (status.end is not None and self._next > status.end):
            self._done = True
        elif status.owner_lost:
            await end_lost_session(self._client, self._keys, self._session_id, status, self._limits)

    async def aclose(self) -> None:
        """Stop reading (idempotent)."""
        self._closed = True
