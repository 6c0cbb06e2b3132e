"""Costly lines: refused lines judged off the event loop; big dense lines refused.

Judging such a line follows JavaScript's JSON rules in pure Python, which can
cost a thousand times the CPU per byte of a valid line. The async parsers judge
a big one in a worker thread: another task keeps running meanwhile. Whether it
ran is observed, not timed: a task that counts its turns does not get one while
the loop is held.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from enclave_stream import (
    EncryptedEnvelope,
    EncryptedSession,
    FinalEvent,
    LineError,
    NdjsonStreamParser,
    StdoutEvent,
    parse_line,
    parse_lines,
    serialize_event,
)
from enclave_stream.codec import BYTES_PER_CONTAINER
from enclave_stream.crypto import SessionRole, encrypt, to_base64
from enclave_stream.crypto.streams import INLINE_ENVELOPE_BYTES, decrypt_events
from enclave_stream.events import EncryptedEnvelopePayload, FinalPayload, StdoutPayload
from enclave_stream.ndjson import SlowLine
from enclave_stream.reconnect import ReconnectionConfig, open_event_stream
from enclave_stream.streams import INLINE_SLOW_LINE_BYTES, parse_ndjson_stream

SID = "s_slow"


def stdout(seq: int, chunk: str = "x") -> bytes:
    return serialize_event(
        StdoutEvent(session_id=SID, seq=seq, payload=StdoutPayload(chunk))
    ).encode()


def slow_stdout(seq: int, size: int, session_id: str = SID) -> bytes:
    """A stdout line of about ``size`` bytes that only the slow path judges.

    ``"seq":2.0`` is an integer to JavaScript but a float to msgspec, on every
    Python (unlike depth, whose limit for msgspec moves with the interpreter).
    """
    return (
        f'{{"protocolVersion":2,"sessionId":"{session_id}","seq":{seq}.0,"type":"stdout",'
        f'"payload":{{"chunk":"{"x" * size}"}}}}'
    ).encode()


def wire(item: Any) -> Any:
    """Events (or errors) compared as their wire text."""
    return item if isinstance(item, LineError) else serialize_event(item)


BIG_VALID = slow_stdout(2, 4000)
BIG_BAD = slow_stdout(2, 4000, session_id="x_bad")
SMALL_BAD = stdout(2).replace(b'"seq":2', b'"seq":"2"')
assert len(BIG_VALID) > INLINE_SLOW_LINE_BYTES >= len(SMALL_BAD)


def test_the_sans_io_parser_hands_refused_lines_over_in_order() -> None:
    parser = NdjsonStreamParser(defer_slow_lines=True)
    document = b"\n".join([stdout(1), BIG_VALID, b"   ", SMALL_BAD, stdout(3), b"{oops"])
    items: list[Any] = [*parser.feed(document[:100]), *parser.feed(document[100:])]
    items += parser.flush()
    kinds = [type(item).__name__ for item in items]
    assert kinds == ["StdoutEvent", "SlowLine", "SlowLine", "StdoutEvent", "SlowLine"]
    assert [item.number for item in items if isinstance(item, SlowLine)] == [2, 4, 6]
    verdicts = [item.judge() if isinstance(item, SlowLine) else item for item in items]
    inline: list[Any] = []
    reference = NdjsonStreamParser(inline.append, inline.append)
    reference.feed(document)
    reference.flush()
    assert list(map(wire, verdicts)) == list(map(wire, inline))
    assert parser.line_number == reference.line_number == 6


def test_a_line_blank_to_javascript_is_never_deferred() -> None:
    blank = b"\xc2\xa0 \xe3\x80\x80"  # NBSP, space, U+3000: blank to JavaScript
    parser = NdjsonStreamParser(defer_slow_lines=True)
    assert parser.feed(blank + b"\n" + blank) == []
    assert not parser.has_pending_data()
    assert parser.flush() == []
    assert parser.line_number == 1  # a blank last line is no line at all
    judged = SlowLine(blank, 1, 0).judge()  # built by hand: reported as parse_line does
    assert isinstance(judged, LineError)
    assert (judged.kind, judged.error) == ("empty", "Empty line")


@asynccontextmanager
async def turn_counter() -> AsyncIterator[list[int]]:
    """A task that counts the turns the event loop gives it."""
    turns = [0]

    async def count() -> None:
        while True:
            turns[0] += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(count)
        yield turns
        tg.cancel_scope.cancel()


async def turns_while_judged(line: bytes) -> tuple[int, list[Any]]:
    """Turns another task got between the line's arrival and its verdict."""
    marks: list[int] = []
    received: list[Any] = []
    async with turn_counter() as turns:

        async def source() -> AsyncIterator[bytes]:
            yield stdout(1) + b"\n"
            await anyio.lowlevel.checkpoint()
            marks.append(turns[0])
            yield line + b"\n" + stdout(3) + b"\n"

        async for event in parse_ndjson_stream(source(), on_error=received.append):
            received.append(event)
            if event.seq == 3:
                marks.append(turns[0])
    return marks[1] - marks[0], received


@pytest.mark.anyio
async def test_a_big_refused_line_is_judged_off_the_event_loop() -> None:
    turns, received = await turns_while_judged(BIG_VALID)
    assert turns > 0
    assert [getattr(item, "seq", None) for item in received] == [1, 2, 3]
    assert wire(received[1]) == wire(parse_line(BIG_VALID).data)  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_a_big_bad_line_is_reported_from_off_the_loop() -> None:
    turns, received = await turns_while_judged(BIG_BAD)
    assert turns > 0
    assert isinstance(received[1], LineError)
    assert received[1].path == "$.sessionId"
    assert received[1].line == 2


@pytest.mark.anyio
async def test_a_small_refused_line_is_judged_inline() -> None:
    """The counter does detect a held loop: a small line costs no thread hop."""
    turns, received = await turns_while_judged(SMALL_BAD)
    assert turns == 0
    assert isinstance(received[1], LineError)


async def client_turns(first: bytes, rest: bytes, session: Any = None) -> tuple[list[int], int]:
    """What ``open_event_stream`` delivers from one connection sending ``first``, then ``rest``.

    Returns the seqs and the turns another task got between the arrival of
    ``rest`` and the delivery of seq 2.
    """
    marks: list[int] = []
    seqs: list[int] = []
    async with turn_counter() as turns:

        @asynccontextmanager
        async def connect(from_seq: int | None) -> AsyncIterator[AsyncIterator[bytes]]:
            async def body() -> AsyncIterator[bytes]:
                yield first + b"\n"
                await anyio.lowlevel.checkpoint()
                marks.append(turns[0])
                yield rest

            yield body()

        config = ReconnectionConfig(max_retries=0)
        async with open_event_stream(connect, config=config, session=session) as events:
            async for event in events:
                seqs.append(event.seq)
                if event.seq == 2:
                    marks.append(turns[0])
    return seqs, marks[1] - marks[0]


@pytest.mark.anyio
async def test_the_resumable_client_judges_big_lines_off_the_loop() -> None:
    final = (
        f'{{"protocolVersion":2,"sessionId":"{SID}","seq":3,"type":"final","payload":{{"ok":true}}}}'
    ).encode()
    seqs, turns = await client_turns(stdout(1), BIG_VALID + b"\n" + final + b"\n")
    assert seqs == [1, 2, 3]
    assert turns > 0


# --- the bound on arrays and objects in big lines --------------------------------------


def args_line(args: str) -> bytes:
    return (
        f'{{"protocolVersion":2,"sessionId":"{SID}","seq":2,"type":"tool_call",'
        f'"payload":{{"callId":"c_1","toolName":"t","args":{args}}}}}'
    ).encode()


def with_containers(size: int, containers: int) -> bytes:
    """A valid line of exactly ``size`` bytes holding exactly ``containers`` arrays/objects."""
    skeleton = args_line("[" + "[]," * (containers - 3) + '"' + '"]')  # payload + args: 2 more
    assert skeleton.count(b"[") + skeleton.count(b"{") == containers
    return skeleton.replace(b'""', b'"' + b"x" * (size - len(skeleton)) + b'"')


def test_a_big_line_dense_in_containers_is_refused_before_decoding() -> None:
    size = 256 * 1024
    at_bound = with_containers(size, size // BYTES_PER_CONTAINER)
    over = with_containers(size, size // BYTES_PER_CONTAINER + 1)
    assert len(at_bound) == len(over) == size
    assert parse_line(at_bound).success
    refused = parse_line(over)
    assert not refused.success
    assert refused.kind == "json"
    assert refused.error.startswith("JSON parse error: Too many arrays and objects")


@pytest.mark.parametrize("chunk", [1000, 64 * 1024, 1024 * 1024], ids=lambda n: f"chunks-{n}")
def test_every_parser_refuses_it_and_keeps_the_lines_around_it(chunk: int) -> None:
    over = with_containers(200 * 1024, 200 * 1024 // BYTES_PER_CONTAINER + 1)
    document = stdout(1) + b"\n" + over + b"\n" + stdout(3) + b"\n"
    events: list[Any] = []
    errors: list[LineError] = []
    parser = NdjsonStreamParser(events.append, errors.append)
    for start in range(0, len(document), chunk):
        parser.feed(document[start : start + chunk])
    parser.flush()
    assert [event.seq for event in events] == [1, 3]
    assert [(error.line, error.kind, error.offset) for error in errors] == [
        (2, "json", len(stdout(1)) + 1)
    ]
    whole = parse_lines(document)
    assert [event.seq for event in whole.events] == [1, 3]
    assert [error.error for error in whole.errors] == [errors[0].error]


def test_ordinary_big_json_is_well_within_the_bound() -> None:
    records = ",".join(f'{{"id":{n},"name":"user {n}","tags":["a","b"]}}' for n in range(30_000))
    line = args_line(f"[{records}]")
    assert len(line) > 1024 * 1024
    result = parse_line(line)
    assert result.success
    assert len(result.data.payload.args) == 30_000  # type: ignore[union-attr]


@pytest.mark.anyio
@pytest.mark.parametrize("newline", [b"\n", b""], ids=["ended", "last-line-unended"])
async def test_the_async_parser_bounds_the_last_line_too(newline: bytes) -> None:
    over = with_containers(200 * 1024, 200 * 1024 // BYTES_PER_CONTAINER + 1)

    async def source() -> AsyncIterator[bytes]:
        yield stdout(1) + b"\n"
        yield over + newline

    errors: list[LineError] = []
    events = [event async for event in parse_ndjson_stream(source(), on_error=errors.append)]
    assert [event.seq for event in events] == [1]
    assert [error.error.split(":")[1].strip() for error in errors] == [
        "Too many arrays and objects"
    ]


# --- envelopes: the inner event is judged like any line ------------------------------


C2S, S2C = bytes(range(32)), bytes(range(1, 33))


def _sessions() -> tuple[EncryptedSession, EncryptedSession]:
    server = EncryptedSession(SID, "k_1", SessionRole.SERVER, send_key=S2C, receive_key=C2S)
    client = EncryptedSession(SID, "k_1", SessionRole.CLIENT, send_key=C2S, receive_key=S2C)
    return server, client


BIG_INNER = slow_stdout(2, 20_000)


def big_envelope(server: EncryptedSession) -> EncryptedEnvelope:
    """An authentic envelope whose inner event only the slow path judges.

    ``seal`` writes canonical JSON, so the plaintext is encrypted directly with
    the server's sending key, under a nonce prefix of its own.
    """
    nonce = bytes(11) + b"\x01"
    ciphertext = encrypt(S2C, BIG_INNER, nonce)
    payload = EncryptedEnvelopePayload(
        kid="k_1", nonce_b64=to_base64(nonce), ciphertext_b64=to_base64(ciphertext)
    )
    return EncryptedEnvelope(session_id=SID, seq=2, payload=payload)


@pytest.mark.anyio
async def test_decrypt_events_opens_a_big_envelope_off_the_loop() -> None:
    server, client = _sessions()
    envelope = big_envelope(server)
    assert len(envelope.payload.ciphertext_b64) > INLINE_ENVELOPE_BYTES
    marks: list[int] = []
    async with turn_counter() as turns:

        async def source() -> AsyncIterator[Any]:
            yield server.seal(StdoutEvent(session_id=SID, seq=1, payload=StdoutPayload("x")))
            await anyio.lowlevel.checkpoint()
            marks.append(turns[0])
            yield envelope

        opened = []
        async for event in decrypt_events(source(), client):
            opened.append(event)
            marks.append(turns[0])
    assert [event.seq for event in opened] == [1, 2]
    assert marks[2] > marks[1]
    assert wire(opened[1]) == wire(parse_line(BIG_INNER).data)  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_the_resumable_client_opens_a_big_envelope_off_the_loop() -> None:
    server, client = _sessions()
    first = server.seal_line(StdoutEvent(session_id=SID, seq=1, payload=StdoutPayload("x")))
    big = serialize_event(big_envelope(server)).encode()
    final = server.seal_line(FinalEvent(session_id=SID, seq=3, payload=FinalPayload(ok=True)))
    seqs, turns = await client_turns(first, big + b"\n" + final + b"\n", session=client)
    assert seqs == [1, 2, 3]
    assert turns > 0
