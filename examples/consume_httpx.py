"""Consume an event stream with httpx: ``async for event in source.aiter_events()``.

Starts a tiny Starlette service on 127.0.0.1 (a free port) that streams a
short session as NDJSON, an event every few milliseconds, then reads it with
``httpx`` as a client of an EnclaveJS broker would: each line becomes a typed
event (``StdoutEvent``, ``FinalEvent``, ...) as soon as it arrives.

Run: ``python examples/consume_httpx.py``
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
    FinalEvent,
    StdoutEvent,
    StreamEvent,
    generate_session_id,
    serialize_ndjson_stream,
)
from enclave_stream.events import FinalPayload, StdoutPayload
from enclave_stream.reconnect.http import aconnect_ndjson


async def weather_session() -> AsyncIterator[StreamEvent]:
    """A short session, produced live: an event every few milliseconds."""
    sid = generate_session_id()
    cities = ["Zürich", "東京", "Lagos"]
    for seq, city in enumerate(cities, start=1):
        yield StdoutEvent(sid, seq, StdoutPayload(f"fetching the weather for {city}\n"))
        await anyio.sleep(0.01)
    yield FinalEvent(sid, len(cities) + 1, FinalPayload(ok=True, result={"count": len(cities)}))


async def stream_session(request: Request) -> StreamingResponse:
    """The service: ``GET /stream`` sends the session as NDJSON."""
    body = serialize_ndjson_stream(weather_session())
    return StreamingResponse(body, media_type="application/x-ndjson")


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


async def main() -> None:
    app = Starlette(routes=[Route("/stream", stream_session)])
    seqs: list[int] = []
    last = None
    async with (
        serving(app) as url,
        httpx.AsyncClient(trust_env=False) as client,
        aconnect_ndjson(client, "GET", f"{url}/stream") as source,
    ):
        # The part this example is about: typed events, as the bytes arrive.
        async for event in source.aiter_events():
            match event:
                case StdoutEvent(payload=StdoutPayload(chunk=chunk)):
                    print(f"  #{event.seq} stdout  {chunk!r}")
                case FinalEvent(payload=FinalPayload(ok=ok, result=result)):
                    print(f"  #{event.seq} final   ok={ok} result={result}")
                case _:
                    print(f"  #{event.seq} {event.type}")
            seqs.append(event.seq)
            last = event

    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert isinstance(last, FinalEvent)
    print(f"consumed {len(seqs)} events over HTTP, in order, ending with final")


if __name__ == "__main__":
    anyio.run(main)
