"""The exception hierarchy of enclave_stream.

Every exception the library raises on purpose derives from
:class:`EnclaveStreamError`, so ``except EnclaveStreamError`` catches all of
them. Errors about bad input from a peer carry where the problem was (line,
field path, byte offset) as attributes, not only in the message.
"""

from __future__ import annotations

__all__ = [
    "EnclaveStreamError",
    "EventValidationError",
    "NdjsonParseError",
    "ProtocolError",
]

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .ndjson import LineError


class EnclaveStreamError(Exception):
    """Base class of every error raised by enclave_stream."""


class ProtocolError(EnclaveStreamError):
    """A message does not follow the EnclaveJS wire contract."""


class EventValidationError(ProtocolError, ValueError):
    """An event or message fails the protocol schema.

    Raised by the serializer for an invalid constructed event (so it never
    reaches the wire) and by :func:`enclave_stream.validate_event`.

    Attributes:
        path: JSON path of the offending field in wire names, such as
            ``"$.payload.callId"`` (``"$"`` for the whole value).
        reason: what was expected there.
    """

    def __init__(self, reason: str, path: str = "$") -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"{reason} - at `{path}`" if path != "$" else reason)


class NdjsonParseError(ProtocolError):
    """A line of an NDJSON stream could not be parsed (``strict=True`` mode).

    Attributes:
        error: the :class:`~enclave_stream.LineError` report for the line.
    """

    def __init__(self, error: LineError) -> None:
        self.error = error
        super().__init__(f"line {error.line}: {error.error}")
