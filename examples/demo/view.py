"""What the demo shows: each event as it arrives, a status line, the summary.

:class:`PlainView` writes one line per event (for pipes, logs and tests);
:class:`RichView` prints the events above a live status line on a terminal
(it needs ``rich``). Both take a ``status`` function that returns the
current :class:`Status`.
"""

from __future__ import annotations

__all__ = ["PlainView", "RichView", "Status", "View", "describe", "format_status"]

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from enclave_stream import (
    FinalEvent,
    HeartbeatEvent,
    LogEvent,
    PartialResultEvent,
    SessionInitEvent,
    StdoutEvent,
    StreamEvent,
    ToolCallEvent,
    ToolProgressEvent,
    ToolResultAppliedEvent,
)

if TYPE_CHECKING:  # rich is optional: imported when a RichView is made
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

_STYLES = {
    "session_init": "bold cyan",
    "stdout": "white",
    "log": "blue",
    "tool_call": "magenta",
    "tool_progress": "magenta",
    "tool_result_applied": "magenta",
    "partial_result": "yellow",
    "heartbeat": "dim",
    "final": "bold green",
}


_STATE_STYLES = {"connected": "green", "closed": "green", "failed": "bold red"}


@dataclass(frozen=True, slots=True)
class Status:
    """The numbers of the status line."""

    events: int
    reconnects: int
    duplicates: int
    bytes: int
    state: str


def format_status(status: Status) -> str:
    """The status line.

    >>> format_status(Status(120, 1, 0, 40_960, "connected"))
    'events 120 · reconnects 1 · duplicates dropped 0 · 40,960 bytes · connected'
    """
    return (
        f"events {status.events} · reconnects {status.reconnects} · "
        f"duplicates dropped {status.duplicates} · {status.bytes:,} bytes · {status.state}"
    )


def _json_short(value: Any, limit: int = 70) -> str:
    text = repr(value) if not isinstance(value, dict | list) else _compact(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _compact(value: dict[str, Any] | list[Any]) -> str:
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{key}: {_json_short(item, 30)}" for key, item in value.items()) + "}"
        )
    return "[" + ", ".join(_json_short(item, 30) for item in value) + "]"


def describe(event: StreamEvent) -> str:
    """One readable line for an event (without its seq and type).

    >>> from enclave_stream import StdoutEvent

    >>> from enclave_stream.events import StdoutPayload
    >>> describe(StdoutEvent("s_1", 3, StdoutPayload("batch 1/9 done\\n")))
    'batch 1/9 done'
    """
    match event:
        case StdoutEvent():
            return event.payload.chunk.rstrip("\n")
        case LogEvent():
            data = "" if not isinstance(event.payload.data, dict) else f"  {event.payload.data}"
            return f"[{event.payload.level}] {event.payload.message}{data}"
        case ToolCallEvent():
            return f"{event.payload.tool_name}({_json_short(event.payload.args)})"
        case ToolProgressEvent():
            return f"{event.payload.phase} ({event.payload.elapsed_ms:.0f} ms)"
        case ToolResultAppliedEvent():
            return f"result of {event.payload.call_id[:10]}… applied"
        case PartialResultEvent():
            more = " (more to come)" if event.payload.has_next else " (last)"
            return f"{'/'.join(event.payload.path)} = {_json_short(event.payload.data)}{more}"
        case HeartbeatEvent():
            return event.payload.ts
        case SessionInitEvent():
            encryption = event.payload.encryption
            sealed = f"encrypted, key {encryption.key_id}" if encryption.enabled else "plaintext"
            return f"session started ({sealed})"
        case FinalEvent():
            return f"ok={event.payload.ok} result={_json_short(event.payload.result)}"
        case _:
            return str(event.type)


def _event_line(event: StreamEvent) -> str:
    return f"#{event.seq:>4}  {event.type!s:<19} {describe(event)}"


class View(Protocol):
    """Where the demo's output goes; used as ``with view:`` around the session."""

    def __enter__(self) -> View: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def line(self, text: str, style: str = "") -> None:
        """A line of text (the header, a connection note)."""
        ...

    def event(self, event: StreamEvent) -> None:
        """An event received."""
        ...

    def status_changed(self, state: str) -> None:
        """The connection state changed to ``state`` (``connected``, ``reconnecting``, ...)."""
        ...

    def summary(self, rows: Sequence[tuple[str, str]], verdict: str, ok: bool) -> None:
        """The summary table and the verdict."""
        ...


class PlainView:
    """One line per event; the status line when the connection state changes.

    (But for ``connecting``, which the next line, a request, shows anyway.)
    """

    def __init__(self, out: TextIO, status: Callable[[], Status]) -> None:
        self._out = out
        self._status = status

    def __enter__(self) -> PlainView:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._out.flush()

    def line(self, text: str, style: str = "") -> None:
        """Print ``text``."""
        print(text, file=self._out)

    def event(self, event: StreamEvent) -> None:
        """Print the event's line."""
        print(f"  {_event_line(event)}", file=self._out)

    def status_changed(self, state: str) -> None:
        """Print the status line (unless the new state is ``connecting``)."""
        if state != "connecting":
            print(f"  -- {format_status(self._status())}", file=self._out)

    def summary(self, rows: Sequence[tuple[str, str]], verdict: str, ok: bool) -> None:
        """Print the summary rows, then the verdict."""
        print(file=self._out)
        width = max((len(label) for label, _ in rows), default=0)
        for label, text in rows:
            print(f"  {label:<{width}}  {text}", file=self._out)
        print(f"\n{verdict}", file=self._out)


class RichView:
    """The events scroll by above a live status line (needs ``rich``)."""

    def __init__(self, status: Callable[[], Status], console: Console | None = None) -> None:
        from rich.console import Console

        self._console = Console(highlight=False) if console is None else console
        self._status = status
        self._live: Live | None = None

    def _status_text(self) -> Text:
        from rich.text import Text

        status = self._status()
        style = _STATE_STYLES.get(status.state, "yellow")
        text = Text("  ")
        text.append(format_status(status), style=style)
        return text

    def __enter__(self) -> RichView:
        from rich.live import Live

        self._live = Live(
            get_renderable=self._status_text,
            console=self._console,
            refresh_per_second=10,
            transient=True,
        )
        self._live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        """End the live display, leaving the last status line printed."""
        live, self._live = self._live, None
        if live is not None:
            live.stop()
            self._console.print(self._status_text())

    def line(self, text: str, style: str = "") -> None:
        """Print ``text`` above the status line."""
        self._console.print(text, style=style or None, markup=False)

    def event(self, event: StreamEvent) -> None:
        """Print the event's line above the status line, coloured by type."""
        from rich.text import Text

        line = Text()
        line.append(f"  #{event.seq:>4}  ", style="dim")
        line.append(f"{event.type!s:<19} ", style=_STYLES.get(str(event.type), ""))
        line.append(describe(event))
        self._console.print(line)
        self._refresh()

    def status_changed(self, state: str) -> None:
        """Refresh the status line now."""
        self._refresh()

    def _refresh(self) -> None:
        # Printing above a live display redraws the status line as it was
        # last rendered: render it afresh.
        if self._live is not None:
            self._live.refresh()

    def summary(self, rows: Sequence[tuple[str, str]], verdict: str, ok: bool) -> None:
        """The summary as a table (after the live display), then the verdict in green or red."""
        from rich.table import Table

        self._stop()
        table = Table(show_header=False, box=None, padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        for label, text in rows:
            table.add_row(label, text)
        self._console.print()
        self._console.print(table)
        self._console.print(f"\n{verdict}", style="bold green" if ok else "bold red", markup=False)
