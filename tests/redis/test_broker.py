"""Two brokers on one Redis, in one process: a session made by one is served by the other."""

from __future__ import annotations

import secrets

import anyio
import anyio.lowlevel
import msgspec
import pytest

from enclave_stream import ClientHandshake, parse_lines
from enclave_stream.producer import (
    SERVER_HELLO_HEADER,
    BrokerConfig,
    BrokerError,
    EventStream,
    SessionBroker,
    SessionRequest,
    SessionTokens,
    token_digest,
)
from enclave_stream.redis import RedisBackend
from tests.redis.server import RedisServer
from tests.redis.test_store import COREDIS_FAILED_CONNECT, FAST

pytestmark = [pytest.mark.anyio, COREDIS_FAILED_CONNECT]

CONFIG = BrokerConfig(heartbeat_interval_ms=None)


class FakeHttp:
    method = "GET"

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers


async def run(stream: EventStream, request: SessionRequest) -> None:
    for index in range(20):
        stream.stdout(f"{request.code} {index}")
        await anyio.lowlevel.checkpoint()
    stream.final(True, "done")


def pair(server: RedisServer, **kwargs: object) -> tuple[SessionBroker, SessionBroker]:
    prefix = f"t{secrets.token_hex(4)}"
    return tuple(  # type: ignore[return-value]
        SessionBroker(
            run,
            config=CONFIG,
            backend=RedisBackend(server.url, limits=FAST, prefix=prefix),
            **kwargs,  # type: ignore[arg-type]
        )
        for _ in range(2)
    )


async def body_lines(body: object) -> list[bytes]:
    data = b""
    with anyio.fail_after(10):
        async for chunk in body:  # type: ignore[attr-defined]
            data += chunk
    return data.splitlines(keepends=True)


async def test_a_session_made_by_one_broker_is_resumed_on_the_other(
    shared_redis: RedisServer,
) -> None:
    one, other = pair(shared_redis)
    async with one, other:
        created = await one.create_session(b'{"code": "hi"}')
        lines = await body_lines(created.body)
        assert [msgspec.json.decode(line)["seq"] for line in lines] == list(range(1, 23))
        resumed = await other.open_stream(created.session_id, "10")
        assert resumed.stream is None
        assert resumed.headers["X-Session-ID"] == created.session_id
        assert await body_lines(resumed.body) == lines[9:]
        upstream = await other.open_stream(created.session_id, None, "21")
        assert await body_lines(upstream.body) == lines[20:]
        await anyio.sleep(FAST.lease_seconds)  # Redis is known to hold its sessions by now
        with pytest.raises(BrokerError) as unknown:
            await other.open_stream("s_unknown")
        assert unknown.value.status == 404


async def test_the_creators_token_opens_the_session_on_every_replica(
    shared_redis: RedisServer,
) -> None:
    prefix = f"t{secrets.token_hex(4)}"
    one, other = (
        SessionBroker(
            run,
            config=CONFIG,
            authorize=SessionTokens(),
            backend=RedisBackend(shared_redis.url, limits=FAST, prefix=prefix),
        )
        for _ in range(2)
    )
    async with one, other:
        created = await one.create_session(b'{"code": "hi"}')
        token = created.headers["X-Session-Token"]
        await body_lines(created.body)
        with pytest.raises(BrokerError) as refused:
            await other.open_stream(created.session_id, "1", request=FakeHttp({}))
        assert refused.value.status == 401
        with pytest.raises(BrokerError) as wrong:
            await other.open_stream(
                created.session_id, "1", request=FakeHttp({"X-Session-Token": "nope"})
            )
        assert wrong.value.status == 403
        opened = await other.open_stream(
            created.session_id, "1", request=FakeHttp({"X-Session-Token": token})
        )
        assert len(await body_lines(opened.body)) == 22
        # Redis keeps only the token's digest, which opens nothing itself.
        backend = RedisBackend(shared_redis.url, limits=FAST, prefix=prefix)
        async with backend:
            meta = await backend.client.hget(backend.keys(created.session_id).meta, "grant")
        assert meta is not None
        assert token.encode() not in meta
        assert token_digest(token).encode() in meta
        with pytest.raises(BrokerError) as digest:
            await other.open_stream(
                created.session_id, "1", request=FakeHttp({"X-Session-Token": token_digest(token)})
            )
        assert digest.value.status == 403


async def test_an_encrypted_session_resumes_sealed_elsewhere_with_its_server_hello(
    shared_redis: RedisServer,
) -> None:
    handshake = ClientHandshake()
    hello = msgspec.to_builtins(handshake.client_hello)
    request = {"code": "secret", "encryption": {"mode": "required", "clientHello": hello}}
    one, other = pair(shared_redis)
    async with one, other:
        created = await one.create_session(msgspec.json.encode(request))
        lines = await body_lines(created.body)
        resumed = await other.open_stream(created.session_id, "3")
        assert resumed.headers[SERVER_HELLO_HEADER] == created.headers[SERVER_HELLO_HEADER]
        assert await body_lines(resumed.body) == lines[2:]
    session = handshake.complete(created.headers[SERVER_HELLO_HEADER], created.session_id)
    assert b"secret" not in b"".join(lines)
    parsed = parse_lines(b"".join(lines).decode()).events
    events = [session.open(event) for event in parsed]  # type: ignore[arg-type]
    assert [event.seq for event in events] == list(range(1, 23))


async def until_cancelled(stream: EventStream, request: SessionRequest) -> None:
    stream.stdout("working")
    await anyio.sleep_forever()


async def test_a_cancel_on_another_replica_reaches_the_owner(shared_redis: RedisServer) -> None:
    prefix = f"t{secrets.token_hex(4)}"
    one, other = (
        SessionBroker(
            until_cancelled,
            config=CONFIG,
            backend=RedisBackend(shared_redis.url, limits=FAST, prefix=prefix),
        )
        for _ in range(2)
    )
    async with one, other:
        created = await one.create_session(b'{"code": "hi"}')
        with anyio.fail_after(5):
            await one.get(created.session_id).store.wait_written()  # type: ignore[attr-defined]
        await other.cancel(created.session_id)
        lines = await body_lines(created.body)  # ends: the owner read the request
        final = msgspec.json.decode(lines[-1])
        assert (final["type"], final["payload"]["error"]["code"]) == ("final", "SESSION_CANCELLED")
        await other.cancel(created.session_id)  # finished: left as it is
        await anyio.sleep(FAST.lease_seconds)  # Redis is known to hold its sessions by now
        with pytest.raises(BrokerError) as unknown:
            await other.cancel("s_unknown")
        assert unknown.value.status == 404


async def test_a_shutdown_cuts_responses_served_for_another_replicas_session(
    shared_redis: RedisServer,
) -> None:
    prefix = f"t{secrets.token_hex(4)}"
    timeout = 0.3
    one, other = (
        SessionBroker(
            until_cancelled,
            config=BrokerConfig(heartbeat_interval_ms=None, shutdown_timeout_seconds=timeout),
            backend=RedisBackend(shared_redis.url, limits=FAST, prefix=prefix),
        )
        for _ in range(2)
    )
    async with one, other:
        created = await one.create_session(b'{"code": "hi"}')
        with anyio.fail_after(5):
            await one.get(created.session_id).store.wait_written()  # type: ignore[attr-defined]
        resumed = await other.open_stream(created.session_id, "1")
        with other.serving(created.session_id) as served:

            async def keep_taking() -> None:
                # A client that reads on (heartbeats, say): never a stalled response.
                while True:
                    served.sent()
                    await anyio.sleep(0.02)

            with anyio.fail_after(10):
                async with anyio.create_task_group() as task_group:
                    task_group.start_soon(keep_taking)
                    other.shutdown()
                    started = anyio.current_time()
                    with served.cancel_scope:
                        await body_lines(resumed.body)
                    task_group.cancel_scope.cancel()
            took = anyio.current_time() - started
        assert served.cancel_scope.cancel_called
        assert timeout <= took < 2 * timeout + 0.5
        assert not one.get(created.session_id).finished  # the owner runs on
        await one.cancel(created.session_id)


async def test_a_client_chosen_id_held_on_another_replica_is_a_409_before_the_runner_starts(
    shared_redis: RedisServer,
) -> None:
    prefix = f"t{secrets.token_hex(4)}"
    started: list[str] = []

    async def counted(stream: EventStream, request: SessionRequest) -> None:
        started.append(stream.session_id)
        await run(stream, request)

    one, other = (
        SessionBroker(
            counted,
            config=BrokerConfig(heartbeat_interval_ms=None, client_session_ids=True),
            backend=RedisBackend(shared_redis.url, limits=FAST, prefix=prefix),
        )
        for _ in range(2)
    )
    chosen = f"s_{secrets.token_hex(8)}"
    body = msgspec.json.encode({"code": "hi", "sessionId": chosen})
    async with one, other:
        # Refused after its claim (encryption required, no clientHello): the id is given back.
        refused_body = {"code": "hi", "sessionId": chosen, "encryption": {"mode": "required"}}
        with pytest.raises(BrokerError) as bad:
            await one.create_session(msgspec.json.encode(refused_body))
        assert bad.value.status == 400
        created = await one.create_session(body)
        with pytest.raises(BrokerError) as taken:
            await other.create_session(body)
        assert (taken.value.status, taken.value.code) == (409, "SESSION_EXISTS")
        lines = await body_lines(created.body)
        assert len(lines) == 22
        with pytest.raises(BrokerError) as still:
            await other.create_session(body)  # finished, still held in Redis
        assert still.value.status == 409
        await anyio.sleep(0.1)
        assert started == [chosen]
        resumed = await other.open_stream(chosen, "1")
        assert await body_lines(resumed.body) == lines
