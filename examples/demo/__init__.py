"""The demo: a session streamed over a connection that drops, end to end.

On 127.0.0.1 it starts a small service (uvicorn serving the Starlette broker
app) that runs a simulated session - session_init, stdout, logs, a tool call,
partial results, heartbeats, final - over an encrypted stream, with a proxy
in front that cuts the connection twice mid-line. A client follows the
session through :func:`enclave_stream.open_event_stream`, shows the events
live with a status line (events, reconnects, duplicates dropped, bytes), and
ends with a summary that checks every event arrived exactly once, decrypted,
against the server's own log. It takes a few seconds and no network.

It is an example, not part of the library: it lives in the source checkout
and needs the ``demo`` extra (Starlette, uvicorn, httpx; rich for the live
view). From a clone of the repository::

    pip install -e '.[demo]' && enclave-stream demo

``enclave-stream demo`` finds this package next to the installed
``enclave_stream`` (an editable install) and runs :func:`main`;
``python -m examples.demo`` from the checkout's root does the same.

The parts: :mod:`.options` (the command line), :mod:`.program` (the
simulated session), :mod:`.loopback` (the service and the cutting proxy),
:mod:`.tap` (counting lines on the wire), :mod:`.run` (the whole run),
:mod:`.verify` and :mod:`.summary` (the proof), :mod:`.view` (the output).
"""

from __future__ import annotations

__all__ = ["DemoOptions", "main", "parse_options", "run_demo"]

import importlib.util
import sys
from collections.abc import Callable
from typing import TextIO

import anyio

from .options import DemoOptions, parse_options
from .run import run_demo
from .view import PlainView, RichView, Status, View


def _wants_live(options: DemoOptions, out: TextIO) -> bool:
    if options.live is not None:
        return options.live
    return out.isatty() and importlib.util.find_spec("rich") is not None


def main(argv: list[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the demo with the command-line arguments ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit status: 0 when every event arrived exactly once (and
    decrypted), 1 when not, 2 for a usage error (0 after ``--help``). The
    output goes to ``out`` (default: standard output); it is live, with
    rich, on a terminal, and one line per event otherwise.
    """
    stream = sys.stdout if out is None else out
    try:
        options = parse_options(sys.argv[1:] if argv is None else argv)
    except SystemExit as exit_:  # argparse: --help, or a usage error (already reported)
        return exit_.code if isinstance(exit_.code, int) else 2
    view_factory: Callable[[Callable[[], Status]], View]
    if _wants_live(options, stream):
        view_factory = lambda status: RichView(status)  # noqa: E731
    else:
        view_factory = lambda status: PlainView(stream, status)  # noqa: E731
    result: int = anyio.run(run_demo, options, view_factory, backend="asyncio")
    return result
