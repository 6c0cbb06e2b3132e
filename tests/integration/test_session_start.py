"""A session's code runs once, however the answer to its start is lost (issue 14).

``broker_connector`` names the session on the client; when the ``POST``'s
answer is lost before its headers (a real TCP cut by a loopback proxy, after
the request was forwarded whole), it follows the session with ``GET
/sessions/{id}/stream`` instead of starting it again. Against a broker that
chooses the ids, a lost answer is a typed error, never a second run; against
one that ignores encryption, the session is cancelled and the error says it
started. Real uvicorn on 127.0.0.1 (in a thread), the client on asyncio and trio.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import msgspec
import pytest
import uvicorn
from starlette.responses import JSONResponse

from enclave_stream.events import FinalEvent, StreamEvent
from enclave_stream.producer import BrokerConfig, EventStream, SessionBroker, SessionRequest
from enclave_stream.reconnect import (
    EncryptionNotAcceptedError,
    ReconnectionConfig,
    SessionStartLostError,
    StreamFailedError,
    open_event_stream,
)
from enclave_stream.reconnect.http import broker_connector
from enclave_stream.starlette import create_broker_app
from tests.integration.asgi_server import HTTPX_CLOSED_EARLY, CuttingProxy, serve_in_thread

pytestmark = [
    pytest.mark.anyio,
    *HTTPX_CLOSED_EARLY,
]

FAST_RETRIES = ReconnectionConfig(max_retries=4, initial_delay_ms=1, max_delay_ms=5)
NAMED = BrokerConfig(heartbeat_interval_ms=None, client_session_ids=True)
SERVER_IDS = BrokerConfig(heartbeat_interval_ms=None)
LINES = 50


class Runner:
    """A session's code: counts its runs, writes ``LINES`` lines and ``final``."""

    def __init__(self, *, endless: bool = False) -> None:
        self.runs: list[str] = []
        self._endless = endless

    async def __call__(self, stream: EventStream, request: SessionRequest) -> None:
        self.runs.append(stream.session_id)
        for index in range(LINES):
            stream.stdout(f"line {index}\n")
        if self._endless:  # until cancelled
            await anyio.sleep_forever()
        stream.final(True, {"lines": LINES})


@asynccontextmanager
async def broker(app: Any) -> AsyncIterator[tuple[int, SessionBroker]]:
    """The app on uvicorn in its own thread, so that the client may run on asyncio or trio."""
    async with serve_in_thread(app) as port:
        yield port, app.state.broker


def stored(served: SessionBroker, session_id: str) -> list[StreamEvent]:
    return [entry.event for entry in served.get(session_id).store.read(0)]


async def follow(connect: Any) -> list[StreamEvent]:
    async with open_event_stream(connect, config=FAST_RETRIES) as events:
        return [event async for event in events]


@pytest.mark.parametrize("encrypt", [False, True], ids=["plaintext", "encrypted"])
async def test_a_post_whose_answer_is_lost_is_followed_not_sent_again(encrypt: bool) -> None:
    runner = Runner()
    async with broker(create_broker_app(runner, config=NAMED)) as (port, served):
        # The POST goes through whole; its connection is cut before any byte of the answer.
        async with CuttingProxy(port, [0]) as proxy, httpx.AsyncClient() as http:
            connect = broker_connector(http, proxy.url, code="x", encrypt=encrypt)
            received = await follow(connect)
        assert proxy.cut == 1
        assert connect.session_id is not None
        expected = stored(served, connect.session_id)

    assert runner.runs == [connect.session_id]  # the code ran once
    assert received == expected  # every event, once, in order (decrypted)
    assert [event.seq for event in received] == list(range(1, LINES + 3))
    assert isinstance(received[-1], FinalEvent)
    assert [(r.method, r.from_seq) for r in connect.connections] == [("POST", None), ("GET", None)]
    # The encrypted session's keys came from the ServerHello the GET carried.
    assert (connect.session is not None) is encrypt


async def test_a_post_that_never_arrived_is_sent_again() -> None:
    runner = Runner()
    async with broker(create_broker_app(runner, config=NAMED)) as (port, served):
        async with CuttingProxy(port, [], unsent=1) as proxy, httpx.AsyncClient() as http:
            connect = broker_connector(http, proxy.url, code="x", encrypt=False)
            received = await follow(connect)
        assert connect.session_id is not None
        expected = stored(served, connect.session_id)
    assert runner.runs == [connect.session_id]
    assert received == expected
    # Lost: looked for (404, it never arrived), then started.
    assert [r.method for r in connect.connections] == ["POST", "GET", "POST"]


async def test_a_409_to_the_post_sent_again_means_it_exists_and_is_followed() -> None:
    runner = Runner()
    inner = create_broker_app(runner, config=NAMED)
    too_early = 1  # the first look for the session comes "before the POST arrives"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal too_early
        if scope["type"] == "http" and scope["method"] == "GET" and too_early:
            too_early -= 1
            await JSONResponse({"code": "NOT_FOUND"}, status_code=404)(scope, receive, send)
            return
        await inner(scope, receive, send)

    app.state = inner.state  # type: ignore[attr-defined]
    async with broker(app) as (port, served):
        async with CuttingProxy(port, [0]) as proxy, httpx.AsyncClient() as http:
            connect = broker_connector(http, proxy.url, code="x", encrypt=True)
            received = await follow(connect)
        assert connect.session_id is not None
        expected = stored(served, connect.session_id)
    assert runner.runs == [connect.session_id]
    assert received == expected
    assert [r.method for r in connect.connections] == ["POST", "GET", "POST", "GET"]


async def test_a_broker_that_chooses_the_ids_gets_no_id_and_the_session_runs() -> None:
    runner = Runner()
    async with broker(create_broker_app(runner, config=SERVER_IDS)) as (port, served):
        async with httpx.AsyncClient() as http:
            connect = broker_connector(http, f"http://127.0.0.1:{port}", code="x")
            chosen = connect.session_id
            received = await follow(connect)
        assert connect.session_id is not None
        expected = stored(served, connect.session_id)
    assert chosen is not None
    assert chosen != connect.session_id  # the broker's id, from X-Session-ID
    assert runner.runs == [connect.session_id]
    assert received == expected
    # The named POST was refused (400, nothing started); the unnamed one ran.
    assert [r.method for r in connect.connections] == ["POST", "POST"]


async def test_with_server_ids_a_lost_answer_is_a_typed_error_not_a_second_run() -> None:
    runner = Runner()
    async with broker(create_broker_app(runner, config=SERVER_IDS)) as (port, served):
        async with CuttingProxy(port, [0]) as proxy, httpx.AsyncClient() as http:
            connect = broker_connector(
                http, proxy.url, code="x", encrypt=False, client_session_id=False
            )
            with pytest.raises(StreamFailedError) as caught:
                await follow(connect)
        assert len(served) == 1  # it did start, once
    cause = caught.value.cause
    assert isinstance(cause, SessionStartLostError)
    assert cause.session_id is None
    assert "may be running" in str(cause)
    assert len(runner.runs) == 1
    assert [r.method for r in connect.connections] == ["POST"]


def ignoring(inner: Any, *keys: str) -> Any:
    """``inner`` behind a front that drops ``keys`` from every ``POST /sessions`` body."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/sessions":
            await inner(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = msgspec.json.decode(body)
        for key in keys:
            request.pop(key, None)
        stripped = msgspec.json.encode(request)
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": stripped, "more_body": False}

        await inner(scope, replay, send)

    app.state = inner.state  # type: ignore[attr-defined]
    return app


async def test_a_broker_that_ignores_the_session_id_runs_it_once_under_its_own() -> None:
    runner = Runner()
    app = ignoring(create_broker_app(runner, config=SERVER_IDS), "sessionId")
    async with broker(app) as (port, _), httpx.AsyncClient() as http:
        connect = broker_connector(http, f"http://127.0.0.1:{port}", code="x")
        asked = connect.session_id
        events = await follow(connect)
    assert runner.runs == [connect.session_id]
    assert connect.session_id != asked  # the broker's own, followed
    assert [event.seq for event in events] == list(range(1, LINES + 3))


async def test_a_broker_that_ignores_the_id_and_encryption_has_its_session_cancelled() -> None:
    runner = Runner(endless=True)
    app = ignoring(create_broker_app(runner, config=SERVER_IDS), "sessionId", "encryption")
    async with broker(app) as (port, served), httpx.AsyncClient() as http:
        connect = broker_connector(http, f"http://127.0.0.1:{port}", code="x", encrypt=True)
        with pytest.raises(StreamFailedError) as caught:
            await follow(connect)
        assert connect.session_id is not None
        with anyio.fail_after(5):
            while not served.get(connect.session_id).finished:  # noqa: ASYNC110
                await anyio.sleep(0.005)
    cause = caught.value.cause
    assert isinstance(cause, EncryptionNotAcceptedError)
    assert (cause.session_id, cause.cancelled) == (connect.session_id, True)
    assert runner.runs == [connect.session_id]


async def test_a_broker_that_ignores_encryption_has_its_session_cancelled() -> None:
    runner = Runner(endless=True)
    ignores_encryption = ignoring(create_broker_app(runner, config=NAMED), "encryption")
    async with broker(ignores_encryption) as (port, served), httpx.AsyncClient() as http:
        connect = broker_connector(http, f"http://127.0.0.1:{port}", code="x", encrypt=True)
        with pytest.raises(StreamFailedError) as caught:
            await follow(connect)
        assert connect.session_id is not None
        cancelled = served.get(connect.session_id)
        with anyio.fail_after(5):
            while not cancelled.finished:  # noqa: ASYNC110 - the final follows the cancel
                await anyio.sleep(0.005)
        final = stored(served, connect.session_id)[-1]
    cause = caught.value.cause
    assert isinstance(cause, EncryptionNotAcceptedError)
    assert (cause.session_id, cause.cancelled) == (connect.session_id, True)
    assert "without encryption" in str(cause)
    assert "may have run" in str(cause)
    assert caught.value.events_delivered == 0  # no plaintext reached the consumer
    assert runner.runs == [connect.session_id]
    assert [r.method for r in connect.connections] == ["POST"]  # not retried
    assert isinstance(final, FinalEvent)
    assert final.payload.ok is False
    assert final.payload.error is not None
    assert final.payload.error.code == "SESSION_CANCELLED"


async def test_a_lost_answer_of_an_encrypted_session_without_its_hello_again_is_cancelled() -> None:
    runner = Runner(endless=True)
    inner = create_broker_app(runner, config=NAMED)

    async def forgets_the_hello(scope: Any, receive: Any, send: Any) -> None:
        # A broker that sends the ServerHello only with the POST's answer.
        async def without_hello(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and scope["method"] == "GET":
                headers = message["headers"]
                message = {
                    **message,
                    "headers": [h for h in headers if h[0] != b"x-enclave-server-hello"],
                }
            await send(message)

        await inner(scope, receive, without_hello if scope["type"] == "http" else send)

    forgets_the_hello.state = inner.state  # type: ignore[attr-defined]
    async with broker(forgets_the_hello) as (port, served):
        async with CuttingProxy(port, [0]) as proxy, httpx.AsyncClient() as http:
            connect = broker_connector(http, proxy.url, code="x", encrypt=True)
            with pytest.raises(StreamFailedError) as caught:
                await follow(connect)
        assert connect.session_id is not None
        started = served.get(connect.session_id)
        with anyio.fail_after(5):
            while not started.finished:  # noqa: ASYNC110 - the final follows the cancel
                await anyio.sleep(0.005)
    cause = caught.value.cause
    assert isinstance(cause, SessionStartLostError)
    assert (cause.session_id, cause.cancelled) == (connect.session_id, True)
    assert "cannot be decrypted" in str(cause)
    assert runner.runs == [connect.session_id]
    assert [r.method for r in connect.connections] == ["POST", "GET"]


async def test_with_server_ids_a_post_that_could_not_connect_is_sent_again() -> None:
    runner = Runner()
    app = create_broker_app(runner, config=SERVER_IDS)
    # Bound but not listening: the first POST is refused before any byte leaves.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="on", http="h11", ws="none", log_config=None)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)

    def on_retry(attempt: int, delay: float, error: Exception) -> None:
        if not thread.is_alive():
            thread.start()  # uvicorn listens on the socket from now on

    config = ReconnectionConfig(max_retries=20, initial_delay_ms=100, max_delay_ms=100)
    try:
        async with httpx.AsyncClient() as http:
            connect = broker_connector(
                http, f"http://127.0.0.1:{port}", code="x", encrypt=False, client_session_id=False
            )
            async with open_event_stream(connect, config=config, on_retry=on_retry) as events:
                received = [event async for event in events]
        assert connect.session_id is not None
        expected = stored(app.state.broker, connect.session_id)
    finally:
        server.should_exit = True
        await anyio.to_thread.run_sync(thread.join, 10)
        sock.close()
    assert runner.runs == [connect.session_id]
    assert received == expected
    methods = [record.method for record in connect.connections]
    assert set(methods) == {"POST"}
    assert len(methods) >= 2  # refused, then (once uvicorn listened) sent
