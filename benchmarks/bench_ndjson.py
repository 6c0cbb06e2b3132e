"""NDJSON throughput: our parsers and serializer against same-run msgspec floors.

Builds a deterministic corpus of 200,000 lines (70% stdout with 20-400
character chunks, 10% log with a small data object, 10% tool_call with nested
args, 5% heartbeat, 5% partial_result) and prints JSON with events/s and MB/s
for each path, and each path's ratio to its floor:

* parse floor: a reused ``msgspec.json.Decoder`` of a plain tagged union of the
  five event shapes (no constraints), decoding each pre-split line. It comes in
  two forms: ``parse_floor`` drops each decoded object (what a streaming
  consumer does, so it is the floor of the two streaming paths) and
  ``parse_floor_kept`` keeps them in a list (what ``parse_lines`` must do, as
  it returns them; keeping 200,000 objects alive costs about as much as
  decoding them, because every object lands in fresh memory);
* serialize floor: a reused ``msgspec.json.Encoder`` encoding the same plain
  structs, one line each, joined with newlines.

Targets (issue 2): parse_lines >= 0.6, both streaming paths >= 0.5,
serialize_events >= 0.8 of their floors.

Run: ``python benchmarks/bench_ndjson.py [--lines N] [--repeat R]``
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import sys
import time
from collections.abc import Callable
from typing import Any, Union

import anyio
import msgspec

from enclave_stream import (
    NdjsonStreamParser,
    parse_lines,
    serialize_events,
)
from enclave_stream.streams import parse_ndjson_stream

CHUNK = 64 * 1024
SESSION = "s_0f8fad5b-d9cb-469f-a165-70867728950e"


def build_corpus(n: int, seed: int = 1592590337) -> bytes:
    """The deterministic benchmark corpus as NDJSON bytes."""
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "λ", "東京"]
    lines = []
    for seq in range(n):
        r = rng.random()
        base: dict[str, Any] = {"protocolVersion": 2, "sessionId": SESSION, "seq": seq}
        if r < 0.70:
            size = rng.randint(20, 400)
            chunk = "".join(
                rng.choice("abcdefghijklmnopqrstuvwxyz0123456789 \n") for _ in range(size)
            )
            ev = {**base, "type": "stdout", "payload": {"chunk": chunk}}
        elif r < 0.80:
            data = {
                "step": rng.randint(0, 100),
                "name": rng.choice(words),
                "ok": rng.random() < 0.5,
            }
            ev = {
                **base,
                "type": "log",
                "payload": {
                    "level": rng.choice(["debug", "info", "warn", "error"]),
                    "message": " ".join(rng.choices(words, k=6)),
                    "data": data,
                },
            }
        elif r < 0.90:
            args = {
                "query": " ".join(rng.choices(words, k=4)),
                "opts": {
                    "limit": rng.randint(1, 50),
                    "tags": rng.choices(words, k=3),
                    "filter": {"since": "2025-01-01T00:00:00Z", "score": rng.random()},
                },
            }
            ev = {
                **base,
                "type": "tool_call",
                "payload": {
                    "callId": f"c_{rng.randrange(1 << 30):08x}",
                    "toolName": "web.search",
                    "args": args,
                },
            }
        elif r < 0.95:
            ev = {
                **base,
                "type": "heartbeat",
                "payload": {"ts": f"2025-03-01T12:{seq % 60:02d}:{seq % 59:02d}.250Z"},
            }
        else:
            ev = {
                **base,
                "type": "partial_result",
                "payload": {
                    "path": ["users", str(seq % 10)],
                    "data": {"id": seq, "name": rng.choice(words)},
                    "hasNext": True,
                },
            }
        lines.append(json.dumps(ev, separators=(",", ":"), ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode("utf-8")


# --- the floors: plain structs, no constraints -----------------------------------


class _SP(msgspec.Struct):
    chunk: str


class _LP(msgspec.Struct):
    level: str
    message: str
    data: dict[str, Any] | None = None


class _TP(msgspec.Struct, rename="camel"):
    call_id: str
    tool_name: str
    args: Any = None


class _HP(msgspec.Struct):
    ts: str


class _PP(msgspec.Struct, rename="camel"):
    path: list[str]
    has_next: bool
    data: Any = None


class _B(msgspec.Struct, rename="camel", tag_field="type"):
    protocol_version: int
    session_id: str
    seq: int


class _S(_B, tag="stdout"):
    payload: _SP


class _L(_B, tag="log"):
    payload: _LP


class _T(_B, tag="tool_call"):
    payload: _TP


class _H(_B, tag="heartbeat"):
    payload: _HP


class _P(_B, tag="partial_result"):
    payload: _PP


PLAIN = Union[_S, _L, _T, _H, _P]


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    """Fastest wall time of ``repeat`` runs (GC collected before, disabled during)."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        finally:
            gc.enable()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    corpus = build_corpus(args.lines)
    pre_split = corpus.split(b"\n")[:-1]
    chunks = [corpus[i : i + CHUNK] for i in range(0, len(corpus), CHUNK)]
    n = len(pre_split)
    mb = len(corpus) / 1e6

    floor_decoder = msgspec.json.Decoder(PLAIN)
    plain_events = [floor_decoder.decode(line) for line in pre_split]
    our_events = parse_lines(corpus).events
    assert len(our_events) == n

    def parse_floor() -> None:
        decode = floor_decoder.decode
        for line in pre_split:
            decode(line)

    def parse_floor_kept() -> None:
        decode = floor_decoder.decode
        kept = [decode(line) for line in pre_split]
        assert len(kept) == n

    def run_parse_lines() -> None:
        result = parse_lines(corpus)
        assert len(result.events) == n

    def run_stream_parser() -> None:
        count = 0

        def on_event(_: object) -> None:
            nonlocal count
            count += 1

        p = NdjsonStreamParser(on_event, print)
        for c in chunks:
            p.feed(c)
        p.flush()
        assert count == n

    def run_stream_parser_pull() -> None:
        count = 0
        p = NdjsonStreamParser()
        for c in chunks:
            count += len(p.feed(c))
        count += len(p.flush())
        assert count == n

    def run_async_stream() -> None:
        async def go() -> None:
            send, receive = anyio.create_memory_object_stream[bytes](len(chunks))
            for c in chunks:
                send.send_nowait(c)
            send.close()
            count = 0
            async for _ in parse_ndjson_stream(receive):
                count += 1
            assert count == n

        anyio.run(go)

    encoder = msgspec.json.Encoder()

    def serialize_floor() -> None:
        encode = encoder.encode
        b"\n".join([encode(e) for e in plain_events]).decode("utf-8")

    def run_serialize() -> None:
        serialize_events(our_events)

    results: dict[str, Any] = {
        "machine": {
            "python": sys.version.split()[0],
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "processor": platform.machine(),
            "msgspec": msgspec.__version__,
        },
        "lines": n,
        "megabytes": round(mb, 2),
    }
    timings = {
        "parse_floor": best_of(args.repeat, parse_floor),
        "parse_floor_kept": best_of(args.repeat, parse_floor_kept),
        "parse_lines": best_of(args.repeat, run_parse_lines),
        "stream_parser_64k": best_of(args.repeat, run_stream_parser),
        "stream_parser_64k_pull": best_of(args.repeat, run_stream_parser_pull),
        "parse_ndjson_stream_64k": best_of(args.repeat, run_async_stream),
        "serialize_floor": best_of(args.repeat, serialize_floor),
        "serialize_events": best_of(args.repeat, run_serialize),
    }
    for name, seconds in timings.items():
        results[name] = {"events_per_s": round(n / seconds), "mb_per_s": round(mb / seconds, 1)}
    targets = {
        "parse_lines": ("parse_floor_kept", 0.6),
        "stream_parser_64k": ("parse_floor", 0.5),
        "stream_parser_64k_pull": ("parse_floor", 0.5),
        "parse_ndjson_stream_64k": ("parse_floor", 0.5),
        "serialize_events": ("serialize_floor", 0.8),
    }
    results["ratios"] = {
        name: {
            "ratio": round(timings[floor] / timings[name], 3),
            "target": target,
            "ok": timings[floor] / timings[name] >= target,
        }
        for name, (floor, target) in targets.items()
    }
    results["ratios"]["parse_lines_vs_parse_floor"] = {
        "ratio": round(timings["parse_floor"] / timings["parse_lines"], 3),
        "note": "informative: against the floor that drops its results",
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
