"""NdjsonBody: chunks of ready lines, live following, ending, falling behind."""

from __future__ import annotations

import anyio
import pytest

from enclave_stream.producer import EventLog, NdjsonBody, ReplayUnavailableError
from tests.producer.conftest import final, stdout, wait_until

pytestmark = pytest.mark.anyio


async def test_joins_what_is_ready_into_one_chunk() -> None:
    log = EventLog()
    lines = [log.append(stdout(str(index))).line for index in range(5)]
    log.append(final())
    body = NdjsonBody(log)
    assert await body.__anext__() == b"".join(lines) + log.read(6)[0].line
    with pytest.raises(StopAsyncIteration):
        await body.__anext__()


async def test_chunks_are_bounded_but_hold_at_least_one_line() -> None:
    log = EventLog()
    lines = [log.append(stdout("z" * 50)).line for _ in range(6)]
    log.close()
    size = len(lines[0])
    chunks = [chunk async for chunk in NdjsonBody(log, chunk_bytes=size * 2)]
    assert chunks == [lines[0] + lines[1], lines[2] + lines[3], lines[4] + lines[5]]
    assert [chunk async for chunk in NdjsonBody(log, 3, chunk_bytes=1)] == lines[2:]


async def test_follows_live_and_stops_at_final() -> None:
    log = EventLog()
    log.append(stdout("a"))
    body = NdjsonBody(log, 1)
    got: list[bytes] = []

    async def read() -> None:
        async for chunk in body:
            got.append(chunk)  # noqa: PERF401 - watched while it grows

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        await wait_until(lambda: len(got) == 1 and log.waiting == 1)
        assert body.next_seq == 2
        log.append(stdout("b"))
        await wait_until(lambda: len(got) == 2)
        log.append(final())
    assert len(got) == 3
    assert [line.startswith(b'{"protocolVersion":2') for line in got] == [True] * 3


async def test_ends_after_a_closed_log_without_final() -> None:
    log = EventLog()
    log.append(stdout())
    log.close()
    assert len([chunk async for chunk in NdjsonBody(log)]) == 1


async def test_aclose_ends_it() -> None:
    log = EventLog()
    log.append(stdout())
    body = NdjsonBody(log)
    await body.aclose()
    assert [chunk async for chunk in body] == []


async def test_a_reader_that_falls_behind_is_told() -> None:
    log = EventLog(max_events=3)
    log.append(stdout())
    body = NdjsonBody(log, chunk_bytes=1)
    await body.__anext__()
    for _ in range(4):
        log.append(stdout())
    with pytest.raises(ReplayUnavailableError) as caught:
        await body.__anext__()
    assert (caught.value.requested_seq, caught.value.first_available_seq) == (2, 3)


async def test_checks_its_arguments() -> None:
    log = EventLog(max_events=1)
    log.append(stdout())
    log.append(stdout())
    with pytest.raises(ReplayUnavailableError):
        NdjsonBody(log)
    with pytest.raises(ValueError, match="from_seq"):
        NdjsonBody(log, -1)
    with pytest.raises(ValueError, match="chunk_bytes"):
        NdjsonBody(log, 2, chunk_bytes=0)
