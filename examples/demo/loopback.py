"""The demo's network, all on 127.0.0.1: the service, and a proxy that cuts it short.

:func:`serve_loopback` runs uvicorn in the demo's own event loop on a free
port. The socket is bound before uvicorn starts, so the port is known at
once and no other process can take it in between; uvicorn's own signal
handling is left out, so Ctrl-C interrupts the demo as it interrupts any
program.

:class:`CuttingProxy` relays bytes between a client and that service and,
on a schedule, drops a connection once it has relayed a given number of
response bytes: the kind of drop a flaky network or a restarting load
balancer causes. The cut is moved forward to fall inside an NDJSON line
(never on a line or HTTP chunk boundary), so the client is left with half a
line, as a real network would leave it.
"""

from __future__ import annotations

__all__ = ["CuttingProxy", "mid_line_cut", "serve_loopback"]

import contextlib
import socket
from collections.abc import AsyncIterator, Generator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, Final

import anyio
import uvicorn
from anyio.abc import ByteStream, SocketAttribute, TaskGroup

_HEX = frozenset(b"0123456789abcdefABCDEF")
_INTO_LINE = 8  # bytes of a line delivered at least, when the line starts in the same chunk
_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)


def _is_chunk_size(head: bytes) -> bool:
    """True for the size line of HTTP chunked framing: hexadecimal digits, then ``\\r``."""
    digits = head[:-1]
    return head.endswith(b"\r") and bool(digits) and all(c in _HEX for c in digits)


def mid_line_cut(data: bytes, at: int) -> int | None:
    """The first position from ``at`` on where cutting ``data`` leaves half an NDJSON line.

    That is a position inside a line that starts with ``{`` (not in the
    ``\\r\\n`` and hexadecimal sizes of HTTP chunked framing), at least 8
    bytes into it, with more of it to come. Before the first line end of ``data``, the line
    began in an earlier chunk: any position counts but in framing. None if
    there is no such position.

    >>> body = b'1c\\r\\n{"seq":1}\\n{"seq":2,"a":3}\\n\\r\\n'
    >>> mid_line_cut(body, 0), mid_line_cut(body, 14), mid_line_cut(body, 30)
    (12, 22, None)
    """
    for position in range(max(at, 1), len(data)):
        if data[position - 1] in b"\r\n" or data[position] in b"\r\n":
            continue
        start = data.rfind(b"\n", 0, position) + 1
        if start == 0:
            end = data.find(b"\n", position)
            if not _is_chunk_size(data if end < 0 else data[:end]):
                return position
        elif data[start : start + 1] == b"{" and position - start >= _INTO_LINE:
            return position
    return None


class CuttingProxy:
    """Relays ``127.0.0.1:<port>`` to ``upstream_port``, cutting some responses short.

    ``cut_after`` lists, per accepted connection in order, how many response
    bytes to relay before dropping it (connections past the list are relayed
    whole). :attr:`cuts` records the bytes relayed by each connection cut,
    :attr:`connections` counts the connections accepted::

        async with CuttingProxy(upstream_port=8000, cut_after=[5000, 3000]) as proxy:
            url = f"http://127.0.0.1:{proxy.port}"  # the first two responses are cut
    """

    def __init__(self, upstream_port: int, cut_after: Sequence[int] = ()) -> None:
        self._upstream_port = upstream_port
        self._schedule = list(cut_after)
        self.connections = 0
        self.cuts: list[int] = []
        self.port = 0
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> CuttingProxy:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(SocketAttribute.local_port)
        await self._stack.enter_async_context(listener)
        task_group = await self._stack.enter_async_context(anyio.create_task_group())
        self._stack.callback(task_group.cancel_scope.cancel)
        task_group.start_soon(listener.serve, self._handle, task_group)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._stack.__aexit__(exc_type, exc, tb)

    async def _handle(self, client: ByteStream) -> None:
        index = self.connections
        self.connections += 1
        limit = self._schedule[index] if index < len(self._schedule) else None
        async with client:
            try:
                upstream = await anyio.connect_tcp("127.0.0.1", self._upstream_port)
            except OSError:
                return
            async with upstream, anyio.create_task_group() as relay:
                relay.start_soon(self._pipe, client, upstream, None, relay)
                relay.start_soon(self._pipe, upstream, client, limit, relay)

    async def _pipe(
        self, source: ByteStream, sink: ByteStream, limit: int | None, relay: TaskGroup
    ) -> None:
        sent = 0
        try:
            async for chunk in source:
                if limit is not None and sent + len(chunk) > limit:
                    # Past the limit: cut at the first place inside a line
                    # (in this chunk or a later one), deliver what comes
                    # before, and drop the connection.
                    cut = mid_line_cut(chunk, max(limit - sent, 0))
                    if cut is not None:
                        await sink.send(chunk[:cut])
                        self.cuts.append(sent + cut)
                        break
                await sink.send(chunk)
                sent += len(chunk)
        except _GONE:
            pass
        relay.cancel_scope.cancel()


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
