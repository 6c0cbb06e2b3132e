"""NDJSON framing (sans-IO: no event loop, no I/O).

One JSON event per line, lines separated by ``b"\\n"`` only. Framing is done on
bytes, so a chunk may end anywhere (inside a line, a multi-byte UTF-8
character, or between ``\\r`` and ``\\n``), and characters such as U+2028 or
U+0085 that other line splitters treat as line breaks stay inside their JSON
strings. Each line is decoded on its own (by :func:`~enclave_stream.codec.decode_lines`):
a bad line is one error report, and the good lines around it are all delivered.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "FeedResult",
    "Item",
    "Judged",
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
    "ErrorHandler",
    "iter_ndjson_stream",
    "report_line_error",
]

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar, Final, Generic, Literal, TypeVar, Union, cast, overload

import msgspec

from ._json import js_blank, js_trim, utf16_truncate
from .codec import (
    DecodeFailure,
    EventEncoder,
    decode_event,
    decode_lines,
    serialize_event,
)
from .errors import FailureKind, LineError, NdjsonParseError
from .events import ParsedEvent

logger = logging.getLogger("enclave_stream")

DEFAULT_MAX_LINE_BYTES: Final = 16 * 1024 * 1024
"""Longest line (in bytes, without its newline) the stream parsers accept: 16 MiB."""

_TOO_LONG_HEAD: Final = 512  # bytes of an over-long line kept for its report


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
    """A line the fast decoder refused, handed over (``defer_slow_lines=True``) to be judged later.

    Judging may cost far more per byte than a valid line: the async layers
    judge big ones off the event loop (:func:`~enclave_stream.streams.settle`).
    Attributes are the line's bytes, number and stream offset.
    """

    line: bytes
    number: int
    offset: int

    def judge(self) -> ParsedEvent | LineError:
        """The event, or the :class:`LineError` reporting the line."""
        result = decode_event(self.line, fast=False)
        if type(result) is DecodeFailure:
            return _line_error(result, self.number, self.offset)
        return result  # type: ignore[return-value]


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
    a WHATWG ``TextDecoder`` does.
    """
    lines: list[Any] = (
        data.split(b"\n") if isinstance(data, (bytes, bytearray)) else data.split("\n")
    )
    if not lines[-1]:
        lines.pop()  # the usual final newline ends the last line; it starts none
    verdicts, refused = decode_lines(lines)
    if not refused:
        return ParseLinesResult(verdicts, [])
    events: list[ParsedEvent] = []
    errors: list[LineError] = []
    done = 0
    for index in refused:
        events += verdicts[done:index]
        done = index + 1
        failure: DecodeFailure = verdicts[index]
        if failure.kind is not FailureKind.EMPTY:
            errors.append(_line_error(failure, index + 1))
    events += verdicts[done:]
    return ParseLinesResult(events, errors)


def serialize_events(events: Iterable[ParsedEvent | Mapping[str, Any]]) -> str:
    """Events joined with ``\\n`` (no trailing newline), as one ``str``.

    For a response body or a file, write bytes instead:
    :meth:`EventEncoder.encode_lines <enclave_stream.EventEncoder.encode_lines>`
    gives the same lines as UTF-8 (each ending in ``\\n``) without building a
    ``str`` of the whole document, which costs 4 bytes per character once
    one character is outside the BMP.
    """
    return b"\n".join(_serializer.encode_all(events)).decode("utf-8")


Item = Union[ParsedEvent, LineError, SlowLine]
"""One thing a line held: its event, the report on it, or the line itself, to judge."""

Judged = Union[ParsedEvent, LineError]
"""What a line held once judged: its event or the report on it."""

I = TypeVar("I", bound=Item)  # noqa: E741 - the item type, as in list[I]


class FeedResult(list[I]):
    """What one :meth:`NdjsonStreamParser.feed` or ``flush()`` found, in stream order.

    A list of events, :class:`LineError` reports and, when the parser defers
    them, :class:`SlowLine` items to judge. ``bad_lines`` counts the items that
    are not events (0: every item is an event); :meth:`line_numbers` says
    which line each item came from. ``FeedResult(n)`` is an empty one after line ``n``.
    """

    __slots__ = ("_before", "_quiet", "bad_lines")

    def __init__(self, before: int) -> None:
        super().__init__()
        self.bad_lines = 0
        self._before = before  # lines completed before this feed
        self._quiet: set[int] = set()  # lines completed here that report nothing

    def line_numbers(self) -> list[int]:
        """The 1-based number of the line each item came from, in order.

        Events carry none of their own, so they are numbered here: the lines
        between the reports, skipping the blank ones (and an over-long line
        reported before its newline came).
        """
        number = self._before
        quiet = self._quiet
        if not self.bad_lines and not quiet:
            return list(range(number + 1, number + 1 + len(self)))
        numbers = []
        for item in self:
            kind = type(item)
            if kind is LineError:
                number = cast(LineError, item).line
            elif kind is SlowLine:
                number = cast(SlowLine, item).number
            else:
                number += 1
                while number in quiet:
                    number += 1
            numbers.append(number)
        return numbers


class _Offsets:
    """Stream offsets of a chunk's lines, found walking forward (only bad lines need one)."""

    __slots__ = ("_index", "_lines", "_next", "_start")

    def __init__(self, lines: list[bytes], start: int, second: int) -> None:
        self._lines = lines
        self._start = start  # line 0 began in an earlier chunk, maybe
        self._index, self._next = 1, second

    def at(self, index: int) -> int:
        if index == 0:
            return self._start
        while self._index < index:
            self._next += len(self._lines[self._index]) + 1
            self._index += 1
        return self._next


ErrorHandler = Callable[[LineError], object]
"""Gets each bad line's report (``on_error``)."""


def report_line_error(error: LineError, on_error: ErrorHandler | None, strict: bool) -> None:
    """Raise :class:`NdjsonParseError` if ``strict``, else hand ``error`` to ``on_error`` or log."""
    if strict:
        raise NdjsonParseError(error)
    if on_error is not None:
        on_error(error)
    else:
        logger.warning(
            "skipping bad NDJSON line %d (%s%s): %s",
            error.line,
            error.kind,
            f" at {error.path}" if error.path else "",
            error.error,
        )


class NdjsonStreamParser(Generic[I]):
    """Incremental NDJSON parser: feed it chunks, get back what their lines held.

    :meth:`feed` and :meth:`flush` return a :class:`FeedResult`: the events
    and :class:`LineError` reports of the lines they completed, in stream
    order. The callbacks are optional; each one given is also called per item,
    in order, before ``feed`` returns.

    Args:
        on_event: called with each valid event.
        on_error: called with a :class:`LineError` for each bad line.
        max_line_bytes: a line longer than this is reported as soon as it
            passes the limit (kind ``"line_too_long"``) and its bytes are
            dropped up to the next newline, where parsing resumes; memory stays
            bounded whatever the peer sends.
        defer_slow_lines: a line that the fast decoder refuses is not judged
            here but returned as a :class:`SlowLine`, in stream order with the
            events and errors; the caller calls ``slow_line.judge()`` when it
            likes (the async parsers judge big ones in a worker thread, so
            that no line holds the event loop). No callback gets it.

    An exception raised by a callback propagates out of :meth:`feed`; the
    lines after the failing one in that chunk are then neither delivered nor
    counted, while the parser stays consistent for the next :meth:`feed`.

    >>> p = NdjsonStreamParser()
    >>> p.feed(b'{"protocolVersion":2,"sessionId":"s_1","seq":1,"type":"std')
    []
    >>> [event] = p.feed(b'out","payload":{"chunk":"hi"}}\\n')
    >>> event.payload.chunk, p.line_number
    ('hi', 1)
    """

    # A parser that judges every line hands out events and LineErrors only;
    # one that defers slow lines hands out SlowLines too.
    @overload
    def __init__(
        self: NdjsonStreamParser[Judged],
        on_event: Callable[[ParsedEvent], object] | None = None,
        on_error: Callable[[LineError], object] | None = None,
        *,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        defer_slow_lines: Literal[False] = False,
    ) -> None: ...

    @overload
    def __init__(
        self: NdjsonStreamParser[Item],
        on_event: Callable[[ParsedEvent], object] | None = None,
        on_error: Callable[[LineError], object] | None = None,
        *,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        defer_slow_lines: bool,
    ) -> None: ...

    def __init__(
        self,
        on_event: Callable[[ParsedEvent], object] | None = None,
        on_error: Callable[[LineError], object] | None = None,
        *,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        defer_slow_lines: bool = False,
    ) -> None:
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be positive, got {max_line_bytes}")
        self._on_event = on_event
        self._on_error = on_error
        self._callbacks = on_event is not None or on_error is not None
        self._judge = not defer_slow_lines
        self._max = max_line_bytes
        self._pending = bytearray()
        self._skipping = False  # inside an over-long line: drop bytes up to the next LF
        self._line_number = 0
        self._consumed = 0  # bytes fed before the current chunk
        self._line_start = 0  # stream offset of the current (unfinished) line

    @property
    def line_number(self) -> int:
        """Lines completed so far (``getLineNumber()``).

        Inside a callback, the number of the line being reported.
        """
        return self._line_number

    @property
    def max_line_bytes(self) -> int:
        """The line length limit in bytes."""
        return self._max

    @property
    def pending_bytes(self) -> int:
        """Bytes held for the unfinished line (never more than :attr:`max_line_bytes`)."""
        return len(self._pending)

    def has_pending_data(self) -> bool:
        """True if an unfinished line holds more than white space."""
        return self._skipping or not js_blank(self._pending)

    def feed(self, chunk: bytes | bytearray | memoryview | str) -> FeedResult[I]:
        """Add a chunk; return what the lines it completes held (and an over-long line's report)."""
        data = chunk.encode("utf-8", "surrogatepass") if isinstance(chunk, str) else bytes(chunk)
        before = self._line_number
        found: FeedResult[Any] = FeedResult(before)
        if not data:
            return found
        base = self._consumed
        self._consumed = base + len(data)
        first = data.find(b"\n")
        if first < 0:
            too_long = self._set_pending(data)
            if too_long is not None:
                self._report_too_long(found, too_long, before + 1, self._line_start)
            return self._deliver(found, before)
        # Settle the framing state for the whole chunk before anything is
        # reported, so that a callback that raises cannot make a line count twice.
        last = data.rfind(b"\n")
        line_start, self._line_start = self._line_start, base + last + 1
        was_skipping, self._skipping = self._skipping, False
        # Split the whole chunk and take the unfinished tail off the end: a
        # slice up to the last newline first would copy the chunk once more.
        lines = data.split(b"\n")
        tail = lines.pop()
        offsets = _Offsets(lines, line_start, base + first + 1)
        head_too_long: bytes | None = None
        if self._pending:
            if len(self._pending) + first > self._max:
                head = data[: min(first, _TOO_LONG_HEAD)]
                head_too_long = bytes(self._pending[:_TOO_LONG_HEAD]) + head
            else:
                lines[0] = bytes(self._pending) + lines[0]
            self._pending.clear()
        elif not was_skipping and first > self._max:
            head_too_long = data[: min(first, _TOO_LONG_HEAD)]
        tail_too_long = self._set_pending(tail)

        start = 0
        if was_skipping:  # the end of a line reported when it passed the limit
            found._quiet.add(before + 1)
            start = 1
        elif head_too_long is not None:
            self._report_too_long(found, head_too_long, before + 1, line_start)
            start = 1
        middle = last - first - 1
        if middle > self._max:  # some line in it may be too long: cut around those
            for index in range(1, len(lines)):
                line = lines[index]
                if len(line) > self._max:
                    self._decode(found, lines, start, index, middle, offsets)
                    self._report_too_long(
                        found, line[:_TOO_LONG_HEAD], before + 1 + index, offsets.at(index)
                    )
                    start = index + 1
        longest = max(middle, len(lines[0])) if start == 0 else middle
        self._decode(found, lines, start, len(lines), longest, offsets)
        if tail_too_long is not None:
            end = before + len(lines)
            self._report_too_long(found, tail_too_long, end + 1, self._line_start)
        return self._deliver(found, before + len(lines))

    def flush(self) -> FeedResult[I]:
        """End of input: returns what the last line held if it had no newline."""
        before = self._line_number
        found: FeedResult[Any] = FeedResult(before)
        if self._skipping:  # an over-long last line, already reported
            self._skipping = False
            found._quiet.add(before + 1)
            return self._deliver(found, before + 1)
        line = bytes(self._pending)
        self._pending.clear()
        if js_blank(line):
            return found  # a blank last line is no line at all: not counted
        self._decode(found, [line], 0, 1, len(line), _Offsets([line], self._line_start, 0))
        return self._deliver(found, before + 1)

    def reset(self) -> None:
        """Forget all state, including the line count."""
        self._pending.clear()
        self._skipping = False
        self._line_number = 0
        self._consumed = 0
        self._line_start = 0

    def _decode(
        self,
        found: FeedResult[Any],
        lines: list[bytes],
        start: int,
        stop: int,
        longest: int,
        offsets: _Offsets,
    ) -> None:
        """Decode complete lines ``lines[start:stop]`` (none over the limit) into ``found``."""
        if start >= stop:
            return
        run = lines if start == 0 and stop == len(lines) else lines[start:stop]
        verdicts, refused = decode_lines(run, longest=longest, judge=self._judge)
        if not refused:
            found += verdicts
            return
        before = found._before
        done = 0
        for index in refused:
            found += verdicts[done:index]
            done = index + 1
            at = start + index
            verdict = verdicts[index]
            if verdict is None:
                found.append(SlowLine(lines[at], before + 1 + at, offsets.at(at)))
            elif verdict.kind is FailureKind.EMPTY:
                found._quiet.add(before + 1 + at)
                continue
            else:
                found.append(_line_error(verdict, before + 1 + at, offsets.at(at)))
            found.bad_lines += 1
        found += verdicts[done:]

    def _set_pending(self, data: bytes) -> bytes | None:
        """Append to the unfinished line; past the limit, drop it and return its head."""
        if self._skipping or not data:
            return None
        if len(self._pending) + len(data) > self._max:
            head = bytes(self._pending[:_TOO_LONG_HEAD]) + data[:_TOO_LONG_HEAD]
            self._pending.clear()
            self._skipping = True
            return head
        self._pending += data
        return None

    def _report_too_long(self, found: FeedResult[Any], head: bytes, line: int, offset: int) -> None:
        trimmed = js_trim(head.decode("utf-8", "replace"))
        content = utf16_truncate(trimmed, 100)
        if not content.endswith("..."):
            content += "..."
        found.append(
            LineError(
                line=line,
                error=f"Line too long: more than {self._max} bytes without a newline",
                content=content,
                kind=FailureKind.LINE_TOO_LONG,
                offset=offset,
            )
        )
        found.bad_lines += 1

    def _deliver(self, found: FeedResult[Any], end: int) -> FeedResult[Any]:
        """Call the callbacks for ``found``'s items; ``end`` lines are then complete."""
        if self._callbacks and found:
            on_event, on_error = self._on_event, self._on_error
            if not found.bad_lines and not found._quiet:
                # The usual chunk: events only, on consecutive lines.
                if on_event is not None:
                    for number, event in enumerate(found, found._before + 1):
                        self._line_number = number
                        on_event(event)
            else:
                numbers = found.line_numbers()
                for number, item in zip(numbers, found, strict=True):
                    # An over-long line is reported before its newline comes:
                    # it is not complete yet.
                    self._line_number = min(number, end)
                    kind = type(item)
                    if kind is LineError:
                        if on_error is not None:
                            on_error(item)
                    elif kind is not SlowLine and on_event is not None:
                        on_event(item)
        self._line_number = end
        return found


def iter_ndjson_stream(
    chunks: Iterable[bytes | bytearray | str],
    *,
    on_error: ErrorHandler | None = None,
    strict: bool = False,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Iterator[ParsedEvent]:
    """Yield the events of NDJSON chunks as they complete lines: the synchronous
    :func:`~enclave_stream.parse_ndjson_stream`, for scripts and sync services.

    ``chunks`` is any iterable of bytes (``httpx.Client``'s
    ``response.iter_bytes()``, a file read in blocks), split anywhere. Bad
    lines go to ``on_error``, are logged, or raise with ``strict=True``,
    exactly as in the async parser; every line is judged here, in the
    caller's thread. ``chunks`` is closed (if it has ``close()``) when the
    iterator ends, fails or is closed early.

    >>> line = b'{"protocolVersion":2,"sessionId":"s_1","seq":1,"type":"stdout",'
    >>> line += b'"payload":{"chunk":"hi"}}\\n'
    >>> [event.payload.chunk for event in iter_ndjson_stream([line[:9], line[9:]])]
    ['hi']
    """
    parser = NdjsonStreamParser(max_line_bytes=max_line_bytes)

    def results() -> Iterator[FeedResult[Judged]]:
        for chunk in chunks:
            yield parser.feed(chunk)
        yield parser.flush()

    try:
        for found in results():
            if not found.bad_lines:  # the usual chunk: events only
                yield from found  # type: ignore[misc]
                continue
            for item in found:
                if isinstance(item, LineError):
                    report_line_error(item, on_error, strict)
                else:
                    yield item
    finally:
        close = getattr(chunks, "close", None)
        if callable(close):
            close()
