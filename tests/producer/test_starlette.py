"""enclave_stream.starlette without a server: responses and the overtaken reader."""

from __future__ import annotations

import json
import logging
import signal
from functools import partial
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Mount

from enclave_stream.producer import BrokerConfig, EventStream, SessionBroker
from enclave_stream.producer.responses import DEFAULT_SEND_TIMEOUT_SECONDS
from enclave_stream.producer.stream import DEFAULT_DRAIN_TIMEOUT
from enclave_stream.starlette import create_broker_app, ndjson_response

pytestmark = pytest.mark.anyio


async def test_ndjson_response_headers_and_body() -> None:
    stream = EventStream("s_1", heartbeat_interval_ms=None)
    stream.stdout("x")
    stream.final(True)
    response = ndjson_response(stream, 2, headers={"X-Extra": "1"})
    assert isinstance(response, StreamingResponse)
    assert response.status_code == 200
    assert response.media_type == "application/x-ndjson"
    headers = dict(response.headers)
    assert headers["content-type"] == "application/x-ndjson"
    assert headers["cache-control"] == "no-cache"
    assert headers["x-accel-buffering"] == "no"
    assert headers["x-session-id"] == "s_1"
    assert headers["x-extra"] == "1"
    body = b"".join([chunk async for chunk in response.body_iterator])  # type: ignore[misc]
    assert [json.loads(line)["seq"] for line in body.splitlines()] == [2, 3]


async def test_ndjson_response_for_a_dropped_seq_is_410() -> None:
    stream = EventStream("s_1", heartbeat_interval_ms=None, max_events=2)
    for _ in range(4):
        stream.stdout("x")
    response = ndjson_response(stream, 1)
    assert isinstance(response, JSONResponse)
    assert response.status_code == 410
    assert json.loads(bytes(response.body)) == {
        "code": "REPLAY_UNAVAILABLE",
        "message": "events from seq 1 are no longer held (the oldest held is 4)",
        "details": {"requestedSeq": 1, "firstAvailableSeq": 4},
    }


async def test_an_overtaken_reader_has_its_response_ended(caplog: pytest.LogCaptureFixture) -> None:
    stream = EventStream("s_1", heartbeat_interval_ms=None, max_events=3)
    response = ndjson_response(stream)
    chunks = response.body_iterator  # type: ignore[attr-defined]
    first = await chunks.__anext__()
    assert b'"seq":1' in first
    for _ in range(5):  # the log drops seq 2..3 before this reader sends them
        stream.stdout("x")
    with (
        caplog.at_level(logging.WARNING, logger="enclave_stream"),
        pytest.raises(StopAsyncIteration),
    ):
        await chunks.__anext__()
    assert "fell behind" in caplog.text


async def test_a_holding_response_is_never_overtaken() -> None:
    stream = EventStream("s_1", heartbeat_interval_ms=None, max_events=3)
    response = ndjson_response(stream, hold=True)
    for _ in range(5):
        stream.stdout("x")
    stream.final(True)
    body = b"".join([chunk async for chunk in response.body_iterator])  # type: ignore[attr-defined]
    assert [json.loads(line)["seq"] for line in body.splitlines()] == list(range(1, 8))
    # Sent, they stay (within max_bytes): its client may not have them all.
    stream.store.check(1)


async def test_a_response_closed_early_no_longer_holds_back_drain() -> None:
    stream = EventStream("s_1", heartbeat_interval_ms=None)
    response = ndjson_response(stream)
    chunks = response.body_iterator  # type: ignore[attr-defined]
    await chunks.__anext__()
    for _ in range(5):
        stream.stdout("x")
    assert stream.store.lag == 5
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(partial(stream.drain, 0, timeout=2))
        await anyio.wait_all_tasks_blocked()
        await chunks.aclose()  # what the server does when its client leaves
        with anyio.fail_after(1):
            await anyio.wait_all_tasks_blocked()
            assert stream.store.lag == 0
    # The drain returned (else the group would still wait for it).


@pytest.mark.parametrize("handle_signals", [True, False])
async def test_the_lifespan_hooks_sigint_only_when_asked(handle_signals: bool) -> None:
    before = signal.getsignal(signal.SIGINT)
    assert callable(before)  # Python's KeyboardInterrupt handler, or pytest's
    app = create_broker_app(handle_signals=handle_signals)
    async with app.router.lifespan_context(app):
        assert (signal.getsignal(signal.SIGINT) is not before) is handle_signals
    assert signal.getsignal(signal.SIGINT) is before


class TestFrozenReaders:
    @pytest.fixture
    def anyio_backend(self, virtual_backend: Any) -> Any:
        return virtual_backend

    async def test_a_reader_that_takes_no_bytes_is_dropped_after_the_send_timeout(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        stream = EventStream("s_1", heartbeat_interval_ms=None)
        stream.stdout("x")
        response = ndjson_response(stream, send_timeout_seconds=5)
        sent: list[str] = []

        async def frozen_send(message: Any) -> None:
            sent.append(message["type"])
            if message["type"] == "http.response.body" and len(sent) > 2:
                await anyio.sleep_forever()  # the client's buffers are full
            await anyio.sleep(4)  # slow, but within the timeout

        async def receive() -> Any:
            await anyio.sleep_forever()

        scope = {"type": "http", "asgi": {"spec_version": "2.4"}, "method": "GET"}
        started = anyio.current_time()
        with caplog.at_level(logging.WARNING, logger="enclave_stream"):
            async with anyio.create_task_group() as tg:
                tg.start_soon(response, scope, receive, frozen_send)
                await anyio.sleep(9)
                stream.stdout("y")  # the third send never completes
        assert anyio.current_time() - started == pytest.approx(9 + 5)
        assert sent == ["http.response.start", "http.response.body", "http.response.body"]
        assert "took no bytes for 5 s" in caplog.text
        assert not stream.finished  # the session goes on; the client may resume

    async def test_without_a_timeout_a_slow_reader_is_waited_for(self) -> None:
        stream = EventStream("s_1", heartbeat_interval_ms=None)
        stream.stdout("x")
        stream.final(True)
        response = ndjson_response(stream, send_timeout_seconds=None)
        sent: list[bytes] = []

        async def slow_send(message: Any) -> None:
            await anyio.sleep(1000)
            sent.append(message.get("body", b""))

        async def receive() -> Any:
            await anyio.sleep_forever()

        scope = {"type": "http", "asgi": {"spec_version": "2.4"}, "method": "GET"}
        await response(scope, receive, slow_send)
        assert b'"type":"final"' in b"".join(sent)

    async def test_a_producer_draining_on_a_frozen_reader_goes_on_once_it_is_dropped(
        self,
    ) -> None:
        # The defaults: the reader is dropped (send timeout) before the
        # producer's drain() gives up on it.
        stream = EventStream("s_1", heartbeat_interval_ms=None)
        stream.stdout("x")
        response = ndjson_response(stream)

        async def frozen_send(message: Any) -> None:
            if message["type"] == "http.response.body":
                await anyio.sleep_forever()

        async def receive() -> Any:
            await anyio.sleep_forever()

        scope = {"type": "http", "asgi": {"spec_version": "2.4"}, "method": "GET"}
        async with anyio.create_task_group() as tg:
            tg.start_soon(response, scope, receive, frozen_send)
            await anyio.sleep(0.1)
            started = anyio.current_time()
            for _ in range(3):
                stream.stdout("more")
            await stream.drain(max_lag=0)  # raises TimeoutError if it outlives the reader
            waited = anyio.current_time() - started
        assert waited == pytest.approx(DEFAULT_SEND_TIMEOUT_SECONDS, abs=0.2)
        assert DEFAULT_SEND_TIMEOUT_SECONDS < DEFAULT_DRAIN_TIMEOUT

    async def test_a_shutdown_cuts_a_response_whose_client_takes_no_bytes(self) -> None:
        config = BrokerConfig(send_timeout_seconds=None, shutdown_timeout_seconds=2)
        app = create_broker_app(config=config, handle_signals=False)
        broker: SessionBroker = app.state.broker
        sent: list[Any] = []

        async def frozen_send(message: Any) -> None:
            sent.append(message)
            if message["type"] == "http.response.body":
                await anyio.sleep_forever()

        async def receive() -> Any:
            await anyio.sleep_forever()

        async with app.router.lifespan_context(app):
            stream = broker.add(EventStream(heartbeat_interval_ms=None))
            stream.stdout("x")
            scope = {
                "type": "http",
                "asgi": {"spec_version": "2.4"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": f"/sessions/{stream.session_id}/stream",
                "raw_path": f"/sessions/{stream.session_id}/stream".encode(),
                "root_path": "",
                "query_string": b"",
                "headers": [],
                "server": ("127.0.0.1", 80),
                "client": ("127.0.0.1", 1234),
            }
            async with anyio.create_task_group() as tg:
                tg.start_soon(app, scope, receive, frozen_send)
                await anyio.sleep(60)
                assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
                started = anyio.current_time()
                broker.shutdown()
            # The response returned (its connection is closed) two
            # shutdown timeouts on: one for the producers, one for readers.
            assert anyio.current_time() - started == pytest.approx(4)
            assert stream.finished

    async def test_a_shutdown_lets_a_slow_reader_get_to_its_final(self) -> None:
        config = BrokerConfig(send_timeout_seconds=None, shutdown_timeout_seconds=2)
        app = create_broker_app(config=config, handle_signals=False)
        broker: SessionBroker = app.state.broker
        body = bytearray()

        async def slow_send(message: Any) -> None:
            if message["type"] == "http.response.body":
                await anyio.sleep(1.5)  # within the timeout, every time
                body.extend(message.get("body", b""))

        async def receive() -> Any:
            await anyio.sleep_forever()

        async with app.router.lifespan_context(app):
            stream = broker.add(EventStream(heartbeat_interval_ms=None))
            for _ in range(20):  # a backlog of 20 chunks: 30 s to read
                stream.stdout("x" * 70_000)
            path = f"/sessions/{stream.session_id}/stream"
            scope = {
                "type": "http",
                "asgi": {"spec_version": "2.4"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": path,
                "raw_path": path.encode(),
                "root_path": "",
                "query_string": b"",
                "headers": [],
                "server": ("127.0.0.1", 80),
                "client": ("127.0.0.1", 1234),
            }
            async with anyio.create_task_group() as tg:
                tg.start_soon(app, scope, receive, slow_send)
                await anyio.sleep(1)
                broker.shutdown()
        events = [json.loads(line) for line in bytes(body).splitlines()]
        assert events[-1]["type"] == "final"
        assert events[-1]["payload"]["error"]["code"] == "SERVER_SHUTDOWN"


async def test_a_mounted_app_without_its_lifespan_says_what_to_do(
    caplog: pytest.LogCaptureFixture,
) -> None:
    parent = Starlette(routes=[Mount("/enclave", create_broker_app())])
    transport = httpx.ASGITransport(app=parent)  # runs no lifespan, as a mount gets none
    with caplog.at_level(logging.ERROR, logger="enclave_stream"):
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            for method, path in (
                ("POST", "/enclave/sessions"),
                ("GET", "/enclave/sessions"),
                ("GET", "/enclave/sessions/s_1/stream"),
                ("GET", "/enclave/sessions/s_1"),
                ("POST", "/enclave/sessions/s_1/cancel"),
            ):
                response = await http.request(method, path, json={"code": "x"})
                assert response.status_code == 500
                assert response.json()["code"] == "BROKER_NOT_RUNNING"
                assert "lifespan_context" in response.json()["message"]
    assert "not running" in caplog.text


async def test_background_tasks_of_a_stream_response_run_beside_its_body() -> None:
    stream = EventStream("s_1", heartbeat_interval_ms=None)

    async def produce() -> None:
        stream.stdout("x")
        stream.final(True)

    response = ndjson_response(stream)
    response.background = BackgroundTask(produce)  # what FastAPI's BackgroundTasks do
    sent: list[bytes] = []

    async def send(message: Any) -> None:
        sent.append(message.get("body", b""))

    async def receive() -> Any:
        await anyio.sleep_forever()

    scope = {"type": "http", "asgi": {"spec_version": "2.4"}, "method": "GET"}
    with anyio.fail_after(5):  # after the body, as Starlette runs them, it never ends
        await response(scope, receive, send)
    assert [json.loads(line)["type"] for line in b"".join(sent).splitlines()] == [
        "session_init",
        "stdout",
        "final",
    ]
