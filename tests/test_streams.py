"""The anyio adapters, on asyncio and trio: sources, errors, early close, object streams."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import anyio
import pytest
from anyio.abc import (
    ByteReceiveStream,
    ByteSendStream,
    ObjectReceiveStream,
    ObjectSendStream,
    SocketAttribute,
)
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.memory import MemoryObjectSendStream

from enclave_stream import (
    EventValidationError,
    LineError,
    NdjsonParseError,
    NdjsonStreamParser,
    ParsedEvent,
    StdoutEvent,
    ToolCallEvent,
    serialize_event,
)
from enclave_stream.events import StdoutPayload, ToolCallPayload
from enclave_stream.streams import (
    create_ndjson_parse_stream,
    create_ndjson_serialize_stream,
    parse_ndjson_stream,
    serialize_ndjson_stream,
    settle,
)
from tests.clock import on_virtual_clock

pytestmark = pytest.mark.anyio

SID = "s_1"


def stdout(seq: int, chunk: str = "hi") -> StdoutEvent:
    return StdoutEvent(session_id=SID, seq=seq, payload=StdoutPayload(chunk))


EVENTS: list[ParsedEvent] = [
    stdout(1, "héllo 😀"),
    ToolCallEvent(
        session_id=SID, seq=2, payload=ToolCallPayload("c_1", "t", {"a": [1.5, None, "\u2028"]})
    ),
    stdout(3, "bye"),
]
LINES = [serialize_event(e).encode() for e in EVENTS]
# good, bad (json), good, blank, bad (validation), good -- no trailing newline
MIXED = b"\n".join([LINES[0], b"{oops", LINES[1], b"", b"[1]", LINES[2]])
MIXED_ERRORS = [
    (2, "json", None, len(LINES[0]) + 1),
    (5, "validation", "$", len(LINES[0]) + len(LINES[1]) + 9),
]


def pieces(data: bytes, size: int = 5) -> list[bytes]:
    """Awkward chunks: they split lines and multi-byte characters."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def error_tuples(errors: Iterable[LineError]) -> list[tuple[Any, ...]]:
    return [(e.line, e.kind, e.path, e.offset) for e in errors]


class Source:
    """An async generator source that records whether its ``finally`` ran.

    ``cleanup_done`` is set only after an ``await`` in the ``finally`` block,
    the way closing an HTTP response or a client awaits.
    """

    def __init__(self, chunks: list[bytes], *, hang: bool = False) -> None:
        self.chunks = chunks
        self.hang = hang
        self.closed = False
        self.cleanup_done = False
        self.served = 0

    async def __call__(self) -> AsyncIterator[bytes]:
        try:
            for chunk in self.chunks:
                self.served += 1
                yield chunk
            if self.hang:
                await anyio.sleep_forever()
        finally:
            self.closed = True
            await anyio.lowlevel.checkpoint()
            self.cleanup_done = True


class RecordingByteStream(ByteReceiveStream):
    """A ByteReceiveStream over a list of chunks that records ``aclose``."""

    def __init__(self, chunks: list[bytes], *, hang: bool = False) -> None:
        self._chunks = list(chunks)
        self._hang = hang
        self.aclose_calls = 0

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self.aclose_calls:
            raise anyio.ClosedResourceError
        await anyio.lowlevel.checkpoint()
        if self._chunks:
            return self._chunks.pop(0)
        if self._hang:
            await anyio.sleep_forever()
        raise anyio.EndOfStream

    async def aclose(self) -> None:
        self.aclose_calls += 1


class MemoryByteSendStream(ByteSendStream):
    """A ByteSendStream writing into a memory object stream of bytes."""

    def __init__(self, inner: MemoryObjectSendStream[bytes]) -> None:
        self._inner = inner
        self.sent: list[bytes] = []

    async def send(self, item: bytes) -> None:
        self.sent.append(item)
        await self._inner.send(item)

    async def aclose(self) -> None:
        await self._inner.aclose()


@contextlib.asynccontextmanager
async def memory_byte_pipe(
    size: int = 100,
) -> AsyncIterator[tuple[MemoryByteSendStream, BufferedByteReceiveStream]]:
    send, receive = anyio.create_memory_object_stream[bytes](size)
    async with send, receive:
        yield MemoryByteSendStream(send), BufferedByteReceiveStream(receive)


async def drain(
    iterator: AsyncIterator[Any], out: list[Any], each: Callable[[Any], object] | None = None
) -> None:
    """Append each item to ``out`` (kept if the iterator fails half-way); always close it."""
    async with contextlib.aclosing(iterator) as items:  # type: ignore[type-var]
        async for item in items:
            out.append(item)
            if each is not None:
                each(item)


async def collect(
    source: Any, **kwargs: Any
) -> tuple[list[ParsedEvent | LineError], list[ParsedEvent]]:
    """Run parse_ndjson_stream with on_error; return the interleaved items and the events."""
    items: list[ParsedEvent | LineError] = []
    events: list[ParsedEvent] = []

    def on_error(error: LineError) -> None:
        items.append(error)

    async with contextlib.aclosing(parse_ndjson_stream(source, on_error=on_error, **kwargs)) as it:  # type: ignore[type-var]
        async for event in it:
            items.append(event)
            events.append(event)
    return items, events


# --- sources --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 5, 64 * 1024])
async def test_async_generator_source(size: int) -> None:
    source = Source(pieces(MIXED, size))
    items, events = await collect(source())
    assert events == EVENTS
    assert error_tuples(i for i in items if isinstance(i, LineError)) == MIXED_ERRORS
    # errors reach on_error in stream order, interleaved with the events
    assert ["X" if isinstance(i, LineError) else "E" for i in items] == list("EXEXE")
    assert source.closed


async def test_bytearray_and_empty_chunks() -> None:
    chunks = [bytearray(c) for c in pieces(MIXED, 3)]
    chunks.insert(1, bytearray())
    chunks.append(bytearray())
    _, events = await collect(Source(chunks)())  # type: ignore[arg-type]
    assert events == EVENTS


async def test_memory_object_stream_source() -> None:
    send, receive = anyio.create_memory_object_stream[bytes](100)
    async with send, receive:
        for chunk in pieces(MIXED, 7):
            await send.send(chunk)
        await send.aclose()
        items, events = await collect(receive)
        assert events == EVENTS
        assert error_tuples(i for i in items if isinstance(i, LineError)) == MIXED_ERRORS
        with pytest.raises(anyio.ClosedResourceError):  # the source was closed at the end
            receive.receive_nowait()


async def test_memory_object_stream_fed_concurrently() -> None:
    send, receive = anyio.create_memory_object_stream[bytes](0)  # no buffer: backpressure
    events: list[ParsedEvent] = []

    async def produce(send: MemoryObjectSendStream[bytes]) -> None:
        async with send:
            for chunk in pieces(MIXED, 2):
                await send.send(chunk)

    async with anyio.create_task_group() as tg, receive:
        tg.start_soon(produce, send)
        await drain(parse_ndjson_stream(receive, on_error=lambda e: None), events)
    assert events == EVENTS


async def test_byte_receive_stream_source() -> None:
    stream = RecordingByteStream(pieces(MIXED, 4))
    assert isinstance(stream, ByteReceiveStream)
    items, events = await collect(stream)
    assert events == EVENTS
    assert error_tuples(i for i in items if isinstance(i, LineError)) == MIXED_ERRORS
    assert stream.aclose_calls == 1


async def test_buffered_byte_receive_stream_source() -> None:
    send, receive = anyio.create_memory_object_stream[bytes](100)
    async with send, receive:
        for chunk in pieces(MIXED, 9):
            await send.send(chunk)
        await send.aclose()
        buffered = BufferedByteReceiveStream(receive)
        _, events = await collect(buffered)
        assert events == EVENTS


async def test_tcp_loopback_source() -> None:
    data = MIXED + b"\n" + LINES[0] + b"\n"
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(SocketAttribute.local_port)

        async def serve() -> None:
            inner = listener.listeners[0]
            async with await inner.accept() as conn:  # type: ignore[attr-defined]
                for chunk in pieces(data, 11):
                    await conn.send(chunk)

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            client = await anyio.connect_tcp("127.0.0.1", port)
            items, events = await collect(client)
    assert events == [*EVENTS, EVENTS[0]]
    assert error_tuples(i for i in items if isinstance(i, LineError)) == MIXED_ERRORS


# --- bad lines ----------------------------------------------------------------------------


async def test_strict_raises_at_the_first_bad_line_and_closes_the_source() -> None:
    source = Source(pieces(MIXED, 3))
    events: list[ParsedEvent] = []
    with pytest.raises(NdjsonParseError) as info:
        await drain(parse_ndjson_stream(source(), strict=True), events)
    assert events == EVENTS[:1]
    error = info.value.error
    assert (error.line, error.kind, error.content) == (2, "json", "{oops")
    assert str(info.value).startswith("line 2: JSON parse error")
    assert source.closed
    assert source.served < len(source.chunks)  # it stopped reading there


async def test_strict_ignores_on_error_and_closes_a_byte_stream() -> None:
    stream = RecordingByteStream([LINES[0] + b"\n[1]\n" + LINES[1] + b"\n"])
    seen: list[LineError] = []
    with pytest.raises(NdjsonParseError) as info:
        async for _ in parse_ndjson_stream(stream, strict=True, on_error=seen.append):
            pass
    assert (info.value.error.line, info.value.error.path) == (2, "$")
    assert seen == []
    assert stream.aclose_calls == 1


async def test_bad_lines_are_logged_without_on_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="enclave_stream")
    events = [e async for e in parse_ndjson_stream(Source(pieces(MIXED, 6))())]
    assert events == EVENTS
    records = [r for r in caplog.records if r.name == "enclave_stream"]
    assert len(records) == 2
    assert all(r.levelno == logging.WARNING for r in records)
    assert "line 2" in records[0].getMessage()
    assert "json" in records[0].getMessage()
    assert "line 5" in records[1].getMessage()
    assert "at $" in records[1].getMessage()


async def test_line_too_long_is_reported_and_parsing_resumes() -> None:
    data = LINES[0] + b"\n" + b"z" * 5000 + b"\n" + LINES[1] + b"\n"
    items, events = await collect(Source(pieces(data, 100))(), max_line_bytes=1000)
    assert events == EVENTS[:2]
    assert error_tuples(i for i in items if isinstance(i, LineError)) == [
        (2, "line_too_long", None, len(LINES[0]) + 1)
    ]


# --- closing early ---------------------------------------------------------------------


async def test_break_then_aclose_closes_the_source() -> None:
    source = Source([LINES[0] + b"\n", LINES[1] + b"\n", LINES[2] + b"\n"])
    iterator = parse_ndjson_stream(source())
    async for event in iterator:
        assert event == EVENTS[0]
        break
    assert not source.closed
    await iterator.aclose()  # type: ignore[attr-defined]
    assert source.closed
    assert source.served == 1


async def test_aclosing_closes_the_source_on_break() -> None:
    source = Source([LINES[0] + b"\n", LINES[1] + b"\n"], hang=True)
    async with contextlib.aclosing(parse_ndjson_stream(source())) as events:  # type: ignore[type-var]
        async for event in events:
            if event.seq == 2:
                break
    assert source.closed


async def test_aclosing_closes_a_byte_stream_on_break() -> None:
    stream = RecordingByteStream([b"\n".join(LINES) + b"\n"], hang=True)
    async with contextlib.aclosing(parse_ndjson_stream(stream)) as events:  # type: ignore[type-var]
        async for _ in events:
            break
    assert stream.aclose_calls == 1


async def test_cancellation_closes_the_source() -> None:
    source = Source([LINES[0] + b"\n"], hang=True)  # then waits forever for more
    received: list[ParsedEvent] = []
    with anyio.CancelScope() as scope:
        async with contextlib.aclosing(parse_ndjson_stream(source())) as events:  # type: ignore[type-var]
            async for event in events:
                received.append(event)
                scope.cancel()
    assert scope.cancelled_caught
    assert received == EVENTS[:1]
    assert source.closed


@on_virtual_clock()
async def test_timeout_closes_a_byte_stream() -> None:
    stream = RecordingByteStream([LINES[0] + b"\n"], hang=True)
    received: list[ParsedEvent] = []
    with anyio.move_on_after(0.05) as scope:
        await drain(parse_ndjson_stream(stream), received)
    assert scope.cancelled_caught
    assert received == EVENTS[:1]
    assert stream.aclose_calls == 1


async def test_consumer_exception_closes_the_source() -> None:
    source = Source([LINES[0] + b"\n", LINES[1] + b"\n"], hang=True)
    with pytest.raises(ZeroDivisionError):
        await drain(parse_ndjson_stream(source()), [], each=lambda _: 1 / 0)
    assert source.closed


async def test_source_cleanup_completes_when_exhausted() -> None:
    source = Source(pieces(MIXED, 50))
    await collect(source())
    assert source.cleanup_done


async def test_early_close_lets_the_source_finish_its_cleanup() -> None:
    """Regression (fixed): on ``break`` + ``aclose`` (or ``aclosing``) the source is
    closed inside an already cancelled scope (``aclose_source(forcefully=True)``), so
    the first ``await`` of its cleanup is cancelled: an ``async with
    client.stream(...)`` source never closes its response.
    """
    source = Source([LINES[0] + b"\n", LINES[1] + b"\n"], hang=True)
    async with contextlib.aclosing(parse_ndjson_stream(source())) as events:  # type: ignore[type-var]
        async for _ in events:
            break
    assert source.closed
    assert source.cleanup_done


async def test_strict_error_lets_the_source_finish_its_cleanup() -> None:
    """Regression (fixed): same as above when ``strict=True`` raises."""
    source = Source(pieces(MIXED, 3))
    with pytest.raises(NdjsonParseError):
        await drain(parse_ndjson_stream(source(), strict=True), [])
    assert source.closed
    assert source.cleanup_done


async def test_invalid_event_lets_the_serialize_source_finish_its_cleanup() -> None:
    """Regression (fixed): serialize_ndjson_stream closes its event source the same way."""
    done = False

    async def events() -> AsyncIterator[ParsedEvent]:
        nonlocal done
        try:
            yield stdout(-1)
        finally:
            await anyio.lowlevel.checkpoint()
            done = True

    with pytest.raises(EventValidationError):
        await drain(serialize_ndjson_stream(events()), [])
    assert done


# --- serialization ---------------------------------------------------------------------


async def test_serialize_from_a_sync_list() -> None:
    chunks = [chunk async for chunk in serialize_ndjson_stream(EVENTS)]
    assert chunks == [line + b"\n" for line in LINES]
    assert all(chunk.count(b"\n") == 1 and chunk.endswith(b"\n") for chunk in chunks)


async def test_serialize_from_an_async_generator_and_mappings() -> None:
    closed = False

    async def events() -> AsyncIterator[Any]:
        nonlocal closed
        try:
            yield EVENTS[0]
            await anyio.lowlevel.checkpoint()
            yield {
                "protocolVersion": 2,
                "sessionId": SID,
                "seq": 9,
                "type": "stdout",
                "payload": {"chunk": "m"},
            }
        finally:
            closed = True

    chunks = [chunk async for chunk in serialize_ndjson_stream(events())]
    assert chunks == [LINES[0] + b"\n", serialize_event(stdout(9, "m")).encode() + b"\n"]
    assert closed


async def test_serialize_invalid_event_raises() -> None:
    bad = stdout(-1)
    out: list[bytes] = []
    with pytest.raises(EventValidationError) as info:
        await drain(serialize_ndjson_stream([EVENTS[0], bad, EVENTS[1]]), out)
    assert info.value.path == "$.seq"
    assert out == [LINES[0] + b"\n"]

    closed = False

    async def events() -> AsyncIterator[ParsedEvent]:
        nonlocal closed
        try:
            yield EVENTS[0]
            yield bad
            yield EVENTS[1]
        finally:
            closed = True

    out.clear()
    with pytest.raises(EventValidationError):
        await drain(serialize_ndjson_stream(events()), out)
    assert out == [LINES[0] + b"\n"]
    assert closed


async def test_serialize_then_parse() -> None:
    _, events = await collect(serialize_ndjson_stream(EVENTS))
    assert events == EVENTS


# --- object streams -----------------------------------------------------------------------


async def test_object_streams_round_trip_through_memory() -> None:
    async with memory_byte_pipe() as (byte_send, byte_receive):
        sender = create_ndjson_serialize_stream(byte_send)
        assert isinstance(sender, ObjectSendStream)
        for event in EVENTS:
            await sender.send(event)
        await byte_send.send(b"{not json}\n")  # a bad line written by someone else
        await sender.send(EVENTS[0])
        await sender.aclose()
        assert byte_send.sent[: len(EVENTS)] == [line + b"\n" for line in LINES]

        errors: list[LineError] = []
        receiver = create_ndjson_parse_stream(byte_receive, on_error=errors.append)
        assert isinstance(receiver, ObjectReceiveStream)
        received = [await receiver.receive() for _ in range(len(EVENTS) + 1)]
        assert received == [*EVENTS, EVENTS[0]]
        with pytest.raises(anyio.EndOfStream):
            await receiver.receive()
        with pytest.raises(anyio.EndOfStream):  # and it stays ended
            await receiver.receive()
        assert [(e.line, e.kind) for e in errors] == [(4, "json")]
        await receiver.aclose()


async def test_object_receive_stream_hands_out_a_last_line_without_newline_once() -> None:
    receiver = create_ndjson_parse_stream(RecordingByteStream([LINES[0] + b"\n" + LINES[1]]))
    assert [await receiver.receive(), await receiver.receive()] == EVENTS[:2]
    for _ in range(2):  # and it stays ended
        with pytest.raises(anyio.EndOfStream):
            await receiver.receive()


@pytest.mark.parametrize("chunk_size", [5, len(MIXED)])
async def test_object_receive_stream_goes_on_after_a_strict_error(chunk_size: int) -> None:
    """Regression (fixed): after a strict error, every later receive() raised the same one."""
    stream = RecordingByteStream(pieces(MIXED, chunk_size))
    receiver = create_ndjson_parse_stream(stream, strict=True)
    seen: list[object] = []
    for _ in range(10):  # bounded: the bug repeated the first error forever
        try:
            seen.append(await receiver.receive())
        except NdjsonParseError as error:
            seen.append(error.error.line)
        except anyio.EndOfStream:
            break
    assert seen == [EVENTS[0], 2, EVENTS[1], 5, EVENTS[2]]
    await receiver.aclose()


async def test_object_receive_stream_goes_on_after_on_error_raises() -> None:
    def refuse(error: LineError) -> None:
        raise ValueError(error.line)

    receiver = create_ndjson_parse_stream(RecordingByteStream([MIXED]), on_error=refuse)
    assert await receiver.receive() == EVENTS[0]
    with pytest.raises(ValueError, match="2"):
        await receiver.receive()
    assert await receiver.receive() == EVENTS[1]
    await receiver.aclose()


async def test_object_receive_stream_is_async_iterable_and_strict() -> None:
    stream = RecordingByteStream(pieces(MIXED, 5))
    receiver = create_ndjson_parse_stream(stream, strict=True)
    assert await receiver.receive() == EVENTS[0]
    with pytest.raises(NdjsonParseError) as info:
        await receiver.receive()
    assert info.value.error.line == 2
    await receiver.aclose()
    assert stream.aclose_calls == 1

    errors: list[LineError] = []
    async with create_ndjson_parse_stream(
        RecordingByteStream(pieces(MIXED, 5)), on_error=errors.append
    ) as receiver:
        assert [event async for event in receiver] == EVENTS
    assert error_tuples(errors) == MIXED_ERRORS


async def test_object_send_stream_refuses_invalid_events() -> None:
    async with memory_byte_pipe() as (byte_send, _):
        sender = create_ndjson_serialize_stream(byte_send)
        with pytest.raises(EventValidationError):
            await sender.send(stdout(1, 5))  # type: ignore[arg-type]
        assert byte_send.sent == []  # nothing reached the wire


async def test_object_streams_over_tcp_loopback() -> None:
    errors: list[LineError] = []
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(SocketAttribute.local_port)

        async def serve() -> None:
            async with await listener.listeners[0].accept() as conn:  # type: ignore[attr-defined]
                sender = create_ndjson_serialize_stream(conn)
                for event in EVENTS:
                    await sender.send(event)
                await conn.send(b"[]\n")
                await sender.send(EVENTS[2])

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            async with create_ndjson_parse_stream(
                await anyio.connect_tcp("127.0.0.1", port), on_error=errors.append
            ) as receiver:
                received = [event async for event in receiver]
    assert received == [*EVENTS, EVENTS[2]]
    assert [(e.line, e.kind, e.path) for e in errors] == [(4, "validation", "$")]


async def test_object_stream_backpressure_with_small_buffer() -> None:
    send, receive = anyio.create_memory_object_stream[bytes](1)
    async with send, receive:
        byte_send = MemoryByteSendStream(send)
        sender = create_ndjson_serialize_stream(byte_send)
        receiver = create_ndjson_parse_stream(BufferedByteReceiveStream(receive))
        got: list[ParsedEvent] = []

        async def produce() -> None:
            async with sender:
                for i in range(50):
                    await sender.send(stdout(i))

        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            got.extend([event async for event in receiver])
    assert [e.seq for e in got] == list(range(50))


def test_adapters_are_exported_from_the_package() -> None:
    import enclave_stream

    assert enclave_stream.parse_ndjson_stream is parse_ndjson_stream
    assert enclave_stream.serialize_ndjson_stream is serialize_ndjson_stream
    assert enclave_stream.create_ndjson_parse_stream is create_ndjson_parse_stream
    assert enclave_stream.create_ndjson_serialize_stream is create_ndjson_serialize_stream
    for name in ("parse_ndjson_stream", "serialize_ndjson_stream", "NdjsonParseError"):
        assert name in enclave_stream.__all__


@pytest.mark.parametrize("function", [parse_ndjson_stream, serialize_ndjson_stream])
def test_stream_generators_are_typed_as_async_generators(function: Any) -> None:
    """Regression (fixed): annotated ``-> AsyncIterator[...]``, so the documented
    ``async with aclosing(parse_ndjson_stream(...))`` and ``.aclose()`` fail
    ``mypy --strict`` (type-var / attr-defined), although they are async generators.
    """
    import collections.abc
    import inspect
    import typing

    assert inspect.isasyncgenfunction(function)
    hint = typing.get_type_hints(function)["return"]
    assert typing.get_origin(hint) is collections.abc.AsyncGenerator


@pytest.mark.parametrize("size", [7, 64 * 1024])
async def test_object_receive_stream_judges_lines_the_fast_path_refused(size: int) -> None:
    """``2.0`` is an integer to JavaScript: such lines are judged (big ones in a thread)."""
    small = LINES[0].replace(b'"seq":1', b'"seq":1.0')
    big = serialize_event(stdout(2, "x" * 5000)).encode().replace(b'"seq":2', b'"seq":2.0')
    bad = LINES[2].replace(b'"s_1"', b'"x_1"').replace(b'"seq":3', b'"seq":3.0')
    data = b"\n".join([small, b"\xc2\xa0", big, bad, LINES[2]]) + b"\n"
    errors: list[LineError] = []
    async with create_ndjson_parse_stream(
        RecordingByteStream(pieces(data, size)), on_error=errors.append
    ) as receiver:
        received = [event async for event in receiver]
    assert [serialize_event(e) for e in received] == [
        serialize_event(e) for e in [EVENTS[0], stdout(2, "x" * 5000), EVENTS[2]]
    ]
    assert [(e.line, e.kind, e.path) for e in errors] == [(4, "validation", "$.sessionId")]


async def test_settle_judges_deferred_lines_in_place() -> None:
    """What the async layers do with a FeedResult: events and LineErrors, in stream order."""
    small = LINES[0].replace(b'"seq":1', b'"seq":1.0')
    big = serialize_event(stdout(2, "x" * 5000)).encode().replace(b'"seq":2', b'"seq":2.0')
    found = NdjsonStreamParser(defer_slow_lines=True).feed(
        b"\n".join([small, b"{oops", big, LINES[2]]) + b"\n"
    )
    assert [type(item).__name__ for item in found] == ["SlowLine"] * 3 + ["StdoutEvent"]
    assert found.bad_lines == 3
    assert await settle(found) is found
    assert [serialize_event(e) for e in found if not isinstance(e, LineError)] == [
        serialize_event(e) for e in [EVENTS[0], stdout(2, "x" * 5000), EVENTS[2]]
    ]
    assert [(e.line, e.kind) for e in found if isinstance(e, LineError)] == [(2, "json")]
    assert found.bad_lines == 1  # the items that are not events
    assert found.line_numbers() == [1, 2, 3, 4]
