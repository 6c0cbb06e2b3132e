"""Serve sessions with Starlette: ``create_broker_app`` and a producer built on ``EventStream``.

The producer is a plain async function that appends events to an
``EventStream`` (``stdout``, ``log``, ``tool_call``, ``partial_result``,
``final``); ``create_broker_app`` gives it the reference broker's routes
(``POST /sessions`` starts and streams a session, ``GET
/sessions/{id}/stream?fromSeq=N`` resumes it, ``DELETE`` cancels it), with
end-to-end encryption when the client asks for it. uvicorn serves the app on
127.0.0.1 (a free port); one client starts a session, follows it to its end
with ``open_event_stream`` and ``broker_connector``, and the script exits.

Run: ``python examples/serve_starlette.py``
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import uvicorn

from enclave_stream import EventStream, open_event_stream
from enclave_stream.producer import SessionRequest
from enclave_stream.reconnect.http import broker_connector
from enclave_stream.starlette import create_broker_app


async def run_session(stream: EventStream, request: SessionRequest) -> None:
    """The producer of each session: what a sandboxed run of ``request.code`` reports."""
    stream.log("info", "starting", {"codeBytes": len(request.code)})
    for step in range(1, 4):
        stream.stdout(f"step {step}/3\n")
        await anyio.sleep(0.01)
    call_id = stream.tool_call("kv.get", {"key": "greeting"})
    stream.tool_result_applied(call_id)
    stream.partial_result(["greeting"], "hello", has_next=False)
    stream.final(True, {"greeting": "hello"})


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
    app = create_broker_app(run_session)
    async with serving(app) as url, httpx.AsyncClient(trust_env=False) as client:
        connect = broker_connector(client, url, code="print('hello')", encrypt=True)
        async with open_event_stream(connect, session=connect) as events:
            received = [event async for event in events]
        # The service still holds the session for clients that resume it.
        stored = app.state.broker.get(connect.session_id).store.read(0)

    for event in received:
        print(f"  #{event.seq} {event.type}")
    assert received == [entry.event for entry in stored]  # what the producer appended
    assert all(b'"type":"enc"' in entry.line for entry in stored)  # what went on the wire
    print(
        f"served session {connect.session_id}: {len(received)} events, "
        "sent encrypted, received decrypted and identical"
    )


if __name__ == "__main__":
    anyio.run(main)
