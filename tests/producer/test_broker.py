"""SessionBroker: the reference broker's routes as plain calls, sessions' lifetimes."""

from __future__ import annotations

import json
import logging
import os
import signal
from typing import Any

import anyio
import msgspec
import pytest

from enclave_stream import ClientHandshake, EncryptedEnvelope, parse_lines
from enclave_stream.producer import (
    SERVER_HELLO_HEADER,
    BrokerConfig,
    BrokerError,
    EventStream,
    SessionBroker,
    SessionRequest,
)
from enclave_stream.producer.broker import parse_from_seq, shutdown_on_signals
from tests.producer.conftest import SESSION_ID, START, FakeWallClock, wait_until

pytestmark = pytest.mark.anyio


class Runner:
    """A producer that sends a few lines, then waits to be released."""

    def __init__(self) -> None:
        self.requests: list[SessionRequest] = []
        self.release = anyio.Event()

    async def __call__(self, stream: EventStream, request: SessionRequest) -> None:
        self.requests.append(request)
        stream.stdout(request.code)
        await self.release.wait()
        stream.final(True, "done")


async def lines_of(body: Any) -> list[dict[str, Any]]:
    data = b"".join([chunk async for chunk in body])
    return [json.loads(line) for line in data.splitlines()]


async def test_post_then_get_like_the_reference_client() -> None:
    runner = Runner()
    async with SessionBroker(runner, config=BrokerConfig(heartbeat_interval_ms=None)) as broker:
        created = broker.create_session(
            b'{"sessionId": "s_from-client", "code": "print(1)", '
            b'"config": {"maxExecutionMs": 5000, "heartbeatIntervalMs": 2000}}'
        )
        assert created.stream.session_id == "s_from-client"
        assert created.headers == {
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            "X-Session-ID": "s_from-client",
        }
        assert "s_from-client" in broker
        runner.release.set()
        first = await lines_of(created.body)
        assert [line["type"] for line in first] == ["session_init", "stdout", "final"]
        assert first[1]["payload"] == {"chunk": "print(1)"}
        request = runner.requests[0]
        assert (request.heartbeat_interval_ms, request.ttl_ms) == (2000, 5000)
        resumed = await lines_of(broker.open_stream("s_from-client", "2").body)
        assert resumed == first[1:]
        assert await lines_of(broker.open_stream("s_from-client", None).body) == first


async def test_protocol_request_shape_and_generated_id() -> None:
    runner = Runner()
    runner.release.set()
    async with SessionBroker(runner) as broker:
        created = broker.create_session(
            b'{"protocolVersion": 2, "code": "x", "limits": {"sessionTtlMs": 1000, '
            b'"heartbeatIntervalMs": 500}, "unknown": 1}'
        )
        assert created.stream.session_id.startswith("s_")
        await lines_of(created.body)
    request = runner.requests[0]
    assert (request.heartbeat_interval_ms, request.ttl_ms) == (500, 1000)


def test_limits_win_over_config_when_a_request_gives_both() -> None:
    request = msgspec.json.decode(
        b'{"code": "x", "config": {"heartbeatIntervalMs": 9, "maxExecutionMs": 8}, '
        b'"limits": {"heartbeatIntervalMs": 500}}',
        type=SessionRequest,
    )
    assert (request.heartbeat_interval_ms, request.ttl_ms) == (500, 8)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"not json", 400, "INVALID_REQUEST"),
        (b"{}", 400, "INVALID_REQUEST"),
        (b'{"code": 5}', 400, "INVALID_REQUEST"),
        (b'{"code": "x", "sessionId": "nope"}', 400, "INVALID_REQUEST"),
        (b'{"code": "x", "limits": {"heartbeatIntervalMs": 0}}', 400, "INVALID_REQUEST"),
        (b'{"code": "x", "encryption": {"mode": "required"}}', 400, "ENCRYPTION_HANDSHAKE_FAILED"),
        (
            b'{"code": "x", "encryption": {"mode": "required", "clientHello": {"curve": "P-256"}}}',
            400,
            "ENCRYPTION_HANDSHAKE_FAILED",
        ),
        (b'{"code": "' + b"x" * 2000 + b'"}', 413, "REQUEST_TOO_LARGE"),
    ],
)
async def test_bad_requests(body: bytes, status: int, code: str) -> None:
    async with SessionBroker(Runner(), config=BrokerConfig(max_request_bytes=1000)) as broker:
        with pytest.raises(BrokerError) as caught:
            broker.create_session(body)
        assert (caught.value.status, caught.value.code) == (status, code)
        assert len(broker) == 0


async def test_without_a_runner_post_is_not_found() -> None:
    async with SessionBroker() as broker:
        with pytest.raises(BrokerError) as caught:
            broker.create_session(b'{"code": "x"}')
    assert caught.value.status == 404


async def test_a_taken_session_id_is_a_conflict() -> None:
    async with SessionBroker(Runner()) as broker:
        broker.create_session(b'{"code": "x", "sessionId": "s_1"}')
        with pytest.raises(BrokerError) as caught:
            broker.create_session(b'{"code": "x", "sessionId": "s_1"}')
        assert (caught.value.status, caught.value.code) == (409, "SESSION_EXISTS")
        with pytest.raises(BrokerError):
            broker.add(EventStream("s_1"))
        broker.cancel("s_1")


async def test_encrypted_session() -> None:
    runner = Runner()
    runner.release.set()
    handshake = ClientHandshake()
    request = {
        "code": "secret",
        "sessionId": SESSION_ID,
        "encryption": {
            "mode": "optional",
            "clientHello": msgspec.to_builtins(handshake.client_hello),
        },
    }
    async with SessionBroker(runner) as broker:
        created = broker.create_session(json.dumps(request).encode())
        assert created.stream.encrypted
        session = handshake.complete(created.headers[SERVER_HELLO_HEADER], SESSION_ID)
        data = b"".join([chunk async for chunk in created.body])
    parsed = parse_lines(data.decode())
    assert all(isinstance(event, EncryptedEnvelope) for event in parsed.events)
    assert b"secret" not in data
    opened = [session.open(event) for event in parsed.events]  # type: ignore[arg-type]
    assert [event.type.value for event in opened] == ["session_init", "stdout", "final"]
    assert opened[1].payload.chunk == "secret"  # type: ignore[union-attr]


async def test_disabled_encryption_is_plaintext() -> None:
    runner = Runner()
    runner.release.set()
    async with SessionBroker(runner) as broker:
        created = broker.create_session(b'{"code": "x", "encryption": {"mode": "disabled"}}')
        assert not created.stream.encrypted
        assert SERVER_HELLO_HEADER not in created.headers
        await lines_of(created.body)


async def test_open_stream_errors() -> None:
    async with SessionBroker() as broker:
        stream = broker.add(EventStream("s_1", heartbeat_interval_ms=None, max_events=3))
        for _ in range(5):
            stream.stdout("x")
        with pytest.raises(BrokerError) as caught:
            broker.open_stream("s_2")
        assert (caught.value.status, caught.value.code) == (404, "NOT_FOUND")
        with pytest.raises(BrokerError) as caught:
            broker.open_stream("s_1", "2")
        assert caught.value.status == 410
        assert caught.value.body() == {
            "code": "REPLAY_UNAVAILABLE",
            "message": "events from seq 2 are no longer held (the oldest held is 4)",
            "details": {"requestedSeq": 2, "firstAvailableSeq": 4},
        }
        with pytest.raises(BrokerError) as caught:
            broker.open_stream("s_1")  # the whole session: its start is gone too
        assert caught.value.status == 410
        assert broker.open_stream("s_1", "4").body.next_seq == 4
        stream.final(True)


@pytest.mark.parametrize(
    "text", ["-1", "1.5", "abc", "", " 1", "1e3", "\uff19", "9007199254740992"]
)
def test_from_seq_must_be_decimal_digits(text: str) -> None:
    with pytest.raises(BrokerError) as caught:
        parse_from_seq(text)
    assert caught.value.status == 400


async def test_a_failing_runner_ends_its_stream_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def runner(stream: EventStream, request: SessionRequest) -> None:
        stream.stdout("before")
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="enclave_stream"):
        async with SessionBroker(runner) as broker:
            created = broker.create_session(b'{"code": "x"}')
            lines = await lines_of(created.body)
            await wait_until(lambda: "boom" in caplog.text)
    assert lines[-1]["payload"]["error"] == {
        "message": "The session failed: RuntimeError",
        "code": "EXECUTION_ERROR",
    }


async def test_cancel_a_running_session_and_one_produced_elsewhere() -> None:
    runner = Runner()
    async with SessionBroker(runner) as broker:
        created = broker.create_session(b'{"code": "x"}')
        sid = created.stream.session_id
        await wait_until(lambda: created.stream.next_seq == 3)
        broker.cancel(sid)
        lines = await lines_of(created.body)
        assert lines[-1]["payload"]["error"]["code"] == "SESSION_CANCELLED"
        broker.cancel(sid)  # finished: nothing more
        assert len(await lines_of(broker.open_stream(sid).body)) == 3

        outside = broker.add(EventStream("s_outside", heartbeat_interval_ms=None))
        broker.cancel("s_outside")
        assert outside.finished
        with pytest.raises(BrokerError):
            broker.cancel("s_unknown")


async def test_leaving_the_broker_ends_every_session() -> None:
    runner = Runner()
    async with SessionBroker(runner) as broker:
        created = broker.create_session(b'{"code": "x"}')
        outside = broker.add(EventStream("s_outside"))
        await wait_until(lambda: created.stream.next_seq == 3)
    assert created.stream.finished
    assert outside.finished  # closed: its readers end
    assert len(broker) == 0
    lines = await lines_of(created.body)
    assert lines[-1]["payload"]["error"]["code"] == "SESSION_CANCELLED"


async def test_needs_to_be_running() -> None:
    broker = SessionBroker(Runner())
    with pytest.raises(RuntimeError, match="async with"):
        broker.add(EventStream())
    with pytest.raises(ValueError, match="max_sessions"):
        SessionBroker(config=BrokerConfig(max_sessions=0))
    with pytest.raises(ValueError, match="shutdown_timeout_seconds"):
        SessionBroker(config=BrokerConfig(shutdown_timeout_seconds=-1))


class TestOnAVirtualClock:
    @pytest.fixture
    def anyio_backend(self, virtual_backend: Any) -> Any:
        return virtual_backend

    async def test_finished_sessions_are_kept_for_the_retention_time(self) -> None:
        config = BrokerConfig(retention_seconds=60, heartbeat_interval_ms=None)
        async with SessionBroker(config=config) as broker:
            stream = broker.add(EventStream("s_1"))
            await anyio.sleep(1000)
            assert "s_1" in broker  # not finished: kept
            stream.final(True)
            await anyio.sleep(59)
            assert "s_1" in broker
            await anyio.sleep(2)
            assert "s_1" not in broker

    async def test_when_full_the_oldest_finished_session_makes_room(self) -> None:
        config = BrokerConfig(max_sessions=2, heartbeat_interval_ms=None)
        async with SessionBroker(config=config) as broker:
            first = broker.add(EventStream("s_1"))
            broker.add(EventStream("s_2"))
            with pytest.raises(BrokerError) as caught:
                broker.add(EventStream("s_3"))
            assert (caught.value.status, caught.value.code) == (503, "TOO_MANY_SESSIONS")
            first.final(True)
            broker.add(EventStream("s_3"))
            assert [sid in broker for sid in ("s_1", "s_2", "s_3")] == [False, True, True]
            assert len(broker) == 2
            await anyio.sleep(1)
            broker.cancel("s_2")
            broker.cancel("s_3")


# --- resuming with the upstream client's `from` ------------------------------------


async def test_from_is_read_like_from_seq_and_from_seq_wins() -> None:
    async with SessionBroker() as broker:
        stream = broker.add(EventStream("s_1", heartbeat_interval_ms=None))
        for _ in range(4):
            stream.stdout("x")
        assert broker.open_stream("s_1", None, "3").body.next_seq == 3
        assert broker.open_stream("s_1", "2", "4").body.next_seq == 2
        assert broker.open_stream("s_1").body.next_seq == 0
        for from_seq, from_ in (("x", None), (None, "-1"), ("2", "1.5"), ("abc", "2")):
            with pytest.raises(BrokerError) as caught:
                broker.open_stream("s_1", from_seq, from_)
            assert (caught.value.status, caught.value.code) == (400, "INVALID_REQUEST")
        with pytest.raises(
            BrokerError, match="INVALID_REQUEST: from must be a non-negative integer"
        ):
            broker.open_stream("s_1", None, "-1")
        stream.final(True)


# --- cancelUrl, session info and the list -----------------------------------------


async def test_cancel_url_carries_the_base_path() -> None:
    runner = Runner()
    runner.release.set()
    async with SessionBroker(runner) as broker:
        plain = broker.create_session(b'{"code": "x", "sessionId": "s_a"}')
        mounted = broker.create_session(b'{"code": "x", "sessionId": "s_b"}', base_path="/api/")
        init_a = (await lines_of(plain.body))[0]["payload"]
        init_b = (await lines_of(mounted.body))[0]["payload"]
    assert init_a["cancelUrl"] == "/sessions/s_a/cancel"
    assert init_b["cancelUrl"] == "/api/sessions/s_b/cancel"


async def test_session_info_and_list() -> None:
    clock = FakeWallClock()
    runner = Runner()
    async with SessionBroker(runner, now=clock) as broker:
        assert broker.list_sessions() == {"sessions": [], "total": 0}
        created = broker.create_session(b'{"code": "x", "sessionId": "s_1"}')
        await wait_until(lambda: created.stream.next_seq == 3)
        created_ms = round(START.timestamp() * 1000)
        info = broker.session_info("s_1")
        assert abs(info.pop("updatedAt") - created_ms) < 1000
        assert info == {
            "sessionId": "s_1",
            "state": "running",
            "createdAt": created_ms,
            "expiresAt": created_ms + 60_000,
            "eventCount": 2,
            "lastSeq": 2,
            "stats": {"duration": 0, "toolCallCount": 0, "stdoutBytes": 1},
        }
        clock.advance(1500)
        runner.release.set()
        await lines_of(created.body)
        done = broker.session_info("s_1")
        assert (done["state"], done["lastSeq"], done["stats"]["duration"]) == ("completed", 3, 1500)
        clock.advance(1000)  # a finished session's duration stays what its final said
        assert broker.session_info("s_1")["stats"]["duration"] == 1500

        other = broker.add(EventStream("s_2", heartbeat_interval_ms=None, now=clock))
        broker.cancel("s_2")
        listed = broker.list_sessions()
        assert listed["total"] == 2
        assert [(s["sessionId"], s["state"]) for s in listed["sessions"]] == [
            ("s_1", "completed"),
            ("s_2", "cancelled"),
        ]
        assert other.state.value == "cancelled"
        with pytest.raises(BrokerError) as caught:
            broker.session_info("s_nope")
        assert caught.value.status == 404


# --- shutdown ----------------------------------------------------------------------


async def test_shutdown_ends_every_running_session_and_refuses_new_ones() -> None:
    runner = Runner()
    broker = SessionBroker(runner)
    broker.shutdown()  # not running: nothing to do
    async with broker:
        created = broker.create_session(b'{"code": "x"}')
        outside = broker.add(EventStream("s_outside", heartbeat_interval_ms=None))
        finished = broker.add(EventStream("s_done", heartbeat_interval_ms=None))
        finished.final(True)
        await wait_until(lambda: created.stream.next_seq == 3)
        broker.shutdown()
        assert broker.shutting_down
        broker.shutdown()  # again: nothing more
        lines = await lines_of(created.body)
        assert lines[-1]["payload"]["error"] == {
            "message": "The server is shutting down",
            "code": "SERVER_SHUTDOWN",
        }
        assert outside.state.value == "cancelled"
        assert finished.state.value == "completed"
        for refused in (
            lambda: broker.create_session(b'{"code": "x"}'),
            lambda: broker.add(EventStream()),
        ):
            with pytest.raises(BrokerError) as caught:
                refused()
            assert (caught.value.status, caught.value.code) == (503, "SHUTTING_DOWN")
        # Still readable until the block ends.
        assert len(await lines_of(broker.open_stream(created.stream.session_id).body)) == 3
    async with broker:  # a broker entered again starts afresh
        assert not broker.shutting_down


class TestShutdownOnAVirtualClock:
    @pytest.fixture
    def anyio_backend(self, virtual_backend: Any) -> Any:
        return virtual_backend

    async def test_a_producer_that_ignores_the_shutdown_gets_its_final_after_the_timeout(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        async def stubborn(stream: EventStream, request: SessionRequest) -> None:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(100)
            stream.stdout("too late")  # the stream has its final: this raises

        config = BrokerConfig(shutdown_timeout_seconds=2, heartbeat_interval_ms=None)
        with caplog.at_level(logging.WARNING, logger="enclave_stream"):
            async with SessionBroker(stubborn, config=config) as broker:
                created = broker.create_session(b'{"code": "x"}')
                await anyio.sleep(1)
                started = anyio.current_time()
                broker.shutdown()
                lines = await lines_of(created.body)
                assert anyio.current_time() - started == pytest.approx(2)
                assert lines[-1]["payload"]["error"]["code"] == "SERVER_SHUTDOWN"
                await anyio.sleep(200)  # the producer's late append is not an error
        assert "ignored the shutdown" in caplog.text
        assert "failed" not in caplog.text


# --- shutdown on signals -----------------------------------------------------------


async def test_a_signal_shuts_the_broker_down_then_reaches_the_previous_handler() -> None:
    seen: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    try:
        runner = Runner()
        async with SessionBroker(runner) as broker:
            created = broker.create_session(b'{"code": "x"}')
            async with shutdown_on_signals(broker, (signal.SIGUSR1, signal.SIGUSR2)) as installed:
                assert installed
                assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL  # not touched
                os.kill(os.getpid(), signal.SIGUSR1)
                await wait_until(lambda: created.stream.finished)
                assert broker.shutting_down
                assert seen == [signal.SIGUSR1]
            assert signal.getsignal(signal.SIGUSR1) is not None
            os.kill(os.getpid(), signal.SIGUSR1)  # the previous handler is back
            await wait_until(lambda: len(seen) == 2)
        lines = await lines_of(created.body)
        assert lines[-1]["payload"]["error"]["code"] == "SERVER_SHUTDOWN"
    finally:
        signal.signal(signal.SIGUSR1, previous)


async def test_shutdown_on_signals_does_nothing_outside_the_main_thread() -> None:
    async def in_a_thread() -> bool:
        async with SessionBroker() as broker, shutdown_on_signals(broker) as installed:
            return installed

    before = signal.getsignal(signal.SIGTERM)
    assert await anyio.to_thread.run_sync(anyio.run, in_a_thread) is False
    assert signal.getsignal(signal.SIGTERM) is before
