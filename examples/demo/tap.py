"""A wire tap: a connector wrapper that looks at the bytes before the client does.

The resumable client drops the events it has already delivered and keeps
no count of them, so the demo counts them on the wire: each complete line's
``seq`` and ``type`` are read (without decrypting anything), a ``seq`` seen
before is a duplicate the client will drop, and a connection that ends with
part of a line left over was cut mid-line.
"""

from __future__ import annotations

__all__ = ["ByteConnector", "ConnectionReport", "WireTap"]

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Final, NamedTuple, TypeAlias

import msgspec

ByteConnector: TypeAlias = Callable[[int | None], AbstractAsyncContextManager[AsyncIterator[bytes]]]
"""A connector whose connections yield an async iterator of bytes."""


class _Head(msgspec.Struct):
    seq: int
    type: str


_head_decoder: Final = msgspec.json.Decoder(_Head)


class ConnectionReport(NamedTuple):
    """What one connection carried.

    Attributes:
        number: 1 for the first connection, then 2, 3, ...
        wanted: the ``from_seq`` the client asked for (None: from the start).
        lines: the complete lines received.
        duplicates: those whose ``seq`` had been received before.
        fragment: bytes of an unfinished line when the connection ended (0: none).
        error: why the connection failed, if it did (the exception's type and text).
    """

    number: int
    wanted: int | None
    lines: int
    duplicates: int
    fragment: int
    error: str | None


class WireTap:
    """Wraps ``connect``, counting the lines, duplicates and cuts of every connection.

    With ``replay_all`` every resume asks for the whole session (as the
    reference client in effect does), so the client gets to drop duplicates.
    ``on_open(number, wanted)`` and ``on_close(report)`` are called as
    connections open and end.

    Attributes:
        lines: complete lines received, over all connections.
        duplicates: lines whose ``seq`` had been received before.
        sealed: lines that were ``enc`` envelopes.
        unreadable: lines without a ``seq`` and ``type`` (none, from a good server).
        reports: one :class:`ConnectionReport` per connection ended.
    """

    def __init__(
        self,
        connect: ByteConnector,
        *,
        replay_all: bool = False,
        on_open: Callable[[int, int | None], object] | None = None,
        on_close: Callable[[ConnectionReport], object] | None = None,
    ) -> None:
        self._connect = connect
        self._replay_all = replay_all
        self._on_open = on_open
        self._on_close = on_close
        self._max_seq = -1
        self.lines = 0
        self.duplicates = 0
        self.sealed = 0
        self.unreadable = 0
        self.reports: list[ConnectionReport] = []

    @asynccontextmanager
    async def __call__(self, from_seq: int | None) -> AsyncIterator[AsyncIterator[bytes]]:
        """Open a connection through the wrapped connector, tapping its bytes."""
        number = len(self.reports) + 1
        if self._on_open is not None:
            self._on_open(number, from_seq)
        body: _TappedBody | None = None
        error: str | None = None
        try:
            async with self._connect(None if self._replay_all else from_seq) as source:
                body = _TappedBody(source, self)
                try:
                    yield body
                finally:
                    await body.aclose()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            lines, duplicates, fragment = (0, 0, 0) if body is None else body.counts()
            report = ConnectionReport(number, from_seq, lines, duplicates, fragment, error)
            self.reports.append(report)
            if self._on_close is not None:
                self._on_close(report)

    def count_line(self, line: bytes) -> bool:
        """Count one complete line; True if it repeats a ``seq``."""
        self.lines += 1
        try:
            head = _head_decoder.decode(line)
        except msgspec.DecodeError:
            self.unreadable += 1
            return False
        if head.type == "enc":
            self.sealed += 1
        if head.seq <= self._max_seq:
            self.duplicates += 1
            return True
        self._max_seq = head.seq
        return False


class _TappedBody:
    """The bytes of one connection, split into lines for the tap as they pass."""

    __slots__ = ("_duplicates", "_inner", "_lines", "_pending", "_tap")

    def __init__(self, inner: AsyncIterator[bytes], tap: WireTap) -> None:
        self._inner = inner
        self._tap = tap
        self._pending = b""
        self._lines = 0
        self._duplicates = 0

    def counts(self) -> tuple[int, int, int]:
        """Lines, duplicates, and the bytes of an unfinished line, so far."""
        return self._lines, self._duplicates, len(self._pending.strip())

    def __aiter__(self) -> _TappedBody:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._inner.__anext__()
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        for line in lines:
            if line.strip():
                self._lines += 1
                self._duplicates += self._tap.count_line(line)
        return chunk

    async def aclose(self) -> None:
        """Close the connection's bytes (the client may stop reading before their end)."""
        aclose = getattr(self._inner, "aclose", None)
        if aclose is not None:
            await aclose()
