"""Serve an ``EventStream`` with aiohttp, and read it with an aiohttp client.

An ``EventStream``'s ``ndjson_body(from_seq)`` is an async iterator of bytes,
so any server that can stream a response can serve it: here an aiohttp
``StreamResponse`` writes it chunk by chunk while a producer task appends the
events live. An aiohttp client reads the response with
``resp.content.iter_chunked(...)`` through ``parse_ndjson_stream``. Everything
runs on 127.0.0.1, on a free port.

Run: ``python examples/serve_aiohttp.py``
"""

from __future__ import annotations

import aiohttp
import anyio
from aiohttp import web

from enclave_stream import EventStream, LogEvent, StdoutEvent, parse_ndjson_stream


def make_app(stream: EventStream) -> web.Application:
    """``GET /stream?fromSeq=N`` streams the session from ``seq`` N, up to ``final``."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        async for chunk in stream.ndjson_body(int(request.query.get("fromSeq", 0))):
            await response.write(chunk)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/stream", handler)
    return app


async def produce(stream: EventStream) -> None:
    """The session, appended live while the client reads it."""
    stream.log("info", "building", {"target": "wasm32"})
    for module in ("parser", "encoder", "crypto"):
        await anyio.sleep(0.01)
        stream.stdout(f"compiled {module}\n")
    stream.final(True, {"modules": 3})


async def main() -> None:
    stream = EventStream(heartbeat_interval_ms=None)
    runner = web.AppRunner(make_app(stream), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with anyio.create_task_group() as tg, aiohttp.ClientSession() as http:
            tg.start_soon(produce, stream)
            async with http.get(f"http://{host}:{port}/stream") as resp:
                chunks = resp.content.iter_chunked(1024)
                received = [event async for event in parse_ndjson_stream(chunks)]
    finally:
        await runner.cleanup()

    for event in received:
        match event:
            case StdoutEvent():
                print(f"  #{event.seq} stdout  {event.payload.chunk.strip()}")
            case LogEvent():
                print(f"  #{event.seq} log     {event.payload.message} {event.payload.data}")
            case _:
                print(f"  #{event.seq} {event.type}")
    assert received == [entry.event for entry in stream.store.read(0)]
    print(f"aiohttp served {len(received)} events, the client parsed all {len(received)} intact")


if __name__ == "__main__":
    anyio.run(main)
