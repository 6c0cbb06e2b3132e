"""anyio adapters: decrypt_events / encrypt_events on asyncio and trio."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from enclave_stream import FinalEvent, HeartbeatEvent, ParsedEvent, StdoutEvent, StreamEvent
from enclave_stream.crypto import EncryptedSession, SessionRole, decrypt_events, encrypt_events
from enclave_stream.errors import EnvelopeError, EnvelopeErrorReason
from enclave_stream.events import FinalPayload, HeartbeatPayload, StdoutPayload
from enclave_stream.streams import parse_ndjson_stream, serialize_ndjson_stream

pytestmark = pytest.mark.anyio

SESSION = "s_streams"
C2S, S2C = bytes(range(32)), bytes(range(50, 82))
R = EnvelopeErrorReason


def _sessions() -> tuple[EncryptedSession, EncryptedSession]:
    client = EncryptedSession(SESSION, "k_1", SessionRole.CLIENT, send_key=C2S, receive_key=S2C)
    server = EncryptedSession(SESSION, "k_1", SessionRole.SERVER, send_key=S2C, receive_key=C2S)
    return client, server


def _stdout(seq: int) -> StdoutEvent:
    return StdoutEvent(session_id=SESSION, seq=seq, payload=StdoutPayload(chunk=f"line {seq}"))


def _final(seq: int) -> FinalEvent:
    return FinalEvent(session_id=SESSION, seq=seq, payload=FinalPayload(ok=True))


class Source:
    """An async source that records whether it was closed, and how far it was read."""

    def __init__(self, items: list[Any], *, fail_after: int | None = None) -> None:
        self.items = items
        self.fail_after = fail_after
        self.closed = False
        self.taken = 0

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._gen()

    async def _gen(self) -> AsyncIterator[Any]:
        try:
            for item in self.items:
                if self.fail_after is not None and self.taken >= self.fail_after:
                    raise RuntimeError("source broke")
                self.taken += 1
                await anyio.lowlevel.checkpoint()
                yield item
        finally:
            self.closed = True


class ClosableSource(Source):
    """Like ``Source``, but ``aclose`` is on the object itself (as on a response stream)."""

    def __init__(self, items: list[Any]) -> None:
        super().__init__(items)
        self._iter: AsyncIterator[Any] | None = None

    def __aiter__(self) -> AsyncIterator[Any]:
        self._iter = self._gen()
        return self._iter

    async def aclose(self) -> None:
        if self._iter is not None:
            await self._iter.aclose()  # type: ignore[attr-defined]
        self.closed = True


async def _collect(iterator: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in iterator]


async def test_round_trip_sync_sources() -> None:
    client, server = _sessions()
    events: list[StreamEvent] = [_stdout(1), _stdout(2), _final(3)]
    envelopes = await _collect(encrypt_events(events, client))
    assert [e.seq for e in envelopes] == [1, 2, 3]
    assert await _collect(decrypt_events(envelopes, server)) == events


async def test_round_trip_async_sources() -> None:
    client, server = _sessions()
    events = [_stdout(1), _stdout(2), _final(3)]
    plain = Source(events)
    sealed = Source(await _collect(encrypt_events(plain, client)))
    assert plain.closed
    assert await _collect(decrypt_events(sealed, server)) == events
    assert sealed.closed


async def test_through_ndjson_bytes() -> None:
    """Server: events -> envelopes -> NDJSON; client: bytes -> envelopes -> events."""
    client, server = _sessions()
    events: list[StreamEvent] = [
        _stdout(1),
        HeartbeatEvent(
            session_id=SESSION, seq=2, payload=HeartbeatPayload(ts="2025-01-01T00:00:00Z")
        ),
        _final(3),
    ]
    lines = [line async for line in serialize_ndjson_stream(encrypt_events(events, server))]
    body = b"".join(lines)
    chunks = Source([body[i : i + 7] for i in range(0, len(body), 7)])
    opened = await _collect(decrypt_events(parse_ndjson_stream(chunks), client, require_final=True))
    assert opened == events
    assert chunks.closed


async def test_an_encrypted_response_body_is_serialize_of_encrypt_events() -> None:
    prefix = bytes(8)

    def sender() -> EncryptedSession:
        return EncryptedSession(
            SESSION, "k_1", SessionRole.SERVER, send_key=S2C, receive_key=C2S, nonce_prefix=prefix
        )

    events: list[StreamEvent] = [_stdout(1), _stdout(2), _final(3)]
    body = [
        line async for line in serialize_ndjson_stream(encrypt_events(Source(events), sender()))
    ]
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in body)
    client, _ = _sessions()
    opened = await _collect(decrypt_events(parse_ndjson_stream(Source([b"".join(body)])), client))
    assert opened == events
    from_list = [line async for line in serialize_ndjson_stream(encrypt_events(events, sender()))]
    assert from_list == body


async def test_plaintext_passes_through_only_when_allowed() -> None:
    client, server = _sessions()
    mixed: list[ParsedEvent] = [_stdout(1), client.seal(_stdout(2)), _stdout(3)]
    opened = await _collect(decrypt_events(mixed, server, require_encryption=False))
    assert opened == [_stdout(1), _stdout(2), _stdout(3)]


async def test_plaintext_refused_when_encryption_is_required() -> None:
    client, server = _sessions()
    source = Source([client.seal(_stdout(1)), _stdout(2), client.seal(_stdout(3))])
    seen: list[StreamEvent] = []

    async def consume() -> None:
        async for event in decrypt_events(source, server):
            seen.append(event)  # noqa: PERF401 - the events before the error matter

    with pytest.raises(EnvelopeError) as info:
        await consume()
    assert info.value.reason is R.PLAINTEXT_REFUSED
    assert seen == [_stdout(1)]
    assert source.closed
    assert source.taken == 2


async def test_a_refused_envelope_stops_the_stream_and_closes_the_source() -> None:
    client, server = _sessions()
    envelope = client.seal(_stdout(1))
    source = ClosableSource([envelope, envelope, client.seal(_stdout(2))])
    with pytest.raises(EnvelopeError) as info:
        await _collect(decrypt_events(source, server))
    assert info.value.reason is R.REPLAY
    assert source.closed


async def test_truncation_detected_when_final_is_required() -> None:
    client, server = _sessions()
    cut = [client.seal(_stdout(1)), client.seal(_stdout(2))]
    with pytest.raises(EnvelopeError) as info:
        await _collect(decrypt_events(Source(cut), server, require_final=True))
    assert info.value.reason is R.TRUNCATED
    _, fresh = _sessions()
    assert len(await _collect(decrypt_events(cut, fresh))) == 2  # not required: fine


async def test_early_break_closes_the_source() -> None:
    client, server = _sessions()
    source = Source([client.seal(_stdout(seq)) for seq in range(1, 10)])
    async with aclosing(decrypt_events(source, server)) as events:
        async for event in events:
            assert event == _stdout(1)
            break
    assert source.closed
    assert source.taken == 1

    plain = Source([_stdout(seq) for seq in range(1, 10)])
    async with aclosing(encrypt_events(plain, client)) as envelopes:
        async for _ in envelopes:
            break
    assert plain.closed


async def test_source_errors_propagate_and_close() -> None:
    client, server = _sessions()
    source = Source([client.seal(_stdout(seq)) for seq in range(1, 5)], fail_after=2)
    with pytest.raises(RuntimeError, match="source broke"):
        await _collect(decrypt_events(source, server))
    assert source.closed


async def test_cancellation_closes_the_source() -> None:
    client, _ = _sessions()
    source = Source([_stdout(seq) for seq in range(1, 1000)])
    with anyio.move_on_after(0):
        async with aclosing(encrypt_events(source, client)) as envelopes:
            async for _ in envelopes:
                await anyio.sleep(1)
    assert source.closed


async def test_encrypt_refuses_events_of_another_session() -> None:
    client, _ = _sessions()
    stranger = StdoutEvent(session_id="s_other", seq=1, payload=StdoutPayload(chunk="x"))
    with pytest.raises(EnvelopeError) as info:
        await _collect(encrypt_events([stranger], client))
    assert info.value.reason is R.SESSION_MISMATCH
