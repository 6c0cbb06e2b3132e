"""The hello messages of the handshake: making them, and checking a peer's.

A hello from the peer (a :class:`~enclave_stream.ClientHello` /
:class:`~enclave_stream.ServerHello` Struct, a mapping, or JSON text) is first
validated like any protocol message. Then its public key is imported: exactly
65 bytes, ``0x04 || X || Y``, on the P-256 curve.

Deliberate deviation: another curve, cipher or KDF is refused with
``ENCRYPTION_UNSUPPORTED_ALGORITHM`` (the reference reports an unknown curve as
``ENCRYPTION_INVALID_PUBLIC_KEY``, because it only notices when the key import
fails).
"""

from __future__ import annotations

__all__ = [
    "HelloInput",
    "ProcessedClientHello",
    "ProcessedServerHello",
    "build_client_hello",
    "build_server_hello",
    "create_client_hello",
    "create_server_hello",
    "decode_peer_key",
    "new_key_id",
    "parse_client_hello",
    "parse_server_hello",
    "process_client_hello",
    "process_server_hello",
]

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, TypeVar, cast

import msgspec
from cryptography.hazmat.primitives.asymmetric import ec
from msgspec import UNSET, UnsetType

from ..codec import decode_message, enc_hook, encode_message
from ..errors import (
    Base64DecodeError,
    EcdhError,
    EncryptionErrorCode,
    EventValidationError,
    HandshakeError,
    ProtocolError,
)
from ..events import ClientHello, ServerHello
from ..protocol import (
    KEY_ID_PREFIX,
    PROTOCOL_VERSION,
    EncryptionAlgorithm,
    KeyDerivation,
    SupportedCurve,
)
from ._codec import b64decode, to_b64
from .ecdh import (
    EcdhKeyPair,
    export_public_key_bytes,
    generate_key_pair,
    import_p256_point,
)

HelloInput: TypeAlias = ClientHello | ServerHello | Mapping[str, Any] | str | bytes
"""A hello as it may arrive: the Struct, its wire form as a mapping, or JSON text."""

_H = TypeVar("_H", ClientHello, ServerHello)

# Fields whose only allowed values name the one algorithm suite of version 2.
_ALGORITHM_FIELDS: Final = ("$.curve", "$.supportedAlgorithms", "$.selectedAlgorithm", "$.kdf")


@dataclass(frozen=True, slots=True)
class ProcessedClientHello:
    """What a server gets from a ClientHello (the reference's ``processClientHello``)."""

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
    """What a client gets from a ServerHello (the reference's ``processServerHello``)."""

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


# Writes a hello Struct back to its wire form for validation; anything it
# cannot encode (lone surrogates, odd types) takes encode_message's JS path.
_STRUCT_ENCODER: Final = msgspec.json.Encoder(enc_hook=enc_hook)


def _is_plain_text(value: object) -> bool:
    # A non-empty ASCII str: what the schema's non-empty string accepts, and
    # JSON-encodable as it is (no lone surrogates to take the JS path).
    return type(value) is str and value != "" and value.isascii()


def _is_wire_version(version: object) -> bool:
    # A plain int (not the "absent" marker, not a bool) naming version 2.
    return type(version) is int and version == PROTOCOL_VERSION


def _is_valid_client_hello(hello: ClientHello) -> bool:
    """True only if every field already holds what decoding the hello's JSON would give.

    That is the one suite of version 2, as enum members, with a non-empty
    ASCII key. A no is not a refusal: anything else (another suite, a wrong
    type, an absent version, non-ASCII text...) goes to the schema.
    """
    algorithms = hello.supported_algorithms
    return (
        _is_wire_version(hello.protocol_version)
        and _is_plain_text(hello.client_ephemeral_pub_key_b64)
        and hello.curve is SupportedCurve.P256
        and type(algorithms) is list
        and len(algorithms) == 1
        and algorithms[0] is EncryptionAlgorithm.AES_GCM_256
    )


def _is_valid_server_hello(hello: ServerHello) -> bool:
    """As :func:`_is_valid_client_hello`, for a ServerHello (signature absent or ASCII text)."""
    signature = hello.signature_b64
    return (
        _is_wire_version(hello.protocol_version)
        and _is_plain_text(hello.server_ephemeral_pub_key_b64)
        and hello.curve is SupportedCurve.P256
        and hello.selected_algorithm is EncryptionAlgorithm.AES_GCM_256
        and hello.kdf is KeyDerivation.HKDF_SHA256
        and _is_plain_text(hello.key_id)
        and (signature is UNSET or (type(signature) is str and signature.isascii()))
    )


def _parse(raw: object, type_: type[_H], is_valid: Callable[[_H], bool]) -> _H:
    what = type_.__name__
    try:
        if type(raw) is type_:
            # A constructed Struct was never validated. When its fields are
            # exactly what decoding gives, it is its own decoded form (the
            # handshake's own hellos always are); otherwise re-read its wire
            # form, so that its field types are exactly the schema's and a
            # refusal says what decoding the JSON would say.
            if is_valid(raw):
                return raw
            struct = cast(msgspec.Struct, raw)
            try:
                raw = _STRUCT_ENCODER.encode(struct)
            except (TypeError, ValueError, msgspec.EncodeError):
                raw = encode_message(struct)
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
    """Validate a ClientHello as a received protocol message.

    A ClientHello Struct whose fields are already exactly what decoding gives
    (like :class:`~enclave_stream.crypto.ClientHandshake`'s) is returned as it is.

    Raises:
        HandshakeError: ``ENCRYPTION_UNSUPPORTED_ALGORITHM`` for another curve
            or cipher; ``ENCRYPTION_HANDSHAKE_FAILED`` for anything else that
            breaks the schema (or is not JSON).
    """
    return _parse(client_hello, ClientHello, _is_valid_client_hello)


def parse_server_hello(server_hello: HelloInput) -> ServerHello:
    """Validate a ServerHello as a received protocol message (an empty key id is refused).

    A valid ServerHello Struct is returned as it is, as by :func:`parse_client_hello`.

    Raises:
        HandshakeError: as :func:`parse_client_hello` (also for another KDF).
    """
    return _parse(server_hello, ServerHello, _is_valid_server_hello)


def decode_peer_key(public_key_b64: str) -> tuple[bytes, ec.EllipticCurvePublicKey]:
    """The peer's raw 65-byte point and the imported key.

    Raises:
        EcdhError: (``ENCRYPTION_INVALID_PUBLIC_KEY``) not base64, not an
            uncompressed point, or not on the curve.
    """
    try:
        point = b64decode(public_key_b64)
    except Base64DecodeError as exc:
        raise EcdhError(
            f"Failed to import public key: {exc}", EncryptionErrorCode.INVALID_PUBLIC_KEY
        ) from None
    return point, import_p256_point(point)


def new_key_id() -> str:
    """A fresh key id ``k_<uuid4>`` (random version-4 UUID, lower-case hex).

    The same format as :func:`~enclave_stream.generate_key_id`, formatted
    directly from 16 random bytes: ``uuid.uuid4()`` costs as much as the rest
    of a ServerHello.
    """
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{KEY_ID_PREFIX}{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def create_client_hello(key_pair: EcdhKeyPair) -> ClientHello:
    """The ClientHello announcing ``key_pair``'s public key.

    >>> from enclave_stream.crypto import key_pair_from_private_scalar
    >>> from enclave_stream import encode_message
    >>> hello = create_client_hello(key_pair_from_private_scalar(1))
    >>> encode_message(hello)[:60]
    b'{"protocolVersion":2,"clientEphemeralPubKeyB64":"BGsX0fLhLEJ'
    """
    return build_client_hello(export_public_key_bytes(key_pair.public_key))


def build_client_hello(point: bytes) -> ClientHello:
    """The ClientHello for a raw 65-byte public point (see :func:`create_client_hello`)."""
    return ClientHello(
        protocol_version=PROTOCOL_VERSION,
        client_ephemeral_pub_key_b64=to_b64(point),
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
    return build_server_hello(export_public_key_bytes(key_pair.public_key), key_id, signature_b64)


def build_server_hello(point: bytes, key_id: str, signature_b64: str | UnsetType) -> ServerHello:
    """The ServerHello for a raw 65-byte public point (see :func:`create_server_hello`)."""
    if not (isinstance(key_id, str) and key_id):
        raise HandshakeError(
            f"The key id must be a non-empty string, got {key_id!r}",
            EncryptionErrorCode.HANDSHAKE_FAILED,
        )
    return ServerHello(
        protocol_version=PROTOCOL_VERSION,
        server_ephemeral_pub_key_b64=to_b64(point),
        curve=SupportedCurve.P256,
        selected_algorithm=EncryptionAlgorithm.AES_GCM_256,
        kdf=KeyDerivation.HKDF_SHA256,
        key_id=key_id,
        signature_b64=signature_b64,
    )


def process_client_hello(
    client_hello: HelloInput, *, key_id: str | None = None
) -> ProcessedClientHello:
    """Server side: check a ClientHello, make a key pair and the ServerHello.

    Args:
        client_hello: the client's hello (Struct, mapping or JSON text).
        key_id: the session key id; by default a fresh ``k_<uuid4>``.

    Raises:
        HandshakeError: the hello breaks the schema or asks for another suite.
        EcdhError: (``ENCRYPTION_INVALID_PUBLIC_KEY``) its public key is bad.
    """
    hello = parse_client_hello(client_hello)
    _, peer = decode_peer_key(hello.client_ephemeral_pub_key_b64)
    pair = generate_key_pair()
    kid = new_key_id() if key_id is None else key_id
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
    _, peer = decode_peer_key(hello.server_ephemeral_pub_key_b64)
    return ProcessedServerHello(peer_public_key=peer, key_id=hello.key_id)
