"""aiohttp_connector over real loopback HTTP: cuts mid-line are resumed, refusals are typed."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from enclave_stream.reconnect import (
    FatalConnectError,
    ReconnectionConfig,
    RetryableConnectError,
    StreamFailedError,
    open_event_stream,
)
from enclave_stream.reconnect.aiohttp import aiohttp_connector
from tests.integration.asgi_server import CuttingProxy, serve
from tests.reconnect.fakes import line, make_session

# aiohttp runs on asyncio only.
pytestmark = pytest.mark.parametrize("anyio_backend", ["asyncio"])

EVENTS = make_session(300, start=1)
FAST = ReconnectionConfig(max_retries=5, initial_delay_ms=0, jitter=False)


def _app() -> Any:
    async def stream(request: Request) -> Response:
        start = int(request.query_params.get("fromSeq", 1))
        body = b"".join(line(event) for event in EVENTS if event.seq >= start)

        async def chunks() -> AsyncIterator[bytes]:
            for index in range(0, len(body), 997):
                yield body[index : index + 997]

        return StreamingResponse(chunks(), media_type="application/x-ndjson")

    async def busy(request: Request) -> Response:
        return Response("try later", 503, headers={"Retry-After": "7"})

    async def html(request: Request) -> Response:
        return HTMLResponse("<html>sign in</html>")

    return Starlette(routes=[Route("/stream", stream), Route("/busy", busy), Route("/html", html)])


async def test_cuts_mid_line_are_resumed_and_every_event_arrives_once(anyio_backend: str) -> None:
    async with serve(_app()) as live, aiohttp.ClientSession() as http:
        port = int(live.url.rsplit(":", 1)[1])
        async with CuttingProxy(port, [5000, 7000]) as proxy:
            connect = aiohttp_connector(http, f"{proxy.url}/stream")
            async with open_event_stream(connect, config=FAST) as events:
                received = [event async for event in events]
        assert proxy.cut == 2
    assert received == EVENTS


@pytest.mark.parametrize(
    ("path", "kind", "words", "retry_after"),
    [
        ("/busy", RetryableConnectError, "HTTP 503 Service Unavailable: try later", 7.0),
        ("/html", FatalConnectError, "HTTP 200 OK, not NDJSON but text/html: <html>", None),
    ],
)
async def test_a_response_that_is_not_a_stream_is_refused(
    anyio_backend: str, path: str, kind: type[Exception], words: str, retry_after: float | None
) -> None:
    async with serve(_app()) as live, aiohttp.ClientSession() as http:
        with pytest.raises(kind, match=re.escape(words)) as info:
            async with aiohttp_connector(http, f"{live.url}{path}")(None):
                raise AssertionError("the body must not be handed out")
    assert getattr(info.value, "retry_after", None) == retry_after


async def test_a_fatal_status_stops_the_stream(anyio_backend: str) -> None:
    async with serve(_app()) as live, aiohttp.ClientSession() as http:
        connect = aiohttp_connector(http, f"{live.url}/html")
        async with open_event_stream(connect, config=FAST) as events:
            with pytest.raises(StreamFailedError, match="not NDJSON"):
                await events.__anext__()
