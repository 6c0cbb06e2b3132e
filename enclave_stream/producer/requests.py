"""The ``POST /sessions`` request as the broker reads it, and the resume query parameter.

Two body shapes are accepted (docs/compatibility.md, P8): ours and the one
``@enclave-vm/client`` sends; both decode to :class:`SessionRequestBody`.
"""

from __future__ import annotations

__all__ = [
    "SessionRequest",
    "SessionRequestBody",
    "SessionRequestConfig",
    "SessionRequestEncryption",
    "SessionRunner",
    "decode_session_request",
    "invalid_request",
    "parse_from_seq",
]

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import msgspec
from msgspec import UNSET, UnsetType

from ..errors import BrokerError
from ..events import PositiveInt, ProtocolVersion, SessionLimits
from ..protocol import MAX_SAFE_INTEGER, EncryptionMode
from .access import HttpRequest

if TYPE_CHECKING:
    from .stream import EventStream


_DIGITS: Final = re.compile(r"[0-9]{1,16}")
_CLIENT_SESSION_ID: Final = re.compile(r"s_[A-Za-z0-9._~:-]{1,200}")


class SessionRequestConfig(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The ``config`` of ``POST /sessions``, as ``@enclave-vm/client`` sends it."""

    max_execution_ms: PositiveInt | UnsetType = UNSET
    max_tool_calls: PositiveInt | UnsetType = UNSET
    heartbeat_interval_ms: PositiveInt | UnsetType = UNSET


class SessionRequestEncryption(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``encryption`` of ``POST /sessions``: the mode and the client's hello."""

    mode: EncryptionMode
    client_hello: dict[str, Any] | UnsetType = UNSET


class SessionRequestBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The body of ``POST /sessions``, in either shape of docs/compatibility.md (P8).

    Where both shapes give a setting, ``limits`` wins. Unknown keys are ignored.

    >>> body = msgspec.json.decode(
    ...     b'{"code": "return 1", "limits": {"heartbeatIntervalMs": 5000}}',
    ...     type=SessionRequestBody,
    ... )
    >>> body.code, body.heartbeat_interval_ms
    ('return 1', 5000)
    """

    code: str
    session_id: str | UnsetType = UNSET
    protocol_version: ProtocolVersion | UnsetType = UNSET
    config: SessionRequestConfig | UnsetType = UNSET
    limits: SessionLimits | UnsetType = UNSET
    encryption: SessionRequestEncryption | UnsetType = UNSET

    @property
    def heartbeat_interval_ms(self) -> int | None:
        """The heartbeat interval asked for (``limits`` first, then ``config``), or None."""
        return _first(self.limits, self.config, "heartbeat_interval_ms", "heartbeat_interval_ms")

    @property
    def ttl_ms(self) -> int | None:
        """The session lifetime asked for (``limits.sessionTtlMs``, ``config.maxExecutionMs``)."""
        return _first(self.limits, self.config, "session_ttl_ms", "max_execution_ms")


class SessionRequest(SessionRequestBody, frozen=True, kw_only=True):
    """A ``POST /sessions`` as a :data:`SessionRunner` gets it: the body, and the HTTP request.

    ``http`` is the request it came with (Starlette's ``Request`` under
    :func:`~enclave_stream.starlette.create_broker_app`: its headers,
    client, ``state``), None when :meth:`SessionBroker.create_session` was
    called without one.
    """

    http: HttpRequest | None = None


def _first(limits: object, config: object, limit_name: str, config_name: str) -> int | None:
    for source, name in ((limits, limit_name), (config, config_name)):
        value = getattr(source, name, UNSET)
        if value is not UNSET:
            return int(value)
    return None


SessionRunner = Callable[["EventStream", SessionRequest], Awaitable[None]]
"""Produces one session: appends its events to the stream, ``final`` last.

Runs in the broker's task group, inside ``async with stream`` (heartbeats
on schedule; a failed ``final`` if it ends without one). An exception it
raises is logged; when the broker cancels it (``cancel``, ``shutdown``),
the ``final`` says which. ``run_session`` in ``examples/serve_starlette.py``
is one.
"""


_request_decoder: Final = msgspec.json.Decoder(SessionRequestBody)


def invalid_request(message: str) -> BrokerError:
    return BrokerError(400, "INVALID_REQUEST", message)


def parse_from_seq(text: str | None, name: str = "fromSeq") -> int | None:
    """The ``fromSeq`` (or ``name``) query parameter as an int (None when absent).

    >>> parse_from_seq("12"), parse_from_seq(None)
    (12, None)

    Raises:
        BrokerError: 400 ``INVALID_REQUEST`` unless it is a non-negative
            safe integer in decimal digits.
    """
    if text is None:
        return None
    if not _DIGITS.fullmatch(text) or int(text) > MAX_SAFE_INTEGER:
        raise invalid_request(f"{name} must be a non-negative integer, got {text[:40]!r}")
    return int(text)


def decode_session_request(body: bytes, max_bytes: int) -> SessionRequestBody:
    """The ``POST /sessions`` body, decoded and checked.

    Raises:
        BrokerError: 413 ``REQUEST_TOO_LARGE`` past ``max_bytes``; 400
            ``INVALID_REQUEST`` for a body that is not one, or a ``sessionId``
            that cannot travel in a header and a URL path.
    """
    if len(body) > max_bytes:
        raise BrokerError(413, "REQUEST_TOO_LARGE", f"The request body exceeds {max_bytes} bytes")
    try:
        decoded = _request_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise invalid_request(f"Invalid request body: {exc}") from None
    except RecursionError:  # msgspec's own depth limit
        raise invalid_request("Invalid request body: nested too deeply") from None
    session_id = decoded.session_id
    # A client-chosen id travels in a response header and in URL paths:
    # control characters, non-ASCII or "/" would break one or the other.
    if session_id is not UNSET and _CLIENT_SESSION_ID.fullmatch(session_id) is None:
        raise invalid_request(
            f"Invalid sessionId {session_id!r}: expected 's_' and 1 to 200 of A-Z a-z 0-9 . _ ~ : -"
        )
    return decoded
