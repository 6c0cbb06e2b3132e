"""Sequence-number tracking: gap detection and duplicate detection for resumed streams."""

from __future__ import annotations

__all__ = ["ReceiveResult", "SequenceGap", "SequenceTracker"]

import contextlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SequenceGap:
    """Sequence numbers ``start`` to ``end`` (inclusive) were skipped."""

    start: int
    end: int

    def to_dict(self) -> dict[str, int]:
        """The reference's JSON shape: ``{"start", "end"}``."""
        return {"start": self.start, "end": self.end}


@dataclass(frozen=True, slots=True)
class ReceiveResult:
    """What :meth:`SequenceTracker.receive` found out about one sequence number.

    Attributes:
        gap: numbers were skipped just before this one.
        missing_start: first skipped number (None when ``gap`` is False).
        missing_end: last skipped number (None when ``gap`` is False).
        duplicate: this number is not new (a repeat or a replay of an old
            event): drop it. Not in the reference.
    """

    gap: bool
    missing_start: int | None = None
    missing_end: int | None = None
    duplicate: bool = False

    def to_dict(self) -> dict[str, object]:
        """The reference's JSON shape ``{"gap", "missingStart"?, "missingEnd"?}``.

        ``duplicate`` is left out: the reference has no such field.
        """
        if not self.gap:
            return {"gap": False}
        return {"gap": True, "missingStart": self.missing_start, "missingEnd": self.missing_end}


_NOT_GAP = ReceiveResult(gap=False)
_DUPLICATE = ReceiveResult(gap=False, duplicate=True)


class SequenceTracker:
    """Follows the ``seq`` numbers of a stream: records gaps, flags repeats.

    The first number received is taken as the start; ``last + 1`` advances;
    a jump records a gap ``(last + 1, seq - 1)`` (at most ``max_gaps`` are
    kept; later ones are still reported) and advances; a number ``<= last``
    changes nothing and is flagged :attr:`ReceiveResult.duplicate`. A consumer
    delivers an event iff ``not result.duplicate``, which gives each number at
    most once, in increasing order, across any resends and replays.

    The reference's quirks are kept, because :attr:`last_seq` and the gaps are
    what the conformance vectors record:

    * ``last_seq == 0`` means "nothing received yet". So after a first event
      with seq 0 the next number is again taken as a fresh start, and a jump
      from 0 to 5 records no gap (1..4 go unnoticed).
    * Numbers that fill a recorded gap later are "old" (``<= last_seq``): they
      do not clear the gap and are flagged duplicate. Only a resume from
      ``last_seq + 1`` (never from inside a gap) loses nothing.

    ``duplicate`` is not fooled by the first quirk: it remembers whether
    anything was received, so a repeated 0 at the start is a duplicate even
    though the reference's state treats it as a new start. Sequence numbers
    are non-negative ints (as on the wire); anything else is a ``ValueError``.

    >>> t = SequenceTracker()
    >>> [t.receive(s).duplicate for s in (1, 2, 2, 5, 3)]
    [False, False, True, False, True]
    >>> t.last_seq, t.gaps
    (5, [SequenceGap(start=3, end=4)])
    """

    def __init__(self, max_gaps: int = 100) -> None:
        if isinstance(max_gaps, bool) or not isinstance(max_gaps, int) or max_gaps < 0:
            raise ValueError(f"max_gaps must be an int >= 0, got {max_gaps!r}")
        self._max_gaps = max_gaps
        self._last_seq = 0
        self._received_any = False
        self._gaps: list[SequenceGap] = []

    @property
    def last_seq(self) -> int:
        """The highest number received (0 when nothing was; see the quirk above)."""
        return self._last_seq

    @property
    def gaps(self) -> list[SequenceGap]:
        """The recorded gaps, oldest first (a copy)."""
        return list(self._gaps)

    @property
    def max_gaps(self) -> int:
        """How many gaps are kept at most."""
        return self._max_gaps

    def has_gaps(self) -> bool:
        """True when at least one gap is recorded."""
        return bool(self._gaps)

    def receive(self, seq: int) -> ReceiveResult:
        """Account for one received sequence number."""
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ValueError(f"sequence numbers are ints >= 0, got {seq!r}")
        # For non-negative numbers last_seq is the maximum received, so
        # "seen before" is "<= last_seq" once anything has arrived.
        duplicate = self._received_any and seq <= self._last_seq
        self._received_any = True
        if self._last_seq == 0 or seq == self._last_seq + 1:
            self._last_seq = seq
            return _DUPLICATE if duplicate else _NOT_GAP
        if seq <= self._last_seq:
            return _DUPLICATE
        gap = SequenceGap(self._last_seq + 1, seq - 1)
        if len(self._gaps) < self._max_gaps:
            self._gaps.append(gap)
        self._last_seq = seq
        return ReceiveResult(gap=True, missing_start=gap.start, missing_end=gap.end)

    def clear_gap(self, start: int, end: int) -> None:
        """Forget the gap ``(start, end)`` once it is filled; only an exact match is removed."""
        with contextlib.suppress(ValueError):
            self._gaps.remove(SequenceGap(start, end))

    def reset(self) -> None:
        """Forget everything: the next number is a fresh start."""
        self._last_seq = 0
        self._received_any = False
        self._gaps.clear()
