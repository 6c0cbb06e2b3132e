"""Fixtures of the producer tests: events, sessions, a wall clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import anyio
import anyio.lowlevel

from enclave_stream import EncryptedSession, FinalEvent, StdoutEvent
from enclave_stream.crypto import SessionRole
from enclave_stream.events import FinalPayload, StdoutPayload

SESSION_ID = "s_producer-test"
KEY_ID = "k_producer-test"
S2C_KEY = bytes(range(32))
C2S_KEY = bytes(range(32, 64))


def stdout(text: str = "x", seq: int = 0, session_id: str = SESSION_ID) -> StdoutEvent:
    """A stdout event (its seq is replaced when appended)."""
    return StdoutEvent(session_id=session_id, seq=seq, payload=StdoutPayload(text))


def final(ok: bool = True, session_id: str = SESSION_ID) -> FinalEvent:
    """A final event (its seq is replaced when appended)."""
    return FinalEvent(session_id=session_id, seq=0, payload=FinalPayload(ok=ok))


async def wait_until(condition: Callable[[], bool], within: float = 2.0) -> None:
    """Let other tasks run until ``condition()`` holds."""
    with anyio.fail_after(within):
        while not condition():
            await anyio.lowlevel.checkpoint()


def session_pair(session_id: str = SESSION_ID) -> tuple[EncryptedSession, EncryptedSession]:
    """(server, client) sessions over fixed keys."""
    server = EncryptedSession(
        session_id, KEY_ID, SessionRole.SERVER, send_key=S2C_KEY, receive_key=C2S_KEY
    )
    client = EncryptedSession(
        session_id, KEY_ID, SessionRole.CLIENT, send_key=C2S_KEY, receive_key=S2C_KEY
    )
    return server, client


START = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)


class FakeWallClock:
    """A wall clock that moves only when told to."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, ms: float) -> None:
        self.now += timedelta(milliseconds=ms)
