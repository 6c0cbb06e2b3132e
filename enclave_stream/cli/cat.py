"""``enclave-stream cat``: a readable view of a stream, its NDJSON, or the program's stdout."""

from __future__ import annotations

__all__ = ["CatOptions", "Viewer", "run_cat"]

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from ..codec import EventEncoder
from ..errors import LineError
from ..events import EncryptedEnvelope, ParsedEvent, StdoutEvent
from .format import clean, format_event, format_line_error, format_session_header
from .output import ColorMode, Printer, make_printer
from .source import Item, LineEvent, LineReader, open_input
from .stdio import StdIO


@dataclass(frozen=True)
class CatOptions:
    """What ``cat`` shows.

    Attributes:
        types: event types to show (all when empty).
        sessions: session ids to show (all when empty).
        as_json: write normalized NDJSON instead of the readable view.
        raw: write the program's stdout as it was: the ``chunk`` of each
            ``stdout`` event, in stream order, nothing else (not with ``as_json``
            or ``types``).
    """

    types: Collection[str] = ()
    sessions: Collection[str] = ()
    as_json: bool = False
    raw: bool = False

    def wants(self, event: ParsedEvent) -> bool:
        """Whether ``event`` passes the filters."""
        return (not self.types or event.type in self.types) and (
            not self.sessions or event.session_id in self.sessions
        )


_LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _program_bytes(text: str) -> bytes:
    """``text`` as the program wrote it: UTF-8, a lone surrogate as U+FFFD.

    A chunk is a JavaScript string, and JSON may carry a lone surrogate in
    one; Node.js writes such a string out with U+FFFD in its place.

    >>> _program_bytes("é\\ud83d!")
    b'\\xc3\\xa9\\xef\\xbf\\xbd!'
    """
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _LONE_SURROGATE.sub("\ufffd", text).encode("utf-8")


class Viewer:
    """Shows the items of one stream: events on stdout, bad lines on stderr.

    With ``raw``, stdout gets the concatenated ``stdout`` chunks of one
    session (the first one seen, or the one chosen by ``sessions``); an
    encrypted event, or output of another session, is reported on stderr
    (once each) and counted in :attr:`problems`.
    """

    def __init__(self, stdio: StdIO, options: CatOptions, color: ColorMode) -> None:
        self._stdio = stdio
        self._options = options
        plain = options.as_json or options.raw
        self._out: Printer | None = None if plain else make_printer(stdio.stdout, color)
        self._err = make_printer(stdio.stderr, color)
        self._encoder = EventEncoder()
        self._session: str | None = None
        self._refused: set[str] = set()  # --raw: what was reported already
        self.problems = 0
        """Bad lines, and with ``raw`` what could not be shown."""

    def show(self, items: list[Item]) -> None:
        """Show the items of one chunk: the events that pass the filters, and bad lines."""
        if self._options.raw:
            self._show_output(items)
            return
        batch: list[ParsedEvent] = []  # --json: written at once
        for item in items:
            if isinstance(item, LineEvent):
                event = item.event
                if not self._options.wants(event):
                    continue
                if self._out is None:
                    batch.append(event)
                else:
                    self._print(event, self._out)
            elif isinstance(item, LineError):
                self._write(batch)
                self._bad(item)
            # An EncodingIssue is not reported: cat reads such bytes as U+FFFD, as the parser.
        self._write(batch)

    def _show_output(self, items: list[Item]) -> None:
        chunks: list[str] = []  # written at once
        for item in items:
            if isinstance(item, LineEvent):
                if self._options.wants(item.event) and (chunk := self._output(item)) is not None:
                    chunks.append(chunk)
            elif isinstance(item, LineError):
                self._write_output(chunks)
                self._bad(item)
        self._write_output(chunks)

    def _write_output(self, chunks: list[str]) -> None:
        if chunks:
            self._stdio.write_bytes(_program_bytes("".join(chunks)))
            chunks.clear()

    def _output(self, item: LineEvent) -> str | None:
        """The program's output that ``item`` holds, if it is to be shown."""
        event = item.event
        if isinstance(event, EncryptedEnvelope):
            self._refuse(
                "encrypted",
                item,
                "encrypted: decrypt the stream first "
                "(enclave-stream decrypt FILE --key-file KEY | enclave-stream cat - --raw)",
            )
            return None
        if not isinstance(event, StdoutEvent):
            return None
        if self._session is None:
            self._session = event.session_id
        elif event.session_id != self._session:
            # Two programs' output interleaved is neither's: keep the first.
            self._refuse(
                f"session {event.session_id}",
                item,
                f"output of another session than {clean(self._session)}, left out "
                "(choose one with --session)",
            )
            return None
        return event.payload.chunk

    def _refuse(self, kind: str, item: LineEvent, problem: str) -> None:
        self.problems += 1
        if kind not in self._refused:
            self._refused.add(kind)
            self._stdio.stdout.flush()
            where = f"{clean(item.event.session_id)} seq {item.event.seq}: "
            self._err.print((f"line {item.line}: ", "bold"), (where, "yellow"), (problem, "red"))

    def _print(self, event: ParsedEvent, out: Printer) -> None:
        if event.session_id != self._session:
            self._session = event.session_id
            out.print(*format_session_header(event.session_id))
        out.print(*format_event(event))

    def _write(self, batch: list[ParsedEvent]) -> None:
        if batch:
            self._stdio.write_bytes(self._encoder.encode_lines(batch))
            batch.clear()

    def _bad(self, error: LineError) -> None:
        self.problems += 1
        self._stdio.stdout.flush()  # keep stdout and stderr in order on a terminal
        self._err.print(*format_line_error(error))


def run_cat(
    stdio: StdIO, path: str, options: CatOptions, *, color: ColorMode, max_line_bytes: int
) -> int:
    """Show ``path`` (``-``: stdin). Returns 1 if a line was bad (or not shown), else 0.

    Raises:
        InputError: the input is not NDJSON, or its gzip data is cut short.
    """
    viewer = Viewer(stdio, options, color)
    reader = LineReader(max_line_bytes=max_line_bytes)
    with open_input(path, stdio.stdin) as source:
        source.check_ndjson()
        for items in reader.read(source.chunks()):
            viewer.show(items)
            stdio.stdout.flush()  # a live stream (stdin) is shown as it arrives
        source.check_intact()
    return 1 if viewer.problems else 0
