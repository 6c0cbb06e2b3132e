"""Serving event streams with Starlette (``pip install 'enclave-stream[starlette]'``).

:func:`create_broker_app` serves a :class:`~enclave_stream.producer.SessionBroker`'s
routes; :func:`ndjson_response` streams one
:class:`~enclave_stream.producer.EventStream` from your own route.
"""

from __future__ import annotations

__all__ = ["create_broker_app", "ndjson_response"]

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

try:
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "enclave_stream.starlette needs Starlette: pip install 'enclave-stream[starlette]'"
    ) from exc

from cryptography.hazmat.primitives.asymmetric import ec

from .errors import BrokerError, ReplayUnavailableError
from .producer.broker import (
    BrokerConfig,
    SessionBroker,
    SessionRunner,
    StreamResponse,
    stream_response,
)
from .producer.log import NdjsonBody
from .producer.stream import EventStream
from .protocol import NDJSON_MEDIA_TYPE, RESUME_PARAM

logger = logging.getLogger("enclave_stream")


def _error_response(error: BrokerError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def ndjson_response(
    stream: EventStream,
    from_seq: int | None = None,
    *,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Stream ``stream`` from ``from_seq`` (None: from the start) up to its ``final`` event.

    A ``StreamingResponse`` with ``Content-Type: application/x-ndjson`` and
    the headers of :func:`~enclave_stream.producer.broker.stream_response`
    (plus ``headers``); a ``410 Gone`` JSON error instead if the log no
    longer holds the events from ``from_seq`` (docs/compatibility.md, P1)::

        async def resume(request):
            stream = streams[request.path_params["session_id"]]
            return ndjson_response(stream, int(request.query_params.get(RESUME_PARAM, 0)))

    A reader that falls so far behind that the log drops lines it has not
    sent yet has its response ended early; its client then resumes and gets
    the 410.
    """
    try:
        return _streaming(stream_response(stream, from_seq, headers))
    except BrokerError as error:
        return _error_response(error)


def _streaming(response: StreamResponse) -> StreamingResponse:
    body = _ending_when_overtaken(response.body)
    return StreamingResponse(body, media_type=NDJSON_MEDIA_TYPE, headers=response.headers)


async def _ending_when_overtaken(body: NdjsonBody) -> AsyncIterator[bytes]:
    # Raising here would abort the connection mid-chunk; ending the body is
    # cleaner, and the client's resume gets the 410 that explains it.
    try:
        async for chunk in body:
            yield chunk
    except ReplayUnavailableError as exc:
        logger.warning("ending a stream response: the reader fell behind the log (%s)", exc)


async def _read_body(request: Request, limit: int) -> bytes:
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            break  # create_session refuses it (413); the rest need not be read
    return bytes(data)


def create_broker_app(
    runner: SessionRunner | None = None,
    *,
    config: BrokerConfig | None = None,
    signing_key: ec.EllipticCurvePrivateKey | None = None,
    debug: bool = False,
) -> Starlette:
    """A Starlette app serving the broker's routes over a :class:`SessionBroker`.

    ``POST /sessions`` starts a session with ``runner`` and streams it from
    seq 1; ``GET /sessions/{id}/stream?fromSeq=N`` streams it from seq N;
    ``DELETE /sessions/{id}`` cancels it (``{"success": true, "sessionId":
    id}``). docs/compatibility.md (P1-P8) says what each accepts and
    answers. Errors, unknown routes and methods included, are JSON
    ``{"code", "message"}`` bodies. The broker runs for the app's lifespan
    (the ASGI server must run lifespan events; uvicorn does); it is
    ``app.state.broker``.

    >>> app = create_broker_app()
    >>> [route.path for route in app.routes]
    ['/sessions', '/sessions/{session_id}/stream', '/sessions/{session_id}']

    Args:
        runner: produces each session of ``POST /sessions`` (without one,
            that route answers 404 and sessions come from
            ``app.state.broker.add``).
        config: limits and defaults of the broker.
        signing_key: signs the ServerHello of encrypted sessions.
        debug: Starlette's debug mode.
    """
    served = SessionBroker(runner, config=config, signing_key=signing_key)

    # A BrokerError raised by a route is answered by `http_error`.
    async def create(request: Request) -> Response:
        body = await _read_body(request, served.config.max_request_bytes)
        return _streaming(served.create_session(body))

    async def resume(request: Request) -> Response:
        session_id = request.path_params["session_id"]
        return _streaming(served.open_stream(session_id, request.query_params.get(RESUME_PARAM)))

    async def cancel(request: Request) -> Response:
        session_id = request.path_params["session_id"]
        served.cancel(session_id)
        return JSONResponse({"success": True, "sessionId": session_id})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with served:
            yield

    async def http_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, BrokerError):
            return _error_response(exc)
        # No route or method: answered in the same JSON shape as every error.
        assert isinstance(exc, HTTPException)
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
        return _error_response(BrokerError(exc.status_code, code, str(exc.detail)), exc.headers)

    app = Starlette(
        debug=debug,
        routes=[
            Route("/sessions", create, methods=["POST"]),
            Route("/sessions/{session_id}/stream", resume, methods=["GET"]),
            Route("/sessions/{session_id}", cancel, methods=["DELETE"]),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, BrokerError: http_error},
    )
    app.state.broker = served
    return app
