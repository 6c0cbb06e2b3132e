"""``enclave-stream validate``: every problem reported with where and why, then a summary."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enclave_stream import DEFAULT_MAX_LINE_BYTES, StdoutEvent
from enclave_stream.events import StdoutPayload
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


def test_a_good_stream_passes_with_a_summary(tmp_path: Path) -> None:
    data = ndjson(session()) + ndjson(session(OTHER_SID, first_seq=0))
    path = write(tmp_path / "good.ndjson", data)

    result = cli("validate", path)

    assert result.status == 0, result.stderr
    assert result.stderr == ""
    lines = result.out.splitlines()
    assert lines[0] == f"{path}: 12 lines, {len(data) / 1024:.1f} KiB ({len(data)} bytes)"
    assert lines[1] == "events: 12"
    counts = {line.split()[0]: int(line.split()[1]) for line in lines[2:8]}
    assert counts == {
        "session_init": 2,
        "stdout": 2,
        "log": 2,
        "tool_call": 2,
        "tool_result_applied": 2,
        "final": 2,
    }
    assert "bad lines: 0" in lines
    assert "sessions: 2" in lines
    assert f"  {SID}: 6 events, seq 1..6; gaps 0, duplicates 0, out of order 0" in lines
    assert f"  {OTHER_SID}: 6 events, seq 0..5; gaps 0, duplicates 0, out of order 0" in lines
    assert lines[-1] == "OK: no problems found"
    assert "\x1b" not in result.out  # piped: no escape codes


def _event(seq: int) -> bytes:
    return ndjson([StdoutEvent(session_id=SID, seq=seq, payload=StdoutPayload(f"line {seq}"))])


def test_every_kind_of_problem_is_reported_with_line_and_reason(tmp_path: Path) -> None:
    too_long = b'{"protocolVersion":2,"chunk":"' + b"x" * (DEFAULT_MAX_LINE_BYTES + 10) + b'"}\n'
    parts = [
        _event(1),  # line 1
        _event(2),  # line 2
        b"\n",  # line 3: blank, fine
        b"{oops\n",  # line 4: not JSON
        _event(2),  # line 5: duplicate
        _event(5),  # line 6: gap 3..4
        _event(3),  # line 7: fills part of the gap
        _event(6).replace(b'"seq":6', b'"seq":"6"'),  # line 8: $.seq wrong type
        _event(6).replace(b"line 6", b"line \xff 6"),  # line 9: invalid UTF-8, still an event
        too_long,  # line 10: over the 16 MiB limit
        _event(7)[:-1],  # line 11, no final newline
    ]
    path = write(tmp_path / "bad.ndjson", b"".join(parts))
    offset_4 = sum(len(p) for p in parts[:3])
    offset_8 = sum(len(p) for p in parts[:7])
    offset_9 = sum(len(p) for p in parts[:8]) + parts[8].index(b"\xff")

    result = cli("validate", path)

    assert result.status == 1
    out = result.out.splitlines()
    expected_reports = [
        f"line 4 (byte {offset_4}): JSON parse error: Expecting property name enclosed in "
        "double quotes (position 1)",
        "    {oops",
        f"line 5: {SID}: seq 2 repeated (already at 2)",
        f"line 6: {SID}: seq 5 follows 2: 3..4 missing",
        f"line 7: {SID}: seq 3 out of order (after 5; it was missing)",
        f"line 8 (byte {offset_8}): $.seq: Validation error: Expected `int`, got `str`",
        f"line 9 (byte {offset_9}): invalid UTF-8 (invalid start byte: ff)",
        f"end of input: {SID}: no final event after seq 7: the stream stops early (truncated?)",
    ]
    for report in expected_reports:
        assert report in out, f"{report!r} missing from:\n{result.out}"
    assert not any(line.startswith(("line 9: ", "line 11")) for line in out)  # 6, 7 follow 5
    [long_report] = [line for line in out if line.startswith("line 10 ")]
    assert f"Line too long: more than {DEFAULT_MAX_LINE_BYTES} bytes without a newline" in (
        long_report
    )
    assert "bad lines: 3 (json 1, line_too_long 1, validation 1)" in out
    assert "invalid UTF-8: 1 lines" in out
    assert (
        f"  {SID}: 7 events, seq 1..7; gaps 1 (1 missing: 4), duplicates 1, out of order 1; "
        "no final event (truncated)"
    ) in out
    assert out[-1] == "FAILED: 8 problems found"
    assert f"{path}: 11 lines, {len(Path(path).read_bytes()) / 2**20:.1f} MiB" in result.out


def test_stdin_gives_the_same_report(tmp_path: Path) -> None:
    data = _event(1) + _event(3) + b"[1]\n"
    from_file = cli_inprocess("validate", write(tmp_path / "s.ndjson", data))

    from_stdin = cli("validate", "-", stdin=data)

    assert from_stdin.status == from_file.status == 1
    assert from_stdin.out == from_file.out.replace(str(tmp_path / "s.ndjson"), "<stdin>")
    assert "<stdin>: 3 lines, 260 bytes" in from_stdin.out
    assert f"line 2: {SID}: seq 3 follows 1: 2 missing" in from_stdin.out
    assert "line 3 (byte" in from_stdin.out
    assert "Validation error" in from_stdin.out


def test_quiet_prints_only_the_summary(tmp_path: Path) -> None:
    # A bad line, a gap, a bad byte and no final: each kind of report, all left out.
    bad_byte = _event(5).replace(b"line 5", b"line \xff 5")
    path = write(tmp_path / "s.ndjson", _event(1) + b"{\n" + _event(4) + bad_byte)

    full = cli_inprocess("validate", path)
    quiet = cli("validate", "-q", path)

    assert quiet.status == full.status == 1
    assert quiet.stderr == ""
    summary = quiet.out.splitlines()
    assert summary[0] == f"{path}: 4 lines, {Path(path).stat().st_size} bytes"
    assert summary[-1] == "FAILED: 4 problems found"
    reports = full.out.splitlines()[: -len(summary)]
    assert full.out.splitlines()[-len(summary) :] == summary  # the same summary, alone
    assert [line.split(":")[0] for line in reports] == [
        f"line 2 (byte {len(_event(1))})",
        "    {",
        "line 3",
        f"line 4 (byte {Path(path).read_bytes().index(0xFF)})",
        "end of input",
    ]


def test_an_empty_stream_fails_and_says_so(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.ndjson", b"")

    result = cli("validate", path)

    assert result.status == 1
    assert result.out.splitlines() == [
        f"{path}: 0 lines, 0 bytes",
        "events: 0",
        "bad lines: 0",
        "no events: the input is empty",
        "FAILED: 1 problem found",
    ]
    assert cli_inprocess("validate", "-", stdin=b"").out == result.out.replace(path, "<stdin>")


def test_blank_lines_only_fail_as_an_input_without_events(tmp_path: Path) -> None:
    result = cli_inprocess("validate", write(tmp_path / "blank.ndjson", b"\n \r\n\n"))

    assert result.status == 1
    assert "no events: the input holds only blank lines" in result.out.splitlines()
    assert result.out.endswith("\nFAILED: 1 problem found\n")


def test_the_line_limit_can_be_lowered(tmp_path: Path) -> None:
    path = write(tmp_path / "s.ndjson", _event(1) + b"[" + b"1," * 200 + b"1]\n" + _event(2))

    result = cli_inprocess("validate", "--max-line-bytes", "300", path)

    assert result.status == 1
    assert "line 2 (byte" in result.out
    assert "Line too long: more than 300 bytes without a newline" in result.out
    assert "seq 1..2; gaps 0" in result.out  # resynchronized after the long line


def test_a_first_seq_of_zero_does_not_hide_a_gap(tmp_path: Path) -> None:
    # The reference's SequenceTracker takes a first 0 as "nothing yet"; validate does not.
    path = write(tmp_path / "s.ndjson", _event(0) + _event(5))

    result = cli_inprocess("validate", path)

    assert result.status == 1
    assert f"line 2: {SID}: seq 5 follows 0: 1..4 missing" in result.out


def test_a_capture_without_its_final_event_is_truncated(tmp_path: Path) -> None:
    # The most common broken file: the connection (or the copy) stopped early.
    data = ndjson(session()[:-1])
    path = write(tmp_path / "cut.ndjson", data)

    result = cli("validate", path)

    assert result.status == 1
    lines = result.out.splitlines()
    assert lines[0] == (
        f"end of input: {SID}: no final event after seq 5: the stream stops early (truncated?)"
    )
    assert lines[-3:] == [
        "sessions: 1",
        f"  {SID}: 5 events, seq 1..5; gaps 0, duplicates 0, out of order 0; "
        "no final event (truncated)",
        "FAILED: 1 problem found",
    ]


def test_a_capture_cut_in_the_middle_of_a_line(tmp_path: Path) -> None:
    data = ndjson(session())
    path = write(tmp_path / "cut.ndjson", data[: len(data) - 40])

    result = cli_inprocess("validate", path)

    assert result.status == 1
    assert "line 6 (byte" in result.out  # the half line
    assert f"end of input: {SID}: no final event after seq 5" in result.out
    assert result.out.endswith("FAILED: 2 problems found\n")


def test_only_the_session_that_stops_early_is_flagged(tmp_path: Path) -> None:
    data = ndjson(session()) + ndjson(session(OTHER_SID)[:3])
    path = write(tmp_path / "two.ndjson", data)

    result = cli_inprocess("validate", "-q", path)

    assert result.status == 1
    lines = result.out.splitlines()
    assert f"  {SID}: 6 events, seq 1..6; gaps 0, duplicates 0, out of order 0" in lines
    assert (
        f"  {OTHER_SID}: 3 events, seq 1..3; gaps 0, duplicates 0, out of order 0; "
        "no final event (truncated)"
    ) in lines
    assert lines[-1] == "FAILED: 1 problem found"


def test_an_encrypted_session_is_not_called_truncated(tmp_path: Path) -> None:
    # Its final is inside an envelope: validate cannot see it, and says so.
    path = write(tmp_path / "enc.ndjson", ndjson(encrypted(session())))

    result = cli_inprocess("validate", path)

    assert result.status == 0
    assert (
        f"  {SID}: 6 events, seq 1..6; gaps 0, duplicates 0, out of order 0; "
        "encrypted (decrypt it to check its final event)"
    ) in result.out.splitlines()
    assert result.out.endswith("OK: no problems found\n")

    # Decrypted, a cut-short encrypted capture is seen for what it is.
    cut = write(tmp_path / "cut.ndjson", ndjson(encrypted(session()[:-1])))
    decrypted = cli_inprocess("decrypt", cut, "--key", KEY_HEX)
    checked = cli_inprocess("validate", "-", stdin=decrypted.stdout)
    assert checked.status == 1
    assert f"end of input: {SID}: no final event after seq 5" in checked.out


def _on_a_terminal(*args: str, stdin_parts: list[bytes], pause: float) -> tuple[int, bytes]:
    """Run the command with stdout and stderr on a pseudo-terminal, stdin fed slowly."""
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "enclave_stream", *args],
        stdin=subprocess.PIPE,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    assert proc.stdin is not None
    for part in stdin_parts:
        proc.stdin.write(part)
        proc.stdin.flush()
        time.sleep(pause)
    proc.stdin.close()
    shown = b""
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process ended
            break
        if not data:
            break
        shown += data
    os.close(leader)
    return proc.wait(timeout=30), shown


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
@pytest.mark.skipif(importlib.util.find_spec("rich") is None, reason="the bar needs rich")
def test_quiet_shows_no_progress_bar_on_a_terminal() -> None:
    # Input arriving slowly on a terminal shows the bar after 0.5 s, unless -q.
    events = session()
    parts = [ndjson(events[:3]), ndjson(events[3:5]), ndjson(events[5:])]

    status, shown = _on_a_terminal("validate", "-", stdin_parts=parts, pause=0.7)
    quiet_status, quiet = _on_a_terminal("validate", "-q", "-", stdin_parts=parts, pause=0.7)

    assert status == quiet_status == 0
    assert b"validating" in shown
    assert b"validating" not in quiet
    assert b"OK: no problems found" in quiet
