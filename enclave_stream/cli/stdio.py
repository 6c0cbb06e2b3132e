"""The standard streams a command uses, passed in (so tests can run commands in-process)."""

from __future__ import annotations

__all__ = ["StdIO"]

import io
import sys
from dataclasses import dataclass
from typing import BinaryIO, TextIO


@dataclass(frozen=True)
class StdIO:
    """Input bytes, output text (its ``.buffer`` for NDJSON bytes) and diagnostics.

    Attributes:
        stdin: where ``-`` is read from, as bytes.
        stdout: the command's output.
        stderr: reports and messages of commands whose stdout is data.
    """

    stdin: BinaryIO
    stdout: TextIO
    stderr: TextIO

    @classmethod
    def from_sys(cls) -> StdIO:
        """The process's streams; text that the terminal cannot encode is backslash-escaped."""
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, io.TextIOWrapper):
                stream.reconfigure(errors="backslashreplace")
        stdin = sys.stdin.buffer if sys.stdin is not None else io.BytesIO()  # stdin closed
        return cls(stdin, sys.stdout, sys.stderr)

    def write_bytes(self, data: bytes) -> None:
        """Write raw bytes to stdout (NDJSON output), bypassing text encoding."""
        self.stdout.buffer.write(data)

    def flush(self) -> None:
        """Flush stdout and stderr."""
        self.stdout.flush()
        self.stderr.flush()
