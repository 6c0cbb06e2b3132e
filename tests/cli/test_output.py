"""The terminal layer: plain vs rich printers, the progress bar, colours on a real terminal."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from enclave_stream.cli.output import (
    NoProgress,
    PlainPrinter,
    RichPrinter,
    RichProgress,
    make_printer,
    make_progress,
)
from tests.cli.helpers import ndjson, session, write

rich = pytest.importorskip("rich", reason="the rich printer needs the optional rich package")
from rich.console import Console  # noqa: E402
from rich.text import Text  # noqa: E402

LINE = (("#1 ", "dim"), ("stdout", "green"), ("  ", ""), ('"hi"', ""), ("", "red"))


class FakeTTY(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_plain_printer_writes_text_only() -> None:
    stream = io.StringIO()

    PlainPrinter(stream).print(*LINE)

    assert stream.getvalue() == '#1 stdout  "hi"\n'


@pytest.mark.parametrize(
    ("stream", "mode", "kind"),
    [
        (io.StringIO(), "auto", PlainPrinter),
        (io.StringIO(), "never", PlainPrinter),
        (io.StringIO(), "always", RichPrinter),
        (FakeTTY(), "auto", RichPrinter),
        (FakeTTY(), "never", PlainPrinter),
    ],
)
def test_make_printer_uses_rich_only_for_a_terminal_or_always(
    stream: io.StringIO, mode: str, kind: type
) -> None:
    assert type(make_printer(stream, mode)) is kind  # type: ignore[arg-type]


def test_rich_printer_writes_what_rich_would() -> None:
    stream = io.StringIO()
    printer = make_printer(stream, "always")
    assert isinstance(printer, RichPrinter)
    reference = Console(file=io.StringIO(), force_terminal=True, highlight=False)
    with reference.capture() as capture:
        reference.print(Text.assemble(*LINE), soft_wrap=True)

    printer.print(*LINE)
    printer.print(*LINE)

    assert stream.getvalue() == capture.get() * 2
    assert "\x1b[32mstdout\x1b[0m" in stream.getvalue()


def _console() -> Console:
    return Console(file=FakeTTY(), force_terminal=True, width=80)


def test_progress_appears_only_after_the_delay_and_goes_away() -> None:
    printer = RichPrinter(_console(), interactive=True)
    now = [0.0]
    progress = RichProgress(printer, 1000, "validating", delay=0.5, clock=lambda: now[0])

    progress.update(100)
    assert not printer.live  # a small input never shows a bar
    now[0] = 0.6
    progress.update(200)
    assert printer.live
    printer.print(("a report", "red"))  # goes through rich, above the bar
    progress.update(1000)
    progress.close()

    assert not printer.live
    shown = printer.console.file.getvalue()
    assert "validating" in shown
    assert "a report" in shown


def test_progress_goes_to_the_first_interactive_rich_printer() -> None:
    piped = RichPrinter(_console(), interactive=False)
    terminal = RichPrinter(_console(), interactive=True)

    assert isinstance(make_progress((PlainPrinter(io.StringIO()),), 10, "x"), NoProgress)
    assert isinstance(make_progress((piped,), 10, "x"), NoProgress)
    bar = make_progress((piped, terminal), 10, "x")
    assert isinstance(bar, RichProgress)
    bar.update(1)
    bar.close()


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_on_a_terminal_cat_is_coloured(tmp_path: Path) -> None:
    import pty

    path = write(tmp_path / "s.ndjson", ndjson(session()))
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "enclave_stream", "cat", path],
        stdout=follower,
        stderr=follower,
        stdin=subprocess.DEVNULL,
    )
    os.close(follower)
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

    assert proc.wait(timeout=30) == 0
    assert b"\x1b[32mstdout\x1b[0m" in shown
    assert b"web.search" in shown
