"""``broker_connector`` against the Starlette broker app on uvicorn, over loopback.

It starts the session with ``POST /sessions`` (completing the handshake from
the response header, checking a pinned key), classifies failures as
``httpx_connector`` does, and counts what it received.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from starlette.responses import JSONResponse

from enclave_stream import SessionInitEvent
from enclave_stream.crypto import generate_signing_key
from enclave_stream.events import StreamEvent
from enclave_stream.producer import BrokerConfig, EventStream, SessionBroker, SessionRequest
from enclave_stream.reconnect import (
    FatalConnectError,
    ReconnectionConfig,
    StreamFailedError,
    open_event_stream,
)
from enclave_stream.reconnect.http import ConnectionRecord, broker_connector
from enclave_stream.starlette import create_broker_app
from tests.integration.asgi_server import HTTPX_CLOSED_EARLY, serve

pytestmark = [
    pytest.mark.anyio,
    *HTTPX_CLOSED_EARLY,
]

FAST_RETRIES = ReconnectionConfig(max_retries=3, initial_delay_ms=1, max_delay_ms=5)
# A broker that takes the session ids clients choose (broker_connector's default).
NAMED = BrokerConfig(heartbeat_interval_ms=None, client_session_ids=True)


@pytest.fixture
def anyio_backend() -> str:
    """uvicorn runs on asyncio only."""
    return "asyncio"


async def three_lines(stream: EventStream, request: SessionRequest) -> None:
    for index in range(3):
        stream.stdout(f"{request.code} {index}\n")
    stream.final(True, {"lines": 3})


@asynccontextmanager
async def broker(app: Any) -> AsyncIterator[tuple[str, SessionBroker]]:
    async with serve(app) as live:
        yield live.url, app.state.broker


async def follow(connect: Any, **kwargs: Any) -> list[StreamEvent]:
    async with open_event_stream(connect, config=FAST_RETRIES, **kwargs) as events:
        return [event async for event in events]


async def test_an_encrypted_session_with_a_pinned_key() -> None:
    key = generate_signing_key()
    app = create_broker_app(three_lines, config=NAMED, signing_key=key)
    async with broker(app) as (url, served), httpx.AsyncClient() as http:
        connect = broker_connector(http, url, code="echo", signing_public_key=key.public_key())
        assert connect.encrypted
        received = await follow(connect, session=connect)
        assert connect.session_id is not None
        stored = served.get(connect.session_id).store.read(0)

    assert received == [entry.event for entry in stored]
    assert [event.payload.chunk for event in received[1:4]] == ["echo 0\n", "echo 1\n", "echo 2\n"]  # type: ignore[union-attr]
    assert connect.connections == [ConnectionRecord("POST", None)]
    assert connect.bytes_received == sum(len(entry.line) for entry in stored)
    assert all(b'"type":"enc"' in entry.line for entry in stored)
    session = connect.session
    assert session is not None
    init = received[0]
    assert isinstance(init, SessionInitEvent)
    assert init.payload.encryption.key_id == session.key_id
    assert session.last_seq == received[-1].seq


async def test_a_server_signing_with_another_key_is_refused_at_once() -> None:
    app = create_broker_app(three_lines, config=NAMED, signing_key=generate_signing_key())
    async with broker(app) as (url, _), httpx.AsyncClient() as http:
        pinned = generate_signing_key().public_key()
        connect = broker_connector(http, url, code="x", signing_public_key=pinned)
        with pytest.raises(StreamFailedError) as caught:
            await follow(connect, session=connect)
    cause = caught.value.cause
    assert isinstance(cause, FatalConnectError)
    assert "ENCRYPTION_SIGNATURE_VERIFICATION_FAILED" in cause.reason
    assert len(connect.connections) == 1  # not retried
    assert connect.session is None


async def test_a_plaintext_session() -> None:
    app = create_broker_app(three_lines, config=BrokerConfig(heartbeat_interval_ms=None))
    async with broker(app) as (url, served), httpx.AsyncClient() as http:
        connect = broker_connector(http, url, code="plain", encrypt=False)
        received = await follow(connect)
        assert connect.session_id is not None
        stored = served.get(connect.session_id).store.read(0)
    assert received == [entry.event for entry in stored]
    assert connect.session is None
    assert not connect.encrypted
    assert all(b'"type":"stdout"' in entry.line for entry in stored[1:4])


async def test_a_4xx_is_fatal_and_a_5xx_is_retried() -> None:
    inner = create_broker_app(three_lines, config=NAMED)
    posts = 0

    async def busy_once(scope: Any, receive: Any, send: Any) -> None:
        nonlocal posts
        if scope["type"] == "http" and scope["method"] == "POST":
            posts += 1
            if posts == 1:
                await JSONResponse({"code": "BUSY"}, status_code=503)(scope, receive, send)
                return
        await inner(scope, receive, send)

    async with serve(busy_once) as live, httpx.AsyncClient() as http:
        connect = broker_connector(http, live.url, code="x", encrypt=False)
        received = await follow(connect)
        assert len(received) == 5
        # A 5xx may come from a gateway the POST went through: look for the session first.
        assert [record.method for record in connect.connections] == ["POST", "GET", "POST"]

        missing = broker_connector(http, f"{live.url}/nowhere", code="x")
        with pytest.raises(StreamFailedError) as caught:
            await follow(missing, session=missing)
    cause = caught.value.cause
    assert isinstance(cause, FatalConnectError)
    assert cause.status_code == 404
    assert len(missing.connections) == 1


async def test_extra_request_fields_and_headers_are_sent() -> None:
    seen: list[object] = []

    async def runner(stream: EventStream, request: SessionRequest) -> None:
        seen.extend([request.session_id, request.heartbeat_interval_ms])
        stream.final(True)

    inner = create_broker_app(runner, config=BrokerConfig(client_session_ids=True))
    authorizations: list[bytes | None] = []

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            authorizations.append(dict(scope["headers"]).get(b"authorization"))
        await inner(scope, receive, send)

    async with serve(recording) as live, httpx.AsyncClient() as http:
        connect = broker_connector(
            http,
            live.url,
            code="x",
            encrypt=False,
            request={"sessionId": "s_chosen", "limits": {"heartbeatIntervalMs": 5000}},
            headers={"Authorization": "Bearer t"},
        )
        await follow(connect)
    assert connect.session_id == "s_chosen"
    assert seen == ["s_chosen", 5000]
    assert authorizations == [b"Bearer t"]


def test_contradictory_arguments() -> None:
    client = httpx.AsyncClient()
    key = generate_signing_key().public_key()
    with pytest.raises(ValueError, match="encrypt=True"):
        broker_connector(
            client, "http://127.0.0.1:1", code="x", encrypt=False, signing_public_key=key
        )
    connect = broker_connector(client, "http://127.0.0.1:1", code="x", encrypt=False)
    with pytest.raises(ValueError, match="not encrypted"):
        connect.open(None)  # type: ignore[arg-type]
    anyio.run(client.aclose)
