"""A session's NDJSON as a response body: ``async for chunk in body`` yields bytes.

The body reads its session's log from a position, joins the lines that are
ready into one chunk, and waits for more when there are none, up to the
``final`` event. It works with anything that sends an async iterator of bytes:
Starlette's ``StreamingResponse``, aiohttp's ``StreamResponse.write``, or a
raw ASGI ``send`` loop.
"""

from __future__ import annotations

__all__ = ["DEFAULT_CHUNK_BYTES", "NdjsonBody"]

from typing import Final

import anyio.lowlevel

from ..events import FinalEvent
from .log import EventStore, check_from_seq

DEFAULT_CHUNK_BYTES: Final = 64 * 1024
"""How many bytes of lines one chunk gathers at most (a single longer line is sent whole)."""


class NdjsonBody:
    """The NDJSON lines of a log from ``from_seq`` on, as chunks of bytes, up to ``final``.

    Made by :meth:`EventStream.ndjson_body
    <enclave_stream.producer.EventStream.ndjson_body>`. Availability is
    checked when the body is made, so a response can still answer with an
    error status. The body holds no task and no registration in the log: a
    client that goes away (the server stops iterating, or cancels the
    iteration) leaves nothing behind, and the session goes on for the others.

    For aiohttp::

        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        async for chunk in stream.ndjson_body(from_seq):
            await response.write(chunk)

    Raises:
        ReplayUnavailableError: when made, or from the loop if the reader falls
            so far behind that the log drops events it has not sent yet.
    """

    __slots__ = ("_chunk_bytes", "_done", "_next", "_store")

    def __init__(
        self,
        store: EventStore,
        from_seq: int | None = None,
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        start = 0 if from_seq is None else check_from_seq(from_seq)
        if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be a positive integer, got {chunk_bytes!r}")
        store.check(start)
        self._store = store
        self._next = start
        self._chunk_bytes = chunk_bytes
        self._done = False

    @property
    def next_seq(self) -> int:
        """The ``seq`` of the next line this body will send."""
        return self._next

    def __aiter__(self) -> NdjsonBody:
        return self

    async def __anext__(self) -> bytes:
        store = self._store
        while not self._done:
            # A reader with lines ready would otherwise never yield to the
            # event loop (a server's send seldom blocks): let the others run.
            await anyio.lowlevel.checkpoint()
            entries = store.read(self._next, max_bytes=self._chunk_bytes)
            if entries:
                last = entries[-1]
                self._next = last.seq + 1
                if type(last.event) is FinalEvent:
                    self._done = True
                if len(entries) == 1:
                    return last.line
                return b"".join([entry.line for entry in entries])
            if store.finished:
                break
            await store.wait_for(self._next)
        self._done = True
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """End the body early (there is nothing else to release)."""
        self._done = True
