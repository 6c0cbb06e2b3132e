"""A man in the middle relays the broker's genuine hello and swaps the body for plaintext.

The broker (the Starlette app on uvicorn, in a thread of its own so that the
client side can run on trio too) signs its ServerHello; the proxy forwards
the client's ``POST /sessions``, keeps the genuine response head (session id
and signed hello) and replaces the encrypted body with plaintext events
ending in a forged ``final``. The client must fail closed, with and without a
pinned server key, and deliver nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from anyio.abc import SocketStream

from enclave_stream import FinalEvent, StdoutEvent, serialize_event
from enclave_stream.crypto import generate_signing_key
from enclave_stream.errors import EncryptionErrorCode, EnvelopeError, EnvelopeErrorReason
from enclave_stream.events import FinalPayload, StdoutPayload, StreamEvent
from enclave_stream.producer import BrokerConfig, EventStream, SessionRequest
from enclave_stream.reconnect import ReconnectionConfig, StreamFailedError, open_event_stream
from enclave_stream.reconnect.http import broker_connector
from enclave_stream.starlette import create_broker_app
from tests.integration.asgi_server import HTTPX_CLOSED_EARLY, serve_in_thread
from tests.reconnect.fakes import consume

pytestmark = [
    pytest.mark.anyio,
    *HTTPX_CLOSED_EARLY,
]

FAST_RETRIES = ReconnectionConfig(max_retries=2, initial_delay_ms=1, max_delay_ms=5)
QUIET = BrokerConfig(heartbeat_interval_ms=None)


async def runner(stream: EventStream, request: SessionRequest) -> None:
    stream.stdout("genuine\n")
    stream.final(True, {"answer": "GENUINE"})


def forged_body(session_id: str) -> bytes:
    events = [
        StdoutEvent(session_id=session_id, seq=1, payload=StdoutPayload("forged\n")),
        FinalEvent(session_id=session_id, seq=2, payload=FinalPayload(ok=True, result="FORGED")),
    ]
    return b"".join(serialize_event(event).encode() + b"\n" for event in events)


@asynccontextmanager
async def body_swapping_proxy(upstream_port: int) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A proxy that keeps the broker's response head and swaps its body; yields (url, heads)."""
    heads: list[bytes] = []

    async def handle(client: SocketStream) -> None:
        async with client, await anyio.connect_tcp("127.0.0.1", upstream_port) as upstream:
            request = await _read_request(client)
            await upstream.send(request)
            head = b""
            while b"\r\n\r\n" not in head:
                head += await upstream.receive()
            head = head.split(b"\r\n\r\n", 1)[0]
            heads.append(head)
            kept = [
                line
                for line in head.split(b"\r\n")
                if not line.lower().startswith((b"transfer-encoding", b"content-length"))
            ]
            session_id = next(
                line.split(b":", 1)[1].strip().decode()
                for line in kept
                if line.lower().startswith(b"x-session-id")
            )
            response = b"\r\n".join([*kept, b"connection: close"]) + b"\r\n\r\n"
            await client.send(response + forged_body(session_id))

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield f"http://127.0.0.1:{port}", heads
        tg.cancel_scope.cancel()


async def _read_request(client: SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += await client.receive()
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += await client.receive()
    return data


@pytest.mark.parametrize("session_given", [True, False], ids=["session", "no-session-arg"])
@pytest.mark.parametrize("pinned", [True, False], ids=["pinned-key", "no-pinned-key"])
async def test_a_relayed_hello_with_a_plaintext_body_fails_closed(
    pinned: bool, session_given: bool
) -> None:
    key = generate_signing_key()
    app = create_broker_app(
        runner,
        config=BrokerConfig(heartbeat_interval_ms=None, client_session_ids=True),
        signing_key=key,
    )
    received: list[StreamEvent] = []
    async with (
        serve_in_thread(app) as port,
        body_swapping_proxy(port) as (url, heads),
        httpx.AsyncClient() as http,
    ):
        connect = broker_connector(
            http, url, code="x", signing_public_key=key.public_key() if pinned else None
        )
        opener = connect if session_given else None  # the connector encrypts either way
        stream = open_event_stream(connect, config=FAST_RETRIES, session=opener)
        with pytest.raises(StreamFailedError) as caught:
            await consume(stream, received)

    # The hello was the broker's own, and it checked out: the handshake completed.
    assert b"x-enclave-server-hello" in heads[0].lower()
    assert connect.session is not None
    # Nothing forged was delivered; the failure says what happened, with the code.
    assert received == []
    assert caught.value.events_delivered == 0
    cause = caught.value.cause
    assert isinstance(cause, EnvelopeError)
    assert cause.reason is EnvelopeErrorReason.PLAINTEXT_REFUSED
    assert cause.code is EncryptionErrorCode.DECRYPTION_FAILED
    assert "Plaintext stdout event (seq 1) on line 1" in cause.message
    assert len(connect.connections) == 1  # fatal at once, not retried


async def test_the_debugging_opt_out_lets_plaintext_through() -> None:
    """``require_encryption=False`` is what lets the forgery in: off by default, for a reason."""
    key = generate_signing_key()
    app = create_broker_app(
        runner,
        config=BrokerConfig(heartbeat_interval_ms=None, client_session_ids=True),
        signing_key=key,
    )
    async with (
        serve_in_thread(app) as port,
        body_swapping_proxy(port) as (url, _),
        httpx.AsyncClient() as http,
    ):
        connect = broker_connector(http, url, code="x", signing_public_key=key.public_key())
        async with open_event_stream(
            connect, config=FAST_RETRIES, session=connect, require_encryption=False
        ) as events:
            received = [event async for event in events]
    assert [event.type for event in received] == ["stdout", "final"]
    assert received[-1].payload.result == "FORGED"  # type: ignore[union-attr]
