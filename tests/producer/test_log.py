"""EventLog: numbering, bounds, typed replay errors, live following; NdjsonBody."""

from __future__ import annotations

import inspect
import json
import tracemalloc

import anyio
import anyio.lowlevel
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave_stream import (
    EventEncoder,
    EventValidationError,
    StdoutEvent,
    parse_line,
)
from enclave_stream.codec import encode_event
from enclave_stream.errors import LogFullError
from enclave_stream.producer import (
    EventLog,
    EventStore,
    LogEntry,
    NdjsonBody,
    ReplayUnavailableError,
    StreamFinishedError,
)
from tests.clock import on_virtual_clock
from tests.producer.conftest import SESSION_ID, final, stdout, wait_until


def chunks(entries: list[LogEntry]) -> list[str]:
    return [entry.event.payload.chunk for entry in entries]  # type: ignore[union-attr]


def test_has_every_member_of_the_event_store_protocol_with_its_signature() -> None:
    # mutmut (docs/mutation.md) adds each method's original and mutants to the
    # class under names holding "__mutmut_": they are not members.
    members = [
        name for name in vars(EventStore) if not name.startswith("_") and "__mutmut_" not in name
    ]
    assert members  # the protocol is read, not an empty namespace
    for name in members:
        expected, actual = getattr(EventStore, name), getattr(EventLog, name)
        if isinstance(expected, property):
            assert isinstance(actual, property), name
        else:
            parameters = inspect.signature(actual).parameters
            assert parameters == inspect.signature(expected).parameters, name


def test_numbers_from_one_and_replaces_the_events_seq() -> None:
    log = EventLog()
    assert (log.next_seq, log.first_seq, len(log), log.finished) == (1, 1, 0, False)
    entries = [log.append(stdout(text, seq=99)) for text in "abc"]
    assert [entry.seq for entry in entries] == [1, 2, 3]
    assert [entry.event.seq for entry in entries] == [1, 2, 3]
    assert (log.next_seq, log.first_seq, len(log)) == (4, 1, 3)


def test_lines_are_the_reference_bytes_with_a_newline() -> None:
    log = EventLog()
    entry = log.append(stdout("hé\n"))
    assert entry.line == (
        b'{"protocolVersion":2,"sessionId":"s_producer-test","seq":1,"type":"stdout",'
        b'"payload":{"chunk":"h\xc3\xa9\\n"}}\n'
    )
    assert parse_line(entry.line.decode()).data == entry.event  # type: ignore[union-attr]
    assert log.size_bytes == len(entry.line)


def test_an_invalid_event_is_refused_and_uses_up_no_seq() -> None:
    log = EventLog()
    with pytest.raises(EventValidationError) as caught:
        log.append(StdoutEvent(session_id=SESSION_ID, seq=0, payload=123))  # type: ignore[arg-type]
    assert caught.value.path.startswith("$.payload")
    assert (log.next_seq, len(log), log.size_bytes) == (1, 0, 0)
    assert log.append(stdout()).seq == 1


def test_a_custom_encoder_makes_the_lines() -> None:
    encoder = EventEncoder()
    seen: list[int] = []

    def encode(event: object) -> bytes:
        seen.append(event.seq)  # type: ignore[attr-defined]
        return encoder.encode(event)  # type: ignore[arg-type]

    log = EventLog(encode=encode)
    log.append(stdout())
    log.append(stdout())
    assert seen == [1, 2]


def test_repr_shows_what_is_held() -> None:
    log = EventLog(max_events=2)
    assert repr(log) == "<EventLog held=0 seq=1..0 bytes=0 finished=False>"
    lines = [log.append(stdout()).line for _ in range(3)]
    log.close()
    size = len(lines[-1]) * 2
    assert repr(log) == f"<EventLog held=2 seq=2..3 bytes={size} finished=True>"


def test_final_finishes_the_log() -> None:
    log = EventLog()
    log.append(stdout())
    log.append(final())
    assert log.finished
    with pytest.raises(StreamFinishedError, match=SESSION_ID):
        log.append(stdout())
    assert log.next_seq == 3


def test_close_finishes_without_a_final() -> None:
    log = EventLog()
    log.append(stdout())
    log.close()
    log.close()
    assert log.finished
    with pytest.raises(StreamFinishedError):
        log.append(stdout())


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "3"])
def test_limits_must_be_positive_integers(bad: object) -> None:
    with pytest.raises(ValueError, match=r"^max_events must be"):
        EventLog(max_events=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^max_bytes must be"):
        EventLog(max_bytes=bad)  # type: ignore[arg-type]


def test_bounded_by_count_oldest_dropped_first() -> None:
    log = EventLog(max_events=3)
    for text in "abcde":
        log.append(stdout(text))
    assert (len(log), log.first_seq, log.next_seq) == (3, 3, 6)
    assert chunks(log.read(3)) == ["c", "d", "e"]
    assert log.size_bytes == sum(len(entry.line) for entry in log.read(3))


@pytest.mark.parametrize("slack", [0, 1, -1])
def test_bounded_by_bytes(slack: int) -> None:
    line_bytes = len(EventLog().append(stdout("aaaa")).line)
    log = EventLog(max_bytes=line_bytes * 2 + slack)
    for _ in range(5):
        log.append(stdout("aaaa"))
    held = 1 if slack < 0 else 2  # exactly max_bytes still fits
    assert (len(log), log.first_seq) == (held, 6 - held)
    assert log.size_bytes == line_bytes * held


def test_the_newest_event_is_kept_however_large() -> None:
    log = EventLog(max_bytes=100)
    log.append(stdout("small"))
    big = log.append(stdout("x" * 1000))
    assert log.read(2) == [big]
    assert (len(log), log.first_seq, log.size_bytes) == (1, 2, len(big.line))


def test_reading_a_dropped_seq_is_a_typed_error() -> None:
    log = EventLog(max_events=2)
    for text in "abcd":
        log.append(stdout(text))
    for asked in (0, 1, 2):
        with pytest.raises(ReplayUnavailableError) as caught:
            log.read(asked)
        assert (caught.value.requested_seq, caught.value.first_available_seq) == (max(asked, 1), 3)
        assert caught.value.code == "REPLAY_UNAVAILABLE"
        with pytest.raises(ReplayUnavailableError):
            log.check(asked)
    assert chunks(log.read(3)) == ["c", "d"]
    assert chunks(log.read(4)) == ["d"]
    assert log.read(5) == []
    assert log.read(500) == []  # a future seq: nothing yet, not an error
    log.check(3)
    log.check(5)


def test_seq_zero_and_one_ask_for_everything_while_nothing_was_dropped() -> None:
    log = EventLog(max_events=3)
    for text in "abc":
        log.append(stdout(text))
    assert chunks(log.read(0)) == chunks(log.read(1)) == ["a", "b", "c"]


@pytest.mark.parametrize("bad", [-1, True, 1.0, "1", None])
def test_from_seq_must_be_a_non_negative_integer(bad: object) -> None:
    log = EventLog()
    log.append(stdout())
    with pytest.raises(ValueError, match=r"^from_seq must be"):
        log.check(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^from_seq must be"):
        log.read(bad)  # type: ignore[arg-type]


def test_read_max_bytes_cuts_between_lines_but_returns_at_least_one() -> None:
    log = EventLog()
    lines = [log.append(stdout(text * 10)).line for text in "abcd"]
    size = len(lines[0])
    assert chunks(log.read(1, max_bytes=size * 2)) == ["a" * 10, "b" * 10]
    assert chunks(log.read(1, max_bytes=size * 2 + size // 2)) == ["a" * 10, "b" * 10]
    assert chunks(log.read(2, max_bytes=1)) == ["b" * 10]
    assert len(log.read(1, max_bytes=10**9)) == 4


def test_a_long_lived_log_keeps_the_window_exact_in_bounded_memory() -> None:
    log = EventLog(max_events=7)
    tracemalloc.start()
    try:
        for index in range(20_000):
            log.append(stdout(str(index)))
        held_bytes = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # Seven entries and some bookkeeping; a pointer kept per event ever
    # appended would be 160 kB.
    assert held_bytes < 100_000
    assert (len(log), log.first_seq, log.next_seq) == (7, 19_994, 20_001)
    assert chunks(log.read(19_994)) == [str(index) for index in range(19_993, 20_000)]
    assert log.size_bytes == sum(len(entry.line) for entry in log.read(19_994))


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 60), max_size=80),
    max_events=st.integers(1, 12),
    max_bytes=st.integers(1, 1500),
    from_seq=st.integers(0, 90),
)
def test_matches_a_model(sizes: list[int], max_events: int, max_bytes: int, from_seq: int) -> None:
    log = EventLog(max_events=max_events, max_bytes=max_bytes)
    model: list[LogEntry] = []
    for size in sizes:
        model.append(log.append(stdout("y" * size)))
        # The model: drop the oldest while over a bound, but never the newest.
        while len(model) > 1 and (
            len(model) > max_events or sum(len(entry.line) for entry in model) > max_bytes
        ):
            model.pop(0)
    first = model[0].seq if model else 1
    assert (len(log), log.first_seq, log.next_seq) == (len(model), first, len(sizes) + 1)
    assert log.size_bytes == sum(len(entry.line) for entry in model)
    if from_seq < first and first > 1:
        with pytest.raises(ReplayUnavailableError):
            log.read(from_seq)
    else:
        assert log.read(from_seq) == [entry for entry in model if entry.seq >= from_seq]


class Cursor:
    """A reader that only says where it is."""

    def __init__(self, next_seq: int) -> None:
        self.next_seq = next_seq


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(st.tuples(st.booleans(), st.integers(0, 60)), max_size=80),
    max_events=st.integers(1, 12),
    max_bytes=st.integers(100, 1500),
)
def test_with_a_holder_matches_a_model(
    steps: list[tuple[bool, int]], max_events: int, max_bytes: int
) -> None:
    log = EventLog(max_events=max_events, max_bytes=max_bytes)
    holder = Cursor(1)
    log.attach(holder, hold=True)
    model: list[LogEntry] = []

    def over(extra_events: int, extra_bytes: int) -> bool:
        held = sum(len(entry.line) for entry in model)
        return len(model) + extra_events > max_events or held + extra_bytes > max_bytes

    for is_read, size in steps:
        if is_read:  # the holder sends `size` events
            holder.next_seq = min(holder.next_seq + size, log.next_seq)
            continue
        event = stdout("y" * size)
        line = len(encode_event(msgspec.structs.replace(event, seq=log.next_seq))) + 1
        # The model: drop the oldest the holder has sent while the line does
        # not fit; refuse it if it still does not and the holder is behind.
        while model and model[0].seq < holder.next_seq and over(1, line):
            model.pop(0)
        held = sum(len(entry.line) for entry in model)
        refused = held + line > max_bytes and holder.next_seq < log.next_seq  # bytes only
        before = log.next_seq
        if refused:
            with pytest.raises(LogFullError):
                log.append(event)
            assert log.next_seq == before
        else:
            model.append(log.append(event))
            while len(model) > 1 and model[0].seq < holder.next_seq and over(0, 0):
                model.pop(0)
        first = model[0].seq if model else log.next_seq
        assert (len(log), log.first_seq) == (len(model), first)
        assert log.size_bytes == sum(len(entry.line) for entry in model)
        assert log.size_bytes <= max_bytes or len(model) == 1
        # Nothing the holder has not sent is ever dropped.
        assert log.read(holder.next_seq) == [e for e in model if e.seq >= holder.next_seq]


# --- waiting ----------------------------------------------------------


@pytest.mark.anyio
async def test_wait_for_returns_at_once_when_the_entry_is_there() -> None:
    log = EventLog()
    log.append(stdout())
    with anyio.fail_after(1):
        await log.wait_for(1)
    assert log.waiting == 0


@pytest.mark.anyio
async def test_wait_for_wakes_on_append_and_on_finish() -> None:
    log = EventLog()
    woken: list[str] = []

    async def waiter(name: str, seq: int) -> None:
        await log.wait_for(seq)
        woken.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, "first", 1)
        tg.start_soon(waiter, "second", 2)
        await wait_until(lambda: log.waiting == 2)
        log.append(stdout())
        await wait_until(lambda: woken == ["first"])
        assert log.waiting == 1
        log.close()
    assert woken == ["first", "second"]
    assert log.waiting == 0


@pytest.mark.anyio
@on_virtual_clock()
async def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    log = EventLog()
    with anyio.move_on_after(0.01):
        await log.wait_for(1)
    assert log.waiting == 0
    log.append(stdout())  # waking nobody is fine
    assert log.waiting == 0


@pytest.mark.anyio
@on_virtual_clock()
async def test_wait_finished_waits_for_final_and_is_not_a_reader() -> None:
    log = EventLog()
    done: list[bool] = []

    async def watcher() -> None:
        await log.wait_finished()
        done.append(True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(watcher)
        await anyio.sleep(1)  # the watcher is waiting by now
        assert log.waiting == 0
        log.append(stdout())
        await anyio.sleep(1)
        assert done == []
        log.append(final())
    assert done == [True]


# --- NdjsonBody: the log's lines as response chunks --------------------------


@pytest.mark.anyio
async def test_body_joins_what_is_ready_into_one_chunk() -> None:
    log = EventLog()
    lines = [log.append(stdout(str(index))).line for index in range(5)]
    log.append(final())
    body = NdjsonBody(log)
    assert await body.__anext__() == b"".join(lines) + log.read(6)[0].line
    with pytest.raises(StopAsyncIteration):
        await body.__anext__()


@pytest.mark.anyio
async def test_body_yields_to_the_event_loop_though_lines_are_ready() -> None:
    # A checkpoint: the other tasks run, and a cancelled reader stops here.
    log = EventLog()
    log.append(stdout())
    body = NdjsonBody(log)
    got: list[bytes] = []
    with anyio.CancelScope() as scope:
        scope.cancel()
        got.append(await body.__anext__())
    assert scope.cancelled_caught
    assert got == []
    assert body.next_seq == 0  # nothing was taken: the next call sends the line
    assert await body.__anext__() == log.read(1)[0].line


@pytest.mark.anyio
async def test_body_chunks_are_bounded_but_hold_at_least_one_line() -> None:
    log = EventLog()
    lines = [log.append(stdout("z" * 50)).line for _ in range(6)]
    log.close()
    size = len(lines[0])
    chunks = [chunk async for chunk in NdjsonBody(log, chunk_bytes=size * 2)]
    assert chunks == [lines[0] + lines[1], lines[2] + lines[3], lines[4] + lines[5]]
    assert [chunk async for chunk in NdjsonBody(log, 3, chunk_bytes=1)] == lines[2:]


@pytest.mark.anyio
async def test_body_follows_live_and_stops_at_final() -> None:
    log = EventLog()
    log.append(stdout("a"))
    body = NdjsonBody(log, 1)
    got: list[bytes] = []

    async def read() -> None:
        async for chunk in body:
            got.append(chunk)  # noqa: PERF401 - watched while it grows

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        await wait_until(lambda: len(got) == 1 and log.waiting == 1)
        assert body.next_seq == 2
        log.append(stdout("b"))
        await wait_until(lambda: len(got) == 2)
        log.append(final())
    assert len(got) == 3
    assert [line.startswith(b'{"protocolVersion":2') for line in got] == [True] * 3


@pytest.mark.anyio
async def test_body_of_a_finished_log_ends_and_can_start_past_the_end() -> None:
    log = EventLog()
    lines = [log.append(stdout()).line for _ in range(3)]
    lines.append(log.append(final()).line)
    assert [chunk async for chunk in NdjsonBody(log, chunk_bytes=1)] == lines
    assert [chunk async for chunk in NdjsonBody(log, 4)] == lines[3:]
    assert [chunk async for chunk in NdjsonBody(log, 9)] == []


@pytest.mark.anyio
async def test_body_ends_after_a_closed_log_without_final() -> None:
    log = EventLog()
    line = log.append(stdout()).line
    log.close()
    body = NdjsonBody(log)
    assert await body.__anext__() == line
    for _ in range(2):  # and stays ended
        with pytest.raises(StopAsyncIteration):
            await body.__anext__()


@pytest.mark.anyio
async def test_body_aclose_ends_it() -> None:
    log = EventLog()
    log.append(stdout())
    body = NdjsonBody(log)
    await body.aclose()
    with pytest.raises(StopAsyncIteration):  # though a line is ready
        await body.__anext__()


@pytest.mark.anyio
async def test_body_a_reader_that_falls_behind_is_told() -> None:
    log = EventLog(max_events=3)
    log.append(stdout())
    body = NdjsonBody(log, chunk_bytes=1)
    await body.__anext__()
    for _ in range(4):
        log.append(stdout())
    with pytest.raises(ReplayUnavailableError) as caught:
        await body.__anext__()
    assert (caught.value.requested_seq, caught.value.first_available_seq) == (2, 3)


class UncheckingStore(EventLog):
    """A store whose check() trusts its argument: NdjsonBody must check it first."""

    def check(self, from_seq: int) -> None:
        pass


@pytest.mark.parametrize("bad_seq", [-1, 2.0, True])
def test_body_checks_from_seq_whatever_the_store(bad_seq: object) -> None:
    with pytest.raises(ValueError, match=r"^from_seq must be"):
        NdjsonBody(UncheckingStore(), bad_seq)  # type: ignore[arg-type]


class LateServingStore(EventLog):
    """A store that numbers a line before it serves it (as a store that writes
    elsewhere first does): every other read finds nothing yet."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def read(self, from_seq: int, *, max_bytes: int | None = None) -> list[LogEntry]:
        self.reads += 1
        return [] if self.reads % 2 else super().read(from_seq, max_bytes=max_bytes)


@pytest.mark.anyio
@pytest.mark.parametrize("from_seq", [None, 1])
async def test_body_of_a_finished_store_waits_for_lines_it_does_not_serve_yet(
    from_seq: int | None,
) -> None:
    store = LateServingStore()
    store.append(final())  # seq 1, finished
    body = NdjsonBody(store, from_seq)
    assert [json.loads(chunk)["seq"] async for chunk in body] == [1]
    assert store.reads == 3  # nothing, the final, then nothing past it


@pytest.mark.anyio
async def test_body_checks_its_arguments() -> None:
    log = EventLog(max_events=1)
    log.append(stdout())
    log.append(stdout())
    with pytest.raises(ReplayUnavailableError):
        NdjsonBody(log)
    for bad_seq in (-1, 2.0, True):
        with pytest.raises(ValueError, match=r"^from_seq must be"):
            NdjsonBody(log, bad_seq)  # type: ignore[arg-type]
    for bad_size in (0, -1, 64.0, True):
        with pytest.raises(ValueError, match=r"^chunk_bytes must be"):
            NdjsonBody(log, 2, chunk_bytes=bad_size)  # type: ignore[arg-type]


# --- a holding reader: the creator's response loses nothing -------------------------


@pytest.mark.anyio
async def test_a_holding_body_gets_every_event_from_seq_1_past_max_events() -> None:
    log = EventLog(max_events=10)
    creator = NdjsonBody(log, hold=True)
    for index in range(100):
        log.append(stdout(str(index)))
    assert (log.first_seq, len(log)) == (1, 100)
    log.append(final())
    lines = b"".join([chunk async for chunk in creator]).splitlines()
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, 102))


@pytest.mark.anyio
async def test_events_a_holder_has_sent_are_dropped_again() -> None:
    log = EventLog(max_events=3)
    creator = NdjsonBody(log, hold=True, chunk_bytes=1)
    for _ in range(5):
        log.append(stdout())
    assert (log.first_seq, len(log)) == (1, 5)
    await creator.__anext__()
    await creator.__anext__()  # seq 1 and 2 sent
    log.append(stdout())
    assert (log.first_seq, len(log)) == (3, 4)  # 3..6: the unsent ones stay
    log.append(final())
    assert [json.loads(chunk)["seq"] async for chunk in creator] == [3, 4, 5, 6, 7]


@pytest.mark.anyio
async def test_a_live_holder_that_sent_everything_leaves_max_events_held() -> None:
    log = EventLog(max_events=3)
    creator = NdjsonBody(log, hold=True)
    for _ in range(5):
        log.append(stdout())
    await creator.__anext__()  # seq 1..5 sent
    log.append(stdout())
    assert (log.first_seq, len(log)) == (4, 3)
    log.append(stdout())
    assert (log.first_seq, len(log)) == (5, 3)


@pytest.mark.anyio
async def test_a_holder_cut_before_the_end_keeps_its_place_for_its_resume() -> None:
    log = EventLog(max_events=3)
    creator = NdjsonBody(log, hold=True, chunk_bytes=1)
    log.append(stdout())
    await creator.__anext__()  # seq 1 given out, then the connection is cut
    await creator.aclose()
    for _ in range(20):
        log.append(stdout())  # a burst past max_events while it reconnects
    # Seq 1 too: the chunk given out last may be what its client never got.
    assert log.first_seq == 1
    resumed = NdjsonBody(log, 2)
    for _ in range(5):
        log.append(stdout())
    log.append(final())
    seqs = [json.loads(line)["seq"] async for chunk in resumed for line in chunk.splitlines()]
    assert seqs == list(range(2, 28))


@pytest.mark.anyio
async def test_a_holder_that_read_to_the_end_still_keeps_what_was_held() -> None:
    # Its last chunks may have gone into a connection already cut.
    log = EventLog(max_events=3)
    reader = NdjsonBody(log, hold=True)
    for _ in range(5):
        log.append(stdout())
    log.append(final())
    assert len([chunk async for chunk in reader]) == 1
    await reader.aclose()
    assert (log.first_seq, len(log)) == (1, 6)


@pytest.mark.anyio
async def test_a_holder_that_ends_keeps_only_what_may_have_been_in_flight() -> None:
    # 10 MiB sent: once it ends, the last 4 MiB of it stay, not all of it.
    big = "x" * (100 * 1024)
    log = EventLog(max_events=10, max_bytes=64 * 1024 * 1024)
    reader = NdjsonBody(log, hold=True)
    for _ in range(100):
        log.append(stdout(big))
    log.append(final())
    line = len(log.read(1)[0].line)
    assert len([chunk async for chunk in reader]) > 1
    assert log.first_seq > 1
    assert log.size_bytes <= 4 * 1024 * 1024 + line
    log2 = EventLog(max_events=10, max_bytes=64 * 1024 * 1024)
    cut = NdjsonBody(log2, hold=True)
    for _ in range(100):
        log2.append(stdout(big))
    async for _ in cut:  # all 100 sent, then its connection is cut
        if cut.next_seq > 100:
            break
    await cut.aclose()
    log2.append(stdout())
    kept = (4 * 1024 * 1024) // line
    assert log2.first_seq == 101 - kept
    assert len(log2) == kept + 1


def mib_line_event() -> StdoutEvent:
    """A stdout event whose line (newline included) is exactly 1 MiB."""
    overhead = len(EventLog().append(stdout("")).line)
    return stdout("x" * (1024 * 1024 - overhead))


@pytest.mark.anyio
@pytest.mark.parametrize("unread_first", [True, False])
async def test_two_cut_holders_keep_the_older_of_their_places(unread_first: bool) -> None:
    # One response was cut before it sent anything, the other after it sent
    # everything: the first one's client still needs seq 1.
    log = EventLog(max_events=2, max_bytes=64 * 1024 * 1024)
    unread = NdjsonBody(log, hold=True)
    read_all = NdjsonBody(log, hold=True)
    for _ in range(8):
        log.append(mib_line_event())
    async for _ in read_all:
        if read_all.next_seq > 8:
            break
    for body in (unread, read_all) if unread_first else (read_all, unread):
        await body.aclose()
    for _ in range(4):
        log.append(stdout())
    assert log.first_seq == 1
    assert [entry.seq for entry in log.read(1)] == list(range(1, 13))


@pytest.mark.anyio
@pytest.mark.parametrize("sent", [6, 4])
async def test_the_in_flight_window_is_exactly_4_mib(sent: int) -> None:
    # Four 1 MiB lines fit in the window, a fifth does not.
    log = EventLog(max_events=1, max_bytes=64 * 1024 * 1024)
    cut = NdjsonBody(log, hold=True, chunk_bytes=1)
    for _ in range(8):
        assert len(log.append(mib_line_event()).line) == 1024 * 1024
    for _ in range(sent):
        await cut.__anext__()
    await cut.aclose()
    log.append(stdout())
    assert log.first_seq == max(1, sent + 1 - 4)
    assert [entry.seq for entry in log.read(log.first_seq)] == list(range(log.first_seq, 10))


@pytest.mark.anyio
async def test_log_full_names_the_session_once_a_cut_holders_place_is_dropped() -> None:
    line_bytes = len(EventLog().append(stdout("x" * 10)).line)
    log = EventLog(max_bytes=3 * line_bytes)
    cut = NdjsonBody(log, hold=True)
    await cut.aclose()  # its place is kept within max_bytes only
    live = NdjsonBody(log, hold=True)  # still connected, reads nothing yet
    for _ in range(3):
        log.append(stdout("x" * 10))
    # The cut one's place goes first; the live one still holds everything.
    with pytest.raises(LogFullError) as caught:
        log.append(stdout("x" * 10))
    error = caught.value
    assert (error.session_id, error.first_unsent_seq, error.held_bytes) == (
        SESSION_ID,
        1,
        3 * line_bytes,
    )
    assert (log.first_seq, log.next_seq) == (1, 4)
    log.append(final())
    assert [json.loads(line)["seq"] async for chunk in live for line in chunk.splitlines()] == [
        1,
        2,
        3,
        4,
    ]


@pytest.mark.anyio
async def test_a_cut_holder_keeps_its_events_within_max_bytes_only() -> None:
    line_bytes = len(EventLog().append(stdout("x" * 10)).line)
    log = EventLog(max_bytes=3 * line_bytes)
    creator = NdjsonBody(log, hold=True)
    await creator.aclose()  # gone before its first read
    for _ in range(3):
        log.append(stdout("x" * 10))
    assert log.first_seq == 1
    # Past the budget the producer goes on (no LogFullError): the events
    # it had not sent are dropped, and its resume is told.
    assert log.append(stdout("x" * 10)).seq == 4
    assert log.first_seq == 2
    with pytest.raises(ReplayUnavailableError):
        NdjsonBody(log, 1)


@pytest.mark.anyio
async def test_past_max_bytes_a_holder_makes_append_raise_and_store_nothing() -> None:
    line_bytes = len(EventLog().append(stdout("x" * 10)).line)
    log = EventLog(max_bytes=3 * line_bytes)
    creator = NdjsonBody(log, hold=True, chunk_bytes=1)
    for _ in range(3):
        log.append(stdout("x" * 10))
    with pytest.raises(LogFullError) as caught:
        log.append(stdout("x" * 10))
    error = caught.value
    assert (error.session_id, error.held_bytes, error.max_bytes, error.first_unsent_seq) == (
        SESSION_ID,
        3 * line_bytes,
        3 * line_bytes,
        1,
    )
    assert (log.next_seq, len(log), log.size_bytes) == (4, 3, 3 * line_bytes)
    await creator.__anext__()  # seq 1 sent: room for one more
    assert log.append(stdout("x" * 10)).seq == 4
    assert log.first_seq == 2
    with pytest.raises(LogFullError) as caught:
        log.append(stdout("x" * 10))
    assert caught.value.first_unsent_seq == 2
    # A final is never refused: the session can always end.
    assert log.append(final(ok=False)).seq == 5
    assert log.finished


@pytest.mark.anyio
async def test_a_holder_that_has_sent_everything_lets_a_large_event_in() -> None:
    log = EventLog(max_bytes=100)
    creator = NdjsonBody(log, hold=True)
    log.append(stdout())
    await creator.__anext__()
    big = log.append(stdout("x" * 500))
    assert (log.first_seq, log.read(2)) == (2, [big])


@pytest.mark.anyio
async def test_a_holding_body_that_is_dropped_holds_nothing() -> None:
    log = EventLog(max_events=2)
    NdjsonBody(log, hold=True)  # never read, never closed: garbage at once
    for _ in range(5):
        log.append(stdout())
    assert (log.first_seq, log.lag) == (4, 0)


@pytest.mark.anyio
async def test_a_dropped_seq_is_named_from_1_not_0() -> None:
    log = EventLog(max_events=2)
    for _ in range(5):
        log.append(stdout())
    with pytest.raises(ReplayUnavailableError) as caught:
        NdjsonBody(log, 0)
    assert str(caught.value) == "events from seq 1 are no longer held (the oldest held is 4)"


# --- backpressure: lag and wait_lag ---------------------------------------------------


@pytest.mark.anyio
async def test_lag_is_what_the_slowest_attached_reader_has_not_sent() -> None:
    log = EventLog()
    assert log.lag == 0
    for _ in range(3):
        log.append(stdout())
    assert log.lag == 0  # no reader
    slow = NdjsonBody(log, chunk_bytes=1)
    fast = NdjsonBody(log)
    assert log.lag == 3
    await fast.__anext__()
    assert log.lag == 3
    await slow.__anext__()
    assert log.lag == 2
    await slow.aclose()
    assert log.lag == 0
    log.append(stdout())
    assert log.lag == 1
    del fast
    assert log.lag == 0
    ahead = NdjsonBody(log, 10)  # waiting for events not appended yet
    assert log.lag == 0
    await ahead.aclose()


@pytest.mark.anyio
@on_virtual_clock()
async def test_wait_lag_waits_for_the_readers_to_read_or_leave() -> None:
    log = EventLog()
    body = NdjsonBody(log, chunk_bytes=1)
    for _ in range(5):
        log.append(stdout())
    await log.wait_lag(5)  # at once
    with pytest.raises(TimeoutError):
        with anyio.fail_after(1):
            await log.wait_lag(2)
    with pytest.raises(ValueError, match="max_lag"):
        await log.wait_lag(-1)
    done: list[float] = []

    async def producer() -> None:
        await log.wait_lag(2)
        done.append(anyio.current_time())

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(producer)
        start = anyio.current_time()
        for _ in range(3):
            await anyio.sleep(1)
            assert not done
            await body.__anext__()
    assert done == [start + 3]
    for _ in range(5):
        log.append(stdout())
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(producer)
        await anyio.sleep(1)
        await body.aclose()  # a reader that leaves stops counting
    assert len(done) == 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("max_lag", "message"),
    [
        (1.5, "^max_lag must be an int, got 1.5$"),
        (True, "^max_lag must be an int, got True$"),
        (-1, "^max_lag must be >= 0, got -1$"),
    ],
)
async def test_wait_lag_refuses_a_bad_bound_naming_it(max_lag: int, message: str) -> None:
    log = EventLog()
    with pytest.raises(ValueError, match=message):
        await log.wait_lag(max_lag)


@pytest.mark.anyio
@on_virtual_clock()
async def test_every_producer_waiting_on_the_lag_wakes_when_the_reader_reads() -> None:
    log = EventLog()
    body = NdjsonBody(log)
    for _ in range(3):
        log.append(stdout())
    done: list[str] = []

    async def producer(name: str) -> None:
        await log.wait_lag(0)
        done.append(name)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as task_group:
            for name in ("first", "second", "third"):
                task_group.start_soon(producer, name)
            await anyio.sleep(1)
            assert done == []
            await body.__anext__()  # one read: every waiter rechecks
    assert sorted(done) == ["first", "second", "third"]


@pytest.mark.anyio
@on_virtual_clock()
async def test_a_reader_leaving_wakes_the_producer_which_waits_on_for_a_slower_one() -> None:
    log = EventLog()
    leaving, slow = NdjsonBody(log), NdjsonBody(log)
    for _ in range(3):
        log.append(stdout())
    done: list[float] = []

    async def producer() -> None:
        await log.wait_lag(0)
        done.append(anyio.current_time())

    with anyio.fail_after(10):
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(producer)
            start = anyio.current_time()
            await anyio.sleep(1)
            await leaving.aclose()  # the producer rechecks: the slow reader still lags
            await anyio.sleep(1)
            assert done == []
            await slow.__anext__()
    assert done == [start + 2]


class _Reader:
    """A reader of the log that is not an NdjsonBody: only where it is."""

    def __init__(self, next_seq: int) -> None:
        self.next_seq = next_seq


@pytest.mark.parametrize(
    ("options", "first_seq"), [({}, 4), ({"hold": False}, 4), ({"hold": True}, 1)]
)
def test_an_attached_reader_holds_its_unsent_events_only_when_asked(
    options: dict[str, bool], first_seq: int
) -> None:
    log = EventLog(max_events=2)
    reader = _Reader(1)
    log.attach(reader, **options)
    for _ in range(5):
        log.append(stdout())
    assert (log.first_seq, log.lag) == (first_seq, 5)
