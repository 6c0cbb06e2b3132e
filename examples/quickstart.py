"""Round-trip a simulated session through the NDJSON codec and print it.

Builds the events a sandboxed run produces (session_init, stdout, a log line,
a tool call, partial results, a heartbeat, the final result), serializes them
to NDJSON exactly as the TypeScript reference would, slips in a corrupted line
the way a flaky proxy might, then reads the bytes back in awkward 7-byte chunks
with ``parse_ndjson_stream`` and checks that every event survived.

Run: ``python examples/quickstart.py``
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel

from enclave_stream import (
    FinalEvent,
    HeartbeatEvent,
    LineError,
    LogEvent,
    LogLevel,
    ParsedEvent,
    PartialResultEvent,
    SessionInitEvent,
    StdoutEvent,
    ToolCallEvent,
    generate_session_id,
    parse_ndjson_stream,
    serialize_event,
)
from enclave_stream.events import (
    EncryptionConfig,
    FinalPayload,
    HeartbeatPayload,
    LogPayload,
    PartialResultPayload,
    SessionInitPayload,
    SessionStats,
    StdoutPayload,
    ToolCallPayload,
)
from enclave_stream.protocol import generate_call_id


def simulated_session() -> list[ParsedEvent]:
    """The events of a short run, in order."""
    sid = generate_session_id()
    call_id = generate_call_id()
    payloads = [
        SessionInitPayload(
            cancel_url=f"https://enclave.example/sessions/{sid}/cancel",
            expires_at="2026-11-23T22:00:00.000Z",
            encryption=EncryptionConfig(enabled=False),
        ),
        StdoutPayload("Fetching the weather for 3 cities…\n"),
        LogPayload(LogLevel.INFO, "tool call", {"tool": "weather.get", "cities": 3}),
        ToolCallPayload(call_id, "weather.get", {"cities": ["Zürich", "東京", "Lagos"]}),
        PartialResultPayload(
            path=["forecasts", "0"], data={"city": "Zürich", "c": 4.5}, has_next=True
        ),
        PartialResultPayload(
            path=["forecasts", "1"], data={"city": "東京", "c": 12}, has_next=True
        ),
        HeartbeatPayload("2026-11-23T21:00:15Z"),
        StdoutPayload("Done. 🌦\n"),
        FinalPayload(ok=True, result={"count": 3}, stats=SessionStats(812.5, 1, 52)),
    ]
    classes = [
        SessionInitEvent,
        StdoutEvent,
        LogEvent,
        ToolCallEvent,
        PartialResultEvent,
        PartialResultEvent,
        HeartbeatEvent,
        StdoutEvent,
        FinalEvent,
    ]
    return [
        cls(session_id=sid, seq=seq, payload=payload)
        for seq, (cls, payload) in enumerate(zip(classes, payloads, strict=True), start=1)
    ]


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    """The bytes as a slow network would deliver them."""
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await anyio.lowlevel.checkpoint()


def describe(event: ParsedEvent) -> str:
    """One readable line per event."""
    match event:
        case StdoutEvent(payload=StdoutPayload(chunk=chunk)):
            return f"stdout  {chunk!r}"
        case LogEvent(payload=LogPayload(level=level, message=message, data=data)):
            return f"log     [{level}] {message} {data}"
        case ToolCallEvent(payload=ToolCallPayload(tool_name=name, args=args)):
            return f"tool    {name}({args})"
        case PartialResultEvent(payload=PartialResultPayload(path=path, data=data)):
            return f"partial {'/'.join(path)} = {data}"
        case FinalEvent(payload=FinalPayload(ok=ok, result=result)):
            return f"final   ok={ok} result={result}"
        case _:
            return f"{event.type}"


async def main() -> None:
    events = simulated_session()
    lines = [serialize_event(event) for event in events]
    # A proxy mangled one line in transit: it must be reported, not fatal.
    lines.insert(4, lines[4][:40])
    wire = ("\n".join(lines) + "\n").encode("utf-8")
    print(f"session {events[0].session_id}: {len(events)} events, {len(wire)} bytes of NDJSON\n")

    errors: list[LineError] = []
    received = [
        event async for event in parse_ndjson_stream(chunked(wire, 7), on_error=errors.append)
    ]
    for event in received:
        print(f"  #{event.seq:<2} {describe(event)}")
    for error in errors:
        print(f"\n  line {error.line} skipped ({error.kind}): {error.error}")

    assert received == events, "the round trip changed an event"
    assert [serialize_event(e) for e in received] == [serialize_event(e) for e in events]
    print(
        f"\nround trip OK: {len(received)}/{len(events)} events identical,"
        f" {len(errors)} bad line reported"
    )


if __name__ == "__main__":
    anyio.run(main)
