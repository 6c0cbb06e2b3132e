"""The demo's proof: the client received exactly what the server produced, once each.

>>> from enclave_stream import StdoutEvent

>>> from enclave_stream.events import StdoutPayload
>>> produced = [StdoutEvent("s_1", seq, StdoutPayload(f"line {seq}")) for seq in (1, 2, 3)]
>>> exactly_once_problems(produced, produced)
[]
>>> exactly_once_problems([produced[0], produced[2], produced[2]], produced)
['seq 3 arrived 2 times', 'missing: seq 2', 'out of order: seq 3 after seq 3']
"""

from __future__ import annotations

__all__ = ["exactly_once_problems", "seq_ranges"]

from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import pairwise

from enclave_stream import EncryptedEnvelope, StreamEvent, serialize_event

# Problems of one kind listed before the rest are summed up.
_MAX_LISTED = 5


def seq_ranges(seqs: Iterable[int]) -> str:
    """Sequence numbers as short ranges.

    >>> seq_ranges([7, 1, 2, 3, 9, 10])
    '1..3, 7, 9..10'
    """
    parts: list[str] = []
    run: list[int] = []
    for seq in sorted(set(seqs)):
        if run and seq != run[-1] + 1:
            parts.append(_range(run))
            run = []
        run.append(seq)
    if run:
        parts.append(_range(run))
    return ", ".join(parts)


def _range(run: list[int]) -> str:
    return str(run[0]) if len(run) == 1 else f"{run[0]}..{run[-1]}"


def _listed(problems: list[str]) -> list[str]:
    if len(problems) <= _MAX_LISTED:
        return problems
    return [*problems[:_MAX_LISTED], f"... and {len(problems) - _MAX_LISTED} more"]


def exactly_once_problems(
    received: Sequence[StreamEvent], produced: Sequence[StreamEvent]
) -> list[str]:
    """What is wrong with ``received`` as a copy of ``produced``; empty when nothing is.

    ``received`` must hold each produced event exactly once, in order, as
    plaintext, and encode to the same bytes (the same JSON the server
    encoded, sealed or not).
    """
    problems: list[str] = []
    counts = Counter(event.seq for event in received)
    problems += _listed(
        [f"seq {seq} arrived {count} times" for seq, count in sorted(counts.items()) if count > 1]
    )
    by_seq = {event.seq: event for event in produced}
    missing = by_seq.keys() - counts.keys()
    if missing:
        problems.append(f"missing: seq {seq_ranges(missing)}")
    unexpected = counts.keys() - by_seq.keys()
    if unexpected:
        problems.append(f"not produced by the server: seq {seq_ranges(unexpected)}")
    problems += _listed(
        [
            f"out of order: seq {event.seq} after seq {before.seq}"
            for before, event in pairwise(received)
            if event.seq <= before.seq
        ]
    )
    problems += _listed(
        [
            f"seq {event.seq} arrived still encrypted"
            for event in received
            if isinstance(event, EncryptedEnvelope)
        ]
    )
    problems += _listed(
        [
            f"seq {event.seq} differs from the event the server produced"
            for event in received
            if event.seq in by_seq
            and not isinstance(event, EncryptedEnvelope)
            and serialize_event(event) != serialize_event(by_seq[event.seq])
        ]
    )
    return problems
