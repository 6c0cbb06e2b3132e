"""LineReader: right line numbers for events, and every non-UTF-8 line, for any chunking."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave_stream import LineError, NdjsonStreamParser, ParsedEvent
from enclave_stream.cli.source import EncodingIssue, LineEvent, LineReader
from tests.cli.helpers import SID

LIMIT = 200  # a small line limit, so that over-long lines are cheap to make

# Lines that hold no event: blank ones (JavaScript's trim() strips all of
# these) and bad ones (not JSON, not an event, over the limit).
BLANKS = ["", " ", "\t", "\r", " \r", "\u00a0", "\ufeff", "\u2028 \u3000"]
BAD = ["{", "[]", "\u0085", "null", '{"protocolVersion":2}', "x" * (LIMIT + 1), "y" * 3 * LIMIT]


@dataclass(frozen=True)
class Stream:
    """A generated stream: its bytes, and the line each event is on (it is the event's seq)."""

    data: bytes
    event_lines: list[int]
    cuts: list[int]


def _event_line(seq: int, text: str) -> bytes:
    return (
        f'{{"protocolVersion":2,"sessionId":"{SID}","seq":{seq},'
        f'"type":"stdout","payload":{{"chunk":"{text}"}}}}'
    ).encode()


@st.composite
def streams(draw: st.DrawFn, *, invalid_utf8: bool = False) -> Stream:
    kinds = st.sampled_from(["event", "event", "event", "blank", "bad"])
    lines: list[bytes] = []
    event_lines: list[int] = []
    for number, kind in enumerate(draw(st.lists(kinds, max_size=30)), start=1):
        if kind == "event":
            lines.append(_event_line(number, draw(st.sampled_from(["a", "é", "😀", ""]))))
            event_lines.append(number)
        elif kind == "blank":
            lines.append(draw(st.sampled_from(BLANKS)).encode())
        else:
            lines.append(draw(st.sampled_from(BAD)).encode())
        if invalid_utf8 and draw(st.booleans()):
            where = draw(st.integers(0, len(lines[-1])))
            junk = draw(st.sampled_from([b"\xff", b"\xe2\x82", b"\xc3", b"\xed\xa0\x80"]))
            lines[-1] = lines[-1][:where] + junk + lines[-1][where:]
            if kind == "event":
                event_lines.pop()  # may or may not still parse; not checked here
    terminated = draw(st.booleans())
    data = b"\n".join(lines) + (b"\n" if lines and terminated else b"")
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    return Stream(data, event_lines, cuts)


def _chunks(stream: Stream) -> list[bytes]:
    bounds = [0, *stream.cuts, len(stream.data)]
    return [stream.data[a:b] for a, b in itertools.pairwise(bounds)]


def _read(stream: Stream, *, check_utf8: bool = False) -> list[object]:
    reader = LineReader(max_line_bytes=LIMIT, check_utf8=check_utf8)
    items: list[object] = []
    for chunk in _chunks(stream):
        items += reader.feed(chunk)
    items += reader.close()
    assert reader.bytes_read == len(stream.data)
    return items


@settings(max_examples=150, deadline=None)
@given(streams())
def test_each_event_gets_its_own_line_number(stream: Stream) -> None:
    items = _read(stream)

    events = [item for item in items if isinstance(item, LineEvent)]
    assert [item.line for item in events] == stream.event_lines
    assert all(item.event.seq == item.line for item in events)


@settings(max_examples=100, deadline=None)
@given(streams())
def test_bad_lines_are_exactly_what_the_parser_reports(stream: Stream) -> None:
    expected: list[LineError] = []
    seen: list[ParsedEvent] = []
    parser = NdjsonStreamParser(seen.append, expected.append, max_line_bytes=LIMIT)
    parser.feed(stream.data)
    parser.flush()

    items = _read(stream)

    errors = [item for item in items if isinstance(item, LineError)]
    # The content of a line_too_long report depends on where the chunk that
    # passed the limit began (the parser keeps what it had); the rest must match.
    assert [_comparable(e) for e in errors] == [_comparable(e) for e in expected]
    assert [item.event for item in items if isinstance(item, LineEvent)] == seen
    lines = [item.line for item in items if isinstance(item, (LineEvent, LineError))]
    assert lines == sorted(lines)  # stream order


def _comparable(error: LineError) -> LineError:
    if error.kind == "line_too_long":
        return msgspec.structs.replace(error, content=error.content[:1])
    return error


def _utf8_issues(data: bytes) -> list[tuple[int, int]]:
    """(line, offset of the first bad byte) of each non-UTF-8 line, the simple way."""
    issues = []
    offset = 0
    for number, line in enumerate(data.split(b"\n"), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            issues.append((number, offset + exc.start))
        offset += len(line) + 1
    return issues


@settings(max_examples=150, deadline=None)
@given(streams(invalid_utf8=True))
def test_non_utf8_lines_are_found_wherever_the_chunks_split(stream: Stream) -> None:
    items = _read(stream, check_utf8=True)

    found = [(item.line, item.offset) for item in items if isinstance(item, EncodingIssue)]
    assert found == _utf8_issues(stream.data)
    numbers = [item.line for item in items if isinstance(item, (LineEvent, LineError))]
    assert numbers == sorted(numbers)


def test_an_invalid_byte_is_described() -> None:
    reader = LineReader(check_utf8=True)

    items = reader.feed(b"{}\n\xe2\x82x\n")

    [issue] = [item for item in items if isinstance(item, EncodingIssue)]

    assert issue == EncodingIssue(2, 3, "invalid UTF-8 (invalid continuation byte: e2 82)")


def test_a_character_cut_by_the_end_of_input_is_reported() -> None:
    reader = LineReader(check_utf8=True)

    assert reader.feed(b"\n\xf0\x9f") == []
    [issue, error] = reader.close()

    assert issue == EncodingIssue(2, 1, "invalid UTF-8 (unexpected end of data: f0 9f)")
    assert isinstance(error, LineError)
    assert error.line == 2
