"""Timing shared by the benchmarks: interleaved rounds, the cyclic GC on as users run.

Every figure is the best of ``repeat`` rounds; each round runs every function
once, so a slow patch of a shared machine hits a path and its floor alike.
Before each run the collector clears what the previous run left
(``gc.collect()``), and then stays ON: a program that keeps what it parses
pays for the collector's passes over it, and so does every figure here. A
benchmark may also print a figure with the collector off, labelled
``gc_off``, to show what the collector costs.
"""

from __future__ import annotations

import gc
import platform
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any


def race(
    repeat: int, fns: Mapping[str, Callable[[], object]], *, gc_on: bool = True
) -> dict[str, float]:
    """Best wall time in seconds of each function over ``repeat`` interleaved rounds."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            gc.collect()
            if not gc_on:
                gc.disable()
            try:
                start = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - start)
            finally:
                if not gc_on:
                    gc.enable()
    return best


def ratios(
    timings: Mapping[str, float], targets: Mapping[str, tuple[str, float]]
) -> dict[str, dict[str, Any]]:
    """Each path's speed as a fraction of its floor's (floor time / path time), with its target."""
    out: dict[str, dict[str, Any]] = {}
    for name, (floor, target) in targets.items():
        ratio = timings[floor] / timings[name]
        out[name] = {
            "floor": floor,
            "ratio": round(ratio, 3),
            "target": target,
            "ok": ratio >= target,
        }
    return out


def machine(**versions: str) -> dict[str, str]:
    """What the figures were measured on."""
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "processor": platform.machine(),
        "gc": "on (collected before each run)",
        **versions,
    }
