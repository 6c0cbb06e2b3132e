"""follow_event_stream: the synchronous driver of the resume core.

Connections are scripted as byte chunks (cut anywhere), then one end-to-end
run over httpx.Client against a real server that drops connections.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import closing, contextmanager
from typing import Any

import pytest

from enclave_stream import ConnectionState, LineError
from enclave_stream.reconnect import (
    FatalConnectError,
    ReconnectionConfig,
    SequenceGapError,
    SessionMismatchError,
    StreamFailedError,
    follow_event_stream,
)
from tests.reconnect.fakes import FakeSession, line, make_session

FAST = ReconnectionConfig(max_retries=3, initial_delay_ms=10, jitter=False)
EVENTS = make_session(8, start=1)
BODY = b"".join(line(event) for event in EVENTS)


class Script:
    """A sync connector: connection ``i`` sends ``bodies[i]`` (bytes, or an exception)."""

    def __init__(self, *bodies: bytes | Exception, chunk: int = 7) -> None:
        self.bodies = list(bodies)
        self.asked: list[int | None] = []
        self.closed = 0
        self.chunk = chunk

    @contextmanager
    def __call__(self, from_seq: int | None) -> Iterator[Iterable[bytes]]:
        self.asked.append(from_seq)
        body = self.bodies.pop(0)
        if isinstance(body, Exception):
            raise body
        try:
            yield (body[i : i + self.chunk] for i in range(0, len(body), self.chunk))
        finally:
            self.closed += 1


def _from(seq: int) -> bytes:
    return b"".join(line(event) for event in EVENTS if event.seq >= seq)


def test_resumes_after_cuts_mid_line_and_delivers_every_event_once() -> None:
    cut_one = BODY[: BODY.index(b"line 3") + 3]  # inside the line of seq 3
    cut_two = _from(3)[:-20]  # inside the final line
    # The server resends from the seq asked for, plus an old one first (a replay that starts early).
    connect = Script(cut_one, line(EVENTS[0]) + cut_two, _from(8))
    sleeps: list[float] = []
    states: list[ConnectionState] = []
    events = list(
        follow_event_stream(connect, config=FAST, sleep=sleeps.append, on_state=states.append)
    )
    assert events == EVENTS
    assert connect.asked == [None, 3, 8]
    assert connect.closed == 3
    assert sleeps == [0.01, 0.01]  # the retry count resets once a connection delivers
    assert states[-1] is ConnectionState.CLOSED


def test_bad_lines_are_reported_and_skipped() -> None:
    errors: list[LineError] = []
    body = b"not json\n" + BODY
    assert list(follow_event_stream(Script(body), on_error=errors.append)) == EVENTS
    assert [error.line for error in errors] == [1]


@pytest.mark.parametrize("error", [ValueError("mine"), OSError("mine too")], ids=str)
def test_a_failing_callback_ends_the_stream_with_its_own_error(error: Exception) -> None:
    # As in the async client: not the transport's doing, so not retried,
    # even an OSError.
    calls: list[LineError] = []

    def on_error(line_error: LineError) -> None:
        calls.append(line_error)
        raise error

    connect = Script(b"not json\n" + BODY, BODY)
    with pytest.raises(type(error), match="mine"):
        list(follow_event_stream(connect, config=FAST, on_error=on_error, sleep=lambda _: None))
    assert len(calls) == 1
    assert connect.asked == [None]


@pytest.mark.parametrize(
    ("bodies", "kind", "words"),
    [
        ((FatalConnectError("HTTP 401 Unauthorized", status_code=401),), StreamFailedError, "401"),
        ((OSError("refused"),) * 4, StreamFailedError, "refused"),
        # A hole: a replay from the first missing seq is asked for, and lacks it too.
        ((line(EVENTS[0]) + _from(5), _from(5)), SequenceGapError, "events 2..4 are missing"),
        (
            (line(EVENTS[0]) + line(make_session(3, start=2, session_id="s_other")[0]),),
            SessionMismatchError,
            "s_other",
        ),
    ],
    ids=["fatal-status", "retries-exhausted", "gap", "another-session"],
)
def test_gives_up_with_what_it_delivered(
    bodies: tuple[bytes | Exception, ...], kind: type[Exception], words: str
) -> None:
    delivered: list[object] = []
    with pytest.raises(kind, match=words) as info:
        delivered.extend(follow_event_stream(Script(*bodies), config=FAST, sleep=lambda _: None))
    error = info.value
    assert isinstance(error, StreamFailedError)
    assert error.events_delivered == len(delivered)


def test_closing_early_closes_the_connection() -> None:
    connect = Script(BODY)
    with closing(follow_event_stream(connect)) as events:
        assert next(events) == EVENTS[0]
    assert connect.closed == 1


def test_an_encrypted_stream_is_opened_and_refuses_plaintext() -> None:
    sender = FakeSession()
    sealed = b"".join(line(sender.seal(event)) for event in EVENTS)
    assert list(follow_event_stream(Script(sealed), session=FakeSession())) == EVENTS
    injected = line(sender.seal(EVENTS[0])) + line(EVENTS[1])
    with pytest.raises(StreamFailedError, match="plaintext"):
        list(follow_event_stream(Script(injected), session=FakeSession()))


def test_over_httpx_client_against_a_server_that_drops_connections() -> None:
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    from enclave_stream.reconnect.http import httpx_sync_connector
    from tests.integration.asgi_server import start_in_thread

    served: list[int] = []

    async def stream(request: Request) -> StreamingResponse:
        start = int(request.query_params.get("fromSeq", 1))
        served.append(start)
        body = _from(start)
        if len(served) < 3:
            body = body[: len(body) // 2]  # the connection ends mid-line, before final

        async def chunks() -> AsyncIterator[bytes]:
            for index in range(0, len(body), 50):
                yield body[index : index + 50]

        return StreamingResponse(chunks(), media_type="application/x-ndjson")

    app: Any = Starlette(routes=[Route("/stream", stream)])
    with start_in_thread(app) as port, httpx.Client() as client:
        connect = httpx_sync_connector(client, f"http://127.0.0.1:{port}/stream")
        events = list(follow_event_stream(connect, config=FAST))
    assert events == EVENTS
    assert len(served) == 3
    assert served[0] == 1 < served[1] < served[2]  # each resume from the first missing seq


def test_a_sync_stream_can_start_from_a_saved_position() -> None:
    connect = Script(_from(3))
    assert list(follow_event_stream(connect, from_seq=4)) == EVENTS[3:]
    assert connect.asked == [4]


class Clock:
    """A virtual clock, advanced by its ``sleep`` (and by the connectors below)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_deadline_is_not_waited_past_between_retries() -> None:
    clock = Clock()
    config = ReconnectionConfig(max_retries=None, initial_delay_ms=300, jitter=False)
    connect = Script(*[OSError("down")] * 10)
    retried: list[tuple[int, float]] = []
    with pytest.raises(StreamFailedError, match="the deadline of 1000 ms passed") as info:
        list(
            follow_event_stream(
                connect,
                config=config,
                deadline_ms=1000,
                sleep=clock.sleep,
                clock=clock,
                on_retry=lambda attempt, delay, error: retried.append((attempt, delay)),
            )
        )
    # Backoff 0.3, 0.6: at 0.9 s the next 1.2 s wait would end past the deadline.
    assert clock.slept == [0.3, 0.6]
    assert len(connect.asked) == 3
    assert retried == [(1, 0.3), (2, 0.6), (3, 1.2)]
    assert isinstance(info.value.cause, OSError)


def test_the_deadline_ends_a_connection_that_never_finishes() -> None:
    clock = Clock()

    class Endless:
        """Sends the first events, then a chunk every virtual second, never final."""

        @contextmanager
        def __call__(self, from_seq: int | None) -> Iterator[Iterable[bytes]]:
            def chunks() -> Iterator[bytes]:
                yield _from(1).split(b"\n", 2)[0] + b"\n"
                while True:
                    clock.now += 1.0
                    yield b""

            yield chunks()

    with pytest.raises(StreamFailedError, match="the deadline of 5000 ms passed") as info:
        list(follow_event_stream(Endless(), deadline_ms=5000, clock=clock, sleep=clock.sleep))
    assert info.value.events_delivered == 1
    assert clock.now == 5.0
    with pytest.raises(ValueError, match="deadline_ms"):
        list(follow_event_stream(Endless(), deadline_ms=0))
