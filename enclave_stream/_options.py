"""The check every numeric option goes through (durations, sizes, counts, bounds).

Options are checked where they are given, so that a bad setting fails where
it is written rather than at the first disconnect or the first big session.
"""

from __future__ import annotations

import math
from typing import TypeVar

__all__ = ["check_number"]

N = TypeVar("N", int, float)


def check_number(
    name: str,
    value: N,
    *,
    minimum: float = 0,
    maximum: float | None = None,
    positive: bool = False,
    integer: bool = False,
    error: type[ValueError] = ValueError,
) -> N:
    """``value`` if it is a finite number within the bounds, else raise ``error`` naming it.

    ``minimum`` (and ``maximum``) are inclusive; ``positive`` asks for > 0
    instead, ``integer`` for an int.
    """
    # bool is an int subclass; `jitter_factor=True` is a mistake, not 1.0.
    kind = "an int" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        raise error(f"{name} must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise error(f"{name} must be finite, got {value!r}")
    if positive and value <= 0:
        raise error(f"{name} must be a finite number > 0, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise error(f"{name} must be {bound}, got {value!r}")
    return value
