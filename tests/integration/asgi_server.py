"""Loopback helpers for the producer's end-to-end tests.

* :func:`serve` - an ASGI app on uvicorn, 127.0.0.1, a free port, in the
  test's own event loop (so the test can reach the app's objects directly);
  asyncio only, as uvicorn is.
* :func:`serve_in_thread` - the same on uvicorn's own asyncio loop in a
  thread, so that the test itself may run on trio, or be synchronous.
* :class:`CuttingProxy` - a TCP proxy that cuts chosen connections after a
  number of bytes from the server: a real network cut, mid-line.
* :func:`broker_connector` - the library's connector for ``open_event_stream``
  that starts a session with ``POST /sessions`` and resumes it with ``GET
  /sessions/{id}/stream?fromSeq=N``, completing the encryption handshake
  from the POST's response headers (re-exported here for the tests).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio
import pytest
import uvicorn
from anyio.abc import SocketAttribute, SocketStream

from enclave_stream.reconnect.http import BrokerConnector, broker_connector

__all__ = [
    "HTTPX_CLOSED_EARLY",
    "BrokerConnector",
    "CuttingProxy",
    "LiveServer",
    "broker_connector",
    "serve",
    "serve_in_thread",
    "start_in_thread",
]

# httpx leaves its inner async generators to the garbage collector when a
# response is closed before its end, which trio reports (encode/httpx#3686).
HTTPX_CLOSED_EARLY = (
    pytest.mark.filterwarnings(r"ignore:Async generator 'httpx\.:ResourceWarning"),
    pytest.mark.filterwarnings(r"ignore:Async generator 'httpcore\.:ResourceWarning"),
)
"""The marks of a test module that closes httpx responses early."""


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


@contextmanager
def start_in_thread(app: Any) -> Iterator[int]:
    """Serve ``app`` with uvicorn on its own asyncio loop in a thread; yield its port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", http="h11", ws="none", log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped before it started"
            assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
            time.sleep(0.005)
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@asynccontextmanager
async def serve_in_thread(app: Any) -> AsyncIterator[int]:
    """:func:`start_in_thread` for async tests (on asyncio or trio); yields the port."""
    context = start_in_thread(app)
    port = await anyio.to_thread.run_sync(context.__enter__)
    try:
        yield port
    finally:
        await anyio.to_thread.run_sync(context.__exit__, None, None, None)


class CuttingProxy:
    """Forwards TCP connections to ``port``; connection ``i`` is cut after ``cuts[i]`` bytes.

    The count is of bytes from the server (response head included); a None
    or a connection past the list is never cut: ``cuts=[0]`` forwards the
    first request whole and cuts its connection before any byte of the
    answer. The first ``unsent`` connections are closed as soon as their
    request starts, none of it forwarded. ``connections`` counts the
    connections accepted.
    """

    def __init__(self, port: int, cuts: list[int | None], *, unsent: int = 0) -> None:
        self._port = port
        self._cuts = list(cuts)
        self._unsent = unsent
        self.connections = 0
        self.cut = 0
        self.url = ""
        self._exit_stack: AsyncExitStack | None = None

    async def __aenter__(self) -> CuttingProxy:
        async with AsyncExitStack() as stack:
            listener = await stack.enter_async_context(
                await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
            )
            self.url = f"http://127.0.0.1:{listener.extra(SocketAttribute.local_port)}"
            task_group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(task_group.cancel_scope.cancel)  # on exit: stop serving first
            task_group.start_soon(listener.serve, self._handle)
            self._exit_stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._exit_stack is not None, "entered by __aenter__"
        await self._exit_stack.aclose()

    async def _handle(self, client: SocketStream) -> None:
        index = self.connections
        self.connections += 1
        if index < self._unsent:
            async with client:
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                    await client.receive()
            return
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
