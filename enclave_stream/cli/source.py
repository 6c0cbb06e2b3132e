"""Reading a stream: a file or stdin, in chunks, each event tagged with its line number.

Memory stays bounded whatever the input: chunks are read one at a time and
the library's :class:`~enclave_stream.NdjsonStreamParser` drops an over-long
line as soon as it passes its limit.

The start of the input is looked at first. gzip data is read decompressed
(so ``capture.ndjson.gz`` works as it is); a JSON array of events or
server-sent events (``data:`` lines) are recognised and named, so that a
command can say what the file is instead of reporting each of its lines as
bad NDJSON (:attr:`Input.not_ndjson`).
"""

from __future__ import annotations

__all__ = [
    "CHUNK_SIZE",
    "EncodingIssue",
    "Input",
    "InputError",
    "InputFormat",
    "Item",
    "LineEvent",
    "LineReader",
    "open_input",
    "read_chunks",
]

import codecs
import heapq
import itertools
import os
import re
import stat
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Final, Literal, NamedTuple, TypeVar, Union

from ..errors import LineError
from ..events import ParsedEvent
from ..ndjson import DEFAULT_MAX_LINE_BYTES, FeedResult, Judged, NdjsonStreamParser

CHUNK_SIZE: Final = 64 * 1024
"""Bytes read at a time."""

InputFormat = Literal["ndjson", "json_array", "sse"]
"""What the input holds: NDJSON, a JSON array of events, or server-sent events text."""

_GZIP_MAGIC: Final = b"\x1f\x8b"
_GZIP_WBITS: Final = 16 + zlib.MAX_WBITS  # zlib reads the gzip header and trailer
_WHITESPACE: Final = b" \t\r\n"
_SSE_FIELD: Final = re.compile(rb"(?:data|event|id|retry)?:")  # a field, or ":" (a comment)
_SNIFF_LIMIT: Final = CHUNK_SIZE  # a start that is only whitespace: decide after this much

_NOT_NDJSON: Final[dict[InputFormat, str]] = {
    "json_array": "this is a JSON array of events, not NDJSON (one event per line); "
    "convert it with `jq -c '.[]'`",
    "sse": "this is server-sent events text (`data:` lines), not NDJSON; "
    "take the events out with `sed -n 's/^data: *//p'`",
}

_T = TypeVar("_T")


def read_chunks(stream: BinaryIO, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The stream's bytes, chunk by chunk, until end of input.

    ``read1`` is used when available, so a pipe's data is handled as it
    arrives (``tail -f log | enclave-stream cat -`` shows events live).
    """
    read = getattr(stream, "read1", stream.read)
    while chunk := read(chunk_size):
        yield chunk


class InputError(ValueError):
    """An input that was read but does not hold NDJSON, or could not be read to its end.

    Attributes:
        name: the input's name (as :attr:`Input.name`).
        reason: what is wrong.
    """

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


class Input:
    """An opened input: its name, its bytes chunk by chunk (decompressed), and what it holds.

    Attributes:
        name: what to call it in messages (``<stdin>`` for ``-``).
        size: the file's size as stored, when known (not for a pipe).
        gzip: True when the input is gzip-compressed; :meth:`chunks` decompresses it.
        format: what the start of the (decompressed) input looks like.
        bytes_read: bytes read from the file so far (compressed ones for gzip).
        damage: why the gzip data could not be read to its end (truncated or
            corrupt), once :meth:`chunks` found it; None otherwise.

    >>> import gzip, io
    >>> source = Input("x", io.BytesIO(gzip.compress(b'[{"seq":1}]')), None)
    >>> source.gzip, source.format, b"".join(source.chunks())
    (True, 'json_array', b'[{"seq":1}]')
    """

    def __init__(self, name: str, stream: BinaryIO, size: int | None) -> None:
        self.name = name
        self.size = size
        self.bytes_read = 0
        self.damage: str | None = None
        self.gzip, raw = _sniff(self._count(read_chunks(stream)), _is_gzip)
        self.format: InputFormat
        self.format, self._chunks = _sniff(self._gunzip(raw) if self.gzip else raw, _format_of)

    @property
    def not_ndjson(self) -> str | None:
        """What the input is instead of NDJSON (with how to convert it); None for NDJSON."""
        return None if self.format == "ndjson" else _NOT_NDJSON[self.format]

    def check_ndjson(self) -> None:
        """Raise :class:`InputError` when the input holds something else than NDJSON."""
        if self.not_ndjson is not None:
            raise InputError(self.name, self.not_ndjson)

    def check_intact(self) -> None:
        """Raise :class:`InputError` when :meth:`chunks` could not read the input to its end."""
        if self.damage is not None:
            raise InputError(self.name, self.damage)

    def chunks(self) -> Iterator[bytes]:
        """The input's bytes, decompressed, chunk by chunk (once)."""
        return self._chunks

    def _count(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.bytes_read += len(chunk)
            yield chunk

    def _gunzip(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Decompress gzip members one after another (as ``gzip -d`` does), in bounded steps."""
        inflater = zlib.decompressobj(_GZIP_WBITS)
        for data in chunks:
            while data:
                if inflater.eof:  # the next member of a concatenated file
                    inflater = zlib.decompressobj(_GZIP_WBITS)
                try:
                    # At most CHUNK_SIZE out at a time: a small bomb stays small in memory.
                    out = inflater.decompress(data, CHUNK_SIZE)
                except zlib.error as exc:
                    self.damage = f"the gzip data is corrupt ({exc})"
                    return
                if out:
                    yield out
                data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
        if rest := inflater.flush():
            yield rest
        if not inflater.eof:
            self.damage = "the gzip data ends early (the file is truncated)"


def _sniff(
    chunks: Iterator[bytes], decide: Callable[[bytes, bool], _T | None]
) -> tuple[_T, Iterator[bytes]]:
    """Read until ``decide(start, at_end)`` can tell; returns its verdict and all the chunks."""
    head = b""
    for chunk in chunks:
        head += chunk
        verdict = decide(head, len(head) >= _SNIFF_LIMIT)
        if verdict is not None:
            return verdict, itertools.chain([head], chunks)
    verdict = decide(head, True)
    assert verdict is not None  # decide() always answers at the end
    return verdict, iter([head] if head else [])


def _is_gzip(head: bytes, at_end: bool) -> bool | None:
    if len(head) < len(_GZIP_MAGIC) and not at_end:
        return None
    return head.startswith(_GZIP_MAGIC)


def _format_of(head: bytes, at_end: bool) -> InputFormat | None:
    """What the input holds, from its start; None while more is needed to tell.

    >>> _format_of(b'\\n[\\n  {"seq": 1},', False), _format_of(b"data: {", False)
    ('json_array', 'sse')
    >>> _format_of(b'{"protocolVersion":2', False), _format_of(b"[1]", False)
    ('ndjson', 'ndjson')
    >>> _format_of(b"[ ", False) is None, _format_of(b"", True)
    (True, 'ndjson')
    """
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip(_WHITESPACE)
    if text.startswith(b"["):
        # An NDJSON line is an object: `[` then `{` (or `[]`) is an array of events.
        after = text[1:].lstrip(_WHITESPACE)
        if after[:1] in (b"{", b"]"):
            return "json_array"
        return "ndjson" if after or at_end else None
    if _SSE_FIELD.match(text):
        return "sse"
    if text[:1] == b"{" or len(text) > len("retry:") or b"\n" in text or at_end:
        return "ndjson"
    return None


@contextmanager
def open_input(path: str, stdin: BinaryIO) -> Iterator[Input]:
    """Open ``path`` for reading bytes; ``-`` is ``stdin`` (left open afterwards).

    The start of the input is read at once, to tell what it holds.

    Raises:
        OSError: the file cannot be opened or read.
    """
    if path == "-":
        yield Input("<stdin>", stdin, None)
        return
    with open(path, "rb") as stream:
        info = os.fstat(stream.fileno())
        size = info.st_size if stat.S_ISREG(info.st_mode) else None
        yield Input(path, stream, size)


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

    def read(self, chunks: Iterable[bytes]) -> Iterator[list[Item]]:
        """Read ``chunks`` to their end: what each chunk held, then what the end of input held."""
        for chunk in chunks:
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
