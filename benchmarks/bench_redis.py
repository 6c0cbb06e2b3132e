"""Session logs on Redis beside the in-memory log, in the same run: append, replay, follow.

Starts a ``redis-server`` of its own (a free port, no persistence) unless
``--redis-url`` is given, and prints JSON with, for the Redis store
(``enclave_stream.redis``) and the in-memory ``EventLog``:

* ``append``: events/s a producer appends (``stream.stdout``, awaiting
  ``drain()`` every ``--chunk`` events, as a fast producer does), counted
  until Redis holds every line (one Lua call per batch); the in-memory
  log's figure is the same loop.
* ``replay``: events/s a reader on another replica (its own client and
  connections) reads a finished session from seq 1 (XRANGE), beside an
  ``NdjsonBody`` over the in-memory log.
* ``follow``: the latency from ``append`` to the line reaching a live
  follower on another replica (XREAD BLOCK), p50 and p99 in ms, beside a
  follower of the in-memory log; events are appended one at a time,
  ``--gap-ms`` apart.

Figures are the best of ``--repeat`` rounds (latencies: the medians of all
samples), the collector on. Both replicas run in this process: the network
is loopback, so the Redis figures are a floor for a real network's.

Run: ``python benchmarks/bench_redis.py [--events N] [--repeat R] [--backend trio]``
"""

from __future__ import annotations

import argparse
import gc
import json
import secrets
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import coredis
from harness import machine

from enclave_stream.producer import EventStream, NdjsonBody
from enclave_stream.redis import RedisBackend, RedisEventStore, RedisLimits

# Room for a whole benchmark session: the figures are of speed, not of bounds.
LIMITS = RedisLimits(max_events=1_000_000, max_bytes=512 * 1024 * 1024)


@contextmanager
def redis_server(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        yield f"redis://127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait()


@asynccontextmanager
async def replicas(url: str) -> AsyncIterator[tuple[RedisBackend, RedisBackend]]:
    """Two backends on one Redis, each with its own client: an owner and another replica."""
    prefix = f"bench{secrets.token_hex(3)}"
    async with (
        RedisBackend(url, limits=LIMITS, prefix=prefix) as owner,
        RedisBackend(url, limits=LIMITS, prefix=prefix) as other,
    ):
        yield owner, other


def new_stream(owner: RedisBackend | None) -> EventStream:
    if owner is None:
        return EventStream(heartbeat_interval_ms=None, max_events=1_000_000, max_bytes=1 << 30)
    session_id = f"s_{secrets.token_hex(8)}"
    return EventStream(
        session_id, heartbeat_interval_ms=None, store_factory=owner.store_factory(session_id)
    )


async def produce(stream: EventStream, events: int, chunk: int) -> None:
    for index in range(events):
        stream.stdout(f"line {index} of the benchmark's output, about as long as a real one\n")
        if index % chunk == chunk - 1:
            await stream.drain(max_lag=chunk * 4)
    stream.final(True)
    store = stream.store
    if isinstance(store, RedisEventStore):
        await store.wait_written()


async def append_rate(owner: RedisBackend | None, events: int, chunk: int) -> float:
    stream = new_stream(owner)
    gc.collect()
    start = time.perf_counter()
    await produce(stream, events, chunk)
    return (events + 2) / (time.perf_counter() - start)


async def read_all(body: Any) -> int:
    count = 0
    async for chunk in body:
        count += chunk.count(b"\n")
    return count


async def replay_rate(
    owner: RedisBackend | None, other: RedisBackend | None, events: int, chunk: int
) -> float:
    stream = new_stream(owner)
    await produce(stream, events, chunk)
    gc.collect()
    start = time.perf_counter()
    if other is None:
        count = await read_all(NdjsonBody(stream.store, 1))
    else:
        count = await read_all(await other.open_replay(stream.session_id, 1))
    elapsed = time.perf_counter() - start
    assert count == events + 2, count
    return count / elapsed


async def follow_latencies(
    owner: RedisBackend | None, other: RedisBackend | None, samples: int, gap_s: float
) -> list[float]:
    stream = new_stream(owner)
    sent: dict[int, float] = {}
    latencies: list[float] = []
    if isinstance(stream.store, RedisEventStore):
        await stream.store.wait_written()  # the session is in Redis before the follower opens it

    async def follower() -> None:
        if other is None:
            body: Any = NdjsonBody(stream.store, 2)
        else:
            body = await other.open_replay(stream.session_id, 2)
        async for chunk in body:
            now = time.perf_counter()
            for line in chunk.splitlines():
                seq = int(line.split(b'"seq":', 1)[1].split(b",", 1)[0])
                if seq in sent:
                    latencies.append(now - sent[seq])

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(follower)
        await anyio.sleep(0.05)
        for index in range(samples):
            sent[stream.next_seq] = time.perf_counter()
            stream.stdout(f"live line {index}\n")
            await anyio.sleep(gap_s)
        stream.final(True)
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    async with replicas(url) as (owner, other):
        best: dict[str, float] = {}
        for round_ in range(args.repeat):
            # Alternate the order so that neither always runs on a warmer machine.
            order = ("memory", "redis") if round_ % 2 == 0 else ("redis", "memory")
            for kind in order:
                o, r = (None, None) if kind == "memory" else (owner, other)
                rate = await append_rate(o, args.events, args.chunk)
                best[f"append_{kind}"] = max(best.get(f"append_{kind}", 0.0), rate)
                rate = await replay_rate(o, r, args.events, args.chunk)
                best[f"replay_{kind}"] = max(best.get(f"replay_{kind}", 0.0), rate)
        follow: dict[str, dict[str, float]] = {}
        for kind in ("memory", "redis"):
            o, r = (None, None) if kind == "memory" else (owner, other)
            latencies = await follow_latencies(o, r, args.samples, args.gap_ms / 1000)
            follow[kind] = {
                "p50_ms": round(statistics.median(latencies) * 1000, 3),
                "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
                "samples": len(latencies),
            }
        info = await owner.client.info("server")
    return {
        "events": args.events + 2,
        "append_events_per_s": {
            "redis": round(best["append_redis"]),
            "memory": round(best["append_memory"]),
            "redis_over_memory": round(best["append_redis"] / best["append_memory"], 3),
        },
        "replay_events_per_s": {
            "redis_other_replica": round(best["replay_redis"]),
            "memory": round(best["replay_memory"]),
            "redis_over_memory": round(best["replay_redis"] / best["replay_memory"], 3),
        },
        "follow_latency": follow,
        "limits": {"batch_events": LIMITS.batch_events, "batch_bytes": LIMITS.batch_bytes},
        "machine": machine(
            backend=args.backend,
            coredis=coredis.__version__,
            redis=str(info.get("redis_version", "?")),
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=500, help="events between drain() calls")
    parser.add_argument("--repeat", type=int, default=3, help="rounds")
    parser.add_argument("--samples", type=int, default=300, help="live events timed")
    parser.add_argument("--gap-ms", type=float, default=2.0)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    with redis_server(args.redis_url) as url:
        results = anyio.run(measure, url, args, backend=args.backend)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
