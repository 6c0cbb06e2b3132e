"""The broker against the upstream client's behaviours, over real loopback HTTP (uvicorn).

The client is :class:`tests.integration.upstream_client.UpstreamClient`, a
scripted copy of what ``@enclave-vm/client`` does on the wire: it resumes
with ``?from=N``, judges liveness by ``heartbeat`` events only, cancels
with ``POST /sessions/{id}/cancel`` and reads ``GET /sessions/{id}``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from enclave_stream.producer import BrokerConfig, EventStream, SessionBroker, SessionRequest
from enclave_stream.starlette import create_broker_app
from tests.integration.asgi_server import HTTPX_CLOSED_EARLY, CuttingProxy, LiveServer, serve
from tests.integration.upstream_client import UpstreamClient

pytestmark = [
    pytest.mark.anyio,
    *HTTPX_CLOSED_EARLY,
]


@pytest.fixture
def anyio_backend() -> str:
    """uvicorn runs on asyncio only."""
    return "asyncio"


@asynccontextmanager
async def mounted_broker(
    runner: Any, config: BrokerConfig, prefix: str = ""
) -> AsyncIterator[tuple[str, SessionBroker, LiveServer]]:
    """The broker app on uvicorn, under ``prefix`` (a Starlette Mount) when given; its base URL."""
    # The upstream client chooses its session ids.
    config = dataclasses.replace(config, client_session_ids=True)
    app = create_broker_app(runner, config=config)
    served: Any = app
    if prefix:

        @asynccontextmanager
        async def lifespan(outer: Starlette) -> AsyncIterator[None]:
            async with app.router.lifespan_context(app):
                yield

        served = Starlette(routes=[Mount(prefix, app=app)], lifespan=lifespan)
    async with serve(served) as live:
        yield live.url + prefix, app.state.broker, live


def wire(broker: SessionBroker, session_id: str) -> list[dict[str, Any]]:
    """The session's events as the server stored them, as JSON objects."""
    lines = [entry.line for entry in broker.get(session_id).store.read(0)]
    return [msgspec.json.decode(line) for line in lines]


async def test_a_client_that_resumes_with_from_gets_every_event_exactly_once() -> None:
    async def runner(stream: EventStream, request: SessionRequest) -> None:
        for index in range(300):
            stream.stdout(f"line {index}\n")
            if index % 10 == 9:
                await anyio.sleep(0.002)
        stream.final(True, "done")

    config = BrokerConfig(heartbeat_interval_ms=None)
    async with mounted_broker(runner, config) as (_, broker, live), httpx.AsyncClient() as http:
        port = int(live.url.rsplit(":", 1)[1])
        async with CuttingProxy(port, [5000, 4000]) as proxy:  # two cuts, mid-line
            client = UpstreamClient(http, proxy.url)
            events = await client.execute("x", "s_upstream-resume")
        expected = wire(broker, "s_upstream-resume")
    assert proxy.cut == 2
    assert [kind.split("?")[0] for kind in client.connections] == [
        "POST /sessions",
        "GET /sessions/s_upstream-resume/stream",
        "GET /sessions/s_upstream-resume/stream",
    ]
    resumed_from = [int(kind.split("?from=")[1]) for kind in client.connections[1:]]
    assert 1 < resumed_from[0] < resumed_from[1]
    assert events == expected  # every event once, in order
    assert [event["seq"] for event in events] == list(range(1, 303))


async def test_a_busy_stream_keeps_a_heartbeat_only_client_connected() -> None:
    # Scaled down from 15 s heartbeats and the client's 30 s window: a
    # heartbeat every 0.1 s, a window of 1 s (room for a loaded machine),
    # an event every 10 ms for 1.5 s.
    async def busy(stream: EventStream, request: SessionRequest) -> None:
        for index in range(150):
            stream.stdout(f"{index}\n")
            await anyio.sleep(0.01)
        stream.final(True)

    config = BrokerConfig(heartbeat_interval_ms=100)
    async with mounted_broker(busy, config) as (url, broker, _), httpx.AsyncClient() as http:
        client = UpstreamClient(http, url, heartbeat_timeout_ms=1000)
        events = await client.execute("x", "s_upstream-busy")
        expected = wire(broker, "s_upstream-busy")
    assert client.heartbeat_timeouts == 0
    assert client.connections == ["POST /sessions"]
    assert events == expected
    assert sum(event["type"] == "heartbeat" for event in events) >= 5


async def test_cancel_through_the_cancel_url_under_a_mount_prefix() -> None:
    async def endless(stream: EventStream, request: SessionRequest) -> None:
        stream.stdout("started\n")
        await anyio.sleep_forever()

    config = BrokerConfig(heartbeat_interval_ms=None)
    async with (
        mounted_broker(endless, config, prefix="/api") as (url, broker, _),
        httpx.AsyncClient() as http,
    ):
        client = UpstreamClient(http, url)
        cancelled: list[httpx.Response] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.execute, "x", "s_upstream-cancel")
            with anyio.fail_after(5):
                while len(client.events) < 2:  # noqa: ASYNC110 - the client has no event
                    await anyio.sleep(0.005)
            cancel_url = client.events[0]["payload"]["cancelUrl"]
            assert cancel_url == "/api/sessions/s_upstream-cancel/cancel"
            cancelled.append(await client.cancel())
        assert cancelled[0].status_code == 200
        assert cancelled[0].json() == {"success": True, "sessionId": "s_upstream-cancel"}
        # The session ended with its final, which a resume shows.
        rest = await http.get(f"{url}/sessions/s_upstream-cancel/stream", params={"from": 3})
        assert [msgspec.json.decode(line) for line in rest.content.splitlines()] == [
            wire(broker, "s_upstream-cancel")[-1]
        ]
        final = wire(broker, "s_upstream-cancel")[-1]
        assert final["type"] == "final"
        assert final["payload"]["error"]["code"] == "SESSION_CANCELLED"
        info = await http.get(f"{url}/sessions/s_upstream-cancel")
        assert info.json()["state"] == "cancelled"
        # DELETE still cancels too; both answer 404 for an unknown session.
        for method, path in (("POST", "/cancel"), ("DELETE", "")):
            unknown = await http.request(method, f"{url}/sessions/s_nope{path}")
            assert (unknown.status_code, unknown.json()["code"]) == (404, "NOT_FOUND")


async def test_the_read_routes() -> None:
    release = anyio.Event()

    async def runner(stream: EventStream, request: SessionRequest) -> None:
        stream.tool_call("search", {"q": request.code})
        await release.wait()
        stream.final(True, 1)

    config = BrokerConfig(heartbeat_interval_ms=None)
    async with mounted_broker(runner, config) as (url, broker, _), httpx.AsyncClient() as http:
        assert (await http.get(f"{url}/sessions")).json() == {"sessions": [], "total": 0}
        async with http.stream("POST", f"{url}/sessions", json={"code": "a", "sessionId": "s_r"}):
            with anyio.fail_after(5):
                while broker.get("s_r").next_seq < 3:  # noqa: ASYNC110 - no event to wait on
                    await anyio.sleep(0.005)
            running = (await http.get(f"{url}/sessions/s_r")).json()
            release.set()
        assert running["sessionId"] == "s_r"
        assert running["state"] == "running"
        assert (running["eventCount"], running["lastSeq"]) == (2, 2)
        assert running["stats"]["toolCallCount"] == 1
        assert running["createdAt"] <= running["updatedAt"] < running["expiresAt"]
        with anyio.fail_after(5):
            while not broker.get("s_r").finished:  # noqa: ASYNC110
                await anyio.sleep(0.005)
        listed = (await http.get(f"{url}/sessions")).json()
        assert listed["total"] == 1
        assert listed["sessions"][0]["state"] == "completed"
        assert listed["sessions"][0]["lastSeq"] == 3
        missing = await http.get(f"{url}/sessions/s_nope")
        assert (missing.status_code, missing.json()["code"]) == (404, "NOT_FOUND")
        bad = await http.get(f"{url}/sessions/s_r/stream", params={"from": "x"})
        assert (bad.status_code, bad.json()["code"]) == (400, "INVALID_REQUEST")


async def test_a_burst_before_the_first_read_reaches_the_upstream_client_once() -> None:
    # Twice the default max_events, appended before the POST's response is
    # read: the upstream client used to get an empty 200, then 410 on every
    # resume. Now it gets every event from seq 1 on the POST alone.
    async def runner(stream: EventStream, request: SessionRequest) -> None:
        for index in range(20_000):
            stream.stdout(f"{index}\n")
        stream.final(True)

    async with mounted_broker(runner, BrokerConfig()) as (url, _, _), httpx.AsyncClient() as http:
        client = UpstreamClient(http, url)
        events = await client.execute("x", "s_upstream-burst")
    assert client.connections == ["POST /sessions"]
    assert [event["seq"] for event in events] == list(range(1, 20_003))
    assert events[-1]["payload"]["ok"] is True
