"""httpx_connector over httpx.MockTransport (request shape, status classification);
aconnect_ndjson over real loopback HTTP."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import pytest

from enclave_stream.events import StreamEvent
from enclave_stream.reconnect import (
    FatalConnectError,
    ReconnectionConfig,
    RetryableConnectError,
    StreamFailedError,
    open_event_stream,
)
from enclave_stream.reconnect.http import aconnect_ndjson, httpx_connector
from tests.integration.asgi_server import serve_in_thread
from tests.reconnect.fakes import Body, consume, line, make_session

pytestmark = [
    pytest.mark.anyio,
    # httpx's response iterators are nested async generators, and closing the
    # outer one early leaves the inner ones to the garbage collector, which trio
    # reports (encode/httpx#3686). The stream closes what it is given.
    pytest.mark.filterwarnings(r"ignore:Async generator 'httpx\.:ResourceWarning"),
]

URL = "http://broker.test/sessions/s_test-session/stream"
FAST = ReconnectionConfig(max_retries=5, initial_delay_ms=0, jitter=False)
LINES = [line(event) for event in make_session(6)]

Handler = Callable[[httpx.Request], httpx.Response]


def client_for(handler: Handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def from_seq_of(request: httpx.Request) -> int:
    return int(request.url.params.get("fromSeq", 0))


async def test_sends_accept_and_no_from_seq_on_the_first_connect() -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, content=b"".join(LINES))

    async with client_for(handler) as client:
        connect = httpx_connector(client, URL, headers={"Authorization": "Bearer t"})
        async with connect(None) as source:
            data = b"".join([chunk async for chunk in source])
    assert data == b"".join(LINES)
    (request,) = requests
    assert request.method == "GET"
    assert request.headers["accept"] == "application/x-ndjson"
    assert request.headers["authorization"] == "Bearer t"
    assert "fromSeq" not in request.url.params


async def test_adds_from_seq_to_the_query_it_already_has() -> None:
    urls: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        urls.append(request.url)
        return httpx.Response(200, content=b"")

    async with client_for(handler) as client:
        connect = httpx_connector(client, URL + "?fromSeq=1&a=1", method="POST", params={"b": "2"})
        async with connect(42) as source:
            assert [chunk async for chunk in source] == []
        async with connect(None) as source:
            pass
    assert dict(urls[0].params) == {"a": "1", "b": "2", "fromSeq": "42"}
    assert dict(urls[1].params) == {"a": "1", "b": "2", "fromSeq": "1"}  # the caller's own


async def test_an_accept_header_of_the_caller_wins() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["accept"])
        return httpx.Response(200)

    async with (
        client_for(handler) as client,
        httpx_connector(client, URL, headers={"accept": "text/plain"})(None),
    ):
        pass
    assert seen == ["text/plain"]


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (500, RetryableConnectError),
        (502, RetryableConnectError),
        (503, RetryableConnectError),
        (429, RetryableConnectError),
        (400, FatalConnectError),
        (401, FatalConnectError),
        (403, FatalConnectError),
        (404, FatalConnectError),
        (408, FatalConnectError),
        (301, FatalConnectError),
    ],
)
async def test_status_codes_are_classified(status: int, kind: type[Exception]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=b'{"error":\n  "nope"}' + b" " * 500 + b"tail")

    async with client_for(handler) as client:
        with pytest.raises(kind) as caught:
            async with httpx_connector(client, URL)(None):
                pytest.fail("an error status must not be streamed")
    error = caught.value
    assert isinstance(error, FatalConnectError | RetryableConnectError)
    assert error.status_code == status
    assert str(error).startswith(f"HTTP {status} ")
    assert str(error).endswith('{"error": "nope"}')  # body start, white space folded


async def test_transport_errors_become_retryable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with client_for(refuse) as client:
        with pytest.raises(RetryableConnectError, match="ConnectError: connection refused"):
            async with httpx_connector(client, URL)(None):
                pass

    def cut(request: httpx.Request) -> httpx.Response:
        error = httpx.RemoteProtocolError("peer closed connection", request=request)
        return httpx.Response(200, content=Body(LINES[:2], error))

    async def read_all(client: httpx.AsyncClient) -> None:
        async with httpx_connector(client, URL)(None) as source:
            async for _ in source:
                pass

    async with client_for(cut) as client:
        with pytest.raises(RetryableConnectError, match="RemoteProtocolError") as caught:
            await read_all(client)
        assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)


async def test_resumes_a_session_through_open_event_stream() -> None:
    calls: list[int | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        start = from_seq_of(request) if "fromSeq" in request.url.params else None
        calls.append(start)
        if len(calls) == 2:
            return httpx.Response(503, content=b"busy")
        lines = LINES[start or 0 :]
        if len(calls) == 1:
            cut = httpx.ReadError("reset", request=request)
            return httpx.Response(200, content=Body(lines[:3], cut))
        return httpx.Response(200, content=Body(lines))

    received: list[StreamEvent] = []
    async with client_for(handler) as client:
        await consume(open_event_stream(httpx_connector(client, URL), config=FAST), received)
    seqs = [event.seq for event in received]
    assert seqs == list(range(6))
    assert calls == [None, 3, 3]


async def test_a_401_stops_the_stream_at_once() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(401, content=b"token expired")

    async with client_for(handler) as client:
        stream = open_event_stream(httpx_connector(client, URL), config=FAST)
        with pytest.raises(StreamFailedError, match="HTTP 401 Unauthorized: token expired"):
            await consume(stream, [])
    assert calls == 1


async def test_the_read_timeout_is_left_to_the_heartbeat() -> None:
    timeouts: list[dict[str, float | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        timeouts.append(request.extensions["timeout"])
        return httpx.Response(200)

    async with httpx.AsyncClient(
        transport=httpx.MockTransport(handler), timeout=httpx.Timeout(3.0, connect=7.0)
    ) as client:
        async with httpx_connector(client, URL)(None):
            pass
        async with httpx_connector(client, URL, timeout=2.0)(None):
            pass
    assert timeouts[0] == {"connect": 7.0, "read": None, "write": 3.0, "pool": 3.0}
    assert timeouts[1] == {"connect": 2.0, "read": 2.0, "write": 2.0, "pool": 2.0}


def test_the_core_works_without_httpx() -> None:
    # A child interpreter in which httpx cannot be imported.
    code = (
        "import sys; sys.modules['httpx'] = None\n"
        "import enclave_stream.reconnect as r\n"
        "assert r.open_event_stream\n"
        "try:\n"
        "    import enclave_stream.reconnect.http\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install 'enclave-stream[httpx]'" in result.stdout


# --- aconnect_ndjson: one checked response, over real loopback HTTP ------------------


def _loopback_app() -> Any:
    """A Starlette app: /events (NDJSON with a pause), /html, /missing (404), /busy (503)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    async def events(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield LINES[0]
            await anyio.sleep(0.5)  # longer than the client's read timeout below
            for item in LINES[1:]:
                yield item

        return StreamingResponse(
            body(),
            media_type="application/x-ndjson",
            headers={"x-accept-seen": request.headers.get("accept", "")},
        )

    async def html(request: Request) -> Response:
        return HTMLResponse("<html><body>Please sign in</body></html>")

    async def missing(request: Request) -> Response:
        return JSONResponse({"code": "NOT_FOUND", "message": "no such session"}, 404)

    async def busy(request: Request) -> Response:
        return Response("try later", 503)

    return Starlette(
        routes=[
            Route("/events", events),
            Route("/html", html),
            Route("/missing", missing),
            Route("/busy", busy),
        ]
    )


async def test_aconnect_ndjson_reads_typed_events_across_a_pause() -> None:
    # httpx's own read timeout (here 0.2 s) would cut the 0.5 s pause.
    async with serve_in_thread(_loopback_app()) as port, httpx.AsyncClient(timeout=0.2) as client:
        url = f"http://127.0.0.1:{port}/events"
        async with aconnect_ndjson(client, "GET", url) as source:
            assert source.response.headers["x-accept-seen"] == "application/x-ndjson"
            events = [event async for event in source.aiter_events(strict=True)]
    assert [(event.type, event.seq) for event in events] == [
        (event.type, event.seq) for event in make_session(6)
    ]


@pytest.mark.parametrize(
    ("path", "kind", "status", "words"),
    [
        ("/html", FatalConnectError, 200, "not NDJSON but text/html: <html><body>Please sign in"),
        ("/missing", FatalConnectError, 404, 'HTTP 404 Not Found: {"code":"NOT_FOUND"'),
        ("/busy", RetryableConnectError, 503, "HTTP 503 Service Unavailable: try later"),
    ],
)
async def test_aconnect_ndjson_refuses_what_is_not_a_stream(
    path: str, kind: type[Exception], status: int, words: str
) -> None:
    async with serve_in_thread(_loopback_app()) as port, httpx.AsyncClient() as client:
        with pytest.raises(kind, match=re.escape(words)) as info:
            async with aconnect_ndjson(client, "GET", f"http://127.0.0.1:{port}{path}"):
                raise AssertionError("the body must not be handed out")
    assert info.value.status_code == status  # type: ignore[attr-defined]


async def test_the_resumable_stream_gives_up_on_an_html_page() -> None:
    async with serve_in_thread(_loopback_app()) as port, httpx.AsyncClient() as client:
        stream = open_event_stream(
            httpx_connector(client, f"http://127.0.0.1:{port}/html"), config=FAST
        )
        with pytest.raises(StreamFailedError, match="not NDJSON but text/html"):
            await consume(stream, [])


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after-ms": "1500", "Retry-After": "9"}, 1.5),
        ({"Retry-After": "Fri, 01 Jan 2100 00:00:00 GMT"}, "far"),
        ({"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
async def test_retry_after_is_read_from_a_busy_response(
    headers: dict[str, str], expected: float | str | None
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers=headers, content=b"busy")

    async with client_for(handler) as client:
        with pytest.raises(RetryableConnectError) as info:
            async with httpx_connector(client, URL)(None):
                pass
    wait = info.value.retry_after
    if expected == "far":
        assert wait is not None
        assert wait > 365 * 24 * 3600
    else:
        assert wait == expected
