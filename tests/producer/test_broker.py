"""SessionBroker: the reference broker's routes as plain calls, sessions' lifetimes."""

from __future__ import annotations

import gc
import inspect
import json
import logging
import os
import signal
import warnings
import weakref
from datetime import timedelta
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest

from enclave_stream import ClientHandshake, EncryptedEnvelope, parse_lines
from enclave_stream.producer import (
    SERVER_HELLO_HEADER,
    Access,
    Action,
    BrokerConfig,
    BrokerError,
    Decision,
    EventStream,
    Grant,
    SessionBroker,
    SessionRequest,
    SessionRequestBody,
    SessionTokens,
    shutdown_on_signals,
)
from enclave_stream.producer.requests import parse_from_seq
from tests.producer.conftest import SESSION_ID, START, FakeWallClock, session_pair, wait_until

pytestmark = pytest.mark.anyio

CLIENT_IDS = BrokerConfig(client_session_ids=True, heartbeat_interval_ms=None)


async def _awaited(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


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
    async with SessionBroker(runner, config=CLIENT_IDS) as broker:
        created = await broker.create_session(
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
        resumed = await lines_of((await broker.open_stream("s_from-client", "2")).body)
        assert resumed == first[1:]
        assert await lines_of((await broker.open_stream("s_from-client", None)).body) == first


async def test_protocol_request_shape_and_generated_id() -> None:
    runner = Runner()
    runner.release.set()
    async with SessionBroker(runner) as broker:
        created = await broker.create_session(
            b'{"protocolVersion": 2, "code": "x", "limits": {"sessionTtlMs": 1000, '
            b'"heartbeatIntervalMs": 1500}, "unknown": 1}'
        )
        assert created.stream.session_id.startswith("s_")
        await lines_of(created.body)
    request = runner.requests[0]
    assert (request.heartbeat_interval_ms, request.ttl_ms) == (1500, 1000)


def test_limits_win_over_config_when_a_request_gives_both() -> None:
    request = msgspec.json.decode(
        b'{"code": "x", "config": {"heartbeatIntervalMs": 9, "maxExecutionMs": 8}, '
        b'"limits": {"heartbeatIntervalMs": 500}}',
        type=SessionRequestBody,
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
    async with SessionBroker(
        Runner(), config=BrokerConfig(max_request_bytes=1000, client_session_ids=True)
    ) as broker:
        with pytest.raises(BrokerError) as caught:
            await broker.create_session(body)
        assert (caught.value.status, caught.value.code) == (status, code)
        assert len(broker) == 0


async def test_without_a_runner_post_is_not_found() -> None:
    async with SessionBroker() as broker:
        with pytest.raises(BrokerError) as caught:
            await broker.create_session(b'{"code": "x"}')
    assert caught.value.status == 404


async def test_a_taken_session_id_is_a_conflict() -> None:
    async with SessionBroker(Runner(), config=CLIENT_IDS) as broker:
        await broker.create_session(b'{"code": "x", "sessionId": "s_1"}')
        with pytest.raises(BrokerError) as caught:
            await broker.create_session(b'{"code": "x", "sessionId": "s_1"}')
        assert (caught.value.status, caught.value.code) == (409, "SESSION_EXISTS")
        with pytest.raises(BrokerError):
            broker.add(EventStream("s_1"))
        await broker.cancel("s_1")


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
    async with SessionBroker(runner, config=CLIENT_IDS) as broker:
        created = await broker.create_session(json.dumps(request).encode())
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
        created = await broker.create_session(b'{"code": "x", "encryption": {"mode": "disabled"}}')
        assert not created.stream.encrypted
        assert SERVER_HELLO_HEADER not in created.headers
        await lines_of(created.body)


async def test_open_stream_errors() -> None:
    async with SessionBroker() as broker:
        stream = broker.add(EventStream("s_1", heartbeat_interval_ms=None, max_events=3))
        for _ in range(5):
            stream.stdout("x")
        with pytest.raises(BrokerError) as caught:
            await broker.open_stream("s_2")
        assert (caught.value.status, caught.value.code) == (404, "NOT_FOUND")
        with pytest.raises(BrokerError) as caught:
            await broker.open_stream("s_1", "2")
        assert caught.value.status == 410
        assert caught.value.body() == {
            "code": "REPLAY_UNAVAILABLE",
            "message": "events from seq 2 are no longer held (the oldest held is 4)",
            "details": {"requestedSeq": 2, "firstAvailableSeq": 4},
        }
        with pytest.raises(BrokerError) as caught:
            await broker.open_stream("s_1")  # the whole session: its start is gone too
        assert caught.value.status == 410
        assert (await broker.open_stream("s_1", "4")).body.next_seq == 4
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
            created = await broker.create_session(b'{"code": "x"}')
            lines = await lines_of(created.body)
            await wait_until(lambda: "boom" in caplog.text)
    assert lines[-1]["payload"]["error"] == {
        "message": "The session failed: RuntimeError",
        "code": "EXECUTION_ERROR",
    }


async def test_cancel_a_running_session_and_one_produced_elsewhere() -> None:
    runner = Runner()
    async with SessionBroker(runner) as broker:
        created = await broker.create_session(b'{"code": "x"}')
        sid = created.stream.session_id
        await wait_until(lambda: created.stream.next_seq == 3)
        await broker.cancel(sid)
        lines = await lines_of(created.body)
        assert lines[-1]["payload"]["error"]["code"] == "SESSION_CANCELLED"
        await broker.cancel(sid)  # finished: nothing more
        assert len(await lines_of((await broker.open_stream(sid)).body)) == 3

        outside = broker.add(EventStream("s_outside", heartbeat_interval_ms=None))
        await broker.cancel("s_outside")
        assert outside.finished
        with pytest.raises(BrokerError):
            await broker.cancel("s_unknown")


async def test_leaving_the_broker_ends_every_session() -> None:
    runner = Runner()
    async with SessionBroker(runner) as broker:
        created = await broker.create_session(b'{"code": "x"}')
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


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"max_sessions": 0}, "max_sessions"),
        ({"shutdown_timeout_seconds": -1}, "shutdown_timeout_seconds"),
        ({"max_bytes": 2000, "max_total_bytes": 1000}, "max_total_bytes"),
        ({"max_sessions_per_identity": 0}, "max_sessions_per_identity"),
        ({"send_timeout_seconds": 0}, "send_timeout_seconds"),
        ({"max_ttl_ms": 0}, "max_ttl_ms"),
        ({"ttl_ms": 0}, "ttl_ms"),
        ({"min_heartbeat_interval_ms": -1}, "min_heartbeat_interval_ms"),
        ({"retention_seconds": float("nan")}, "retention_seconds"),
        ({"max_events": 0}, "max_events"),
        ({"max_request_bytes": 0}, "max_request_bytes"),
    ],
)
def test_a_config_out_of_range_is_refused_when_made(settings: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        BrokerConfig(**settings)


class TestOnAVirtualClock:
    @pytest.fixture
    def anyio_backend(self, virtual_backend: Any) -> Any:
        return virtual_backend

    async def test_finished_sessions_are_kept_for_the_retention_time_then_gone(self) -> None:
        config = BrokerConfig(retention_seconds=60, heartbeat_interval_ms=None, max_ttl_ms=10**8)
        async with SessionBroker(config=config) as broker:
            stream = broker.add(EventStream("s_1", ttl_ms=10_000_000))
            await anyio.sleep(1000)
            assert "s_1" in broker  # not finished: kept
            stream.final(True)
            await anyio.sleep(59)
            assert "s_1" in broker
            await anyio.sleep(2)
            assert "s_1" not in broker
            for call in (
                lambda: broker.open_stream("s_1"),
                lambda: broker.session_info("s_1"),
                lambda: broker.cancel("s_1"),
            ):
                with pytest.raises(BrokerError) as caught:
                    await call()
                assert (caught.value.status, caught.value.code) == (410, "SESSION_GONE")
            with pytest.raises(BrokerError) as caught:
                await broker.open_stream("s_never")
            assert caught.value.status == 404
            # The id is not handed out again: its old readers would get another session.
            with pytest.raises(BrokerError) as caught:
                broker.add(EventStream("s_1"))
            assert (caught.value.status, caught.value.code) == (409, "SESSION_EXISTS")
            with pytest.raises(BrokerError) as caught:
                await broker.open_stream("s_1")
            assert caught.value.status == 410

    async def test_when_full_a_finished_session_is_kept_and_new_ones_wait(self) -> None:
        config = BrokerConfig(max_sessions=2, retention_seconds=30, heartbeat_interval_ms=None)
        async with SessionBroker(config=config) as broker:
            first = broker.add(EventStream("s_1", ttl_ms=100_000))
            broker.add(EventStream("s_2", ttl_ms=100_000))
            with pytest.raises(BrokerError) as caught:
                broker.add(EventStream("s_3"))
            assert (caught.value.status, caught.value.code) == (503, "TOO_MANY_SESSIONS")
            assert caught.value.headers == {"Retry-After": "130"}  # s_1's ttl, then retention
            await anyio.sleep(10)
            first.final(True)
            with pytest.raises(BrokerError) as caught:
                broker.add(EventStream("s_3"))  # s_1 is within its retention: kept
            assert caught.value.headers == {"Retry-After": "30"}
            assert "s_1" in broker
            await anyio.sleep(31)
            broker.add(EventStream("s_3"))
            assert [sid in broker for sid in ("s_1", "s_2", "s_3")] == [False, True, True]
            await broker.cancel("s_2")
            await broker.cancel("s_3")

    async def test_a_session_past_its_ttl_is_stopped_with_a_clear_final(self) -> None:
        async def endless(stream: EventStream, request: SessionRequest) -> None:
            while True:
                stream.stdout("tick")
                await anyio.sleep(1)

        config = BrokerConfig(heartbeat_interval_ms=None, ttl_ms=5000)
        async with SessionBroker(endless, config=config) as broker:
            created = await broker.create_session(b'{"code": "x"}')
            asked = await broker.create_session(b'{"code": "x", "limits": {"sessionTtlMs": 2500}}')
            outside = broker.add(EventStream("s_outside", ttl_ms=3000))
            started = anyio.current_time()
            lines = await lines_of(created.body)
            assert anyio.current_time() - started == pytest.approx(5)
            assert [line["type"] for line in lines[-2:]] == ["deadline_exceeded", "final"]
            assert lines[-2]["payload"]["budgetMs"] == 5000
            assert lines[-1]["payload"]["error"] == {
                "message": "The session reached the end of its lifetime (5000 ms)",
                "code": "SESSION_EXPIRED",
            }
            assert created.stream.state.value == "failed"
            short = await lines_of(asked.body)
            assert short[-1]["payload"]["error"]["code"] == "SESSION_EXPIRED"
            assert len([line for line in short if line["type"] == "stdout"]) == 3
            assert outside.finished
            assert (await broker.session_info("s_outside"))["state"] == "failed"

    async def test_the_memory_budget_counts_running_sessions_at_their_bound(self) -> None:
        config = BrokerConfig(
            heartbeat_interval_ms=None, max_bytes=1000, max_total_bytes=3500, retention_seconds=5
        )
        async with SessionBroker(config=config) as broker:
            streams = [
                broker.add(EventStream(f"s_{i}", ttl_ms=60_000, max_bytes=1000)) for i in range(3)
            ]
            assert broker.held_bytes == 3000
            with pytest.raises(BrokerError) as caught:
                broker.add(EventStream("s_3", max_bytes=1000))
            assert (caught.value.status, caught.value.code) == (503, "MEMORY_BUDGET_EXCEEDED")
            assert caught.value.headers == {"Retry-After": "60"}
            streams[0].final(True)  # finished: it counts what it holds
            assert broker.held_bytes == 2000 + streams[0].store.size_bytes  # type: ignore[attr-defined]
            broker.add(EventStream("s_3", ttl_ms=60_000, max_bytes=1000))
            for stream in streams[1:]:
                stream.final(True)
            await anyio.sleep(6)
            assert len(broker) == 1


# --- client ids, heartbeats, the authorization hook ---------------------------------


async def test_session_ids_are_the_servers_unless_configured() -> None:
    runner = Runner()
    runner.release.set()
    async with SessionBroker(runner) as broker:
        with pytest.raises(BrokerError) as caught:
            await broker.create_session(b'{"code": "x", "sessionId": "s_mine"}')
        assert (caught.value.status, caught.value.code) == (400, "INVALID_REQUEST")
        assert "generates session ids" in caught.value.message
        assert len(broker) == 0
        created = await broker.create_session(b'{"code": "x"}')
        assert created.stream.session_id != "s_mine"
        await lines_of(created.body)


@pytest.mark.parametrize(
    ("body", "accepted"),
    [
        (b'{"code": "x", "limits": {"heartbeatIntervalMs": 1}}', False),
        (b'{"code": "x", "config": {"heartbeatIntervalMs": 999}}', False),
        (b'{"code": "x", "limits": {"heartbeatIntervalMs": 1000}}', True),
        (b'{"code": "x", "limits": {"sessionTtlMs": 3600001}}', False),
        (b'{"code": "x", "config": {"maxExecutionMs": 3600000}}', True),
    ],
)
async def test_floors_and_ceilings_of_what_a_request_may_ask(body: bytes, accepted: bool) -> None:
    runner = Runner()
    runner.release.set()
    async with SessionBroker(runner) as broker:
        if accepted:
            await lines_of((await broker.create_session(body)).body)
        else:
            with pytest.raises(BrokerError) as caught:
                await broker.create_session(body)
            assert (caught.value.status, caught.value.code) == (400, "INVALID_REQUEST")
    config = BrokerConfig(min_heartbeat_interval_ms=1, max_ttl_ms=10**8)
    async with SessionBroker(runner, config=config) as broker:
        await lines_of((await broker.create_session(body)).body)  # the limits are settings


class Headers(dict[str, str]):
    """A request's headers, as the hook sees them."""


class FakeClient:
    def __init__(self, host: str) -> None:
        self.host = host


class FakeRequest:
    """What the broker reads of a request: method, headers, and Starlette's ``client``."""

    def __init__(self, method: str = "GET", *, address: str = "10.0.0.1", **headers: str) -> None:
        self.method = method
        self.headers = Headers(headers)
        self.client = FakeClient(address)


def by_user(access: Access) -> Decision:
    """A hook: the ``user`` header is the identity; a session is its creator's only."""
    assert access.request is not None
    user = access.request.headers.get("user")
    if access.action is Action.CREATE:
        return Grant(user)
    if access.action is Action.LIST:
        return True
    return access.grant is not None and access.grant.identity == user


async def hook_by_user(access: Access) -> Decision:
    return by_user(access)


class TestIdentities:
    """One identity cannot take the broker from the others (P12)."""

    @pytest.fixture
    def anyio_backend(self, virtual_backend: Any) -> Any:
        return virtual_backend

    async def test_short_sessions_drop_their_own_identity_s_oldest_not_a_victim_s(
        self,
    ) -> None:
        config = BrokerConfig(
            max_sessions=4, max_sessions_per_identity=2, heartbeat_interval_ms=None
        )

        async def quick(stream: EventStream, request: SessionRequest) -> None:
            stream.final(True)

        async with SessionBroker(quick, config=config, authorize=hook_by_user) as broker:
            ann = FakeRequest(user="ann")
            victim = await broker.create_session(b'{"code": "x"}', request=ann)
            await lines_of(victim.body)  # finished, kept for its retention
            mallory = FakeRequest(user="mallory")
            made = []
            for _ in range(10):
                created = await broker.create_session(b'{"code": "x"}', request=mallory)
                await lines_of(created.body)
                await anyio.wait_all_tasks_blocked()  # its producer has returned
                made.append(created.stream.session_id)
            # Mallory holds her two newest; her older ones are gone, not missing.
            for old in made[:-2]:
                with pytest.raises(BrokerError) as caught:
                    await broker.open_stream(old, request=mallory)
                assert (caught.value.status, caught.value.code) == (410, "SESSION_GONE")
            for kept in made[-2:]:
                await broker.open_stream(kept, request=mallory)
            # Ann's finished session is still there, and Ann can still create.
            await broker.open_stream(victim.stream.session_id, request=ann)
            await broker.create_session(b'{"code": "x"}', request=ann)

    async def test_without_an_identity_the_client_address_is_counted(self) -> None:
        runner = Runner()
        async with SessionBroker(runner, config=BrokerConfig()) as broker:
            limit = broker.config.max_sessions_per_identity
            assert limit is not None
            for _ in range(limit):
                await broker.create_session(b'{"code": "x"}', request=FakeRequest("POST"))
            with pytest.raises(BrokerError) as caught:
                await broker.create_session(b'{"code": "x"}', request=FakeRequest("POST"))
            assert (caught.value.status, caught.value.code) == (
                429,
                "TOO_MANY_SESSIONS_FOR_IDENTITY",
            )
            other = FakeRequest("POST", address="10.0.0.2")
            await broker.create_session(b'{"code": "x"}', request=other)
            runner.release.set()

    async def test_an_address_never_evicts_and_ipv6_counts_by_its_64(self) -> None:
        # An address may be shared (a proxy) or chosen (X-Forwarded-For):
        # sessions counted by it are never dropped early for another.
        async def quick(stream: EventStream, request: SessionRequest) -> None:
            stream.final(True)

        config = BrokerConfig(max_sessions_per_identity=2, heartbeat_interval_ms=None)
        async with SessionBroker(quick, config=config) as broker:
            victim = await broker.create_session(b'{"code": "x"}', request=FakeRequest("POST"))
            await lines_of(victim.body)
            for _ in range(6):  # the same address, finished at once
                made = await broker.create_session(b'{"code": "x"}', request=FakeRequest("POST"))
                await lines_of(made.body)
            await broker.open_stream(victim.stream.session_id)  # still held
        runner = Runner()
        async with SessionBroker(runner, config=config) as broker:
            for host in ("2001:db8::1", "2001:db8::2"):
                await broker.create_session(b'{"code": "x"}', request=FakeRequest(address=host))
            with pytest.raises(BrokerError) as caught:
                await broker.create_session(
                    b'{"code": "x"}', request=FakeRequest(address="2001:db8::ffff")
                )
            assert caught.value.status == 429
            await broker.create_session(
                b'{"code": "x"}', request=FakeRequest(address="2001:db9::1")
            )
            runner.release.set()

    async def test_ended_ids_are_remembered_for_their_retention_however_fast_the_churn(
        self,
    ) -> None:
        async def quick(stream: EventStream, request: SessionRequest) -> None:
            stream.final(True)

        config = BrokerConfig(
            max_sessions=2, max_sessions_per_identity=1, heartbeat_interval_ms=None
        )
        async with SessionBroker(quick, config=config, authorize=hook_by_user) as broker:
            mallory = FakeRequest(user="mallory")
            first = await broker.create_session(b'{"code": "x"}', request=mallory)
            await lines_of(first.body)
            await anyio.wait_all_tasks_blocked()
            refused = None
            for _ in range(30):  # each drops her previous one
                try:
                    made = await broker.create_session(b'{"code": "x"}', request=mallory)
                except BrokerError as error:
                    refused = error
                    break
                await lines_of(made.body)
                await anyio.wait_all_tasks_blocked()
            assert refused is not None
            assert (refused.status, refused.code) == (503, "TOO_MANY_SESSIONS")
            with pytest.raises(BrokerError) as caught:
                await broker.open_stream(first.stream.session_id, request=mallory)
            assert caught.value.status == 410  # not forgotten: never a 404

    async def test_a_list_shows_each_caller_only_what_it_may_see(self) -> None:
        runner = Runner()
        async with SessionBroker(runner, authorize=hook_by_user) as broker:
            ann = await broker.create_session(b'{"code": "x"}', request=FakeRequest(user="ann"))
            await broker.create_session(b'{"code": "x"}', request=FakeRequest(user="bob"))
            listed = await broker.list_sessions(request=FakeRequest(user="ann"))
            assert [s["sessionId"] for s in listed["sessions"]] == [ann.stream.session_id]
            assert listed["total"] == 1
            runner.release.set()

    async def test_ended_ids_are_remembered_past_max_sessions(self) -> None:
        config = BrokerConfig(max_sessions=1, retention_seconds=1, heartbeat_interval_ms=None)
        async with SessionBroker(config=config) as broker:
            ended = []
            for _ in range(5):
                stream = broker.add(EventStream(heartbeat_interval_ms=None))
                stream.final(True)
                ended.append(stream.session_id)
                await anyio.sleep(2)  # past its retention: dropped
            for session_id in ended:
                with pytest.raises(BrokerError) as caught:
                    await broker.open_stream(session_id)
                assert caught.value.status == 410

    async def test_the_runner_s_request_is_not_kept_through_the_retention(self) -> None:
        kept: list[weakref.ref[Any]] = []

        async def run(stream: EventStream, request: SessionRequest) -> None:
            kept.append(weakref.ref(request.http))
            stream.final(True)

        async with SessionBroker(run, config=BrokerConfig(heartbeat_interval_ms=None)) as broker:
            created = await broker.create_session(
                b'{"code": "' + b"x" * 100_000 + b'"}', request=FakeRequest("POST")
            )
            await lines_of(created.body)
            del created
            await anyio.sleep(1)
            with warnings.catch_warnings():  # what earlier tests left is not ours
                warnings.simplefilter("ignore", ResourceWarning)
                gc.collect()
            assert len(broker) == 1  # held for its retention
            assert kept[0]() is None  # but not its request (the code, the HTTP request)

    async def test_add_applies_the_broker_s_limits(self) -> None:
        config = BrokerConfig(max_bytes=5000, max_total_bytes=50_000, heartbeat_interval_ms=None)
        async with SessionBroker(config=config) as broker:
            for stream, name in (
                (EventStream(ttl_ms=config.max_ttl_ms + 1, max_bytes=1000), "max_ttl_ms"),
                (EventStream(heartbeat_interval_ms=10, max_bytes=1000), "heartbeat"),
                (EventStream(), "max_bytes"),
            ):
                with pytest.raises(ValueError, match=name):
                    broker.add(stream)
            assert len(broker) == 0
            broker.add(EventStream(max_bytes=1000, heartbeat_interval_ms=None))
            assert broker.held_bytes == 1000  # its own bound, not the broker's


async def test_the_hook_is_asked_for_every_route_with_the_request_and_session() -> None:
    seen: list[Access] = []

    async def authorize(access: Access) -> Decision:
        seen.append(access)
        if access.request is None or access.request.headers.get("user") != "ann":
            return False
        if access.action is Action.CREATE:
            return Grant("ann", {"X-Owner": "ann"})
        if access.action is Action.LIST:
            return True
        return access.grant is not None and access.grant.identity == "ann"

    runner = Runner()
    ann = FakeRequest("POST", user="ann")
    async with SessionBroker(runner, authorize=authorize) as broker:
        created = await broker.create_session(b'{"code": "x"}', request=ann)
        sid = created.stream.session_id
        assert created.headers["X-Owner"] == "ann"
        await wait_until(lambda: created.stream.next_seq == 3)
        assert runner.requests[0].http is ann  # the runner sees the HTTP request
        assert seen[-1].action is Action.CREATE
        assert (seen[-1].session_id, seen[-1].session, seen[-1].body) == (
            sid,
            None,
            runner.requests[0],
        )
        await broker.open_stream(sid, request=ann)
        await broker.session_info(sid, request=ann)
        await broker.list_sessions(request=ann)
        await broker.cancel(sid, request=ann)
        assert [(a.action.value, a.session is created.stream) for a in seen[1:]] == [
            ("read", True),
            ("info", True),
            ("list", False),
            ("info", True),  # each listed session is one the caller may see
            ("cancel", True),
        ]
        assert all(a.request is ann for a in seen)
        bob = FakeRequest(user="bob")
        for call in (
            lambda: broker.create_session(b'{"code": "x"}', request=bob),
            lambda: broker.open_stream(sid, request=bob),
            lambda: broker.session_info(sid, request=bob),
            lambda: broker.list_sessions(request=bob),
            lambda: broker.cancel(sid),
        ):
            with pytest.raises(BrokerError) as caught:
                await call()
            assert (caught.value.status, caught.value.code) == (403, "FORBIDDEN")
        assert len(broker) == 1  # the refused create left nothing
        outside = broker.add(EventStream("s_outside", heartbeat_interval_ms=None))
        with pytest.raises(BrokerError):  # no grant: not ann's
            await broker.open_stream("s_outside", request=ann)
        outside.final(True)


async def test_a_hook_may_raise_its_own_refusal_and_limit_identities() -> None:
    async def authorize(access: Access) -> Decision:
        if access.request is None:
            raise BrokerError(401, "UNAUTHORIZED", "who?", headers={"WWW-Authenticate": "Bearer"})
        return Grant(access.request.headers["user"])

    runner = Runner()
    config = BrokerConfig(max_sessions_per_identity=2, heartbeat_interval_ms=None)
    async with SessionBroker(runner, config=config, authorize=authorize) as broker:
        with pytest.raises(BrokerError) as caught:
            await broker.create_session(b'{"code": "x"}')
        assert (caught.value.status, caught.value.headers) == (401, {"WWW-Authenticate": "Bearer"})
        ann = [await broker.create_session(b'{"code": "x"}', request=FakeRequest(user="ann"))]
        ann.append(await broker.create_session(b'{"code": "x"}', request=FakeRequest(user="ann")))
        with pytest.raises(BrokerError) as caught:
            await broker.create_session(b'{"code": "x"}', request=FakeRequest(user="ann"))
        assert (caught.value.status, caught.value.code) == (429, "TOO_MANY_SESSIONS_FOR_IDENTITY")
        assert "ann" not in caught.value.message  # an identity may be a credential
        assert caught.value.headers == {"Retry-After": "60"}
        await broker.create_session(b'{"code": "x"}', request=FakeRequest(user="bob"))
        await broker.cancel(ann[0].stream.session_id, request=FakeRequest(user="ann"))
        await lines_of(ann[0].body)
        await anyio.wait_all_tasks_blocked()  # its producer has returned: it may go
        await broker.create_session(b'{"code": "x"}', request=FakeRequest(user="ann"))
        runner.release.set()


async def test_session_tokens() -> None:
    runner = Runner()
    runner.release.set()
    async with SessionBroker(runner, authorize=SessionTokens()) as broker:
        created = await broker.create_session(b'{"code": "x"}', request=FakeRequest("POST"))
        token = created.headers["X-Session-Token"]
        other = await broker.create_session(b'{"code": "x"}', request=FakeRequest("POST"))
        assert other.headers["X-Session-Token"] != token
        sid = created.stream.session_id
        await lines_of(created.body)
        for request in (
            FakeRequest(**{"X-Session-Token": token}),
            FakeRequest(authorization=f"Bearer {token}"),
        ):
            await lines_of((await broker.open_stream(sid, request=request)).body)
            await broker.session_info(sid, request=request)
        refused: list[tuple[FakeRequest | None, int]] = [
            (None, 401),
            (FakeRequest(), 401),
            (FakeRequest(**{"X-Session-Token": other.headers["X-Session-Token"]}), 403),
            (FakeRequest(authorization="Basic " + token), 401),
        ]
        for maybe, status in refused:
            with pytest.raises(BrokerError) as caught:
                await broker.open_stream(sid, request=maybe)
            assert caught.value.status == status
        with pytest.raises(BrokerError) as caught:
            await broker.list_sessions(request=FakeRequest(**{"X-Session-Token": token}))
        assert caught.value.status == 403


# --- resuming with the upstream client's `from` ------------------------------------


async def test_from_is_read_like_from_seq_and_from_seq_wins() -> None:
    async with SessionBroker() as broker:
        stream = broker.add(EventStream("s_1", heartbeat_interval_ms=None))
        for _ in range(4):
            stream.stdout("x")
        assert (await broker.open_stream("s_1", None, "3")).body.next_seq == 3
        assert (await broker.open_stream("s_1", "2", "4")).body.next_seq == 2
        assert (await broker.open_stream("s_1")).body.next_seq == 0
        for from_seq, from_ in (("x", None), (None, "-1"), ("2", "1.5"), ("abc", "2")):
            with pytest.raises(BrokerError) as caught:
                await broker.open_stream("s_1", from_seq, from_)
            assert (caught.value.status, caught.value.code) == (400, "INVALID_REQUEST")
        with pytest.raises(
            BrokerError, match="INVALID_REQUEST: from must be a non-negative integer"
        ):
            await broker.open_stream("s_1", None, "-1")
        stream.final(True)


# --- cancelUrl, session info and the list -----------------------------------------


async def test_cancel_url_carries_the_base_path() -> None:
    runner = Runner()
    runner.release.set()
    async with SessionBroker(runner, config=CLIENT_IDS) as broker:
        plain = await broker.create_session(b'{"code": "x", "sessionId": "s_a"}')
        mounted = await broker.create_session(
            b'{"code": "x", "sessionId": "s_b"}', base_path="/api/"
        )
        init_a = (await lines_of(plain.body))[0]["payload"]
        init_b = (await lines_of(mounted.body))[0]["payload"]
    assert init_a["cancelUrl"] == "/sessions/s_a/cancel"
    assert init_b["cancelUrl"] == "/api/sessions/s_b/cancel"


async def test_session_info_and_list() -> None:
    clock = FakeWallClock()
    runner = Runner()
    async with SessionBroker(runner, config=CLIENT_IDS, now=clock) as broker:
        assert await broker.list_sessions() == {"sessions": [], "total": 0}
        created = await broker.create_session(b'{"code": "x", "sessionId": "s_1"}')
        await wait_until(lambda: created.stream.next_seq == 3)
        created_ms = round(START.timestamp() * 1000)
        info = await broker.session_info("s_1")
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
        done = await broker.session_info("s_1")
        assert (done["state"], done["lastSeq"], done["stats"]["duration"]) == ("completed", 3, 1500)
        clock.advance(1000)  # a finished session's duration stays what its final said
        assert (await broker.session_info("s_1"))["stats"]["duration"] == 1500

        other = broker.add(EventStream("s_2", heartbeat_interval_ms=None, now=clock))
        await broker.cancel("s_2")
        listed = await broker.list_sessions()
        assert listed["total"] == 2
        assert [(s["sessionId"], s["state"]) for s in listed["sessions"]] == [
            ("s_1", "completed"),
            ("s_2", "cancelled"),
        ]
        assert other.state.value == "cancelled"
        with pytest.raises(BrokerError) as caught:
            await broker.session_info("s_nope")
        assert caught.value.status == 404


# --- shutdown ----------------------------------------------------------------------


async def test_shutdown_ends_every_running_session_and_refuses_new_ones() -> None:
    runner = Runner()
    broker = SessionBroker(runner)
    broker.shutdown()  # not running: nothing to do
    async with broker:
        created = await broker.create_session(b'{"code": "x"}')
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
                await _awaited(refused())
            assert (caught.value.status, caught.value.code) == (503, "SHUTTING_DOWN")
        # Still readable until the block ends.
        assert len(await lines_of((await broker.open_stream(created.stream.session_id)).body)) == 3
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
                created = await broker.create_session(b'{"code": "x"}')
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
            created = await broker.create_session(b'{"code": "x"}')
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


async def test_new_stream_takes_the_brokers_settings() -> None:
    clock = FakeWallClock()
    config = BrokerConfig(heartbeat_interval_ms=None, ttl_ms=5000, max_events=3)
    async with SessionBroker(config=config, now=clock) as broker:
        produced = anyio.Event()

        async def run(stream: EventStream) -> None:
            for _ in range(5):
                stream.stdout("x")
            stream.final(True)
            produced.set()

        stream = broker.new_stream(run)
        assert stream.session_id in broker
        assert stream.expires_at == START + timedelta(milliseconds=5000)
        await produced.wait()
        assert len(stream.store.read(5)) == 3  # bounded at 3 events: seq 5, 6, 7
        server, _ = session_pair()
        encrypted = broker.new_stream(session=server)
        assert (encrypted.session_id, encrypted.encrypted) == (SESSION_ID, True)
        encrypted.final(True)
