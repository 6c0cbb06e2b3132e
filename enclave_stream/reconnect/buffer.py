"""A bounded buffer for events that arrive while they cannot be handled yet."""

from __future__ import annotations

__all__ = ["EventBuffer"]

from typing import Generic, TypeVar

T = TypeVar("T")


class EventBuffer(Generic[T]):
    """Holds at most ``max_size`` items in arrival order; a full buffer refuses more.

    Nothing is ever evicted: losing the oldest events silently would break the
    sequence guarantees, so the caller decides what a refusal means.

    >>> buf: EventBuffer[str] = EventBuffer(max_size=2)
    >>> buf.add("a"), buf.add("b"), buf.add("c")
    (True, True, False)
    >>> buf.drain(), len(buf)
    (['a', 'b'], 0)
    """

    def __init__(self, max_size: int = 1000) -> None:
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0:
            raise ValueError(f"max_size must be an int >= 0, got {max_size!r}")
        self._max_size = max_size
        self._items: list[T] = []

    @property
    def max_size(self) -> int:
        """The capacity."""
        return self._max_size

    def add(self, event: T) -> bool:
        """Append ``event``; returns False (and keeps nothing) when the buffer is full."""
        if len(self._items) >= self._max_size:
            return False
        self._items.append(event)
        return True

    def get_all(self) -> list[T]:
        """The buffered items, oldest first (a copy; the buffer is unchanged)."""
        return list(self._items)

    def drain(self) -> list[T]:
        """Remove and return every buffered item, oldest first."""
        items, self._items = self._items, []
        return items

    def is_full(self) -> bool:
        """True when :meth:`add` would refuse (always for ``max_size=0``)."""
        return len(self._items) >= self._max_size

    def clear(self) -> None:
        """Drop every buffered item."""
        self._items.clear()

    def __len__(self) -> int:
        """How many items are buffered."""
        return len(self._items)
