"""Shared helpers of the CLI tests: sample sessions, files, and ways to run the command."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from enclave_stream import (
    EncryptedEnvelope,
    EventEncoder,
    FinalEvent,
    LogEvent,
    LogLevel,
    ParsedEvent,
    SessionInitEvent,
    StdoutEvent,
    ToolCallEvent,
    ToolResultAppliedEvent,
)
from enclave_stream.cli import run
from enclave_stream.cli.stdio import StdIO
from enclave_stream.crypto import create_encrypted_envelope
from enclave_stream.events import (
    EncryptionConfig,
    FinalPayload,
    LogPayload,
    SessionInitPayload,
    SessionStats,
    StdoutPayload,
    ToolCallPayload,
    ToolResultAppliedPayload,
)

SID = "s_0f8fad5b-d9cb-469f-a165-70867728950e"
OTHER_SID = "s_other"
KEY = bytes(range(32))
KEY_HEX = KEY.hex()


def session(sid: str = SID, first_seq: int = 1) -> list[ParsedEvent]:
    """A small, complete session: init, output, a log, a tool call, its result, final."""
    seq = iter(range(first_seq, first_seq + 100))
    return [
        SessionInitEvent(
            session_id=sid,
            seq=next(seq),
            payload=SessionInitPayload(
                cancel_url="https://broker/cancel",
                expires_at="2025-03-01T12:00:00Z",
                encryption=EncryptionConfig(enabled=True, key_id="k_1"),
            ),
        ),
        StdoutEvent(session_id=sid, seq=next(seq), payload=StdoutPayload("hello\n")),
        LogEvent(
            session_id=sid,
            seq=next(seq),
            payload=LogPayload(level=LogLevel.INFO, message="searching", data={"n": 1}),
        ),
        ToolCallEvent(
            session_id=sid,
            seq=next(seq),
            payload=ToolCallPayload(call_id="c_1", tool_name="web.search", args={"q": "café"}),
        ),
        ToolResultAppliedEvent(
            session_id=sid, seq=next(seq), payload=ToolResultAppliedPayload(call_id="c_1")
        ),
        FinalEvent(
            session_id=sid,
            seq=next(seq),
            payload=FinalPayload(
                ok=True,
                result={"answer": 42},
                stats=SessionStats(duration_ms=12, tool_call_count=1, stdout_bytes=6),
            ),
        ),
    ]


def encrypted(events: Iterable[ParsedEvent], key: bytes = KEY) -> list[ParsedEvent]:
    """The session as the broker sends it: every event sealed."""
    sealed: list[ParsedEvent] = []
    for event in events:
        assert not isinstance(event, EncryptedEnvelope)
        sealed.append(create_encrypted_envelope(key, "k_1", event.session_id, event.seq, event))
    return sealed


def ndjson(events: Iterable[ParsedEvent]) -> bytes:
    """The events as the reference writes them: one line each, every line ending in LF."""
    return EventEncoder().encode_lines(events)


def write(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path``; returns the path as a command-line argument."""
    path.write_bytes(data)
    return str(path)


@dataclass(frozen=True)
class Result:
    """What a run of the command gave."""

    status: int
    stdout: bytes
    stderr: str

    @property
    def out(self) -> str:
        """stdout as text."""
        return self.stdout.decode("utf-8")


def cli(*args: str, stdin: bytes = b"", executable: Sequence[str] | None = None) -> Result:
    """Run the command in a subprocess, as a user does (``python -m enclave_stream``)."""
    command = list(executable or (sys.executable, "-m", "enclave_stream"))
    proc = subprocess.run(
        [*command, *args], input=stdin, capture_output=True, timeout=60, check=False
    )
    return Result(proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace"))


def cli_inprocess(*args: str, stdin: bytes = b"") -> Result:
    """Run the command in this process with in-memory streams (no terminal)."""
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="")
    stderr = io.StringIO()
    status = run(list(args), StdIO(io.BytesIO(stdin), stdout, stderr))
    stdout.flush()
    buffer = stdout.buffer
    assert isinstance(buffer, io.BytesIO)
    return Result(status, buffer.getvalue(), stderr.getvalue())
