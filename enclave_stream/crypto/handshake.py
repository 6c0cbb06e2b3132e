"""The handshake that sets up an :class:`EncryptedSession` on each side.

Client::

    handshake = ClientHandshake(server_public_key=pinned)   # pin: optional
    request = CreateSessionRequest(code=..., encryption=EncryptionRequest(
        mode="required", client_hello=handshake.client_hello))
    ...                                                     # server answers
    session = handshake.complete(server_hello, session_id)

Server::

    server_hello, session = accept_client_hello(client_hello, session_id,
                                                signing_key=static_key)

Both sides then derive the same two keys (HKDF-SHA256 over the P-256 ECDH
secret, salted with the session id). With a ``signing_key`` the server signs
the handshake transcript (:mod:`.signing`); a client that pins the server's
public key refuses a ServerHello without a valid signature.
"""

from __future__ import annotations

__all__ = ["ClientHandshake", "accept_client_hello"]

from typing import NoReturn, SupportsIndex

from cryptography.hazmat.primitives.asymmetric import ec
from msgspec import UNSET, UnsetType

from ..errors import EncryptionErrorCode, HandshakeError
from ..events import ClientHello, ServerHello
from ..protocol import PROTOCOL_VERSION, is_session_id
from .ecdh import (
    EcdhKeyPair,
    derive_shared_secret,
    export_public_key_bytes,
    new_p256_key,
    p256_shared_secret,
)
from .hello import (
    HelloInput,
    build_client_hello,
    build_server_hello,
    decode_peer_key,
    new_key_id,
    parse_client_hello,
    parse_server_hello,
)
from .session import EncryptedSession, ReceiveChecks, SessionRole
from .signing import (
    ServerPublicKey,
    handshake_transcript,
    load_server_public_key,
    sign_transcript,
    verify_transcript_signature,
)


def _check_session_id(session_id: object) -> None:
    if not is_session_id(session_id):
        raise HandshakeError(
            f"Invalid session id {session_id!r}: expected 's_' and at least one more character",
            EncryptionErrorCode.HANDSHAKE_FAILED,
        )


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
        "_exchange",
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
        self._private_key: ec.EllipticCurvePrivateKey | None
        if key_pair is None:
            self._private_key, self._client_point = new_p256_key()
            # Our own key and the server's (imported as P-256 by complete)
            # need no curve checks; a caller's key pair keeps them.
            self._exchange = p256_shared_secret
        else:
            self._private_key = key_pair.private_key
            self._client_point = export_public_key_bytes(key_pair.public_key)
            self._exchange = derive_shared_secret
        self._client_hello = build_client_hello(self._client_point)
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
        _check_session_id(session_id)
        hello = parse_server_hello(server_hello)
        server_point, peer = decode_peer_key(hello.server_ephemeral_pub_key_b64)
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
        secret = self._exchange(private_key, peer)
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
    _check_session_id(session_id)
    hello = parse_client_hello(client_hello)
    client_point, peer = decode_peer_key(hello.client_ephemeral_pub_key_b64)
    if key_pair is None:
        private_key, server_point = new_p256_key()
        # Our own key and the client's (imported as P-256 just now) need no
        # curve checks; a caller's key pair keeps them.
        exchange = p256_shared_secret
    else:
        private_key = key_pair.private_key
        server_point = export_public_key_bytes(key_pair.public_key)
        exchange = derive_shared_secret
    kid = new_key_id() if key_id is None else key_id
    signature: str | UnsetType = UNSET
    if signing_key is not None:
        transcript = handshake_transcript(
            protocol_version=PROTOCOL_VERSION,
            session_id=session_id,
            client_public_key=client_point,
            server_public_key=server_point,
            key_id=kid,
        )
        signature = sign_transcript(signing_key, transcript)
    server_hello = build_server_hello(server_point, kid, signature)
    secret = exchange(private_key, peer)
    session = EncryptedSession.from_shared_secret(
        secret, session_id, kid, SessionRole.SERVER, checks=checks
    )
    return server_hello, session
