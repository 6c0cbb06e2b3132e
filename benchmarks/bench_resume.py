"""The resumable event stream on loopback HTTP: its cost, and how fast it resumes.

A broker in a child process serves the corpus of ``bench_ndjson.py`` (plus a
``final`` event) as ``GET /stream?fromSeq=N`` over HTTP/1.1 chunked NDJSON.
The client (httpx, this process) prints JSON with:

* ``throughput``: events/s through ``open_event_stream(httpx_connector(...))``
  without faults, and through ``parse_ndjson_stream(response.aiter_bytes())``
  on the same kind of connection; target ratio >= 0.8. After one untimed run
  of each, the two are timed in rounds, one run of each per round, in
  alternating order (A B, B A, ...) so that whatever one run leaves behind
  for the next hits both alike. ``round_ratios`` has each round's ratio of the
  two times, and ``ratio`` is their median: two runs side by side see the
  same machine, while the machine's state drifts from round to round (on a
  small shared machine, the parser's best time can come from a quieter
  moment than any of the other's runs got). ``best_of_ratio`` is the ratio of
  the best times, and the events/s are from the best times.
* ``resume``: with ``initial_delay_ms=0``, the time from the last event before
  a cut connection to the first event after it, over a fresh connection's time
  from ``open_event_stream`` to its first event (medians of samples taken in
  turns, after an untimed pair); target <= 1.5.

Run: ``python benchmarks/bench_resume.py [--lines N] [--repeat R] [--backend trio]``
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
from anyio.abc import SocketAttribute, SocketStream
from bench_ndjson import SESSION, build_corpus

from enclave_stream.reconnect import ReconnectionConfig, open_event_stream
from enclave_stream.reconnect.http import httpx_connector
from enclave_stream.streams import parse_ndjson_stream

CHUNK = 64 * 1024
NO_WAIT = ReconnectionConfig(initial_delay_ms=0, jitter=False)


# --- the broker (child process) ---------------------------------------------------


def _session(lines: int) -> tuple[bytes, list[int]]:
    """The corpus plus a final event, and where each seq's line starts."""
    final = (
        f'{{"protocolVersion":2,"sessionId":"{SESSION}","seq":{lines},'
        f'"type":"final","payload":{{"ok":true}}}}\n'
    )
    body = build_corpus(lines) + final.encode()
    starts = [0]
    at = body.find(b"\n")
    while at >= 0 and at + 1 < len(body):
        starts.append(at + 1)
        at = body.find(b"\n", at + 1)
    return body, starts


def _chunked(body: bytes, start: int, end: int) -> Iterator[bytes]:
    """HTTP chunks of ``body[start:end]``, made one at a time (the body is tens of MB)."""
    view = memoryview(body)
    for at in range(start, end, CHUNK):
        piece = view[at : min(at + CHUNK, end)]
        yield b"".join((b"%x\r\n" % len(piece), piece, b"\r\n"))


async def _handle(stream: SocketStream, body: bytes, starts: list[int]) -> None:
    async with stream:
        head = b""
        try:
            while b"\r\n\r\n" not in head:
                head += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return
        query = parse_qs(urlsplit(head.split(b" ", 2)[1].decode()).query)
        from_seq = int(query.get("fromSeq", ["0"])[0])
        # ?cut=K on a first connection: K events, then the connection drops.
        cut = int(query["cut"][0]) if "cut" in query and "fromSeq" not in query else None
        end = len(body) if cut is None else starts[cut]
        try:
            await stream.send(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )
            for piece in _chunked(body, starts[from_seq], end):
                await stream.send(piece)
            if cut is None:
                await stream.send(b"0\r\n\r\n")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass


def _serve(lines: int, port_to: Connection) -> None:
    body, starts = _session(lines)

    async def serve() -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        port_to.send(listener.extra(SocketAttribute.local_port))
        await listener.serve(lambda stream: _handle(stream, body, starts))

    anyio.run(serve)


# --- the measurements -------------------------------------------------------------


async def _via_parse_ndjson_stream(client: httpx.AsyncClient, url: str) -> int:
    count = 0
    async with client.stream("GET", url) as response:
        async for _ in parse_ndjson_stream(response.aiter_bytes()):
            count += 1
    return count


async def _via_open_event_stream(client: httpx.AsyncClient, url: str) -> int:
    count = 0
    async with open_event_stream(httpx_connector(client, url)) as events:
        async for _ in events:
            count += 1
    return count


async def _first_event_fresh(client: httpx.AsyncClient, url: str) -> float:
    start = time.perf_counter()
    async with open_event_stream(httpx_connector(client, url), config=NO_WAIT) as events:
        async for _ in events:
            return time.perf_counter() - start
    raise AssertionError("no event")


async def _first_event_resumed(client: httpx.AsyncClient, url: str, cut: int) -> float:
    before = 0.0
    async with open_event_stream(
        httpx_connector(client, url, params={"cut": cut}), config=NO_WAIT
    ) as events:
        async for event in events:
            if event.seq == cut - 1:
                before = time.perf_counter()
            elif event.seq == cut:
                return time.perf_counter() - before
    raise AssertionError("no resumed event")


async def _timed(fn: Callable[[], Awaitable[int]]) -> tuple[int, float]:
    gc.collect()  # what the last run left is not billed to this one; the collector stays on
    start = time.perf_counter()
    count = await fn()
    return count, time.perf_counter() - start


async def _measure(url: str, lines: int, repeat: int, samples: int) -> dict[str, Any]:
    limits = httpx.Limits(max_keepalive_connections=0)
    paths: list[tuple[str, Callable[[httpx.AsyncClient, str], Awaitable[int]]]] = [
        ("parse_ndjson_stream", _via_parse_ndjson_stream),
        ("open_event_stream", _via_open_event_stream),
    ]
    times: dict[str, list[float]] = {name: [] for name, _ in paths}
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0), limits=limits) as client:
        for name, fn in paths:  # warm-up: first-use costs are not what is measured
            assert await fn(client, url) == lines + 1, name
        for turn in range(repeat):
            for name, fn in paths if turn % 2 == 0 else paths[::-1]:
                count, seconds = await _timed(lambda fn=fn: fn(client, url))  # type: ignore[misc]
                assert count == lines + 1, (name, count)
                times[name].append(seconds)
        await _first_event_fresh(client, url)  # warm-up
        await _first_event_resumed(client, url, cut=10)
        fresh, resumed = [], []
        for _ in range(samples):
            fresh.append(await _first_event_fresh(client, url))
            resumed.append(await _first_event_resumed(client, url, cut=10))
    events = lines + 1
    best = {name: min(seconds) for name, seconds in times.items()}
    round_ratios = [
        parse / resumable
        for parse, resumable in zip(
            times["parse_ndjson_stream"], times["open_event_stream"], strict=True
        )
    ]
    ratio = statistics.median(round_ratios)
    fresh_ms = statistics.median(fresh) * 1000
    resumed_ms = statistics.median(resumed) * 1000
    return {
        "events": events,
        "throughput": {
            "open_event_stream_events_per_s": round(events / best["open_event_stream"]),
            "parse_ndjson_stream_events_per_s": round(events / best["parse_ndjson_stream"]),
            "ratio": round(ratio, 3),
            "target": 0.8,
            "ok": ratio >= 0.8,
            "round_ratios": [round(value, 3) for value in round_ratios],
            "best_of_ratio": round(best["parse_ndjson_stream"] / best["open_event_stream"], 3),
        },
        "resume": {
            "fresh_first_event_ms": round(fresh_ms, 3),
            "resumed_first_event_ms": round(resumed_ms, 3),
            "ratio": round(resumed_ms / fresh_ms, 3),
            "target": 1.5,
            "ok": resumed_ms / fresh_ms <= 1.5,
            "samples": samples,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=9, help="rounds")
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()

    receive_port, send_port = multiprocessing.Pipe(duplex=False)
    server = multiprocessing.Process(target=_serve, args=(args.lines, send_port), daemon=True)
    server.start()
    try:
        url = f"http://127.0.0.1:{receive_port.recv()}/stream"
        results = anyio.run(
            _measure, url, args.lines, args.repeat, args.samples, backend=args.backend
        )
    finally:
        server.terminate()
        server.join()
    results["machine"] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "backend": args.backend,
        "anyio": anyio.__version__ if hasattr(anyio, "__version__") else "4",
        "httpx": httpx.__version__,
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
