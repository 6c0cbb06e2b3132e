"""Property: whatever the cuts, resends and chunking, every event arrives exactly once, in order."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave_stream.events import StreamEvent
from enclave_stream.reconnect import ReconnectionConfig, open_event_stream
from tests.reconnect.fakes import FakeSession, Plan, Raise, ScriptedConnector, line, make_session

CONFIG = ReconnectionConfig(max_retries=20, initial_delay_ms=0, jitter=False)


@dataclass(frozen=True)
class Fault:
    """One broken connection: starts ``rewind`` events early, may repeat a line, cut at ``cut``."""

    rewind: int
    repeat: int | None
    chunk: int
    cut: float  # where the cut falls, as a fraction of the bytes the connection would send
    clean_end: bool  # the connection just ends, rather than failing


faults = st.builds(
    Fault,
    rewind=st.integers(0, 5),
    repeat=st.none() | st.integers(0, 100),
    chunk=st.integers(1, 300),
    cut=st.floats(0, 1, exclude_max=True),
    clean_end=st.booleans(),
)


def _plan(lines: list[bytes], from_seq: int | None, fault: Fault | None, chunk: int) -> Plan:
    start = 0 if from_seq is None else max(0, from_seq - (fault.rewind if fault else 0))
    sent = lines[start:]
    if fault is not None and fault.repeat is not None and sent:
        where = fault.repeat % len(sent)
        sent = [*sent[: where + 1], sent[where], *sent[where + 1 :]]
    body = b"".join(sent)
    if fault is not None:
        body = body[: int(len(body) * fault.cut)]
        chunk = fault.chunk
    steps: list[bytes | Raise] = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    if fault is not None and not fault.clean_end:
        steps.append(Raise(ConnectionResetError("cut")))
    return steps


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(1, 40),
    faults=st.lists(faults, max_size=8),
    encrypted=st.booleans(),
    backend=st.sampled_from(["asyncio", "trio"]),
)
def test_every_event_exactly_once_in_order(
    count: int, faults: list[Fault], encrypted: bool, backend: str
) -> None:
    plain = make_session(count)
    sender = FakeSession()
    lines = [line(sender.seal(event) if encrypted else event) for event in plain]
    schedule: list[Fault | None] = [*faults, None]

    def plan(from_seq: int | None) -> Plan:
        return _plan(lines, from_seq, schedule.pop(0), chunk=64)

    connector = ScriptedConnector([plan] * len(schedule))
    session = FakeSession() if encrypted else None

    async def main() -> list[StreamEvent]:
        async with open_event_stream(connector, config=CONFIG, session=session) as events:
            return [event async for event in events]

    received = anyio.run(main, backend=backend)
    assert received == plain
    assert connector.open_connections == 0
