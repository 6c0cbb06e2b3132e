"""Property tests: chunking never changes the result, events round-trip, no input crashes."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from enclave_stream import (
    EventEncoder,
    LineError,
    NdjsonStreamParser,
    ParsedEvent,
    StdoutEvent,
    ToolCallEvent,
    parse_line,
    parse_lines,
    serialize_event,
    serialize_events,
)
from enclave_stream._json import JS_WHITESPACE, js_loads, utf16_truncate
from enclave_stream.codec import GC_PAUSE_LINES, DecodeFailure, decode_event, decode_lines
from enclave_stream.events import PARSED_EVENT_CLASSES, StdoutPayload, ToolCallPayload
from enclave_stream.ndjson import SlowLine
from enclave_stream.streams import parse_ndjson_stream
from tests.jsvalues import json_equal
from tests.strategies import EVENT_STRATEGIES, any_event, json_values
from tests.vectors import cases

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

cut_points = st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=12)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given positions (taken modulo its length); may yield empty chunks."""
    points = sorted(c % (len(data) + 1) for c in cuts)
    chunks, previous = [], 0
    for point in [*points, len(data)]:
        chunks.append(data[previous:point])
        previous = point
    return chunks


def count_bad(found: list[Any]) -> int:
    """The items of a feed's result that are not events (what ``bad_lines`` counts)."""
    return sum(isinstance(item, (LineError, SlowLine)) for item in found)


def run_parser(chunks: list[bytes], **kwargs: Any) -> tuple[list[Any], NdjsonStreamParser]:
    """Feed ``chunks`` to a parser with callbacks; its return values must say the same."""
    items: list[Any] = []
    parser = NdjsonStreamParser(items.append, items.append, **kwargs)
    puller = NdjsonStreamParser(**kwargs)  # pull style: no callbacks
    pulled: list[Any] = []
    numbers: list[int] = []
    limit = parser.max_line_bytes
    for chunk in chunks:
        returned = parser.feed(chunk)
        assert returned == items[len(items) - len(returned) :]
        found = puller.feed(chunk)
        pulled += found
        assert parser.pending_bytes <= limit  # memory stays bounded
        assert returned.bad_lines == found.bad_lines == count_bad(found)
        numbers += found.line_numbers()
    found = puller.flush()
    pulled += found
    assert parser.flush().bad_lines == found.bad_lines == count_bad(found)
    numbers += found.line_numbers()
    # Each item has its own line, in stream order; a report names the line numbered.
    assert numbers == sorted(set(numbers))
    assert all(0 < number <= puller.line_number for number in numbers)
    for number, item in zip(numbers, pulled, strict=True):
        if isinstance(item, LineError):
            assert item.line == number
        elif isinstance(item, SlowLine):
            assert item.number == number
    assert pulled == items
    assert puller.line_number == parser.line_number
    return items, parser


def run_stream(chunks: list[bytes], backend: str, **kwargs: Any) -> list[Any]:
    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async def main() -> list[Any]:
        items: list[Any] = []
        async for event in parse_ndjson_stream(source(), on_error=items.append, **kwargs):
            items.append(event)  # noqa: PERF401 -- interleaved with the errors
        return items

    return anyio.run(main, backend=backend)


def error_key(error: LineError) -> tuple[Any, ...]:
    return (error.line, error.error, error.content, error.kind, error.path)


# --- chunking invariance -------------------------------------------------------------


@SETTINGS
@given(st.lists(any_event, max_size=8), cut_points, st.booleans())
def test_any_chunking_yields_the_events_of_parse_lines(
    events: list[ParsedEvent], cuts: list[int], trailing_newline: bool
) -> None:
    data = EventEncoder().encode_lines(events)
    if not trailing_newline:
        data = data[:-1]
    whole = parse_lines(data)
    assert whole.events == events
    assert whole.errors == []
    items, parser = run_parser(chunked(data, cuts))
    assert items == events
    assert parser.line_number == len(events)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(any_event, max_size=6), cut_points, st.sampled_from(["asyncio", "trio"]))
def test_parse_ndjson_stream_any_chunking(
    events: list[ParsedEvent], cuts: list[int], backend: str
) -> None:
    data = serialize_events(events).encode()
    assert run_stream(chunked(data, cuts), backend) == parse_lines(data).events == events


# --- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("cls", list(EVENT_STRATEGIES), ids=lambda c: c.__name__)
def test_round_trip_every_event_type(cls: type[Any]) -> None:
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(EVENT_STRATEGIES[cls])
    def check(event: ParsedEvent) -> None:
        assert type(event) is cls
        line = serialize_event(event)
        assert "\n" not in line
        for raw in (line, line.encode()):
            result = parse_line(raw)
            assert result.success, result
            assert result.data == event
            assert type(result.data) is cls
        # serialize(parse(serialize(e))) is the same JSON value. (Not always the same
        # bytes yet: a double such as 0.0 is written "0.0", and a line that takes the
        # slow path reads it back as the integer 0 -- see
        # test_codec.py::test_float_spelling_matches_json_stringify.)
        again = serialize_event(parse_line(line).data)  # type: ignore[union-attr]
        assert json_equal(js_loads(again), js_loads(line))

    check()


def _no_surrogate_pairs(text: str) -> bool:
    # A high surrogate followed by a low one is a pair (one character in JS).
    return re.search("[\ud800-\udbff][\udc00-\udfff]", text) is None


lone_surrogate_texts = st.text(
    st.one_of(
        st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
        st.sampled_from(["a", "😀", "\u2028", '"']),
    ),
    min_size=1,
    max_size=6,
).filter(_no_surrogate_pairs)


@SETTINGS
@given(lone_surrogate_texts, lone_surrogate_texts, json_values)
def test_round_trip_with_lone_surrogates(text: str, other: str, value: Any) -> None:
    events: list[ParsedEvent] = [
        StdoutEvent(session_id="s_" + text, seq=1, payload=StdoutPayload(other)),
        ToolCallEvent(
            session_id="s_1",
            seq=2,
            payload=ToolCallPayload(
                call_id="c_" + text, tool_name=other, args=[value, {text: other}]
            ),
        ),
    ]
    data = serialize_events(events)
    assert data.isascii() or not re.search("[\ud800-\udfff]", data)  # escaped, never raw
    assert parse_lines(data).events == events
    items, _ = run_parser([data.encode()])
    assert items == events


# --- arbitrary input never raises ------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_parse_line_never_raises(raw: str | bytes) -> None:
    result = parse_line(raw)
    if not result.success:
        assert result.kind in ("empty", "json", "validation")
        assert result.line is raw


@settings(max_examples=80, deadline=None)
@given(
    st.text(
        st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=[]), max_size=50
    )
)
def test_parse_line_never_raises_on_strings_with_lone_surrogates(raw: str) -> None:
    wrapped = '{"a":"' + raw + '"}'
    for line in (raw, wrapped):
        result = parse_line(line)  # no event is a bare string or {"a": ...}: refused
        assert not result.success
        assert result.kind in ("empty", "json", "validation")
        assert result.line is line
    if not re.search(r'["\\\x00-\x1f]', raw):
        # Valid JSON, lone surrogates included: it is the schema that refuses it.
        assert parse_line(wrapped).kind == "validation"  # type: ignore[union-attr]


mostly_json_bytes = st.lists(
    st.one_of(
        st.just(b"\n"),
        st.binary(max_size=12),
        st.sampled_from(
            [b"\n", b"\r\n", b"{", b"}", b"[", b"]", b'"', b":", b",", b"\\", b"\xef\xbb\xbf"]
        ),
        any_event.map(lambda e: serialize_event(e).encode()),
    ),
    max_size=12,
).map(b"".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mostly_json_bytes, cut_points, st.sampled_from([None, 1, 8, 64]))
# several over-long lines after short ones in one chunk; a final over-long line
@example(b"a\n\nxxxxxxxxxx\nb\nyyyyyyyyyyy\n{}", [], 8)
@example(b"{}\n" + b"z" * 70, [3, 50], 64)
def test_arbitrary_bytes_never_raise_and_match_the_line_model(
    data: bytes, cuts: list[int], max_line_bytes: int | None
) -> None:
    kwargs = {} if max_line_bytes is None else {"max_line_bytes": max_line_bytes}
    items, parser = run_parser(chunked(data, cuts), **kwargs)
    # The model: split on b"\n" only; a line longer than the limit is line_too_long,
    # a blank one is skipped, every other one gets parse_line's verdict.
    expected: list[Any] = []
    offset = 0
    segments = data.split(b"\n")
    for number, segment in enumerate(segments, 1):
        if max_line_bytes is not None and len(segment) > max_line_bytes:
            expected.append(("too_long", number, offset))
        else:
            result = parse_line(segment)
            if result.success:
                expected.append(result.data)
            elif result.kind != "empty":
                expected.append((result.kind, number, offset, result.error, result.path))
        offset += len(segment) + 1
    got: list[Any] = []
    for item in items:
        if not isinstance(item, LineError):
            got.append(item)
        elif item.kind == "line_too_long":
            got.append(("too_long", item.line, item.offset))
        else:
            got.append((item.kind, item.line, item.offset, item.error, item.path))
    assert got == expected
    last = segments[-1]
    counted_last = bool(last.decode("utf-8", "replace").strip(JS_WHITESPACE)) or (
        max_line_bytes is not None and len(last) > max_line_bytes
    )
    assert parser.line_number == data.count(b"\n") + counted_last
    if max_line_bytes is None:
        whole = parse_lines(data)
        assert [i for i in items if not isinstance(i, LineError)] == whole.events
        assert [error_key(e) for e in items if isinstance(e, LineError)] == [
            error_key(e) for e in whole.errors
        ]


# --- good lines among garbage -------------------------------------------------------------


def _is_garbage(line: bytes) -> bool:
    return b"\n" not in line and not parse_line(line).success and parse_line(line).kind != "empty"  # type: ignore[union-attr]


garbage_lines = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=40).map(str.encode),
    any_event.map(lambda e: serialize_event(e).encode()[:-1]),  # truncated
    any_event.map(lambda e: serialize_event(e).encode().replace(b'"seq":', b'"seq":-', 1)),
    any_event.map(lambda e: serialize_event(e).encode().replace(b"{", b"[", 1)),
    st.sampled_from([b"[]", b"null", b"42", b'"s"', b"NaN", b"{}", b"\xef\xbb\xbf{", b"\x85{}"]),
).filter(_is_garbage)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(
    st.lists(st.one_of(any_event, garbage_lines), max_size=10),
    cut_points,
    st.sampled_from([b"\n", b"\r\n"]),
)
def test_good_lines_survive_interleaved_garbage(
    items: list[ParsedEvent | bytes], cuts: list[int], newline: bytes
) -> None:
    lines = [i if isinstance(i, bytes) else serialize_event(i).encode() for i in items]
    data = newline.join(lines)
    expected_events = [i for i in items if not isinstance(i, bytes)]
    bad: list[tuple[int, int]] = []  # (line number, byte offset)
    offset = 0
    for number, (item, line) in enumerate(zip(items, lines, strict=True), 1):
        if isinstance(item, bytes):
            bad.append((number, offset))
        offset += len(line) + len(newline)
    got, _ = run_parser(chunked(data, cuts))
    assert [i for i in got if not isinstance(i, LineError)] == expected_events
    errors = [i for i in got if isinstance(i, LineError)]
    assert [(e.line, e.offset) for e in errors] == bad
    assert all(e.kind in ("json", "validation") for e in errors)
    # events and errors are reported in stream order
    assert [isinstance(i, LineError) for i in got] == [isinstance(i, bytes) for i in items]
    whole = parse_lines(data)
    assert whole.events == expected_events
    assert [e.line for e in whole.errors] == [n for n, _ in bad]


# --- the verdict on lines msgspec decodes but the post-decode checks refuse ---------------


@st.composite
def refused_after_decoding(draw: st.DrawFn) -> bytes:
    """A valid event's line with its session id's prefix broken or its version dropped."""
    wire = js_loads(serialize_event(draw(any_event)))
    breakage = draw(st.sampled_from(["prefix", "version", "both", "duplicate"]))
    bad_id = draw(st.sampled_from(["x_1", "S_1", "s", "", "s-1", " s_1"]))
    if breakage in ("version", "both"):
        del wire["protocolVersion"]
    if breakage in ("prefix", "both"):
        wire["sessionId"] = bad_id
    text = json.dumps(wire, ensure_ascii=draw(st.booleans()))
    if breakage == "duplicate":  # the last of two keys wins, in msgspec and in JavaScript
        text = text[:-1] + f', "sessionId": {json.dumps(bad_id)}}}'
    return text.encode("utf-8", "surrogatepass")


@SETTINGS
@given(line=refused_after_decoding())
def test_refusals_after_decoding_match_the_slow_path(line: bytes) -> None:
    slow = decode_event(line, fast=False)
    assert decode_event(line) == slow
    assert isinstance(slow, DecodeFailure)
    whole = parse_lines(line)
    assert whole.events == []
    assert [(e.error, e.path, e.content) for e in whole.errors] == [
        (slow.message, slow.path, utf16_truncate(slow.trimmed, 100))
    ]
    items, _ = run_parser([line + b"\n"])
    assert [(e.error, e.path) for e in items] == [(slow.message, slow.path)]


# --- the fast path gives the plain path's verdict ------------------------------------------

SEED_LINES = [case["line"].encode("utf-8", "surrogatepass") for case in cases("ndjson_parse.json")]

hostile_lines = st.one_of(
    garbage_lines,
    refused_after_decoding(),
    any_event.map(lambda e: serialize_event(e).encode()),
    st.sampled_from(SEED_LINES),
    st.sampled_from([b"", b"  ", b"\xc2\xa0", b"\r", b"\x0b", b"\x85", b"\xef\xbb\xbf"]),
    mostly_json_bytes.map(lambda data: data.replace(b"\n", b"")),
)


def plain(line: bytes | str) -> Any:
    return decode_event(line, fast=False)


def same(got: Any, wanted: Any) -> bool:
    """``got == wanted``; for events nested past the recursion limit, where ``==``
    raises RecursionError, their lines (equal values have equal lines, but for
    the float spellings of compatibility N4, which such a line rarely holds)."""
    try:
        return bool(got == wanted)
    except RecursionError:
        return type(got) is type(wanted) and serialize_event(got) == serialize_event(wanted)


def same_all(got: list[Any], wanted: list[Any]) -> bool:
    return len(got) == len(wanted) and all(map(same, got, wanted))


_TOOL_CALL_HEAD = (
    b'{"protocolVersion":2,"sessionId":"s_0","seq":0,"type":"tool_call",'
    b'"payload":{"callId":"c_0","toolName":"0","args":'
)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(hostile_lines, max_size=8))
@example([_TOOL_CALL_HEAD + b"0.0}}"])  # msgspec keeps a float, JavaScript reads 0
@example([_TOOL_CALL_HEAD + b"[" * 3000 + b"]" * 3000 + b"}}"])  # == recurses too deep
def test_decode_lines_gives_the_plain_verdict_on_every_line(lines: list[bytes]) -> None:
    expected = [plain(line) for line in lines]
    verdicts, refused = decode_lines(lines)
    assert same_all(verdicts, expected)
    assert refused == [i for i, v in enumerate(expected) if isinstance(v, DecodeFailure)]
    assert same_all([decode_event(line) for line in lines], expected)
    texts = [line.decode("utf-8", "replace") for line in lines]
    assert same_all(decode_lines(texts)[0], [plain(text) for text in texts])
    # Unjudged: the lines the fast path could not settle are left to the caller,
    # and judging one later gives the same verdict.
    deferred, left = decode_lines(lines, judge=False)
    assert left == [i for i, v in enumerate(deferred) if not isinstance(v, PARSED_EVENT_CLASSES)]
    assert set(refused) <= set(left)
    # A blank line is never left unjudged.
    blank = [i for i, wanted in enumerate(expected) if getattr(wanted, "kind", "") == "empty"]
    assert all(deferred[i] is not None for i in blank)
    for verdict, wanted, line in zip(deferred, expected, lines, strict=True):
        if verdict is not None:
            assert same(verdict, wanted)
            continue
        judged = SlowLine(line, 1, 0).judge()
        if not isinstance(wanted, DecodeFailure):
            assert same(judged, wanted)
        else:
            assert isinstance(judged, LineError)
            assert (judged.error, judged.path) == (wanted.message, wanted.path)


@SETTINGS
@given(st.text(st.characters(codec="utf-8", exclude_categories=[]), max_size=60))
def test_fast_and_plain_agree_on_any_text(text: str) -> None:
    for raw in (text, '{"a":"' + text + '"}', text.encode("utf-8", "surrogatepass")):
        assert decode_event(raw) == plain(raw)


def test_big_lines_take_the_same_path_in_a_batch_and_alone() -> None:
    big = serialize_event(
        StdoutEvent(session_id="s_1", seq=1, payload=StdoutPayload("x" * 70_000))
    ).encode()
    dense = b"[" * 5000 + b"]" * 5000 + b" " * 60_000  # one container per 14 bytes
    lines = [b"{}", big, dense, big.replace(b'"s_1"', b'"x_1"'), b""]
    verdicts, refused = decode_lines(lines)
    assert verdicts == [plain(line) for line in lines]
    assert refused == [0, 2, 3, 4]
    assert verdicts[2].reason.startswith("Too many arrays and objects")


FILLER_EVENTS = [
    StdoutEvent(session_id="s_1", seq=seq, payload=StdoutPayload(f"line {seq}"))
    for seq in range(2 * GC_PAUSE_LINES + 300)
]
FILLER = [serialize_event(event).encode() for event in FILLER_EVENTS]


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(
        st.tuples(st.integers(0, len(FILLER) - 1), hostile_lines),
        max_size=6,
    )
)
@example([(0, b"{}"), (GC_PAUSE_LINES - 1, b""), (GC_PAUSE_LINES, b'{"x":1}')])
@example([(GC_PAUSE_LINES + 5, FILLER[3].replace(b'"s_1"', b'"x_1"'))])
@example([(2 * GC_PAUSE_LINES, FILLER[3].replace(b'"protocolVersion":2,', b""))])
def test_a_batch_of_many_blocks_gives_every_line_its_verdict(
    inserted: list[tuple[int, bytes]],
) -> None:
    """Batches over GC_PAUSE_LINES are decoded block by block: a refusal in any
    block (msgspec's, or one of the rules checked after it) lands on its own line."""
    lines: list[bytes] = list(FILLER)
    expected: list[Any] = list(FILLER_EVENTS)
    for position, line in inserted:
        lines[position] = line
        expected[position] = plain(line)
    verdicts, refused = decode_lines(lines)
    assert verdicts == expected
    assert refused == [i for i, v in enumerate(expected) if isinstance(v, DecodeFailure)]
    deferred, left = decode_lines(lines, judge=False)
    assert set(refused) <= set(left)
    assert all(deferred[i] == expected[i] for i in range(len(lines)) if i not in left)
