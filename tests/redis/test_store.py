"""Sessions on a real Redis: the owner's store, any replica's replay, and failures.

Each test uses its own key prefix (or its own server when it kills it), on
asyncio and trio. Leases are short (tenths of a second) and real: their
expiry is Redis's clock, which no virtual clock drives.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import coredis
import msgspec
import pytest

from enclave_stream.errors import BrokerError, ReplayUnavailableError, StoreUnavailableError
from enclave_stream.producer import EventStream
from enclave_stream.redis import OWNER_LOST, RedisBackend, RedisLimits, RedisReplay
from enclave_stream.redis.scripts import FLUSH
from tests.redis.server import RedisServer

# coredis leaves the memory streams of a connection that failed to connect
# unclosed (ResourceWarning when collected): Redis being down is what these test.
COREDIS_FAILED_CONNECT = pytest.mark.filterwarnings(
    r"ignore:.*MemoryObject\w+Stream.__del__:pytest.PytestUnraisableExceptionWarning"
)
pytestmark = [pytest.mark.anyio, COREDIS_FAILED_CONNECT]

# A live owner renews its lease every third of it: a second leaves room for a
# loaded machine's stalls. Tests of an expiry use shorter ones, the owner dead.
FAST = RedisLimits(
    lease_seconds=1.0, follow_block_seconds=0.05, retry_max_seconds=0.05, drain_seconds=0.2
)


@asynccontextmanager
async def backend(
    server: RedisServer, limits: RedisLimits = FAST, prefix: str | None = None
) -> AsyncIterator[RedisBackend]:
    async with RedisBackend(
        server.url, limits=limits, prefix=prefix or f"t{secrets.token_hex(4)}"
    ) as made:
        yield made


def session(owner: RedisBackend, session_id: str | None = None, **kwargs: object) -> EventStream:
    session_id = session_id or f"s_{secrets.token_hex(6)}"
    factory = owner.store_factory(session_id, **kwargs)  # type: ignore[arg-type]
    return EventStream(session_id, heartbeat_interval_ms=None, store_factory=factory)


async def in_redis(stream: EventStream) -> EventStream:
    """``stream`` once Redis holds what it appended (as after a POST's first line)."""
    with anyio.fail_after(5):
        await stream.store.wait_for(stream.next_seq - 1)
    return stream


async def read_all(replay: RedisReplay) -> list[bytes]:
    lines: list[bytes] = []
    with anyio.fail_after(10):
        async for chunk in replay:
            lines.extend(chunk.splitlines(keepends=True))
    return lines


def seqs(lines: list[bytes]) -> list[int]:
    return [msgspec.json.decode(line)["seq"] for line in lines]


async def test_lines_reach_other_replicas_byte_for_byte_and_end_at_final(
    shared_redis: RedisServer,
) -> None:
    async with backend(shared_redis) as owner:
        stream = session(owner)
        for index in range(300):
            stream.stdout(f"line {index}\n")
        stream.final(True, {"n": 300})
        await stream.store.wait_written()  # type: ignore[attr-defined]
        local = stream.store.read(0)
        assert [entry.seq for entry in local] == list(range(1, 303))
        async with backend(shared_redis, prefix=owner.prefix) as other:
            lines = await read_all(await other.open_replay(stream.session_id, 0))
            assert lines == [entry.line for entry in local]
            resumed = await read_all(await other.open_replay(stream.session_id, 290))
            assert seqs(resumed) == list(range(290, 303))
            status = await other.status(stream.session_id)
            assert status is not None
            assert (status.state, status.top, status.end, status.leased) == (
                "finished",
                302,
                302,
                False,
            )


async def test_a_reader_on_the_owner_gets_a_line_only_once_redis_holds_it(
    own_redis: RedisServer,
) -> None:
    async with backend(own_redis) as owner:
        stream = session(owner)
        store = stream.store
        with anyio.fail_after(5):
            await store.wait_for(1)
        own_redis.kill()
        stream.stdout("a")
        stream.stdout("b")
        stream.final(True)
        assert [entry.seq for entry in store.read(0)] == [1]
        body = stream.ndjson_body(0)
        got: list[bytes] = []

        async def read() -> None:
            async for chunk in body:
                got.extend(chunk.splitlines(keepends=True))

        async with anyio.create_task_group() as task_group:
            task_group.start_soon(read)
            await anyio.sleep(0.2)
            assert seqs(got) == [1]  # the final is appended, not yet in Redis: no end
            own_redis.start()  # empty: the owner puts its log back
            with anyio.fail_after(10):
                await store.wait_written()  # type: ignore[attr-defined]
        assert seqs(got) == [1, 2, 3, 4]
        async with backend(own_redis, prefix=owner.prefix) as other:
            lines = await read_all(await other.open_replay(stream.session_id))
        assert lines == [entry.line for entry in store.read(0)]


async def test_a_replay_follows_live_lines_and_ends_after_final(shared_redis: RedisServer) -> None:
    async with backend(shared_redis) as owner, backend(shared_redis, prefix=owner.prefix) as other:
        stream = await in_redis(session(owner))
        replay = await other.open_replay(stream.session_id, 1)
        got: list[bytes] = []

        async def follow() -> None:
            got.extend(await read_all(replay))

        async with anyio.create_task_group() as task_group:
            task_group.start_soon(follow)
            for index in range(50):
                stream.stdout(str(index))
                if index % 10 == 0:
                    await anyio.sleep(0.01)
            stream.final(True)
        assert seqs(got) == list(range(1, 53))
        assert msgspec.json.decode(got[-1])["type"] == "final"


async def test_trimmed_history_is_a_410_naming_the_first_seq_held(
    shared_redis: RedisServer,
) -> None:
    limits = RedisLimits(
        max_events=5, max_bytes=100_000, lease_seconds=1.0, follow_block_seconds=0.05
    )
    async with backend(shared_redis, limits) as owner:
        stream = session(owner)
        for index in range(20):
            stream.stdout(str(index))
        with anyio.fail_after(5):
            await stream.store.wait_for(21)
        with pytest.raises(BrokerError) as refused:
            await owner.open_replay(stream.session_id, 3)
        assert (refused.value.status, refused.value.code) == (410, "REPLAY_UNAVAILABLE")
        assert refused.value.details == {"requestedSeq": 3, "firstAvailableSeq": 17}
        # A reader that falls behind the trimming ends loudly, never skipping a line.
        replay = await owner.open_replay(stream.session_id, 17)
        for index in range(10):
            stream.stdout(str(index))
        with anyio.fail_after(5):
            await stream.store.wait_for(31)
        with pytest.raises(ReplayUnavailableError) as behind:
            await read_all(replay)
        assert (behind.value.requested_seq, behind.value.first_available_seq) == (17, 27)


async def test_the_byte_bound_trims_too(shared_redis: RedisServer) -> None:
    limits = RedisLimits(max_events=1000, max_bytes=1000, lease_seconds=1.0)
    async with backend(shared_redis, limits) as owner:
        stream = session(owner)
        for _ in range(30):
            stream.stdout("x" * 100)
            await in_redis(stream)
        stream.final(True)
        with anyio.fail_after(5):
            await stream.store.wait_written()  # type: ignore[attr-defined]
        status = await owner.status(stream.session_id)
        assert status is not None
        lines = await read_all(await owner.open_replay(stream.session_id, status.first))
        assert sum(map(len, lines)) <= 1000
        assert seqs(lines) == list(range(status.first, 33))
        assert status.first > 1


async def test_unknown_is_404_once_redis_is_known_to_hold_its_sessions(
    shared_redis: RedisServer,
) -> None:
    async with backend(shared_redis) as other:
        # Just found without its recovery key (new, or restarted empty): maybe on its way back.
        with pytest.raises(BrokerError) as early:
            await other.open_replay("s_nobody")
        assert (early.value.status, early.value.code) == (503, "STORE_RECOVERING")
        assert early.value.headers == {"Retry-After": "1"}
        await anyio.sleep(FAST.lease_seconds + 0.05)
        with pytest.raises(BrokerError) as late:
            await other.open_replay("s_nobody")
        assert (late.value.status, late.value.code) == (404, "NOT_FOUND")


async def test_redis_down_is_a_retryable_503_and_ends_a_follower(own_redis: RedisServer) -> None:
    async with backend(own_redis) as owner:
        stream = await in_redis(session(owner))
        replay = await owner.open_replay(stream.session_id)
        assert seqs(await anext_lines(replay)) == [1]
        own_redis.kill()
        with pytest.raises(StoreUnavailableError):
            await read_all(replay)
        with pytest.raises(BrokerError) as down:
            await owner.open_replay(stream.session_id)
        assert (down.value.status, down.value.code) == (503, "STORE_UNAVAILABLE")
        assert down.value.headers == {"Retry-After": "1"}


async def anext_lines(replay: RedisReplay) -> list[bytes]:
    with anyio.fail_after(5):
        return (await replay.__anext__()).splitlines(keepends=True)


async def test_redis_restarted_empty_gets_the_owners_log_back(own_redis: RedisServer) -> None:
    limits = RedisLimits(max_events=5, lease_seconds=1.0, follow_block_seconds=0.05)
    async with backend(own_redis, limits) as owner:
        stream = session(owner)
        for index in range(10):
            stream.stdout(str(index))
        with anyio.fail_after(5):
            await stream.store.wait_for(11)
        own_redis.restart_empty()
        async with backend(own_redis, limits, prefix=owner.prefix) as other:
            with anyio.fail_after(5):
                # Another process's view: only polling Redis tells.
                while await status_or_none(other, stream.session_id) is None:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            # The owner holds seq 7..11 only: earlier ones are a clean 410.
            with pytest.raises(BrokerError) as gone:
                await other.open_replay(stream.session_id, 1)
            assert gone.value.details == {"requestedSeq": 1, "firstAvailableSeq": 7}
            replay = await other.open_replay(stream.session_id, 7)
            lines = await anext_lines(replay)
            stream.stdout("after")
            stream.final(True)
            lines += await read_all(replay)
        assert seqs(lines) == [7, 8, 9, 10, 11, 12, 13]
        assert lines[2:] == [entry.line for entry in stream.store.read(9)]


async def status_or_none(other: RedisBackend, session_id: str) -> object:
    try:
        return await other.status(session_id)
    except coredis.exceptions.RedisError:
        return None


async def test_while_redis_is_down_the_owner_keeps_every_line_up_to_its_bound(
    own_redis: RedisServer,
) -> None:
    from enclave_stream.errors import LogFullError

    limits = RedisLimits(max_events=5, max_bytes=2000, lease_seconds=1.0, retry_max_seconds=0.05)
    async with backend(own_redis, limits) as owner:
        stream = session(owner)
        with anyio.fail_after(5):
            await stream.store.wait_for(1)
        own_redis.kill()

        def fill() -> None:
            for _ in range(100):
                stream.stdout("y" * 100)  # past max_events: none is dropped

        with pytest.raises(LogFullError):
            fill()
        appended = stream.next_seq - 1
        assert appended > 5
        # Past max_events, and not one dropped: Redis does not hold them yet.
        held = stream.store.local.read(2)  # type: ignore[attr-defined]
        assert [entry.seq for entry in held] == list(range(2, appended + 1))
        own_redis.start()
        stream.final(True)
        with anyio.fail_after(10):
            await stream.store.wait_written()  # type: ignore[attr-defined]
        status = await owner.status(stream.session_id)
        assert status is not None
        assert (status.first, status.top) == (appended - 3, appended + 1)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
async def test_an_owner_that_stops_is_noticed_through_its_lease(
    shared_redis: RedisServer, encrypted: bool
) -> None:
    limits = RedisLimits(lease_seconds=0.3, follow_block_seconds=0.05, drain_seconds=0)
    prefix = f"t{secrets.token_hex(4)}"
    with anyio.CancelScope() as crash:
        async with backend(shared_redis, limits, prefix) as owner:
            stream = session(owner, encrypted=encrypted)
            stream.stdout("last words")
            with anyio.fail_after(5):
                await stream.store.wait_for(2)
            crash.cancel()  # the process dies: nothing refreshes its lease
    async with backend(shared_redis, limits, prefix) as other:
        lines = await read_all(await other.open_replay(stream.session_id))
        if encrypted:
            assert seqs(lines) == [1, 2]  # nobody else can seal a final: it just ends
            with pytest.raises(BrokerError) as gone:
                await other.open_replay(stream.session_id, 3)
            assert (gone.value.status, gone.value.code) == (410, "SESSION_OWNER_LOST")
        else:
            assert seqs(lines) == [1, 2, 3]
            final = msgspec.json.decode(lines[-1])
            assert final["type"] == "final"
            assert final["payload"]["ok"] is False
            assert final["payload"]["error"]["code"] == OWNER_LOST.code


async def test_a_batch_sent_again_is_stored_once_and_a_second_writer_is_fenced_off(
    shared_redis: RedisServer,
) -> None:
    keys = [f"x{secrets.token_hex(3)}:{{s_1}}:{part}" for part in ("log", "meta", "lease", "wake")]

    def args(owner: str, first: int, *lines: bytes, claimed: str = "0") -> list[object]:
        fixed = [100, 10_000, 60_000, 10_000, "0", "", claimed, b"{}"]
        return [owner, "append", first, "", *fixed, *lines]

    async with coredis.Redis.from_url(shared_redis.url) as client:
        flush = client.register_script(FLUSH)
        batch = args("a", 1, b"one\n", b"two\n")
        assert await flush(keys=keys, args=batch) == [b"OK", 2, 1, 0]
        # Its reply was lost: the owner sends it again, with what came since.
        again = args("a", 1, b"one\n", b"two\n", b"three\n", claimed="1")
        assert await flush(keys=keys, args=again) == [b"OK", 3, 1, 0]
        assert await client.xlen(keys[0]) == 3
        assert await flush(keys=keys, args=args("a", 5, b"five\n", claimed="1")) == [b"GAP", 3, 1]
        assert await flush(keys=keys, args=args("b", 4, b"four\n")) == [b"FENCED", 3, 1]
        assert await client.xlen(keys[0]) == 3


async def test_an_entered_client_is_used_and_left_open(shared_redis: RedisServer) -> None:
    async with coredis.Redis.from_url(shared_redis.url) as client:
        async with RedisBackend(client, limits=FAST, prefix=f"t{secrets.token_hex(4)}") as owner:
            stream = session(owner)
            stream.final(True)
            await stream.store.wait_written()  # type: ignore[attr-defined]
            lines = await read_all(await owner.open_replay(stream.session_id))
            assert seqs(lines) == [1, 2]
        assert await client.ping() == b"PONG"


async def test_followers_cut_mid_follow_leave_the_pool_whole(shared_redis: RedisServer) -> None:
    # coredis loses a pool slot for every command cancelled mid-flight: with 4
    # connections, 6 followers cut while blocked would leave nothing to serve.
    limits = RedisLimits(lease_seconds=1.0, follow_block_seconds=0.2, retry_max_seconds=0.05)
    prefix = f"t{secrets.token_hex(4)}"
    async with RedisBackend(
        shared_redis.url, limits=limits, prefix=prefix, max_connections=4, pool_timeout_seconds=2
    ) as owner:
        stream = await in_redis(session(owner))
        for _ in range(6):
            replay = await owner.open_replay(stream.session_id, 2)
            with anyio.move_on_after(0.05) as cut:
                await replay.__anext__()  # nothing new: blocked in XREAD
            assert cut.cancelled_caught
        with anyio.fail_after(3):
            stream.stdout("after the cuts")
            await in_redis(stream)
            lines = await anext_lines(await owner.open_replay(stream.session_id, 0))
        assert seqs(lines) == [1, 2]
        # Many at once: they take turns on the 4 connections, none hangs.
        with anyio.fail_after(5):
            async with anyio.create_task_group() as task_group:
                for _ in range(6):
                    replay = await owner.open_replay(stream.session_id, 3)
                    task_group.start_soon(replay.__anext__)
                await anyio.sleep(0.05)
                task_group.cancel_scope.cancel()
            stream.final(True)
            await stream.store.wait_written()  # type: ignore[attr-defined]
            lines = await read_all(await owner.open_replay(stream.session_id, 0))
        assert seqs(lines) == [1, 2, 3]


async def test_a_slow_owner_is_fenced_off_once_readers_ended_its_session(
    shared_redis: RedisServer,
) -> None:
    # A long lease: the owner renews it rarely, so its lapse is made by hand
    # (the owner stalled), and the owner is alive to write afterwards.
    limits = RedisLimits(lease_seconds=10.0, follow_block_seconds=0.05, retry_max_seconds=0.05)
    cancelled: list[bool] = []
    async with (
        backend(shared_redis, limits) as owner,
        backend(shared_redis, limits, prefix=owner.prefix) as other,
    ):
        stream = session(owner, on_cancel=lambda: cancelled.append(True))
        stream.stdout("before")
        await in_redis(stream)
        keys = other.keys(stream.session_id)
        await other.client.delete([keys.lease])
        await other.open_replay(stream.session_id)  # sees the lapse: ends it (seq 3)
        stream.stdout("late")  # seq 3 too, on the owner's side
        stream.stdout("later")
        store = stream.store
        with anyio.fail_after(5):
            await store.wait_for(4)
        assert store.failure is not None  # type: ignore[attr-defined]
        assert not store.failure.retryable  # type: ignore[attr-defined]
        assert cancelled == [True]
        with pytest.raises(StoreUnavailableError):
            store.read(1)
        lines = await read_all(await other.open_replay(stream.session_id))
        assert seqs(lines) == [1, 2, 3]
        finals = [msgspec.json.decode(line) for line in lines if b'"final"' in line]
        assert len(finals) == 1
        assert finals[0]["payload"]["error"]["code"] == OWNER_LOST.code
        status = await other.status(stream.session_id)
        assert status is not None
        assert (status.state, status.top, status.end, status.leased) == ("finished", 3, 3, False)


async def test_a_finished_session_lost_by_redis_is_put_back_by_its_owner(
    own_redis: RedisServer,
) -> None:
    async with backend(own_redis) as owner:
        stream = session(owner)
        for index in range(5):
            stream.stdout(str(index))
        stream.final(True)
        with anyio.fail_after(5):
            await stream.store.wait_written()  # type: ignore[attr-defined]
        await anyio.sleep(FAST.lease_seconds / 2)  # the flusher is past the end
        own_redis.restart_empty()
        async with backend(own_redis, prefix=owner.prefix) as other:
            refusals: list[tuple[int, str]] = []
            lines: list[bytes] = []
            with anyio.fail_after(10):
                while not lines:
                    try:
                        lines = await read_all(await other.open_replay(stream.session_id))
                    except BrokerError as refused:
                        refusals.append((refused.status, refused.code))
                        await anyio.sleep(0.05)
            # Only "on its way back" while the owner restores it; never a 404.
            assert set(refusals) <= {(503, "STORE_RECOVERING")}
        assert lines == [entry.line for entry in stream.store.read(0)]
        assert seqs(lines) == list(range(1, 8))
