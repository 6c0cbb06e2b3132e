"""SequenceTracker: duplicates, gaps, validation, and the dedupe property.

The reference traces are checked in tests/conformance/test_reconnect_vectors.py.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from enclave_stream.reconnect import ReceiveResult, SequenceGap, SequenceTracker


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


def test_reset_forgets_what_was_received() -> None:
    tracker = SequenceTracker()
    tracker.receive(5)
    tracker.receive(9)
    tracker.reset()
    assert (tracker.last_seq, tracker.gaps) == (0, [])
    assert not tracker.receive(3).duplicate
    assert tracker.last_seq == 3


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


@pytest.mark.parametrize("max_gaps", [-1, 2.0, False])
def test_max_gaps_is_validated(max_gaps: object) -> None:
    with pytest.raises(ValueError, match="max_gaps"):
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
