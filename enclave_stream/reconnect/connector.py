"""What the resumable event stream is built on: connectors, and envelope openers."""

from __future__ import annotations

__all__ = ["Connector", "EncryptingConnector", "EnvelopeOpener"]

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol, TypeAlias, runtime_checkable

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
