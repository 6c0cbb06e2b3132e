"""Strict per-session ``seq`` checking for ``validate``.

The library's :class:`~enclave_stream.SequenceTracker` follows the
reference's state exactly, including its quirk that a first ``seq`` of 0
counts as "nothing received yet" (so a jump from 0 to 5 is no gap). A
validator must not miss that jump, and should tell a repeated event from a
late one that fills a gap, so it keeps its own small record: the last number
and the ranges still missing.
"""

from __future__ import annotations

__all__ = ["MAX_TRACKED_GAPS", "SeqStatus", "SessionSequence"]

import bisect
from typing import Final, Literal

SeqStatus = Literal["ok", "gap", "duplicate", "out_of_order"]
"""What one ``seq`` number was: the next one, a jump, a repeat, or a late arrival."""

MAX_TRACKED_GAPS: Final = 10_000
"""Missing ranges remembered per session; later ones are counted but not listed."""


def _start(missing: tuple[int, int]) -> int:
    return missing[0]


class SessionSequence:
    """The ``seq`` record of one session.

    >>> s = SessionSequence()
    >>> [s.receive(n) for n in (0, 1, 5, 3, 3, 2)]
    ['ok', 'ok', 'gap', 'out_of_order', 'duplicate', 'out_of_order']
    >>> s.missing, s.missing_count, s.gaps, s.duplicates, s.out_of_order
    ([(4, 4)], 1, 1, 1, 2)
    >>> [s.receive(n) for n in (9, 6)], s.missing
    (['gap', 'out_of_order'], [(4, 4), (7, 8)])
    """

    def __init__(self) -> None:
        self.events = 0
        self.first: int | None = None
        self.last: int | None = None
        self.gaps = 0
        """Jumps forward (each reported once)."""
        self.duplicates = 0
        self.out_of_order = 0
        self.missing_count = 0
        """Numbers skipped and never seen later."""
        self._missing: list[tuple[int, int]] = []  # sorted, disjoint, inclusive
        self.missing_truncated = False

    @property
    def missing(self) -> list[tuple[int, int]]:
        """The ranges still missing (inclusive), lowest first."""
        return list(self._missing)

    def receive(self, seq: int) -> SeqStatus:
        """Account for the next event's ``seq``."""
        self.events += 1
        last = self.last
        if last is None:
            self.first = self.last = seq
            return "ok"
        if seq == last + 1:
            self.last = seq
            return "ok"
        if seq > last:
            self.gaps += 1
            self.missing_count += seq - last - 1
            if len(self._missing) < MAX_TRACKED_GAPS:
                self._missing.append((last + 1, seq - 1))
            else:
                self.missing_truncated = True
            self.last = seq
            return "gap"
        if self._fill(seq):
            self.out_of_order += 1
            return "out_of_order"
        self.duplicates += 1
        return "duplicate"

    def _fill(self, seq: int) -> bool:
        """Remove ``seq`` from the missing ranges; False if it was not missing."""
        index = bisect.bisect_right(self._missing, seq, key=_start) - 1
        if index < 0:
            return False
        start, end = self._missing[index]
        if not start <= seq <= end:
            return False
        pieces = [(a, b) for a, b in ((start, seq - 1), (seq + 1, end)) if a <= b]
        self._missing[index : index + 1] = pieces
        self.missing_count -= 1
        return True
