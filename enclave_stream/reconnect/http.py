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
    "aconnect_ndjson",
    "broker_connector",
    "httpx_connector",
    "httpx_sync_connector",
]

from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager, contextmanager
from typing import Any, NamedTuple, cast
from urllib.parse import quote

try:
    import httpx
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("this connector needs httpx: pip install 'enclave-stream[httpx]'") from exc
import msgspec

from .._options import check_number
from ..codec import encode_message
from ..crypto.handshake import ClientHandshake
from ..crypto.session import EncryptedSession
from ..crypto.signing import ServerPublicKey
from ..errors import EncryptionError, FatalConnectError, RetryableConnectError
from ..events import EncryptedEnvelope, ParsedEvent, StreamEvent
from ..ndjson import DEFAULT_MAX_LINE_BYTES, ErrorHandler
from ..protocol import (
    NDJSON_MEDIA_TYPE,
    PROTOCOL_VERSION,
    RESUME_PARAM,
    SERVER_HELLO_HEADER,
    SESSION_ID_HEADER,
    is_session_id,
)
from ..streams import aclose_source, parse_ndjson_stream
from .client import Connector
from .responses import ERROR_BODY_LIMIT, refusal, stream_problem
from .sync import SyncConnector


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
    """One connection a :class:`BrokerConnector` made: ``("POST", None)`` or ``("GET", 42)``."""

    method: str
    from_seq: int | None


class BrokerConnector:
    """A connector that starts a session on the broker at ``base_url`` and follows it.

    :func:`broker_connector` is another name for this class.

    The first connection sends ``POST {base_url}/sessions`` with the body
    ``{"protocolVersion": 2, "code": code, "encryption": ...}``; every later
    one (once the response named the session) sends ``GET
    {base_url}/sessions/{id}/stream?fromSeq=N`` through
    :func:`~enclave_stream.reconnect.http.httpx_connector`, which classifies
    the failures. A ``POST`` that fails before the response names the
    session is retried as a ``POST`` (the broker may then hold an orphan
    session, which it retires like any other).

    For example, pinning the server's key::

        async with httpx.AsyncClient() as client:
            connect = broker_connector(client, broker, code=source, signing_public_key=pem)
            async with open_event_stream(connect, session=connect) as events:
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
            response without it, or a ServerHello that does not check out,
            is a fatal error.
        signing_public_key: the server's static signing key to pin (key
            object, 65-byte point, its base64, or PEM): a ServerHello without
            a valid signature by it is refused (``encrypt`` only).
        handshake: a ready :class:`~enclave_stream.ClientHandshake` to use
            instead of a new one (``encrypt`` only; then leave
            ``signing_public_key`` out).
        request: more fields of the request body (``limits``, ``sessionId``, ...).
        headers: headers for every request (``Authorization``, ...).

    Attributes:
        session_id: the session's id, once the ``POST`` response named it.
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
    ) -> None:
        if not encrypt and (signing_public_key is not None or handshake is not None):
            raise ValueError("signing_public_key and handshake need encrypt=True")
        if handshake is not None and signing_public_key is not None:
            raise ValueError(
                "give either a handshake or a signing_public_key for a new one, not both"
            )
        if encrypt and handshake is None:
            handshake = ClientHandshake(server_public_key=signing_public_key)
        body: dict[str, Any] = {
            "protocolVersion": PROTOCOL_VERSION,
            **(request or {}),
            "code": code,
        }
        if handshake is not None:
            hello = msgspec.json.decode(encode_message(handshake.client_hello))
            body["encryption"] = {"mode": "required", "clientHello": hello}
        self._client = client
        self._base = str(base_url).rstrip("/")
        self._body = body
        self._handshake = handshake
        self._headers = httpx.Headers(headers)
        self._resume: Connector | None = None
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
        """Open one connection: ``POST`` until the session is named, then ``GET ?fromSeq=N``."""
        if self.session_id is None:
            return self._counted(self._start(from_seq))
        self.connections.append(ConnectionRecord("GET", from_seq))
        if self._resume is None:
            session = quote(self.session_id, safe="")
            url = f"{self._base}/sessions/{session}/stream"
            self._resume = httpx_connector(self._client, url, headers=self._headers)
        return self._counted(self._resume(from_seq))  # type: ignore[arg-type]

    @asynccontextmanager
    async def _start(self, from_seq: int | None) -> AsyncIterator[AsyncIterator[bytes]]:
        self.connections.append(ConnectionRecord("POST", from_seq))
        async with _streamed(
            self._client,
            "POST",
            f"{self._base}/sessions",
            content=msgspec.json.encode(self._body),
            headers={**self._headers, "Content-Type": "application/json"},
        ) as response:
            self._accept(response.headers)
            yield response.aiter_bytes()

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

    def _accept(self, headers: httpx.Headers) -> None:
        """Take the session id and complete the handshake from the ``POST`` response."""
        session_id = headers.get(SESSION_ID_HEADER)
        if session_id is None or not is_session_id(session_id):
            raise FatalConnectError(
                f"the broker's response has no valid {SESSION_ID_HEADER} header: {session_id!r}"
            )
        handshake = self._handshake
        if handshake is not None:
            server_hello = headers.get(SERVER_HELLO_HEADER)
            if server_hello is None:
                raise FatalConnectError(
                    f"the broker did not encrypt the session (no {SERVER_HELLO_HEADER} header)"
                )
            try:
                self.session = handshake.complete(server_hello, session_id)
            except EncryptionError as exc:
                raise FatalConnectError(f"the handshake failed: {exc.code}: {exc}") from exc
            except ValueError as exc:
                raise FatalConnectError(f"the handshake failed: {exc}") from exc
        self.session_id = session_id

    def __repr__(self) -> str:
        return (
            f"<BrokerConnector {self._base} session={self.session_id} "
            f"encrypted={self.encrypted} connections={len(self.connections)}>"
        )


class _CountingBody:
    """A response's bytes, counted into ``owner.bytes_received`` as they pass."""

    __slots__ = ("_inner", "_owner")

    def __init__(self, inner: AsyncIterator[bytes], owner: BrokerConnector) -> None:
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
