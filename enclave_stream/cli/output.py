"""Terminal output: plain text everywhere, rich's colours and progress bar when available.

The commands print lines made of :data:`Segment` s, ``(text, style)`` pairs.
A :class:`PlainPrinter` writes the text and ignores the styles; a
:class:`RichPrinter` (only when the optional ``rich`` package is installed and
the output is a terminal, or ``--color always``) renders the styles. ``rich``
is imported only then, so piped output costs nothing and the CLI works
without it.
"""

from __future__ import annotations

__all__ = [
    "ColorMode",
    "NoProgress",
    "PlainPrinter",
    "Printer",
    "Progress",
    "RichPrinter",
    "RichProgress",
    "Segment",
    "make_printer",
    "make_progress",
]

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as _RichProgressBar
    from rich.progress import TaskID

Segment = tuple[str, str]
"""A piece of a line: its text and a rich style (``""`` for none)."""

ColorMode = Literal["auto", "always", "never"]
"""``--color``: ``auto`` colours a terminal only; ``never`` is plain text, no progress bar."""


class Printer(Protocol):
    """Where a command's lines go."""

    @property
    def interactive(self) -> bool:
        """True when the lines go to a terminal that can show a progress bar."""
        ...

    def print(self, *segments: Segment) -> None:
        """Write one line made of ``segments``."""
        ...


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class PlainPrinter:
    """Writes the text of each segment, no styles, no escape codes."""

    interactive = False

    def __init__(self, stream: TextIO) -> None:
        self._write = stream.write

    def print(self, *segments: Segment) -> None:
        """Write one line made of ``segments`` (their styles are ignored)."""
        self._write("".join([text for text, _ in segments]) + "\n")


class RichPrinter:
    """Renders each line in colour with rich (long lines are not wrapped or cut).

    rich's full rendering costs tens of microseconds a line, too slow for a
    long stream, so each style is rendered once into its escape codes and
    lines are written directly; only while a progress bar is shown
    (:attr:`live`) do lines go through rich, which keeps them above the bar.
    """

    def __init__(self, console: Console, *, interactive: bool) -> None:
        self.console = console
        self.interactive = interactive
        self.live = False
        self._codes: dict[str, tuple[str, str]] = {}

    def print(self, *segments: Segment) -> None:
        """Write one line made of ``segments`` in their styles."""
        if self.live:
            from rich.text import Text

            self.console.print(Text.assemble(*segments), soft_wrap=True)
            return
        codes = self._codes
        parts = []
        for text, style in segments:
            if not text:
                continue
            if not style:
                parts.append(text)
                continue
            code = codes.get(style) or self._render(style)
            parts.append(f"{code[0]}{text}{code[1]}")
        parts.append("\n")
        self.console.file.write("".join(parts))

    def _render(self, style: str) -> tuple[str, str]:
        """The escape codes before and after text in ``style`` on this console."""
        from rich.text import Text

        with self.console.capture() as capture:
            self.console.print(Text("\x00", style=style), end="")
        before, _, after = capture.get().partition("\x00")
        self._codes[style] = (before, after)
        return before, after


def make_printer(stream: TextIO, mode: ColorMode) -> Printer:
    """A rich printer for a terminal (or ``always``) when rich is installed, else plain."""
    terminal = _isatty(stream)
    if mode == "never" or (mode == "auto" and not terminal):
        return PlainPrinter(stream)
    try:
        from rich.console import Console
    except ImportError:
        return PlainPrinter(stream)
    console = Console(
        file=stream,
        force_terminal=True if mode == "always" else None,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=True,
    )
    return RichPrinter(console, interactive=terminal)


class Progress(Protocol):
    """Reports how much of the input has been read."""

    def update(self, done: int) -> None:
        """``done`` bytes have been read so far."""
        ...

    def close(self) -> None:
        """The input is finished: remove the bar."""
        ...


class NoProgress:
    """No progress display (piped output, plain mode, or no rich)."""

    def update(self, done: int) -> None:
        """Do nothing."""

    def close(self) -> None:
        """Do nothing."""


class RichProgress:
    """A transient rich progress bar that appears only once reading takes a while.

    Small inputs finish before ``delay`` seconds and never show a bar; a
    large file shows its percentage, stdin (unknown size) the bytes read.
    """

    def __init__(
        self,
        printer: RichPrinter,
        total: int | None,
        description: str,
        *,
        delay: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._printer = printer
        self._total = total
        self._description = description
        self._clock = clock
        self._deadline = clock() + delay
        self._done = 0
        self._bar: _RichProgressBar | None = None
        self._task: TaskID | None = None

    def update(self, done: int) -> None:
        """Show ``done`` bytes read; start the bar once the delay has passed."""
        self._done = done
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=self._done)
        elif self._clock() >= self._deadline:
            self._start()

    def _start(self) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as RichProgressBar

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        self._bar = RichProgressBar(*columns, console=self._printer.console, transient=True)
        self._task = self._bar.add_task(self._description, total=self._total, completed=self._done)
        self._bar.start()
        self._printer.live = True

    def close(self) -> None:
        """Stop and remove the bar (if it was shown)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
            self._printer.live = False


def make_progress(printers: tuple[Printer, ...], total: int | None, description: str) -> Progress:
    """A progress bar on the first interactive rich printer's terminal, else none."""
    for printer in printers:
        if isinstance(printer, RichPrinter) and printer.interactive:
            return RichProgress(printer, total, description)
    return NoProgress()
