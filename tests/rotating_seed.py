"""A Hypothesis seed that changes every UTC day, for the property tests of security checks.

CI runs Hypothesis derandomized (tests/conftest.py): a plain property test
checks the same examples on every run, so an attack its fixed set misses is
missed forever. A test decorated with :func:`rotating_seed` draws from this
seed instead (an explicit seed overrides ``derandomize``): each day CI
explores new examples, and a red build stays reproducible, because the seed
is printed with the falsifying example and ``ENCLAVE_STREAM_SEED=<seed>``
repeats the run. Known attack patterns are still pinned with ``@example``.
"""

from __future__ import annotations

import datetime
import functools
import os
from collections.abc import Callable
from typing import ParamSpec

from hypothesis import note, seed

P = ParamSpec("P")

SEED = int(
    os.environ.get("ENCLAVE_STREAM_SEED")
    or datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")
)


def rotating_seed(test: Callable[P, None]) -> Callable[P, None]:
    """Draw ``test``'s examples from :data:`SEED`; put it under ``@given``."""

    @functools.wraps(test)
    def noted(*args: P.args, **kwargs: P.kwargs) -> None:
        note(f"rotating seed {SEED}: rerun with ENCLAVE_STREAM_SEED={SEED}")
        test(*args, **kwargs)

    return seed(SEED)(noted)
