"""A loopback HTTP/1.1 event broker that breaks connections on a seeded schedule.

It serves one session as ``GET /sessions/{id}/stream?fromSeq=N`` (NDJSON, the
events with ``seq >= N``), like the reference broker, and speaks just enough
HTTP/1.1 for httpx: one request per connection, ``Connection: close``, the
body chunked or delimited by the close. Each connection takes the next
:class:`Fault` of the schedule; when the schedule is used up, connections
serve the session to its end. It runs on anyio (asyncio or trio).
"""

from __future__ import annotations

import contextlib
import enum
import random
from collections import Counter
from dataclasses import dataclass
from types import TracebackType
from typing import Final
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.lowlevel
from anyio.abc import SocketAttribute, SocketStream

SESSION_PATH: Final = "/sessions/s_test-session/stream"
_MAX_HEAD: Final = 16 * 1024


class FaultKind(enum.Enum):
    """What goes wrong on one connection."""

    CUT = "cut"
    """Cut the connection in the middle of a line (chunked body: httpx sees an error)."""
    CLEAN_CUT = "clean_cut"
    """Close a close-delimited body in the middle of a line (httpx sees a clean end)."""
    RESEND = "resend"
    """Start before ``fromSeq`` and repeat a line, then cut."""
    STALL = "stall"
    """Stop sending, keeping the connection open."""
    SKIP = "skip"
    """Leave one event out of the live stream (the replay still has it)."""
    UNAVAILABLE = "unavailable"
    """Answer 503."""
    UNAUTHORIZED = "unauthorized"
    """Answer 401."""
    TRICKLE = "trickle"
    """Send one line a few bytes at a time, then end the body before ``final``."""
    ENDLESS_LINE = "endless_line"
    """Send megabytes of one line that never ends, then cut."""


@dataclass(frozen=True)
class Fault:
    """One connection's fault, after ``new_lines`` events the client has not had yet.

    ``rewind``: how far before ``fromSeq`` a resend starts; ``line_bytes``:
    how much of an endless line is sent before the cut.
    """

    kind: FaultKind
    new_lines: int = 0
    rewind: int = 0
    line_bytes: int = 0


def fault_schedule(seed: int, *, events: int, faults: int = 60) -> list[Fault]:
    """A reproducible schedule of ``faults`` faults spread over a session of ``events`` events.

    Rare kinds come a fixed number of times (3 stalls, 4 503s never two in a
    row, 2 byte-by-byte lines); the rest are cuts, clean cuts, resends and
    skips. Every fault but a 503 lets at least one new event through, and the
    new events add up to well under ``events``, so every fault happens.
    """
    rng = random.Random(seed)
    rare = [FaultKind.STALL] * 3 + [FaultKind.TRICKLE] * 2
    common = [FaultKind.CUT, FaultKind.CLEAN_CUT, FaultKind.RESEND, FaultKind.SKIP]
    kinds = rare + [rng.choice(common) for _ in range(faults - len(rare) - 4)]
    rng.shuffle(kinds)
    for slot in sorted(rng.sample(range(len(kinds)), 4), reverse=True):
        kinds.insert(slot, FaultKind.UNAVAILABLE)  # distinct slots: never adjacent
    average = max(1, events * 2 // (faults * 3))
    schedule = []
    for kind in kinds:
        new_lines = 0 if kind is FaultKind.UNAVAILABLE else rng.randint(1, 2 * average - 1)
        schedule.append(Fault(kind, new_lines, rewind=rng.randint(1, 25)))
    return schedule


class FaultServer:
    """Serves ``lines`` (``lines[i]`` is the event with seq ``i``) with the faults of ``schedule``.

    Use as ``async with FaultServer(lines, schedule) as server:`` and point a
    client at :attr:`url`. ``token``, when set, is the bearer token required.
    :attr:`done` counts the faults carried out, by kind; :attr:`requests`
    records each request's ``fromSeq`` (None when absent).
    """

    def __init__(
        self,
        lines: list[bytes],
        schedule: list[Fault],
        *,
        seed: int = 0,
        token: str | None = None,
        stall_limit: float = 10.0,
    ) -> None:
        self._lines = lines
        self._schedule = list(schedule)
        self._rng = random.Random(seed)
        self._token = token
        self._stall_limit = stall_limit
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self.done: Counter[FaultKind] = Counter()
        self.requests: list[int | None] = []
        self.url = ""

    @property
    def faults_done(self) -> int:
        """How many faults were carried out."""
        return sum(self.done.values())

    async def __aenter__(self) -> FaultServer:
        async with contextlib.AsyncExitStack() as stack:
            listener = await stack.enter_async_context(
                await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
            )
            port = listener.extra(SocketAttribute.local_port)
            self.url = f"http://127.0.0.1:{port}{SESSION_PATH}"
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

    # -- one connection --------------------------------------------------------

    async def _handle(self, stream: SocketStream) -> None:
        # The client may go away at any point, which is its right.
        gone = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream)
        async with stream:
            with contextlib.suppress(*gone):
                await self._serve(stream)

    async def _serve(self, stream: SocketStream) -> None:
        head = await _read_head(stream)
        if head is None:
            return
        target, headers = head
        query = parse_qs(urlsplit(target).query)
        from_seq = int(query["fromSeq"][0]) if "fromSeq" in query else None
        self.requests.append(from_seq)
        if self._token is not None and headers.get("authorization") != f"Bearer {self._token}":
            fault: Fault | None = Fault(FaultKind.UNAUTHORIZED)
        else:
            fault = self._schedule.pop(0) if self._schedule else None
        if fault is not None and fault.kind is FaultKind.UNAVAILABLE:
            self.done[fault.kind] += 1
            await stream.send(_response(503, "Service Unavailable", b"busy, try again"))
            return
        if fault is not None and fault.kind is FaultKind.UNAUTHORIZED:
            self.done[fault.kind] += 1
            await stream.send(_response(401, "Unauthorized", b"invalid token"))
            return
        start = 0 if from_seq is None else from_seq
        chunked = fault is None or fault.kind is not FaultKind.CLEAN_CUT
        body = _Body(stream, chunked, self._rng)
        await stream.send(_head(chunked))
        if fault is None:
            await body.send(b"".join(self._lines[start:]))
            await body.end()
            return
        await self._fault(body, stream, fault, start)

    async def _fault(self, body: _Body, stream: SocketStream, fault: Fault, start: int) -> None:
        lines = self._lines
        split = min(start + fault.new_lines, len(lines) - 1)  # the final is never sent here
        kind = fault.kind
        if kind is FaultKind.RESEND:
            early = max(0, start - fault.rewind)
            again = self._rng.randrange(early, split)
            await body.send(b"".join([*lines[early : again + 1], *lines[again:split]]))
        else:
            await body.send(b"".join(lines[start:split]))
        nxt = lines[split]
        if kind in (FaultKind.CUT, FaultKind.CLEAN_CUT, FaultKind.RESEND):
            await body.send(nxt[: self._rng.randint(1, len(nxt) - 1)])
        elif kind is FaultKind.STALL:
            await _wait_for_close(stream, self._stall_limit)
        elif kind is FaultKind.SKIP:
            await body.send(b"".join(lines[split + 1 : split + 4]))
            await _wait_for_close(stream, self._stall_limit)
        elif kind is FaultKind.TRICKLE:
            # Eight bytes a write: dozens of writes for one line, done in a
            # few ms, far inside the client's heartbeat timeout (bytes are no
            # progress to it; only the line's event is).
            for index in range(0, len(nxt), 8):
                await body.send(nxt[index : index + 8])
                await anyio.lowlevel.checkpoint()
            await body.end()  # a complete, well-formed body that lacks the final event
        elif kind is FaultKind.ENDLESS_LINE:
            piece = b"x" * 65536
            await body.send(b'{"protocolVersion":2,"payload":"')
            for _ in range(fault.line_bytes // len(piece)):
                await body.send(piece)
        self.done[kind] += 1
        # Leaving without the chunked terminator: the client sees a broken body.


class _Body:
    """Writes a response body, chunked or close-delimited, split at random points."""

    def __init__(self, stream: SocketStream, chunked: bool, rng: random.Random) -> None:
        self._stream = stream
        self._chunked = chunked
        self._rng = rng

    async def send(self, data: bytes) -> None:
        while data:
            size = self._rng.randint(1, 16384)
            piece, data = data[:size], data[size:]
            if self._chunked:
                piece = b"%x\r\n%b\r\n" % (len(piece), piece)
            await self._stream.send(piece)

    async def end(self) -> None:
        if self._chunked:
            await self._stream.send(b"0\r\n\r\n")


def _head(chunked: bool) -> bytes:
    framing = "Transfer-Encoding: chunked\r\n" if chunked else ""
    return (
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
        f"{framing}Connection: close\r\n\r\n"
    ).encode()


def _response(status: int, phrase: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status} {phrase}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode() + body


async def _read_head(stream: SocketStream) -> tuple[str, dict[str, str]] | None:
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > _MAX_HEAD:
            return None
        try:
            data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return None
    request_line, *header_lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    _method, target, _version = request_line.split(" ", 2)
    headers = {}
    for header in header_lines:
        name, _, value = header.partition(":")
        headers[name.strip().lower()] = value.strip()
    return target, headers


async def _wait_for_close(stream: SocketStream, limit: float) -> None:
    """Keep the connection open, sending nothing, until the client closes it."""
    with anyio.move_on_after(limit):
        try:
            while await stream.receive():
                pass
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
