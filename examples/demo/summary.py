"""The demo's summary: what happened on the way, and whether every event arrived once.

:func:`summarize` turns the :class:`Outcome` of a run into the rows of the
summary table and the verdict. The verdict is OK only if the client
received exactly the server's events (each once, in order, byte for byte
the same JSON) and, encrypted, every line on the wire was an envelope and
the client's session opened each event.
"""

from __future__ import annotations

__all__ = ["Outcome", "Summary", "summarize"]

from collections.abc import Sequence
from dataclasses import dataclass

from enclave_stream import HeartbeatEvent, StreamEvent
from enclave_stream.reconnect.http import BrokerConnector

from .options import DemoOptions
from .tap import ConnectionReport, WireTap
from .verify import exactly_once_problems


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a finished run measured.

    Attributes:
        received: the events the client's loop received (decrypted).
        produced: the events in the server's log, in order.
        tap: the wire tap's counts.
        connector: the broker connector (its session, bytes and connections).
        cuts: the connections the proxy cut.
        reconnects: the client's transitions to ``reconnecting``.
        elapsed_s: the run's duration.
    """

    received: Sequence[StreamEvent]
    produced: Sequence[StreamEvent]
    tap: WireTap
    connector: BrokerConnector
    cuts: int
    reconnects: int
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class Summary:
    """The summary table's rows, the verdict line, and whether it is OK."""

    rows: list[tuple[str, str]]
    verdict: str
    ok: bool


def _problems(options: DemoOptions, outcome: Outcome) -> list[str]:
    problems = exactly_once_problems(outcome.received, outcome.produced)
    tap = outcome.tap
    if options.encrypt:
        if tap.sealed != tap.lines:
            problems.append(f"{tap.lines - tap.sealed} lines arrived unencrypted")
        session = outcome.connector.session
        last = outcome.produced[-1].seq if outcome.produced else None
        if session is None or session.last_seq != last:
            problems.append("the client's session did not open every event")
    elif tap.sealed:
        problems.append(f"{tap.sealed} lines arrived encrypted on a plaintext session")
    return problems


def _request(report: ConnectionReport, replay_all: bool) -> str:
    if report.number == 1:
        return "POST /sessions"
    if replay_all or report.wanted is None:
        return "GET (whole session)"
    return f"GET ?fromSeq={report.wanted}"


def _cuts(options: DemoOptions, outcome: Outcome) -> str:
    if not options.cuts:
        return "none (--no-cuts)"
    if not outcome.cuts:
        return "none (the session ended first)"
    lost = [report.fragment for report in outcome.tap.reports if report.fragment]
    if len(lost) != outcome.cuts:
        return f"{outcome.cuts} ({len(lost)} of them left the client half a line)"
    sizes = " and ".join(f"{size:,}" for size in lost)
    return f"{outcome.cuts}, mid-line: the client dropped the half lines ({sizes} bytes)"


def _duplicates(options: DemoOptions, tap: WireTap) -> str:
    if options.replay_all:
        return f"{tap.duplicates} sent again by the whole-session replays, dropped by the client"
    return f"{tap.duplicates} (each resume asked for fromSeq, so nothing was sent twice)"


def summarize(options: DemoOptions, outcome: Outcome) -> Summary:
    """The summary of a run: rows for the table, and the verdict."""
    received, produced, tap = outcome.received, outcome.produced, outcome.tap
    problems = _problems(options, outcome)
    last = produced[-1].seq if produced else 0
    sealed = " once decrypted" if options.encrypt else ""
    if problems:
        delivery = "NO (see below)"
    else:
        delivery = f"every seq once, in order; each the server's JSON byte for byte{sealed}"
    if options.encrypt:
        encryption = (
            f"{tap.sealed} AES-256-GCM envelopes on the wire; the handshake's signature "
            "matched the pinned key"
        )
    else:
        encryption = "off (--plain): plaintext NDJSON"
    requests = [_request(report, options.replay_all) for report in tap.reports]
    heartbeats = sum(1 for event in received if isinstance(event, HeartbeatEvent))
    rows = [
        ("events", f"{len(received)} received; the server's log holds {len(produced)} (1..{last})"),
        ("exactly once", delivery),
        ("encryption", encryption),
        ("connections", f"{len(requests)}: {', '.join(requests)}"),
        ("cuts", _cuts(options, outcome)),
        ("reconnects", str(outcome.reconnects)),
        ("duplicates", _duplicates(options, tap)),
        ("heartbeats", f"{heartbeats} (while the tool call ran)"),
        ("bytes", f"{outcome.connector.bytes_received:,} in {outcome.elapsed_s:.1f} s"),
    ]
    if problems:
        return Summary(rows, "FAILED: " + "; ".join(problems), ok=False)
    decrypted = " and decrypted" if options.encrypt else ""
    verdict = (
        f"OK: all {len(received)} events arrived exactly once, in order{decrypted} "
        f"({outcome.cuts} cuts, {outcome.reconnects} reconnects)."
    )
    return Summary(rows, verdict, ok=True)
