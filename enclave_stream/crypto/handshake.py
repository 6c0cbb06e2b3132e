"""The handshake that sets up an :class:`EncryptedSession` on each side.

The client sends :attr:`ClientHandshake.client_hello` and completes with the
server's answer; the server answers with :func:`accept_client_hello`. With a
``signing_key`` the server signs the transcript (:mod:`.signing`), and a
client that pins its public key requires that signature. A peer's hello
(Struct, mapping or JSON text) is validated like any received message, a
Struct too, before its public key is imported (:func:`.ecdh.import_public_key`);
another suite is ``ENCRYPTION_UNSUPPORTED_ALGORITHM`` (docs/compatibility.md C4).
The ``create_*``, ``parse_*`` and ``process_*`` hello functions are the
building blocks of the two halves.
"""

from __future__ import annotations

__all__ = [
    "ClientHandshake",
    "HelloInput",
    "ProcessedClientHello",
    "ProcessedServerHello",
    "accept_client_hello",
    "create_client_hello",
    "create_server_hello",
    "parse_client_hello",
    "parse_server_hello",
    "process_client_hello",
    "process_server_hello",
]

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, NoReturn, SupportsIndex, TypeAlias, TypeVar

import msgspec
from cryptography.hazmat.primitives.asymmetric import ec
from msgspec import UNSET, UnsetType

from ..codec import decode_message, encode_message
from ..errors import (
    EncryptionErrorCode,
    EventValidationError,
    HandshakeError,
    ProtocolError,
)
from ..events import ClientHello, ServerHello
from ..protocol import (
    PROTOCOL_VERSION,
    EncryptionAlgorithm,
    KeyDerivation,
    SupportedCurve,
    generate_key_id,
)
from .ecdh import (
    EcdhKeyPair,
    derive_shared_secret,
    export_public_key_bytes,
    generate_key_pair,
    import_public_key,
)
from .encoding import to_base64
from .session import (
    EncryptedSession,
    ReceiveChecks,
    SessionRole,
    check_key_id,
    check_session_id,
)
from .signing import (
    ServerPublicKey,
    handshake_transcript,
    load_server_public_key,
    sign_transcript,
    verify_transcript_signature,
)

HelloInput: TypeAlias = ClientHello | ServerHello | Mapping[str, Any] | str | bytes
"""A hello as it may arrive: the Struct, its wire form as a mapping, or JSON text."""

_H = TypeVar("_H", ClientHello, ServerHello)

# Fields whose only allowed values name the one algorithm suite of version 2.
_ALGORITHM_FIELDS: Final = ("$.curve", "$.supportedAlgorithms", "$.selectedAlgorithm", "$.kdf")


@dataclass(frozen=True, slots=True)
class ProcessedClientHello:
    """What a server gets from a ClientHello (:func:`process_client_hello`)."""

    server_key_pair: EcdhKeyPair
    """The server's fresh ephemeral key pair."""
    peer_public_key: ec.EllipticCurvePublicKey
    """The client's ephemeral public key."""
    server_hello: ServerHello
    """The answer to send back."""
    key_id: str
    """The session key id, ``k_<uuid4>``."""


@dataclass(frozen=True, slots=True)
class ProcessedServerHello:
    """What a client gets from a ServerHello (:func:`process_server_hello`)."""

    peer_public_key: ec.EllipticCurvePublicKey
    """The server's ephemeral public key."""
    key_id: str
    """The session key id chosen by the server."""


def _refusal(exc: EventValidationError, what: str) -> HandshakeError:
    path = exc.path
    suite = any(path == f or path.startswith((f + "[", f + ".")) for f in _ALGORITHM_FIELDS)
    if suite:
        return HandshakeError(
            f"{what} asks for an unsupported algorithm: {exc} (protocol version 2 supports "
            f"only {SupportedCurve.P256.value}, {EncryptionAlgorithm.AES_GCM_256.value} and "
            f"{KeyDerivation.HKDF_SHA256.value})",
            EncryptionErrorCode.UNSUPPORTED_ALGORITHM,
        )
    return HandshakeError(f"Invalid {what}: {exc}", EncryptionErrorCode.HANDSHAKE_FAILED)


def _parse(raw: object, type_: type[_H]) -> _H:
    what = type_.__name__
    try:
        if type(raw) is type_:
            # A constructed Struct was never validated: judge its wire form,
            # so that its field types are exactly the schema's and a refusal
            # says what decoding the JSON would say.
            raw = encode_message(raw)
        elif not isinstance(raw, (Mapping, str, bytes, bytearray, memoryview)):
            raise HandshakeError(
                f"Expected a {what}, a mapping or JSON text, got {type(raw).__name__}",
                EncryptionErrorCode.HANDSHAKE_FAILED,
            )
        return decode_message(raw, type_)  # type: ignore[arg-type]
    except EventValidationError as exc:
        raise _refusal(exc, what) from None
    except (ProtocolError, msgspec.MsgspecError, TypeError, ValueError) as exc:
        raise HandshakeError(
            f"Invalid {what}: {exc}", EncryptionErrorCode.HANDSHAKE_FAILED
        ) from None


def parse_client_hello(client_hello: HelloInput) -> ClientHello:
    """Validate a ClientHello as a received protocol message (a Struct too).

    Raises:
        HandshakeError: ``ENCRYPTION_UNSUPPORTED_ALGORITHM`` for another curve
            or cipher; ``ENCRYPTION_HANDSHAKE_FAILED`` for anything else that
            breaks the schema (or is not JSON).
    """
    return _parse(client_hello, ClientHello)


def parse_server_hello(server_hello: HelloInput) -> ServerHello:
    """Validate a ServerHello as a received protocol message (an empty key id is refused).

    Raises:
        HandshakeError: as :func:`parse_client_hello` (also for another KDF).
    """
    return _parse(server_hello, ServerHello)


def _peer_key(public_key_b64: str) -> tuple[bytes, ec.EllipticCurvePublicKey]:
    # The raw point (for the signed transcript) and the imported key. Only
    # uncompressed points are imported, so exporting gives the bytes received.
    peer = import_public_key(public_key_b64)
    return export_public_key_bytes(peer), peer


def create_client_hello(key_pair: EcdhKeyPair) -> ClientHello:
    """The ClientHello announcing ``key_pair``'s public key.

    >>> from enclave_stream.crypto.ecdh import key_pair_from_private_scalar
    >>> from enclave_stream import encode_message
    >>> hello = create_client_hello(key_pair_from_private_scalar(1))
    >>> encode_message(hello)[:60]
    b'{"protocolVersion":2,"clientEphemeralPubKeyB64":"BGsX0fLhLEJ'
    """
    return ClientHello(
        protocol_version=PROTOCOL_VERSION,
        client_ephemeral_pub_key_b64=to_base64(export_public_key_bytes(key_pair.public_key)),
        curve=SupportedCurve.P256,
        supported_algorithms=[EncryptionAlgorithm.AES_GCM_256],
    )


def create_server_hello(
    key_pair: EcdhKeyPair, key_id: str, *, signature_b64: str | UnsetType = UNSET
) -> ServerHello:
    """The ServerHello announcing ``key_pair``'s public key and the session key id.

    Raises:
        HandshakeError: (``ENCRYPTION_HANDSHAKE_FAILED``) ``key_id`` is not a
            non-empty string.
    """
    check_key_id(key_id)
    return ServerHello(
        protocol_version=PROTOCOL_VERSION,
        server_ephemeral_pub_key_b64=to_base64(export_public_key_bytes(key_pair.public_key)),
        curve=SupportedCurve.P256,
        selected_algorithm=EncryptionAlgorithm.AES_GCM_256,
        kdf=KeyDerivation.HKDF_SHA256,
        key_id=key_id,
        signature_b64=signature_b64,
    )


def process_client_hello(
    client_hello: HelloInput, *, key_id: str | None = None, key_pair: EcdhKeyPair | None = None
) -> ProcessedClientHello:
    """Server side: check a ClientHello, make a key pair and the ServerHello.

    Args:
        client_hello: the client's hello (Struct, mapping or JSON text).
        key_id: the session key id; by default a fresh ``k_<uuid4>``.
        key_pair: a fixed ephemeral key pair, for tests only.

    Raises:
        HandshakeError: the hello breaks the schema or asks for another suite.
        EcdhError: (``ENCRYPTION_INVALID_PUBLIC_KEY``) its public key is bad.
    """
    hello = parse_client_hello(client_hello)
    _, peer = _peer_key(hello.client_ephemeral_pub_key_b64)
    pair = generate_key_pair() if key_pair is None else key_pair
    kid = generate_key_id() if key_id is None else key_id
    server_hello = create_server_hello(pair, kid)
    return ProcessedClientHello(
        server_key_pair=pair, peer_public_key=peer, server_hello=server_hello, key_id=kid
    )


def process_server_hello(server_hello: HelloInput) -> ProcessedServerHello:
    """Client side: check a ServerHello and import the server's public key.

    This checks no signature (there is no session id or pinned key here);
    :meth:`ClientHandshake.complete <enclave_stream.crypto.ClientHandshake.complete>`
    does.

    Raises:
        HandshakeError: the hello breaks the schema (an empty key id included)
            or names another suite.
        EcdhError: (``ENCRYPTION_INVALID_PUBLIC_KEY``) its public key is bad.
    """
    hello = parse_server_hello(server_hello)
    _, peer = _peer_key(hello.server_ephemeral_pub_key_b64)
    return ProcessedServerHello(peer_public_key=peer, key_id=hello.key_id)


class ClientHandshake:
    """The client's half of the handshake: an ephemeral key pair and its ClientHello.

    Args:
        server_public_key: the server's static signing key to pin (key
            object, 65-byte point, its base64, or PEM). When given,
            :meth:`complete` requires a valid ``signatureB64``.
        key_pair: a fixed ephemeral key pair, for tests only.
        checks: the receiver checks of the session (all on by default).

    The private key is dropped once :meth:`complete` succeeds; a handshake
    completes at most once, and cannot be copied or pickled.
    """

    __slots__ = (
        "_checks",
        "_client_hello",
        "_client_point",
        "_private_key",
        "_server_key",
    )

    def __init__(
        self,
        *,
        server_public_key: ServerPublicKey | None = None,
        key_pair: EcdhKeyPair | None = None,
        checks: ReceiveChecks | None = None,
    ) -> None:
        self._server_key: ec.EllipticCurvePublicKey | None = (
            None if server_public_key is None else load_server_public_key(server_public_key)
        )
        pair = generate_key_pair() if key_pair is None else key_pair
        self._private_key: ec.EllipticCurvePrivateKey | None = pair.private_key
        self._client_point = export_public_key_bytes(pair.public_key)
        self._client_hello = create_client_hello(pair)
        self._checks = checks

    @property
    def client_hello(self) -> ClientHello:
        """The ClientHello to send (in ``CreateSessionRequest.encryption.clientHello``)."""
        return self._client_hello

    @property
    def completed(self) -> bool:
        """True once :meth:`complete` has made the session."""
        return self._private_key is None

    def complete(self, server_hello: HelloInput, session_id: str) -> EncryptedSession:
        """Check the server's answer and derive the session.

        Args:
            server_hello: the ServerHello (Struct, mapping or JSON text).
            session_id: the id the server gave the session (the HKDF salt).

        Raises:
            HandshakeError: ``ENCRYPTION_SIGNATURE_VERIFICATION_FAILED`` (a
                pinned key and a missing or wrong signature),
                ``ENCRYPTION_UNSUPPORTED_ALGORITHM`` (another suite),
                ``ENCRYPTION_HANDSHAKE_FAILED`` (a malformed hello, a bad
                session id, or a second call).
            EcdhError: (``ENCRYPTION_INVALID_PUBLIC_KEY``) a bad server key.
        """
        private_key = self._private_key
        if private_key is None:
            raise HandshakeError(
                "This handshake already completed; start a new one for a new session",
                EncryptionErrorCode.HANDSHAKE_FAILED,
            )
        check_session_id(session_id)
        hello = parse_server_hello(server_hello)
        server_point, peer = _peer_key(hello.server_ephemeral_pub_key_b64)
        if self._server_key is not None:
            transcript = handshake_transcript(
                protocol_version=hello.protocol_version,
                session_id=session_id,
                client_public_key=self._client_point,
                server_public_key=server_point,
                key_id=hello.key_id,
                curve=hello.curve,
                algorithm=hello.selected_algorithm,
                kdf=hello.kdf,
            )
            verify_transcript_signature(self._server_key, transcript, hello.signature_b64)
        secret = derive_shared_secret(private_key, peer)
        session = EncryptedSession.from_shared_secret(
            secret, session_id, hello.key_id, SessionRole.CLIENT, checks=self._checks
        )
        self._private_key = None  # ephemeral: no later call can derive anything from it
        return session

    def __repr__(self) -> str:
        pinned = self._server_key is not None
        return f"<ClientHandshake pinned={pinned} completed={self.completed}>"

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError("ClientHandshake cannot be copied or pickled: it holds a private key")


def accept_client_hello(
    client_hello: HelloInput,
    session_id: str,
    *,
    signing_key: ec.EllipticCurvePrivateKey | None = None,
    key_id: str | None = None,
    key_pair: EcdhKeyPair | None = None,
    checks: ReceiveChecks | None = None,
) -> tuple[ServerHello, EncryptedSession]:
    """The server's half: check the ClientHello, answer it, and derive the session.

    Args:
        client_hello: the client's hello (Struct, mapping or JSON text).
        session_id: the new session's id (the HKDF salt).
        signing_key: the server's static ECDSA P-256 key; when given, the
            ServerHello carries ``signatureB64`` over the transcript.
        key_id: the session key id; by default a fresh ``k_<uuid4>``.
        key_pair: a fixed ephemeral key pair, for tests only.
        checks: the receiver checks of the session (all on by default).

    Returns:
        The ServerHello to send back, and the server's session.

    Raises:
        HandshakeError: a malformed hello or session id
            (``ENCRYPTION_HANDSHAKE_FAILED``), another suite
            (``ENCRYPTION_UNSUPPORTED_ALGORITHM``), a signing key that is not P-256.
        EcdhError: (``ENCRYPTION_INVALID_PUBLIC_KEY``) a bad client key.
    """
    check_session_id(session_id)
    processed = process_client_hello(client_hello, key_id=key_id, key_pair=key_pair)
    pair, peer, kid = processed.server_key_pair, processed.peer_public_key, processed.key_id
    server_hello = processed.server_hello
    if signing_key is not None:
        transcript = handshake_transcript(
            protocol_version=PROTOCOL_VERSION,
            session_id=session_id,
            client_public_key=export_public_key_bytes(peer),
            server_public_key=export_public_key_bytes(pair.public_key),
            key_id=kid,
        )
        signature = sign_transcript(signing_key, transcript)
        server_hello = msgspec.structs.replace(server_hello, signature_b64=signature)
    secret = derive_shared_secret(pair.private_key, peer)
    session = EncryptedSession.from_shared_secret(
        secret, session_id, kid, SessionRole.SERVER, checks=checks
    )
    return server_hello, session
