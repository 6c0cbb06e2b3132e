"""The owner's side of a session in Redis: appends stay local and synchronous, a task writes them.

:class:`RedisEventStore` is an :class:`~enclave_stream.producer.EventStore`:
an :class:`~enclave_stream.producer.EventLog` in the owner's memory plus a
flusher (:meth:`RedisEventStore.flush_forever`, run by the backend's task
group) that writes new lines to Redis in batches, one script call per batch.
Readers on the owner are served a line only once Redis holds it, so no
client ever holds a ``seq`` another replica cannot serve. The local log
keeps every line Redis does not hold yet (the flusher is a holding reader),
and the newest ones for repairs: when Redis comes back empty, the owner puts
back what it holds.
"""

from __future__ import annotations

__all__ = ["REDIS_ERRORS", "FlushOutcome", "RedisEventStore"]

import logging
from collections.abc import Callable
from typing import Any, Final

import anyio
import coredis
from coredis.commands.script import Script

from ..errors import StoreUnavailableError
from ..events import FinalEvent, StreamEvent
from ..producer.log import EventEncodeFunction, EventLog, LogEntry, LogReader
from ..protocol import StrEnum
from .keys import SessionKeys
from .limits import RedisLimits
from .scripts import FLUSH

logger = logging.getLogger("enclave_stream")

_FIRST_RETRY: Final = 0.05

REDIS_ERRORS: Final = (coredis.exceptions.RedisError, OSError, TimeoutError)
"""What may fail while talking to Redis and is worth another try (a pool wait's timeout too)."""


class FlushOutcome(StrEnum):
    """What the flush script answered."""

    OK = "OK"
    LOST = "LOST"  # the session was in Redis and is gone: Redis lost its data
    FENCED = "FENCED"  # another owner, or ended by readers as lost (the lease lapsed)
    GAP = "GAP"  # Redis holds less than the owner thought


class _Cursor:
    """The flusher as a reader of the local log: what it has not written is kept."""

    __slots__ = ("__weakref__", "next_seq")

    def __init__(self) -> None:
        self.next_seq = 1


class RedisEventStore:
    """One session's log, kept in the owner's memory and written to Redis in batches.

    Made by :meth:`~enclave_stream.redis.RedisBackend.store_factory`, which
    also runs its flusher. ``append`` is synchronous and never waits for
    Redis; :meth:`read` and :meth:`wait_for` see only the lines Redis holds
    (:attr:`durable_seq`). While Redis is down the flusher retries; lines
    keep piling up locally up to ``max_bytes``, then appends raise
    :class:`~enclave_stream.errors.LogFullError` (a ``final`` is always
    taken).

    Args:
        client: an entered ``coredis.Redis`` client.
        keys: the session's keys.
        owner: this process's owner id (written in the lease).
        encode: turns an event into its line (seals, for encrypted sessions).
        limits: bounds and timings.
        encrypted: the lines are sealed (readers elsewhere cannot end the
            session with a ``final`` of their own).
        hello: the ServerHello header of an encrypted session, kept beside
            the lines for the other replicas.
        grant: the creator's grant as JSON (:func:`~.reader.encode_grant`),
            so that any replica's authorization hook sees it.
        on_cancel: called (once) when another replica asked for the
            session's cancellation (the flusher sees the request at its next
            write or lease renewal), or when Redis refused its writes for
            good (another owner, or readers ended it after its lease lapsed).
    """

    def __init__(
        self,
        client: coredis.Redis[bytes],
        keys: SessionKeys,
        *,
        owner: str,
        encode: EventEncodeFunction,
        limits: RedisLimits,
        encrypted: bool = False,
        hello: str | None = None,
        grant: bytes = b"",
        on_cancel: Callable[[], object] | None = None,
    ) -> None:
        self._client = client
        self._on_cancel = on_cancel
        self._grant = grant
        self._keys = keys
        self._owner = owner
        self._limits = limits
        self._encrypted = encrypted
        self._hello = hello or ""
        self._local = EventLog(
            max_events=limits.max_events, max_bytes=limits.max_bytes, encode=encode
        )
        self._cursor = _Cursor()
        self._local.attach(self._cursor, hold=True)
        self._durable = 0
        self._claimed = False  # Redis has held this session (its absence is then a loss)
        self._ended = False  # the end (final or close) is in Redis
        self._failure: StoreUnavailableError | None = None
        self._changed: anyio.Event | None = None
        self._script: Script[bytes] = client.register_script(FLUSH)

    # --- what Redis holds ---------------------------------------------------------

    @property
    def session_keys(self) -> SessionKeys:
        """Where the session lives in Redis."""
        return self._keys

    @property
    def durable_seq(self) -> int:
        """The newest ``seq`` Redis holds (0 before the first write)."""
        return self._durable

    @property
    def failure(self) -> StoreUnavailableError | None:
        """Why the flusher stopped for good (another owner fenced it off), or None."""
        return self._failure

    @property
    def local(self) -> EventLog:
        """The owner's in-memory log (what a repair puts back)."""
        return self._local

    # --- EventStore -------------------------------------------------------------------

    @property
    def next_seq(self) -> int:
        """The ``seq`` the next appended event gets."""
        return self._local.next_seq

    @property
    def finished(self) -> bool:
        """True once ``final`` was appended or the store was closed."""
        return self._local.finished

    def append(self, event: StreamEvent) -> LogEntry:
        """Number, encode and store ``event`` locally; the flusher writes it to Redis."""
        return self._local.append(event)

    def close(self) -> None:
        """Accept no more events; readers end after the last one Redis holds."""
        self._local.close()

    def check(self, from_seq: int) -> None:
        """Raise :class:`ReplayUnavailableError` unless every event from ``from_seq`` is held."""
        self._local.check(from_seq)

    def read(self, from_seq: int, *, max_bytes: int | None = None) -> list[LogEntry]:
        """The entries from ``from_seq`` that Redis holds, oldest first, without waiting.

        Raises:
            StoreUnavailableError: the flusher stopped for good.
            ReplayUnavailableError: as :meth:`EventLog.read`.
        """
        if self._failure is not None:
            raise self._failure
        entries = self._local.read(from_seq, max_bytes=max_bytes)
        if entries and entries[-1].seq > self._durable:
            return entries[: max(0, self._durable - entries[0].seq + 1)]
        return entries

    async def wait_for(self, seq: int) -> None:
        """Wait until Redis holds the entry ``seq``, or the session's end, or the flusher failed."""
        # Seq 0 asks for the whole session, which starts at 1.
        seq = max(seq, 1)
        while not (seq <= self._durable or self._all_written() or self._failure is not None):
            changed = self._changed
            if changed is None:
                changed = self._changed = anyio.Event()
            await changed.wait()

    async def wait_written(self) -> None:
        """Wait until Redis holds every line appended so far, or the flusher failed for good."""
        target = self._local.next_seq - 1
        while not (self._durable >= target or self._failure is not None):
            changed = self._changed
            if changed is None:
                changed = self._changed = anyio.Event()
            await changed.wait()

    async def wait_finished(self) -> None:
        """Wait until the store is finished (locally)."""
        await self._local.wait_finished()

    def attach(self, reader: LogReader, *, hold: bool = False) -> None:
        """Count ``reader`` in :attr:`lag` (``hold``: keep what it has not sent)."""
        self._local.attach(reader, hold=hold)

    def detach(self, reader: LogReader) -> None:
        """Forget ``reader`` (idempotent)."""
        self._local.detach(reader)

    @property
    def lag(self) -> int:
        """Events the slowest reader (or Redis) has not taken yet."""
        return self._local.lag

    async def wait_lag(self, max_lag: int) -> None:
        """Wait until :attr:`lag` is at most ``max_lag``."""
        await self._local.wait_lag(max_lag)

    def _all_written(self) -> bool:
        return self._local.finished and self._durable >= self._local.next_seq - 1

    def _wake(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    # --- the flusher ------------------------------------------------------------------

    async def flush_forever(self) -> None:
        """Write new lines to Redis until the session's end is written there (or fenced off).

        Refreshes the owner's lease every third of ``lease_seconds`` when idle,
        retries while Redis is unreachable (50 ms doubling up to
        ``retry_max_seconds``), and puts the local log back when Redis lost
        the session. After the end it keeps looking every third of
        ``lease_seconds``, for ``retention_seconds``, and puts the session
        back if Redis lost it. Run by the backend's task group.
        """
        limits = self._limits
        local = self._local
        idle = limits.lease_seconds / 3
        delay = _FIRST_RETRY
        while not self._ended and self._failure is None:
            with anyio.move_on_after(idle):
                await local.wait_for(self._durable + 1)
            try:
                await self.flush_once()
            except REDIS_ERRORS as exc:
                logger.warning(
                    "session %s: writing to Redis failed (%s); retrying in %.2f s",
                    self._keys.meta,
                    exc,
                    delay,
                )
                await anyio.sleep(delay)
                delay = min(delay * 2, limits.retry_max_seconds)
            else:
                delay = _FIRST_RETRY
        if self._failure is None:
            await self._keep_end()

    async def _keep_end(self) -> None:
        # Redis restarted empty would lose a finished session its readers
        # still resume: until its keys would have expired anyway, the owner
        # looks every third of a lease and puts it back.
        limits = self._limits
        deadline = anyio.current_time() + limits.retention_seconds
        idle = limits.lease_seconds / 3
        while self._failure is None and anyio.current_time() < deadline:
            await anyio.sleep(idle)
            try:
                if not await self._client.exists([self._keys.meta]):
                    await self.flush_once()
            except REDIS_ERRORS as exc:
                logger.warning("session %s: checking it in Redis failed (%s)", self._keys.meta, exc)

    async def flush_once(self) -> FlushOutcome:
        """Write one batch (maybe none: a lease refresh); repair if Redis lost the session.

        Raises:
            coredis.exceptions.RedisError, OSError, TimeoutError: Redis did not answer.
        """
        limits = self._limits
        local = self._local
        start = self._durable + 1
        entries = local.read(start, max_bytes=limits.batch_bytes)[: limits.batch_events]
        outcome = await self._call("append", start, entries)
        if outcome in (FlushOutcome.LOST, FlushOutcome.GAP):
            logger.warning(
                "session %s: Redis lost it (%s); putting back seq %d..%d",
                self._keys.meta,
                outcome.value,
                local.first_seq,
                local.next_seq - 1,
            )
            outcome = await self._call("repair", local.first_seq, local.read(local.first_seq))
        if outcome is FlushOutcome.FENCED:
            self._failure = StoreUnavailableError(
                f"session {self._keys.meta}: another writer owns it, or readers ended it "
                "after this owner's lease expired",
                retryable=False,
            )
            logger.error("%s", self._failure)
            self._wake()
            # The session is over for every other replica: its runner stops too.
            self._cancel()
        return outcome

    async def _call(self, mode: str, first: int, entries: list[LogEntry]) -> FlushOutcome:
        local = self._local
        limits = self._limits
        last = entries[-1].seq if entries else first - 1
        ending = ""
        if local.finished and last >= local.next_seq - 1:
            ending = "final" if self._ends_with_final() else "close"
        args: list[Any] = [
            self._owner,
            mode,
            first,
            ending,
            limits.max_events,
            limits.max_bytes,
            limits.ttl_ms,
            limits.lease_ms,
            "1" if self._encrypted else "0",
            self._hello,
            "1" if self._claimed else "0",
            self._grant,
        ]
        args.extend(entry.line for entry in entries)
        keys = self._keys
        reply: Any = await self._script(
            keys=[keys.log, keys.meta, keys.lease, keys.wake], args=args
        )
        assert isinstance(reply, list)
        outcome = FlushOutcome(_text(reply[0]))
        if outcome is FlushOutcome.OK:
            self._claimed = True
            top = int(reply[1])
            if top > self._durable:
                self._durable = top
                self._cursor.next_seq = top + 1
                # A read tells producers waiting in drain() that a reader moved on.
                local.read(local.next_seq)
            if ending:
                self._ended = True
            self._wake()
            if len(reply) > 3 and int(reply[3]):
                self._cancel()
        return outcome

    def _cancel(self) -> None:
        on_cancel, self._on_cancel = self._on_cancel, None
        if on_cancel is None:
            return
        try:
            on_cancel()
        except Exception:
            logger.exception("session %s: cancelling it failed", self._keys.meta)

    def _ends_with_final(self) -> bool:
        # The newest entry is always held, so the last one tells.
        local = self._local
        held = local.read(max(local.next_seq - 1, local.first_seq))
        return bool(held) and type(held[-1].event) is FinalEvent


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
