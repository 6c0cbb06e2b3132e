"""Bounded memory: stream 1 GiB of NDJSON through ``parse_ndjson_stream``.

The input is generated on the fly, never stored: a deterministic ~1 MiB corpus
of lines (stdout, log, tool_call, heartbeat, partial_result, and one bad line
in 500) is repeated, cut into 64 KiB chunks that start at every possible place
inside a line, and yielded by an async generator. The consumer counts the
events and the bad lines (``on_error``) and keeps nothing.

Prints JSON with the peak RSS of the process (``ru_maxrss``, KiB on Linux)
before and after the run, bytes processed, events, errors, seconds, and whether
the peak stayed under 100 MiB.

``--huge-line-mib 100`` also inserts a 100 MiB line without a newline half-way:
it is reported as ``line_too_long`` and dropped, so the peak stays the same
plus at most ``max_line_bytes`` (16 MiB by default).

Run: ``python benchmarks/bench_memory.py [--gib 1.0] [--backend asyncio|trio]
[--huge-line-mib N] [--max-line-bytes N]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import random
import resource
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio

from enclave_stream import LineError, serialize_event
from enclave_stream.streams import parse_ndjson_stream

CHUNK = 64 * 1024
SESSION = "s_0f8fad5b-d9cb-469f-a165-70867728950e"
LIMIT_MIB = 100


def build_corpus(target_bytes: int = 1 << 20, seed: int = 20250301) -> tuple[bytes, int, int]:
    """About ``target_bytes`` of NDJSON; returns (corpus, good lines, bad lines)."""
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "délta", "東京", "😀", "line\u2028sep"]
    lines: list[bytes] = []
    size = good = bad = 0
    seq = 0
    while size < target_bytes:
        seq += 1
        r = rng.random()
        base: dict[str, Any] = {"protocolVersion": 2, "sessionId": SESSION, "seq": seq}
        if seq % 500 == 0:
            line = b'{"protocolVersion":2,"sessionId":"s_1","seq":-1,"type":"stdout"}'
            bad += 1
        else:
            if r < 0.70:
                chunk = " ".join(rng.choices(words, k=rng.randint(3, 60)))
                event = {**base, "type": "stdout", "payload": {"chunk": chunk}}
            elif r < 0.80:
                event = {
                    **base,
                    "type": "log",
                    "payload": {
                        "level": rng.choice(["debug", "info", "warn", "error"]),
                        "message": " ".join(rng.choices(words, k=5)),
                        "data": {"n": rng.randint(0, 1000), "ok": rng.random() < 0.5},
                    },
                }
            elif r < 0.90:
                event = {
                    **base,
                    "type": "tool_call",
                    "payload": {
                        "callId": f"c_{seq}",
                        "toolName": "web.search",
                        "args": {"q": rng.choice(words), "opts": {"limit": 10, "x": [1.5, None]}},
                    },
                }
            elif r < 0.95:
                event = {**base, "type": "heartbeat", "payload": {"ts": "2025-03-01T12:00:00.000Z"}}
            else:
                event = {
                    **base,
                    "type": "partial_result",
                    "payload": {"path": ["a", str(seq)], "data": {"v": seq}, "hasNext": True},
                }
            line = serialize_event(event).encode()
            good += 1
        lines.append(line)
        size += len(line) + 1
    return b"\n".join(lines) + b"\n", good, bad


async def generate(
    corpus: bytes, total: int, chunk_size: int, huge_line: int = 0
) -> AsyncIterator[bytes]:
    """``total`` bytes of the corpus repeated, in chunks; then up to the next newline.

    With ``huge_line``, that many bytes of ``x`` without a newline are inserted
    half-way (they lengthen the line in progress), followed by a newline.
    """
    period = len(corpus)
    doubled = corpus + corpus  # a chunk may wrap around the end of the corpus
    position = 0
    sent = 0
    while sent < total:
        if huge_line and sent >= total // 2:
            filler = b"x" * chunk_size
            for _ in range(huge_line // chunk_size):
                sent += len(filler)
                yield filler
            sent += 1
            yield b"\n"
            huge_line = 0
        start = position % period
        chunk = doubled[start : start + chunk_size]
        position += len(chunk)
        sent += len(chunk)
        yield chunk
    # finish the line in progress so that the stream ends cleanly
    start = position % period
    yield doubled[start : doubled.index(b"\n", start) + 1]


def max_rss_kib() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(usage // 1024) if sys.platform == "darwin" else int(usage)  # bytes on macOS


async def run(
    total: int, chunk_size: int, max_line_bytes: int | None, huge_line: int
) -> dict[str, Any]:
    corpus, _, _ = build_corpus()
    rss_before = max_rss_kib()
    counted = {"events": 0, "errors": 0, "bytes": 0}

    def on_error(error: LineError) -> None:
        counted["errors"] += 1

    async def source() -> AsyncIterator[bytes]:
        async for chunk in generate(corpus, total, chunk_size, huge_line):
            counted["bytes"] += len(chunk)
            yield chunk

    kwargs: dict[str, Any] = {"on_error": on_error}
    if max_line_bytes is not None:
        kwargs["max_line_bytes"] = max_line_bytes
    events = 0
    started = time.perf_counter()
    async with contextlib.aclosing(parse_ndjson_stream(source(), **kwargs)) as stream:  # type: ignore[type-var]
        async for _ in stream:
            events += 1
    seconds = time.perf_counter() - started
    rss_after = max_rss_kib()
    counted["events"] = events
    return {
        "bytes": counted["bytes"],
        "gib": round(counted["bytes"] / (1 << 30), 4),
        "events": events,
        "errors": counted["errors"],
        "seconds": round(seconds, 3),
        "mb_per_s": round(counted["bytes"] / seconds / 1e6, 1),
        "events_per_s": round(events / seconds),
        "chunk_bytes": chunk_size,
        "corpus_bytes": len(corpus),
        "peak_rss_kib_before": rss_before,
        "peak_rss_kib_after": rss_after,
        "peak_rss_mib_after": round(rss_after / 1024, 1),
        "peak_rss_under_100_mib": rss_after < LIMIT_MIB * 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=1.0, help="input size in GiB (default 1)")
    parser.add_argument("--chunk", type=int, default=CHUNK, help="chunk size in bytes (64 KiB)")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--max-line-bytes", type=int, default=None, help="default 16 MiB")
    parser.add_argument(
        "--huge-line-mib", type=int, default=0, help="insert a line this long, half-way (MiB)"
    )
    args = parser.parse_args()
    total = int(args.gib * (1 << 30))
    huge = args.huge_line_mib << 20
    result = anyio.run(run, total, args.chunk, args.max_line_bytes, huge, backend=args.backend)
    result["huge_line_mib"] = args.huge_line_mib
    result["backend"] = args.backend
    result["python"] = platform.python_version()
    print(json.dumps(result, indent=2))
    if not result["peak_rss_under_100_mib"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
