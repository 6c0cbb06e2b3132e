"""EventStream: builders, numbering, final, encryption, bodies; as ``async with``, heartbeats."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import anyio
import pytest

from enclave_stream import (
    EncryptedEnvelope,
    EventValidationError,
    FinalEvent,
    HeartbeatEvent,
    StdoutEvent,
    ToolCallEvent,
    parse_lines,
    serialize_event,
)
from enclave_stream.errors import LogFullError
from enclave_stream.events import (
    ErrorInfo,
    ErrorPayload,
    SessionStats,
    StdoutPayload,
    ToolCallPayload,
)
from enclave_stream.producer import (
    EventLog,
    EventStream,
    ReplayUnavailableError,
    StreamFinishedError,
)
from enclave_stream.producer.stream import CANCELLED, SHUTDOWN
from enclave_stream.reconnect import HeartbeatMonitor
from tests.producer.conftest import SESSION_ID, START, FakeWallClock, session_pair


def wire(stream: EventStream) -> list[dict[str, Any]]:
    """What a client receives: every line of the log, as JSON."""
    return [json.loads(entry.line) for entry in stream.store.read(0)]


def quiet(**kwargs: Any) -> EventStream:
    return EventStream(SESSION_ID, heartbeat_interval_ms=None, **kwargs)


def test_session_init_is_seq_one() -> None:
    clock = FakeWallClock()
    stream = quiet(now=clock, ttl_ms=90_000)
    assert wire(stream) == [
        {
            "protocolVersion": 2,
            "sessionId": SESSION_ID,
            "seq": 1,
            "type": "session_init",
            "payload": {
                "cancelUrl": f"/sessions/{SESSION_ID}/cancel",
                "expiresAt": "2025-01-02T03:05:35.678Z",
                "encryption": {"enabled": False},
            },
        }
    ]
    assert stream.next_seq == 2


def test_session_init_options() -> None:
    stream = quiet(
        cancel_url="https://x/cancel",
        expires_at="2030-01-01T00:00:00Z",
        replay_url="https://x/replay",
    )
    assert wire(stream)[0]["payload"] == {
        "cancelUrl": "https://x/cancel",
        "expiresAt": "2030-01-01T00:00:00Z",
        "encryption": {"enabled": False},
        "replayUrl": "https://x/replay",
    }


def test_generated_and_checked_session_ids() -> None:
    assert EventStream(heartbeat_interval_ms=None).session_id.startswith("s_")
    with pytest.raises(ValueError, match="session id"):
        EventStream("x_1")


def test_every_builder_writes_the_reference_shape() -> None:
    clock = FakeWallClock()
    stream = quiet(now=clock)
    stream.stdout("out\n")
    stream.log("info", "hello", {"k": [1, 2]})
    stream.log("debug", "plain")
    call_id = stream.tool_call("web.search", {"q": "x"})
    assert call_id.startswith("c_")
    assert stream.tool_call("noargs", call_id="c_fixed") == "c_fixed"
    stream.tool_progress(call_id, "receiving", elapsed_ms=1500.0, bytes_received=10)
    stream.tool_result_applied(call_id)
    stream.partial_result(["a", "b"], {"v": 1}, has_next=True)
    stream.partial_result(["c"], has_next=False, error=ErrorPayload(code="E", message="m"))
    stream.error("oops", code="E1", recoverable=True)
    stream.deadline_exceeded(10, 5)
    stream.catalog_changed("v2", ["add"], [])
    clock.advance(1234.5)
    stream.heartbeat()
    lines = wire(stream)
    assert [line["seq"] for line in lines] == list(range(1, 15))
    assert [(line["type"], line["payload"]) for line in lines[1:]] == [
        ("stdout", {"chunk": "out\n"}),
        ("log", {"level": "info", "message": "hello", "data": {"k": [1, 2]}}),
        ("log", {"level": "debug", "message": "plain"}),
        ("tool_call", {"callId": call_id, "toolName": "web.search", "args": {"q": "x"}}),
        ("tool_call", {"callId": "c_fixed", "toolName": "noargs"}),
        (
            "tool_progress",
            {"callId": call_id, "phase": "receiving", "bytesReceived": 10, "elapsedMs": 1500},
        ),
        ("tool_result_applied", {"callId": call_id}),
        ("partial_result", {"path": ["a", "b"], "data": {"v": 1}, "hasNext": True}),
        (
            "partial_result",
            {"path": ["c"], "error": {"code": "E", "message": "m"}, "hasNext": False},
        ),
        ("error", {"message": "oops", "code": "E1", "recoverable": True}),
        ("deadline_exceeded", {"elapsedMs": 10, "budgetMs": 5}),
        ("catalog_changed", {"version": "v2", "addedActions": ["add"], "removedActions": []}),
        ("heartbeat", {"ts": "2025-01-02T03:04:06.912Z"}),
    ]
    # The stored bytes are exactly the serializer's.
    for entry in stream.store.read(0):
        assert entry.line == serialize_event(entry.event).encode() + b"\n"


@pytest.mark.parametrize(
    ("end", "state"),
    [
        (lambda s: s.final(True), "completed"),
        (lambda s: s.final(False, error="boom"), "failed"),
        (lambda s: s.final(False, error=ErrorInfo("x", code="EXECUTION_ERROR")), "failed"),
        (lambda s: s.final(False, error=CANCELLED), "cancelled"),
        (lambda s: s.final(False, error=SHUTDOWN), "cancelled"),
        (lambda s: s.store.close(), "cancelled"),
        (lambda s: None, "running"),
    ],
)
def test_state(end: Any, state: str) -> None:
    stream = quiet()
    end(stream)
    assert stream.state.value == state


def test_times() -> None:
    clock = FakeWallClock()
    stream = quiet(now=clock, ttl_ms=5000)
    assert stream.created_at == START
    assert stream.expires_at == START + timedelta(seconds=5)
    assert abs(stream.updated_at - START) < timedelta(seconds=1)
    clock.advance(2000)
    stream.stdout("x")
    assert abs(stream.updated_at - (START + timedelta(seconds=2))) < timedelta(seconds=1)
    given = quiet(expires_at="2030-01-02T03:04:05.006Z")
    assert given.expires_at is not None
    assert given.expires_at.isoformat() == "2030-01-02T03:04:05.006000+00:00"
    assert quiet(expires_at="0000-01-01T00:00Z").expires_at is None  # no year 0 in Python


def test_stats_after_final_are_what_it_sent() -> None:
    clock = FakeWallClock()
    stream = quiet(now=clock)
    clock.advance(100)
    sent = stream.final(True).payload.stats
    clock.advance(5000)
    assert stream.stats() == sent


def test_stats_count_appended_events_too() -> None:
    """Regression (fixed): only the stdout()/tool_call() builders were counted."""
    built, appended = quiet(), quiet()
    built.stdout("héllo")
    built.tool_call("t", call_id="c_1")
    appended.append(StdoutEvent(appended.session_id, 0, StdoutPayload("héllo")))
    appended.append(
        ToolCallEvent(appended.session_id, 0, ToolCallPayload(call_id="c_1", tool_name="t"))
    )
    assert appended.stats().stdout_bytes == built.stats().stdout_bytes == 6
    assert appended.stats().tool_call_count == built.stats().tool_call_count == 1


def test_final_counts_stats_and_ends_the_stream() -> None:
    clock = FakeWallClock()
    stream = quiet(now=clock)
    stream.stdout("héllo")  # 6 bytes in UTF-8
    stream.stdout("!")
    stream.tool_call("t")
    clock.advance(250.4)
    event = stream.final(True, {"answer": 42})
    assert isinstance(event, FinalEvent)
    assert wire(stream)[-1]["payload"] == {
        "ok": True,
        "result": {"answer": 42},
        "stats": {"durationMs": 250, "toolCallCount": 1, "stdoutBytes": 7},
    }
    assert stream.finished
    with pytest.raises(StreamFinishedError):
        stream.stdout("late")
    with pytest.raises(StreamFinishedError):
        stream.final(True)


@pytest.mark.parametrize(
    ("kwargs", "payload"),
    [
        ({"result": None, "include_stats": False}, {"ok": True, "result": None}),
        ({"include_stats": False}, {"ok": True}),
        (
            {"stats": SessionStats(duration_ms=1, tool_call_count=2, stdout_bytes=3)},
            {"ok": True, "stats": {"durationMs": 1, "toolCallCount": 2, "stdoutBytes": 3}},
        ),
    ],
)
def test_final_result_and_stats_options(kwargs: dict[str, Any], payload: dict[str, Any]) -> None:
    stream = quiet()
    stream.final(True, **kwargs)
    assert wire(stream)[-1]["payload"] == payload


def test_final_errors() -> None:
    stream = quiet()
    stream.final(
        False,
        error="it broke",
        errors=[ErrorPayload(code="E", message="m", path=["x"])],
        include_stats=False,
    )
    assert wire(stream)[-1]["payload"] == {
        "ok": False,
        "error": {"message": "it broke"},
        "errors": [{"code": "E", "message": "m", "path": ["x"]}],
    }
    other = quiet()
    other.final(False, error=ErrorInfo(message="m", code="C"), include_stats=False)
    assert wire(other)[-1]["payload"] == {"ok": False, "error": {"message": "m", "code": "C"}}


def test_invalid_events_raise_and_use_up_no_seq() -> None:
    stream = quiet()
    with pytest.raises(EventValidationError):
        stream.log("loud", "x")
    with pytest.raises(EventValidationError):
        stream.tool_call("")
    with pytest.raises(EventValidationError):
        stream.tool_result_applied("not-a-call-id")
    with pytest.raises(EventValidationError):
        stream.partial_result([1], has_next=True)  # type: ignore[list-item]
    with pytest.raises(EventValidationError):
        stream.deadline_exceeded(1, 0)
    with pytest.raises(EventValidationError):
        stream.tool_call("t", object())  # not JSON
    assert stream.next_seq == 2
    assert stream.stdout("ok").seq == 2


def test_append_a_ready_made_event() -> None:
    stream = quiet()
    event = stream.append(StdoutEvent(session_id=SESSION_ID, seq=77, payload=StdoutPayload("x")))
    assert event.seq == 2
    with pytest.raises(ValueError, match="belongs to session"):
        stream.append(StdoutEvent(session_id="s_other", seq=1, payload=StdoutPayload("x")))


def test_store_factory_gets_the_encoder() -> None:
    made: list[EventLog] = []

    def factory(encode: Any) -> EventLog:
        made.append(EventLog(max_events=2, encode=encode))
        return made[0]

    stream = EventStream(SESSION_ID, heartbeat_interval_ms=None, store_factory=factory)
    for _ in range(3):
        stream.stdout("x")
    assert stream.store is made[0]
    assert len(made[0]) == 2


@pytest.mark.parametrize("bad", [-1, float("inf"), float("nan"), True, "5"])
def test_heartbeat_interval_is_checked(bad: object) -> None:
    with pytest.raises(ValueError, match="heartbeat_interval_ms"):
        EventStream(SESSION_ID, heartbeat_interval_ms=bad)  # type: ignore[arg-type]


# --- encryption -------------------------------------------------------------------


def test_encrypted_stream_seals_every_event_once() -> None:
    server, client = session_pair()
    stream = EventStream(session=server, heartbeat_interval_ms=None)
    assert stream.session_id == SESSION_ID
    assert stream.encrypted
    stream.stdout("secret")
    stream.final(True, "done")
    entries = stream.store.read(0)
    assert server.sealed_count == len(entries) == 3
    parsed = parse_lines(b"".join(entry.line for entry in entries).decode())
    assert parsed.errors == []
    assert all(isinstance(event, EncryptedEnvelope) for event in parsed.events)
    assert b"secret" not in b"".join(entry.line for entry in entries)
    opened = [client.open(envelope) for envelope in parsed.events]  # type: ignore[arg-type]
    assert opened == [entry.event for entry in entries]
    assert opened[0].payload.encryption.enabled  # type: ignore[union-attr]
    assert opened[0].payload.encryption.key_id == server.key_id  # type: ignore[union-attr]


def test_encrypted_stream_checks_its_session() -> None:
    server, client = session_pair()
    with pytest.raises(ValueError, match="server"):
        EventStream(session=client)
    with pytest.raises(ValueError, match="differs"):
        EventStream("s_other", session=server)


@pytest.mark.anyio
async def test_readers_of_an_encrypted_stream_get_the_same_envelopes() -> None:
    server, _ = session_pair()
    stream = EventStream(session=server, heartbeat_interval_ms=None)
    for index in range(10):
        stream.stdout(str(index))
    stream.final(True)
    first = b"".join([chunk async for chunk in stream.ndjson_body()])
    second = b"".join([chunk async for chunk in stream.ndjson_body()])
    assert first == second
    assert server.sealed_count == 12  # sealed when appended, not per reader


# --- bodies -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_ndjson_body_from_a_seq() -> None:
    stream = quiet()
    for index in range(5):
        stream.stdout(str(index))
    stream.final(True, include_stats=False)
    body = b"".join([chunk async for chunk in stream.ndjson_body(from_seq=5)])
    assert [json.loads(line)["seq"] for line in body.splitlines()] == [5, 6, 7]


@pytest.mark.anyio
async def test_ndjson_body_of_a_dropped_seq_raises_when_made() -> None:
    stream = quiet(max_events=3)
    for _ in range(5):
        stream.stdout("x")
    with pytest.raises(ReplayUnavailableError):
        stream.ndjson_body()
    assert [entry.seq for entry in stream.store.read(4)] == [4, 5, 6]


# --- async with: heartbeats on a virtual clock, and the final it guarantees --------


def virtual_wall_clock() -> Any:
    """A wall clock that follows anyio's (virtual) clock from START."""
    origin = anyio.current_time()
    return lambda: START + timedelta(seconds=anyio.current_time() - origin)


def kinds(stream: EventStream) -> list[str]:
    return [entry.event.type.value for entry in stream.store.read(0)]


@pytest.mark.anyio
class TestAsyncWith:
    @pytest.fixture
    def anyio_backend(self, virtual_backend: Any) -> Any:
        """Every test here runs on a virtual clock: time is exact and instant."""
        return virtual_backend

    async def test_heartbeats_on_a_fixed_interval_whatever_else_is_sent(self) -> None:
        async with EventStream(
            SESSION_ID, heartbeat_interval_ms=1000, now=virtual_wall_clock()
        ) as stream:
            await anyio.sleep(2.5)  # heartbeats at 1.0 and 2.0
            stream.stdout("work")  # at 2.5: the next one is still due at 3.0
            await anyio.sleep(1.2)
            stream.final(True)
            await anyio.sleep(5)  # none after final
        entries = stream.store.read(0)
        assert kinds(stream) == [
            "session_init",
            "heartbeat",
            "heartbeat",
            "stdout",
            "heartbeat",
            "final",
        ]
        stamps = [
            entry.event.payload.ts for entry in entries if isinstance(entry.event, HeartbeatEvent)
        ]
        assert stamps == [
            "2025-01-02T03:04:06.678Z",
            "2025-01-02T03:04:07.678Z",
            "2025-01-02T03:04:08.678Z",
        ]

    async def test_a_busy_stream_still_sends_a_heartbeat_every_interval(self) -> None:
        # An event every 0.1 s for 40 s: the upstream client's 30 s heartbeat
        # window (it counts heartbeat events only) must never run out.
        async with EventStream(SESSION_ID, heartbeat_interval_ms=1000) as stream:
            for _ in range(400):
                await anyio.sleep(0.1)
                stream.stdout(".")
            stream.final(True)
        assert kinds(stream).count("heartbeat") == 40

    async def test_a_client_watching_heartbeats_alone_never_times_out(self) -> None:
        # @enclave-vm/client's monitor: a fixed 30 s window, fed by heartbeat
        # events only. A 40 s session busy every 0.5 s, at the default interval.
        timeouts: list[float] = []
        async with (
            EventStream(SESSION_ID) as stream,
            HeartbeatMonitor(30_000, lambda: timeouts.append(anyio.current_time())) as monitor,
            anyio.create_task_group() as tg,
        ):

            async def read() -> None:
                async for chunk in stream.ndjson_body():
                    for event in parse_lines(chunk.decode()).events:
                        if isinstance(event, HeartbeatEvent):
                            monitor.on_heartbeat()

            tg.start_soon(read)
            for _ in range(80):
                await anyio.sleep(0.5)
                stream.stdout(".")
            stream.final(True)
        assert timeouts == []
        assert kinds(stream).count("heartbeat") == 2  # at 15 s and 30 s

    async def test_no_heartbeats_when_disabled(self) -> None:
        for interval in (None, 0):
            async with EventStream(SESSION_ID, heartbeat_interval_ms=interval) as stream:
                await anyio.sleep(100)
                stream.final(True)
            assert kinds(stream) == ["session_init", "final"]

    async def test_no_task_outlives_the_block(self) -> None:
        async with EventStream(SESSION_ID, heartbeat_interval_ms=1000) as stream:
            await anyio.sleep(1.5)
        count = len(stream.store.read(0))
        await anyio.sleep(100)
        assert len(stream.store.read(0)) == count
        assert kinds(stream)[-1] == "final"

    async def test_leaving_without_final_appends_one(self) -> None:
        async with EventStream(SESSION_ID, heartbeat_interval_ms=None) as stream:
            stream.stdout("partial")
        final = stream.store.read(0)[-1].event
        assert isinstance(final, FinalEvent)
        assert final.payload.ok is False
        assert final.payload.error.code == "SESSION_CLOSED"  # type: ignore[union-attr]
        assert stream.finished

    async def test_an_exception_ends_the_stream_without_leaking_its_text(self) -> None:
        with pytest.raises(KeyError):
            async with EventStream(SESSION_ID, heartbeat_interval_ms=1000) as stream:
                raise KeyError("the secret token")
        final = stream.store.read(0)[-1]
        assert final.event.payload.error.code == "EXECUTION_ERROR"  # type: ignore[union-attr]
        assert final.event.payload.error.message == "The session failed: KeyError"  # type: ignore[union-attr]
        assert b"secret" not in final.line

    async def test_cancellation_ends_the_stream_as_cancelled(self) -> None:
        with anyio.move_on_after(10):
            async with EventStream(SESSION_ID, heartbeat_interval_ms=3000) as stream:
                await anyio.sleep_forever()
        assert kinds(stream) == ["session_init", "heartbeat", "heartbeat", "heartbeat", "final"]
        final = stream.store.read(0)[-1].event
        assert final.payload.error.code == "SESSION_CANCELLED"  # type: ignore[union-attr]

    async def test_an_explicit_final_is_kept(self) -> None:
        async with EventStream(SESSION_ID, heartbeat_interval_ms=None) as stream:
            stream.final(True, 1)
        assert kinds(stream) == ["session_init", "final"]
        assert stream.store.read(0)[-1].event.payload.ok is True  # type: ignore[union-attr]

    async def test_entered_once_only(self) -> None:
        stream = EventStream(SESSION_ID, heartbeat_interval_ms=None)
        async with stream:
            with pytest.raises(RuntimeError, match="once"):
                async with stream:
                    pass
            stream.final(True)
        with pytest.raises(RuntimeError, match="once"):
            async with stream:
                pass

    async def test_readers_follow_live_and_a_gone_reader_leaves_nothing(self) -> None:
        async with EventStream(SESSION_ID, heartbeat_interval_ms=None) as stream:
            got: list[bytes] = []

            async def reader() -> None:
                async for chunk in stream.ndjson_body():
                    got.append(chunk)  # noqa: PERF401 - watched while it grows

            leaver = anyio.CancelScope()

            async def gone() -> None:
                with leaver:
                    async for _ in stream.ndjson_body():
                        pass

            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                tg.start_soon(gone)
                await anyio.sleep(1)
                assert stream.store.waiting == 2
                leaver.cancel()
                await anyio.sleep(1)
                assert stream.store.waiting == 1
                stream.stdout("live")
                await anyio.sleep(1)
                stream.final(True)
            assert stream.store.waiting == 0
        lines = b"".join(got).splitlines()
        assert len(lines) == 3
        assert b'"chunk":"live"' in lines[1]


@pytest.mark.anyio
class TestBackpressure:
    @pytest.fixture
    def anyio_backend(self, virtual_backend: Any) -> Any:
        """On a virtual clock: the timeouts are exact and instant."""
        return virtual_backend

    async def test_drain_returns_at_once_without_readers_or_within_the_bound(self) -> None:
        stream = EventStream(SESSION_ID, heartbeat_interval_ms=None)
        for _ in range(5000):
            stream.stdout("x")
        start = anyio.current_time()
        await stream.drain(max_lag=0, timeout=1)  # nobody reads: nobody to wait for
        body = stream.ndjson_body(4000)
        await stream.drain(max_lag=1002, timeout=1)  # 4000..5001 unsent
        assert anyio.current_time() == start
        with pytest.raises(ValueError, match="max_lag"):
            await stream.drain(max_lag=-1)
        await body.aclose()

    async def test_drain_waits_while_the_slowest_reader_lags_then_times_out(self) -> None:
        stream = EventStream(SESSION_ID, heartbeat_interval_ms=None)
        fast = stream.ndjson_body()
        slow = stream.ndjson_body(chunk_bytes=1)  # one event per read
        for _ in range(9):
            stream.stdout("x")
        await fast.__anext__()  # everything: the slow one sets the pace
        start = anyio.current_time()
        with pytest.raises(TimeoutError):
            await stream.drain(max_lag=5, timeout=2.5)
        assert anyio.current_time() == start + 2.5

        async def reader() -> None:
            for _ in range(5):
                await anyio.sleep(1)
                await slow.__anext__()

        async with anyio.create_task_group() as task_group:
            task_group.start_soon(reader)
            await stream.drain(max_lag=5)  # 10 behind; 5 reads later, 5
            assert anyio.current_time() == start + 2.5 + 5
        # A reader that ends stops counting.
        await slow.aclose()
        await stream.drain(max_lag=0, timeout=0)

    async def test_past_max_bytes_an_unread_creator_fails_the_producer_with_a_final(
        self,
    ) -> None:
        stream = EventStream(SESSION_ID, heartbeat_interval_ms=1000, max_bytes=4096)
        creator = stream.ndjson_body(hold=True)

        async def burst() -> None:
            async with stream:
                await anyio.sleep(1.5)  # a heartbeat fits
                for _ in range(100):
                    stream.stdout("x" * 100)

        with pytest.raises(LogFullError) as caught:
            await burst()
        assert caught.value.first_unsent_seq == 1
        lines = b"".join([chunk async for chunk in creator]).splitlines()
        events = [json.loads(line) for line in lines]
        assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
        assert events[1]["type"] == "heartbeat"
        assert events[-1]["type"] == "final"
        assert events[-1]["payload"]["error"] == {
            "message": "The session failed: LogFullError",
            "code": "EXECUTION_ERROR",
        }

    async def test_a_full_log_skips_heartbeats_instead_of_failing(self) -> None:
        stream = EventStream(SESSION_ID, heartbeat_interval_ms=1000, max_bytes=4096)
        creator = stream.ndjson_body(hold=True, chunk_bytes=1)
        async with stream:
            fill_up(stream)
            full = stream.next_seq
            await anyio.sleep(3.5)  # three heartbeats refused, quietly
            assert stream.next_seq == full
            await creator.__anext__()  # room again
            await anyio.sleep(1)
            assert stream.next_seq == full + 1
            stream.final(True)


def fill_up(stream: EventStream) -> LogFullError:
    """Append until the log refuses; the refusal."""
    for _ in range(10_000):
        try:
            stream.stdout("x" * 100)
        except LogFullError as exc:
            return exc
    raise AssertionError("the log never filled up")
