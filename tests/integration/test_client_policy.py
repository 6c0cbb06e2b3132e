"""The reconnection policy of every client, over real loopback HTTP (issue 14, section 2).

Each test runs with each client the library has: ``httpx_connector`` on
asyncio and on trio, ``aiohttp_connector`` (asyncio only), and the
synchronous ``follow_event_stream`` over ``httpx.Client``. A Starlette app on
uvicorn (its own thread, 127.0.0.1) plays a script per test: busy answers
with ``Retry-After``, cuts before ``final``, a refusal, a stall.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from enclave_stream import LineError, iter_ndjson_stream
from enclave_stream.events import StreamEvent
from enclave_stream.reconnect import (
    ConnectionState,
    DisconnectedEvent,
    ReconnectionConfig,
    ReconnectionEvent,
    RetryableConnectError,
    StreamFailedError,
    follow_event_stream,
    open_event_stream,
)
from enclave_stream.reconnect.aiohttp import aiohttp_connector
from enclave_stream.reconnect.http import httpx_connector, httpx_sync_connector
from tests.integration.asgi_server import HTTPX_CLOSED_EARLY, serve_in_thread, start_in_thread
from tests.reconnect.fakes import line, make_session

pytestmark = [
    pytest.mark.anyio,
    *HTTPX_CLOSED_EARLY,
]

EVENTS = make_session(40, start=1)
CLIENTS = pytest.mark.parametrize(
    ("anyio_backend", "client"),
    [
        ("asyncio", "httpx"),
        ("trio", "httpx"),
        ("asyncio", "aiohttp"),
        ("asyncio", "sync"),
    ],
    ids=["httpx-asyncio", "httpx-trio", "aiohttp-asyncio", "sync-httpx"],
)


class Script:
    """The server's answers on one path, in order; ``asked`` records each ``fromSeq``."""

    def __init__(self, *answers: str, headers: list[dict[str, str]] | None = None) -> None:
        self._answers = iter(answers)
        self._headers = iter(headers or [])
        self.asked: list[int | None] = []
        self._lock = threading.Lock()

    def next(self, from_seq: int | None) -> tuple[str, dict[str, str]]:
        with self._lock:
            self.asked.append(from_seq)
            return next(self._answers, "ok"), next(self._headers, {})


def _app(scripts: dict[str, Script]) -> Any:
    async def stream(request: Request) -> Response:
        given = request.query_params.get("fromSeq")
        start = None if given is None else int(given)
        answer, headers = scripts[request.path_params["name"]].next(start)
        if answer == "busy":
            return Response("busy", 503, headers=headers)
        if answer == "forbidden":
            return Response("no", 403)
        body = b"".join(line(event) for event in EVENTS if event.seq >= (start or 1))
        if answer == "cut":  # the body ends in the middle of a line, before final
            body = body[: len(body) // 2]
        stall = answer == "stall"
        if stall:  # three events on the first connection, then silence
            body = b"".join(line(event) for event in EVENTS[:3]) if start is None else b""

        async def chunks() -> AsyncIterator[bytes]:
            for index in range(0, len(body), 500):
                yield body[index : index + 500]
            if stall:
                await anyio.sleep_forever()

        return StreamingResponse(chunks(), media_type="application/x-ndjson")

    return Starlette(routes=[Route("/s/{name}", stream)])


@asynccontextmanager
async def server(**scripts: Script) -> AsyncIterator[str]:
    async with serve_in_thread(_app(scripts)) as port:
        yield f"http://127.0.0.1:{port}/s"


async def follow(client: str, url: str, **options: Any) -> list[StreamEvent]:
    """Every event of ``url`` with ``client``; the options go to the stream."""
    if client == "sync":
        with httpx.Client() as http:
            connect = httpx_sync_connector(http, url, read_timeout_s=0.2)
            follow_options = {k: v for k, v in options.items() if k != "heartbeat_timeout_ms"}

            def run() -> list[StreamEvent]:
                return list(follow_event_stream(connect, **follow_options))

            return await anyio.to_thread.run_sync(run)
    async with connector(client, url) as connect, open_event_stream(connect, **options) as events:
        return [event async for event in events]


@asynccontextmanager
async def connector(client: str, url: str) -> AsyncIterator[Any]:
    if client == "aiohttp":
        async with aiohttp.ClientSession() as session:
            yield aiohttp_connector(session, url)
    else:
        async with httpx.AsyncClient() as http:
            yield httpx_connector(http, url)


def retries() -> tuple[list[tuple[int, float, Exception]], Callable[..., None]]:
    seen: list[tuple[int, float, Exception]] = []

    def on_retry(attempt: int, delay: float, error: Exception) -> None:
        seen.append((attempt, delay, error))

    return seen, on_retry


@CLIENTS
async def test_retry_after_is_waited_out_within_the_cap(client: str) -> None:
    script = Script("busy", "busy", "ok", headers=[{"Retry-After": "3"}, {"retry-after-ms": "30"}])
    seen, on_retry = retries()
    config = ReconnectionConfig(initial_delay_ms=1, max_delay_ms=40, jitter=False)
    async with server(busy=script) as base:
        received = await follow(client, f"{base}/busy", config=config, on_retry=on_retry)
    assert received == EVENTS
    # 3 s asked: the 40 ms cap; 30 ms asked: 30 ms, where the backoff said 1 and 2 ms.
    assert [(attempt, delay) for attempt, delay, _ in seen] == [(1, 0.04), (2, 0.03)]
    errors = [error for _, _, error in seen]
    assert all(isinstance(error, RetryableConnectError) for error in errors)
    assert [error.retry_after for error in errors] == [3.0, 0.03]  # type: ignore[attr-defined]
    assert [error.status_code for error in errors] == [503, 503]  # type: ignore[attr-defined]


@CLIENTS
async def test_max_retries_none_retries_past_any_count(client: str) -> None:
    failures = 8  # more than the default 5
    script = Script(*["busy"] * failures, "ok")
    seen, on_retry = retries()
    config = ReconnectionConfig(max_retries=None, initial_delay_ms=1, max_delay_ms=2, jitter=False)
    async with server(flaky=script) as base:
        received = await follow(client, f"{base}/flaky", config=config, on_retry=on_retry)
    assert received == EVENTS
    assert [attempt for attempt, _, _ in seen] == list(range(1, failures + 1))
    assert len(script.asked) == failures + 1


@CLIENTS
async def test_decisions_are_logged_and_reported_with_their_reasons(
    client: str, caplog: pytest.LogCaptureFixture
) -> None:
    cut = Script("cut", "ok")
    refused = Script("forbidden")
    seen: list[ReconnectionEvent] = []
    states: list[ConnectionState] = []
    retried, on_retry = retries()
    config = ReconnectionConfig(max_retries=3, initial_delay_ms=1, jitter=False)
    with caplog.at_level(logging.INFO, logger="enclave_stream"):
        async with server(cut=cut, refused=refused) as base:
            received = await follow(
                client,
                f"{base}/cut",
                config=config,
                on_event=seen.append,
                on_state=states.append,
                on_retry=on_retry,
            )
            with pytest.raises(StreamFailedError, match="HTTP 403") as caught:
                await follow(client, f"{base}/refused", config=config)
    assert received == EVENTS
    resumed_at = cut.asked[1]
    assert resumed_at is not None
    assert 1 < resumed_at < len(EVENTS)  # from the first event it did not have
    messages = [record.getMessage() for record in caplog.records]
    reason = "the stream ended in the middle of a line before the final event"
    assert messages[:2] == [
        f"event stream: retrying in 0.001 s (attempt 1/3): {reason}",
        f"event stream: resumed at seq {resumed_at}",
    ]
    assert messages[2].startswith("event stream: gave up: fatal error: FatalConnectError: HTTP 403")
    assert [e.reason for e in seen if isinstance(e, DisconnectedEvent)] == [reason]
    assert states == [
        "connecting",
        "connected",
        "reconnecting",
        "connecting",
        "connected",
        "closed",
    ]
    [(attempt, delay, error)] = retried
    assert (attempt, delay, str(error)) == (1, 0.001, reason)
    assert caught.value.events_delivered == 0


@CLIENTS
async def test_a_restarted_process_starts_from_its_saved_position(client: str) -> None:
    script = Script("ok")
    async with server(saved=script) as base:
        received = await follow(client, f"{base}/saved", from_seq=25)
    assert received == EVENTS[24:]
    assert script.asked == [25]


@CLIENTS
async def test_the_overall_deadline_ends_a_stream_that_never_finishes(client: str) -> None:
    script = Script(*["stall"] * 1000)
    config = ReconnectionConfig(max_retries=None, initial_delay_ms=1, max_delay_ms=20)
    with anyio.fail_after(10):
        async with server(stall=script) as base:
            with pytest.raises(StreamFailedError, match="the deadline of 300 ms passed") as caught:
                # The stream itself never goes silent long enough to be retried for
                # it (async): only the deadline can end it.
                await follow(
                    client,
                    f"{base}/stall",
                    config=config,
                    deadline_ms=300,
                    heartbeat_timeout_ms=None,
                )
    assert caught.value.events_delivered == 3
    assert caught.value.last_seq == 3


@pytest.mark.parametrize(
    ("anyio_backend", "client"),
    [("asyncio", "httpx"), ("trio", "httpx"), ("asyncio", "aiohttp")],
    ids=["httpx-asyncio", "httpx-trio", "aiohttp-asyncio"],
)
async def test_the_stream_says_where_it_is_and_is_closed_after_aclose(client: str) -> None:
    script = Script("stall")
    async with (
        server(stall=script) as base,
        connector(client, f"{base}/stall") as connect,
        open_event_stream(connect, heartbeat_timeout_ms=None) as events,
    ):
        taken: list[StreamEvent] = []
        async for event in events:
            taken.append(event)
            if len(taken) == 3:
                break
        assert repr(events) == "<ResumableEventStream state=connected delivered=3 last_seq=3>"
        await events.aclose()
        assert events.state is ConnectionState.CLOSED
        assert repr(events).startswith("<ResumableEventStream state=closed delivered=3 ")
        assert [event async for event in events] == []
    assert taken == EVENTS[:3]


def test_the_sync_parse_iterator_reads_an_httpx_client_response() -> None:
    """The README's synchronous loop, as written there, over loopback HTTP."""
    script = Script("cut")  # the body stops in the middle of a line
    with start_in_thread(_app({"plain": script})) as port:
        url = f"http://127.0.0.1:{port}/s/plain"
        errors: list[LineError] = []
        with (
            httpx.Client(timeout=httpx.Timeout(10, read=None)) as client,
            client.stream("GET", url) as response,
        ):
            received = list(iter_ndjson_stream(response.iter_bytes(), on_error=errors.append))
    assert received == EVENTS[: len(received)]
    assert 0 < len(received) < len(EVENTS)
    assert [error.kind for error in errors] == ["json"]  # the half line at the end
