"""The formatting helpers: one readable line per event, bad-line reports, the summary."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings

from enclave_stream import EventType, FinalEvent, LineError, ParsedEvent, StdoutEvent, parse_lines
from enclave_stream.cli.format import clean, format_event, format_line_error, plain
from enclave_stream.cli.source import LineEvent
from enclave_stream.cli.validate import (
    MissingFinal,
    SeqIssue,
    SessionStats,
    Summary,
    Validator,
    format_summary,
)
from enclave_stream.events import ErrorInfo, ErrorPayload, FinalPayload, StdoutPayload
from tests.strategies import SAMPLE_EVENTS, any_event

UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")

EXPECTED = {
    EventType.SESSION_INIT: "#0 session_init  expires=2025-03-01T12:00:00Z encryption=on (k_1)"
    " cancel=https://x/cancel replay=https://x/replay",
    EventType.STDOUT: '#1 stdout  "hi"',
    EventType.LOG: '#2 log[warn]  m {"k":[1,null]}',
    EventType.TOOL_CALL: '#3 tool_call  web.search(c_1) {"q":"x"}',
    EventType.TOOL_RESULT_APPLIED: "#4 tool_result_applied  c_1",
    EventType.FINAL: "#5 final  ok=true result=42",
    EventType.HEARTBEAT: "#6 heartbeat  2025-03-01T12:00:00.123Z",
    EventType.ERROR: "#7 error[E1]  boom (recoverable)",
    EventType.PARTIAL_RESULT: '#8 partial_result  ["a","b"] data=[1.5] (more to come)',
    EventType.TOOL_PROGRESS: "#9 tool_progress  c_1 receiving 10/20 bytes 3ms",
    EventType.DEADLINE_EXCEEDED: "#10 deadline_exceeded  after 1500ms (budget 1000ms)",
    EventType.CATALOG_CHANGED: '#11 catalog_changed  version v2 +["a"] -[]',
    EventType.ENCRYPTED: "#12 enc  kid=k_1 (2-byte ciphertext)",
}


@pytest.mark.parametrize("kind", list(EventType), ids=str)
def test_each_type_has_a_readable_line(kind: EventType) -> None:
    assert plain(format_event(SAMPLE_EVENTS[kind])) == EXPECTED[kind]


def test_a_failed_final_shows_its_errors() -> None:
    payload = FinalPayload(
        ok=False,
        error=ErrorInfo(message="took too long", code="E_TIMEOUT"),
        errors=[ErrorPayload(code="QUOTA", message="over quota")],
    )

    line = plain(format_event(FinalEvent(session_id="s_1", seq=9, payload=payload)))

    assert line == "#9 final  ok=false error=[E_TIMEOUT] took too long errors[0]=[QUOTA] over quota"


@settings(max_examples=150, deadline=None)
@given(any_event)
def test_any_event_gives_one_safe_line(event: ParsedEvent) -> None:
    text = plain(format_event(event))

    assert text.startswith(f"#{event.seq} ")
    assert UNSAFE.search(text) is None  # no newline, no escape, no bidi override
    text.encode("utf-8")  # no lone surrogate either


def test_clean_escapes_what_a_terminal_would_act_on() -> None:
    assert clean("a\nb\tc\r") == "a\\nb\\tc\\r"
    assert clean("\x1b[31m\x9b\x7f") == "\\u001b[31m\\u009b\\u007f"
    assert clean("\u202eevil\u2066\u2028") == "\\u202eevil\\u2066\\u2028"
    assert clean("\ud800") == "\\ud800"
    assert clean("café 😀 世界") == "café 😀 世界"


def test_a_bad_line_report_names_line_offset_path_and_reason() -> None:
    [error] = parse_lines(
        b'{"protocolVersion":2,"sessionId":"s_1","seq":1,"type":"tool_call",'
        b'"payload":{"callId":"x_1","toolName":"t"}}'
    ).errors
    error = LineError(error.line, error.error, error.content, error.kind, error.path, 1234)

    assert plain(format_line_error(error)).splitlines() == [
        "line 1 (byte 1234): $.payload.callId: Validation error: Expected a call id"
        " (a string starting with 'c_'), got 'x_1'",
        '    {"protocolVersion":2,"sessionId":"s_1","seq":1,"type":"tool_call",'
        '"payload":{"callId":"x_1","toolNam...',  # cut at 100 characters, as the reference
    ]


def test_a_bad_line_with_control_characters_is_shown_escaped() -> None:
    error = LineError(3, "JSON parse error: x", "\x1b[2J{")

    assert plain(format_line_error(error)) == "line 3: JSON parse error: x\n    \\u001b[2J{"


def _line(seq: int, line: int, sid: str = "s_1") -> LineEvent:
    return LineEvent(line, StdoutEvent(session_id=sid, seq=seq, payload=StdoutPayload("x")))


def test_validator_reports_each_sequence_problem_once() -> None:
    validator = Validator()
    items = [_line(1, 1), _line(4, 2), _line(4, 3), _line(2, 4), _line(1, 5, "s_2")]

    issues = [validator.check(item) for item in items]

    assert issues == [
        None,
        SeqIssue(2, "s_1", 4, 1, "gap"),
        SeqIssue(3, "s_1", 4, 4, "duplicate"),
        SeqIssue(4, "s_1", 2, 4, "out_of_order"),
        None,
    ]
    assert [i.describe() for i in issues if isinstance(i, SeqIssue)] == [
        "seq 4 follows 1: 2..3 missing",
        "seq 4 repeated (already at 4)",
        "seq 2 out of order (after 4; it was missing)",
    ]
    assert validator.summary.sessions["s_1"].missing == [(3, 3)]
    # Neither session has its final event: the end of input reports both.
    assert validator.finish() == [MissingFinal("s_1", 4), MissingFinal("s_2", 1)]
    assert validator.summary.problems == 5


def test_the_summary_lists_types_bad_lines_and_sessions() -> None:
    summary = Summary(lines=9, bytes=5 * 1024 * 1024 + 1)
    summary.event_types.update({"final": 1, "stdout": 5})
    summary.bad_lines.update({"json": 2})
    summary.encoding_issues = 1
    seq = summary.sessions["s_1"] = SessionStats()
    for n in (1, 2, 5, 9, 9, 3):
        seq.receive(n)
    seq.final = True

    lines = ["".join(t for t, _ in line) for line in format_summary(summary, "x\x1b.ndjson")]

    assert lines == [
        "x\\u001b.ndjson: 9 lines, 5.0 MiB (5242881 bytes)",
        "events: 6",
        "  stdout        5",
        "  final         1",
        "bad lines: 2 (json 2)",
        "invalid UTF-8: 1 lines",
        "sessions: 1",
        "  s_1: 6 events, seq 1..9; gaps 2 (4 missing: 4, 6..8), duplicates 1, out of order 1",
        "FAILED: 7 problems found",
    ]


def test_many_missing_ranges_are_cut_short_in_the_summary() -> None:
    summary = Summary()
    seq = summary.sessions["s_1"] = SessionStats()
    for n in range(0, 40, 3):
        seq.receive(n)

    [session_line] = [
        "".join(t for t, _ in line)
        for line in format_summary(summary, "x")
        if line[0][0].startswith("  s_1")
    ]

    assert "gaps 13 (26 missing: 1..2, 4..5," in session_line
    assert "28..29, ..." in session_line
