from __future__ import annotations

import os

import pytest
from hypothesis import settings

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
