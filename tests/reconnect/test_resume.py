"""The resume core: SequenceTracker, ResumeCore and EventBuffer.

SequenceTracker's default-mode traces are checked in
tests/conformance/test_reconnect_vectors.py; the strict mode and the core are
checked here with plain tables (inputs -> verdicts).
"""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from enclave_stream import EncryptedEnvelope, FinalEvent, LineError, StdoutEvent
from enclave_stream.errors import FailureKind, LineTooLongError, RetryableConnectError
from enclave_stream.events import EncryptedEnvelopePayload, FinalPayload, ParsedEvent, StdoutPayload
from enclave_stream.reconnect import (
    ConnectionState,
    EventBuffer,
    ReceiveResult,
    ReconnectionConfig,
    ResumeCore,
    SequenceGap,
    SequenceTracker,
)
from enclave_stream.reconnect.resume import DROP, NEW, GiveUp, Reconnect


def test_results() -> None:
    tracker = SequenceTracker()
    assert tracker.receive(1) == ReceiveResult(gap=False)
    assert tracker.receive(4) == ReceiveResult(gap=True, missing_start=2, missing_end=3)
    assert tracker.receive(4) == ReceiveResult(gap=False, duplicate=True)
    assert tracker.receive(2) == ReceiveResult(gap=False, duplicate=True)
    assert tracker.gaps == [SequenceGap(2, 3)]
    assert tracker.has_gaps()


def test_gaps_is_a_copy() -> None:
    tracker = SequenceTracker()
    tracker.receive(1)
    tracker.receive(3)
    tracker.gaps.clear()
    assert tracker.gaps == [SequenceGap(2, 2)]


def test_first_zero_quirk_still_flags_the_repeat() -> None:
    tracker = SequenceTracker()
    assert not tracker.receive(0).duplicate
    # The reference forgets that 0 arrived (last_seq 0 = "nothing yet") ...
    result = tracker.receive(0)
    assert result.to_dict() == {"gap": False}
    assert tracker.last_seq == 0
    # ... but the duplicate flag does not.
    assert result.duplicate
    assert not tracker.receive(1).duplicate
    assert tracker.receive(0).duplicate


@pytest.mark.parametrize("strict", [False, True])
def test_reset_forgets_what_was_received(strict: bool) -> None:
    tracker = SequenceTracker(max_gaps=1, strict=strict)
    for seq in (5, 9, 12):
        tracker.receive(seq)
    assert tracker.gaps_dropped == 1
    tracker.reset()
    assert (tracker.last_seq, tracker.next_seq, tracker.gaps) == (0, None, [])
    assert tracker.gaps_dropped == 0
    # The next number is a fresh start: neither a repeat nor after a hole.
    assert tracker.receive(3) == ReceiveResult(gap=False)
    assert (tracker.last_seq, tracker.next_seq) == (3, 4)


def test_keeps_100_gaps_by_default() -> None:
    tracker = SequenceTracker()
    for seq in range(1, 204, 2):  # 1, 3, ..., 203: 101 gaps
        tracker.receive(seq)
    assert (tracker.max_gaps, len(tracker.gaps), tracker.gaps_dropped) == (100, 100, 1)
    assert tracker.gaps[-1] == SequenceGap(200, 200)


def test_max_gaps_zero_keeps_none_but_reports() -> None:
    tracker = SequenceTracker(max_gaps=0)
    tracker.receive(1)
    assert tracker.receive(5).gap
    assert not tracker.has_gaps()
    assert tracker.max_gaps == 0


@pytest.mark.parametrize("seq", [-1, 1.0, True, "3", None])
def test_sequence_numbers_must_be_non_negative_ints(seq: object) -> None:
    with pytest.raises(ValueError, match="sequence numbers"):
        SequenceTracker().receive(seq)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sequence numbers"):
        SequenceTracker().check(seq)  # type: ignore[arg-type]


@pytest.mark.parametrize("strict", [False, True])
def test_receive_next_is_receive_of_each_following_number(strict: bool) -> None:
    one_by_one, at_once = SequenceTracker(strict=strict), SequenceTracker(strict=strict)
    for tracker in (one_by_one, at_once):
        tracker.receive(4)
    for seq in (5, 6, 7):
        one_by_one.receive(seq)
    at_once.receive_next(3)
    assert (at_once.last_seq, at_once.next_seq, at_once.gaps) == (7, 8, [])
    assert (at_once.last_seq, at_once.next_seq) == (one_by_one.last_seq, one_by_one.next_seq)
    assert at_once.receive(6).duplicate


def test_receive_next_needs_a_start() -> None:
    with pytest.raises(ValueError, match=r"^receive_next needs a number received before$"):
        SequenceTracker().receive_next(1)


@pytest.mark.parametrize("max_gaps", [-1, 2.0, False])
def test_max_gaps_is_validated(max_gaps: object) -> None:
    with pytest.raises(ValueError, match=r"^max_gaps must be"):
        SequenceTracker(max_gaps)  # type: ignore[arg-type]


class Resumption(RuleBasedStateMachine):
    """A server stream seen through drops, resends and replays, deduplicated.

    The server numbers its events ``first, first + 1, ...``. The transport
    sends them in order, may repeat any event already sent, may lose a run of
    events (a gap), and may reconnect and replay from an earlier point. The
    consumer delivers an event iff the tracker does not flag it duplicate,
    as the stream client does.
    """

    @initialize(first=st.sampled_from([0, 1]) | st.integers(0, 1000))
    def start(self, first: int) -> None:
        self.first = first
        self.cursor = first  # the next number the server sends
        self.tracker = SequenceTracker()
        self.sent: list[int] = []
        self.delivered: list[int] = []
        self.lost_any = False

    def _send(self, seq: int) -> None:
        self.sent.append(seq)
        if not self.tracker.receive(seq).duplicate:
            self.delivered.append(seq)

    @rule()
    def send_next(self) -> None:
        self._send(self.cursor)
        self.cursor += 1

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def resend(self, data: st.DataObject) -> None:
        self._send(data.draw(st.sampled_from(self.sent), label="resent"))

    @rule(back=st.integers(0, 6))
    def reconnect_and_replay(self, back: int) -> None:
        resume = self.delivered[-1] + 1 if self.delivered else self.first
        self.cursor = max(self.first, resume - back)

    @rule(count=st.integers(1, 4))
    def lose(self, count: int) -> None:
        self.cursor += count
        self.lost_any = True

    @invariant()
    def at_most_once_in_order(self) -> None:
        assert all(a < b for a, b in zip(self.delivered, self.delivered[1:], strict=False))

    @invariant()
    def nothing_new_is_dropped(self) -> None:
        # Exactly the events newer than everything before them get through.
        records: list[int] = []
        for seq in self.sent:
            if not records or seq > records[-1]:
                records.append(seq)
        assert self.delivered == records

    @invariant()
    def exactly_once_without_loss(self) -> None:
        if not self.lost_any and self.delivered:
            assert self.delivered == list(range(self.first, self.delivered[-1] + 1))

    @invariant()
    def gaps_are_the_holes(self) -> None:
        holes = [
            SequenceGap(a + 1, b - 1)
            for a, b in zip(self.delivered, self.delivered[1:], strict=False)
            if b > a + 1 and a != 0  # after a first 0 the reference sees a fresh start
        ]
        assert self.tracker.gaps == holes
        assert self.tracker.last_seq == (self.delivered[-1] if self.delivered else 0)


TestResumption = Resumption.TestCase
TestResumption.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)


# --- EventBuffer


def test_bounded_and_ordered() -> None:
    buffer: EventBuffer[int] = EventBuffer(max_size=3)
    assert [buffer.add(i) for i in range(5)] == [True, True, True, False, False]
    assert buffer.is_full()
    assert len(buffer) == 3
    assert buffer.get_all() == [0, 1, 2]
    assert buffer.drain() == [0, 1, 2]
    assert len(buffer) == 0
    assert not buffer.is_full()
    assert buffer.max_size == 3


def test_default_size() -> None:
    buffer: EventBuffer[object] = EventBuffer()
    assert buffer.max_size == 1000


def test_get_all_and_drain_return_copies() -> None:
    buffer: EventBuffer[str] = EventBuffer()
    buffer.add("a")
    buffer.get_all().append("x")
    drained = buffer.drain()
    buffer.add("b")
    assert drained == ["a"]
    assert buffer.get_all() == ["b"]


def test_clear() -> None:
    buffer: EventBuffer[str] = EventBuffer(1)
    buffer.add("a")
    buffer.clear()
    assert buffer.add("b")
    assert buffer.get_all() == ["b"]


@pytest.mark.parametrize("max_size", [-1, 1.5, None, True])
def test_max_size_is_validated(max_size: object) -> None:
    with pytest.raises(ValueError, match=r"^max_size must be"):
        EventBuffer(max_size)  # type: ignore[arg-type]


# --- SequenceTracker, strict mode


@pytest.mark.parametrize(
    ("seqs", "verdicts", "missing"),
    [
        ([0, 1, 2], "ok ok ok", []),
        ([0, 5], "ok gap", [(1, 4)]),  # no first-0 quirk
        ([3, 4, 4, 3], "ok ok dup dup", []),
        ([0, 1, 5, 3, 3, 2], "ok ok gap late dup late", [(4, 4)]),
        ([1, 9, 6, 2, 8, 7, 3], "ok gap late late late late late", [(4, 5)]),
        ([7], "ok", []),
    ],
)
def test_strict_tracker(seqs: list[int], verdicts: str, missing: list[tuple[int, int]]) -> None:
    tracker = SequenceTracker(strict=True)

    def verdict(result: ReceiveResult) -> str:
        return (
            "gap" if result.gap else "dup" if result.duplicate else "late" if result.late else "ok"
        )

    assert " ".join(verdict(tracker.receive(s)) for s in seqs) == verdicts
    assert [(g.start, g.end) for g in tracker.gaps] == missing
    assert tracker.last_seq == max(seqs)
    assert tracker.next_seq == max(seqs) + 1


def test_check_changes_nothing() -> None:
    tracker = SequenceTracker(strict=True)
    assert tracker.next_seq is None
    assert tracker.check(4) == ReceiveResult(gap=False)
    assert tracker.next_seq is None
    tracker.receive(4)
    assert tracker.check(7) == ReceiveResult(gap=True, missing_start=5, missing_end=6)
    assert tracker.check(4).duplicate
    assert (tracker.last_seq, tracker.gaps) == (4, [])


def test_strict_gaps_past_max_gaps_are_counted() -> None:
    tracker = SequenceTracker(max_gaps=1, strict=True)
    results = [tracker.receive(s) for s in (1, 3, 5, 7)]
    assert [r.gap for r in results] == [False, True, True, True]
    assert tracker.gaps == [SequenceGap(2, 2)]
    assert tracker.gaps_dropped == 2
    assert tracker.receive(4).duplicate  # not recorded, so not known to be missing


# --- ResumeCore: what a client does with each event

SID = "s_core"


def stdout(seq: int, session: str = SID) -> StdoutEvent:
    return StdoutEvent(session_id=session, seq=seq, payload=StdoutPayload("x"))


def envelope(seq: int) -> EncryptedEnvelope:
    return EncryptedEnvelope(
        session_id=SID,
        seq=seq,
        payload=EncryptedEnvelopePayload(kid="k", nonce_b64="n", ciphertext_b64="c"),
    )


TOO_LONG = LineError(line=3, error="too long", content="", kind=FailureKind.LINE_TOO_LONG)


def run(script: str, **options: object) -> list[object]:
    """Run ``script`` through a core as the client does; one verdict per step.

    Steps: ``|`` a new connection; ``N`` a stdout event with seq N; ``oN``
    one of another session; ``eN`` an envelope; ``fN`` a final event;
    ``long`` an over-long line (line 3); ``end`` / ``cut`` the bytes end
    (cleanly, or in a line). Verdicts: ``"new"``, ``"final"``, or what
    ``check()`` / ``connection_ended()`` returned.
    """
    core = ResumeCore(ReconnectionConfig(jitter=False), **options)  # type: ignore[arg-type]
    core.connect()
    verdicts: list[object] = []
    for step in script.split():
        if step == "|":
            core.connection_opened()
            continue
        if step == "long":
            core.line_error(TOO_LONG)
            continue
        if step in ("end", "cut"):
            verdicts.append(core.connection_ended(step == "cut"))
            continue
        event: ParsedEvent
        if step[0] == "o":
            event = stdout(int(step[1:]), "s_other")
        elif step[0] == "e":
            event = envelope(int(step[1:]))
        elif step[0] == "f":
            event = FinalEvent(session_id=SID, seq=int(step[1:]), payload=FinalPayload(ok=True))
        else:
            event = stdout(int(step))
        verdict = core.check(event, line=7)
        if verdict is NEW:
            verdicts.append("final" if core.accept(event) else "new")
        else:
            verdicts.append(verdict)
    return verdicts


def drive(script: str, **options: object) -> list[str]:
    """:func:`run`, each verdict by its :func:`name`."""
    return [name(verdict) for verdict in run(script, **options)]


def name(verdict: object) -> str:
    if verdict in ("new", "final"):
        return str(verdict)
    if verdict is DROP:
        return "drop"
    if isinstance(verdict, Reconnect):
        return "reconnect"
    assert isinstance(verdict, GiveUp)
    return type(verdict.error).__name__


@pytest.mark.parametrize(
    ("script", "options", "verdicts"),
    [
        ("| 1 2 3", {}, "new new new"),
        ("| 5 6", {}, "new new"),  # any first number
        ("| 0 5", {}, "new reconnect"),  # a hole after a first 0 too
        ("| 1 2 2 1 3", {}, "new new drop drop new"),  # resends
        ("| 1 2 5", {}, "new new reconnect"),  # a live hole: ask for a replay
        ("| 1 2 5 | 3 4 5", {}, "new new reconnect new new new"),  # the replay fills it
        ("| 1 2 5 | 5", {}, "new new reconnect SequenceGapError"),  # the replay skips it
        ("| 1 2 5 | 5 6", {"allow_gaps": True}, "new new reconnect new new"),
        ("| 1 2 3 | 1 2 3 4", {}, "new new new drop drop drop new"),  # replay from early
        ("| 1 o2", {}, "new SessionMismatchError"),
        ("| 1 | o2", {}, "new SessionMismatchError"),  # pinned across connections
        ("| 1 f2", {}, "new final"),
        ("| 1 end", {}, "new reconnect"),
        ("| 1 cut", {}, "new reconnect"),
        ("| 1 | long end", {}, "new LineTooLongError"),  # nothing new but a long line
        ("| 1 | long 2 end", {}, "new new reconnect"),  # a new event clears it
        ("| 1 2 3 | long 5", {}, "new new new LineTooLongError"),  # the hole is that line
        ("| 1 long 3", {}, "new reconnect"),  # live: a replay may bring it
        ("| e1 e2", {"refuse_plaintext": True}, "new new"),
        ("| e1 2", {"refuse_plaintext": True}, "new StreamFailedError"),
        ("| e1 2", {}, "new new"),
    ],
)
def test_core(script: str, options: dict[str, object], verdicts: str) -> None:
    assert drive(script, **options) == verdicts.split()


def test_core_resumes_after_the_last_event_and_records_accepted_gaps() -> None:
    core = ResumeCore(allow_gaps=True)
    core.connect()
    core.connection_opened()
    assert core.next_seq is None
    assert core.last_seq is None
    for seq in (4, 5):
        assert core.accept(stdout(seq)) is False
    core.connection_opened()
    assert core.check(stdout(8)) is NEW
    core.accept(stdout(8))
    assert (core.next_seq, core.last_seq, core.delivered) == (9, 8, 3)
    assert core.gaps == [SequenceGap(6, 7)]
    assert core.session_id == SID


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ("| 1 end", "the stream ended before the final event"),
        ("| 1 cut", "the stream ended in the middle of a line before the final event"),
        ("| 1 2 5", "events 3..4 were skipped; asking for a replay"),
    ],
)
def test_core_says_why_it_reconnects(script: str, reason: str) -> None:
    verdict = run(script)[-1]
    assert verdict == Reconnect(reason)


def test_core_warns_about_the_gaps_it_goes_past(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="enclave_stream"):
        assert drive("| 1 2 5 | 5", allow_gaps=True) == ["new", "new", "reconnect", "new"]
    assert caplog.messages == ["event stream: events 3..4 are missing; going on without them"]


@pytest.mark.parametrize(
    ("script", "options", "reason", "delivered", "last_seq"),
    [
        ("| 4 5 | 8", {}, "events 6..7 are missing", 2, 5),
        ("| 4 5 | long 8", {}, "line 3 was longer than max_line_bytes", 2, 5),
        ("| 4 5 6 | long end", {}, "line 3 was longer than max_line_bytes", 3, 6),
        ("| long end", {}, "line 3 was longer than max_line_bytes", 0, None),
        ("| 4 o5", {}, "an event of session 's_other' arrived", 1, 4),
        (
            "| e4 e5 6",
            {"refuse_plaintext": True},
            "a plaintext event on an encrypted stream: Plaintext stdout event (seq 6) "
            "on line 7 refused",
            2,
            5,
        ),
    ],
)
def test_core_failures_say_why_and_count_what_was_delivered(
    script: str, options: dict[str, object], reason: str, delivered: int, last_seq: int | None
) -> None:
    verdict = run(script, max_line_bytes=64, **options)[-1]
    assert isinstance(verdict, GiveUp)
    assert verdict.reason.startswith(reason)
    assert (verdict.error.events_delivered, verdict.error.last_seq) == (delivered, last_seq)  # type: ignore[attr-defined]
    if isinstance(verdict.error, LineTooLongError):
        assert (verdict.error.line, verdict.error.max_line_bytes) == (3, 64)


def test_core_without_max_line_bytes_reports_the_limit_as_0() -> None:
    verdict = run("| long end")[-1]
    assert isinstance(verdict, GiveUp)
    assert isinstance(verdict.error, LineTooLongError)
    assert verdict.error.max_line_bytes == 0


def test_core_uses_the_random_it_is_given_for_jitter() -> None:
    config = ReconnectionConfig(initial_delay_ms=1000, jitter_factor=0.5)
    for draw, delay in ((0.0, 0.5), (0.5, 1.0)):
        core = ResumeCore(config, random=lambda draw=draw: draw)
        core.connect()
        core.connection_opened()
        assert core.disconnected(Reconnect("x")) == delay


def test_core_retries_reset_on_the_first_new_event_of_a_connection() -> None:
    states: list[ConnectionState] = []
    core = ResumeCore(
        ReconnectionConfig(max_retries=2, initial_delay_ms=100, jitter=False),
        on_state=states.append,
    )
    core.connect()
    core.connection_opened()
    assert core.disconnected(Reconnect("refused")) == 0.1
    core.retry()
    core.connection_opened()
    assert core.disconnected(Reconnect("refused")) == 0.2  # connecting is no progress
    core.retry()
    core.connection_opened()
    core.accept(stdout(1))
    assert core.disconnected(Reconnect("dropped")) == 0.1  # a new event is
    core.retry()
    core.connection_opened()
    assert core.disconnected(Reconnect("x")) == 0.2
    core.retry()
    gave_up = core.disconnected(Reconnect("x", ValueError("cause")))
    assert isinstance(gave_up, GiveUp)
    assert str(gave_up.error).startswith("gave up after 2 retries: x")
    core.finish(gave_up)
    assert states[-1] is ConnectionState.FAILED


@pytest.mark.parametrize(
    ("initial_delay_ms", "retry_after", "delay"),
    [
        (0, None, 0.0),  # no backoff and no Retry-After: at once
        (0, 0, 0.0),
        (0, 0.25, 0.25),  # the server's wait when longer than the backoff
        (100, 0.05, 0.1),  # the backoff when longer
        (0, 3600, 2.0),  # never past max_delay_ms
    ],
)
def test_core_waits_for_the_longer_of_the_backoff_and_retry_after(
    initial_delay_ms: int, retry_after: float | None, delay: float
) -> None:
    config = ReconnectionConfig(initial_delay_ms=initial_delay_ms, max_delay_ms=2000, jitter=False)
    core = ResumeCore(config)
    core.connect()
    core.connection_opened()
    cause = RetryableConnectError("HTTP 503", status_code=503, retry_after=retry_after)
    assert core.disconnected(Reconnect("busy", cause)) == delay


@pytest.mark.parametrize(
    ("from_seq", "next_seq"),
    [(None, None), (0, None), (1, 1), (2, 2), (5, 5)],  # 0: the whole session, as None
)
def test_core_from_seq_asks_for_that_seq_first(from_seq: int | None, next_seq: int | None) -> None:
    core = ResumeCore(from_seq=from_seq)
    assert core.next_seq == next_seq
    assert core.last_seq == (None if next_seq is None else next_seq - 1)
    core.connect()
    core.connection_opened()
    first = 1 if next_seq is None else next_seq
    assert core.check(stdout(first)) is NEW
    if first > 1:
        assert core.check(stdout(first - 1)) is DROP  # already had: not delivered twice


@pytest.mark.parametrize(
    ("from_seq", "message"),
    [
        (1.5, "^from_seq must be an int, got 1.5$"),
        (True, "^from_seq must be an int, got True$"),
        (-1, "^from_seq must be >= 0, got -1$"),
    ],
)
def test_core_refuses_a_bad_from_seq_naming_it(from_seq: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ResumeCore(from_seq=from_seq)


@pytest.mark.parametrize("retry_after", [None, 0.5, 1.4, 1.5, 3600])
def test_a_retry_after_never_shortens_a_jittered_backoff_past_the_cap(
    retry_after: float | None,
) -> None:
    # The backoff is capped at 1 s, then jitter takes it to 1.4 s (as the reference does).
    config = ReconnectionConfig(initial_delay_ms=1000, max_delay_ms=1000, jitter_factor=0.5)
    core = ResumeCore(config, random=lambda: 0.9)
    core.connect()
    core.connection_opened()
    cause = RetryableConnectError("HTTP 429", retry_after=retry_after)
    assert core.disconnected(Reconnect("busy", cause)) == 1.4


@pytest.mark.parametrize(("max_retries", "shown"), [(None, "unlimited"), (3, "3")])
def test_core_logs_each_retry_with_its_attempt_and_the_retry_limit(
    max_retries: int | None, shown: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = ReconnectionConfig(max_retries=max_retries, initial_delay_ms=100, jitter=False)
    core = ResumeCore(config)
    core.connect()
    core.connection_opened()
    with caplog.at_level(logging.INFO, logger="enclave_stream"):
        core.disconnected(Reconnect("dropped"))
    assert [r.getMessage() for r in caplog.records] == [
        f"event stream: retrying in 0.1 s (attempt 1/{shown}): dropped"
    ]


# --- the fast path of ResumeCore equals the plain one


def _items(script: str) -> list[ParsedEvent | LineError]:
    kinds = {"o": "other", "f": "final", "e": "envelope"}
    return [
        TOO_LONG if step == "long" else _item(kinds.get(step[0], "plain"), int(step.lstrip("ofe")))
        for step in script.split()
    ]


@pytest.mark.parametrize(
    ("before", "items", "options", "taken"),
    [
        ("1", "2 3 4", {}, 3),
        ("1", "2 3 5 6", {}, 2),  # a hole needs a decision
        ("1", "2 2", {}, 1),  # so does a repeat
        ("1", "1 2", {}, 0),
        ("1", "2 o3 4", {}, 1),  # another session's event
        ("1", "2 f3", {}, 1),  # final ends the stream
        ("1", "2 e3", {}, 1),  # an envelope is opened first
        ("1", "2 long 3", {}, 1),  # a bad line
        ("", "1 2", {}, 0),  # nothing delivered: nothing pinned
        ("e1", "2 3", {"refuse_plaintext": True}, 0),  # plaintext on an encrypted stream
        ("e1", "e2 e3", {"refuse_plaintext": True}, 0),
    ],
)
def test_accept_in_order_takes_the_run_that_needs_no_decision(
    before: str, items: str, options: dict[str, object], taken: int
) -> None:
    core = ResumeCore(**options)  # type: ignore[arg-type]
    core.connect()
    core.connection_opened()
    for event in _items(before):
        assert core.check(event) is NEW  # type: ignore[arg-type]
        core.accept(event)  # type: ignore[arg-type]
    delivered = core.delivered
    assert core.accept_in_order(_items(items)) == taken
    assert core.delivered == delivered + taken
    if options.get("refuse_plaintext"):
        assert isinstance(core.check(stdout(2)), GiveUp)


def _item(kind: str, seq: int) -> ParsedEvent | LineError:
    if kind == "plain":
        return stdout(seq)
    if kind == "other":
        return stdout(seq, "s_other")
    if kind == "final":
        return FinalEvent(session_id=SID, seq=seq, payload=FinalPayload(ok=True))
    if kind == "envelope":
        return envelope(seq)
    return TOO_LONG


def _plain_path(core: ResumeCore, items: list[ParsedEvent | LineError]) -> list[object]:
    """check() then accept() of each item, as the client does with what is left of a run."""
    taken: list[object] = []
    for item in items:
        if isinstance(item, LineError):
            core.line_error(item)
            continue
        verdict = core.check(item)
        if verdict is DROP:
            continue
        if verdict is not NEW:
            taken.append(name(verdict))
            break
        taken.append(item)
        if core.accept(item):
            break
    return taken


@settings(max_examples=300, deadline=None)
@given(
    first=st.integers(0, 5),
    fresh=st.booleans(),
    allow_gaps=st.booleans(),
    refuse_plaintext=st.booleans(),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["plain", "plain", "plain", "other", "final", "envelope", "long"]),
            st.integers(-2, 3),
        ),
        max_size=12,
    ),
)
def test_accept_in_order_is_check_and_accept_of_each(
    first: int,
    fresh: bool,
    allow_gaps: bool,
    refuse_plaintext: bool,
    steps: list[tuple[str, int]],
) -> None:
    items: list[ParsedEvent | LineError] = []
    seq = first
    for kind, step in steps:
        seq = max(0, seq + step)  # mostly +1: runs, with repeats and holes
        items.append(_item(kind, seq))
    cores = []
    for _ in range(2):
        core = ResumeCore(allow_gaps=allow_gaps, refuse_plaintext=refuse_plaintext)
        core.connect()
        core.connection_opened()
        core.accept(stdout(first))
        if fresh:
            core.connection_opened()
        cores.append(core)
    plain, fast = cores
    expected = _plain_path(plain, items)
    run = fast.accept_in_order(items)
    got = [*items[:run], *_plain_path(fast, items[run:])]
    assert got == expected
    state = [
        (c.delivered, c.next_seq, c.session_id, c.gaps, c.machine.state, c.machine.retry_count)
        for c in cores
    ]
    assert state[0] == state[1]
