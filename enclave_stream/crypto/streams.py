"""anyio adapters: open or seal a whole stream of events with an :class:`EncryptedSession`.

Each takes a sync or an async iterable and returns an async generator (asyncio
and trio alike) that closes an async source when it finishes, fails or is
closed; use ``contextlib.aclosing`` to close it deterministically::

    async with aclosing(decrypt_events(parse_ndjson_stream(body), session)) as events:
        async for event in events:
            ...
"""

from __future__ import annotations

__all__ = ["decrypt_events", "encrypt_events", "open_off_loop"]

from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable
from contextlib import aclosing
from typing import Final, TypeAlias, TypeVar

import anyio

from ..errors import EnvelopeError, EnvelopeErrorReason
from ..events import EncryptedEnvelope, FinalEvent, ParsedEvent, StreamEvent
from ..streams import aclose_source
from .envelope import InnerEvent
from .session import EncryptedSession

T = TypeVar("T")
U = TypeVar("U")

EventSource: TypeAlias = Iterable[T] | AsyncIterable[T]
"""Where events come from: any sync or async iterable."""

_R: Final = EnvelopeErrorReason


async def _close_source(source: object, iterator: object, *, forcefully: bool) -> None:
    # An async iterable's iterator may be a separate object (a generator made
    # by __aiter__): close it, then the source itself if it has aclose.
    try:
        await aclose_source(iterator, forcefully=forcefully)
    finally:
        if iterator is not source:
            await aclose_source(source, forcefully=forcefully)


INLINE_ENVELOPE_BYTES: Final = 16 * 1024
"""Envelopes whose ciphertext (base64) is longer than this are opened in a worker thread.

Opening judges the inner event like any received line: one that the fast
decoder refuses costs up to a thousand times the CPU per byte of a valid one,
so a big one is kept off the event loop (see ``enclave_stream.streams.settle``)."""


async def open_off_loop(
    open_: Callable[[EncryptedEnvelope], StreamEvent], envelope: EncryptedEnvelope
) -> StreamEvent:
    """``open_(envelope)`` (a session's ``open``), in a worker thread if the envelope is big."""
    if len(envelope.payload.ciphertext_b64) <= INLINE_ENVELOPE_BYTES:
        return open_(envelope)
    return await anyio.to_thread.run_sync(open_, envelope)


async def _mapped(
    events: EventSource[T], step: Callable[[T], Awaitable[U]]
) -> AsyncGenerator[U, None]:
    if isinstance(events, AsyncIterable):
        iterator = aiter(events)
        finished = False
        try:
            async for event in iterator:
                yield await step(event)
            finished = True
        finally:
            await _close_source(events, iterator, forcefully=not finished)
    else:
        for event in events:
            yield await step(event)


async def decrypt_events(
    events: EventSource[ParsedEvent],
    session: EncryptedSession,
    *,
    require_encryption: bool = True,
    require_final: bool = False,
) -> AsyncGenerator[StreamEvent, None]:
    """Yield the plaintext events of an encrypted stream: every envelope opened.

    Args:
        events: parsed events (envelopes and/or plaintext events).
        session: opens each envelope with all its checks.
        require_encryption: refuse a plaintext event (``plaintext_refused``),
            the default: anyone on the path could otherwise inject plaintext
            events into an encrypted stream. ``False`` passes them through,
            for debugging a mixed stream only.
        require_final: raise ``truncated`` if the source ends before a
            ``final`` event, so a cut connection is not mistaken for the end.

    Raises:
        EnvelopeError: the first envelope refused by the session, a plaintext
            event with ``require_encryption``, or a truncated stream.
    """
    open_ = session.open

    async def opened(event: ParsedEvent) -> StreamEvent:
        if type(event) is EncryptedEnvelope:
            return await open_off_loop(open_, event)
        if require_encryption:
            raise EnvelopeError(
                f"Plaintext {getattr(event, 'type', type(event).__name__)!s} event "
                f"(seq {getattr(event, 'seq', '?')}) refused: this stream must be encrypted",
                _R.PLAINTEXT_REFUSED,
            )
        return event  # type: ignore[return-value]  # a plaintext event passes through

    saw_final = False
    async with aclosing(_mapped(events, opened)) as plaintexts:
        async for event in plaintexts:
            saw_final = saw_final or type(event) is FinalEvent
            yield event
    if require_final and not saw_final:
        raise EnvelopeError("The stream ended before its final event (truncated)", _R.TRUNCATED)


def encrypt_events(
    events: EventSource[InnerEvent], session: EncryptedSession
) -> AsyncGenerator[EncryptedEnvelope, None]:
    """Yield one sealed envelope per event (see :meth:`EncryptedSession.seal`).

    :func:`~enclave_stream.streams.serialize_ndjson_stream` turns the result
    into NDJSON lines, e.g. a response body::

        body = serialize_ndjson_stream(encrypt_events(events, session))
        return StreamingResponse(body, media_type="application/x-ndjson")

    Raises:
        EnvelopeError, EventValidationError, AesGcmError: as ``seal``.
    """
    seal = session.seal

    async def sealed(event: InnerEvent) -> EncryptedEnvelope:
        return seal(event)

    return _mapped(events, sealed)
