"""Loopback helpers for the producer's end-to-end tests.

* :func:`serve` - an ASGI app on uvicorn, 127.0.0.1, a free port, in the
  test's own event loop (so the test can reach the app's objects directly);
  asyncio only, as uvicorn is.
* :class:`CuttingProxy` - a TCP proxy that cuts chosen connections after a
  number of bytes from the server: a real network cut, mid-line.
* :class:`BrokerClient` - a connector for ``open_event_stream`` that starts a
  session with ``POST /sessions`` and resumes it with ``GET
  /sessions/{id}/stream?fromSeq=N``, completing the encryption handshake
  from the POST's response headers.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio
import httpx
import msgspec
import uvicorn
from anyio.abc import Listener, SocketAttribute, SocketStream, TaskGroup

from enclave_stream import ClientHandshake, EncryptedEnvelope, EncryptedSession, encode_message
from enclave_stream.events import StreamEvent
from enclave_stream.producer import SERVER_HELLO_HEADER
from enclave_stream.reconnect import FatalConnectError, RetryableConnectError
from enclave_stream.reconnect.httpx_connector import httpx_connector


@dataclass
class LiveServer:
    """A running uvicorn server: its base URL and the server object."""

    url: str
    server: uvicorn.Server

    @property
    def open_tasks(self) -> int:
        """Request tasks uvicorn is running (0 once every connection's response is done)."""
        return len(self.server.server_state.tasks)


@asynccontextmanager
async def serve(app: Any, **config: Any) -> AsyncIterator[LiveServer]:
    """Serve ``app`` on 127.0.0.1 (a free port) until the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings: dict[str, Any] = {
        "lifespan": "on",
        "http": "h11",
        "ws": "none",
        "log_config": None,
        "log_level": "warning",
        "access_log": False,
        "timeout_graceful_shutdown": 2,
        "backlog": 2048,
    }
    settings.update(config)
    server = uvicorn.Server(uvicorn.Config(app, **settings))
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            with anyio.fail_after(10):
                while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
                    await anyio.sleep(0.005)
            try:
                yield LiveServer(f"http://127.0.0.1:{port}", server)
            finally:
                server.should_exit = True
    finally:
        sock.close()


class CuttingProxy:
    """Forwards TCP connections to ``port``; connection ``i`` is cut after ``cuts[i]`` bytes.

    The count is of bytes from the server (response head included); a None
    or a connection past the list is never cut. ``connections`` counts the
    connections accepted.
    """

    def __init__(self, port: int, cuts: list[int | None]) -> None:
        self._port = port
        self._cuts = list(cuts)
        self.connections = 0
        self.cut = 0
        self.url = ""
        self._task_group: TaskGroup | None = None
        self._listener: Listener[SocketStream] | None = None

    async def __aenter__(self) -> CuttingProxy:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self._listener = listener
        self.url = f"http://127.0.0.1:{listener.extra(SocketAttribute.local_port)}"
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(listener.serve, self._handle)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._task_group is not None
        assert self._listener is not None
        self._task_group.cancel_scope.cancel()
        try:
            await self._task_group.__aexit__(None, None, None)
        finally:
            await self._listener.aclose()

    async def _handle(self, client: SocketStream) -> None:
        index = self.connections
        self.connections += 1
        budget = self._cuts[index] if index < len(self._cuts) else None
        gone = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)
        async with (
            client,
            await anyio.connect_tcp("127.0.0.1", self._port) as upstream,
            anyio.create_task_group() as tg,
        ):

            async def forward_request() -> None:
                try:
                    async for data in client:
                        await upstream.send(data)
                except gone:
                    pass
                tg.cancel_scope.cancel()

            async def forward_response() -> None:
                remaining = budget
                try:
                    async for data in upstream:
                        if remaining is not None and len(data) >= remaining:
                            await client.send(data[:remaining])
                            self.cut += 1
                            break
                        await client.send(data)
                        if remaining is not None:
                            remaining -= len(data)
                except gone:
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(forward_request)
            tg.start_soon(forward_response)


class BrokerClient:
    """``open_event_stream`` connector: POST a session first, then resume it with GET.

    ``handshake``: encrypt the session (its hello goes in the request); then
    pass :attr:`opener` as the stream's ``session``. :attr:`requests` records
    each connection as ``("POST", None)`` or ``("GET", from_seq)``.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        request: dict[str, Any],
        *,
        handshake: ClientHandshake | None = None,
    ) -> None:
        self._http = http
        self._base = base_url
        self._request = dict(request)
        self._handshake = handshake
        if handshake is not None:
            self._request["encryption"] = {
                "mode": "required",
                "clientHello": _hello_json(handshake),
            }
        self.session_id: str | None = None
        self.session: EncryptedSession | None = None
        self.requests: list[tuple[str, int | None]] = []

    @property
    def opener(self) -> _LateOpener:
        """Opens envelopes with the session made from the POST's ServerHello."""
        return _LateOpener(self)

    @asynccontextmanager
    async def __call__(self, from_seq: int | None) -> AsyncIterator[AsyncIterator[bytes]]:
        if self.session_id is None:
            self.requests.append(("POST", from_seq))
            try:
                async with self._http.stream(
                    "POST", f"{self._base}/sessions", json=self._request, timeout=_NO_READ_TIMEOUT
                ) as response:
                    if response.status_code != 200:
                        raise FatalConnectError(
                            f"HTTP {response.status_code}", status_code=response.status_code
                        )
                    self.session_id = response.headers["x-session-id"]
                    if self._handshake is not None:
                        hello = response.headers[SERVER_HELLO_HEADER]
                        self.session = self._handshake.complete(hello, self.session_id)
                    yield response.aiter_bytes()
            except httpx.TransportError as exc:
                raise RetryableConnectError(f"{type(exc).__name__}: {exc}") from exc
        else:
            self.requests.append(("GET", from_seq))
            connect = httpx_connector(self._http, f"{self._base}/sessions/{self.session_id}/stream")
            async with connect(from_seq) as body:
                yield body  # type: ignore[misc]


_NO_READ_TIMEOUT = httpx.Timeout(5.0, read=None)


class _LateOpener:
    def __init__(self, client: BrokerClient) -> None:
        self._client = client

    def open(self, envelope: EncryptedEnvelope) -> StreamEvent:
        session = self._client.session
        assert session is not None, "the POST response completes the handshake"
        return session.open(envelope)


def _hello_json(handshake: ClientHandshake) -> dict[str, Any]:
    result: dict[str, Any] = msgspec.json.decode(encode_message(handshake.client_hello))
    return result
