"""Comparing values the way the vector files mean it: as JSON values."""

from __future__ import annotations

import math
from typing import Any


def _scalar_equal(ours: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(ours, bool):
        return type(ours) is type(expected) and ours == expected
    if isinstance(expected, (int, float)):
        return isinstance(ours, (int, float)) and (
            ours == expected or (math.isnan(ours) and math.isnan(expected))
        )
    return type(ours) is type(expected) and ours == expected


def json_equal(ours: Any, expected: Any) -> bool:
    """Deep equality of JSON values: numbers by value, bools never equal to numbers.

    Iterative, so that the 2000-deep vectors compare without recursion.
    """
    todo = [(ours, expected)]
    while todo:
        a, b = todo.pop()
        if isinstance(b, dict):
            if not isinstance(a, dict) or a.keys() != b.keys():
                return False
            todo.extend((a[k], b[k]) for k in b)
        elif isinstance(b, list):
            if not isinstance(a, list) or len(a) != len(b):
                return False
            todo.extend(zip(a, b, strict=True))
        elif not _scalar_equal(a, b):
            return False
    return True
