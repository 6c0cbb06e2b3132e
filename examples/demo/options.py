"""The demo's command line: what to run, and how fast.

>>> options = parse_options(["--seed", "7", "--fast", "--plain"])
>>> options.seed, options.fast, options.encrypt, options.cuts
(7, True, False, True)
"""

from __future__ import annotations

__all__ = ["DemoOptions", "build_parser", "parse_options"]

import argparse
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

DEFAULT_EVENTS: Final = 300
"""About how many events the simulated session produces."""

MIN_EVENTS: Final = 40
MAX_EVENTS: Final = 5000


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What the demo runs (see ``enclave-stream demo --help``).

    Attributes:
        seed: drives the session's content and where the cuts fall.
        events: about how many events the session produces.
        encrypt: encrypt the stream end to end (and pin the server's key).
        cuts: cut the connection twice mid-stream.
        fast: a session of a fraction of a second, with short retry delays.
        replay_all: resume as the reference client does, asking for the whole
            session again; the client drops the events it already has.
        impostor: the service signs with a key the client did not pin, which
            the client must refuse (the demo then fails, on purpose).
        live: the live view (rich, on a terminal); None decides by the output.
    """

    seed: int
    events: int = DEFAULT_EVENTS
    encrypt: bool = True
    cuts: bool = True
    fast: bool = False
    replay_all: bool = False
    impostor: bool = False
    live: bool | None = None


def _event_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not MIN_EVENTS <= value <= MAX_EVENTS:
        raise argparse.ArgumentTypeError(f"must be between {MIN_EVENTS} and {MAX_EVENTS}")
    return value


def build_parser(prog: str = "enclave-stream demo") -> argparse.ArgumentParser:
    """The demo's argument parser."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Run a simulated EnclaveJS session on 127.0.0.1 and follow it through a proxy "
            "that cuts the connection twice: every event must arrive exactly once, decrypted. "
            "No network is used beyond the loopback interface."
        ),
        epilog="exit status: 0 every event arrived exactly once; 1 it did not (or --impostor)",
    )
    parser.add_argument(
        "--seed", type=int, help="the session's content and cut points (default: random, printed)"
    )
    parser.add_argument(
        "--events",
        type=_event_count,
        default=DEFAULT_EVENTS,
        metavar="N",
        help=f"about how many events the session has (default {DEFAULT_EVENTS})",
    )
    parser.add_argument(
        "--plain", action="store_true", help="no encryption: the stream is plaintext NDJSON"
    )
    parser.add_argument("--no-cuts", action="store_true", help="let every connection through")
    parser.add_argument(
        "--fast", action="store_true", help="a session of well under a second, short retry delays"
    )
    parser.add_argument(
        "--replay-all",
        action="store_true",
        help="resume as the reference client does (the whole session again): "
        "the client drops the duplicates",
    )
    parser.add_argument(
        "--impostor",
        action="store_true",
        help="the service signs its handshake with a key the client did not pin: "
        "the client refuses it and the demo fails (exit status 1)",
    )
    parser.add_argument(
        "--no-live", action="store_true", help="one line per event even on a terminal"
    )
    return parser


def parse_options(argv: Sequence[str], *, prog: str = "enclave-stream demo") -> DemoOptions:
    """The options of ``argv``; exits with status 2 (argparse) on a usage error."""
    parser = build_parser(prog)
    args = parser.parse_args(list(argv))
    if args.impostor and args.plain:
        parser.error("--impostor needs encryption (leave out --plain)")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 100_000)
    return DemoOptions(
        seed=seed,
        events=args.events,
        encrypt=not args.plain,
        cuts=not args.no_cuts,
        fast=args.fast,
        replay_all=args.replay_all,
        impostor=args.impostor,
        live=False if args.no_live else None,
    )
