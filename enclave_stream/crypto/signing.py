"""Optional server authentication: an ECDSA P-256 signature over the handshake transcript.

A server holding a static signing key puts ``signatureB64`` in its
ServerHello; a client that pins the matching public key checks it, which
stops a machine in the middle from answering with its own ephemeral key.
Peers that do not know the field ignore it (compatibility row E5). The
transcript and the signature's form (``r || s``, base64) are specified in
``docs/security.md``, "The signed transcript".
"""

from __future__ import annotations

__all__ = [
    "SIGNATURE_LENGTH",
    "TRANSCRIPT_LABEL",
    "ServerPublicKey",
    "generate_signing_key",
    "handshake_transcript",
    "load_server_public_key",
    "sign_transcript",
    "verify_transcript_signature",
]

from typing import Final, TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from ..errors import Base64DecodeError, EcdhError, EncryptionErrorCode, HandshakeError
from .ecdh import import_public_key
from .encoding import from_base64, to_base64, utf8

TRANSCRIPT_LABEL: Final = b"enclavejs-stream/v2 server-hello signature"
"""Domain separation: these signatures mean nothing in any other protocol."""

SIGNATURE_LENGTH: Final = 64
"""Bytes in a signature: ``r || s``, 32 bytes each."""

ServerPublicKey: TypeAlias = ec.EllipticCurvePublicKey | bytes | str
"""A pinned server key: a key object, the 65-byte point, its base64, or PEM bytes."""

_ECDSA: Final = ec.ECDSA(hashes.SHA256())
_SCALAR_LENGTH: Final = 32
_SIGNATURE_FAILED: Final = EncryptionErrorCode.SIGNATURE_VERIFICATION_FAILED


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def handshake_transcript(
    *,
    protocol_version: int,
    session_id: str,
    client_public_key: bytes,
    server_public_key: bytes,
    key_id: str,
    curve: str = "P-256",
    algorithm: str = "AES-GCM-256",
    kdf: str = "HKDF-SHA-256",
) -> bytes:
    """The bytes a server signs: label and fields, each as a 4-byte big-endian length and the bytes.

    Public keys are the raw 65-byte points, never their base64 text, so two
    spellings of one key cannot give two transcripts.
    """
    return b"".join(
        _field(part)
        for part in (
            TRANSCRIPT_LABEL,
            str(int(protocol_version)).encode("ascii"),
            utf8(session_id),
            client_public_key,
            server_public_key,
            utf8(key_id),
            curve.encode("utf-8"),
            algorithm.encode("utf-8"),
            kdf.encode("utf-8"),
        )
    )


def generate_signing_key() -> ec.EllipticCurvePrivateKey:
    """A new static P-256 signing key for a server (persist it; pin its public half)."""
    return ec.generate_private_key(ec.SECP256R1())


def _p256_private(key: object) -> ec.EllipticCurvePrivateKey:
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise HandshakeError(
        f"The signing key must be an ECDSA P-256 private key, got {type(key).__name__}",
        EncryptionErrorCode.UNSUPPORTED_ALGORITHM,
    )


def _p256_public(key: object) -> ec.EllipticCurvePublicKey:
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise HandshakeError(
        f"The pinned server key must be a P-256 public key, got {type(key).__name__}",
        EncryptionErrorCode.UNSUPPORTED_ALGORITHM,
    )


def sign_transcript(signing_key: ec.EllipticCurvePrivateKey, transcript: bytes) -> str:
    """Sign ``transcript`` with ECDSA P-256/SHA-256; returns base64 of ``r || s``.

    Raises:
        HandshakeError: (``ENCRYPTION_UNSUPPORTED_ALGORITHM``) not a P-256 private key.
    """
    r, s = decode_dss_signature(_p256_private(signing_key).sign(transcript, _ECDSA))
    return to_base64(r.to_bytes(_SCALAR_LENGTH, "big") + s.to_bytes(_SCALAR_LENGTH, "big"))


def verify_transcript_signature(
    public_key: ec.EllipticCurvePublicKey, transcript: bytes, signature_b64: object
) -> None:
    """Check a ServerHello's ``signatureB64`` against the pinned key.

    Raises:
        HandshakeError: (``ENCRYPTION_SIGNATURE_VERIFICATION_FAILED``) the
            signature is missing, not base64, not 64 bytes, or does not verify.
    """
    if not isinstance(signature_b64, str):
        raise HandshakeError(
            "The ServerHello carries no signature, but a server key is pinned", _SIGNATURE_FAILED
        )
    try:
        raw = from_base64(signature_b64)
    except Base64DecodeError as exc:
        raise HandshakeError(f"ServerHello signature: {exc}", _SIGNATURE_FAILED) from None
    if len(raw) != SIGNATURE_LENGTH:
        raise HandshakeError(
            f"ServerHello signature must be {SIGNATURE_LENGTH} bytes (r || s), got {len(raw)}",
            _SIGNATURE_FAILED,
        )
    r = int.from_bytes(raw[:_SCALAR_LENGTH], "big")
    s = int.from_bytes(raw[_SCALAR_LENGTH:], "big")
    try:
        public_key.verify(encode_dss_signature(r, s), transcript, _ECDSA)
    except (InvalidSignature, ValueError):
        raise HandshakeError(
            "ServerHello signature does not verify with the pinned server key "
            "(a different server, or a forged or altered handshake)",
            _SIGNATURE_FAILED,
        ) from None


def load_server_public_key(key: ServerPublicKey) -> ec.EllipticCurvePublicKey:
    """A pinned server key as a key object.

    Accepts a P-256 public key object, the raw 65-byte uncompressed point, the
    base64 of that point, or PEM (``SubjectPublicKeyInfo``) bytes.

    Raises:
        EcdhError: (``ENCRYPTION_INVALID_PUBLIC_KEY``) not a valid point.
        HandshakeError: (``ENCRYPTION_UNSUPPORTED_ALGORITHM``) a key of another
            curve or type.
    """
    if isinstance(key, str):
        return import_public_key(key)
    if isinstance(key, (bytes, bytearray, memoryview)):
        data = bytes(key)
        if data.startswith(b"-----BEGIN"):
            try:
                return _p256_public(load_pem_public_key(data))
            except ValueError as exc:  # malformed PEM
                raise EcdhError(
                    f"Failed to import the pinned server key: {exc}",
                    EncryptionErrorCode.INVALID_PUBLIC_KEY,
                ) from None
        return import_public_key(to_base64(data))
    return _p256_public(key)
