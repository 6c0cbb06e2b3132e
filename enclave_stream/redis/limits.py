"""How much a session may keep in a shared Redis, and how often its owner writes."""

from __future__ import annotations

__all__ = ["RedisLimits"]

from dataclasses import dataclass

from .._options import check_number


@dataclass(frozen=True, slots=True)
class RedisLimits:
    """The bounds and timings of the sessions kept in Redis.

    The defaults are sized for a Redis that other services share: 1 MiB and
    2,000 events per session (the in-memory log's 16 MiB would let a few
    hundred sessions fill a typical instance).

    Attributes:
        max_events: the most events a session keeps in Redis (and in its
            owner's memory, for repairs).
        max_bytes: the most bytes of lines a session keeps, in Redis and in
            its owner's memory. Lines not yet in Redis are never dropped: past
            it, appends raise :class:`~enclave_stream.errors.LogFullError`.
        retention_seconds: how long a session's keys outlive its last write
            (the TTL, refreshed while the owner runs it).
        lease_seconds: how long the owner's lease lasts unrefreshed; it is
            refreshed every third of it. Readers end a session whose lease
            expired.
        batch_events: the most lines written in one round trip.
        batch_bytes: the most bytes of lines written in one round trip (a
            longer line goes alone).
        follow_block_seconds: how long a reader blocks waiting for new lines
            before it checks the session's state (and its owner's lease).
        retry_max_seconds: the longest wait between two attempts to reach
            Redis (the first is 50 ms, doubling).
        drain_seconds: when the backend stops, how long the owner keeps
            writing what its sessions appended before it gives up.

    >>> RedisLimits().max_bytes
    1048576
    """

    max_events: int = 2_000
    max_bytes: int = 1024 * 1024
    retention_seconds: float = 300.0
    lease_seconds: float = 10.0
    batch_events: int = 1_000
    batch_bytes: int = 256 * 1024
    follow_block_seconds: float = 1.0
    retry_max_seconds: float = 1.0
    drain_seconds: float = 3.0

    def __post_init__(self) -> None:
        for name in ("max_events", "max_bytes", "batch_events", "batch_bytes"):
            check_number(name, getattr(self, name), minimum=1, integer=True)
        for name in ("retention_seconds", "lease_seconds", "follow_block_seconds"):
            check_number(name, getattr(self, name), positive=True)
        check_number("retry_max_seconds", self.retry_max_seconds, positive=True)
        check_number("drain_seconds", self.drain_seconds)
        if self.retention_seconds < self.lease_seconds:
            raise ValueError("retention_seconds must be at least lease_seconds")

    @property
    def ttl_ms(self) -> int:
        """The keys' TTL in milliseconds."""
        return max(1, round(self.retention_seconds * 1000))

    @property
    def lease_ms(self) -> int:
        """The lease in milliseconds."""
        return max(1, round(self.lease_seconds * 1000))
