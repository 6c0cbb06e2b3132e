"""Who may do what with a broker's sessions: the authorization hook and its ready-made tokens.

A :class:`~enclave_stream.producer.SessionBroker` asks its ``authorize``
hook before every route does anything: create (``POST /sessions``), read
(``GET /sessions/{id}/stream``, a resume too), cancel (``POST
/sessions/{id}/cancel``, ``DELETE /sessions/{id}``), list (``GET
/sessions``) and info (``GET /sessions/{id}``). The hook gets an
:class:`Access` (the action, the HTTP request with its headers, the session)
and answers with a :data:`Decision`: allow, refuse (403), or raise a
:class:`~enclave_stream.errors.BrokerError` of its own (401 with
``WWW-Authenticate``, 429 with ``Retry-After`` ...), which is the answer.
Allowing a create may return a :class:`Grant`: the identity the session is
counted against (``BrokerConfig.max_sessions_per_identity``) and headers for
the ``POST`` response. The broker keeps the grant with the session, and
every later check of that session sees it (:attr:`Access.grant`).

:class:`SessionTokens` is a ready hook: a capability token per session,
returned on ``POST`` and required by every other route of that session.
"""

from __future__ import annotations

__all__ = [
    "SESSION_TOKEN_HEADER",
    "Access",
    "Action",
    "Authorize",
    "Decision",
    "Grant",
    "HttpRequest",
    "SessionTokens",
    "decide",
    "token_digest",
]

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

from ..errors import BrokerError
from ..protocol import StrEnum

if TYPE_CHECKING:
    from .requests import SessionRequest
    from .stream import EventStream


class HttpRequest(Protocol):
    """What the broker needs of an HTTP request: its method and headers.

    :func:`enclave_stream.starlette.create_broker_app` passes Starlette's
    ``Request`` (``isinstance(access.request, Request)`` gives the rest:
    ``client``, ``cookies``, ``state``, ``scope``).
    """

    @property
    def method(self) -> str:
        """The HTTP method, upper case."""
        ...

    @property
    def headers(self) -> Mapping[str, str]:
        """The request headers (case-insensitive names under Starlette)."""
        ...


class Action(StrEnum):
    """What a request asks of the broker."""

    CREATE = "create"
    READ = "read"
    CANCEL = "cancel"
    LIST = "list"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Grant:
    """A create allowed, and what comes with it.

    Attributes:
        identity: whom the session belongs to (a user, a tenant, an API
            key); the broker counts the running sessions of each identity
            against ``BrokerConfig.max_sessions_per_identity``. None: no one
            in particular (not counted).
        headers: added to the ``POST /sessions`` response.
    """

    identity: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


Decision = Grant | bool | None
"""A hook's answer: None, True or a :class:`Grant` allow; False refuses (403 ``FORBIDDEN``)."""


@dataclass(frozen=True, slots=True)
class Access:
    """One check of the authorization hook.

    Attributes:
        action: what is asked.
        request: the HTTP request (None when a route method was called
            without one).
        session_id: the session's id (for a create, the id it will have);
            None for a list.
        session: the session's stream; None for a create, a list, and a
            session that is no longer held (the answer will then be 410).
        grant: what the hook granted when the session was created (None for
            a create, a list, or a stream added with ``broker.add``).
        body: for a create, the request (its body decoded).
    """

    action: Action
    request: HttpRequest | None
    session_id: str | None = None
    session: EventStream | None = None
    grant: Grant | None = None
    body: SessionRequest | None = None


Authorize = Callable[[Access], Awaitable[Decision]]
"""The authorization hook: ``async def authorize(access: Access) -> Decision``."""


async def decide(authorize: Authorize | None, access: Access) -> Grant:
    """Ask ``authorize`` (None: allow everything); the grant, or the refusal raised.

    Raises:
        BrokerError: 403 ``FORBIDDEN`` when the hook answers False; any
            ``BrokerError`` the hook raises.
    """
    if authorize is None:
        return _NO_GRANT
    decision = await authorize(access)
    if decision is False:
        what = "the sessions" if access.action is Action.LIST else f"session {access.session_id}"
        raise BrokerError(403, "FORBIDDEN", f"Not allowed to {access.action.value} {what}")
    if isinstance(decision, Grant):
        return decision
    if decision is None or decision is True:
        return _NO_GRANT
    raise TypeError(f"an authorize hook returns a Grant, a bool or None, not {decision!r}")


_NO_GRANT: Final = Grant()

SESSION_TOKEN_HEADER: Final = "X-Session-Token"
"""The response header of :class:`SessionTokens`' token, and the request header it reads."""


_DIGEST_PREFIX: Final = "sha256:"


def token_digest(token: str) -> str:
    """What a shared log keeps instead of a session token: ``sha256:`` and its hex digest.

    :class:`SessionTokens` accepts a grant holding either the token or its
    digest; the token itself never has to leave the replica that made it.

    >>> token_digest("t")
    'sha256:e3b98a4da31a127d4bde6e43033f66ba274cab0eb7eb1c70ec41402bf6273dd8'
    """
    return _DIGEST_PREFIX + hashlib.sha256(token.encode()).hexdigest()


class SessionTokens:
    """A hook giving each session a capability token: whoever holds it may use the session.

    ``POST /sessions`` answers with a fresh random token in ``header``
    (``X-Session-Token``); reading, resuming, cancelling and the info of
    that session need it, in the same header or as ``Authorization: Bearer
    <token>``: missing is 401 ``UNAUTHORIZED``, wrong is 403 ``FORBIDDEN``.
    Listing all sessions is refused unless ``allow_list``. A stream added
    with ``broker.add`` has no token and is refused to everyone.

    ``then`` is another hook asked first, for every action (who may create
    at all, and whom the session belongs to: its :class:`Grant` identity and
    headers are kept). The token lives with the session's grant, in memory,
    and goes with the session; a shared log keeps only its
    :func:`token_digest`.

    >>> authorize = SessionTokens()
    >>> authorize.header
    'X-Session-Token'
    """

    def __init__(
        self,
        *,
        header: str = SESSION_TOKEN_HEADER,
        then: Authorize | None = None,
        allow_list: bool = False,
    ) -> None:
        self.header = header
        self._then = then
        self._allow_list = allow_list

    async def __call__(self, access: Access) -> Decision:
        granted = await decide(self._then, access)
        if access.action is Action.CREATE:
            token = secrets.token_urlsafe(32)
            return Grant(granted.identity, {**granted.headers, self.header: token})
        if access.action is Action.LIST:
            return self._allow_list
        expected = None if access.grant is None else access.grant.headers.get(self.header)
        presented = self._presented(access.request)
        if presented is None:
            raise BrokerError(
                401,
                "UNAUTHORIZED",
                f"This session needs its token (the {self.header} header of its POST response)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if expected is not None and expected.startswith(_DIGEST_PREFIX):
            # Kept elsewhere as its digest (a shared log): the token is hashed, never
            # the digest compared as presented.
            presented = token_digest(presented)
        if expected is None or not hmac.compare_digest(presented.encode(), expected.encode()):
            raise BrokerError(403, "FORBIDDEN", "The token does not open this session")
        return True

    def _presented(self, request: HttpRequest | None) -> str | None:
        if request is None:
            return None
        headers = request.headers
        token = headers.get(self.header) or headers.get(self.header.lower())
        if token:
            return token
        authorization = headers.get("authorization") or headers.get("Authorization") or ""
        scheme, _, value = authorization.partition(" ")
        return value.strip() or None if scheme.lower() == "bearer" else None
