"""Clocks for the reconnection tests.

Tests that need a clock ask for the ``timing`` fixture and override
``anyio_backend`` with one of the two fixtures below, so that they run

* on trio under ``MockClock(autojump_threshold=0)``: virtual time that jumps
  to the next deadline as soon as every task is blocked (exact and instant);
* on asyncio in real time, with every duration scaled down to a few
  milliseconds (so none of these tests sleeps for real more than ~0.1 s).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from trio.testing import MockClock


@dataclass(frozen=True)
class Timing:
    """How long "a millisecond" of a test is, and whether the clock is virtual."""

    virtual: bool
    scale: float

    def ms(self, value: float) -> float:
        """A test duration in ms, scaled for the backend's clock."""
        return value * self.scale

    def s(self, value_ms: float) -> float:
        """A test duration in ms, scaled, in seconds (for anyio.sleep)."""
        return value_ms * self.scale / 1000


def trio_virtual() -> tuple[str, dict[str, Any]]:
    """The trio backend on a fresh virtual clock."""
    return ("trio", {"clock": MockClock(autojump_threshold=0)})


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio-realtime"),
        pytest.param("trio", id="trio-mockclock"),
    ]
)
def timed_backend(request: pytest.FixtureRequest) -> Any:
    """Both backends: asyncio in (scaled-down) real time, trio on a virtual clock."""
    return trio_virtual() if request.param == "trio" else "asyncio"


@pytest.fixture
def virtual_backend() -> Any:
    """Only trio on a virtual clock, for tests whose margins real time would make flaky."""
    return trio_virtual()


@pytest.fixture
def timing(anyio_backend: Any) -> Timing:
    """The scale to use for the current backend."""
    if isinstance(anyio_backend, tuple) and "clock" in anyio_backend[1]:
        return Timing(virtual=True, scale=1.0)
    return Timing(virtual=False, scale=0.002)
