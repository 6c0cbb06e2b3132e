"""``enclave-stream cat``: a readable (or normalized NDJSON) view of a stream."""

from __future__ import annotations

__all__ = ["CatOptions", "Viewer", "run_cat"]

from collections.abc import Collection
from dataclasses import dataclass

from ..codec import EventEncoder
from ..errors import LineError
from ..events import ParsedEvent
from .format import format_event, format_line_error, format_session_header
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
    """

    types: Collection[str] = ()
    sessions: Collection[str] = ()
    as_json: bool = False

    def wants(self, event: ParsedEvent) -> bool:
        """Whether ``event`` passes the filters."""
        return (not self.types or event.type in self.types) and (
            not self.sessions or event.session_id in self.sessions
        )


class Viewer:
    """Shows the items of one stream: events on stdout, bad lines on stderr."""

    def __init__(self, stdio: StdIO, options: CatOptions, color: ColorMode) -> None:
        self._stdio = stdio
        self._options = options
        self._out: Printer | None = None if options.as_json else make_printer(stdio.stdout, color)
        self._err = make_printer(stdio.stderr, color)
        self._encoder = EventEncoder()
        self._session: str | None = None
        self.bad_lines = 0

    def show(self, items: list[Item]) -> None:
        """Show the items of one chunk: the events that pass the filters, and bad lines."""
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
        self.bad_lines += 1
        self._stdio.stdout.flush()  # keep stdout and stderr in order on a terminal
        self._err.print(*format_line_error(error))


def run_cat(
    stdio: StdIO, path: str, options: CatOptions, *, color: ColorMode, max_line_bytes: int
) -> int:
    """Show ``path`` (``-``: stdin). Returns 1 if a line was bad, else 0."""
    viewer = Viewer(stdio, options, color)
    reader = LineReader(max_line_bytes=max_line_bytes)
    with open_input(path, stdio.stdin) as source:
        for items in reader.read(source.stream):
            viewer.show(items)
            stdio.stdout.flush()  # a live stream (stdin) is shown as it arrives
    return 1 if viewer.bad_lines else 0
