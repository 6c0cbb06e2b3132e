"""Scale-out end to end: broker replicas as separate uvicorn processes on one Redis.

A client resumes alternately on each replica through real network cuts and
gets every event exactly once, in order (plain and encrypted, asyncio and
trio); Redis killed with ``kill -9`` and restarted empty mid-session loses
or repeats nothing; an owner killed mid-session ends its readers with a
clear error; ``uvicorn --workers 3`` serves any resume on any worker.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack

import anyio
import httpx
import pytest

from enclave_stream import FinalEvent, StdoutEvent, StreamEvent, open_event_stream
from enclave_stream.errors import StreamFailedError
from enclave_stream.reconnect import ReconnectionConfig
from enclave_stream.reconnect.http import BrokerConnector, broker_connector, httpx_connector
from tests.integration.asgi_server import HTTPX_CLOSED_EARLY, CuttingProxy
from tests.redis.replicas import Cluster, cluster, start_replica
from tests.redis.server import running_redis
from tests.redis.test_store import COREDIS_FAILED_CONNECT

pytestmark = [
    pytest.mark.anyio,
    COREDIS_FAILED_CONNECT,
    *HTTPX_CLOSED_EARLY,
]


@pytest.fixture(autouse=True)
def collect_here() -> Iterator[None]:
    """What httpx leaves to the collector is collected under this module's filters."""
    yield
    gc.collect()


EVENTS = 300
SHAPE = {"SESSION_EVENTS": str(EVENTS), "SESSION_EVENT_DELAY": "0.002"}
RETRIES = ReconnectionConfig(max_retries=60, initial_delay_ms=5, max_delay_ms=100, jitter=False)


class Alternating:
    """A connector: the ``POST`` on the first URL, then each resume on the next URL in turn."""

    def __init__(self, client: httpx.AsyncClient, urls: list[str], *, encrypt: bool) -> None:
        self.urls = urls
        self.client = client
        # The server names the session: until it has, every call is the start.
        self.start: BrokerConnector = broker_connector(
            client, urls[0], code="e2e", encrypt=encrypt, client_session_id=False
        )
        self.resumes: list[tuple[str, int | None]] = []

    def __call__(self, from_seq: int | None) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        session_id = self.start.session_id
        if session_id is None:
            return self.start(from_seq)
        url = self.urls[(len(self.resumes) + 1) % len(self.urls)]
        self.resumes.append((url, from_seq))
        return httpx_connector(self.client, f"{url}/sessions/{session_id}/stream")(from_seq)


class Follower:
    """A client following the session with ``open_event_stream``, and how far it got."""

    def __init__(self, connect: Alternating) -> None:
        self.connect = connect
        self.received: list[StreamEvent] = []
        self.failure: StreamFailedError | None = None
        self._waiting: list[tuple[int, anyio.Event]] = []

    async def run(self) -> None:
        opener = self.connect.start if self.connect.start.encrypted else None
        try:
            async with open_event_stream(
                self.connect, session=opener, config=RETRIES, heartbeat_timeout_ms=20_000
            ) as events:
                async for event in events:
                    self.received.append(event)
                    for count, reached in self._waiting:
                        if len(self.received) >= count:
                            reached.set()
        except StreamFailedError as exc:
            self.failure = exc

    async def wait_for(self, count: int) -> None:
        reached = anyio.Event()
        self._waiting.append((count, reached))
        with anyio.fail_after(20):
            await reached.wait()


def assert_exactly_once(received: list[StreamEvent], steps: int = EVENTS) -> None:
    assert [event.seq for event in received] == list(range(1, steps + 3))
    chunks = [event.payload.chunk for event in received if isinstance(event, StdoutEvent)]
    assert chunks == [f"step {step}/{steps} of e2e\n" for step in range(1, steps + 1)]
    assert isinstance(received[-1], FinalEvent)
    assert received[-1].payload.ok


@pytest.fixture(scope="module")
def replicas() -> Iterator[Cluster]:
    with cluster(2, **SHAPE) as made:
        yield made


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
async def test_resuming_on_each_replica_in_turn_through_cuts_loses_and_repeats_nothing(
    replicas: Cluster, encrypted: bool
) -> None:
    async with AsyncExitStack() as stack:
        proxies = [
            await stack.enter_async_context(CuttingProxy(replica.port, [1200] * 400))
            for replica in replicas.replicas
        ]
        client = await stack.enter_async_context(httpx.AsyncClient(trust_env=False))
        connect = Alternating(client, [proxy.url for proxy in proxies], encrypt=encrypted)
        follower = Follower(connect)
        with anyio.fail_after(60):
            await follower.run()
    assert follower.failure is None
    assert_exactly_once(follower.received)
    assert sum(proxy.cut for proxy in proxies) >= 20
    used = {url for url, _ in connect.resumes}
    assert used == {proxy.url for proxy in proxies}  # both replicas served resumes
    assert len(connect.resumes) >= 20


async def test_redis_killed_and_restarted_empty_mid_session_loses_and_repeats_nothing() -> None:
    steps = 200
    with cluster(2, SESSION_EVENTS=str(steps), SESSION_EVENT_DELAY="0.01") as made:
        owner, other = made.replicas
        # The POST's response is cut: the client follows on the other replica, from Redis.
        async with (
            CuttingProxy(owner.port, [3000]) as proxy,
            httpx.AsyncClient(trust_env=False) as client,
        ):
            connect = Alternating(client, [proxy.url, other.url], encrypt=False)
            follower = Follower(connect)
            with anyio.fail_after(60):
                async with anyio.create_task_group() as task_group:
                    task_group.start_soon(follower.run)
                    await follower.wait_for(40)
                    assert connect.resumes[0][0] == other.url
                    made.redis.kill()
                    await anyio.sleep(0.3)
                    made.redis.start()  # empty: the owner puts its log back
        assert follower.failure is None
        assert_exactly_once(follower.received, steps)


@pytest.mark.parametrize(
    ("anyio_backend", "encrypted"),
    [("asyncio", False), ("trio", True)],
    ids=["asyncio-plain", "trio-encrypted"],
)
async def test_an_owner_killed_mid_session_ends_its_readers_with_a_clear_error(
    encrypted: bool,
) -> None:
    shape = {"SESSION_EVENTS": "2000", "SESSION_EVENT_DELAY": "0.01", "REDIS_LEASE_SECONDS": "1"}
    with cluster(2, **shape) as made:
        async with httpx.AsyncClient(trust_env=False) as client:
            follower = Follower(Alternating(client, made.urls, encrypt=encrypted))
            with anyio.fail_after(30):
                async with anyio.create_task_group() as task_group:
                    task_group.start_soon(follower.run)
                    await follower.wait_for(30)
                    made.replicas[0].kill()  # the owner: it took the POST
        received = follower.received
        failure = [] if follower.failure is None else [follower.failure]
        seqs = [event.seq for event in received]
        assert seqs == list(range(1, len(seqs) + 1))  # nothing lost or repeated before the end
        if encrypted:
            # Nobody else can seal a final: the session ends, a resume is a 410.
            assert len(failure) == 1
            assert "410" in str(failure[0].cause)
            assert "SESSION_OWNER_LOST" in str(failure[0].cause)
        else:
            assert failure == []
            final = received[-1]
            assert isinstance(final, FinalEvent)
            assert not final.payload.ok
            assert final.payload.error.code == "SESSION_OWNER_LOST"  # type: ignore[union-attr]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_uvicorn_with_three_workers_serves_any_resume_on_any_worker() -> None:
    with running_redis() as redis, start_replica(redis.url, workers=3, **SHAPE) as replica:
        async with (
            CuttingProxy(replica.port, [1500] * 400) as proxy,
            httpx.AsyncClient(trust_env=False) as client,
        ):
            follower = Follower(Alternating(client, [proxy.url], encrypt=True))
            with anyio.fail_after(60):
                await follower.run()
        assert follower.failure is None
        assert_exactly_once(follower.received)
        assert proxy.cut >= 20
