"""Serving event streams with Starlette (``pip install 'enclave-stream[starlette]'``).

:func:`create_broker_app` serves a :class:`~enclave_stream.producer.SessionBroker`'s
routes; :func:`ndjson_response` streams one
:class:`~enclave_stream.producer.EventStream` from your own route.
"""

from __future__ import annotations

__all__ = ["create_broker_app", "ndjson_response"]

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager

try:
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route
    from starlette.types import Message, Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "enclave_stream.starlette needs Starlette: pip install 'enclave-stream[starlette]'"
    ) from exc

import anyio
from cryptography.hazmat.primitives.asymmetric import ec

from .errors import BrokerError, ReplayUnavailableError, StoreUnavailableError
from .producer.access import Authorize
from .producer.broker import SessionBroker
from .producer.config import BrokerConfig
from .producer.requests import SessionRunner
from .producer.responses import DEFAULT_SEND_TIMEOUT_SECONDS, StreamResponse, stream_response
from .producer.shared import SessionBackend, StreamBody
from .producer.signals import shutdown_on_signals
from .producer.stream import EventStream
from .protocol import NDJSON_MEDIA_TYPE, RESUME_PARAM, UPSTREAM_RESUME_PARAM

logger = logging.getLogger("enclave_stream")


def _error_response(error: BrokerError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        error.body(), status_code=error.status, headers={**error.headers, **(headers or {})}
    )


def ndjson_response(
    stream: EventStream,
    from_seq: int | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    send_timeout_seconds: float | None = DEFAULT_SEND_TIMEOUT_SECONDS,
    hold: bool = False,
    broker: SessionBroker | None = None,
) -> Response:
    """Stream ``stream`` from ``from_seq`` (None: from the start) up to its ``final`` event.

    A ``StreamingResponse`` with ``Content-Type: application/x-ndjson`` and
    the headers of :func:`~enclave_stream.producer.responses.stream_response`
    (plus ``headers``); a ``410 Gone`` JSON error instead if the log no
    longer holds the events from ``from_seq`` (docs/compatibility.md, P1)::

        async def resume(request):
            stream = streams[request.path_params["session_id"]]
            return ndjson_response(stream, int(request.query_params.get(RESUME_PARAM, 0)))

    A reader that falls so far behind that the log drops lines it has not
    sent yet has its response ended early; its client then resumes and gets
    the 410. With ``send_timeout_seconds``, a reader that takes no bytes for
    that long (its connection's buffers full) is dropped too: the response
    ends there, and its client can resume where it stopped. Background
    tasks set on the response (FastAPI's ``BackgroundTasks``) run beside
    its body, not after it: a producer started there would otherwise never
    start, and the body never end. ``hold=True`` for the response of the
    request that started the session: the log drops none of the events it
    has not sent (past ``max_bytes`` the producer's appends raise
    :class:`~enclave_stream.errors.LogFullError` instead). With the
    ``broker`` that holds the stream, the response is cut as the broker's
    own are (:meth:`SessionBroker.serving`): when the session is dropped,
    and when a shutdown's time is up and its client takes no bytes.
    """
    try:
        response = stream_response(stream, from_seq, headers, hold=hold)
        return _streaming(response, send_timeout_seconds, broker)
    except BrokerError as error:
        return _error_response(error)


class _NdjsonStreamingResponse(StreamingResponse):
    """A stream response whose every send must be taken within ``send_timeout`` (None: no limit).

    With a ``broker``, it is also cut when the broker's shutdown has given
    its readers their time (:meth:`SessionBroker.serving`).
    """

    def __init__(
        self,
        response: StreamResponse,
        send_timeout: float | None,
        broker: SessionBroker | None = None,
    ) -> None:
        self._ndjson = response.body
        self._lines = _ending_when_overtaken(response.body)
        super().__init__(self._lines, media_type=NDJSON_MEDIA_TYPE, headers=response.headers)
        self._session_id = response.session_id
        self._send_timeout = send_timeout
        self._broker = broker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        background, self.background = self.background, None
        if background is None:
            await self._stream(scope, receive, send)
            return
        # Background tasks (FastAPI's BackgroundTasks) run after the body, and
        # this body ends only when the stream does: a producer started there
        # would never start. It runs beside the body instead, and the request
        # waits for it, as for any background task.
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(background)
            await self._stream(scope, receive, send)

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._send_all(scope, receive, send)
        finally:
            # However it ended (its client gone, a failed send, a cut): the
            # log learns now that this reader left, and from where.
            with anyio.CancelScope(shield=True):
                await self._lines.aclose()
                await self._ndjson.aclose()  # in case the lines never started

    async def _send_all(self, scope: Scope, receive: Receive, send: Send) -> None:
        timeout = self._send_timeout
        frozen = False
        with contextlib.ExitStack() as stack:
            served = None
            if self._broker is not None:
                served = stack.enter_context(self._broker.serving(self._session_id))
                stack.enter_context(served.cancel_scope)
            # Cancelling a scope, not raising: an exception would reach us
            # wrapped in whatever task groups the server's response runs.
            with anyio.CancelScope() as sending:

                async def timed_send(message: Message) -> None:
                    nonlocal frozen
                    if timeout is None:  # no cancel scope per chunk when none is needed
                        await send(message)
                    else:
                        with anyio.move_on_after(timeout) as waited:
                            await send(message)
                        if waited.cancelled_caught:
                            frozen = True
                            sending.cancel()
                            return
                    if served is not None:
                        served.sent()

                await super().__call__(scope, receive, timed_send)
        if frozen:
            # Returning with the body unfinished makes the server close the
            # connection; the client resumes from the last seq it has.
            logger.warning(
                "dropping a reader of session %s: it took no bytes for %g s",
                self._session_id,
                timeout,
            )


def _streaming(
    response: StreamResponse, send_timeout: float | None, broker: SessionBroker | None = None
) -> StreamingResponse:
    return _NdjsonStreamingResponse(response, send_timeout, broker)


async def _ending_when_overtaken(body: StreamBody) -> AsyncGenerator[bytes, None]:
    # Raising here would abort the connection mid-chunk; ending the body is
    # cleaner, and the client's resume gets the 410 (or 503) that explains it.
    try:
        async for chunk in body:
            yield chunk
    except ReplayUnavailableError as exc:
        logger.warning("ending a stream response: the reader fell behind the log (%s)", exc)
    except StoreUnavailableError as exc:
        logger.warning("ending a stream response: the shared log cannot serve it (%s)", exc)
    finally:
        # Closed early (a client gone, a frozen reader): detach now, so that
        # a producer in drain() stops waiting for it.
        await body.aclose()


async def _read_body(request: Request, limit: int) -> bytes:
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            break  # create_session refuses it (413); the rest need not be read
    return bytes(data)


_NOT_RUNNING = (
    "The session broker is not running: its app's lifespan did not run. An app "
    "mounted in another one (FastAPI, a Starlette Mount) gets no lifespan events: "
    "run it from the parent's lifespan, e.g. "
    "FastAPI(lifespan=broker_app.router.lifespan_context), or "
    "`async with broker_app.router.lifespan_context(broker_app): yield` in yours."
)


def create_broker_app(
    runner: SessionRunner | None = None,
    *,
    config: BrokerConfig | None = None,
    authorize: Authorize | None = None,
    signing_key: ec.EllipticCurvePrivateKey | None = None,
    handle_signals: bool = True,
    debug: bool = False,
    backend: SessionBackend | None = None,
) -> Starlette:
    """A Starlette app serving the broker's routes over a :class:`SessionBroker`.

    - ``POST /sessions``: start a session with ``runner``, stream it from seq 1;
    - ``GET /sessions``: list the sessions;
    - ``GET /sessions/{id}``: a session's state and figures;
    - ``GET /sessions/{id}/stream?fromSeq=N`` (or ``?from=N``): stream it from seq N;
    - ``POST /sessions/{id}/cancel`` or ``DELETE /sessions/{id}``: cancel it
      (``{"success": true, "sessionId": id}``).

    docs/compatibility.md (P1-P10) says what each accepts and answers.
    Errors, unknown routes and methods included, are JSON ``{"code",
    "message"}`` bodies. ``session_init.cancelUrl`` carries the prefix the
    app is mounted under (ASGI ``root_path``).

    The broker runs for the app's lifespan (the ASGI server must run
    lifespan events; uvicorn does); it is ``app.state.broker``. Mounted in
    another app (FastAPI's ``app.mount``, a Starlette ``Mount``), it gets no
    lifespan events of its own: run its lifespan from the parent's
    (``FastAPI(lifespan=broker_app.router.lifespan_context)``, or enter
    ``broker_app.router.lifespan_context(broker_app)`` in yours); until
    then every route answers 500 ``BROKER_NOT_RUNNING`` saying so. With
    ``handle_signals``, SIGINT and SIGTERM end the running sessions
    (``final`` with ``SERVER_SHUTDOWN``) before the server's own handler
    runs, so that their responses end and the server can stop
    (:func:`~enclave_stream.producer.signals.shutdown_on_signals`).

    >>> app = create_broker_app()
    >>> [(route.path, sorted(route.methods - {"HEAD"})) for route in app.routes]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('/sessions', ['GET', 'POST']), ('/sessions/{session_id}/stream', ['GET']),
     ('/sessions/{session_id}/cancel', ['POST']), ('/sessions/{session_id}', ['DELETE', 'GET'])]

    Args:
        runner: produces each session of ``POST /sessions`` (without one,
            that route answers 404 and sessions come from
            ``app.state.broker.add``).
        config: limits and defaults of the broker.
        authorize: the authorization hook, asked before every route acts
            with the Starlette ``Request``
            (:mod:`enclave_stream.producer.access`; ``SessionTokens()``
            gives each session a token).
        signing_key: signs the ServerHello of encrypted sessions.
        handle_signals: end the sessions on SIGINT and SIGTERM (only when
            the lifespan runs in the main thread).
        debug: Starlette's debug mode.
        backend: a log shared with the service's other replicas
            (:class:`enclave_stream.redis.RedisBackend`), so that any
            replica serves any resume (README, "Scale-out on Redis").
    """
    served = SessionBroker(
        runner, config=config, authorize=authorize, signing_key=signing_key, backend=backend
    )

    def check_running() -> None:
        if not served.running:
            logger.error(_NOT_RUNNING)
            raise BrokerError(500, "BROKER_NOT_RUNNING", _NOT_RUNNING)

    # A BrokerError raised by a route is answered by `http_error`.
    async def sessions(request: Request) -> Response:
        check_running()
        if request.method == "GET":
            return JSONResponse(await served.list_sessions(request=request))
        body = await _read_body(request, served.config.max_request_bytes)
        base_path = request.scope.get("root_path", "")
        created = await served.create_session(body, request=request, base_path=base_path)
        return _streaming(created, served.config.send_timeout_seconds, served)

    async def resume(request: Request) -> Response:
        check_running()
        query = request.query_params
        opened = await served.open_stream(
            request.path_params["session_id"],
            query.get(RESUME_PARAM),
            query.get(UPSTREAM_RESUME_PARAM),
            request=request,
        )
        return _streaming(opened, served.config.send_timeout_seconds, served)

    async def session(request: Request) -> Response:
        check_running()
        session_id = request.path_params["session_id"]
        if request.method == "GET":
            return JSONResponse(await served.session_info(session_id, request=request))
        return await cancel(request)

    async def cancel(request: Request) -> Response:
        # The body (`{"reason"}` from @enclave-vm/client) is not read.
        check_running()
        session_id = request.path_params["session_id"]
        await served.cancel(session_id, request=request)
        return JSONResponse({"success": True, "sessionId": session_id})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with served:
            if handle_signals:
                async with shutdown_on_signals(served):
                    yield
            else:
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
            Route("/sessions", sessions, methods=["GET", "POST"]),
            Route("/sessions/{session_id}/stream", resume, methods=["GET"]),
            Route("/sessions/{session_id}/cancel", cancel, methods=["POST"]),
            Route("/sessions/{session_id}", session, methods=["GET", "DELETE"]),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, BrokerError: http_error},
    )
    app.state.broker = served
    return app
