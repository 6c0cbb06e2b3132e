"""Test doubles for the resumable event stream: sessions, connectors, a fake encrypted session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Union

import anyio

from enclave_stream import EncryptedEnvelope, FinalEvent, StdoutEvent, parse_line, serialize_event
from enclave_stream.crypto import SessionEncryptionContext, SessionKeyInfo, from_base64, to_base64
from enclave_stream.events import EncryptedEnvelopePayload, FinalPayload, StdoutPayload, StreamEvent
from enclave_stream.reconnect import ResumableEventStream

SESSION_ID = "s_test-session"


def make_session(count: int, *, start: int = 0, session_id: str = SESSION_ID) -> list[StreamEvent]:
    """``count`` events with seq ``start``, ``start + 1``, ...; the last one is ``final``."""
    events: list[StreamEvent] = [
        StdoutEvent(session_id=session_id, seq=seq, payload=StdoutPayload(chunk=f"line {seq}\n"))
        for seq in range(start, start + count - 1)
    ]
    events.append(
        FinalEvent(session_id=session_id, seq=start + count - 1, payload=FinalPayload(ok=True))
    )
    return events


def line(event: StreamEvent | EncryptedEnvelope) -> bytes:
    """One NDJSON line, newline included."""
    return serialize_event(event).encode() + b"\n"


class FakeSession:
    """A stand-in for ``EncryptedSession``: AES-GCM envelopes under one key.

    Like the real session, :meth:`open` refuses an envelope it has opened
    before (same nonce), so a test fails if the stream opens a duplicate.
    """

    def __init__(self, key: bytes = bytes(range(32)), key_id: str = "k_test") -> None:
        self._context = SessionEncryptionContext(key, SessionKeyInfo(key_id))
        self._opened: set[bytes] = set()
        self.open_count = 0

    def seal(self, event: StreamEvent) -> EncryptedEnvelope:
        ciphertext, nonce = self._context.encrypt(serialize_event(event).encode())
        payload = EncryptedEnvelopePayload(
            kid=self._context.key_id,
            nonce_b64=to_base64(nonce),
            ciphertext_b64=to_base64(ciphertext),
        )
        return EncryptedEnvelope(session_id=event.session_id, seq=event.seq, payload=payload)

    def open(self, envelope: EncryptedEnvelope) -> StreamEvent:
        nonce = from_base64(envelope.payload.nonce_b64)
        if nonce in self._opened:
            raise ValueError(f"envelope seq {envelope.seq} opened twice (nonce reuse)")
        plaintext = self._context.decrypt(from_base64(envelope.payload.ciphertext_b64), nonce)
        self._opened.add(nonce)
        self.open_count += 1
        parsed = parse_line(plaintext)
        if not parsed.success or isinstance(parsed.data, EncryptedEnvelope):
            raise ValueError(f"not a plaintext event inside envelope seq {envelope.seq}")
        return parsed.data


# --- scripted connections -------------------------------------------------------


@dataclass(frozen=True)
class Stall:
    """Send nothing more, ever (until the client gives up on the connection)."""


@dataclass(frozen=True)
class Sleep:
    """Wait this many seconds before the next step."""

    seconds: float


@dataclass(frozen=True)
class Raise:
    """Fail the read with this error."""

    error: Exception


Step = Union[bytes, Stall, Sleep, Raise]


@dataclass(frozen=True)
class Refuse:
    """The connection attempt itself fails with this error."""

    error: Exception


@dataclass(frozen=True)
class Hang:
    """The connection attempt never completes."""


Plan = Union[Sequence[Step], Refuse, Hang]
PlanFactory = Callable[[int | None], Plan]


@dataclass
class ScriptedConnector:
    """A connector whose connections follow ``plans``, one per connection, in order.

    A plan is a list of steps (bytes to send, :class:`Stall`, :class:`Sleep`,
    :class:`Raise`), a :class:`Refuse` or :class:`Hang`, or a function of ``from_seq`` giving
    one. It records every ``from_seq`` and when each connection was made, and
    counts connections still open (to check that the stream closes them).
    """

    plans: list[Plan | PlanFactory]
    calls: list[int | None] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    open_connections: int = 0
    closed_iterators: int = 0

    @asynccontextmanager
    async def __call__(self, from_seq: int | None) -> AsyncIterator[AsyncIterator[bytes]]:
        self.calls.append(from_seq)
        self.times.append(anyio.current_time())
        if not self.plans:
            raise AssertionError(f"unexpected connection #{len(self.calls)} (from_seq={from_seq})")
        plan = self.plans.pop(0)
        if callable(plan):
            plan = plan(from_seq)
        if isinstance(plan, Refuse):
            raise plan.error
        if isinstance(plan, Hang):
            await anyio.sleep_forever()
            return  # never reached: the stream gives up on the connection first
        self.open_connections += 1
        try:
            yield self._body(plan)
        finally:
            self.open_connections -= 1

    async def _body(self, steps: Sequence[Step]) -> AsyncIterator[bytes]:
        try:
            for step in steps:
                if isinstance(step, bytes):
                    yield step
                elif isinstance(step, Stall):
                    await anyio.sleep_forever()
                elif isinstance(step, Sleep):
                    await anyio.sleep(step.seconds)
                else:
                    raise step.error
        finally:
            self.closed_iterators += 1


def replay(
    lines: Sequence[bytes], *, then: Sequence[Step] = (), upto: int | None = None
) -> PlanFactory:
    """A plan like the broker's: the lines with ``seq >= from_seq`` (lines[i] has seq i).

    ``upto`` stops before that index; ``then`` steps follow the lines.
    """

    def plan(from_seq: int | None) -> Plan:
        start = 0 if from_seq is None else from_seq
        return [*lines[start:upto], *then]

    return plan


async def consume(stream: ResumableEventStream, into: list[StreamEvent]) -> None:
    """Iterate ``stream`` inside its ``async with``, appending to ``into`` as events arrive.

    Appending one by one keeps what arrived before an error ends the loop.
    """
    async with stream as events:
        async for event in events:
            into.append(event)  # noqa: PERF401


class Body:
    """Chunks, then maybe an error; not a generator, so there is nothing to finalize."""

    def __init__(self, chunks: Sequence[bytes], error: Exception | None = None) -> None:
        self._chunks = list(chunks)
        self._error = error

    def __aiter__(self) -> Body:
        return self

    async def __anext__(self) -> bytes:
        if self._chunks:
            return self._chunks.pop(0)
        if self._error is not None:
            raise self._error
        raise StopAsyncIteration
