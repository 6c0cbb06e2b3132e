"""uvicorn in the demo's own event loop, on 127.0.0.1 and a free port.

The socket is bound before uvicorn starts, so the port is known at once and
no other process can take it in between. uvicorn's own signal handling is
left out: Ctrl-C interrupts the demo as it interrupts any program.
"""

from __future__ import annotations

__all__ = ["serve_loopback"]

import contextlib
import socket
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio
import uvicorn

# How long to wait for the server to start, and for open requests when it stops.
_START_TIMEOUT_S: Final = 10.0
_GRACEFUL_S: Final = 2


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@asynccontextmanager
async def serve_loopback(app: Any) -> AsyncIterator[int]:
    """Serve the ASGI ``app`` on 127.0.0.1 until the block ends; yields the port.

    Runs on asyncio only (as uvicorn does), with lifespan events on and
    uvicorn's logging quiet (warnings and above, on the ``uvicorn`` loggers).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            lifespan="on",
            http="h11",
            ws="none",
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=_GRACEFUL_S,
        )
        server = _EmbeddedServer(config)
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(server.serve, [sock])
            with anyio.fail_after(_START_TIMEOUT_S):
                while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
                    await anyio.sleep(0.005)
            try:
                yield port
            finally:
                server.should_exit = True
    finally:
        sock.close()
