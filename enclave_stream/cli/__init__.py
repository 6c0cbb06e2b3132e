"""The ``enclave-stream`` command: validate, view and decrypt EnclaveJS NDJSON streams.

Usage (also ``python -m enclave_stream``)::

    enclave-stream validate FILE|-
    enclave-stream cat FILE|- [--type T ...] [--session S ...] [--json | --raw]
    enclave-stream decrypt FILE|- (--key HEX | --key-file PATH) [--allow-plaintext]
    enclave-stream demo [ARGS ...]

Input may be gzip-compressed (it is read decompressed); a JSON array of
events or server-sent events text is named as such and refused.

Exit status: 0 all good, 1 something is wrong in the data, 2 usage error
(or an input that cannot be read, or the demo or its extra is missing), 130
interrupted, 141 the reader of the output went away (``| head``).

The CLI needs only the core dependencies; with the ``cli`` extra (``rich``)
it colours its output and shows a progress bar on a terminal.
"""

from __future__ import annotations

__all__ = ["build_parser", "main", "run"]

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Final

from ..ndjson import DEFAULT_MAX_LINE_BYTES
from ..protocol import EventType
from .cat import CatOptions, run_cat
from .decrypt import parse_key, run_decrypt
from .demo_hook import run_demo
from .source import InputError
from .stdio import StdIO
from .validate import run_validate

PROG: Final = "enclave-stream"

_EXIT_STATUS = """\
exit status:
  0  all good
  1  something is wrong in the data: a bad line, a seq gap or repeat, a failed
     decryption; for validate also a session without its final event and an input
     without events; input that is not NDJSON (a JSON array, SSE text) or truncated gzip
  2  usage error, input that cannot be read, a missing extra (or demo)
  141  the output was closed early (as by `| head`); 130  interrupted (Ctrl-C)
"""

_MAIN_EPILOG = f"""\
examples:
  {PROG} validate session.ndjson
  curl -sN "$BROKER/sessions/$SID/stream" | {PROG} cat -
  {PROG} cat session.ndjson --type log --type final
  {PROG} cat session.ndjson.gz --raw > output.txt   # the program's stdout
  {PROG} decrypt session.ndjson --key-file key.hex | {PROG} cat -

{_EXIT_STATUS}
Colours and the progress bar need the optional `rich` package:
pip install 'enclave-stream[cli]'. Without it, or when piped, output is plain text.
"""

_DECRYPT_EPILOG = f"""\
Each `enc` line is decrypted with the key (AES-256-GCM, the envelope's nonce) and
its inner event printed as one NDJSON line. A plaintext event in an encrypted
stream may be an injection: it is reported and left out, unless
--allow-plaintext (for debugging a mixed stream) copies it through unchanged.

A line that does not decrypt (wrong key, altered bytes, bad base64, an inner event
whose session or seq differ from its envelope's) is reported on stderr with its line
number and reason, and the other lines are still printed; the exit status is then 1.

--key puts the key on the command line, where other users of the machine may see
it (ps); --key-file reads the hex digits from a file instead.

{_EXIT_STATUS}"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _key(text: str) -> bytes:
    try:
        return parse_key(text)
    except ValueError as exc:  # the message never repeats the key
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colours: auto (on a terminal, if rich is installed), always, or never "
        "(plain text, no progress bar); default: auto",
    )
    common.add_argument(
        "--max-line-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_LINE_BYTES,
        metavar="N",
        help=f"longest line accepted, in bytes (default: {DEFAULT_MAX_LINE_BYTES})",
    )
    return common


def _cmd_validate(args: argparse.Namespace, stdio: StdIO) -> int:
    return run_validate(
        stdio,
        args.file,
        color=args.color,
        quiet=args.quiet,
        max_line_bytes=args.max_line_bytes,
    )


def _cmd_cat(args: argparse.Namespace, stdio: StdIO) -> int:
    if args.raw and args.types:
        stdio.stderr.write(f"{PROG} cat: --raw shows stdout events only; --type does not apply\n")
        return 2
    options = CatOptions(
        types=frozenset(args.types or ()),
        sessions=frozenset(args.sessions or ()),
        as_json=args.json,
        raw=args.raw,
    )
    return run_cat(stdio, args.file, options, color=args.color, max_line_bytes=args.max_line_bytes)


def _cmd_decrypt(args: argparse.Namespace, stdio: StdIO) -> int:
    key: bytes = args.key
    if args.key_file is not None:
        with open(args.key_file, encoding="ascii", errors="replace") as file:
            text = file.read()
        try:
            key = parse_key(text)
        except ValueError as exc:
            stdio.stderr.write(f"{PROG} decrypt: {args.key_file}: {exc}\n")
            return 2
    return run_decrypt(
        stdio,
        args.file,
        key,
        require_encrypted=not args.allow_plaintext,
        color=args.color,
        max_line_bytes=args.max_line_bytes,
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``enclave-stream`` (each subcommand sets ``handler``)."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Validate, view and decrypt EnclaveJS NDJSON event streams.",
        epilog=_MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common_options()
    raw = argparse.RawDescriptionHelpFormatter
    file_help = "the NDJSON stream to read; - for stdin"

    validate = commands.add_parser(
        "validate",
        parents=[common],
        formatter_class=raw,
        help="check every line, report what is wrong, summarize",
        description="Check every line of a stream: print each bad line with its number, "
        "byte offset, field path and reason, each seq gap, repeat or late event, then a "
        "summary (events per type, bad lines, bytes, seq gaps/duplicates per session). "
        "A progress bar shows on a terminal while a large input is read.",
        epilog=_EXIT_STATUS,
    )
    validate.add_argument("file", metavar="FILE", help=file_help)
    validate.add_argument(
        "-q", "--quiet", action="store_true", help="print the summary only, not each problem"
    )
    validate.set_defaults(handler=_cmd_validate)

    cat = commands.add_parser(
        "cat",
        parents=[common],
        formatter_class=raw,
        help="show a stream readably (or as normalized NDJSON)",
        description="Show each event on one line (#seq type details), coloured on a "
        "terminal; bad lines are reported on stderr. --raw writes the program's stdout "
        "instead, exactly as it was.",
        epilog=_EXIT_STATUS,
    )
    cat.add_argument("file", metavar="FILE", help=file_help)
    cat.add_argument(
        "--type",
        dest="types",
        action="append",
        choices=[t.value for t in EventType],
        metavar="TYPE",
        help="show only events of this type (repeatable): " + ", ".join(t.value for t in EventType),
    )
    cat.add_argument(
        "--session",
        dest="sessions",
        action="append",
        metavar="SESSION_ID",
        help="show only events of this session (repeatable)",
    )
    output = cat.add_mutually_exclusive_group()
    output.add_argument(
        "--json",
        action="store_true",
        help="print the events as normalized NDJSON (compact, the protocol's key order, "
        "unknown keys dropped)",
    )
    output.add_argument(
        "--raw",
        action="store_true",
        help="rebuild the program's stdout: the chunks of the stdout events, concatenated, "
        "byte for byte (control characters included), of one session (--session to choose); "
        "decrypt an encrypted stream first",
    )
    cat.set_defaults(handler=_cmd_cat)

    decrypt = commands.add_parser(
        "decrypt",
        parents=[common],
        formatter_class=raw,
        help="decrypt enc lines with a raw 32-byte key, print NDJSON",
        description="Open the `enc` envelopes of a stream with a raw AES-256 key and "
        "print the inner events as NDJSON.",
        epilog=_DECRYPT_EPILOG,
    )
    decrypt.add_argument("file", metavar="FILE", help=file_help)
    keys = decrypt.add_mutually_exclusive_group(required=True)
    keys.add_argument("--key", type=_key, metavar="HEX", help="the key as 64 hex digits")
    keys.add_argument("--key-file", metavar="PATH", help="a file holding the key as hex")
    decrypt.add_argument(
        "--allow-plaintext",
        action="store_true",
        help="copy plaintext events through instead of reporting them (debugging only)",
    )
    decrypt.set_defaults(handler=_cmd_decrypt)

    demo = commands.add_parser(
        "demo",
        add_help=False,
        help="run the demo of a source checkout (pip install -e '.[demo]'); "
        "arguments go to the demo",
    )
    demo.add_argument("demo_args", nargs=argparse.REMAINDER, metavar="ARGS")  # see run()
    return parser


def run(argv: Sequence[str] | None, stdio: StdIO) -> int:
    """Parse ``argv`` and run the command on ``stdio``; returns the exit status.

    Usage errors exit through argparse (status 2). A file that cannot be read
    is reported on ``stdio.stderr`` (status 2). :class:`BrokenPipeError`
    propagates (see :func:`main`).
    """
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == ["demo"]:
        # Everything after `demo` is the demo's, options included (argparse's
        # REMAINDER would refuse a first argument that looks like an option).
        return run_demo(arguments[1:], stdio)
    args = build_parser().parse_args(arguments)
    try:
        status: int = args.handler(args, stdio)
    except BrokenPipeError:
        raise
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        stdio.stderr.write(f"{PROG}: {where}{exc.strerror or exc}\n")
        return 2
    except InputError as exc:  # read, but not NDJSON (or cut short): a data problem
        stdio.stdout.flush()  # what was shown comes before the message on a terminal
        stdio.stderr.write(f"{PROG}: {exc}\n")
        return 1
    stdio.flush()
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``enclave-stream`` console script and ``python -m enclave_stream``."""
    try:
        return run(argv, StdIO.from_sys())
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly. Point stdout at
        # /dev/null so that the interpreter's final flush does not fail too.
        _discard_stdout()
        return 141
    except KeyboardInterrupt:
        return 130


def _discard_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real file descriptor
        pass
