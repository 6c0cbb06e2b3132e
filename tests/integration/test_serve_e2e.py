"""The producer end to end over real loopback HTTP: uvicorn serving the Starlette broker app.

uvicorn runs in the test's own event loop (asyncio), so the tests reach the
broker's streams directly; clients are httpx, through ``open_event_stream``
where resuming matters. Cuts are real: a TCP proxy closes the connection
after a given number of bytes, mid-line.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from enclave_stream import EncryptedEnvelope, parse_lines
from enclave_stream.errors import LogFullError
from enclave_stream.events import StreamEvent
from enclave_stream.producer import BrokerConfig, EventStream, SessionBroker, SessionRequest
from enclave_stream.reconnect import (
    FatalConnectError,
    ReconnectionConfig,
    StreamFailedError,
    open_event_stream,
)
from enclave_stream.reconnect.http import httpx_connector
from enclave_stream.starlette import create_broker_app
from tests.integration.asgi_server import (
    HTTPX_CLOSED_EARLY,
    CuttingProxy,
    LiveServer,
    broker_connector,
    serve,
)
from tests.producer.conftest import session_pair

pytestmark = [
    pytest.mark.anyio,
    *HTTPX_CLOSED_EARLY,
]

FAST_RETRIES = ReconnectionConfig(max_retries=5, initial_delay_ms=1, max_delay_ms=10)
QUIET = BrokerConfig(heartbeat_interval_ms=None)


@pytest.fixture
def anyio_backend() -> str:
    """uvicorn runs on asyncio only."""
    return "asyncio"


async def paced_runner(stream: EventStream, request: SessionRequest) -> None:
    """``code`` is the number of stdout lines; a short pause every 10 keeps the session live."""
    for index in range(int(request.code)):
        stream.stdout(f"line {index} {'x' * (index % 7)}\n")
        if index % 10 == 9:
            await anyio.sleep(0.002)
    stream.final(True, {"lines": int(request.code)})


@asynccontextmanager
async def broker_app(
    runner: Any = paced_runner, config: BrokerConfig = QUIET
) -> AsyncIterator[tuple[LiveServer, SessionBroker]]:
    app = create_broker_app(runner, config=config)
    async with serve(app) as live:
        yield live, app.state.broker


def stored(broker: SessionBroker, session_id: str) -> list[StreamEvent]:
    return [entry.event for entry in broker.get(session_id).store.read(0)]


async def read_all(stream: Any) -> list[StreamEvent]:
    async with stream as events:
        return [event async for event in events]


async def wait_until(condition: Any, within: float = 5.0) -> None:
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - polls state that has no event
            await anyio.sleep(0.005)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plaintext", "encrypted"])
async def test_a_session_streamed_cut_resumed(encrypted: bool) -> None:
    lines = 400
    # The client names its session (the default), which this broker accepts.
    config = dataclasses.replace(QUIET, client_session_ids=True)
    async with broker_app(config=config) as (live, broker), httpx.AsyncClient() as http:
        port = int(live.url.rsplit(":", 1)[1])
        # The POST is cut after 6 kB, the first resume after 9 kB more.
        async with CuttingProxy(port, [6000, 9000]) as proxy:
            client = broker_connector(http, proxy.url, code=str(lines), encrypt=encrypted)
            received: list[StreamEvent] = []
            opener = client if encrypted else None
            async with open_event_stream(client, config=FAST_RETRIES, session=opener) as events:
                received.extend([event async for event in events])
        assert proxy.cut == 2
        assert client.session_id is not None
        server_side = broker.get(client.session_id)
        expected = stored(broker, client.session_id)

    # Every event, exactly once, in order, decrypted: what the server produced.
    assert received == expected
    assert len(received) == lines + 2
    assert [event.seq for event in received] == list(range(1, lines + 3))
    assert received[-1].payload.ok is True  # type: ignore[union-attr]
    # POST, then resumes from where each cut left off.
    assert [kind for kind, _ in client.connections] == ["POST", "GET", "GET"]
    resumed_from = [from_seq or 0 for _, from_seq in client.connections[1:]]
    assert all(seq > 1 for seq in resumed_from)
    assert resumed_from == sorted(resumed_from)
    # The wire carried envelopes only when encrypted.
    wire = parse_lines(b"".join(e.line for e in server_side.store.read(0)).decode())
    assert all(isinstance(event, EncryptedEnvelope) for event in wire.events) is encrypted
    if encrypted:
        assert client.session is not None
        assert client.session.last_seq == lines + 2


async def test_two_clients_on_one_session() -> None:
    async with broker_app(runner=None) as (live, broker), httpx.AsyncClient() as http:
        stream = broker.add(EventStream("s_shared", heartbeat_interval_ms=None))
        bodies: dict[str, bytes] = {}

        async def client(name: str) -> None:
            url = f"{live.url}/sessions/s_shared/stream"
            async with http.stream("GET", url) as response:
                assert response.status_code == 200
                assert response.headers["content-type"] == "application/x-ndjson"
                assert response.headers["cache-control"] == "no-cache"
                assert response.headers["x-accel-buffering"] == "no"
                assert response.headers["x-session-id"] == "s_shared"
                bodies[name] = b"".join([chunk async for chunk in response.aiter_bytes()])

        async with anyio.create_task_group() as tg:
            tg.start_soon(client, "a")
            tg.start_soon(client, "b")
            await wait_until(lambda: stream.store.waiting == 2)
            for index in range(500):
                stream.stdout(f"{index}\n")
                if index % 25 == 0:
                    await anyio.lowlevel.checkpoint()
            stream.final(True)

        assert bodies["a"] == bodies["b"] == b"".join(e.line for e in stream.store.read(0))
        assert len(bodies["a"].splitlines()) == 502


async def test_a_client_that_leaves_does_not_stop_the_session() -> None:
    proceed = anyio.Event()
    finished_normally: list[bool] = []

    async def runner(stream: EventStream, request: SessionRequest) -> None:
        stream.stdout("before\n")
        await proceed.wait()
        for index in range(100):
            stream.stdout(f"after {index}\n")
        stream.final(True, "complete")
        finished_normally.append(True)

    async with broker_app(runner) as (live, broker), httpx.AsyncClient() as http:
        # The client that starts the session reads two events and leaves.
        async with http.stream("POST", f"{live.url}/sessions", json={"code": "x"}) as response:
            session_id = response.headers["x-session-id"]
            seen = b""
            async for chunk in response.aiter_bytes():
                seen += chunk
                if seen.count(b"\n") >= 2:
                    break
        stream = broker.get(session_id)
        # The server notices: its reader stops waiting, no request task is left.
        await wait_until(lambda: stream.store.waiting == 0 and live.open_tasks == 0)
        assert not stream.finished
        proceed.set()
        await wait_until(lambda: stream.finished)
        # Another client gets the whole session, to its successful end.
        async with open_event_stream(
            httpx_connector(http, f"{live.url}/sessions/{session_id}/stream"), config=FAST_RETRIES
        ) as events:
            received = [event async for event in events]
        await wait_until(lambda: live.open_tasks == 0)

    assert finished_normally == [True]
    assert len(received) == 103
    assert received[-1].payload.result == "complete"  # type: ignore[union-attr]
    assert received[-1].payload.ok is True  # type: ignore[union-attr]


async def test_resuming_from_a_dropped_seq_fails_loudly() -> None:
    async def runner(stream: EventStream, request: SessionRequest) -> None:
        stream.final(True)

    config = BrokerConfig(heartbeat_interval_ms=None, max_events=50)
    async with broker_app(runner, config) as (live, broker), httpx.AsyncClient() as http:
        stream = broker.new_stream()  # no creator's response holds it
        for index in range(200):
            stream.stdout(f"{index}\n")
        stream.final(True)
        session_id = stream.session_id
        url = f"{live.url}/sessions/{session_id}/stream"

        gone = await http.get(url, params={"fromSeq": 100})
        assert gone.status_code == 410
        assert gone.headers["content-type"] == "application/json"
        assert gone.json() == {
            "code": "REPLAY_UNAVAILABLE",
            "message": "events from seq 100 are no longer held (the oldest held is 153)",
            "details": {"requestedSeq": 100, "firstAvailableSeq": 153},
        }
        tail = await http.get(url, params={"fromSeq": 190})
        assert tail.status_code == 200
        assert [json.loads(line)["seq"] for line in tail.text.splitlines()] == list(range(190, 203))
        for bad in ("-1", "x", "1.5"):
            response = await http.get(url, params={"fromSeq": bad})
            assert response.status_code == 400
            assert response.json()["code"] == "INVALID_REQUEST"
        missing = await http.get(f"{live.url}/sessions/s_nope/stream")
        assert (missing.status_code, missing.json()["code"]) == (404, "NOT_FOUND")

        # The resumable client: the whole session is asked for and is gone,
        # which is fatal at once (no retries), with the reason.
        with pytest.raises(StreamFailedError) as caught:
            await read_all(open_event_stream(httpx_connector(http, url), config=FAST_RETRIES))
        assert caught.value.events_delivered == 0
    cause = caught.value.cause
    assert isinstance(cause, FatalConnectError)
    assert cause.status_code == 410
    assert "REPLAY_UNAVAILABLE" in cause.reason


async def test_a_burst_before_the_first_read_reaches_the_creator_from_seq_1() -> None:
    # 20,000 events appended before the POST's response is read: twice the
    # default max_events. The creator's response drops none of them.
    async def runner(stream: EventStream, request: SessionRequest) -> None:
        for index in range(20_000):
            stream.stdout(f"{index}\n")
        stream.final(True)

    async with broker_app(runner) as (live, broker), httpx.AsyncClient() as http:
        async with http.stream("POST", f"{live.url}/sessions", json={"code": "x"}) as response:
            assert response.status_code == 200
            session_id = response.headers["x-session-id"]
            await wait_until(lambda: broker.get(session_id).finished)
            seqs = [json.loads(line)["seq"] async for line in response.aiter_lines()]
        assert seqs == list(range(1, 20_003))
        # Sent, they stay within max_bytes: the creator's client may not
        # have had them all (a cut is learned late), and resumes.
        again = await http.get(f"{live.url}/sessions/{session_id}/stream", params={"from": 1})
        assert [json.loads(line)["seq"] for line in again.text.splitlines()] == list(
            range(1, 20_003)
        )


async def test_a_creator_cut_during_a_burst_resumes_with_every_event() -> None:
    # The creator reads a little, its connection is cut, and a burst past
    # max_events arrives before its resume: the resume still gets them all.
    burst = anyio.Event()

    async def runner(stream: EventStream, request: SessionRequest) -> None:
        stream.stdout("before the cut\n")
        await burst.wait()
        for index in range(500):
            stream.stdout(f"{index}\n")
        stream.final(True)

    config = BrokerConfig(heartbeat_interval_ms=None, max_events=50)
    async with broker_app(runner, config) as (live, broker), httpx.AsyncClient() as http:
        async with http.stream("POST", f"{live.url}/sessions", json={"code": "x"}) as response:
            session_id = response.headers["x-session-id"]
            lines = response.aiter_lines()
            seen = [json.loads(await lines.__anext__())["seq"] for _ in range(2)]
        # The connection is closed: the server sees its reader go.
        stream = broker.get(session_id)
        await wait_until(lambda: stream.store.lag == 0)
        burst.set()
        await wait_until(lambda: stream.finished)
        resumed = await http.get(
            f"{live.url}/sessions/{session_id}/stream", params={"fromSeq": seen[-1] + 1}
        )
        assert resumed.status_code == 200, resumed.text
        seqs = seen + [json.loads(line)["seq"] for line in resumed.text.splitlines()]
        assert seqs == list(range(1, stream.next_seq))


async def test_a_producer_draining_keeps_pace_with_a_slow_client() -> None:
    lags: list[int] = []
    waited = 0

    async def runner(stream: EventStream, request: SessionRequest) -> None:
        nonlocal waited
        for index in range(2_000):
            stream.stdout(f"{index} {'x' * 2000}\n")
            if stream.store.lag > 50:
                waited += 1
            await stream.drain(max_lag=50)
            lags.append(stream.store.lag)
        stream.final(True)

    config = BrokerConfig(heartbeat_interval_ms=None)
    seqs = []
    async with (
        broker_app(runner, config) as (live, _),
        httpx.AsyncClient() as http,
        http.stream("POST", f"{live.url}/sessions", json={"code": "x"}) as response,
    ):
        async for line in response.aiter_lines():
            seqs.append(json.loads(line)["seq"])
            if len(seqs) % 200 == 0:
                await anyio.sleep(0.02)  # a slow client
    assert seqs == list(range(1, 2_003))
    assert max(lags) <= 50
    assert waited > 0  # the producer did wait for its reader


async def test_a_burst_past_the_memory_budget_fails_the_producer_not_the_reader() -> None:
    refused: list[LogFullError] = []

    async def runner(stream: EventStream, request: SessionRequest) -> None:
        try:
            for _ in range(10_000):  # about 1.3 MB into a 64 KiB budget
                stream.stdout("x" * 40)
        except LogFullError as exc:
            refused.append(exc)
            raise

    config = BrokerConfig(heartbeat_interval_ms=None, max_bytes=64 * 1024)
    async with broker_app(runner, config) as (live, _), httpx.AsyncClient() as http:
        response = await http.post(f"{live.url}/sessions", json={"code": "x"})
    events = [json.loads(line) for line in response.text.splitlines()]
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert [error.first_unsent_seq for error in refused] == [1]
    assert events[-1]["type"] == "final"
    assert events[-1]["payload"]["error"] == {
        "message": "The session failed: LogFullError",
        "code": "EXECUTION_ERROR",
    }
    assert sum(len(line) + 1 for line in response.text.splitlines()[:-1]) <= 64 * 1024


async def test_cancel_route() -> None:
    proceed = anyio.Event()

    async def runner(stream: EventStream, request: SessionRequest) -> None:
        await proceed.wait()

    async with broker_app(runner) as (live, _), httpx.AsyncClient() as http:
        async with http.stream("POST", f"{live.url}/sessions", json={"code": "x"}) as response:
            session_id = response.headers["x-session-id"]
            cancelled = await http.delete(f"{live.url}/sessions/{session_id}")
            body = await response.aread()
        assert cancelled.json() == {"success": True, "sessionId": session_id}
        last = json.loads(body.splitlines()[-1])
        assert last["payload"]["error"]["code"] == "SESSION_CANCELLED"
        unknown = await http.delete(f"{live.url}/sessions/s_nope")
        assert unknown.status_code == 404
        bad = await http.post(f"{live.url}/sessions", content=b"{")
        assert (bad.status_code, bad.json()["code"]) == (400, "INVALID_REQUEST")


async def test_the_body_serves_aiohttp_too() -> None:
    from aiohttp import web

    stream = EventStream("s_aiohttp", heartbeat_interval_ms=None)

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        async for chunk in stream.ndjson_body(int(request.query.get("fromSeq", 0))):
            await response.write(chunk)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/stream", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with httpx.AsyncClient() as http:
            connect = httpx_connector(http, f"http://127.0.0.1:{port}/stream")
            async with anyio.create_task_group() as tg, open_event_stream(connect) as events:

                async def produce() -> None:
                    for index in range(50):
                        stream.stdout(str(index))
                        await anyio.lowlevel.checkpoint()
                    stream.final(True)

                tg.start_soon(produce)
                received = [event async for event in events]
    finally:
        await runner.cleanup()
    assert received == [entry.event for entry in stream.store.read(0)]


@pytest.mark.parametrize("encrypted", [False, True], ids=["plaintext", "encrypted"])
async def test_200_clients_read_a_1000_event_session(encrypted: bool) -> None:
    """The full size (benchmarks/bench_serve.py measures it): about a second here."""
    clients, events = 200, 1000
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    timeout = httpx.Timeout(30, read=None)
    server_session = session_pair("s_load")[0] if encrypted else None
    complete: list[bool] = []
    async with (
        broker_app(runner=None) as (live, broker),
        httpx.AsyncClient(limits=limits, timeout=timeout) as http,
    ):
        stream = EventStream("s_load", session=server_session, heartbeat_interval_ms=None)
        broker.add(stream)
        url = f"{live.url}/sessions/s_load/stream"

        async def client(index: int) -> None:
            # Half the clients parse the raw bytes, half use the resumable client;
            # encrypted, a quarter open the envelopes (each with its own session).
            if index % 2 if not encrypted else index % 4 == 0:
                opener = session_pair("s_load")[1] if encrypted else None
                async with open_event_stream(httpx_connector(http, url), session=opener) as got:
                    seqs = [event.seq async for event in got]
            else:
                async with http.stream("GET", url) as response:
                    body = await response.aread()
                seqs = [event.seq for event in parse_lines(body.decode()).events]
            complete.append(seqs == list(range(1, events + 3)))

        async with anyio.create_task_group() as tg:
            for index in range(clients):
                tg.start_soon(client, index)
            await wait_until(lambda: stream.store.waiting == clients, within=20)
            for index in range(events):
                stream.stdout(f"event {index}\n")
                if index % 50 == 49:
                    await anyio.lowlevel.checkpoint()
            stream.final(True)
        await wait_until(lambda: live.open_tasks == 0)

    assert complete == [True] * clients
    assert stream.store.waiting == 0


async def test_an_aiohttp_client_reads_a_session_and_resumes_it() -> None:
    """The consumer side with aiohttp: ``parse_ndjson_stream(resp.content.iter_chunked(n))``."""
    import aiohttp

    from enclave_stream import parse_ndjson_stream

    lines = 120
    async with broker_app() as (live, broker), aiohttp.ClientSession() as http:
        async with http.post(f"{live.url}/sessions", json={"code": str(lines)}) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("application/x-ndjson")
            session_id = response.headers["X-Session-ID"]
            first = [event async for event in parse_ndjson_stream(response.content.iter_chunked(7))]
        # Resuming from the middle serves exactly the rest.
        middle = lines // 2
        url = f"{live.url}/sessions/{session_id}/stream?fromSeq={middle}"
        async with http.get(url) as response:
            rest = [event async for event in parse_ndjson_stream(response.content.iter_chunked(64))]
        expected = stored(broker, session_id)

    assert first == expected
    assert len(first) == lines + 2
    assert rest == [event for event in expected if event.seq >= middle]
