"""``enclave-stream validate``: check every line of a stream, then summarize it."""

from __future__ import annotations

__all__ = [
    "MAX_TRACKED_GAPS",
    "MissingFinal",
    "SeqIssue",
    "SeqStatus",
    "SessionStats",
    "Summary",
    "Validator",
    "format_summary",
    "run_validate",
]

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Literal, Union

from ..errors import LineError
from ..events import EncryptedEnvelope, FinalEvent
from ..protocol import EventType
from ..reconnect import SequenceTracker
from .format import clean, format_encoding_issue, format_line_error
from .output import ColorMode, Printer, Segment, make_printer, make_progress
from .source import EncodingIssue, Item, LineEvent, LineReader, open_input
from .stdio import StdIO

SeqStatus = Literal["ok", "gap", "duplicate", "out_of_order"]
"""What one ``seq`` number was: the next one, a jump, a repeat, or a late arrival."""

MAX_TRACKED_GAPS: Final = 10_000
"""Missing ranges remembered per session; later ones are counted but not listed."""


class SessionStats:
    """The ``seq`` record of one session, over a strict :class:`SequenceTracker`.

    Strict, because a validator must not miss a jump from a first 0, and
    should tell a repeated event from a late one that fills a gap.

    >>> s = SessionStats()
    >>> [s.receive(n) for n in (0, 1, 5, 3, 3, 2)]
    ['ok', 'ok', 'gap', 'out_of_order', 'duplicate', 'out_of_order']
    >>> s.missing, s.missing_count, s.gaps, s.duplicates, s.out_of_order
    ([(4, 4)], 1, 1, 1, 2)
    >>> [s.receive(n) for n in (9, 6)], s.missing
    (['gap', 'out_of_order'], [(4, 4), (7, 8)])
    """

    def __init__(self) -> None:
        self._tracker = SequenceTracker(MAX_TRACKED_GAPS, strict=True)
        self.events = 0
        self.first: int | None = None
        self.gaps = 0
        """Jumps forward (each reported once)."""
        self.duplicates = 0
        self.out_of_order = 0
        self.missing_count = 0
        """Numbers skipped and never seen later."""
        self.final = False
        """A ``final`` event was seen."""
        self.encrypted = False
        """An ``enc`` envelope was seen (its ``final`` may be inside one)."""

    @property
    def unfinished(self) -> bool:
        """No ``final`` is seen, and none can hide in an envelope: the capture stops early."""
        return not self.final and not self.encrypted

    @property
    def last(self) -> int | None:
        """The highest ``seq`` seen; None before any."""
        return None if self.first is None else self._tracker.last_seq

    @property
    def missing(self) -> list[tuple[int, int]]:
        """The ranges still missing (inclusive), lowest first."""
        return [(gap.start, gap.end) for gap in self._tracker.gaps]

    @property
    def missing_truncated(self) -> bool:
        """True when more ranges went missing than are listed."""
        return self._tracker.gaps_dropped > 0

    def receive(self, seq: int) -> SeqStatus:
        """Account for the next event's ``seq``."""
        self.events += 1
        if self.first is None:
            self.first = seq
        result = self._tracker.receive(seq)
        if result.gap:
            assert result.missing_start is not None
            assert result.missing_end is not None
            self.gaps += 1
            self.missing_count += result.missing_end - result.missing_start + 1
            return "gap"
        if result.late:
            self.out_of_order += 1
            self.missing_count -= 1
            return "out_of_order"
        if result.duplicate:
            self.duplicates += 1
            return "duplicate"
        return "ok"


@dataclass(frozen=True)
class SeqIssue:
    """An event whose ``seq`` is not the one after its session's last.

    Attributes:
        line: 1-based line number.
        session_id: the event's session.
        seq: its sequence number.
        previous: the session's highest sequence number before it.
        status: ``gap`` (``previous + 1 .. seq - 1`` skipped), ``duplicate``
            or ``out_of_order`` (a late event that fills an earlier gap).
    """

    line: int
    session_id: str
    seq: int
    previous: int
    status: SeqStatus

    def describe(self) -> str:
        """What is wrong, in words."""
        if self.status == "gap":
            missing = _range(self.previous + 1, self.seq - 1)
            return f"seq {self.seq} follows {self.previous}: {missing} missing"
        if self.status == "duplicate":
            return f"seq {self.seq} repeated (already at {self.previous})"
        return f"seq {self.seq} out of order (after {self.previous}; it was missing)"


@dataclass(frozen=True)
class MissingFinal:
    """A session that stops without its ``final`` event: a truncated capture.

    Every session ends with ``final``, so a stream cut short (a lost
    connection, a capture stopped early, a partial copy) is one without it.
    """

    session_id: str
    last: int
    """The session's highest ``seq``."""

    def describe(self) -> str:
        """What is wrong, in words."""
        return f"no final event after seq {self.last}: the stream stops early (truncated?)"


Issue = Union[LineError, EncodingIssue, SeqIssue, MissingFinal]
"""Anything ``validate`` reports."""


@dataclass
class Summary:
    """What ``validate`` found in a whole stream."""

    lines: int = 0
    bytes: int = 0
    event_types: Counter[str] = field(default_factory=Counter)
    bad_lines: Counter[str] = field(default_factory=Counter)
    """Bad lines by kind (``json``, ``validation``, ``line_too_long``)."""
    encoding_issues: int = 0
    sessions: dict[str, SessionStats] = field(default_factory=dict)
    gzip_bytes: int | None = None
    """The compressed size, when the input was gzip (``bytes`` counts it decompressed)."""
    damage: str | None = None
    """Why the (gzip) input could not be read to its end."""

    @property
    def events(self) -> int:
        """Valid events."""
        return sum(self.event_types.values())

    @property
    def problems(self) -> int:
        """Everything reported: bad lines, non-UTF-8 lines, gaps, duplicates, late
        events, sessions without ``final``, no events at all, unreadable gzip data."""
        sessions = self.sessions.values()
        seq = sum(s.gaps + s.duplicates + s.out_of_order + s.unfinished for s in sessions)
        whole = (self.events == 0) + (self.damage is not None)
        return sum(self.bad_lines.values()) + self.encoding_issues + seq + whole


class Validator:
    """Checks a stream item by item (sans-IO; :func:`run_validate` does the reading).

    >>> from enclave_stream import StdoutEvent

    >>> from enclave_stream.events import StdoutPayload
    >>> v = Validator()
    >>> def event(seq): return LineEvent(seq, StdoutEvent(session_id="s_1", seq=seq,
    ...                                   payload=StdoutPayload("x")))
    >>> [v.check(event(n)) for n in (1, 2)]
    [None, None]
    >>> v.check(event(5)).describe()
    'seq 5 follows 2: 3..4 missing'
    >>> [issue.describe() for issue in v.finish()]  # at the end of input
    ['no final event after seq 5: the stream stops early (truncated?)']
    >>> v.summary.problems  # the gap, and the missing final
    2
    """

    def __init__(self) -> None:
        self.summary = Summary()

    def check(self, item: Item) -> Issue | None:
        """Account for one item; returns what is wrong with it, if anything."""
        if isinstance(item, LineEvent):
            return self._event(item)
        if isinstance(item, EncodingIssue):
            self.summary.encoding_issues += 1
        else:
            self.summary.bad_lines[item.kind] += 1
        return item

    def _event(self, item: LineEvent) -> SeqIssue | None:
        event = item.event
        self.summary.event_types[event.type] += 1  # a str enum: counts under its value
        sessions = self.summary.sessions
        session = sessions.get(event.session_id)
        if session is None:
            session = sessions[event.session_id] = SessionStats()
        previous = session.last
        status = session.receive(event.seq)
        if isinstance(event, FinalEvent):
            session.final = True
        elif isinstance(event, EncryptedEnvelope):
            session.encrypted = True
        if status == "ok" or previous is None:
            return None
        return SeqIssue(item.line, event.session_id, event.seq, previous, status)

    def finish(self) -> list[MissingFinal]:
        """End of input: the sessions that stop without their ``final``."""
        return [
            MissingFinal(session_id, stats.last)
            for session_id, stats in self.summary.sessions.items()
            if stats.unfinished and stats.last is not None
        ]


def _range(start: int, end: int) -> str:
    return str(start) if start == end else f"{start}..{end}"


def _size(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{nbytes} bytes" if unit == "bytes" else f"{value:.1f} {unit} ({nbytes} bytes)"
        value /= 1024
    raise AssertionError("unreachable")


def format_issue(issue: Issue) -> list[Segment]:
    """One report line (two for a bad line: the report and the line's start)."""
    if isinstance(issue, LineError):
        return format_line_error(issue)
    if isinstance(issue, EncodingIssue):
        return format_encoding_issue(issue)
    where = "end of input: " if isinstance(issue, MissingFinal) else f"line {issue.line}: "
    return [
        (where, "bold"),
        (f"{clean(issue.session_id)}: ", "yellow"),
        (issue.describe(), "red"),
    ]


def _session_line(session_id: str, s: SessionStats) -> list[Segment]:
    missing = ", ".join(_range(a, b) for a, b in s.missing[:10])
    if len(s.missing) > 10 or s.missing_truncated:
        missing += ", ..."
    gaps = f"gaps {s.gaps}"
    if s.missing_count:
        gaps += f" ({s.missing_count} missing: {missing})"
    bad = s.gaps or s.duplicates or s.out_of_order
    line = [
        (f"  {clean(session_id)}: ", "bold"),
        (f"{s.events} events, seq {s.first}..{s.last}; ", ""),
        (
            f"{gaps}, duplicates {s.duplicates}, out of order {s.out_of_order}",
            "red" if bad else "green",
        ),
    ]
    if s.unfinished:
        line.append(("; no final event (truncated)", "red"))
    elif not s.final:
        line.append(("; encrypted (decrypt it to check its final event)", ""))
    return line


def _no_events(summary: Summary) -> str:
    if summary.bytes == 0:
        return "the input is empty"
    if not summary.bad_lines and not summary.encoding_issues:
        return "the input holds only blank lines"
    return "no line holds a valid event"


def format_summary(summary: Summary, name: str) -> list[list[Segment]]:
    """The summary lines printed after the reports.

    >>> for line in format_summary(Summary(lines=2, bytes=2, gzip_bytes=22), "x.ndjson.gz"):
    ...     print("".join(text for text, _ in line))
    x.ndjson.gz: 2 lines, 2 bytes (gzip, 22 bytes compressed)
    events: 0
    bad lines: 0
    no events: the input holds only blank lines
    FAILED: 1 problem found
    """
    size = f"{summary.lines} lines, {_size(summary.bytes)}"
    if summary.gzip_bytes is not None:
        size += f" (gzip, {_size(summary.gzip_bytes)} compressed)"
    out: list[list[Segment]] = [
        [(f"{clean(name)}: ", "bold"), (size, "")],
        [("events: ", "bold"), (str(summary.events), "")],
    ]
    width = max((len(kind) for kind in summary.event_types), default=0)
    out.extend(
        [(f"  {kind.ljust(width)} {summary.event_types[kind]:>8}", "")]
        for kind in (t.value for t in EventType)
        if kind in summary.event_types
    )
    bad = sum(summary.bad_lines.values())
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(summary.bad_lines.items()))
    bad_text: Segment = (f"{bad} ({kinds})", "red") if bad else ("0", "")
    out.append([("bad lines: ", "bold"), bad_text])
    if summary.encoding_issues:
        out.append([("invalid UTF-8: ", "bold"), (f"{summary.encoding_issues} lines", "red")])
    if summary.sessions:
        out.append([("sessions: ", "bold"), (str(len(summary.sessions)), "")])
        out.extend(_session_line(sid, s) for sid, s in summary.sessions.items())
    if not summary.events:
        out.append([("no events: ", "bold"), (_no_events(summary), "red")])
    if summary.damage is not None:
        out.append([("gzip: ", "bold"), (summary.damage, "red")])
    problems = summary.problems
    if problems:
        out.append([(f"FAILED: {problems} problem{'s' * (problems != 1)} found", "bold red")])
    else:
        out.append([("OK: no problems found", "bold green")])
    return out


def run_validate(
    stdio: StdIO, path: str, *, color: ColorMode, quiet: bool, max_line_bytes: int
) -> int:
    """Validate ``path`` (``-``: stdin); reports and summary on stdout. Returns the exit status.

    ``quiet`` prints the summary only: no report lines, no progress bar.
    An input that is not NDJSON (a JSON array, server-sent events) is named
    as such, and not read line by line.
    """
    out = make_printer(stdio.stdout, color)
    validator = Validator()
    reader = LineReader(max_line_bytes=max_line_bytes, check_utf8=True)
    with open_input(path, stdio.stdin) as source:
        if source.not_ndjson is not None:
            out.print((f"{clean(source.name)}: ", "bold"), (source.not_ndjson, "red"))
            out.print(("FAILED: the input is not NDJSON", "bold red"))
            return 1
        printers = () if quiet else (out, make_printer(stdio.stderr, color))
        progress = make_progress(printers, source.size, "validating")
        try:
            for items in reader.read(source.chunks()):
                progress.update(source.bytes_read)
                _report(out, map(validator.check, items), quiet)
        finally:
            progress.close()
    _report(out, validator.finish(), quiet)
    summary = validator.summary
    summary.lines = reader.lines
    summary.bytes = reader.bytes_read
    summary.gzip_bytes = source.bytes_read if source.gzip else None
    summary.damage = source.damage
    for line in format_summary(summary, source.name):
        out.print(*line)
    return 1 if summary.problems else 0


def _report(out: Printer, issues: Iterable[Issue | None], quiet: bool) -> None:
    for issue in issues:  # checked even when quiet: the summary counts them
        if issue is not None and not quiet:
            out.print(*format_issue(issue))
