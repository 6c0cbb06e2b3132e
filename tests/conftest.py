from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import settings

from tests.clock import virtual_backends

# On CI, property tests use a fixed sequence of examples (a red build must be
# reproducible); locally they keep exploring new ones each run, which is where
# new counterexamples come from.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every ``@pytest.mark.anyio`` test on both asyncio and trio."""
    return str(request.param)


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio-virtual"),
        pytest.param("trio", id="trio-virtual"),
    ]
)
def virtual_backend(request: pytest.FixtureRequest) -> Any:
    """Both backends on a fresh virtual clock that jumps to the next deadline when idle.

    A time-dependent test overrides ``anyio_backend`` with this: its durations
    are then exact and cost no real time, so no margin can make it flaky.
    """
    return virtual_backends()[0 if request.param == "asyncio" else 1]
