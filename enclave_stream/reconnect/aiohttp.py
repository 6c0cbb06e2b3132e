"""A connector over ``aiohttp.ClientSession`` (asyncio only; aiohttp installed).

The counterpart of :func:`~enclave_stream.reconnect.http.httpx_connector`:
the same request shape, resume parameter and error classes. aiohttp's
transport errors (``ClientPayloadError`` for a body cut mid-stream,
``ServerDisconnectedError`` ...) are not ``OSError``: this connector turns
them into :class:`~enclave_stream.reconnect.RetryableConnectError`, so that a
cut is resumed rather than fatal.
"""

from __future__ import annotations

__all__ = ["aiohttp_connector"]

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

try:
    import aiohttp
    import yarl
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("this connector needs aiohttp: pip install aiohttp") from exc

from ..errors import RetryableConnectError
from ..protocol import NDJSON_MEDIA_TYPE, RESUME_PARAM
from .client import Connector
from .responses import ERROR_BODY_LIMIT, refusal, stream_problem

_CHUNK_BYTES = 64 * 1024


def aiohttp_connector(
    session: aiohttp.ClientSession,
    url: str | yarl.URL,
    *,
    method: str = "GET",
    **request_kwargs: Any,
) -> Connector:
    """A connector that streams ``url`` with ``session``, resuming with ``?fromSeq=N``.

    Sends ``Accept: application/x-ndjson`` unless ``headers`` sets another;
    other ``request_kwargs`` go to ``session.request``. Unless they have a
    ``timeout``, the stream has no total or read timeout (aiohttp's default
    ends any request after 5 minutes): silence is the stream's heartbeat
    timeout to judge. A response that is not a stream raises as
    :func:`~enclave_stream.aconnect_ndjson` says (status, content type,
    ``Retry-After``)::

        async with aiohttp.ClientSession() as http:
            async with open_event_stream(aiohttp_connector(http, url)) as events:
                async for event in events:
                    ...
    """
    target = yarl.URL(url)
    headers = dict(request_kwargs.pop("headers", None) or {})
    if not any(name.lower() == "accept" for name in headers):
        headers["Accept"] = NDJSON_MEDIA_TYPE
    request_kwargs.setdefault(
        "timeout", aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=None)
    )

    @asynccontextmanager
    async def connect(from_seq: int | None) -> AsyncIterator[AsyncIterator[bytes]]:
        request_url = (
            target if from_seq is None else target.update_query({RESUME_PARAM: str(from_seq)})
        )
        try:
            async with session.request(
                method, request_url, headers=headers, **request_kwargs
            ) as response:
                problem = stream_problem(response.status, response.headers.get("Content-Type"))
                if problem is not None:
                    body = await response.content.read(ERROR_BODY_LIMIT)
                    raise refusal(
                        response.status, response.reason or "", response.headers, problem, body
                    )
                yield response.content.iter_chunked(_CHUNK_BYTES)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise RetryableConnectError(f"{type(exc).__name__}: {exc}") from exc

    return connect
