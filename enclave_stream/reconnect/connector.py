"""What the resumable event stream is built on: connectors, and envelope openers."""

from __future__ import annotations

__all__ = ["Connector", "EncryptingConnector", "EnvelopeOpener", "is_retryable"]

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol, TypeAlias, runtime_checkable

import anyio

from ..errors import FatalConnectError, RetryableConnectError
from ..events import EncryptedEnvelope, StreamEvent
from ..streams import ByteSource

Connector: TypeAlias = Callable[[int | None], AbstractAsyncContextManager[ByteSource]]
"""Opens one connection: ``connect(from_seq)`` is an async context manager
yielding the response's bytes (an async iterable of bytes, or an anyio byte
stream).

``from_seq`` is None for a fresh start, else the first sequence number
wanted: send the events with ``seq >= from_seq``. To say what a failure
means, raise :class:`~enclave_stream.reconnect.RetryableConnectError` or
:class:`~enclave_stream.reconnect.FatalConnectError`; ``OSError`` and anyio's
stream errors are retried anyway. The stream closes the iterator it is given
and leaves the context manager as soon as it is done with a connection::

    @asynccontextmanager
    async def connect(from_seq: int | None) -> AsyncIterator[ByteReceiveStream]:
        async with await anyio.connect_tcp(host, port) as tcp:
            await tcp.send(stream_request(from_seq))  # your protocol here
            yield tcp
"""


class EnvelopeOpener(Protocol):
    """Decrypts ``enc`` envelopes; an encrypted session (``EncryptedSession``) is one."""

    def open(self, envelope: EncryptedEnvelope) -> StreamEvent:
        """The plaintext event inside ``envelope``; raises if it cannot be decrypted."""
        ...


@runtime_checkable
class EncryptingConnector(Protocol):
    """A connector that sets up the stream's encryption itself (``broker_connector``).

    When its ``encrypted`` is true, ``open_event_stream`` opens envelopes with
    it and refuses plaintext even if no ``session`` was passed: the stream is
    encrypted once its handshake is.
    """

    @property
    def encrypted(self) -> bool:
        """True when the stream it connects to is encrypted."""
        ...

    def open(self, envelope: EncryptedEnvelope) -> StreamEvent:
        """The plaintext event inside ``envelope``; raises if it cannot be decrypted."""
        ...


# Failures of the byte transport itself: always worth another connection.
# (TimeoutError and ConnectionError are OSErrors.)
_TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
    anyio.IncompleteRead,
    RetryableConnectError,
)


def is_retryable(error: Exception, retry_if: Callable[[Exception], bool] | None = None) -> bool:
    """Whether a connection that failed with ``error`` should be retried.

    :class:`FatalConnectError` never is; :class:`RetryableConnectError`,
    ``OSError`` (including ``TimeoutError`` and ``ConnectionError``) and
    anyio's ``BrokenResourceError``, ``EndOfStream`` and ``IncompleteRead``
    always are; ``retry_if(error)`` decides for any other error, which is fatal
    without it. An exception group is retryable when all its errors are.

    >>> is_retryable(ConnectionResetError()), is_retryable(ValueError())
    (True, False)
    >>> is_retryable(ValueError(), retry_if=lambda e: isinstance(e, ValueError))
    True
    """
    if isinstance(error, FatalConnectError):
        return False
    if isinstance(error, _TRANSPORT_ERRORS):
        return True
    nested: tuple[Exception, ...] | None = getattr(error, "exceptions", None)
    if isinstance(nested, tuple) and nested:
        return all(is_retryable(inner, retry_if) for inner in nested)
    return retry_if is not None and bool(retry_if(error))
