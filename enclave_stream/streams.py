"""anyio adapters over the NDJSON codec: async iterators and object streams.

They run on asyncio and trio alike and work with any source of bytes: an
httpx ``response.aiter_bytes()``, aiohttp ``resp.content.iter_chunked(n)``,
Starlette ``request.stream()``, or an anyio ``ByteReceiveStream``.
"""

from __future__ import annotations

__all__ = [
    "create_ndjson_parse_stream",
    "create_ndjson_serialize_stream",
    "parse_ndjson_stream",
    "serialize_ndjson_stream",
    "settle",
]

import logging
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Mapping
from typing import Any, Union, cast

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream, ObjectReceiveStream, ObjectSendStream

from .codec import encode_event
from .errors import LineError
from .events import ParsedEvent
from .ndjson import (
    DEFAULT_MAX_LINE_BYTES,
    ErrorHandler,
    FeedResult,
    Item,
    Judged,
    NdjsonStreamParser,
    SlowLine,
    report_line_error,
)

logger = logging.getLogger("enclave_stream")

ByteSource = Union[AsyncIterable[bytes], AsyncIterable[bytearray], ByteReceiveStream]
"""Where a stream's bytes come from."""


async def aclose_source(source: object, *, forcefully: bool = False) -> None:
    """Close ``source`` if it has ``aclose``.

    By default a plain close, also after an error or an early exit: the
    source's own cleanup (an HTTP response releasing its connection) must get
    to run; if we are being cancelled, its awaits are cancelled as they should
    be. ``forcefully`` is for a connection being abandoned (a stalled peer):
    its cleanup must not wait on the peer.
    """
    aclose = getattr(source, "aclose", None)
    if aclose is None:
        return
    if forcefully:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await aclose()
    else:
        await aclose()


async def iter_chunks(source: ByteSource) -> AsyncGenerator[bytes | bytearray, None]:
    """The chunks of any :data:`ByteSource`, as one async generator."""
    if isinstance(source, ByteReceiveStream):
        while True:
            try:
                yield await source.receive()
            except anyio.EndOfStream:
                return
    else:
        async for chunk in source:
            yield chunk


INLINE_SLOW_LINE_BYTES = 1024
"""Refused lines up to this size are judged on the event loop; bigger ones in a thread.

Judging one costs up to a thousand times the CPU per byte of a valid line
(docs/security.md); small lines are not worth the thread hop."""


async def settle(found: FeedResult[Item]) -> FeedResult[Judged]:
    """Judge the :class:`SlowLine` items of ``found``: then it holds events and LineErrors only.

    Each slow line is judged in a worker thread unless it is small
    (:data:`INLINE_SLOW_LINE_BYTES`), and replaced by its verdict in place, so
    a call cancelled meanwhile can be made again and goes on where it stopped.
    Returns ``found``.
    """
    if not found.bad_lines:  # events only
        return cast("FeedResult[Judged]", found)
    for index, item in enumerate(found):
        if type(item) is SlowLine:
            if len(item.line) <= INLINE_SLOW_LINE_BYTES:
                verdict = item.judge()
            else:
                verdict = await anyio.to_thread.run_sync(item.judge)
            found[index] = verdict
            if type(verdict) is not LineError:
                found.bad_lines -= 1
    return cast("FeedResult[Judged]", found)


async def parse_ndjson_stream(
    source: ByteSource,
    *,
    on_error: ErrorHandler | None = None,
    strict: bool = False,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> AsyncGenerator[ParsedEvent, None]:
    """Yield the events of an NDJSON byte stream as they arrive.

    Bad lines never stop the stream: each goes to ``on_error`` (a
    :class:`LineError`) if given, or is logged on the ``enclave_stream``
    logger. With ``strict=True`` the first bad line raises
    :class:`NdjsonParseError` instead. Lines longer than ``max_line_bytes`` are
    reported and skipped without being buffered.

    The source is closed when the iterator ends, fails, is cancelled or is
    closed early. For a deterministic close after ``break``, wrap the iterator
    in ``contextlib.aclosing``::

        async with aclosing(parse_ndjson_stream(response.aiter_bytes())) as events:
            async for event in events:
                if event.type == "final":
                    break
    """
    parser = NdjsonStreamParser(max_line_bytes=max_line_bytes, defer_slow_lines=True)
    chunks = iter_chunks(source)
    try:
        ended = False
        while not ended:
            async for chunk in chunks:
                found = parser.feed(chunk)
                if found:
                    break
            else:
                found = parser.flush()
                ended = True
            if not found.bad_lines:  # the usual chunk: no type checks
                for event in found:
                    yield event  # type: ignore[misc]  # no bad lines: events only
                continue
            for item in await settle(found):
                if isinstance(item, LineError):
                    report_line_error(item, on_error, strict)
                else:
                    yield item
    finally:
        await chunks.aclose()
        await aclose_source(source)


async def serialize_ndjson_stream(
    events: Iterable[ParsedEvent | Mapping[str, Any]]
    | AsyncIterable[ParsedEvent | Mapping[str, Any]],
) -> AsyncGenerator[bytes, None]:
    """Yield one ``\\n``-terminated line per event, from a sync or async iterable.

    Ready to be the body of a Starlette ``StreamingResponse`` or to be written
    to an aiohttp ``StreamResponse``. Each event is validated first; an invalid
    one raises :class:`~enclave_stream.EventValidationError`.
    """
    if isinstance(events, AsyncIterable):
        try:
            async for event in events:
                yield encode_event(event) + b"\n"
        finally:
            await aclose_source(events)
    else:
        for event in events:
            yield encode_event(event) + b"\n"


class _EventReceiveStream(ObjectReceiveStream[ParsedEvent]):
    """What :func:`create_ndjson_parse_stream` returns."""

    def __init__(
        self,
        transport: ByteReceiveStream,
        parser: NdjsonStreamParser[Item],
        on_error: ErrorHandler | None,
        strict: bool,
    ) -> None:
        self._transport = transport
        self._parser = parser
        self._on_error = on_error
        self._strict = strict
        self._ready: FeedResult[Item] = FeedResult(0)
        self._next = 0  # the next item of _ready to hand out
        self._ended = False

    async def receive(self) -> ParsedEvent:
        """The next event; ``anyio.EndOfStream`` when the byte stream has ended."""
        while True:
            if self._next == 0:
                await settle(self._ready)  # cancelled, the next call goes on with it
            while self._next < len(self._ready):
                item = self._ready[self._next]
                # Moved on first, so that a strict error (or a raising on_error)
                # is reported once and the next receive() goes on with the next line.
                self._next += 1
                if type(item) is LineError:
                    report_line_error(item, self._on_error, self._strict)
                else:
                    return item  # type: ignore[return-value]
            if self._ended:
                raise anyio.EndOfStream
            self._next = 0
            try:
                chunk = await self._transport.receive()
            except anyio.EndOfStream:
                self._ended = True
                self._ready = self._parser.flush()
            else:
                self._ready = self._parser.feed(chunk)

    async def aclose(self) -> None:
        """Close the underlying byte stream."""
        await self._transport.aclose()


class _EventSendStream(ObjectSendStream[ParsedEvent]):
    """What :func:`create_ndjson_serialize_stream` returns."""

    def __init__(self, transport: ByteSendStream) -> None:
        self._transport = transport

    async def send(self, item: ParsedEvent) -> None:
        """Validate, encode and write one event followed by ``\\n``."""
        await self._transport.send(encode_event(item) + b"\n")

    async def aclose(self) -> None:
        """Close the underlying byte stream."""
        await self._transport.aclose()


def create_ndjson_parse_stream(
    transport: ByteReceiveStream,
    *,
    on_error: ErrorHandler | None = None,
    strict: bool = False,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> ObjectReceiveStream[ParsedEvent]:
    """Wrap a byte stream as an anyio object stream of events (``createNdjsonParseStream``).

    ``receive()`` returns the next event and raises ``anyio.EndOfStream``
    after the last one; ``aclose()`` closes the byte stream. Bad lines are
    handled as in :func:`parse_ndjson_stream`.
    """
    parser = NdjsonStreamParser(max_line_bytes=max_line_bytes, defer_slow_lines=True)
    return _EventReceiveStream(transport, parser, on_error, strict)


def create_ndjson_serialize_stream(transport: ByteSendStream) -> ObjectSendStream[ParsedEvent]:
    """Wrap a byte stream as an anyio object stream that writes each event sent as one line.

    The serialize ``TransformStream``: ``send()`` validates and encodes an
    event and writes it followed by ``\\n``; ``aclose()`` closes the byte stream.
    """
    return _EventSendStream(transport)
