"""An end-to-end encrypted session over HTTP, both ends written out.

Client: makes a ``ClientHandshake`` and sends its ClientHello in the body of
``POST /sessions``. Server: answers it with ``accept_client_hello`` (signing
the handshake with its static key), puts the ServerHello in the
``X-Enclave-Server-Hello`` response header and streams the session's events
sealed in ``enc`` envelopes (AES-256-GCM). Client: completes the handshake from
that header (checking the signature against the key it pinned) and opens
each envelope. A tampered envelope is refused at the end.

``create_broker_app`` and ``broker_connector`` do all of this for you; this
example shows what goes over the wire. It runs on 127.0.0.1, on a free port.

Run: ``python examples/encrypted_session.py``
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from enclave_stream import (
    SERVER_HELLO_HEADER,
    ClientHandshake,
    CreateSessionRequest,
    EncryptedEnvelope,
    EncryptionMode,
    EnvelopeError,
    EventStream,
    accept_client_hello,
    encode_message,
    generate_session_id,
)
from enclave_stream.crypto import generate_signing_key
from enclave_stream.events import EncryptionRequest
from enclave_stream.reconnect.http import aconnect_ndjson

SERVER_KEY = generate_signing_key()  # the server's static key; clients pin its public half


async def create_session(request: Request) -> Response:
    """Server: ``POST /sessions`` with a ClientHello starts an encrypted session."""
    body = msgspec.json.decode(await request.body(), type=CreateSessionRequest)
    encryption = body.encryption
    if not encryption or not encryption.client_hello:
        message = "this server requires encryption"
        return JSONResponse({"code": "ENCRYPTION_HANDSHAKE_FAILED", "message": message}, 400)
    session_id = generate_session_id()
    server_hello, server_session = accept_client_hello(
        encryption.client_hello, session_id, signing_key=SERVER_KEY
    )
    stream = EventStream(session=server_session, heartbeat_interval_ms=None)
    stream.stdout("the secret is 42\n")
    stream.log("info", "only the client can read this", {"card": "4242 4242 4242 4242"})
    stream.final(True, {"secret": 42})
    headers = {
        "X-Session-ID": session_id,
        SERVER_HELLO_HEADER: encode_message(server_hello).decode(),
    }
    return StreamingResponse(
        stream.ndjson_body(), media_type="application/x-ndjson", headers=headers
    )


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 and a free port; yields its URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        while not server.started:  # noqa: ASYNC110 - uvicorn has no startup event
            await anyio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True


async def main() -> None:
    app = Starlette(routes=[Route("/sessions", create_session, methods=["POST"])])
    # Client: a fresh key pair for this session, and the server's public key pinned.
    handshake = ClientHandshake(server_public_key=SERVER_KEY.public_key())
    request = CreateSessionRequest(
        code="print(secret)",
        encryption=EncryptionRequest(EncryptionMode.REQUIRED, handshake.client_hello),
    )
    envelopes: list[EncryptedEnvelope] = []
    async with (
        serving(app) as url,
        httpx.AsyncClient(trust_env=False) as client,
        aconnect_ndjson(
            client, "POST", f"{url}/sessions", content=encode_message(request)
        ) as source,
    ):
        response = source.response
        session = handshake.complete(
            response.headers[SERVER_HELLO_HEADER], response.headers["X-Session-ID"]
        )
        print(f"handshake complete: key {session.key_id}, server signature verified")
        async for envelope in source.aiter_events():
            assert isinstance(envelope, EncryptedEnvelope)  # nothing travels in the clear
            event = session.open(envelope)
            sealed = envelope.payload.ciphertext_b64[:20]
            opened = msgspec.to_builtins(event.payload)
            print(f"  #{envelope.seq} enc {sealed}… -> {event.type} {opened}")
            envelopes.append(envelope)

    # A byte flipped in transit: the tag no longer matches, and the session refuses it.
    last = envelopes[-1]
    flipped = "A" if last.payload.ciphertext_b64[0] != "A" else "B"
    forged_payload = msgspec.structs.replace(
        last.payload, ciphertext_b64=flipped + last.payload.ciphertext_b64[1:]
    )
    try:
        session.open(msgspec.structs.replace(last, payload=forged_payload))
    except EnvelopeError as error:
        print(f"tampered envelope refused: {error.reason}")
    else:
        raise AssertionError("a tampered envelope was accepted")
    print(f"decrypted all {len(envelopes)} events of session {session.session_id}")


if __name__ == "__main__":
    anyio.run(main)
