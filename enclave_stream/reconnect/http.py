"""Connectors over ``httpx.AsyncClient``: any NDJSON URL, and the broker's two routes.

Needs the ``httpx`` extra (``pip install 'enclave-stream[httpx]'``);
``enclave_stream.reconnect`` imports this module only when one of its names
is asked for (docs/compatibility.md, R10).
"""

from __future__ import annotations

__all__ = [
    "BrokerConnector",
    "ConnectionRecord",
    "NdjsonSource",
    "SessionConnector",
    "aconnect_ndjson",
    "broker_connector",
    "httpx_connector",
    "httpx_sync_connector",
    "session_connector",
]

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator, Mapping
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    aclosing,
    asynccontextmanager,
    contextmanager,
)
from typing import Any, NamedTuple, cast
from urllib.parse import quote

try:
    import httpx
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("this connector needs httpx: pip install 'enclave-stream[httpx]'") from exc
import msgspec

from .._options import check_number
from ..crypto.handshake import ClientHandshake
from ..crypto.session import EncryptedSession
from ..crypto.signing import ServerPublicKey
from ..errors import (
    EncryptionError,
    EncryptionNotAcceptedError,
    FatalConnectError,
    RetryableConnectError,
    SessionStartLostError,
)
from ..events import EncryptedEnvelope, ParsedEvent, StreamEvent
from ..ndjson import DEFAULT_MAX_LINE_BYTES, ErrorHandler
from ..protocol import (
    NDJSON_MEDIA_TYPE,
    PROTOCOL_VERSION,
    RESUME_PARAM,
    SERVER_HELLO_HEADER,
    SESSION_ID_HEADER,
    generate_session_id,
    is_session_id,
)
from ..streams import aclose_source, parse_ndjson_stream
from .client import Connector
from .responses import ERROR_BODY_LIMIT, refusal, stream_problem
from .sync import SyncConnector

logger = logging.getLogger("enclave_stream")


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
    broker's convention for ``GET /sessions/{id}/stream?fromSeq=N``
    (the events with ``seq >= N``). ``params`` are added to the URL's query;
    other ``request_kwargs`` (``headers``, ``timeout``, ``json``, ...) go to
    ``client.stream``.

    A 2xx response is streamed (content encodings undone). A 429 or 5xx
    response and httpx transport errors raise
    :class:`~enclave_stream.reconnect.RetryableConnectError`; any other status
    raises :class:`~enclave_stream.reconnect.FatalConnectError`, with the
    status and the start of the body in the message. Unless
    ``request_kwargs`` has a ``timeout``, the client's read timeout is not
    used: silence is the stream's heartbeat timeout to judge (R10)::

        async with httpx.AsyncClient() as client:
            connect = httpx_connector(
                client, f"{broker}/sessions/{session_id}/stream",
                headers={"Authorization": f"Bearer {token}"},
            )
            async with open_event_stream(connect) as events:
                async for event in events:
                    ...
    """
    target = _target(url, request_kwargs)

    @asynccontextmanager
    async def connect(from_seq: int | None) -> AsyncIterator[AsyncIterator[bytes]]:
        request_url = target if from_seq is None else target.copy_set_param(RESUME_PARAM, from_seq)
        async with aconnect_ndjson(client, method, request_url, **request_kwargs) as source:
            yield source.response.aiter_bytes()

    return connect


def httpx_sync_connector(
    client: httpx.Client,
    url: str | httpx.URL,
    *,
    method: str = "GET",
    read_timeout_s: float = 30.0,
    **request_kwargs: Any,
) -> SyncConnector:
    """:func:`httpx_connector` for ``httpx.Client``, to use with
    :func:`~enclave_stream.reconnect.sync.follow_event_stream`.

    The same request, resume parameter and errors; silence is bounded by
    ``read_timeout_s`` (no bytes for that long: reconnect), as a synchronous
    reader cannot watch for heartbeats while it waits. Keep it above the
    server's heartbeat interval (15 s by default).
    """
    check_number("read_timeout_s", read_timeout_s, positive=True)
    target = _target(url, request_kwargs)
    if "timeout" not in request_kwargs:
        timeout = client.timeout
        request_kwargs["timeout"] = httpx.Timeout(
            connect=timeout.connect, read=read_timeout_s, write=timeout.write, pool=timeout.pool
        )

    @contextmanager
    def connect(from_seq: int | None) -> Iterator[Iterable[bytes]]:
        request_url = target if from_seq is None else target.copy_set_param(RESUME_PARAM, from_seq)
        with _streamed_sync(client, method, request_url, **request_kwargs) as r:
            yield r.iter_bytes()

    return connect


class NdjsonSource:
    """A checked NDJSON response of :func:`aconnect_ndjson`; :meth:`aiter_events` reads it."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        """The streamed ``httpx.Response`` (status 2xx, an NDJSON content type)."""

    def aiter_events(
        self,
        *,
        on_error: ErrorHandler | None = None,
        strict: bool = False,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    ) -> AsyncGenerator[ParsedEvent, None]:
        """The response's events as they arrive: :func:`~enclave_stream.parse_ndjson_stream`."""
        return parse_ndjson_stream(
            self.response.aiter_bytes(),
            on_error=on_error,
            strict=strict,
            max_line_bytes=max_line_bytes,
        )

    def __repr__(self) -> str:
        return f"<NdjsonSource {self.response.request.method} {self.response.url}>"


@asynccontextmanager
async def aconnect_ndjson(
    client: httpx.AsyncClient, method: str, url: str | httpx.URL, **request_kwargs: Any
) -> AsyncIterator[NdjsonSource]:
    """Send one request for an NDJSON stream and check the response before it is read.

    Sends ``Accept: application/x-ndjson`` (unless ``headers`` sets another
    ``Accept``) and, unless ``request_kwargs`` has a ``timeout``, no read
    timeout: silence between events is normal (heartbeats come every 15 s by
    default, httpx's read timeout is 5 s). Other ``request_kwargs`` go to
    ``client.stream``::

        async with httpx.AsyncClient() as client:
            async with aconnect_ndjson(client, "GET", url) as source:
                async for event in source.aiter_events():
                    ...

    Raises:
        FatalConnectError: a 4xx status other than 429, or a 2xx response
            whose content type is not NDJSON (an HTML login page, say); the
            message has the status and the start of the body
            (``.status_code`` too).
        RetryableConnectError: a 429 or 5xx status, or an httpx transport
            error while connecting or reading.
    """
    async with _streamed(client, method, url, **request_kwargs) as response:
        yield NdjsonSource(response)


@asynccontextmanager
async def _streamed(
    client: httpx.AsyncClient, method: str, url: str | httpx.URL, **kwargs: Any
) -> AsyncIterator[httpx.Response]:
    """A 2xx NDJSON response, streamed; anything else (or a transport error) raises."""
    try:
        async with client.stream(method, url, **_stream_kwargs(client, kwargs)) as response:
            problem = stream_problem(response.status_code, response.headers.get("content-type"))
            if problem is not None:
                raise _refused(response, problem, await _body_start(response))
            yield response
    except (httpx.TransportError, httpx.DecodingError) as exc:
        raise RetryableConnectError(f"{type(exc).__name__}: {exc}") from exc


@contextmanager
def _streamed_sync(
    client: httpx.Client, method: str, url: str | httpx.URL, **kwargs: Any
) -> Iterator[httpx.Response]:
    """:func:`_streamed` over a synchronous ``httpx.Client``."""
    try:
        with client.stream(method, url, **_stream_kwargs(client, kwargs)) as response:
            problem = stream_problem(response.status_code, response.headers.get("content-type"))
            if problem is not None:
                raise _refused(response, problem, _first_bytes(response.iter_bytes()))
            yield response
    except (httpx.TransportError, httpx.DecodingError) as exc:
        raise RetryableConnectError(f"{type(exc).__name__}: {exc}") from exc


def _target(url: str | httpx.URL, request_kwargs: dict[str, Any]) -> httpx.URL:
    """``url`` with the ``params`` of ``request_kwargs`` (taken out of them) added to its query."""
    # Not left to ``params=``: httpx replaces a URL's own query with ``params``
    # rather than adding to it.
    target = httpx.URL(url)
    params = request_kwargs.pop("params", None)
    return target if params is None else target.copy_merge_params(params)


def _stream_kwargs(
    client: httpx.AsyncClient | httpx.Client, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The request options of a stream: ``Accept: application/x-ndjson`` unless the
    caller's headers set another, and no read timeout unless the caller gives a timeout."""
    headers = httpx.Headers(kwargs.get("headers"))
    headers.setdefault("Accept", NDJSON_MEDIA_TYPE)
    kwargs["headers"] = headers
    if "timeout" not in kwargs:
        # httpx's default read timeout of 5 s would cut every quiet stream,
        # and each cut would count as a failed retry.
        timeout = client.timeout
        kwargs["timeout"] = httpx.Timeout(
            connect=timeout.connect, read=None, write=timeout.write, pool=timeout.pool
        )
    return kwargs


def _refused(
    response: httpx.Response, problem: str, body: bytes
) -> FatalConnectError | RetryableConnectError:
    return refusal(response.status_code, response.reason_phrase, response.headers, problem, body)


async def _body_start(response: httpx.Response) -> bytes:
    """The start of an error body, for the message; empty if it cannot be read."""
    data = b""
    try:
        # aiter_bytes is an async generator (typed as an iterator): close it
        # after stopping early rather than leave it to the garbage collector.
        body = cast("AsyncGenerator[bytes, None]", response.aiter_bytes())
        async with aclosing(body) as chunks:
            async for chunk in chunks:
                data += chunk
                if len(data) >= ERROR_BODY_LIMIT:
                    break
    except (httpx.TransportError, httpx.DecodingError):
        pass
    return data


def _first_bytes(chunks: Iterator[bytes]) -> bytes:
    data = b""
    try:
        for chunk in chunks:
            data += chunk
            if len(data) >= ERROR_BODY_LIMIT:
                break
    except (httpx.TransportError, httpx.DecodingError):
        pass
    return data


class ConnectionRecord(NamedTuple):
    """One connection a :class:`SessionConnector` made: ``("POST", None)`` or ``("GET", 42)``."""

    method: str
    from_seq: int | None


_SESSION_ID_PLACEHOLDER = "{session_id}"


class SessionConnector:
    """A connector that starts a session with one request, then follows it with another.

    :func:`session_connector` is another name for this class. For your own
    routes: the first connection sends ``method start_url`` (with
    ``request_kwargs``: ``json=``, ``content=``, ...) and takes the session's
    id from the response's ``X-Session-ID`` header; every later one sends
    ``GET resume_url?fromSeq=N``, where ``{session_id}`` in ``resume_url``
    stands for the id. Failures are classified as
    :func:`httpx_connector` classifies them.

    With a ``handshake``, the session is encrypted, and the connector is the
    stream's session too: the handshake completes from the first response's
    ``X-Enclave-Server-Hello`` header, before any envelope needs opening, so
    ``open_event_stream(connect)`` decrypts without a ``session=``::

        handshake = ClientHandshake()
        connect = session_connector(
            http, f"{api}/secret", f"{api}/jobs/{{session_id}}",
            handshake=handshake, json=handshake.client_hello.to_dict(),
        )
        async with open_event_stream(connect) as events:
            async for event in events:  # decrypted, each once, to `final`
                ...

    The start request runs the session's code, so it is never sent twice
    once it may have reached the server: if its response is lost before its
    headers (a cut, a timeout), the stream fails with
    :class:`~enclave_stream.errors.SessionStartLostError` (its code may be
    running; the server chose the id, so there is nothing to follow). Only
    a request that never left (the connection could not be made) and a
    429/5xx answer are retried. A response that names the session but has
    no ServerHello when one was asked for fails with
    :class:`~enclave_stream.errors.EncryptionNotAcceptedError`, after the
    session is cancelled with ``POST cancel_url`` when given.

    Args:
        client: the HTTP client (its timeouts apply, but the read timeout).
        start_url: the route that starts a session and streams it.
        resume_url: the route that streams it from ``?fromSeq=N``;
            ``{session_id}`` is replaced by the id (URL-quoted).
        method: the start request's method.
        handshake: a :class:`~enclave_stream.ClientHandshake` whose
            ClientHello the start request carries (put it in the body with
            ``handshake.client_hello.to_dict()``): the session is encrypted.
        cancel_url: ``POST`` here (``{session_id}`` replaced) cancels a
            session; used when it started unencrypted against ``handshake``.
        headers: headers for every request.
        request_kwargs: more options of the start request, for ``client.stream``.

    Attributes:
        session_id: the session's id, once known.
        session: the client's :class:`~enclave_stream.EncryptedSession`,
            once the handshake completed (None for a plaintext session).
        connections: every connection made, oldest first.
        bytes_received: the response body bytes received, over all connections.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        start_url: str | httpx.URL,
        resume_url: str,
        *,
        method: str = "POST",
        handshake: ClientHandshake | None = None,
        cancel_url: str | None = None,
        headers: Mapping[str, str] | None = None,
        **request_kwargs: Any,
    ) -> None:
        if _SESSION_ID_PLACEHOLDER not in resume_url:
            raise ValueError(f"resume_url must hold {_SESSION_ID_PLACEHOLDER}: {resume_url!r}")
        self._client = client
        self._start_url = str(start_url)
        self._start_method = method
        self._resume_url = resume_url
        self._cancel_url = cancel_url
        self._handshake = handshake
        self._headers = httpx.Headers(headers)
        self._request_kwargs = request_kwargs
        self._resume: Connector | None = None
        # The client chose the id: a start whose answer was lost can be
        # looked for with a GET instead of being sent again.
        self._own_id = False
        # A start request may have reached the server without its answer
        # reaching us (client-chosen ids only: otherwise that is fatal).
        self._start_unsure = False
        self._started = False  # a response named the session (and completed its handshake)
        self.session_id: str | None = None
        self.session: EncryptedSession | None = None
        self.connections: list[ConnectionRecord] = []
        self.bytes_received = 0

    @property
    def encrypted(self) -> bool:
        """True when the session is asked to be encrypted (the request has a ClientHello)."""
        return self._handshake is not None

    def open(self, envelope: EncryptedEnvelope) -> StreamEvent:
        """Open an ``enc`` envelope with the session's keys (an ``EnvelopeOpener``).

        Raises:
            ValueError: the session is not encrypted, or its handshake has not completed.
            EnvelopeError: the envelope cannot be opened (see ``EncryptedSession.open``).
        """
        session = self.session
        if session is None:
            state = "is not encrypted" if self._handshake is None else "has no keys yet"
            raise ValueError(f"received an encrypted event, but the session {state}")
        return session.open(envelope)

    def __call__(self, from_seq: int | None) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Open one connection: start the session until a response names it, then resume it."""
        if not self._started:
            return self._counted(self._first())
        self.connections.append(ConnectionRecord("GET", from_seq))
        return self._counted(self._resumer()(from_seq))  # type: ignore[arg-type]

    def _resumer(self) -> Connector:
        if self._resume is None:
            self._resume = httpx_connector(
                self._client, self._url(self._resume_url), headers=self._headers
            )
        return self._resume

    def _url(self, template: str) -> str:
        assert self.session_id is not None
        return template.replace(_SESSION_ID_PLACEHOLDER, quote(self.session_id, safe=""))

    @asynccontextmanager
    async def _first(self) -> AsyncIterator[AsyncIterator[bytes]]:
        async with AsyncExitStack() as stack:
            response = await self._establish(stack)
            yield response.aiter_bytes()

    async def _establish(self, stack: AsyncExitStack) -> httpx.Response:
        """The first response of the session: its start, or (after a lost answer) a resume."""
        if self._start_unsure:
            found = await self._look_for_session(stack)
            if found is not None:
                return found
        return await self._start(stack)

    async def _start(self, stack: AsyncExitStack) -> httpx.Response:
        self.connections.append(ConnectionRecord(self._start_method, None))
        headers = httpx.Headers(self._headers)
        headers.update(self._request_kwargs.get("headers") or {})
        try:
            response = await stack.enter_async_context(
                _streamed(
                    self._client,
                    self._start_method,
                    self._start_url,
                    **{**self._request_kwargs, "headers": headers},
                )
            )
        except RetryableConnectError as exc:
            if self._own_id:
                # Even a 5xx may come from a gateway the request went through:
                # the next connection looks for the session before starting it.
                self._start_unsure = True
                raise
            if exc.status_code is not None:
                raise  # a 429 or 5xx answer of the server: it started nothing
            if isinstance(exc.__cause__, httpx.ConnectError | httpx.ConnectTimeout):
                raise  # the request never left
            raise SessionStartLostError(
                f"the answer to {self._start_method} {self._start_url} was lost after the "
                f"request was sent ({exc.reason}): the session may be running, and the "
                "server chose its id, so it is neither followed nor started again",
            ) from exc
        await self._accept(response.headers, started=True)
        return response

    def _server_chose_id(self) -> None:
        """The start's answer names another session than the one asked for."""

    async def _look_for_session(self, stack: AsyncExitStack) -> httpx.Response | None:
        """The session of a start whose answer was lost, from seq 1; None: there is none."""
        self.connections.append(ConnectionRecord("GET", None))
        try:
            response = await stack.enter_async_context(
                _streamed(
                    self._client,
                    "GET",
                    self._url(self._resume_url),
                    headers=self._headers,
                )
            )
        except FatalConnectError as exc:
            if exc.status_code == 404:
                return None  # the start never reached the server: start it
            state = (
                "it ran and is no longer held" if exc.status_code == 410 else "it may be running"
            )
            raise SessionStartLostError(
                f"the answer that started session {self.session_id} was lost, and following "
                f"the session was refused ({exc.reason}): {state}",
                session_id=self.session_id,
                status_code=exc.status_code,
            ) from exc
        await self._accept(response.headers, started=False)
        return response

    async def _accept(self, headers: httpx.Headers, *, started: bool) -> None:
        """Take the session id and complete the handshake from a response's headers.

        ``started``: the response is the start request's (else a resume after
        the start's answer was lost).
        """
        session_id = headers.get(SESSION_ID_HEADER)
        if session_id is None or not is_session_id(session_id):
            raise FatalConnectError(
                f"the server's response has no valid {SESSION_ID_HEADER} header: {session_id!r}"
            )
        if self.session_id is not None and session_id != self.session_id:
            if not started:
                raise FatalConnectError(
                    f"the server answered for session {session_id!r}, not {self.session_id!r}"
                )
            # A broker that ignores the id it was given: its session runs
            # under its own id, which is followed (a lost answer can no longer
            # be recovered).
            logger.warning(
                "the server ignored the session id %s and chose %s", self.session_id, session_id
            )
            self._server_chose_id()
        self.session_id = session_id
        handshake = self._handshake
        if handshake is not None:
            server_hello = headers.get(SERVER_HELLO_HEADER)
            if server_hello is None:
                cancelled = await self._cancel()
                outcome = "cancelled" if cancelled else "not cancelled"
                if started:
                    raise EncryptionNotAcceptedError(
                        f"the server started session {session_id} without encryption (no "
                        f"{SERVER_HELLO_HEADER} header): its code may have run; it was {outcome}",
                        session_id=session_id,
                        cancelled=cancelled,
                    )
                raise SessionStartLostError(
                    f"the answer that started session {session_id} was lost, and its resume "
                    f"has no {SERVER_HELLO_HEADER} (the server does not send it again, or did "
                    f"not encrypt the session): the session cannot be decrypted; it was {outcome}",
                    session_id=session_id,
                    cancelled=cancelled,
                )
            try:
                self.session = handshake.complete(server_hello, session_id)
            except EncryptionError as exc:
                raise FatalConnectError(f"the handshake failed: {exc.code}: {exc}") from exc
            except ValueError as exc:
                raise FatalConnectError(f"the handshake failed: {exc}") from exc
        self._started = True

    async def _cancel(self) -> bool:
        """Ask the server to cancel the session; True when it said yes."""
        if self._cancel_url is None:
            return False
        return await self._send_cancel("POST", self._url(self._cancel_url))

    async def _send_cancel(self, method: str, url: str) -> bool:
        try:
            response = await self._client.request(method, url, headers=self._headers)
        except httpx.HTTPError:
            return False
        return response.is_success

    @asynccontextmanager
    async def _counted(
        self, connection: AbstractAsyncContextManager[AsyncIterator[bytes]]
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        async with connection as source:
            body = _CountingBody(source, self)
            try:
                yield body
            finally:
                await body.aclose()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self._start_url} session={self.session_id} "
            f"encrypted={self.encrypted} connections={len(self.connections)}>"
        )


class BrokerConnector(SessionConnector):
    """A connector that starts a session on the broker at ``base_url`` and follows it.

    :func:`broker_connector` is another name for this class.

    The first connection sends ``POST {base_url}/sessions`` with the body
    ``{"protocolVersion": 2, "sessionId": ..., "code": code, "encryption":
    ...}``; every later one sends ``GET
    {base_url}/sessions/{id}/stream?fromSeq=N`` through
    :func:`~enclave_stream.reconnect.http.httpx_connector`, which classifies
    the failures.

    The session's code runs once, also when the ``POST``'s answer is lost:
    the client names the session (``s_<uuid4>``, as the upstream
    ``EnclaveClient`` does, in ``sessionId``), so a ``POST`` whose response
    did not arrive is followed with ``GET /sessions/{id}/stream`` rather
    than sent again; only a 404 there (the ``POST`` never arrived) sends it
    again, and a 409 to that (it arrived meanwhile) follows it. An
    encrypted session completes its handshake from the resume's
    ``X-Enclave-Server-Hello`` then.

    A broker that chooses the ids itself (ours without
    ``BrokerConfig(client_session_ids=True)``) answers the named ``POST``
    with 400; the connector then starts the session without a name (that
    refusal started nothing), and such a session cannot be looked for: a
    ``POST`` whose answer is lost after it was sent fails the stream with
    :class:`~enclave_stream.errors.SessionStartLostError` instead of
    running the code a second time. ``client_session_id=False`` starts that
    way at once.

    With ``encrypt=True`` the code starts before the client can know whether
    the broker encrypts (only the ``POST``'s answer says): a broker that
    answers without a ServerHello has its session cancelled (``DELETE
    /sessions/{id}``) and the stream fails with
    :class:`~enclave_stream.errors.EncryptionNotAcceptedError`, which says
    so.

    For example, pinning the server's key::

        async with httpx.AsyncClient() as client:
            connect = broker_connector(client, broker, code=source, signing_public_key=pem)
            async with open_event_stream(connect) as events:
                async for event in events:  # decrypted, each once, to `final`
                    ...

    Args:
        client: the HTTP client (its timeouts apply, but the read timeout:
            silence is the stream's heartbeat timeout to judge).
        base_url: where the broker's routes are (``{base_url}/sessions``).
        code: the code the session runs.
        encrypt: make the session end-to-end encrypted: the request carries a
            ClientHello (``encryption.mode`` ``required``) and the handshake
            completes from the response's ``X-Enclave-Server-Hello``; a
            ServerHello that does not check out is a fatal error.
        signing_public_key: the server's static signing key to pin (key
            object, 65-byte point, its base64, or PEM): a ServerHello without
            a valid signature by it is refused (``encrypt`` only).
        handshake: a ready :class:`~enclave_stream.ClientHandshake` to use
            instead of a new one (``encrypt`` only; then leave
            ``signing_public_key`` out).
        request: more fields of the request body (``limits``, ...); a
            ``sessionId`` there is the client's id (never replaced by the
            server's: a refusal of it is fatal).
        headers: headers for every request (``Authorization``, ...).
        client_session_id: name the session on the client (the default);
            False lets the broker choose, as said above.

    Attributes:
        session_id: the session's id (the client's, from the start, or the
            broker's once the ``POST`` response named it).
        session: the client's :class:`~enclave_stream.EncryptedSession`,
            once the handshake completed (None for a plaintext session).
        connections: every connection made, oldest first.
        bytes_received: the response body bytes received, over all connections.

    Raises:
        ValueError: contradictory arguments.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str | httpx.URL,
        *,
        code: str,
        encrypt: bool = True,
        signing_public_key: ServerPublicKey | None = None,
        handshake: ClientHandshake | None = None,
        request: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        client_session_id: bool = True,
    ) -> None:
        if not encrypt and (signing_public_key is not None or handshake is not None):
            raise ValueError("signing_public_key and handshake need encrypt=True")
        if handshake is not None and signing_public_key is not None:
            raise ValueError(
                "give either a handshake or a signing_public_key for a new one, not both"
            )
        if encrypt and handshake is None:
            handshake = ClientHandshake(server_public_key=signing_public_key)
        base = str(base_url).rstrip("/")
        super().__init__(
            client,
            f"{base}/sessions",
            f"{base}/sessions/{_SESSION_ID_PLACEHOLDER}/stream",
            handshake=handshake,
            headers=headers,
        )
        self._base = base
        body: dict[str, Any] = {"protocolVersion": PROTOCOL_VERSION, **(request or {})}
        chosen = body.get("sessionId")
        if chosen is None and client_session_id:
            body["sessionId"] = chosen = generate_session_id()
            self._may_fall_back = True  # a broker that refuses it gets no id instead
        else:
            self._may_fall_back = False
        if chosen is not None:
            self.session_id = str(chosen)
            self._own_id = True
        body["code"] = code
        if handshake is not None:
            body["encryption"] = {
                "mode": "required",
                "clientHello": handshake.client_hello.to_dict(),
            }
        self._body = body
        self._set_body()

    def _set_body(self) -> None:
        self._request_kwargs = {
            "content": msgspec.json.encode(self._body),
            "headers": {"Content-Type": "application/json"},
        }

    async def _start(self, stack: AsyncExitStack) -> httpx.Response:
        try:
            return await super()._start(stack)
        except FatalConnectError as exc:
            if self._own_id and exc.status_code == 409:
                # The POST arrived after all (the GET before it was too early).
                found = await self._look_for_session(stack)
                if found is None:
                    raise RetryableConnectError(
                        f"session {self.session_id} exists (409) but is not found (404)"
                    ) from exc
                return found
            refused_id = exc.status_code in (400, 422) and "sessionId" in exc.reason
            if self._may_fall_back and refused_id:
                # This broker chooses the ids; the refusal started nothing.
                logger.info(
                    "the broker refuses client session ids; it chooses this one: "
                    "a lost POST answer cannot be recovered"
                )
                self._may_fall_back = self._own_id = False
                self.session_id = None
                del self._body["sessionId"]
                self._set_body()
                return await super()._start(stack)
            raise

    def _server_chose_id(self) -> None:
        self._may_fall_back = self._own_id = False

    async def _cancel(self) -> bool:
        return await self._send_cancel(
            "DELETE", f"{self._base}/sessions/{quote(self.session_id or '', safe='')}"
        )


class _CountingBody:
    """A response's bytes, counted into ``owner.bytes_received`` as they pass."""

    __slots__ = ("_inner", "_owner")

    def __init__(self, inner: AsyncIterator[bytes], owner: SessionConnector) -> None:
        self._inner = inner
        self._owner = owner

    def __aiter__(self) -> _CountingBody:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._inner.__anext__()
        self._owner.bytes_received += len(chunk)
        return chunk

    async def aclose(self) -> None:
        await aclose_source(self._inner)


broker_connector = BrokerConnector
"""``broker_connector(client, base_url, code=...)`` is ``BrokerConnector(...)`` of the same."""

session_connector = SessionConnector
"""``session_connector(client, start_url, resume_url, ...)`` is ``SessionConnector(...)``."""
