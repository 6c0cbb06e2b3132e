"""Access control and limits of the broker app, over real HTTP (uvicorn on 127.0.0.1).

The capability-token pattern of the README end to end: ``SessionTokens``
answers ``POST /sessions`` with a token, and a client that keeps it (httpx
event hooks) resumes a cut stream, reads the session's info and cancels it;
without the token, or with another session's, every route is refused with a
JSON 401 or 403. The limits answer with the statuses and headers a client
can act on: 503 with ``Retry-After``, 429 per identity, 410 for a session
whose retention is over, 400 for a heartbeat below the floor or a
client-chosen id.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from starlette.requests import Request

from enclave_stream import ReconnectionConfig, open_event_stream
from enclave_stream.producer import (
    Access,
    Action,
    BrokerConfig,
    Decision,
    EventStream,
    Grant,
    SessionBroker,
    SessionRequest,
    SessionTokens,
)
from enclave_stream.starlette import create_broker_app
from tests.integration.asgi_server import CuttingProxy, broker_connector, serve

pytestmark = pytest.mark.anyio

FAST_RETRIES = ReconnectionConfig(max_retries=5, initial_delay_ms=1, max_delay_ms=10)
QUIET = BrokerConfig(heartbeat_interval_ms=None)


@pytest.fixture
def anyio_backend() -> str:
    """uvicorn runs on asyncio only."""
    return "asyncio"


async def numbered_lines(stream: EventStream, request: SessionRequest) -> None:
    for index in range(int(request.code)):
        stream.stdout(f"line {index} {'x' * 40}\n")
        if index % 20 == 19:
            await anyio.sleep(0.002)
    stream.final(True)


async def endless(stream: EventStream, request: SessionRequest) -> None:
    await anyio.sleep_forever()


@asynccontextmanager
async def broker_app(
    runner: Any, config: BrokerConfig = QUIET, **options: Any
) -> AsyncIterator[tuple[str, SessionBroker]]:
    app = create_broker_app(runner, config=config, handle_signals=False, **options)
    async with serve(app) as live:
        yield live.url, app.state.broker


class SessionTokenJar:
    """httpx event hooks: keep each session's token from its POST; send it on its other routes."""

    def __init__(self, header: str = "X-Session-Token") -> None:
        self.header = header
        self.tokens: dict[str, str] = {}

    def hooks(self) -> dict[str, list[Any]]:
        return {"request": [self.on_request], "response": [self.on_response]}

    async def on_request(self, request: httpx.Request) -> None:
        parts = request.url.path.split("/")  # "", "sessions", id, ...
        if "sessions" in parts[:-1]:
            token = self.tokens.get(parts[parts.index("sessions") + 1])
            if token is not None:
                request.headers[self.header] = token

    async def on_response(self, response: httpx.Response) -> None:
        token = response.headers.get(self.header)
        session_id = response.headers.get("X-Session-ID")
        if token and session_id:
            self.tokens[session_id] = token


async def test_session_tokens_end_to_end() -> None:
    lines = 300
    jar = SessionTokenJar()
    async with (
        broker_app(numbered_lines, authorize=SessionTokens()) as (url, broker),
        httpx.AsyncClient(event_hooks=jar.hooks()) as http,
        httpx.AsyncClient() as stranger,
    ):
        port = int(url.rsplit(":", 1)[1])
        async with CuttingProxy(port, [5000]) as proxy:  # the POST's stream is cut
            # The broker chooses the ids (and the token comes with the POST's answer).
            connect = broker_connector(
                http, proxy.url, code=str(lines), encrypt=False, client_session_id=False
            )
            async with open_event_stream(connect, config=FAST_RETRIES) as events:
                received = [event async for event in events]
        assert proxy.cut == 1
        assert [kind for kind, _ in connect.connections] == ["POST", "GET"]
        assert [event.seq for event in received] == list(range(1, lines + 3))
        sid = connect.session_id
        assert sid is not None
        token = jar.tokens[sid]

        # The token opens the session's routes, as a header or a bearer token.
        info = await http.get(f"{url}/sessions/{sid}")
        assert (info.status_code, info.json()["state"]) == (200, "completed")
        bearer = {"Authorization": f"Bearer {token}"}
        assert (await stranger.get(f"{url}/sessions/{sid}", headers=bearer)).status_code == 200

        # Without it: 401 with WWW-Authenticate; another session's token: 403.
        other = await http.post(f"{url}/sessions", json={"code": "1"})
        other_token = {"X-Session-Token": other.headers["X-Session-Token"]}
        for method, path in (
            ("GET", f"/sessions/{sid}/stream"),
            ("GET", f"/sessions/{sid}"),
            ("POST", f"/sessions/{sid}/cancel"),
            ("DELETE", f"/sessions/{sid}"),
        ):
            missing = await stranger.request(method, url + path)
            assert missing.status_code == 401, (method, path)
            assert missing.headers["WWW-Authenticate"] == "Bearer"
            assert missing.json()["code"] == "UNAUTHORIZED"
            wrong = await stranger.request(method, url + path, headers=other_token)
            assert (wrong.status_code, wrong.json()["code"]) == (403, "FORBIDDEN")
        listing = await http.get(f"{url}/sessions")
        assert (listing.status_code, listing.json()["code"]) == (403, "FORBIDDEN")

        cancelled = await http.delete(f"{url}/sessions/{other.headers['X-Session-ID']}")
        assert cancelled.json() == {"success": True, "sessionId": other.headers["X-Session-ID"]}
        assert len(broker) == 2


async def test_the_hook_sees_the_starlette_request_and_the_runner_too() -> None:
    seen: list[tuple[str, str | None]] = []
    users: list[str] = []

    async def authorize(access: Access) -> Decision:
        assert isinstance(access.request, Request)
        user = access.request.headers.get("X-User")
        seen.append((access.action.value, user))
        if user is None:
            return False
        if access.action is Action.CREATE:
            return Grant(identity=user)
        return access.action is Action.LIST or (
            access.grant is not None and access.grant.identity == user
        )

    async def runner(stream: EventStream, request: SessionRequest) -> None:
        assert isinstance(request.http, Request)
        users.append(request.http.headers["X-User"])
        stream.final(True)

    config = BrokerConfig(heartbeat_interval_ms=None, max_sessions_per_identity=1)
    async with (
        broker_app(runner, config, authorize=authorize) as (url, _),
        httpx.AsyncClient(base_url=url) as http,
    ):
        created = await http.post("/sessions", json={"code": "x"}, headers={"X-User": "ann"})
        sid = created.headers["X-Session-ID"]
        assert (await http.get(f"/sessions/{sid}", headers={"X-User": "ann"})).status_code == 200
        assert (await http.get(f"/sessions/{sid}", headers={"X-User": "bob"})).status_code == 403
        listed = await http.get("/sessions", headers={"X-User": "bob"})
        assert (listed.status_code, listed.json()["sessions"]) == (200, [])  # not bob's
        assert (await http.post("/sessions", json={"code": "x"})).status_code == 403
    assert users == ["ann"]
    assert seen == [
        ("create", "ann"),
        ("info", "ann"),
        ("info", "bob"),
        ("list", "bob"),
        ("info", "bob"),  # the listed session: bob may not see it
        ("create", None),
    ]


async def test_limits_answer_with_what_a_client_can_act_on() -> None:
    async def by_user(access: Access) -> Decision:
        assert access.request is not None
        user = access.request.headers.get("X-User", "ann")
        return Grant(user) if access.action is Action.CREATE else True

    config = BrokerConfig(
        heartbeat_interval_ms=None, max_sessions=2, max_sessions_per_identity=1, ttl_ms=30_000
    )
    async with (
        broker_app(endless, config, authorize=by_user) as (url, broker),
        httpx.AsyncClient(base_url=url) as http,
        http.stream("POST", "/sessions", json={"code": "x"}) as first,
    ):
        assert first.status_code == 200
        again = await http.post("/sessions", json={"code": "x"})
        assert again.status_code == 429
        assert again.json()["code"] == "TOO_MANY_SESSIONS_FOR_IDENTITY"
        assert 1 <= int(again.headers["Retry-After"]) <= 30
        for body, fragment in (
            ({"code": "x", "limits": {"heartbeatIntervalMs": 1}}, "heartbeatIntervalMs"),
            ({"code": "x", "sessionId": "s_squat"}, "generates session ids"),
            ({"code": "x", "limits": {"sessionTtlMs": 10**9}}, "lifetime"),
        ):
            refused = await http.post("/sessions", json=body)
            assert refused.status_code == 400
            assert fragment in refused.json()["message"]
        broker.add(EventStream("s_other", heartbeat_interval_ms=None))
        full = await http.post("/sessions", json={"code": "x"}, headers={"X-User": "bob"})
        assert (full.status_code, full.json()["code"]) == (503, "TOO_MANY_SESSIONS")
        assert int(full.headers["Retry-After"]) >= 1


async def test_per_identity_limits_over_http() -> None:
    # Without a hook: the client's address, running sessions only.
    config = BrokerConfig(heartbeat_interval_ms=None, max_sessions_per_identity=2)
    async with (
        broker_app(endless, config) as (url, _),
        httpx.AsyncClient(base_url=url) as http,
        http.stream("POST", "/sessions", json={"code": "x"}) as first,
        http.stream("POST", "/sessions", json={"code": "x"}) as second,
    ):
        assert (first.status_code, second.status_code) == (200, 200)
        third = await http.post("/sessions", json={"code": "x"})
        assert (third.status_code, third.json()["code"]) == (429, "TOO_MANY_SESSIONS_FOR_IDENTITY")

    # With a hook's identities: a user at the limit drops her own oldest
    # finished session (410), never another user's.
    async def by_user(access: Access) -> Decision:
        assert access.request is not None
        user = access.request.headers.get("X-User")
        return Grant(user) if access.action is Action.CREATE else True

    async with (
        broker_app(numbered_lines, config, authorize=by_user) as (url, _),
        httpx.AsyncClient(base_url=url) as http,
    ):
        bob = await http.post("/sessions", json={"code": "1"}, headers={"X-User": "bob"})
        made = []
        for _ in range(3):
            with anyio.fail_after(5):
                while True:  # 429 until her previous session's producer has returned
                    created = await http.post(
                        "/sessions", json={"code": "1"}, headers={"X-User": "eve"}
                    )
                    if created.status_code != 429:
                        break
                    await anyio.sleep(0.01)
            assert created.status_code == 200
            made.append(created.headers["X-Session-ID"])
        oldest = await http.get(f"/sessions/{made[0]}/stream")
        assert (oldest.status_code, oldest.json()["code"]) == (410, "SESSION_GONE")
        for kept in (*made[1:], bob.headers["X-Session-ID"]):
            assert (await http.get(f"/sessions/{kept}/stream")).status_code == 200


async def test_a_session_past_its_retention_is_gone_not_missing() -> None:
    config = BrokerConfig(heartbeat_interval_ms=None, retention_seconds=0.2)
    async with (
        broker_app(numbered_lines, config) as (url, broker),
        httpx.AsyncClient(base_url=url) as http,
    ):
        created = await http.post("/sessions", json={"code": "2"})
        sid = created.headers["X-Session-ID"]
        with anyio.fail_after(5):
            while sid in broker:  # noqa: ASYNC110 - polls state that has no event
                await anyio.sleep(0.02)
        for method, path in (
            ("GET", f"/sessions/{sid}/stream"),
            ("GET", f"/sessions/{sid}"),
            ("DELETE", f"/sessions/{sid}"),
        ):
            gone = await http.request(method, path)
            assert (gone.status_code, gone.json()["code"]) == (410, "SESSION_GONE")
        assert (await http.get("/sessions/s_never/stream")).status_code == 404


async def test_a_frozen_reader_is_dropped_and_can_resume(caplog: pytest.LogCaptureFixture) -> None:
    chunk = "y" * 60_000

    async def big(stream: EventStream, request: SessionRequest) -> None:
        for _ in range(300):  # 18 MB: more than the connection's buffers hold
            stream.stdout(chunk)
            await anyio.lowlevel.checkpoint()
        await anyio.sleep_forever()

    config = BrokerConfig(heartbeat_interval_ms=None, max_bytes=64 << 20, send_timeout_seconds=0.3)
    async with (
        broker_app(big, config) as (url, broker),
        httpx.AsyncClient(base_url=url) as http,
    ):
        async with http.stream("POST", "/sessions", json={"code": "x"}) as created:
            sid = created.headers["X-Session-ID"]
        port = int(url.rsplit(":", 1)[1])
        received = 0
        with caplog.at_level(logging.WARNING, logger="enclave_stream"):
            # A client that stops reading: its buffers fill, the server's send stalls.
            async with await anyio.connect_tcp("127.0.0.1", port) as frozen:
                request = f"GET /sessions/{sid}/stream HTTP/1.1\r\nHost: x\r\n\r\n"
                await frozen.send(request.encode())
                with anyio.fail_after(20):
                    while "took no bytes" not in caplog.text:  # noqa: ASYNC110
                        await anyio.sleep(0.05)
                    # Thawed, it finds its response cut short: the server closed it.
                    with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                        while True:
                            received += len(await frozen.receive())
        assert 0 < received < 300 * len(chunk)
        # The session goes on, and the dropped client can resume where it stopped.
        assert not broker.get(sid).finished
        async with http.stream("GET", f"/sessions/{sid}/stream?fromSeq=300") as again:
            first = await again.aiter_bytes().__anext__()
            assert b'"seq":300' in first
        await broker.cancel(sid)


async def test_lifetime_and_memory_budget_over_http() -> None:
    config = BrokerConfig(
        heartbeat_interval_ms=None, max_bytes=10_000, max_total_bytes=25_000, ttl_ms=60_000
    )
    async with (
        broker_app(endless, config) as (url, _),
        httpx.AsyncClient(base_url=url) as http,
        http.stream("POST", "/sessions", json={"code": "x"}) as running,
    ):
        assert running.status_code == 200
        with anyio.fail_after(10):
            short = await http.post(
                "/sessions", json={"code": "x", "limits": {"sessionTtlMs": 300}}
            )
        events = [json.loads(line) for line in short.text.splitlines()]
        assert [event["type"] for event in events] == ["session_init", "deadline_exceeded", "final"]
        assert events[-1]["payload"]["error"]["code"] == "SESSION_EXPIRED"
        # Two running sessions (10 kB reserved each) and a finished one (what it holds):
        # no room for 10 kB more.
        async with http.stream("POST", "/sessions", json={"code": "x"}) as second:
            assert second.status_code == 200
            full = await http.post("/sessions", json={"code": "x"})
            assert (full.status_code, full.json()["code"]) == (503, "MEMORY_BUDGET_EXCEEDED")
            assert 1 <= int(full.headers["Retry-After"]) <= 300
