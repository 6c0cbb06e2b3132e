"""Sessions in a FastAPI service: the reference routes mounted, and routes of your own.

- ``create_broker_app`` is mounted under ``/enclave``. A mounted app gets no
  lifespan events, so the service's lifespan runs the broker app's; its
  broker (``broker_app.state.broker``) then serves the service's own routes too.
- ``POST /jobs`` starts a session with ``broker.new_stream(produce)`` (the
  broker's settings, resumable, cancellable) and streams it;
  ``GET /jobs/{id}?fromSeq=N`` resumes it; ``POST /jobs/{id}/cancel`` cancels it.
- ``POST /secret`` is an encrypted session: the body is the client's
  ClientHello, the ServerHello comes back in ``X-Enclave-Server-Hello``;
  ``session_connector`` follows it (resuming on ``GET /jobs/{id}``).
- ``POST /background`` produces with FastAPI's ``BackgroundTasks``, which
  ``ndjson_response`` runs beside the body.
- CORS stays opt-in: Starlette's ``CORSMiddleware``, exposing the headers a
  browser client must read.

uvicorn serves it on 127.0.0.1 (a free port); an httpx client uses each
route, and the script exits.

Run: ``python examples/serve_fastapi.py`` (``pip install fastapi``)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import msgspec
import uvicorn
from fastapi import BackgroundTasks, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware

from enclave_stream import (
    SERVER_HELLO_HEADER,
    ClientHandshake,
    EventStream,
    accept_client_hello,
    generate_session_id,
    open_event_stream,
)
from enclave_stream.events import ClientHello
from enclave_stream.producer import BrokerConfig, SessionBroker, SessionRequest
from enclave_stream.reconnect.http import broker_connector, session_connector
from enclave_stream.starlette import create_broker_app, ndjson_response


async def produce(stream: EventStream, steps: int = 5, pause: float = 0.01) -> None:
    """A session's producer: a few lines of output, then ``final``."""
    for step in range(1, steps + 1):
        stream.stdout(f"step {step}/{steps}\n")
        await anyio.sleep(pause)
    stream.final(True, {"steps": steps})


async def run_session(stream: EventStream, request: SessionRequest) -> None:
    """The runner of the mounted reference routes."""
    await produce(stream, steps=3)


broker_app = create_broker_app(run_session, config=BrokerConfig(heartbeat_interval_ms=1000))
broker: SessionBroker = broker_app.state.broker

api = FastAPI(lifespan=broker_app.router.lifespan_context)  # runs the broker
api.mount("/enclave", broker_app)
api.add_middleware(
    CORSMiddleware,
    allow_origins=["https://app.example"],
    expose_headers=["X-Session-ID", SERVER_HELLO_HEADER],
)


@api.post("/jobs")
async def start_job(slow: bool = False) -> Response:
    stream = broker.new_stream(lambda s: produce(s, steps=50 if slow else 5, pause=0.05))
    # The creator's response: it holds every event from seq 1.
    return ndjson_response(stream, hold=True, broker=broker)


@api.get("/jobs/{session_id}")
async def resume_job(session_id: str, fromSeq: int = 0) -> Response:
    return ndjson_response(broker.get(session_id), fromSeq, broker=broker)


@api.post("/jobs/{session_id}/cancel")
async def cancel_job(session_id: str) -> dict[str, Any]:
    await broker.cancel(session_id)
    return {"cancelled": session_id}


@api.post("/secret")
async def secret(request: Request) -> Response:
    hello = msgspec.json.decode(await request.body(), type=ClientHello)
    server_hello, session = accept_client_hello(hello, generate_session_id())
    stream = broker.new_stream(lambda s: produce(s, steps=2), session=session)
    hello_header = {SERVER_HELLO_HEADER: server_hello.to_json()}
    return ndjson_response(stream, headers=hello_header, hold=True, broker=broker)


@api.post("/background")
async def background(tasks: BackgroundTasks) -> Response:
    stream = EventStream(heartbeat_interval_ms=None)
    tasks.add_task(produce, stream, 3)
    return ndjson_response(stream)


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 and a free port; yields its URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        while not server.started:  # noqa: ASYNC110 - uvicorn has no startup event
            await anyio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True


def lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


async def main() -> None:
    async with serving(api) as url, httpx.AsyncClient(base_url=url, trust_env=False) as http:
        # The mounted reference routes, encrypted, with the library's client.
        connect = broker_connector(http, f"{url}/enclave", code="print(1)", encrypt=True)
        async with open_event_stream(connect, session=connect) as events:
            got = [event.type.value async for event in events]
        print(f"mounted routes: {len(got)} events, {got[0]} ... {got[-1]}")

        # An own route, left after two lines, then resumed where it stopped.
        async with http.stream("POST", "/jobs") as response:
            session_id = response.headers["X-Session-ID"]
            first: list[dict[str, Any]] = []
            async for line in response.aiter_lines():
                first.append(json.loads(line))
                if len(first) == 2:
                    break
        rest = lines((await http.get(f"/jobs/{session_id}", params={"fromSeq": 3})).content)
        seqs = [event["seq"] for event in first + rest]
        assert seqs == list(range(1, len(seqs) + 1))
        print(f"own route: read 2 events, resumed from seq 3, {len(seqs)} in all, once each")

        # Cancelled from another request.
        async with http.stream("POST", "/jobs", params={"slow": True}) as response:
            session_id = response.headers["X-Session-ID"]
            await http.post(f"/jobs/{session_id}/cancel")
            final = lines(b"".join([chunk async for chunk in response.aiter_bytes()]))[-1]
        print(f"cancelled: final ok={final['payload']['ok']} {final['payload']['error']['code']}")

        # An encrypted route of our own: the handshake completes from the
        # first response, and a cut would resume on GET /jobs/{id}.
        handshake = ClientHandshake()
        secret_session = session_connector(
            http,
            f"{url}/secret",
            f"{url}/jobs/{{session_id}}",
            handshake=handshake,
            json=handshake.client_hello.to_dict(),
        )
        async with open_event_stream(secret_session) as events:
            opened = [event async for event in events]
        print(f"encrypted route: {len(opened)} events opened, last {opened[-1].type.value}")

        # BackgroundTasks: the producer runs beside the body.
        with anyio.fail_after(10):
            produced = lines((await http.post("/background")).content)
        print(f"background tasks: {len(produced)} events, ending with {produced[-1]['type']}")

        refused = await http.get("/enclave/sessions", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in refused.headers
        print("CORS: only the allowed origin")


if __name__ == "__main__":
    anyio.run(main)
