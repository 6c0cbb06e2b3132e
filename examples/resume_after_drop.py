"""A connection cut mid-stream: the client resumes with ``fromSeq`` and gets every event once.

The service streams a session of 60 events as ``GET /stream?fromSeq=N``. The
first response is cut in the middle of a line, as a dropped connection would
leave it. ``open_event_stream`` (through ``httpx_connector``) throws the half
line away, reconnects after a short backoff asking for ``?fromSeq=N`` (the
first event it has not delivered), and the loop sees every event exactly
once, in order, up to ``final``. Everything runs on 127.0.0.1, on a free port.

Run: ``python examples/resume_after_drop.py``
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from enclave_stream import (
    ConnectionState,
    EventStream,
    ReconnectionConfig,
    StreamEvent,
    open_event_stream,
)
from enclave_stream.reconnect.http import httpx_connector


def make_app(stream: EventStream, requests: list[str]) -> Starlette:
    """``GET /stream?fromSeq=N``; the first response breaks off halfway through line 25."""

    async def body(from_seq: int, cut: bool) -> AsyncIterator[bytes]:
        sent = 0
        async for chunk in stream.ndjson_body(from_seq):
            for line in chunk.splitlines(keepends=True):
                sent += 1
                if cut and sent == 25:
                    yield line[: len(line) // 2]
                    raise ConnectionAbortedError("the network dropped the connection")
                yield line

    async def resume(request: Request) -> StreamingResponse:
        query = request.url.query
        requests.append(f"GET {request.url.path}{'?' + query if query else ''}")
        from_seq = int(request.query_params.get("fromSeq", 0))
        cut = len(requests) == 1
        return StreamingResponse(body(from_seq, cut), media_type="application/x-ndjson")

    return Starlette(routes=[Route("/stream", resume)])


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 and a free port; yields its URL."""
    # log_level="critical": uvicorn would report the dropped response as an error.
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="critical"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        while not server.started:  # noqa: ASYNC110 - uvicorn has no startup event
            await anyio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True


async def main() -> None:
    stream = EventStream(heartbeat_interval_ms=None)
    for index in range(58):
        stream.stdout(f"line {index}: {'#' * (index % 17)}\n")
    stream.final(True, {"lines": 58})
    requests: list[str] = []
    states: list[ConnectionState] = []

    async with (
        serving(make_app(stream, requests)) as url,
        httpx.AsyncClient(trust_env=False) as client,
    ):
        connect = httpx_connector(client, f"{url}/stream")
        retry_soon = ReconnectionConfig(initial_delay_ms=50)
        async with open_event_stream(connect, config=retry_soon, on_state=states.append) as events:
            received: list[StreamEvent] = [event async for event in events]

    print("requests the server got:", *requests, sep="\n  ")
    print("client states:", " -> ".join(states))
    expected = [entry.event for entry in stream.store.read(0)]
    assert received == expected, "an event was lost or repeated"
    assert requests == ["GET /stream", "GET /stream?fromSeq=25"], requests
    print(f"all {len(received)} events arrived exactly once, in order, across 1 dropped connection")


if __name__ == "__main__":
    anyio.run(main)
