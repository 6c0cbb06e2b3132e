"""The demo's parts alone: the check, the cut points, the wire tap, the script, the summary."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace

import httpx
import msgspec
import pytest

from enclave_stream import (
    EncryptedEnvelope,
    FinalEvent,
    HeartbeatEvent,
    StdoutEvent,
    StreamEvent,
    ToolCallEvent,
)
from enclave_stream.events import FinalPayload, StdoutPayload
from enclave_stream.producer import EventStream
from enclave_stream.reconnect.http import broker_connector
from examples.demo.loopback import mid_line_cut
from examples.demo.options import DemoOptions, parse_options
from examples.demo.program import SessionPlan, dry_run_bytes, session_script
from examples.demo.run import cut_schedule
from examples.demo.summary import Outcome, summarize
from examples.demo.tap import ConnectionReport, WireTap
from examples.demo.verify import exactly_once_problems, seq_ranges


def stdout(seq: int, text: str = "") -> StdoutEvent:
    return StdoutEvent("s_1", seq, StdoutPayload(text or f"line {seq}\n"))


def session(count: int) -> list[StreamEvent]:
    events: list[StreamEvent] = [stdout(seq) for seq in range(1, count)]
    return [*events, FinalEvent("s_1", count, FinalPayload(ok=True))]


# --- the exactly-once check ----------------------------------------------------


def test_a_faithful_copy_has_no_problems() -> None:
    produced = session(6)
    assert exactly_once_problems(list(produced), produced) == []


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        (lambda e: [*e[:3], e[2], *e[3:]], "seq 3 arrived 2 times"),
        (lambda e: [e[0], *e[3:]], "missing: seq 2..3"),
        (lambda e: [*e[:-1], stdout(9), e[-1]], "not produced by the server: seq 9"),
        (lambda e: [e[1], e[0], *e[2:]], "out of order: seq 1 after seq 2"),
        (lambda e: [e[0], stdout(2, "changed\n"), *e[2:]], "seq 2 differs from the event"),
        (lambda e: e[:-1], "missing: seq 6"),
    ],
    ids=["duplicate", "missing", "extra", "reordered", "altered", "no-final"],
)
def test_each_kind_of_problem_is_named(tamper: object, problem: str) -> None:
    produced = session(6)
    received = tamper(produced)  # type: ignore[operator]
    problems = exactly_once_problems(received, produced)
    assert any(found.startswith(problem) for found in problems), problems


def test_an_event_still_encrypted_is_a_problem() -> None:
    produced = session(3)
    envelope = msgspec.json.decode(
        b'{"protocolVersion":2,"sessionId":"s_1","seq":2,"type":"enc",'
        b'"payload":{"kid":"k_1","nonceB64":"AAAAAAAAAAAAAAAA","ciphertextB64":"AAAA"}}',
        type=EncryptedEnvelope,
    )
    problems = exactly_once_problems([produced[0], envelope, produced[2]], produced)
    assert problems == ["seq 2 arrived still encrypted"]


def test_long_lists_of_problems_are_cut_short() -> None:
    produced = session(20)
    doubled = [event for event in produced[:-1] for _ in (1, 2)] + [produced[-1]]
    problems = exactly_once_problems(doubled, produced)
    assert problems[:5] == [f"seq {seq} arrived 2 times" for seq in range(1, 6)]
    assert problems[5] == "... and 14 more"


def test_seq_ranges() -> None:
    assert seq_ranges([]) == ""
    assert seq_ranges([5, 4, 3, 3, 10]) == "3..5, 10"


# --- where the proxy cuts -----------------------------------------------------


def test_cuts_fall_inside_a_line_never_in_the_chunk_framing() -> None:
    body = b'2a\r\n{"seq":1,"type":"stdout"}\n\r\n1b\r\n{"seq":2}\n\r\n'
    for at in range(len(body)):
        cut = mid_line_cut(body, at)
        if cut is None:
            continue
        assert cut >= at
        start = body.rfind(b"\n", 0, cut) + 1
        assert body[start : start + 1] == b"{", (at, cut)
        assert cut - start >= 8, (at, cut)
        assert body[cut - 1 : cut] not in (b"\r", b"\n")
        assert body[cut : cut + 1] not in (b"\r", b"\n")
    assert mid_line_cut(body, len(body) - 3) is None
    # A chunk that starts inside a line sent earlier.
    assert mid_line_cut(b'e":"stdout"}\n', 2) == 2


def test_the_cut_schedule_follows_the_seed() -> None:
    first = cut_schedule(DemoOptions(seed=9), 100_000)
    assert first == cut_schedule(DemoOptions(seed=9), 100_000)
    assert first != cut_schedule(DemoOptions(seed=10), 100_000)
    assert 20_000 <= first[0] <= 40_000
    assert 20_000 <= first[1] <= 35_000
    # Resuming with the whole session again: the second cut comes after the replay.
    replayed = cut_schedule(DemoOptions(seed=9, replay_all=True), 100_000)
    assert replayed == [first[0], first[0] + first[1]]
    assert cut_schedule(DemoOptions(seed=9, cuts=False), 100_000) == []


# --- the wire tap -------------------------------------------------------------


def line(seq: int, kind: str = "stdout") -> bytes:
    return b'{"seq":%d,"type":"%s","payload":{}}\n' % (seq, kind.encode())


class FakeConnector:
    """Serves pre-recorded connections: lists of chunks, optionally ending in an error."""

    def __init__(self, connections: Sequence[tuple[list[bytes], Exception | None]]) -> None:
        self._connections = list(connections)
        self.asked: list[int | None] = []

    @asynccontextmanager
    async def __call__(self, from_seq: int | None) -> AsyncIterator[AsyncIterator[bytes]]:
        self.asked.append(from_seq)
        chunks, error = self._connections.pop(0)

        async def body() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk
            if error is not None:
                raise error

        yield body()


async def drain(tap: WireTap, from_seq: int | None) -> None:
    async with tap(from_seq) as body:
        async for _ in body:
            pass


@pytest.mark.anyio
async def test_the_tap_counts_lines_duplicates_and_cut_lines() -> None:
    cut = line(3)[:9]
    connector = FakeConnector(
        [
            ([line(1, "enc") + line(2, "enc")[:5], line(2, "enc")[5:] + cut], OSError("cut")),
            ([line(2, "enc") + line(3, "enc"), line(4, "enc") + b"not json\n"], None),
        ]
    )
    opened: list[tuple[int, int | None]] = []
    closed: list[ConnectionReport] = []
    tap = WireTap(
        connector,
        replay_all=True,
        on_open=lambda number, wanted: opened.append((number, wanted)),
        on_close=closed.append,
    )
    with pytest.raises(OSError, match="cut"):
        await drain(tap, None)
    await drain(tap, 3)

    assert connector.asked == [None, None]  # replay_all: always the whole session
    assert opened == [(1, None), (2, 3)]
    assert closed == tap.reports
    assert tap.reports == [
        ConnectionReport(1, None, lines=2, duplicates=0, fragment=9, error="OSError: cut"),
        ConnectionReport(2, 3, lines=4, duplicates=1, fragment=0, error=None),
    ]
    assert (tap.lines, tap.duplicates, tap.sealed, tap.unreadable) == (6, 1, 5, 1)


@pytest.mark.anyio
async def test_the_tap_passes_from_seq_on_by_default() -> None:
    connector = FakeConnector([([line(5)], None)])
    tap = WireTap(connector)
    await drain(tap, 5)
    assert connector.asked == [5]
    assert tap.sealed == 0


# --- the simulated session ----------------------------------------------------


def run_script(plan: SessionPlan) -> tuple[list[StreamEvent], float]:
    stream = EventStream("s_script", heartbeat_interval_ms=None)
    pauses = sum(session_script(stream, plan))
    return [entry.event for entry in stream.store.read(0)], pauses


@pytest.mark.parametrize("events", [40, 300, 1000])
def test_the_script_makes_about_the_events_asked_for(events: int) -> None:
    produced, pauses = run_script(SessionPlan(seed=4, events=events, duration_s=3, idle_s=0.8))
    assert abs(len(produced) - events) <= max(4, events // 20)
    assert pauses == pytest.approx(3, rel=0.1)
    kinds = {str(event.type) for event in produced}
    assert kinds >= {
        "session_init",
        "stdout",
        "log",
        "tool_call",
        "tool_progress",
        "tool_result_applied",
        "partial_result",
        "final",
    }
    assert isinstance(produced[-1], FinalEvent)
    assert produced[-1].payload.ok is True
    assert sum(isinstance(event, ToolCallEvent) for event in produced) == 1
    assert not any(isinstance(event, HeartbeatEvent) for event in produced)


def test_the_same_seed_makes_the_same_session() -> None:
    plan = SessionPlan(seed=4, events=100, duration_s=1, idle_s=0.1)
    first, second = run_script(plan)[0], run_script(plan)[0]
    other = run_script(SessionPlan(seed=5, events=100, duration_s=1, idle_s=0.1))[0]

    def chunks(events: list[StreamEvent]) -> list[str]:
        return [event.payload.chunk for event in events if isinstance(event, StdoutEvent)]

    assert chunks(first) == chunks(second)
    assert chunks(first) != chunks(other)


def test_a_dry_run_measures_the_wire_bytes() -> None:
    plan = SessionPlan(seed=4, events=100, duration_s=1, idle_s=0.1)
    plain, sealed = dry_run_bytes(plan, encrypted=False), dry_run_bytes(plan, encrypted=True)
    assert 10_000 < plain < sealed


# --- options and the summary --------------------------------------------------


def test_options() -> None:
    options = parse_options(["--plain", "--no-cuts", "--events", "50", "--replay-all"])
    assert (options.encrypt, options.cuts, options.events, options.replay_all) == (
        False,
        False,
        50,
        True,
    )
    assert 1 <= options.seed < 100_000
    assert parse_options(["--no-live"]).live is False
    assert parse_options([]).live is None


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_summary_with_a_missing_event_fails() -> None:
    produced = session(5)
    async with httpx.AsyncClient() as http:
        connector = broker_connector(http, "http://127.0.0.1:1", code="x", encrypt=False)
    tap = WireTap(FakeConnector([]))
    outcome = Outcome(
        received=[*produced[:2], *produced[3:]],
        produced=produced,
        tap=tap,
        connector=connector,
        cuts=2,
        reconnects=2,
        elapsed_s=0.5,
    )
    summary = summarize(DemoOptions(seed=1, encrypt=False), outcome)
    assert not summary.ok
    assert summary.verdict == "FAILED: missing: seq 3"
    assert dict(summary.rows)["exactly once"] == "NO (see below)"

    whole = summarize(DemoOptions(seed=1, encrypt=False), replace(outcome, received=produced))
    assert whole.ok
    assert (
        whole.verdict == "OK: all 5 events arrived exactly once, in order (2 cuts, 2 reconnects)."
    )

    # Encrypted, but the client's session opened nothing: not OK either.
    sealed = summarize(DemoOptions(seed=1), replace(outcome, received=produced))
    assert sealed.verdict == "FAILED: the client's session did not open every event"
