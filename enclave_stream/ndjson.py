"""NDJSON framing and the line codec (sans-IO: no event loop, no I/O).

One JSON event per line, lines separated by ``b"\\n"`` only. Framing is done on
bytes, so a chunk may end anywhere (inside a line, a multi-byte UTF-8
character, or between ``\\r`` and ``\\n``), and characters such as U+2028 or
U+0085 that other line splitters treat as line breaks stay inside their JSON
strings. Each line is decoded on its own: a bad line is one error report, and
the good lines around it are all delivered.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "NdjsonStreamParser",
    "ParseFailure",
    "ParseLinesResult",
    "ParseResult",
    "ParseSuccess",
    "SlowLine",
    "parse_line",
    "parse_lines",
    "serialize_event",
    "serialize_events",
]

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Final, Literal, Union

import msgspec

from ._json import js_trim, utf16_truncate
from .codec import (
    _EVENT_DECODER,
    FAST_PATH_ERRORS,
    GC_PAUSE_BYTES,
    DecodeFailure,
    EventEncoder,
    container_overload,
    decode_event,
    decode_event_slow,
    encode_event,
    gc_paused,
    refused_after_decode,
)
from .errors import FailureKind, LineError
from .events import DEFAULT_PROTOCOL_VERSION, ParsedEvent

DEFAULT_MAX_LINE_BYTES: Final = 16 * 1024 * 1024
"""Longest line (in bytes, without its newline) the stream parsers accept: 16 MiB."""


_serializer: Final = EventEncoder()


def _line_error(failure: DecodeFailure, line: int, offset: int | None = None) -> LineError:
    return LineError(
        line=line,
        error=failure.message,
        content=utf16_truncate(failure.trimmed, 100),
        kind=failure.kind,
        path=failure.path,
        offset=offset,
    )


class SlowLine(msgspec.Struct, frozen=True, gc=False):
    """A line the fast decoder refused, handed over to be judged later (see ``on_slow_line``).

    Judging it follows JavaScript's JSON rules in pure Python, which may cost
    far more per byte than a valid line: an async caller judges big ones off
    the event loop. Attributes are the line's bytes, number and stream offset.
    """

    line: bytes
    number: int
    offset: int

    def judge(self) -> ParsedEvent | LineError | None:
        """The event, or the :class:`LineError` reporting it; None for a blank line."""
        result = decode_event_slow(self.line)
        if isinstance(result, DecodeFailure):
            if result.kind is FailureKind.EMPTY:
                return None
            return _line_error(result, self.number, self.offset)
        judged: ParsedEvent = result
        return judged


class ParseSuccess(msgspec.Struct, frozen=True, gc=False):
    """A line that held a valid event (``.data``)."""

    success: ClassVar[Literal[True]] = True
    data: ParsedEvent


class ParseFailure(msgspec.Struct, frozen=True, gc=False):
    """A line that did not hold a valid event.

    ``error`` is the message, ``line`` the input as given; ``kind`` and
    ``path`` say what and where, as in :class:`LineError`.
    """

    success: ClassVar[Literal[False]] = False
    error: str
    line: str | bytes
    kind: FailureKind
    path: str | None = None


ParseResult = Union[ParseSuccess, ParseFailure]
"""What :func:`parse_line` returns; test ``result.success``."""


class ParseLinesResult(msgspec.Struct, frozen=True, gc=False):
    """What :func:`parse_lines` returns: the good events and the bad lines, in order."""

    events: list[ParsedEvent]
    errors: list[LineError]


def parse_line(line: str | bytes) -> ParseResult:
    """Parse one line into an event; never raises on bad input.

    >>> r = parse_line('{"protocolVersion":2,"sessionId":"s_1","seq":1,'
    ...                '"type":"stdout","payload":{"chunk":"hi"}}')
    >>> r.success, r.data.payload.chunk
    (True, 'hi')
    >>> parse_line("{oops").error
    'JSON parse error: Expecting property name enclosed in double quotes (position 1)'
    """
    result = decode_event(line)
    if isinstance(result, DecodeFailure):
        return ParseFailure(result.message, line, result.kind, result.path)
    return ParseSuccess(result)


def parse_lines(data: str | bytes) -> ParseLinesResult:
    """Parse a whole NDJSON document; blank lines are skipped (but counted).

    Bytes are decoded as UTF-8 per line, invalid sequences becoming U+FFFD as
    in the reference's ``TextDecoder``.
    """
    lines: list[Any] = (
        data.split(b"\n") if isinstance(data, (bytes, bytearray)) else data.split("\n")
    )
    decode = _EVENT_DECODER.decode
    events: list[ParsedEvent] = []
    errors: list[LineError] = []
    append = events.append
    missing = DEFAULT_PROTOCOL_VERSION
    known_session = ""
    number = 0
    # Only a document over the threshold can hold a big line (see _line).
    may_be_big = len(data) > GC_PAUSE_BYTES
    for line in lines:
        number += 1
        if not line:
            continue
        if may_be_big and len(line) > GC_PAUSE_BYTES:
            result = decode_event(line)  # bounded in containers, GC paused
        else:
            try:
                event = decode(line)
            except FAST_PATH_ERRORS:
                result = decode_event_slow(line)
            else:
                if event.protocol_version is not missing:
                    # msgspec leaves the "s_" prefix to us; compare first, as
                    # a stream rarely changes session.
                    if event.session_id == known_session:
                        append(event)
                        continue
                    if event.session_id.startswith("s_"):
                        known_session = event.session_id
                        append(event)
                        continue
                result = refused_after_decode(event, line) or decode_event_slow(line)
        if isinstance(result, DecodeFailure):
            if result.kind is not FailureKind.EMPTY:
                errors.append(_line_error(result, number))
        else:
            append(result)
    return ParseLinesResult(events, errors)


def serialize_event(event: ParsedEvent | Mapping[str, Any]) -> str:
    """One event as a compact JSON line (no newline), byte-compatible with the reference.

    The event is validated first: an invalid event raises
    :class:`~enclave_stream.EventValidationError` naming the field, so it never
    reaches the wire. A mapping in wire form (camelCase keys) is accepted too.
    """
    return encode_event(event).decode("utf-8")


def serialize_events(events: Iterable[ParsedEvent | Mapping[str, Any]]) -> str:
    """Events joined with ``\\n`` (no trailing newline), as the reference's ``serializeEvents``."""
    return b"\n".join(_serializer.encode_all(events)).decode("utf-8")


class NdjsonStreamParser:
    """Incremental NDJSON parser: feed it chunks, it calls back per line.

    Args:
        on_event: called with each valid event, in stream order.
        on_error: called with a :class:`LineError` for each bad line, in
            stream order relative to the events.
        max_line_bytes: a line longer than this is reported as soon as it
            passes the limit (kind ``"line_too_long"``) and its bytes are
            dropped up to the next newline, where parsing resumes; memory stays
            bounded whatever the peer sends.
        on_slow_line: if given, a line that the fast decoder refuses is not
            judged here but handed to it as a :class:`SlowLine`, in stream
            order with the events and errors; the caller calls
            ``slow_line.judge()`` when it likes (the async parsers judge big
            ones in a worker thread, so that no line holds the event loop).

    Exceptions raised by the callbacks propagate out of :meth:`feed`; the
    lines after the failing one in that chunk are then neither delivered nor
    counted, while the parser stays consistent for the next :meth:`feed`.

    >>> events = []
    >>> p = NdjsonStreamParser(events.append, print)
    >>> p.feed(b'{"protocolVersion":2,"sessionId":"s_1","seq":1,"type":"std')
    >>> p.feed(b'out","payload":{"chunk":"hi"}}\\n')
    >>> events[0].payload.chunk, p.line_number
    ('hi', 1)
    """

    def __init__(
        self,
        on_event: Callable[[ParsedEvent], object],
        on_error: Callable[[LineError], object],
        *,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        on_slow_line: Callable[[SlowLine], object] | None = None,
    ) -> None:
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be positive, got {max_line_bytes}")
        self._on_event = on_event
        self._on_error = on_error
        self._on_slow_line = on_slow_line
        # Lines longer than this are handled one at a time: too long, or big.
        self._careful = min(max_line_bytes, GC_PAUSE_BYTES)
        self._max = max_line_bytes
        self._pending = bytearray()
        self._skipping = False  # inside an over-long line: drop bytes up to the next LF
        self._line_number = 0
        self._consumed = 0  # bytes fed before the current chunk
        self._line_start = 0  # stream offset of the current (unfinished) line
        self._known_session = ""  # last session id seen valid

    @property
    def line_number(self) -> int:
        """Lines completed so far (the reference's ``getLineNumber()``).

        Inside an ``on_event`` or ``on_error`` callback, the number of the line
        being reported.
        """
        return self._line_number

    @property
    def max_line_bytes(self) -> int:
        """The line length limit in bytes."""
        return self._max

    def has_pending_data(self) -> bool:
        """True if an unfinished line holds more than white space."""
        if self._skipping:
            return True
        return bool(self._pending) and bool(js_trim(self._pending.decode("utf-8", "replace")))

    def feed(self, chunk: bytes | bytearray | memoryview | str) -> None:
        """Add a chunk; every line it completes is parsed and reported at once."""
        data = chunk.encode("utf-8", "surrogatepass") if isinstance(chunk, str) else bytes(chunk)
        if not data:
            return
        base = self._consumed
        self._consumed = base + len(data)
        first = data.find(b"\n")
        if first < 0:
            self._extend_pending(data)
            return
        # Settle the state for the whole chunk before any callback runs, so
        # that a callback that raises cannot make a line count twice.
        last = data.rfind(b"\n")
        line_start, self._line_start = self._line_start, base + last + 1
        was_skipping, self._skipping = self._skipping, False
        head: bytes | None = None  # the line the first newline completes
        too_long: bytes | None = None
        if self._pending:
            if len(self._pending) + first > self._max:
                too_long = bytes(self._pending[:512]) + data[: min(first, 512)]
            else:
                head = bytes(self._pending) + data[:first]
            self._pending.clear()
        elif not was_skipping:
            if first > self._max:
                too_long = data[:512]
            else:
                head = data[:first]
        tail_too_long = self._set_pending(data[last + 1 :])

        if head is not None:
            self._line(head, line_start)
        else:
            self._line_number += 1
            if too_long is not None:
                self._report_too_long(too_long, self._line_number, line_start)
        if last > first:
            middle = data[first + 1 : last].split(b"\n")
            if last - first - 1 > self._careful:  # may hold a big line: one at a time
                self._lines_limited(middle, base + first + 1)
            else:
                self._lines(middle, base + first + 1)
        if tail_too_long is not None:
            self._report_too_long(tail_too_long, self._line_number + 1, self._line_start)

    def flush(self) -> None:
        """End of input: parse the last line if it has no newline."""
        if self._skipping:
            self._skipping = False
            self._line_number += 1
        elif self._pending:
            line = bytes(self._pending)
            self._pending.clear()
            if self._on_slow_line is not None:
                # A blank last line is no line at all (it is not counted).
                if js_trim(line.decode("utf-8", "replace")):
                    self._line(line, self._line_start)
                return
            result = decode_event(line)
            if isinstance(result, DecodeFailure):
                if result.kind is FailureKind.EMPTY:
                    return
                self._line_number += 1
                self._on_error(_line_error(result, self._line_number, self._line_start))
                return
            self._line_number += 1
            self._on_event(result)

    def reset(self) -> None:
        """Forget all state, including the line count."""
        self._pending.clear()
        self._skipping = False
        self._line_number = 0
        self._consumed = 0
        self._line_start = 0

    def _extend_pending(self, data: bytes) -> None:
        too_long = self._set_pending(data)
        if too_long is not None:
            self._report_too_long(too_long, self._line_number + 1, self._line_start)

    def _set_pending(self, data: bytes) -> bytes | None:
        """Append to the unfinished line; past the limit, drop it and return its head."""
        if self._skipping or not data:
            return None
        if len(self._pending) + len(data) > self._max:
            head = bytes(self._pending[:512]) + data[:512]
            self._pending.clear()
            self._skipping = True
            return head
        self._pending += data
        return None

    def _report_too_long(self, head: bytes, line: int, offset: int) -> None:
        trimmed = js_trim(head.decode("utf-8", "replace"))
        content = utf16_truncate(trimmed, 100)
        if not content.endswith("..."):
            content += "..."
        self._on_error(
            LineError(
                line=line,
                error=f"Line too long: more than {self._max} bytes without a newline",
                content=content,
                kind=FailureKind.LINE_TOO_LONG,
                offset=offset,
            )
        )

    def _lines(self, lines: list[bytes], offset: int) -> None:
        """Parse complete lines, none longer than the limit.

        ``offset`` is the stream offset of the first line.
        """
        decode = _EVENT_DECODER.decode
        on_event = self._on_event
        missing = DEFAULT_PROTOCOL_VERSION
        known_session = self._known_session
        first = self._line_number
        number = first
        # Offsets of bad lines are computed lazily, walking forward once.
        walked, walked_offset = 0, offset
        try:
            for line in lines:
                number += 1
                try:
                    event = decode(line)
                except FAST_PATH_ERRORS:
                    refused = None
                else:
                    if event.protocol_version is not missing:
                        # msgspec leaves the "s_" prefix to us; a stream
                        # rarely changes session, so compare first.
                        if event.session_id == known_session:
                            self._line_number = number
                            on_event(event)
                            continue
                        if event.session_id.startswith("s_"):
                            known_session = self._known_session = event.session_id
                            self._line_number = number
                            on_event(event)
                            continue
                    refused = refused_after_decode(event, line)
                index = number - first - 1
                while walked < index:
                    walked_offset += len(lines[walked]) + 1
                    walked += 1
                self._line_number = number
                if refused is not None:
                    self._on_error(_line_error(refused, number, walked_offset))
                else:
                    self._bad_line(line, number, walked_offset)
        finally:
            self._line_number = number

    def _lines_limited(self, lines: list[bytes], offset: int) -> None:
        """Like :meth:`_lines`, for a segment that may hold big or over-long lines."""
        limit = self._max
        careful = self._careful
        start = 0
        start_offset = offset
        for index, line in enumerate(lines):
            if len(line) > careful:
                self._lines(lines[start:index], start_offset)
                if len(line) > limit:
                    self._line_number += 1
                    self._report_too_long(line[:512], self._line_number, offset)
                else:
                    self._line(line, offset)
                start = index + 1
                start_offset = offset + len(line) + 1
            offset += len(line) + 1
        self._lines(lines[start:], start_offset)

    def _line(self, line: bytes, offset: int) -> None:
        """One complete line that may be big: bounded in containers, decoded with the GC paused."""
        if len(line) > GC_PAUSE_BYTES:
            overload = container_overload(line)
            if overload is not None:
                self._line_number += 1
                self._on_error(_line_error(overload, self._line_number, offset))
                return
        with gc_paused(len(line)):
            self._lines([line], offset)

    def _bad_line(self, line: bytes, number: int, offset: int) -> None:
        if self._on_slow_line is not None:
            if line.strip():  # blank lines are skipped without a judge
                self._on_slow_line(SlowLine(line, number, offset))
            return
        result = decode_event_slow(line)
        if isinstance(result, DecodeFailure):
            if result.kind is not FailureKind.EMPTY:
                self._on_error(_line_error(result, number, offset))
        else:
            self._on_event(result)
