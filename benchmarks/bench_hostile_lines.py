"""How long the worst lines we can build hold the event loop, and what they cost.

Each hostile line (valid JSON the fast decoder refuses, so it takes the
JavaScript-semantics path) is sent, in 64 KiB chunks, through
``parse_ndjson_stream`` while a ticker task records the longest gap between its
turns: that gap is how long the loop was held. Target: at most 50 ms per MiB
of the line (issue 9; a fixed 10 ms allowance covers the scheduler itself).

Also printed, for each line: the CPU it costs when judged synchronously with
``parse_line`` (ms per MiB, GC on as users run), beside a valid line of the same
size on the fast path, so the asymmetry an attacker buys is visible.

Run: ``python benchmarks/bench_hostile_lines.py [--sizes-kib 64,1024,16000]
[--backend asyncio|trio]``
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import AsyncIterator, Callable

import anyio
import anyio.lowlevel

from enclave_stream import LineError, parse_line
from enclave_stream.streams import parse_ndjson_stream

KIB = 1024
MIB = 1024 * KIB
CHUNK = 64 * KIB
TARGET_MS_PER_MIB = 50.0
ALLOWANCE_MS = 10.0


def _event(args: str, session: str = "s_1") -> bytes:
    return (
        f'{{"protocolVersion":2,"sessionId":"{session}","seq":1,"type":"tool_call",'
        f'"payload":{{"callId":"c_1","toolName":"t","args":{args}}}}}'
    ).encode()


def _array(size: int, unit: str, depth: int = 0) -> str:
    count = max(1, (size - 2 * depth) // (len(unit) + 1))
    return "[" * depth + "[" + ",".join([unit] * count) + "]" + "]" * depth


def _unique_keys(size: int) -> str:
    """One object of ``"<hex>":""`` members: the most hashing and allocation per byte."""
    members: list[str] = []
    total = 0
    while total < size:
        members.append(f'"{len(members):x}":""')
        total += len(members[-1]) + 1
    return "{" + ",".join(members) + "}"


LINES: dict[str, Callable[[int], bytes]] = {
    "valid (fast path, for scale)": lambda size: _event(_array(size, "1")),
    "bad session id, ints": lambda size: _event(_array(size, "1"), session="x_1"),
    "bad session id, floats": lambda size: _event(_array(size, "1.5"), session="x_1"),
    "bad session id, objects": lambda size: _event(_array(size, '{"a":1}'), session="x_1"),
    "bad session id, unique keys": lambda size: _event(_unique_keys(size), session="x_1"),
    "1,001 deep, then ints": lambda size: _event(_array(size, "1", depth=1001)),
    "900-deep siblings": lambda size: _event(
        "[" + ",".join(["[" * 900 + "]" * 900] * max(1, size // 1801)) + "]"
    ),
    "objects 9,000 deep": lambda size: _event('{"a":' * 9000 + "1" + "}" * 9000),
}


async def _held_ms(line: bytes) -> tuple[float, float]:
    """(longest gap between the ticker's turns, total seconds) while the line is parsed."""
    gaps: list[float] = []
    done = anyio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await anyio.lowlevel.checkpoint()
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async def source() -> AsyncIterator[bytes]:
        data = line + b"\n"
        for start in range(0, len(data), CHUNK):
            yield data[start : start + CHUNK]
            await anyio.lowlevel.checkpoint()

    errors: list[LineError] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await anyio.lowlevel.checkpoint()
        start = time.perf_counter()
        async for _ in parse_ndjson_stream(source(), on_error=errors.append):
            pass
        total = time.perf_counter() - start
        done.set()
    return max(gaps) * 1000, total


def _sync_ms(line: bytes) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        parse_line(line)
        best = min(best, time.perf_counter() - start)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-kib", default="64,1024,16000")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args()
    sizes = [int(size) * KIB for size in args.sizes_kib.split(",")]
    print(f"# {platform.python_implementation()} {platform.python_version()} on {sys.platform}")
    print(f"# backend {args.backend}; target: loop held <= {TARGET_MS_PER_MIB:g} ms per MiB")
    rows = []
    failed = False
    for name, build in LINES.items():
        for size in sizes:
            line = build(size)
            mib = len(line) / MIB
            held, total = anyio.run(_held_ms, line, backend=args.backend)
            sync = _sync_ms(line)
            limit = TARGET_MS_PER_MIB * mib + ALLOWANCE_MS
            ok = held <= limit
            failed |= not ok
            rows.append(
                {
                    "line": name,
                    "MiB": round(mib, 3),
                    "loop_held_ms": round(held, 1),
                    "limit_ms": round(limit, 1),
                    "ok": ok,
                    "stream_seconds": round(total, 3),
                    "sync_ms_per_MiB": round(sync / mib, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print("RESULT:", "every line within the target" if not failed else "SOME LINE OVER THE TARGET")


if __name__ == "__main__":
    main()
