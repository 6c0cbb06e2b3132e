"""Reading a stream: a file or stdin, in chunks, each event tagged with its line number.

Memory stays bounded whatever the input: chunks are read one at a time and
the library's :class:`~enclave_stream.NdjsonStreamParser` drops an over-long
line as soon as it passes its limit.
"""

from __future__ import annotations

__all__ = [
    "CHUNK_SIZE",
    "EncodingIssue",
    "Input",
    "Item",
    "LineEvent",
    "LineReader",
    "open_input",
    "read_chunks",
]

import codecs
import heapq
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Final, NamedTuple, Union

from ..errors import LineError
from ..events import ParsedEvent
from ..ndjson import DEFAULT_MAX_LINE_BYTES, FeedResult, Judged, NdjsonStreamParser

CHUNK_SIZE: Final = 64 * 1024
"""Bytes read at a time."""


@dataclass(frozen=True)
class Input:
    """An opened input: its display name, its bytes, and its size when known."""

    name: str
    stream: BinaryIO
    size: int | None


@contextmanager
def open_input(path: str, stdin: BinaryIO) -> Iterator[Input]:
    """Open ``path`` for reading bytes; ``-`` is ``stdin`` (left open afterwards).

    Raises:
        OSError: the file cannot be opened.
    """
    if path == "-":
        yield Input("<stdin>", stdin, None)
        return
    with open(path, "rb") as stream:
        info = os.fstat(stream.fileno())
        size = info.st_size if stat.S_ISREG(info.st_mode) else None
        yield Input(path, stream, size)


def read_chunks(stream: BinaryIO, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The stream's bytes, chunk by chunk, until end of input.

    ``read1`` is used when available, so a pipe's data is handled as it
    arrives (``tail -f log | enclave-stream cat -`` shows events live).
    """
    read = getattr(stream, "read1", stream.read)
    while chunk := read(chunk_size):
        yield chunk


class LineEvent(NamedTuple):
    """A valid event and the number of the line it was on."""

    line: int
    event: ParsedEvent


@dataclass(frozen=True)
class EncodingIssue:
    """A line that is not valid UTF-8 (the parser reads such bytes as U+FFFD).

    Attributes:
        line: 1-based line number.
        offset: byte offset of the first invalid byte in the stream.
        reason: what the UTF-8 decoder found.
    """

    line: int
    offset: int
    reason: str


Item = Union[LineEvent, LineError, EncodingIssue]
"""What :class:`LineReader` returns, in stream order."""


def _line_of(item: Item) -> int:
    return item.line


class LineReader:
    """Feeds chunks to :class:`~enclave_stream.NdjsonStreamParser` and numbers its events.

    Args:
        max_line_bytes: the parser's line limit.
        check_utf8: also report lines that are not valid UTF-8 (as
            :class:`EncodingIssue`); the parser itself reads such bytes as
            U+FFFD, as a WHATWG ``TextDecoder`` does.

    >>> reader = LineReader()
    >>> items = reader.feed(b'\\n{"protocolVersion":2,"sessionId":"s_1",')
    >>> items += reader.feed(b'"seq":1,"type":"stdout","payload":{"chunk":"hi"}}\\n{')
    >>> items += reader.close()
    >>> [(type(i).__name__, i.line) for i in items]
    [('LineEvent', 2), ('LineError', 3)]
    >>> reader.bytes_read, reader.lines
    (91, 3)
    """

    def __init__(
        self, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, check_utf8: bool = False
    ) -> None:
        self._parser = NdjsonStreamParser(max_line_bytes=max_line_bytes)
        self._bytes = 0
        self._utf8 = _Utf8Checker() if check_utf8 else None

    @property
    def bytes_read(self) -> int:
        """Bytes fed so far."""
        return self._bytes

    @property
    def lines(self) -> int:
        """Lines seen so far (as the parser counts them)."""
        return self._parser.line_number

    def read(self, stream: BinaryIO, chunk_size: int = CHUNK_SIZE) -> Iterator[list[Item]]:
        """Read ``stream`` to its end: what each chunk held, then what the end of input held."""
        for chunk in read_chunks(stream, chunk_size):
            yield self.feed(chunk)
        yield self.close()

    def feed(self, chunk: bytes) -> list[Item]:
        """Parse ``chunk``; returns what the lines it completes hold, in order."""
        before = self._parser.line_number
        issues = [] if self._utf8 is None else self._utf8.check(chunk, before, self._bytes)
        items = _numbered(self._parser.feed(chunk))
        self._bytes += len(chunk)
        return list(heapq.merge(issues, items, key=_line_of)) if issues else items

    def close(self) -> list[Item]:
        """End of input: parse a last line that has no newline."""
        before = self._parser.line_number
        issues = [] if self._utf8 is None else self._utf8.finish(before, self._bytes)
        return issues + _numbered(self._parser.flush())


def _numbered(found: FeedResult[Judged]) -> list[Item]:
    """The parser's events tagged with their line numbers; its reports as they are."""
    return [
        item if isinstance(item, LineError) else LineEvent(number, item)
        for number, item in zip(found.line_numbers(), found, strict=True)
    ]


class _Utf8Checker:
    """Finds the lines that are not UTF-8, decoding whole chunks at once."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._skipping = False  # the current line was reported: ignore the rest of it

    def check(self, chunk: bytes, lines_before: int, offset: int) -> list[EncodingIssue]:
        """Issues in ``chunk``; ``lines_before`` newlines and ``offset`` bytes came before it."""
        issues: list[EncodingIssue] = []
        start = 0
        view = memoryview(chunk)
        while True:
            if self._skipping:
                end = chunk.find(b"\n", start)
                if end < 0:
                    return issues
                self._skipping = False
                start = end + 1
            buffered = len(self._decoder.getstate()[0])
            try:
                self._decoder.decode(view[start:])
            except UnicodeDecodeError as exc:
                at = start - buffered + exc.start  # < 0: in bytes kept from the last chunk
                line = lines_before + 1 + chunk.count(b"\n", 0, max(at, 0))
                issues.append(_issue(exc, line, offset + at))
                self._decoder.reset()
                self._skipping = True
                start = max(at, 0)
            else:
                return issues

    def finish(self, lines_before: int, offset: int) -> list[EncodingIssue]:
        """Issues at the end of input (an incomplete last character)."""
        if self._skipping:
            return []
        buffered = len(self._decoder.getstate()[0])
        try:
            self._decoder.decode(b"", True)
        except UnicodeDecodeError as exc:
            return [_issue(exc, lines_before + 1, offset - buffered + exc.start)]
        return []


def _issue(exc: UnicodeDecodeError, line: int, offset: int) -> EncodingIssue:
    bad = exc.object[exc.start : exc.end]
    return EncodingIssue(line, offset, f"invalid UTF-8 ({exc.reason}: {bytes(bad).hex(' ')})")
