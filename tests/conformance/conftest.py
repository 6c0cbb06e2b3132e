from __future__ import annotations

import pytest

from tests.vectors import require_vectors


@pytest.fixture(autouse=True)
def _reference_vectors_present() -> None:
    """Every conformance test needs ../shared/vectors; say so plainly if it is missing."""
    require_vectors()
