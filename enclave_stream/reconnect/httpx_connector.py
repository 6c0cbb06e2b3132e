"""A :data:`~enclave_stream.reconnect.Connector` over an ``httpx.AsyncClient``.

Needs the ``httpx`` extra: ``pip install 'enclave-stream[httpx]'``. The rest of
the library works without httpx; only importing this module requires it.
"""

from __future__ import annotations

__all__ = ["NDJSON_MEDIA_TYPE", "RESUME_PARAM", "httpx_connector"]

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any, Final, cast

try:
    import httpx
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("httpx_connector needs httpx: pip install 'enclave-stream[httpx]'") from exc

from ..errors import FatalConnectError, RetryableConnectError
from ..protocol import NDJSON_MEDIA_TYPE, RESUME_PARAM
from .client import Connector

# How much of an error response's body goes into the error message.
_ERROR_BODY_LIMIT: Final = 200


def httpx_connector(
    client: httpx.AsyncClient,
    url: str | httpx.URL,
    *,
    method: str = "GET",
    **request_kwargs: Any,
) -> Connector:
    """A connector that streams ``url`` with ``client``, resuming with ``?fromSeq=N``.

    Each connection sends ``method url`` with ``Accept: application/x-ndjson``
    (unless ``headers`` in ``request_kwargs`` sets another ``Accept``), and on
    a resume sets ``fromSeq=N`` in the query (keeping the rest of it), the
    reference broker's convention for ``GET /sessions/{id}/stream?fromSeq=N``
    (the events with ``seq >= N``). ``params`` are added to the URL's query;
    other ``request_kwargs`` (``headers``, ``timeout``, ``json``, ...) go to
    ``client.stream``.

    A 2xx response is streamed (``response.aiter_bytes()``, so content
    encodings are undone). A 429 or 5xx response and httpx transport errors
    (``httpx.TransportError``, ``httpx.DecodingError``) raise
    :class:`~enclave_stream.reconnect.RetryableConnectError`; any other status
    raises :class:`~enclave_stream.reconnect.FatalConnectError`, with the
    status and the start of the body in the message.

    Silence is the stream's heartbeat timeout to judge, so unless
    ``request_kwargs`` has a ``timeout``, these requests use the client's
    timeouts without the read timeout (httpx's default of 5 s would otherwise
    cut every quiet stream, and each such cut would count as a failed retry)::

        async with httpx.AsyncClient() as client:
            connect = httpx_connector(
                client, f"{broker}/sessions/{session_id}/stream",
                headers={"Authorization": f"Bearer {token}"},
            )
            async with open_event_stream(connect) as events:
                async for event in events:
                    ...
    """
    # The query is built here, not with ``params=``: httpx replaces a URL's
    # own query with ``params`` rather than adding to it.
    target = httpx.URL(url)
    params = request_kwargs.pop("params", None)
    if params is not None:
        target = target.copy_merge_params(params)
    headers = httpx.Headers(request_kwargs.pop("headers", None))
    headers.setdefault("Accept", NDJSON_MEDIA_TYPE)
    if "timeout" not in request_kwargs:
        timeout = client.timeout
        request_kwargs["timeout"] = httpx.Timeout(
            connect=timeout.connect, read=None, write=timeout.write, pool=timeout.pool
        )

    @asynccontextmanager
    async def connect(from_seq: int | None) -> AsyncIterator[AsyncIterator[bytes]]:
        request_url = target if from_seq is None else target.copy_set_param(RESUME_PARAM, from_seq)
        try:
            async with client.stream(
                method, request_url, headers=headers, **request_kwargs
            ) as response:
                if not response.is_success:
                    raise await _status_error(response)
                yield response.aiter_bytes()
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise RetryableConnectError(f"{type(exc).__name__}: {exc}") from exc

    return connect


async def _status_error(response: httpx.Response) -> FatalConnectError | RetryableConnectError:
    status = response.status_code
    reason = f"HTTP {status} {response.reason_phrase}".rstrip()
    body = await _body_start(response)
    if body:
        reason = f"{reason}: {body}"
    if status == 429 or status >= 500:
        return RetryableConnectError(reason, status_code=status)
    return FatalConnectError(reason, status_code=status)


async def _body_start(response: httpx.Response) -> str:
    """The start of an error body, for the message; empty if it cannot be read."""
    data = b""
    try:
        # aiter_bytes is an async generator (typed as an iterator): close it
        # after stopping early rather than leave it to the garbage collector.
        body = cast("AsyncGenerator[bytes, None]", response.aiter_bytes())
        async with aclosing(body) as chunks:
            async for chunk in chunks:
                data += chunk
                if len(data) >= _ERROR_BODY_LIMIT:
                    break
    except (httpx.TransportError, httpx.DecodingError):
        pass
    text = data[:_ERROR_BODY_LIMIT].decode("utf-8", "replace").strip()
    return " ".join(text.split())
