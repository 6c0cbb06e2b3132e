"""Encrypted sessions on a service's own routes, followed with ``session_connector`` (issue 14).

The handshake completes from the first response (``POST /secret`` answers
with the ServerHello header), before any envelope needs opening; the resume
route (``GET /jobs/{id}?fromSeq=N``) carries on after real TCP cuts. The
ClientHello goes in the request as ``json=hello.to_dict()``. Real uvicorn on
127.0.0.1 (in a thread) with a FastAPI app like ``examples/serve_fastapi.py``;
the client on asyncio and trio.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from fastapi import FastAPI, Request, Response

from enclave_stream import (
    SERVER_HELLO_HEADER,
    ClientHandshake,
    EventStream,
    accept_client_hello,
    generate_session_id,
)
from enclave_stream.events import ClientHello, FinalEvent, StdoutEvent, StreamEvent
from enclave_stream.producer import BrokerConfig, SessionBroker
from enclave_stream.reconnect import (
    EncryptionNotAcceptedError,
    ReconnectionConfig,
    StreamFailedError,
    open_event_stream,
)
from enclave_stream.reconnect.http import session_connector
from enclave_stream.starlette import create_broker_app, ndjson_response
from tests.integration.asgi_server import HTTPX_CLOSED_EARLY, CuttingProxy, serve_in_thread

pytestmark = [
    pytest.mark.anyio,
    *HTTPX_CLOSED_EARLY,
]

FAST_RETRIES = ReconnectionConfig(max_retries=4, initial_delay_ms=1, max_delay_ms=5)
LINES = 300


async def produce(stream: EventStream) -> None:
    for index in range(LINES):
        stream.stdout(f"secret line {index}\n")
    stream.final(True, {"lines": LINES})


async def endless(stream: EventStream) -> None:
    stream.stdout("started\n")
    await anyio.sleep_forever()


def own_app() -> tuple[FastAPI, SessionBroker]:
    broker_app = create_broker_app(produce, config=BrokerConfig(heartbeat_interval_ms=None))
    broker: SessionBroker = broker_app.state.broker
    api = FastAPI(lifespan=broker_app.router.lifespan_context)
    api.mount("/enclave", broker_app)

    @api.post("/secret")
    async def secret(request: Request) -> Response:
        hello = msgspec.json.decode(await request.body(), type=ClientHello)
        server_hello, session = accept_client_hello(hello, generate_session_id())
        stream = broker.new_stream(produce, session=session)
        return ndjson_response(stream, headers={SERVER_HELLO_HEADER: server_hello.to_json()})

    @api.post("/plain")  # a route that takes no notice of the ClientHello
    async def plain(request: Request) -> Response:
        return ndjson_response(broker.new_stream(endless))

    @api.get("/jobs/{session_id}")
    async def resume(session_id: str, fromSeq: int = 0) -> Response:
        return ndjson_response(broker.get(session_id), fromSeq)

    @api.post("/jobs/{session_id}/cancel")
    async def cancel(session_id: str) -> dict[str, Any]:
        await broker.cancel(session_id)
        return {"cancelled": session_id}

    return api, broker


@asynccontextmanager
async def own_routes() -> AsyncIterator[tuple[int, SessionBroker]]:
    api, broker = own_app()
    async with serve_in_thread(api) as port:  # the client may run on asyncio or trio
        yield port, broker


async def follow(connect: Any) -> list[StreamEvent]:
    async with open_event_stream(connect, config=FAST_RETRIES) as events:
        return [event async for event in events]


def test_hellos_serialize_to_json_directly() -> None:
    hello = ClientHandshake().client_hello
    wire = hello.to_dict()
    assert json.loads(json.dumps(wire)) == wire  # what httpx's json= does
    assert set(wire) == {
        "protocolVersion",
        "clientEphemeralPubKeyB64",
        "curve",
        "supportedAlgorithms",
    }
    assert msgspec.json.decode(hello.to_json(), type=ClientHello) == hello
    server_hello, _ = accept_client_hello(wire, generate_session_id())
    assert json.loads(server_hello.to_json()) == server_hello.to_dict()
    assert "keyId" in server_hello.to_dict()


async def test_an_encrypted_own_route_is_decrypted_from_its_first_response_and_resumed() -> None:
    async with own_routes() as (port, broker), httpx.AsyncClient() as http:
        # The POST's stream is cut after 8 kB, the first resume's after 8 kB more.
        async with CuttingProxy(port, [8000, 8000]) as proxy:
            handshake = ClientHandshake()
            connect = session_connector(
                http,
                f"{proxy.url}/secret",
                f"{proxy.url}/jobs/{{session_id}}",
                handshake=handshake,
                json=handshake.client_hello.to_dict(),
            )
            assert connect.encrypted
            # No session= given: the connector is the session once the POST answered.
            async with open_event_stream(connect, config=FAST_RETRIES) as events:
                received: list[StreamEvent] = [event async for event in events]
        assert proxy.cut == 2
        assert connect.session_id is not None
        stored = broker.get(connect.session_id).store.read(0)

    assert all(b'"type":"enc"' in entry.line for entry in stored)  # encrypted on the wire
    assert [event.seq for event in received] == list(range(1, LINES + 3))
    stdout = [event.payload.chunk for event in received if isinstance(event, StdoutEvent)]
    assert stdout == [f"secret line {index}\n" for index in range(LINES)]
    assert isinstance(received[-1], FinalEvent)
    methods = [record.method for record in connect.connections]
    assert methods == ["POST", "GET", "GET"]
    assert connect.session is not None
    assert connect.session.session_id == connect.session_id


async def test_an_own_route_that_ignores_the_hello_is_cancelled_and_said_to_have_started() -> None:
    async with own_routes() as (port, broker), httpx.AsyncClient() as http:
        url = f"http://127.0.0.1:{port}"
        handshake = ClientHandshake()
        connect = session_connector(
            http,
            f"{url}/plain",
            f"{url}/jobs/{{session_id}}",
            handshake=handshake,
            cancel_url=f"{url}/jobs/{{session_id}}/cancel",
            json=handshake.client_hello.to_dict(),
        )
        with pytest.raises(StreamFailedError) as caught:
            await follow(connect)
        assert connect.session_id is not None
        started = broker.get(connect.session_id)
        with anyio.fail_after(5):
            while not started.finished:  # noqa: ASYNC110 - the final follows the cancel
                await anyio.sleep(0.005)
    assert caught.value.events_delivered == 0  # no plaintext event was delivered
    cause = caught.value.cause
    assert isinstance(cause, EncryptionNotAcceptedError)
    assert cause.cancelled
    assert cause.session_id == connect.session_id
    assert [record.method for record in connect.connections] == ["POST"]


def test_the_resume_url_must_name_the_session() -> None:
    client = httpx.AsyncClient()
    with pytest.raises(ValueError, match="session_id"):
        session_connector(client, "http://127.0.0.1:1/a", "http://127.0.0.1:1/b")
    anyio.run(client.aclose)
