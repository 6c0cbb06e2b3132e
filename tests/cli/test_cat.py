"""``enclave-stream cat``: the readable view, the filters, and normalized NDJSON."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave_stream import (
    LogEvent,
    LogLevel,
    ParsedEvent,
    StdoutEvent,
    parse_lines,
    serialize_events,
)
from enclave_stream.events import LogPayload, StdoutPayload
from tests.cli.helpers import (
    KEY_HEX,
    OTHER_SID,
    SID,
    cli,
    cli_inprocess,
    encrypted,
    ndjson,
    session,
    write,
)
from tests.strategies import any_event

HAVE_RICH = importlib.util.find_spec("rich") is not None


def test_the_readable_view(tmp_path: Path) -> None:
    path = write(tmp_path / "s.ndjson", ndjson(session()))

    result = cli("cat", path)

    assert result.status == 0, result.stderr
    assert result.stderr == ""
    assert result.out.splitlines() == [
        f"── session {SID} ──",
        "#1 session_init  expires=2025-03-01T12:00:00Z encryption=on (k_1)"
        " cancel=https://broker/cancel",
        '#2 stdout  "hello\\n"',
        '#3 log[info]  searching {"n":1}',
        '#4 tool_call  web.search(c_1) {"q":"café"}',
        "#5 tool_result_applied  c_1",
        '#6 final  ok=true result={"answer":42} (12ms, 1 tool call, 6 stdout bytes)',
    ]


def test_filters_by_type_and_session(tmp_path: Path) -> None:
    path = write(tmp_path / "s.ndjson", ndjson(session()) + ndjson(session(OTHER_SID, 10)))

    by_type = cli_inprocess("cat", path, "--type", "stdout", "--type", "final")
    by_session = cli_inprocess("cat", path, "--session", OTHER_SID, "--type", "log")

    assert by_type.status == 0
    assert [line.split("  ")[0] for line in by_type.out.splitlines()] == [
        f"── session {SID} ──",
        "#2 stdout",
        "#6 final",
        f"── session {OTHER_SID} ──",
        "#11 stdout",
        "#15 final",
    ]
    assert by_session.out.splitlines() == [
        f"── session {OTHER_SID} ──",
        '#12 log[info]  searching {"n":1}',
    ]


def test_json_output_is_the_input_for_reference_written_streams(tmp_path: Path) -> None:
    data = ndjson(session()) + ndjson(session(OTHER_SID))
    path = write(tmp_path / "s.ndjson", data)

    result = cli("cat", "--json", path)

    assert result.status == 0
    assert result.stdout == data
    reparsed = parse_lines(result.stdout)
    assert reparsed.errors == []
    assert (serialize_events(reparsed.events) + "\n").encode() == result.stdout


def test_json_output_is_normalized(tmp_path: Path) -> None:
    messy = (
        b'\xef\xbb\xbf  {"seq":1,"type":"stdout","sessionId":"s_1","protocolVersion":2.0,'
        b'"payload":{"chunk":"a","extra":1},"unknown":true}\r\n'
        b"\n"
        b'{"protocolVersion":2,"sessionId":"s_1","seq":2,"type":"stdout","payload":{"chunk":"b"}}'
    )
    result = cli_inprocess("cat", "--json", write(tmp_path / "m.ndjson", messy))

    assert result.status == 0
    assert result.stdout == (
        b'{"protocolVersion":2,"sessionId":"s_1","seq":1,"type":"stdout","payload":{"chunk":"a"}}\n'
        b'{"protocolVersion":2,"sessionId":"s_1","seq":2,"type":"stdout","payload":{"chunk":"b"}}\n'
    )


@settings(max_examples=30, deadline=None)
@given(st.lists(any_event, max_size=8))
def test_json_output_round_trips_any_valid_stream(events: list[ParsedEvent]) -> None:
    data = ndjson(events)

    result = cli_inprocess("cat", "--json", "-", stdin=data)

    assert result.status == 0
    assert result.stdout == data
    assert parse_lines(result.stdout).events == parse_lines(data).events


def test_bad_lines_go_to_stderr_and_the_rest_is_shown(tmp_path: Path) -> None:
    events = session()
    data = ndjson(events[:2]) + b"not json\n" + ndjson(events[2:3])

    result = cli("cat", write(tmp_path / "s.ndjson", data))

    assert result.status == 1
    assert [line.split("  ")[0] for line in result.out.splitlines()] == [
        f"── session {SID} ──",
        "#1 session_init",
        "#2 stdout",
        "#3 log[info]",
    ]
    assert result.stderr.splitlines() == [
        f"line 3 (byte {len(ndjson(events[:2]))}): JSON parse error: Expecting value (position 0)",
        "    not json",
    ]


def test_reads_stdin(tmp_path: Path) -> None:
    result = cli("cat", "-", "--type", "tool_call", stdin=ndjson(session()))

    assert result.status == 0
    assert result.out.splitlines()[1] == '#4 tool_call  web.search(c_1) {"q":"café"}'


def test_control_characters_in_the_stream_cannot_reach_the_terminal(tmp_path: Path) -> None:
    nasty = ndjson(session())
    nasty = nasty.replace(b"searching", b"\\u001b[2J\\u009b31m\\u202eevil\\r")
    result = cli_inprocess("cat", write(tmp_path / "s.ndjson", nasty))

    assert result.status == 0
    assert "#3 log[info]  \\u001b[2J\\u009b31m\\u202eevil\\r" in result.out
    assert not any(c in result.out for c in "\x1b\x9b\u202e\r")


@pytest.mark.skipif(not HAVE_RICH, reason="colours need the optional rich package")
def test_color_always_colours_even_when_piped(tmp_path: Path) -> None:
    path = write(tmp_path / "s.ndjson", ndjson(session()))

    coloured = cli_inprocess("cat", "--color", "always", path)

    assert "\x1b[32mstdout\x1b[0m" in coloured.out
    assert "\x1b" not in cli_inprocess("cat", "--color", "never", path).out
    assert "\x1b" not in cli_inprocess("cat", "--color", "auto", path).out  # not a terminal


def test_unknown_type_is_a_usage_error(tmp_path: Path) -> None:
    result = cli("cat", "--type", "nope", write(tmp_path / "s.ndjson", b""))

    assert result.status == 2
    assert "invalid choice: 'nope'" in result.stderr


# What a program may write: several lines, no final newline, CRLF, escape
# codes (written as they are: --raw is the program's bytes, not a view), and
# characters of every UTF-8 length.
OUTPUT = ["hello\n", "wor", "ld\r\n", "\x1b[31mred\x1b[0m\t", "café ✓ 😀", "", "no newline"]


def _program(chunks: list[str], sid: str = SID) -> list[ParsedEvent]:
    """A session writing ``chunks`` to stdout, with log events in between."""
    events: list[ParsedEvent] = []
    for chunk in chunks:
        payload = LogPayload(level=LogLevel.INFO, message="tick")
        events.append(LogEvent(session_id=sid, seq=len(events) + 1, payload=payload))
        events.append(
            StdoutEvent(session_id=sid, seq=len(events) + 1, payload=StdoutPayload(chunk))
        )
    return events + session(sid, first_seq=len(events) + 1)[-1:]


def test_raw_rebuilds_the_programs_stdout_byte_for_byte(tmp_path: Path) -> None:
    path = write(tmp_path / "s.ndjson", ndjson(_program(OUTPUT)))

    result = cli("cat", path, "--raw")  # a real process: its stdout bytes, no text layer

    assert result.status == 0
    assert result.stderr == ""
    assert result.stdout == "".join(OUTPUT).encode("utf-8")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(), max_size=8))
def test_raw_output_is_the_chunks_concatenated(chunks: list[str]) -> None:
    result = cli_inprocess("cat", "-", "--raw", stdin=ndjson(_program(chunks)))

    assert result.status == 0
    assert result.stdout == "".join(chunks).encode("utf-8")


def test_raw_writes_a_lone_surrogate_as_node_does(tmp_path: Path) -> None:
    # JSON may hold half of a surrogate pair; Node.js writes U+FFFD for it.
    line = ndjson(_program(["a"]))
    data = line.replace(b'"chunk":"a"', b'"chunk":"a\\ud83d|\\ude00b"')

    result = cli_inprocess("cat", write(tmp_path / "s.ndjson", data), "--raw")

    assert result.status == 0
    assert result.stdout == "a\ufffd|\ufffdb".encode()


def test_raw_output_of_an_encrypted_capture_comes_after_decrypt(tmp_path: Path) -> None:
    path = write(tmp_path / "enc.ndjson", ndjson(encrypted(_program(OUTPUT))))

    decrypted = cli_inprocess("decrypt", path, "--key", KEY_HEX)
    result = cli_inprocess("cat", "-", "--raw", stdin=decrypted.stdout)
    sealed = cli_inprocess("cat", path, "--raw")

    assert decrypted.status == result.status == 0
    assert result.stdout == "".join(OUTPUT).encode("utf-8")
    # Undecrypted, there is no output to show: said once, not once per line.
    assert sealed.status == 1
    assert sealed.stdout == b""
    [report] = sealed.stderr.splitlines()
    assert report.startswith(f"line 1: {SID} seq 1: encrypted: decrypt the stream first")


def test_raw_shows_one_session(tmp_path: Path) -> None:
    first, other = _program(["a\n", "b\n"]), _program(["X\n", "Y\n"], OTHER_SID)
    mixed = [event for pair in zip(first, other, strict=True) for event in pair]
    path = write(tmp_path / "two.ndjson", ndjson(mixed))

    chosen = cli_inprocess("cat", path, "--raw", "--session", OTHER_SID)
    unchosen = cli_inprocess("cat", path, "--raw")

    assert chosen.status == 0
    assert chosen.stdout == b"X\nY\n"
    assert chosen.stderr == ""
    # Two programs' output interleaved is neither's: the first session's is kept.
    assert unchosen.status == 1
    assert unchosen.stdout == b"a\nb\n"
    [report] = unchosen.stderr.splitlines()
    assert report == (
        f"line 4: {OTHER_SID} seq 2: output of another session than {SID}, left out "
        "(choose one with --session)"
    )


def test_raw_reports_a_bad_line_and_keeps_the_rest(tmp_path: Path) -> None:
    events = _program(["one\n", "two\n"])
    data = ndjson(events[:2]) + b"{oops\n" + ndjson(events[2:])

    result = cli_inprocess("cat", write(tmp_path / "s.ndjson", data), "--raw")

    assert result.status == 1
    assert result.stdout == b"one\ntwo\n"
    assert result.stderr.startswith("line 3 (byte")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--raw", "--json"], "not allowed with argument"),
        (["--raw", "--type", "log"], "--raw shows stdout events only; --type does not apply"),
    ],
)
def test_raw_does_not_combine_with_json_or_type(
    tmp_path: Path, options: list[str], message: str
) -> None:
    result = cli("cat", write(tmp_path / "s.ndjson", ndjson(session())), *options)

    assert result.status == 2
    assert result.stdout == b""
    assert message in result.stderr
