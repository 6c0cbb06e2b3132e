"""``enclave-stream decrypt``: open the ``enc`` lines of a stream with a raw AES-256 key."""

from __future__ import annotations

__all__ = ["KEY_BYTES", "Decryptor", "parse_key", "run_decrypt"]

from typing import Final

from ..codec import EventEncoder
from ..crypto import AesGcmKey, decrypt_json, import_aes_gcm_key
from ..errors import EncryptionError, EnvelopeError, LineError
from ..events import EncryptedEnvelope, ParsedEvent, StreamEvent
from .format import clean, format_line_error
from .output import ColorMode, Printer, Segment, make_printer
from .source import Item, LineEvent, LineReader, open_input
from .stdio import StdIO

KEY_BYTES: Final = 32
"""The protocol's session keys are AES-256 keys."""


def parse_key(text: str) -> bytes:
    """A raw 32-byte key from its hex form (64 digits; ``0x`` and spaces allowed).

    >>> len(parse_key("00" * 32))
    32
    >>> parse_key("abc")
    Traceback (most recent call last):
    ...
    ValueError: the key must be 64 hex digits (a raw 32-byte AES-256 key)
    """
    digits = text.strip()
    if digits[:2].lower() == "0x":
        digits = digits[2:]
    try:
        key = bytes.fromhex(digits)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise ValueError("the key must be 64 hex digits (a raw 32-byte AES-256 key)")
    return key


class Decryptor:
    """Decrypts item by item: inner events as NDJSON on stdout, failures on stderr.

    An envelope whose inner event names another session or ``seq`` than the
    envelope itself is refused (an envelope moved from elsewhere), as
    :class:`~enclave_stream.EncryptedSession` does. Plaintext events are
    refused (reported and left out) when ``require_encrypted``.
    """

    def __init__(
        self, stdio: StdIO, key: AesGcmKey, *, require_encrypted: bool, color: ColorMode
    ) -> None:
        self._stdio = stdio
        self._key = key
        self._require_encrypted = require_encrypted
        self._err: Printer = make_printer(stdio.stderr, color)
        self._encoder = EventEncoder()
        self.failures = 0

    def handle(self, item: Item) -> None:
        """Decrypt (or copy, or report) one item."""
        if isinstance(item, LineError):
            self._fail(format_line_error(item))
        elif isinstance(item, LineEvent):
            inner = self._open(item.line, item.event)
            if inner is not None:
                self._stdio.write_bytes(self._encoder.encode(inner) + b"\n")

    def _open(self, line: int, event: ParsedEvent) -> ParsedEvent | None:
        if not isinstance(event, EncryptedEnvelope):
            if self._require_encrypted:
                self._refuse(line, event, f"plaintext {event.type} event")
                return None
            return event
        try:
            inner: StreamEvent = decrypt_json(self._key, event.payload, type=StreamEvent)
        except EncryptionError as exc:
            reason = f" [{exc.reason}]" if isinstance(exc, EnvelopeError) else ""
            self._refuse(line, event, f"cannot decrypt: {clean(exc.message)}{reason}")
            return None
        if inner.session_id != event.session_id or inner.seq != event.seq:
            inside = f"{clean(inner.session_id)} seq {inner.seq}"
            self._refuse(line, event, f"the inner event ({inside}) does not match its envelope")
            return None
        return inner

    def _refuse(self, line: int, event: ParsedEvent, problem: str) -> None:
        where = f"{clean(event.session_id)} seq {event.seq}: "
        self._fail([(f"line {line}: ", "bold"), (where, "yellow"), (problem, "red")])

    def _fail(self, segments: list[Segment]) -> None:
        self.failures += 1
        self._stdio.stdout.flush()  # keep stdout and stderr in order on a terminal
        self._err.print(*segments)


def run_decrypt(
    stdio: StdIO,
    path: str,
    key: bytes,
    *,
    require_encrypted: bool,
    color: ColorMode,
    max_line_bytes: int,
) -> int:
    """Decrypt ``path`` (``-``: stdin). Returns 1 if any line failed, else 0.

    Raises:
        InputError: the input is not NDJSON, or its gzip data is cut short.
    """
    decryptor = Decryptor(
        stdio, import_aes_gcm_key(key), require_encrypted=require_encrypted, color=color
    )
    reader = LineReader(max_line_bytes=max_line_bytes)
    with open_input(path, stdio.stdin) as source:
        source.check_ndjson()
        for items in reader.read(source.chunks()):
            for item in items:
                decryptor.handle(item)
            stdio.stdout.flush()  # a live stream (stdin) is decrypted as it arrives
        source.check_intact()
    return 1 if decryptor.failures else 0
