"""Anti-replay memory for the nonces a receiver accepted under one key.

A sender's nonces are ``prefix(8 random bytes) || uint32_be(counter)`` with the
counter going up by one per envelope, so the receiver keeps, per prefix, the
highest counter seen and a bitmap of the ``width`` counters below it (the
sliding window of IPsec/DTLS anti-replay, RFC 4303 section 3.4.3): constant
memory per prefix, constant time per check, exact inside the window. A counter
older than the window is refused as a replay (fail closed): an honest sender's
counters only go up, and the session refuses reordered ``seq`` anyway.

The number of prefixes is bounded too (a peer normally has one; a ``fork()``
or a reference peer's random 12-byte nonces make more). When the table is full
the least recently used prefix is forgotten; a replay of one of its envelopes is
then still refused by the session's ``seq`` rule, only with ``seq_regression``
instead of ``replay``.
"""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_PREFIXES", "DEFAULT_WINDOW", "ReplayWindow"]

import struct
from typing import Final

DEFAULT_WINDOW: Final = 256
"""Counters remembered below the highest one, per prefix."""

DEFAULT_MAX_PREFIXES: Final = 16
"""Nonce prefixes remembered at once."""

_PREFIX_LENGTH: Final = 8
_UINT32: Final = struct.Struct(">I")
_counter: Final = _UINT32.unpack_from
_pack: Final = _UINT32.pack
_LAST_COUNTER: Final = b"\xff\xff\xff\xff"


class ReplayWindow:
    """Remembers accepted 12-byte nonces in bounded memory.

    >>> window = ReplayWindow()
    >>> nonce = bytes(8) + (5).to_bytes(4, "big")
    >>> window.accept(nonce), window.accept(nonce), window.seen(nonce)
    (True, False, True)
    """

    __slots__ = (
        "_current",
        "_current_prefix",
        "_last",
        "_mask",
        "_max_prefixes",
        "_next",
        "_prefixes",
        "_run",
        "_width",
    )

    def __init__(
        self, width: int = DEFAULT_WINDOW, max_prefixes: int = DEFAULT_MAX_PREFIXES
    ) -> None:
        if width < 1 or max_prefixes < 1:
            raise ValueError("width and max_prefixes must be at least 1")
        self._width = width
        self._mask = (1 << width) - 1
        self._max_prefixes = max_prefixes
        # prefix -> [highest counter, bitmap]; bit i set = counter (highest - i) seen.
        # Least recently used first, so eviction takes the first key.
        self._prefixes: dict[bytes, list[int]] = {}
        # An honest sender's next nonce is the last one + 1, so accepting it
        # costs one integer comparison: ``_next`` is that nonce as a 96-bit
        # integer (-1: none), ``_last`` the current prefix's final nonce (its
        # counter cannot step past it), and ``_run`` counts nonces accepted
        # this way but not yet folded into the current prefix's entry.
        self._current_prefix = b""
        self._current: list[int] = [0, 0]
        self._next = -1
        self._last = -1
        self._run = 0

    def seen(self, nonce: bytes) -> bool:
        """True if ``nonce`` was accepted before, or is too old for the window to tell."""
        self._fold()
        entry = self._prefixes.get(nonce[:_PREFIX_LENGTH])
        if entry is None:
            return False
        behind = entry[0] - _counter(nonce, _PREFIX_LENGTH)[0]
        if behind < 0:
            return False
        return behind >= self._width or bool((entry[1] >> behind) & 1)

    def accept(self, nonce: bytes) -> bool:
        """Record ``nonce`` and return True, or return False if it is a replay.

        Call it only for a nonce whose envelope authenticated, so that a
        forger cannot fill the window.
        """
        value = int.from_bytes(nonce, "big")
        if value == self._next:
            self._next = value + 1 if value != self._last else -1
            self._run += 1
            return True
        self._fold()
        return self._accept_any(nonce)

    def _fold(self) -> None:
        run = self._run
        if run:
            entry = self._current
            entry[0] += run
            entry[1] = (
                ((entry[1] << run) | ((1 << run) - 1)) & self._mask
                if run < self._width
                else self._mask
            )
            self._run = 0

    def _accept_any(self, nonce: bytes) -> bool:
        prefix = nonce[:_PREFIX_LENGTH]
        counter = _counter(nonce, _PREFIX_LENGTH)[0]
        if prefix == self._current_prefix:
            entry = self._current
        else:
            prefixes = self._prefixes
            found = prefixes.pop(prefix, None)
            if found is None:
                if len(prefixes) >= self._max_prefixes:
                    del prefixes[next(iter(prefixes))]  # the least recently used
                found = [counter, 0]
            prefixes[prefix] = found  # (re)inserted last: the most recently used
            self._current_prefix = prefix
            self._current = entry = found
            self._last = int.from_bytes(prefix + _LAST_COUNTER, "big")
            # The fast path's expected nonce belonged to the previous prefix:
            # left in place, a refusal below would let that prefix's next
            # nonce be counted into this prefix's entry.
            self._next = -1
        ahead = counter - entry[0]
        if ahead > 0:
            entry[0] = counter
            entry[1] = ((entry[1] << ahead) | 1) & self._mask if ahead < self._width else 1
        else:
            behind = -ahead
            if behind >= self._width:  # too old to tell: refuse (and never shift that far)
                return False
            bit = 1 << behind
            if entry[1] & bit:
                return False
            entry[1] |= bit
        base = int.from_bytes(prefix + _pack(entry[0]), "big")
        self._next = base + 1 if base != self._last else -1
        return True

    def __len__(self) -> int:
        """How many nonce prefixes are remembered."""
        return len(self._prefixes)

    def __repr__(self) -> str:
        return f"<ReplayWindow prefixes={len(self._prefixes)} width={self._width}>"
