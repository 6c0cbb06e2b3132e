"""Virtual clocks for time-dependent tests, on both anyio backends.

trio has ``MockClock(autojump_threshold=0)``. asyncio has no such thing, so
:class:`VirtualClockLoop` gives it the same semantics: its ``time()`` is virtual
and, whenever the loop would sleep until its next timer, the clock jumps
to that timer instead. Sockets and threads still work (a ready file descriptor
is always checked first), but a wait on them with a timer pending lets time
jump, exactly as trio's autojump does; tests on a virtual clock therefore
keep real I/O out of their timed sections.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any

import pytest
from trio.testing import MockClock


class _AutojumpSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    def __init__(self, loop: VirtualClockLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        ready: list[Any] = super().select(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        if timeout is None:  # no timer pending: only I/O can wake us
            return super().select(None)  # type: ignore[no-any-return]
        self._loop.advance(timeout)
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on virtual time that jumps to the next timer when idle."""

    def __init__(self) -> None:
        self._now = 0.0
        super().__init__(selector=_AutojumpSelector(self))
        # Timers due within this much of now run: absorbs float rounding of
        # ``now + (when - now)`` so a jump always lands on the timer.
        self._clock_resolution = 1e-9

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward (never back)."""
        self._now += max(seconds, 0.0)


def virtual_backends() -> list[Any]:
    """``anyio_backend`` values: asyncio and trio, each on a fresh virtual clock.

    Fixture params are built once per collection, so the clocks are made here
    through factories (a loop factory for asyncio, a new MockClock for trio)
    rather than shared instances.
    """
    return [
        ("asyncio", {"loop_factory": VirtualClockLoop}),
        ("trio", {"clock": MockClock(autojump_threshold=0)}),
    ]


def on_virtual_clock() -> pytest.MarkDecorator:
    """Run one ``@pytest.mark.anyio`` test on both backends, each on a virtual clock."""
    return pytest.mark.parametrize(
        "anyio_backend", virtual_backends(), ids=["asyncio-virtual", "trio-virtual"]
    )
