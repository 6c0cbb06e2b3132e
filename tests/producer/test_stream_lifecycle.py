"""EventStream as ``async with``: heartbeats on a virtual clock, and the final it guarantees."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import pytest

from enclave_stream import FinalEvent, HeartbeatEvent
from enclave_stream.producer import EventStream
from tests.producer.conftest import SESSION_ID, START

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend(virtual_backend: Any) -> Any:
    """Every test here runs on trio's virtual clock: time is exact and instant."""
    return virtual_backend


def virtual_wall_clock() -> Any:
    """A wall clock that follows anyio's (virtual) clock from START."""
    origin = anyio.current_time()
    return lambda: START + timedelta(seconds=anyio.current_time() - origin)


def kinds(stream: EventStream) -> list[str]:
    return [entry.event.type.value for entry in stream.store.read(0)]


async def test_heartbeats_only_while_idle() -> None:
    async with EventStream(
        SESSION_ID, heartbeat_interval_ms=1000, now=virtual_wall_clock()
    ) as stream:
        await anyio.sleep(2.5)  # idle: heartbeats at 1.0 and 2.0
        stream.stdout("work")  # at 2.5: the next one is due at 3.5
        await anyio.sleep(1.2)
        stream.final(True)
        await anyio.sleep(5)  # none after final
    entries = stream.store.read(0)
    assert kinds(stream) == [
        "session_init",
        "heartbeat",
        "heartbeat",
        "stdout",
        "heartbeat",
        "final",
    ]
    stamps = [
        entry.event.payload.ts for entry in entries if isinstance(entry.event, HeartbeatEvent)
    ]
    assert stamps == [
        "2025-01-02T03:04:06.678Z",
        "2025-01-02T03:04:07.678Z",
        "2025-01-02T03:04:09.178Z",
    ]


async def test_busy_streams_send_no_heartbeats() -> None:
    async with EventStream(SESSION_ID, heartbeat_interval_ms=1000) as stream:
        for _ in range(20):
            await anyio.sleep(0.9)
            stream.stdout(".")
        stream.final(True)
    assert "heartbeat" not in kinds(stream)


async def test_no_heartbeats_when_disabled() -> None:
    for interval in (None, 0):
        async with EventStream(SESSION_ID, heartbeat_interval_ms=interval) as stream:
            await anyio.sleep(100)
            stream.final(True)
        assert kinds(stream) == ["session_init", "final"]


async def test_no_task_outlives_the_block() -> None:
    async with EventStream(SESSION_ID, heartbeat_interval_ms=1000) as stream:
        await anyio.sleep(1.5)
    count = len(stream.store.read(0))
    await anyio.sleep(100)
    assert len(stream.store.read(0)) == count
    assert kinds(stream)[-1] == "final"


async def test_leaving_without_final_appends_one() -> None:
    async with EventStream(SESSION_ID, heartbeat_interval_ms=None) as stream:
        stream.stdout("partial")
    final = stream.store.read(0)[-1].event
    assert isinstance(final, FinalEvent)
    assert final.payload.ok is False
    assert final.payload.error.code == "SESSION_CLOSED"  # type: ignore[union-attr]
    assert stream.finished


async def test_an_exception_ends_the_stream_without_leaking_its_text() -> None:
    with pytest.raises(KeyError):
        async with EventStream(SESSION_ID, heartbeat_interval_ms=1000) as stream:
            raise KeyError("the secret token")
    final = stream.store.read(0)[-1]
    assert final.event.payload.error.code == "EXECUTION_ERROR"  # type: ignore[union-attr]
    assert final.event.payload.error.message == "The session failed: KeyError"  # type: ignore[union-attr]
    assert b"secret" not in final.line


async def test_cancellation_ends_the_stream_as_cancelled() -> None:
    with anyio.move_on_after(10):
        async with EventStream(SESSION_ID, heartbeat_interval_ms=3000) as stream:
            await anyio.sleep_forever()
    assert kinds(stream) == ["session_init", "heartbeat", "heartbeat", "heartbeat", "final"]
    final = stream.store.read(0)[-1].event
    assert final.payload.error.code == "SESSION_CANCELLED"  # type: ignore[union-attr]


async def test_an_explicit_final_is_kept() -> None:
    async with EventStream(SESSION_ID, heartbeat_interval_ms=None) as stream:
        stream.final(True, 1)
    assert kinds(stream) == ["session_init", "final"]
    assert stream.store.read(0)[-1].event.payload.ok is True  # type: ignore[union-attr]


async def test_entered_once_only() -> None:
    stream = EventStream(SESSION_ID, heartbeat_interval_ms=None)
    async with stream:
        with pytest.raises(RuntimeError, match="once"):
            await stream.__aenter__()
        stream.final(True)


async def test_readers_follow_live_and_a_gone_reader_leaves_nothing() -> None:
    async with EventStream(SESSION_ID, heartbeat_interval_ms=None) as stream:
        got: list[bytes] = []

        async def reader() -> None:
            async for chunk in stream.ndjson_body():
                got.append(chunk)  # noqa: PERF401 - watched while it grows

        leaver = anyio.CancelScope()

        async def gone() -> None:
            with leaver:
                async for _ in stream.ndjson_body():
                    pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            tg.start_soon(gone)
            await anyio.sleep(1)
            assert stream.store.waiting == 2
            leaver.cancel()
            await anyio.sleep(1)
            assert stream.store.waiting == 1
            stream.stdout("live")
            await anyio.sleep(1)
            stream.final(True)
        assert stream.store.waiting == 0
    lines = b"".join(got).splitlines()
    assert len(lines) == 3
    assert b'"chunk":"live"' in lines[1]
