"""The sans-IO NDJSON codec: parse_line, parse_lines, NdjsonStreamParser, error objects."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Iterator
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enclave_stream import (
    DEFAULT_MAX_LINE_BYTES,
    FailureKind,
    LineError,
    LogEvent,
    NdjsonParseError,
    NdjsonStreamParser,
    ParsedEvent,
    ParseFailure,
    ParseSuccess,
    StdoutEvent,
    iter_ndjson_stream,
    parse_line,
    parse_lines,
    serialize_event,
    serialize_events,
)
from enclave_stream.events import LogPayload, StdoutPayload
from tests.integration.asgi_server import start_in_thread

SID = "s_1"


def stdout(seq: int, chunk: str = "hi") -> StdoutEvent:
    return StdoutEvent(session_id=SID, seq=seq, payload=StdoutPayload(chunk))


def line_of(seq: int, chunk: str = "hi") -> bytes:
    return serialize_event(stdout(seq, chunk)).encode()


class Collector:
    """Callbacks for NdjsonStreamParser that keep everything in arrival order."""

    def __init__(self) -> None:
        self.items: list[ParsedEvent | LineError] = []

    def on_event(self, event: ParsedEvent) -> None:
        self.items.append(event)

    def on_error(self, error: LineError) -> None:
        self.items.append(error)

    @property
    def events(self) -> list[ParsedEvent]:
        return [i for i in self.items if not isinstance(i, LineError)]

    @property
    def errors(self) -> list[LineError]:
        return [i for i in self.items if isinstance(i, LineError)]


def feed_all(chunks: list[bytes], **kwargs: Any) -> tuple[Collector, NdjsonStreamParser]:
    collector = Collector()
    parser = NdjsonStreamParser(collector.on_event, collector.on_error, **kwargs)
    for chunk in chunks:
        parser.feed(chunk)
    parser.flush()
    return collector, parser


# --- parse_line -----------------------------------------------------------------------


def test_parse_line_success() -> None:
    for raw in (line_of(1), line_of(1).decode(), b"  " + line_of(1) + b"\r"):
        result = parse_line(raw)
        assert isinstance(result, ParseSuccess)
        assert result.success is True
        assert result.data == stdout(1)


@pytest.mark.parametrize(
    ("raw", "kind", "path", "prefix"),
    [
        ("{oops", "json", None, "JSON parse error: "),
        (b"\xff\xfe", "json", None, "JSON parse error: "),
        ("[1,2]", "validation", "$", "Validation error: "),
        (
            '{"protocolVersion":2,"sessionId":"s_1","seq":-1,"type":"stdout","payload":{"chunk":"x"}}',
            "validation",
            "$.seq",
            "Validation error: ",
        ),
        (
            b'{"protocolVersion":2,"sessionId":"s_1","seq":1,"type":"tool_call",'
            b'"payload":{"callId":"x_1","toolName":"t"}}',
            "validation",
            "$.payload.callId",
            "Validation error: ",
        ),
        ("   ", "empty", None, "Empty line"),
        ("", "empty", None, "Empty line"),
    ],
    ids=["json", "binary", "array", "seq", "callId", "blank", "empty"],
)
def test_parse_line_failure_object(
    raw: str | bytes, kind: str, path: str | None, prefix: str
) -> None:
    result = parse_line(raw)
    assert isinstance(result, ParseFailure)
    assert result.success is False
    assert result.kind == kind
    assert isinstance(result.kind, FailureKind)
    assert result.path == path
    assert result.line is raw  # the input, as given
    assert result.error.startswith(prefix)
    if path not in (None, "$"):
        assert result.error.endswith(f" - at {path}")


# --- parse_lines ----------------------------------------------------------------------


def test_parse_lines_counts_every_line_and_skips_blank_ones() -> None:
    doc = b"\n".join(
        [line_of(1), b"", b"   ", b"{bad", line_of(2) + b"\r", b"\t", b"[]", line_of(3)]
    )
    for data in (doc, doc.decode()):
        result = parse_lines(data)
        assert result.events == [stdout(1), stdout(2), stdout(3)]
        assert [(e.line, e.kind, e.content, e.path, e.offset) for e in result.errors] == [
            (4, "json", "{bad", None, None),
            (7, "validation", "[]", "$", None),
        ]


def test_parse_lines_parses_text_after_the_last_newline() -> None:
    result = parse_lines(line_of(1) + b"\n" + line_of(2))
    assert result.events == [stdout(1), stdout(2)]
    trailing = parse_lines(line_of(1) + b"\n{")
    assert [(e.line, e.kind) for e in trailing.errors] == [(2, "json")]
    assert parse_lines(b"").events == []
    assert parse_lines("\n\n").errors == []


def test_parse_lines_replaces_invalid_utf8() -> None:
    raw = line_of(1, "aXb").replace(b"X", b"\xff")
    assert parse_lines(raw).events[0].payload.chunk == "a\ufffdb"  # type: ignore[union-attr]


# --- LineError content ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "content"),
    [
        ("x" * 100, "x" * 100),
        ("x" * 101, "x" * 100 + "..."),
        ("   " + "x" * 150 + "  ", "x" * 100 + "..."),
        # 100 UTF-16 code units, not code points: the emoji is two units and is cut in half
        ("x" * 99 + "😀" + "y", "x" * 99 + "\ud83d" + "..."),
        ("😀" * 50, "😀" * 50),
        ("😀" * 51, "😀" * 50 + "..."),
        ("é" * 120, "é" * 100 + "..."),
    ],
    ids=["100", "101", "trimmed", "split-pair", "50-emoji", "51-emoji", "non-ascii"],
)
def test_error_content_is_cut_at_100_utf16_units(line: str, content: str) -> None:
    (error,) = parse_lines(line).errors
    assert error.content == content
    collector, _ = feed_all([line.encode()])
    assert collector.errors[0].content == content


def test_line_error_fields() -> None:
    doc = (
        line_of(1)
        + b'\n{"protocolVersion":2,"sessionId":"s_1","seq":"7","type":"stdout","payload":{}}\n'
    )
    collector, _ = feed_all([doc])
    (error,) = collector.errors
    assert error.line == 2
    assert error.kind == FailureKind.VALIDATION
    assert error.path == "$.seq"
    assert error.error.startswith("Validation error: ")
    assert error.error.endswith("- at $.seq")
    assert error.content.startswith('{"protocolVersion":2')
    assert error.offset == len(line_of(1)) + 1


# --- NdjsonStreamParser ------------------------------------------------------------------


def _tricky_stream() -> tuple[bytes, list[tuple[int, str, int]]]:
    """A stream with bad lines around chunk-worthy places; expected (line, kind, offset)."""
    parts = [
        line_of(1, "é東😀"),  # line 1, multi-byte characters shift byte offsets
        b"{bad \xc3\xa9",  # line 2
        b"",  # line 3, blank
        line_of(2) + b"\r",  # line 4, CRLF
        b"  [1]  ",  # line 5
        line_of(3),  # line 6
        b"null",  # line 7, unterminated: parsed at flush
    ]
    data = b"\n".join(parts)
    offsets = [0]
    for part in parts[:-1]:
        offsets.append(offsets[-1] + len(part) + 1)
    return data, [
        (2, "json", offsets[1]),
        (5, "validation", offsets[4]),
        (7, "validation", offsets[6]),
    ]


def test_offsets_and_line_numbers_for_every_two_chunk_split() -> None:
    data, expected = _tricky_stream()
    for cut in range(len(data) + 1):
        collector, parser = feed_all([data[:cut], data[cut:]])
        assert [(e.line, e.kind, e.offset) for e in collector.errors] == expected, cut
        assert collector.events == [stdout(1, "é東😀"), stdout(2), stdout(3)]
        assert parser.line_number == 7


def test_offsets_byte_by_byte_and_in_one_chunk() -> None:
    data, expected = _tricky_stream()
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))], [data[:5], b"", data[5:]]):
        collector, _ = feed_all(chunks)
        assert [(e.line, e.kind, e.offset) for e in collector.errors] == expected
        # events and errors arrive interleaved in stream order
        kinds = ["E" if not isinstance(i, LineError) else "X" for i in collector.items]
        assert "".join(kinds) == "EXEXEX"


def test_offsets_continue_across_feeds_of_many_lines() -> None:
    block = b"\n".join([line_of(i) for i in range(5)] + [b"oops"]) + b"\n"
    collector, _ = feed_all([block, block, block[:10], block[10:]])
    assert [(e.line, e.offset) for e in collector.errors] == [
        (6, len(block) - 5),
        (12, 2 * len(block) - 5),
        (18, 3 * len(block) - 5),
    ]
    assert len(collector.events) == 15


def test_stream_parser_accepts_str_bytearray_and_memoryview() -> None:
    data = line_of(1) + b"\n" + line_of(2, "\u2028") + b"\n"
    collector, parser = feed_all([bytearray(data[:7]), memoryview(data)[7:30], data[30:].decode()])  # type: ignore[list-item]
    assert collector.events == [stdout(1), stdout(2, "\u2028")]
    assert parser.line_number == 2


def test_line_separators_inside_strings_do_not_split_lines() -> None:
    chunk = "a\u2028b\u2029c\u0085d\x0be\x0cf\rg"
    data = line_of(1, chunk) + b"\n"
    assert "\u2028".encode() in data  # raw: JSON.stringify does not escape it
    assert b"\r" not in data  # \r is escaped
    for size in (1, 2, 3, 1000):
        collector, parser = feed_all([data[i : i + size] for i in range(0, len(data), size)])
        assert collector.events == [stdout(1, chunk)]
        assert parser.line_number == 1
    assert parse_lines(data).events == [stdout(1, chunk)]


def test_line_number_and_pending_data() -> None:
    collector = Collector()
    parser = NdjsonStreamParser(collector.on_event, collector.on_error)
    assert parser.line_number == 0
    assert not parser.has_pending_data()
    assert parser.max_line_bytes == DEFAULT_MAX_LINE_BYTES == 16 * 1024 * 1024
    parser.feed(b"   ")
    assert not parser.has_pending_data()  # white space only
    parser.feed(line_of(1)[:10])
    assert parser.has_pending_data()
    parser.feed(line_of(1)[10:] + b"\n\n")
    assert parser.line_number == 2
    assert not parser.has_pending_data()
    assert collector.events == [stdout(1)]
    parser.feed(b" \t ")
    parser.flush()  # a blank last line is neither an error nor a line
    assert parser.line_number == 2
    assert collector.errors == []


def test_flush_of_an_unterminated_last_line() -> None:
    collector, parser = feed_all([line_of(1) + b"\n" + line_of(2)])
    assert collector.events == [stdout(1), stdout(2)]
    assert parser.line_number == 2
    collector, parser = feed_all([line_of(1) + b"\n" + b"{x"])
    assert [(e.line, e.offset) for e in collector.errors] == [(2, len(line_of(1)) + 1)]
    assert parser.line_number == 2


def test_flush_ends_an_over_long_last_line_once() -> None:
    """After flush, the over-long line is over: the next bytes start a new line."""
    parser = NdjsonStreamParser(max_line_bytes=len(line_of(1)))
    event, error = parser.feed(line_of(1) + b"\n" + b"x" * 200)  # reported past the limit
    assert event == stdout(1)
    assert (error.kind, error.line) == (FailureKind.LINE_TOO_LONG, 2)  # type: ignore[union-attr]
    assert parser.flush() == []
    assert (parser.line_number, parser.has_pending_data()) == (2, False)
    assert parser.flush() == []  # nothing more to end
    assert parser.line_number == 2
    assert [e.error for e in parser.feed(b"{x\n")] == [parse_line(b"{x").error]  # type: ignore[union-attr]
    assert parser.line_number == 3


def test_reset_forgets_everything() -> None:
    collector = Collector()
    parser = NdjsonStreamParser(collector.on_event, collector.on_error)
    parser.feed(line_of(1) + b"\n" + b"{partial")
    parser.reset()
    assert parser.line_number == 0
    assert not parser.has_pending_data()
    parser.feed(b"bad\n{x\n")
    parser.flush()
    assert [(e.line, e.offset, e.content) for e in collector.errors] == [
        (1, 0, "bad"),
        (2, 4, "{x"),  # offsets count from the reset too
    ]


def test_max_line_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"^max_line_bytes must be positive, got 0$"):
        NdjsonStreamParser(print, print, max_line_bytes=0)
    assert NdjsonStreamParser(print, print, max_line_bytes=10).max_line_bytes == 10


def test_callback_exceptions_propagate_out_of_feed() -> None:
    seen: list[ParsedEvent] = []

    def on_event(event: ParsedEvent) -> None:
        seen.append(event)
        if event.seq == 2:
            raise RuntimeError("consumer failed")

    parser = NdjsonStreamParser(on_event, print)
    with pytest.raises(RuntimeError, match="consumer failed"):
        parser.feed(b"\n".join(line_of(i) for i in range(1, 5)) + b"\n")
    assert [e.seq for e in seen] == [1, 2]

    def on_error(error: LineError) -> None:
        raise KeyError(error.line)

    parser = NdjsonStreamParser(seen.append, on_error)
    with pytest.raises(KeyError):
        parser.feed(b"oops\n")


def test_parser_stays_consistent_after_a_callback_raised() -> None:
    seen: list[int] = []

    def on_event(event: ParsedEvent) -> None:
        seen.append(event.seq)
        if event.seq == 2:
            raise RuntimeError("consumer failed")

    errors: list[LineError] = []
    parser = NdjsonStreamParser(on_event, errors.append)
    first = b"\n".join(line_of(i) for i in (1, 2, 3)) + b"\nbad"
    with pytest.raises(RuntimeError):
        parser.feed(first)
    # the lines after the failing one in that chunk are neither delivered nor counted
    assert seen == [1, 2]
    assert parser.line_number == 2
    assert parser.has_pending_data()  # the unfinished line is kept
    parser.feed(b"x\n" + line_of(4) + b"\n")
    parser.flush()
    assert seen == [1, 2, 4]
    (error,) = errors
    assert error.content == "badx"
    assert error.offset == 3 * (len(line_of(1)) + 1)  # offsets stay true byte offsets
    assert parser.line_number == error.line + 1


# --- pull style: what feed() and flush() return ---------------------------------------


def test_feed_and_flush_return_what_they_found() -> None:
    parser = NdjsonStreamParser()  # no callbacks at all
    found = parser.feed(line_of(1) + b"\n\n  \nbad\n" + line_of(2))
    assert found[0] == stdout(1)
    assert isinstance(found[1], LineError)
    assert (found[1].line, found[1].content) == (4, "bad")
    assert len(found) == 2
    assert found.bad_lines == 1
    assert found.line_numbers() == [1, 4]
    assert parser.line_number == 4
    last = parser.flush()
    assert last == [stdout(2)]
    assert last.bad_lines == 0
    assert last.line_numbers() == [5]
    assert parser.flush() == []


def test_line_numbers_skip_blank_lines_and_an_over_long_line_already_reported() -> None:
    parser = NdjsonStreamParser(max_line_bytes=200)
    reported = parser.feed(b"x" * 300)  # reported as soon as it passes the limit
    assert [(e.line, e.kind) for e in reported] == [(1, "line_too_long")]  # type: ignore[union-attr]
    assert reported.line_numbers() == [1]
    assert parser.line_number == 0  # not complete yet
    found = parser.feed(b"yyy\n\n" + line_of(1) + b"\n \n" + line_of(2) + b"\n")
    assert found == [stdout(1), stdout(2)]
    assert found.line_numbers() == [3, 5]
    assert parser.line_number == 5


def test_callbacks_see_the_line_being_reported() -> None:
    numbers: list[tuple[str, int]] = []
    parser = NdjsonStreamParser(
        lambda event: numbers.append(("event", parser.line_number)),
        lambda error: numbers.append((error.kind, parser.line_number)),
        max_line_bytes=200,
    )
    found = parser.feed(line_of(1) + b"\n\nbad\n" + line_of(2) + b"\n" + b"z" * 300)
    assert numbers == [("event", 1), ("json", 3), ("event", 4), ("line_too_long", 4)]
    assert found.line_numbers() == [1, 3, 4, 5]
    assert parser.line_number == 4


def test_callbacks_see_the_line_of_each_event_across_blank_lines() -> None:
    # A chunk of events only, with blank lines between them: the numbers skip
    # the blank lines, as line_numbers() does.
    numbers: list[tuple[int, int]] = []
    parser = NdjsonStreamParser(lambda event: numbers.append((event.seq, parser.line_number)))
    found = parser.feed(line_of(1) + b"\n\n" + line_of(2) + b"\r\n \n\n" + line_of(3) + b"\n")
    assert numbers == [(1, 1), (2, 3), (3, 6)]
    assert found.line_numbers() == [1, 3, 6]
    assert parser.line_number == 6


@given(
    st.lists(
        st.one_of(
            st.integers(1, 50).map(lambda seq: line_of(seq)),
            st.sampled_from([b"", b" ", b"\r", b"\t \r", b"bad", b"{}", b"x" * 90]),
        ),
        max_size=25,
    ),
    st.lists(st.integers(1, 400), max_size=6),
)
def test_callbacks_see_the_numbers_line_numbers_gives(lines: list[bytes], cuts: list[int]) -> None:
    """Whatever the chunks, each callback reads as ``line_number`` the number
    that ``FeedResult.line_numbers()`` gives its item."""
    data = b"\n".join(lines) + b"\n"
    seen: list[int] = []
    parser = NdjsonStreamParser(
        lambda event: seen.append(parser.line_number),
        lambda error: seen.append(parser.line_number),
        max_line_bytes=64,
    )
    expected: list[int] = []
    edges = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    for start, end in pairwise(edges):
        found = parser.feed(data[start:end])
        # An over-long line is reported before its newline comes; its callback
        # then reads the lines completed so far.
        expected += [
            min(number, parser.line_number) if isinstance(item, LineError) else number
            for number, item in zip(found.line_numbers(), found, strict=True)
        ]
    expected += parser.flush().line_numbers()
    assert seen == expected


def test_an_over_long_line_ending_beside_another_is_reported_once() -> None:
    # The end of a line already reported as too long comes in a chunk whose
    # middle holds another over-long line: each is reported once.
    parser = NdjsonStreamParser(max_line_bytes=120)
    first = parser.feed(b"a" * 150)
    found = parser.feed(b"b" * 150 + b"\n" + b"c" * 130 + b"\n" + line_of(1) + b"\n")
    reports = [(e.line, e.kind) for e in [*first, *found] if isinstance(e, LineError)]
    assert reports == [(1, "line_too_long"), (2, "line_too_long")]
    assert found[-1] == stdout(1)
    assert parser.line_number == 3


def test_deferred_slow_lines_are_returned_in_order() -> None:
    slow = line_of(2).replace(b'"seq":2', b'"seq":2.0')  # an integer to JavaScript only
    parser = NdjsonStreamParser(defer_slow_lines=True)
    found = parser.feed(line_of(1) + b"\n" + slow + b"\n  \n" + line_of(3) + b"\n{")
    assert [type(item).__name__ for item in found] == ["StdoutEvent", "SlowLine", "StdoutEvent"]
    assert found.bad_lines == 1
    assert found.line_numbers() == [1, 2, 4]
    assert found[1].judge() == stdout(2)  # type: ignore[union-attr]
    (last,) = parser.flush()
    assert last.number == 5  # type: ignore[union-attr]
    assert isinstance(last.judge(), LineError)  # type: ignore[union-attr]


@pytest.mark.parametrize("callbacks", ["both", "on_event", "on_error"])
def test_each_callback_gets_only_its_items_and_none_gets_a_slow_line(callbacks: str) -> None:
    events: list[ParsedEvent] = []
    errors: list[LineError] = []
    on_event = events.append if callbacks != "on_error" else None
    on_error = errors.append if callbacks != "on_event" else None
    slow = line_of(2).replace(b'"seq":2', b'"seq":2.0')  # an integer to JavaScript only
    limit = len(slow)
    parser = NdjsonStreamParser(on_event, on_error, defer_slow_lines=True, max_line_bytes=limit)
    too_long = b"x" * (limit + 1)
    found = parser.feed(b"\n".join([line_of(1), slow, too_long, line_of(3)]) + b"\n")
    assert [type(item).__name__ for item in found] == [
        "StdoutEvent",
        "SlowLine",
        "LineError",
        "StdoutEvent",
    ]
    assert events == ([] if on_event is None else [stdout(1), stdout(3)])
    assert errors == ([] if on_error is None else [found[2]])


def test_pending_bytes_stay_within_the_limit() -> None:
    parser = NdjsonStreamParser(max_line_bytes=10)
    parser.feed(b"12345")
    assert parser.pending_bytes == 5
    parser.feed(b"678901")  # past the limit: dropped up to the next newline
    assert parser.pending_bytes == 0
    parser.feed(b"\nab")
    assert parser.pending_bytes == 2


def test_line_too_long_between_good_lines() -> None:
    long_line = b'{"x":"' + b"a" * 200 + b'"}'
    data = line_of(1) + b"\n" + long_line + b"\n" + line_of(2) + b"\n"
    for size in (1, 7, 64, len(data)):
        collector, parser = feed_all(
            [data[i : i + size] for i in range(0, len(data), size)], max_line_bytes=150
        )
        assert collector.events == [stdout(1), stdout(2)]
        (error,) = collector.errors
        assert (error.line, error.kind, error.offset, error.path) == (
            2,
            FailureKind.LINE_TOO_LONG,
            len(line_of(1)) + 1,
            None,
        )
        assert error.content == long_line[:100].decode() + "..."
        assert "150" in error.error
        assert parser.line_number == 3


def test_a_short_too_long_lines_content_stops_at_its_newline() -> None:
    """Changed in the reshape: the content of a too-long line that arrived whole
    used to run on into the lines after it."""
    data = b"x" * 20 + b'\n{"a":1}\n'
    for size in (1, 7, len(data)):
        collector, _ = feed_all(
            [data[i : i + size] for i in range(0, len(data), size)], max_line_bytes=10
        )
        too_long, invalid = collector.errors
        assert (too_long.line, too_long.kind) == (1, FailureKind.LINE_TOO_LONG)
        assert set(too_long.content.removesuffix("...")) == {"x"}
        assert (invalid.line, invalid.content) == (2, '{"a":1}')


def test_several_too_long_lines_in_one_chunk() -> None:
    long_a = b"a" * 200
    long_b = b"b" * 300
    parts = [line_of(1), b"{x}", long_a, line_of(2), long_b, long_b, line_of(3)]
    data = b"\n".join(parts) + b"\n"
    offsets = [0]
    for part in parts[:-1]:
        offsets.append(offsets[-1] + len(part) + 1)
    for chunks in ([data], [data[:5], data[5:]], [data[: offsets[2] - 1], data[offsets[2] - 1 :]]):
        collector, parser = feed_all(chunks, max_line_bytes=150)
        assert collector.events == [stdout(1), stdout(2), stdout(3)]
        assert [(e.line, e.kind, e.offset, e.content[:1]) for e in collector.errors] == [
            (2, "json", offsets[1], "{"),
            (3, "line_too_long", offsets[2], "a"),
            (5, "line_too_long", offsets[4], "b"),
            (6, "line_too_long", offsets[5], "b"),
        ]
        assert parser.line_number == 7


def test_line_of_exactly_max_line_bytes_is_accepted() -> None:
    good = line_of(1)
    collector, _ = feed_all([good + b"\n", good], max_line_bytes=len(good))
    assert collector.events == [stdout(1), stdout(1)]
    collector, _ = feed_all([good + b"\n", good], max_line_bytes=len(good) - 1)
    assert [(e.line, e.kind) for e in collector.errors] == [
        (1, "line_too_long"),
        (2, "line_too_long"),
    ]


def test_line_of_exactly_max_line_bytes_is_accepted_however_it_is_split() -> None:
    good = line_of(1)
    data = line_of(2) + b"\n" + good + b"\n"
    for cut in range(len(line_of(2)) + 1, len(data)):  # the second line cut anywhere
        collector, _ = feed_all([data[:cut], data[cut:]], max_line_bytes=len(good))
        assert (collector.events, collector.errors) == ([stdout(2), stdout(1)], []), cut
        collector, _ = feed_all([data[:cut], data[cut:]], max_line_bytes=len(good) - 1)
        assert [(e.line, e.kind) for e in collector.errors] == [
            (1, "line_too_long"),
            (2, "line_too_long"),
        ], cut


@pytest.mark.parametrize(
    ("middle", "expected"),
    [
        # one line of one byte over the limit between the first and the unfinished last
        ([b"x" * (len(line_of(1)) + 1)], ["line_too_long"]),
        # lines of exactly the limit, around one over it
        (
            [line_of(1), line_of(2), b"y" * (len(line_of(1)) + 1), line_of(3)],
            [1, 2, "line_too_long", 3],
        ),
    ],
)
def test_the_limit_holds_for_every_line_inside_one_chunk(
    middle: list[bytes], expected: list[int | str]
) -> None:
    parser = NdjsonStreamParser(max_line_bytes=len(line_of(1)))
    found = parser.feed(b"[]\n" + b"\n".join(middle) + b"\n" + b"{")  # all in one chunk
    got = [item.kind if isinstance(item, LineError) else item.seq for item in found]
    assert got == ["validation", *expected]
    numbers = found.line_numbers()
    assert numbers == list(range(1, len(middle) + 2))


def test_a_str_chunk_with_a_lone_surrogate_is_read_as_its_bytes_would_be() -> None:
    """Text chunks are encoded as the bytes the peer would send, lone surrogates kept."""
    escaped = line_of(1, "\ud800").decode() + "\n"  # JSON.stringify escapes it: valid
    raw = '{"protocolVersion":2,"sessionId":"s_1","seq":2,"type":"stdout",'
    raw += '"payload":{"chunk":"\ud800"}}\n'
    found = NdjsonStreamParser().feed(escaped + raw)
    # Raw, it is 3 bytes of invalid UTF-8: each read as U+FFFD, as TextDecoder does.
    assert found == [stdout(1, "\ud800"), stdout(2, "\ufffd" * 3)]
    assert found[1:] == NdjsonStreamParser().feed(raw.encode("utf-8", "surrogatepass"))


# --- serialization ---------------------------------------------------------------------


def test_serialize_then_parse_every_way() -> None:
    events: list[ParsedEvent] = [
        stdout(1, "x\ny"),
        LogEvent(
            session_id=SID,
            seq=2,
            payload=LogPayload(level="info", message="m", data={"a": 1.5}),  # type: ignore[arg-type]
        ),
    ]
    text = serialize_events(events)
    assert text.count("\n") == 1
    assert parse_lines(text).events == events
    collector, _ = feed_all([text.encode()])
    assert collector.events == events
    assert [parse_line(line).data for line in text.split("\n")] == events  # type: ignore[union-attr]


@pytest.mark.parametrize("enabled", [True, False])
def test_a_big_batch_is_decoded_with_the_collector_paused_then_restored(enabled: bool) -> None:
    """Kept events' payload containers made full collections walk everything kept
    so far: super-linear parse_lines. The collector is paused, and left as it was."""
    # Tool calls: their args are dicts and lists, which the collector tracks.
    data = b"".join(
        b'{"protocolVersion":2,"sessionId":"s_1","seq":%d,"type":"tool_call",' % seq
        + b'"payload":{"callId":"c_1","toolName":"t","args":{"a":[1,{"b":2}]}}}\n'
        for seq in range(1, 5001)
    )
    collections: list[str] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(phase)

    was = gc.isenabled()
    gc.enable() if enabled else gc.disable()
    gc.callbacks.append(record)
    try:
        gc.collect()
        collections.clear()
        result = parse_lines(data)
        during = len(collections)
        assert gc.isenabled() is enabled
    finally:
        gc.callbacks.remove(record)
        gc.enable() if was else gc.disable()
    assert len(result.events) == 5000
    assert during <= 1, during  # the one a re-enabled collector owes (28 without the pause)


# --- iter_ndjson_stream: the synchronous parser loop ----------------------------------


def _session_bytes(count: int) -> tuple[bytes, list[Any]]:
    events = [
        StdoutEvent(session_id="s_sync", seq=seq, payload=StdoutPayload(f"line {seq} λ"))
        for seq in range(1, count + 1)
    ]
    return "".join(serialize_event(e) + "\n" for e in events).encode(), events


@given(st.lists(st.integers(1, 60), max_size=30))
def test_iter_ndjson_stream_gives_the_events_of_any_split(cuts: list[int]) -> None:
    data, events = _session_bytes(12)
    chunks, rest = [], data
    for cut in cuts:
        chunks.append(rest[:cut])
        rest = rest[cut:]
    chunks.append(rest)
    assert list(iter_ndjson_stream(chunks)) == events == parse_lines(data).events


def test_iter_ndjson_stream_reports_bad_lines_as_the_async_parser_does(
    caplog: pytest.LogCaptureFixture,
) -> None:
    data, events = _session_bytes(3)
    lines = data.splitlines(keepends=True)
    chunks = [lines[0], b"not json\n", lines[1], b'{"a":1}\n', lines[2][:-1]]  # no final newline
    errors: list[LineError] = []
    assert list(iter_ndjson_stream(chunks, on_error=errors.append)) == events
    assert [(e.line, e.kind) for e in errors] == [(2, "json"), (4, "validation")]
    with caplog.at_level(logging.WARNING, logger="enclave_stream"):
        assert list(iter_ndjson_stream(chunks)) == events
    # The log line names the line, the kind, where (when the schema says) and why.
    assert [r.getMessage() for r in caplog.records] == [
        "skipping bad NDJSON line 2 (json): JSON parse error: Expecting value (position 0)",
        "skipping bad NDJSON line 4 (validation at $): "
        "Validation error: Object missing required field `type`",
    ]
    # A bad last line without its newline is reported at the end, the same way.
    tail: list[LineError] = []
    assert list(iter_ndjson_stream([lines[0], b"{oops"], on_error=tail.append)) == events[:1]
    assert [(e.line, e.kind) for e in tail] == [(2, "json")]
    with pytest.raises(NdjsonParseError):
        list(iter_ndjson_stream([lines[0], b"{oops"], strict=True))
    strict = iter_ndjson_stream(chunks, strict=True)
    assert next(strict) == events[0]
    with pytest.raises(NdjsonParseError) as info:
        next(strict)
    assert info.value.error.line == 2


def test_iter_ndjson_stream_closes_its_source() -> None:
    data, events = _session_bytes(4)
    closed: list[str] = []

    def source(name: str) -> Iterator[bytes]:
        try:
            yield from data.splitlines(keepends=True)
        finally:
            closed.append(name)

    assert list(iter_ndjson_stream(source("whole"))) == events
    early = source("early")  # held here, so only an explicit close() closes it
    stream = iter_ndjson_stream(early)
    assert next(stream) == events[0]
    stream.close()
    assert closed == ["whole", "early"]
    with pytest.raises(NdjsonParseError):
        list(iter_ndjson_stream(source("failed"), strict=True, max_line_bytes=10))
    assert closed[-1] == "failed"


def test_iter_ndjson_stream_over_httpx_client_on_loopback() -> None:
    """The sync story end to end: httpx.Client, a real server, events as they come."""
    import httpx
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    data, events = _session_bytes(50)

    async def stream(request: Any) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            for index in range(0, len(data), 37):  # lines cut anywhere
                yield data[index : index + 37]

        return StreamingResponse(body(), media_type="application/x-ndjson")

    app = Starlette(routes=[Route("/stream", stream)])
    with (
        start_in_thread(app) as port,
        httpx.Client() as client,
        client.stream("GET", f"http://127.0.0.1:{port}/stream") as response,
    ):
        received = list(iter_ndjson_stream(response.iter_bytes()))
    assert received == events
