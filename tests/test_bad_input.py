"""Bad input, line by line: each gets its error and the good lines around it are delivered."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from enclave_stream import (
    FailureKind,
    LineError,
    NdjsonStreamParser,
    ParsedEvent,
    StdoutEvent,
    parse_line,
    parse_lines,
    serialize_event,
)
from enclave_stream._json import MAX_DEPTH
from enclave_stream.events import StdoutPayload
from enclave_stream.streams import create_ndjson_parse_stream, parse_ndjson_stream

SID = "s_1"
BEFORE = StdoutEvent(session_id=SID, seq=1, payload=StdoutPayload("before"))
AFTER = StdoutEvent(session_id=SID, seq=2, payload=StdoutPayload("after"))
BEFORE_LINE = serialize_event(BEFORE).encode()
AFTER_LINE = serialize_event(AFTER).encode()

MIB = 1024 * 1024


def event_line(payload: str, type_: str = "stdout", seq: str = "3") -> bytes:
    return (
        f'{{"protocolVersion":2,"sessionId":"s_1","seq":{seq},"type":"{type_}","payload":{payload}}}'
    ).encode()


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


ASCII_GARBAGE = bytes(b for b in range(128) if b != 0x0A)


@dataclass(frozen=True)
class Case:
    name: str
    line: bytes
    kind: str | None  # None: not an error (an event, or a skipped blank line)
    path: str | None = None
    content: str | None = None  # expected LineError.content (checked when given)
    event: bool = False  # the line is a valid event
    message: str | None = None  # a part of LineError.error (checked when given)


# Deeper than Python's recursion limit, within the documented bound (compatibility N10).
DEEP_ARGS = event_line(
    '{"callId":"c_1","toolName":"t","args":' + nested(MAX_DEPTH - 2).decode() + "}", "tool_call"
)
TOO_DEEP = "Nesting deeper than"
TOO_DENSE = "Too many arrays and objects"

CASES = [
    Case("truncated-json", BEFORE_LINE[:40], "json", content=BEFORE_LINE[:40].decode()),
    Case("truncated-in-escape", event_line('{"chunk":"\\u12'), "json"),
    Case("binary-garbage", ASCII_GARBAGE, "json", content=ASCII_GARBAGE.decode()[:100] + "..."),
    Case("high-bytes", bytes(range(0x80, 0x100)), "json", content="\ufffd" * 100 + "..."),
    Case("lone-cr", b"\r", None),
    Case("only-spaces-tabs", b" \t \x0b\x0c ", None),
    Case("bom-alone", b"\xef\xbb\xbf", None),
    Case("bom-then-event", b"\xef\xbb\xbf" + event_line('{"chunk":"bom"}'), None, event=True),
    Case(
        "nbsp-u3000-trimmed", "\xa0\u3000".encode() + event_line('{"chunk":"x"}'), None, event=True
    ),
    Case("u2028-inside-string", event_line('{"chunk":"a\u2028b\u2029c"}'), None, event=True),
    Case("u0085-inside-string", event_line('{"chunk":"a\u0085b"}'), None, event=True),
    Case(
        "u2028-around-line",
        "\u2028".encode() + event_line('{"chunk":"x"}') + "\u2029".encode(),
        None,
        event=True,
    ),
    Case("u0085-before-line", "\u0085".encode() + event_line('{"chunk":"x"}'), "json"),
    Case("zwsp-before-line", "\u200b".encode() + event_line('{"chunk":"x"}'), "json"),
    Case("raw-control-char-in-string", event_line('{"chunk":"a\x01b"}'), "json"),
    Case(
        "invalid-utf8-in-string",
        event_line('{"chunk":"aXb"}').replace(b"X", b"\xc3"),
        None,
        event=True,
    ),
    Case("json-array", b"[1,2,3]", "validation", "$", "[1,2,3]"),
    Case("json-number", b"42", "validation", "$", "42"),
    Case("json-null", b"null", "validation", "$", "null"),
    Case("json-string", b'"stdout"', "validation", "$", '"stdout"'),
    Case("json-true", b"true", "validation", "$"),
    Case("empty-object", b"{}", "validation", "$", "{}"),
    Case("nan-bare", b"NaN", "json", content="NaN"),
    Case("nan-seq", event_line('{"chunk":"x"}', seq="NaN"), "json"),
    Case("infinity-seq", event_line('{"chunk":"x"}', seq="Infinity"), "json"),
    Case("huge-number-seq", event_line('{"chunk":"x"}', seq="1e400"), "validation", "$.seq"),
    Case("trailing-garbage", event_line('{"chunk":"x"}') + b" x", "json"),
    Case("two-objects-one-line", event_line('{"chunk":"x"}') * 2, "json"),
    Case("single-quotes", b"{'a':1}", "json"),
    Case("trailing-comma", b'{"a":1,}', "json"),
    Case(
        "missing-protocol-version",
        b'{"sessionId":"s_1","seq":1,"type":"stdout","payload":{"chunk":"x"}}',
        "validation",
        "$",
    ),
    Case(
        "session-id-prefix-only",
        b'{"protocolVersion":2,"sessionId":"s_","seq":1,"type":"stdout","payload":{"chunk":"x"}}',
        "validation",
        "$.sessionId",
    ),
    Case(
        "session-id-wrong-prefix",
        b'{"protocolVersion":2,"sessionId":"S_1","seq":1,"type":"stdout","payload":{"chunk":"x"}}',
        "validation",
        "$.sessionId",
    ),
    Case("unknown-type", event_line("{}", "nope"), "validation", "$.type"),
    Case("seq-negative", event_line('{"chunk":"x"}', seq="-1"), "validation", "$.seq"),
    Case("seq-fraction", event_line('{"chunk":"x"}', seq="1.5"), "validation", "$.seq"),
    Case("seq-unsafe", event_line('{"chunk":"x"}', seq="9007199254740992"), "validation", "$.seq"),
    Case("seq-1e2-accepted", event_line('{"chunk":"x"}', seq="1e2"), None, event=True),
    Case(
        "bad-call-id",
        event_line('{"callId":"x_1","toolName":"t"}', "tool_call"),
        "validation",
        "$.payload.callId",
    ),
    Case(
        "bad-level",
        event_line('{"level":"loud","message":"m"}', "log"),
        "validation",
        "$.payload.level",
    ),
    Case(
        "bad-ts",
        event_line('{"ts":"2024-01-01T00:00:00+01:00"}', "heartbeat"),
        "validation",
        "$.payload.ts",
    ),
    Case(
        "nested-detail",
        event_line(
            '{"ok":false,"errors":[{"code":"c","message":"m","details":[{"type":"quota_info","limit":-1,"used":0}]}]}',
            "final",
        ),
        "validation",
        "$.payload.errors[0].details[0].limit",
    ),
    Case(
        "null-optional",
        event_line('{"level":"info","message":"m","data":null}', "log"),
        "validation",
        "$.payload.data",
    ),
    Case(
        "duplicate-key-last-wins",
        b'{"protocolVersion":2,"sessionId":"s_1","seq":-1,"seq":3,"type":"stdout","payload":{"chunk":"x"}}',
        None,
        event=True,
    ),
    Case("nesting-1000-bare", nested(1000), "validation", "$", "[" * 100 + "..."),
    Case(
        "nesting-1000-args",
        event_line(
            '{"callId":"c_1","toolName":"t","args":' + nested(1000).decode() + "}", "tool_call"
        ),
        None,
        event=True,
    ),
    Case("nesting-1000-unclosed", b"[" * 1000, "json"),
    # Beyond the recursion limit: the reference's verdict up to MAX_DEPTH levels ...
    Case("nesting-max-bare", nested(MAX_DEPTH), "validation", "$", "[" * 100 + "..."),
    Case("nesting-max-objects", b'{"a":' * MAX_DEPTH + b"1" + b"}" * MAX_DEPTH, "validation", "$"),
    Case("nesting-max-args", DEEP_ARGS, None, event=True),
    Case("nesting-max-bad-seq", DEEP_ARGS.replace(b'"seq":3', b'"seq":-3'), "validation", "$.seq"),
    # ... and a typed JSON error (never a RecursionError) beyond it; lines
    # this big and this dense in containers are refused before any decoding
    Case("nesting-20000-bare", nested(20_000), "json", message=TOO_DEEP),
    Case("nesting-100000-bare", nested(100_000), "json", message=TOO_DENSE),
    Case(
        "nesting-100000-objects",
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        "json",
        message=TOO_DENSE,
    ),
    Case(
        "nesting-100000-args",
        DEEP_ARGS.replace(b"[", b"[" * 10, 10_000),
        "json",
        message=TOO_DENSE,
    ),
    Case("nesting-100000-unclosed", b"[" * 100_000, "json"),
]


def document(case: Case) -> bytes:
    return b"\n".join([BEFORE_LINE, case.line, AFTER_LINE]) + b"\n"


def check_verdict(
    case: Case, events: list[ParsedEvent], errors: list[LineError], offsets: bool
) -> None:
    assert events[0] == BEFORE
    assert events[-1] == AFTER
    if case.event:
        assert len(events) == 3
        assert events[1].seq in (3, 100)
    else:
        assert len(events) == 2
    if case.kind is None:
        assert errors == []
        return
    (error,) = errors
    assert error.line == 2
    assert error.kind == case.kind
    assert error.path == case.path
    if case.kind == "validation":
        assert error.error.startswith("Validation error: ")
    else:
        assert error.error.startswith("JSON parse error: ")
    if case.message is not None:
        assert case.message in error.error
    if case.content is not None:
        assert error.content == case.content
    else:
        assert error.content  # the trimmed line, possibly cut
    assert error.offset == (len(BEFORE_LINE) + 1 if offsets else None)


# Whole document, 4 KiB chunks, and tiny chunks (7 bytes; 997 for the long deep lines).
STREAM_PARAMS = [
    pytest.param(case, size, id=f"{case.name}-{size}")
    for case in CASES
    for size in (1 << 30, 4096, 7 if len(case.line) < 10_000 else 997)
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_parse_line_verdict(case: Case) -> None:
    result = parse_line(case.line)
    if case.event:
        assert result.success
    elif case.kind is None:
        assert result.kind == "empty"  # type: ignore[union-attr]
    else:
        assert result.success is False
        assert result.kind == case.kind
        assert result.path == case.path
        if case.message is not None:
            assert case.message in result.error


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_parse_lines(case: Case) -> None:
    result = parse_lines(document(case))
    check_verdict(case, result.events, result.errors, offsets=False)


@pytest.mark.parametrize(("case", "chunk_size"), STREAM_PARAMS)
def test_stream_parser(case: Case, chunk_size: int) -> None:
    data = document(case)
    events: list[ParsedEvent] = []
    errors: list[LineError] = []
    parser = NdjsonStreamParser(events.append, errors.append)
    for i in range(0, len(data), chunk_size):
        parser.feed(data[i : i + chunk_size])
    parser.flush()
    check_verdict(case, events, errors, offsets=True)
    assert parser.line_number == 3


def test_deep_event_re_serializes_without_recursion_error() -> None:
    result = parse_line(DEEP_ARGS)
    assert result.success
    assert serialize_event(result.data).encode() == DEEP_ARGS


# --- a 100 MiB line without a newline -----------------------------------------------------

HUGE = 100 * MIB
CHUNK = b"x" * (64 * 1024)


def huge_line_chunks() -> list[bytes]:
    """A good line, 100 MiB of 'x' in 64 KiB chunks (no newline), a newline, a good line."""
    return [BEFORE_LINE + b"\n", *([CHUNK] * (HUGE // len(CHUNK))), b"\n" + AFTER_LINE + b"\n"]


@pytest.mark.parametrize(
    "max_line_bytes", [64 * 1024, MIB, 16 * MIB], ids=["64KiB", "1MiB", "default"]
)
def test_huge_line_stream_parser(max_line_bytes: int) -> None:
    items: list[Any] = []
    kwargs = {} if max_line_bytes == 16 * MIB else {"max_line_bytes": max_line_bytes}
    parser = NdjsonStreamParser(items.append, items.append, **kwargs)
    assert parser.max_line_bytes == max_line_bytes
    reported_after: int | None = None
    fed = 0
    tracemalloc.start()
    try:
        for chunk in huge_line_chunks():
            parser.feed(chunk)
            fed += len(chunk)
            assert parser.pending_bytes <= max_line_bytes
            if reported_after is None and any(isinstance(i, LineError) for i in items):
                reported_after = fed
        parser.flush()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < max_line_bytes * 2 + MIB, peak  # nowhere near 100 MiB
    assert [i for i in items if not isinstance(i, LineError)] == [BEFORE, AFTER]
    (error,) = [i for i in items if isinstance(i, LineError)]
    assert error.kind == FailureKind.LINE_TOO_LONG
    assert (error.line, error.offset, error.path) == (2, len(BEFORE_LINE) + 1, None)
    assert error.content == "x" * 100 + "..."
    assert str(max_line_bytes) in error.error
    # reported as soon as the line passed the limit, not when its newline came
    assert reported_after is not None
    assert reported_after <= len(BEFORE_LINE) + 1 + max_line_bytes + len(CHUNK)
    assert parser.line_number == 3


def test_huge_unterminated_last_line() -> None:
    items: list[Any] = []
    parser = NdjsonStreamParser(items.append, items.append, max_line_bytes=MIB)
    parser.feed(BEFORE_LINE + b"\n")
    for _ in range(8 * MIB // len(CHUNK)):
        parser.feed(CHUNK)
    assert parser.has_pending_data()
    parser.flush()
    assert items[0] == BEFORE
    assert [(e.line, e.kind, e.offset) for e in items[1:]] == [
        (2, "line_too_long", len(BEFORE_LINE) + 1)
    ]
    assert parser.line_number == 2


def test_huge_line_in_one_chunk_with_good_lines_around() -> None:
    data = BEFORE_LINE + b"\n" + b"y" * (3 * MIB) + b"\n" + AFTER_LINE + b"\n" + b"z" * (2 * MIB)
    items: list[Any] = []
    parser = NdjsonStreamParser(items.append, items.append, max_line_bytes=MIB)
    parser.feed(data)
    parser.flush()
    assert [i for i in items if not isinstance(i, LineError)] == [BEFORE, AFTER]
    assert [(e.line, e.kind, e.offset, e.content) for e in items if isinstance(e, LineError)] == [
        (2, "line_too_long", len(BEFORE_LINE) + 1, "y" * 100 + "..."),
        (4, "line_too_long", len(BEFORE_LINE) + 3 * MIB + len(AFTER_LINE) + 3, "z" * 100 + "..."),
    ]


async def _huge_source() -> AsyncIterator[bytes]:
    for chunk in huge_line_chunks():
        yield chunk


@pytest.mark.anyio
@pytest.mark.parametrize("max_line_bytes", [64 * 1024, 16 * MIB], ids=["64KiB", "default"])
async def test_huge_line_parse_ndjson_stream(max_line_bytes: int) -> None:
    errors: list[LineError] = []
    events: list[ParsedEvent] = []
    tracemalloc.start()
    try:
        async for event in parse_ndjson_stream(
            _huge_source(), on_error=errors.append, max_line_bytes=max_line_bytes
        ):
            events.append(event)  # noqa: PERF401 -- measured while streaming
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < max_line_bytes * 2 + MIB, peak
    assert events == [BEFORE, AFTER]
    assert [(e.line, e.kind, e.offset) for e in errors] == [
        (2, "line_too_long", len(BEFORE_LINE) + 1)
    ]


class _ChunkStream:
    """Just enough of a ByteReceiveStream for create_ndjson_parse_stream."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = iter(chunks)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        import anyio

        for chunk in self._chunks:
            return chunk
        raise anyio.EndOfStream

    async def aclose(self) -> None:
        pass


@pytest.mark.anyio
async def test_huge_line_object_stream() -> None:
    import anyio

    errors: list[LineError] = []
    stream = create_ndjson_parse_stream(
        _ChunkStream(huge_line_chunks()),  # type: ignore[arg-type]
        on_error=errors.append,
        max_line_bytes=256 * 1024,
    )
    assert await stream.receive() == BEFORE
    assert await stream.receive() == AFTER
    with pytest.raises(anyio.EndOfStream):
        await stream.receive()
    assert [(e.line, e.kind) for e in errors] == [(2, "line_too_long")]
