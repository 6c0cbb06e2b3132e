"""Fault injection over real loopback HTTP: httpx_connector + open_event_stream against FaultServer.

Real sockets need a real clock. The heartbeat timeout (500 ms) ends each of
the three stalls; everything else the server does between two events (a
trickled line included) takes a few ms, a margin of 100x, so the faults done
are exactly the ones scheduled.
"""

from __future__ import annotations

import tracemalloc

import httpx
import pytest

from enclave_stream import (
    ClientHandshake,
    EncryptedSession,
    FailureKind,
    LineError,
    accept_client_hello,
)
from enclave_stream.events import StreamEvent
from enclave_stream.reconnect import (
    FatalConnectError,
    ReconnectionConfig,
    StreamFailedError,
    open_event_stream,
)
from enclave_stream.reconnect.http import httpx_connector
from tests.integration.asgi_server import HTTPX_CLOSED_EARLY
from tests.integration.fault_server import (
    Fault,
    FaultKind,
    FaultServer,
    fault_schedule,
)
from tests.reconnect.fakes import SESSION_ID, consume, line, make_session

pytestmark = [
    pytest.mark.anyio,
    *HTTPX_CLOSED_EARLY,
]

EVENTS = 2_000
SEED = 20240917
CONFIG = ReconnectionConfig(max_retries=5, initial_delay_ms=1, max_delay_ms=20)
HEARTBEAT_MS = 500


def sessions() -> tuple[EncryptedSession, EncryptedSession]:
    """A real handshake: the server's session (sealing) and the client's (opening)."""
    handshake = ClientHandshake()
    server_hello, server = accept_client_hello(handshake.client_hello, SESSION_ID)
    return server, handshake.complete(server_hello, SESSION_ID)


def client() -> httpx.AsyncClient:
    # httpx's default timeouts: httpx_connector leaves silence to the heartbeat.
    return httpx.AsyncClient()


@pytest.mark.parametrize("encrypted", [False, True], ids=["plaintext", "encrypted"])
async def test_every_event_exactly_once_through_dozens_of_faults(encrypted: bool) -> None:
    plain = make_session(EVENTS)
    sender, receiver = sessions()
    lines = [line(sender.seal(event) if encrypted else event) for event in plain]
    schedule = fault_schedule(SEED, events=EVENTS, faults=60)
    received: list[StreamEvent] = []
    reported: list[LineError] = []
    # The real session refuses an envelope it has opened before (replay), so
    # a resent envelope reaching it would fail the stream.
    session = receiver if encrypted else None
    async with FaultServer(lines, schedule, seed=SEED) as server, client() as http:
        stream = open_event_stream(
            httpx_connector(http, server.url),
            config=CONFIG,
            heartbeat_timeout_ms=HEARTBEAT_MS,
            session=session,
            on_error=reported.append,
        )
        await consume(stream, received)

    assert received == plain  # every event, once, in order, decrypted
    assert server.faults_done >= 50
    assert server.done[FaultKind.UNAVAILABLE] == 4
    assert server.done[FaultKind.STALL] == 3
    assert server.done[FaultKind.TRICKLE] == 2
    for kind in (FaultKind.CUT, FaultKind.CLEAN_CUT, FaultKind.RESEND, FaultKind.SKIP):
        assert server.done[kind] >= 1, kind
    assert reported == []  # cut lines are the cuts' doing, not bad lines
    assert server.requests[0] is None
    assert all(from_seq is not None for from_seq in server.requests[1:])


async def test_a_401_stops_at_once() -> None:
    lines = [line(event) for event in make_session(10)]
    async with FaultServer(lines, [], token="secret") as server, client() as http:
        stream = open_event_stream(httpx_connector(http, server.url), config=CONFIG)
        with pytest.raises(StreamFailedError) as caught:
            await consume(stream, [])
    error = caught.value
    assert isinstance(error.cause, FatalConnectError)
    assert error.cause.status_code == 401
    assert "HTTP 401 Unauthorized: invalid token" in str(error)
    assert (error.events_delivered, error.last_seq) == (0, None)
    assert server.requests == [None]


async def test_a_401_on_resume_reports_what_was_delivered() -> None:
    lines = [line(event) for event in make_session(50)]
    schedule = [Fault(FaultKind.CUT, new_lines=20), Fault(FaultKind.UNAUTHORIZED)]
    received: list[StreamEvent] = []
    async with FaultServer(lines, schedule) as server, client() as http:
        stream = open_event_stream(httpx_connector(http, server.url), config=CONFIG)
        with pytest.raises(StreamFailedError, match="20 events delivered, last seq 19"):
            await consume(stream, received)
    assert len(received) == 20
    assert server.requests == [None, 20]


async def test_memory_stays_bounded_under_a_line_without_end() -> None:
    plain = make_session(100)
    lines = [line(event) for event in plain]
    endless = 24 * 1024 * 1024
    schedule = [Fault(FaultKind.ENDLESS_LINE, new_lines=10, line_bytes=endless)]
    received: list[StreamEvent] = []
    reported: list[LineError] = []
    async with FaultServer(lines, schedule) as server, client() as http:
        stream = open_event_stream(
            httpx_connector(http, server.url),
            config=CONFIG,
            on_error=reported.append,
            max_line_bytes=256 * 1024,
        )
        tracemalloc.start()
        try:
            await consume(stream, received)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert received == plain
    assert [error.kind for error in reported] == [FailureKind.LINE_TOO_LONG]
    assert server.requests == [None, 10]
    # The server sent 24 MiB of one line; client and server together held a
    # small fraction of it at any time.
    assert peak < 4 * 1024 * 1024, peak
