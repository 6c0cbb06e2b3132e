"""P-256 ECDH, the key agreement of the handshake.

Public keys travel as base64 of the 65-byte uncompressed point
``0x04 || X || Y`` (no other encoding is imported: docs/compatibility.md C3);
the shared secret is the 32-byte X coordinate of ``d*Q``.
"""

from __future__ import annotations

__all__ = [
    "CURVE",
    "PUBLIC_KEY_LENGTH",
    "SHARED_SECRET_LENGTH",
    "EcdhKeyPair",
    "SerializedPublicKey",
    "derive_shared_secret",
    "export_public_key",
    "export_public_key_bytes",
    "generate_key_pair",
    "import_public_key",
    "key_pair_from_private_scalar",
]

from dataclasses import dataclass, field
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..errors import Base64DecodeError, EcdhError, EncryptionErrorCode
from ..protocol import SupportedCurve
from .encoding import from_base64, to_base64

CURVE: Final = SupportedCurve.P256
"""The one curve of protocol version 2 (``"P-256"``)."""

PUBLIC_KEY_LENGTH: Final = 65
"""Bytes in an uncompressed P-256 point (``0x04 || X || Y``)."""

SHARED_SECRET_LENGTH: Final = 32
"""Bytes in the ECDH shared secret (the X coordinate)."""

_UNCOMPRESSED_TAG: Final = 0x04
_P256: Final = ec.SECP256R1()
_ECDH: Final = ec.ECDH()
_INVALID_PUBLIC_KEY: Final = EncryptionErrorCode.INVALID_PUBLIC_KEY
_OTHER_ENCODINGS: Final = {
    0x00: "the point at infinity",
    0x02: "a compressed point",
    0x03: "a compressed point",
    0x06: "a hybrid point",
    0x07: "a hybrid point",
}


@dataclass(frozen=True, slots=True)
class EcdhKeyPair:
    """An ephemeral P-256 key pair (``cryptography`` key objects)."""

    public_key: ec.EllipticCurvePublicKey
    """The public half, sent to the peer with :func:`export_public_key`."""
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    """The private half; never leaves the process."""


@dataclass(frozen=True, slots=True)
class SerializedPublicKey:
    """A public key as the protocol sends it."""

    public_key_b64: str
    """Standard padded base64 of the 65-byte uncompressed point."""
    curve: str = CURVE
    """Always ``"P-256"``."""


def _check_curve(curve: str) -> None:
    if curve != CURVE:
        raise EcdhError(
            f"Unsupported curve {curve!r}: only {CURVE.value} is supported",
            EncryptionErrorCode.UNSUPPORTED_ALGORITHM,
        )


def _check_key_curve(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> None:
    if not isinstance(key.curve, ec.SECP256R1):
        raise EcdhError(
            f"Unsupported curve {key.curve.name!r}: only {CURVE.value} (secp256r1) is supported",
            EncryptionErrorCode.UNSUPPORTED_ALGORITHM,
        )


def generate_key_pair(curve: str = CURVE) -> EcdhKeyPair:
    """A new random P-256 key pair.

    Raises:
        EcdhError: (``ENCRYPTION_UNSUPPORTED_ALGORITHM``) ``curve`` is not ``"P-256"``.
    """
    _check_curve(curve)
    private_key = ec.generate_private_key(_P256)
    return EcdhKeyPair(public_key=private_key.public_key(), private_key=private_key)


def key_pair_from_private_scalar(private_scalar: int | bytes, curve: str = CURVE) -> EcdhKeyPair:
    """The key pair of a fixed private scalar ``d`` (big-endian bytes or an int).

    For tests and test vectors: real sessions use :func:`generate_key_pair`.

    Raises:
        EcdhError: ``ENCRYPTION_HANDSHAKE_FAILED`` if ``d`` is not in
            ``[1, n-1]`` (n = the group order), ``ENCRYPTION_UNSUPPORTED_ALGORITHM``
            for another curve.
    """
    _check_curve(curve)
    d = (
        int.from_bytes(private_scalar, "big")
        if isinstance(private_scalar, bytes)
        else private_scalar
    )
    try:
        private_key = ec.derive_private_key(d, _P256)
    except ValueError as exc:
        raise EcdhError(
            f"Invalid P-256 private scalar: it must be between 1 and the group order - 1 ({exc})",
            EncryptionErrorCode.HANDSHAKE_FAILED,
        ) from exc
    return EcdhKeyPair(public_key=private_key.public_key(), private_key=private_key)


def export_public_key_bytes(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The 65-byte uncompressed point ``0x04 || X || Y`` of a P-256 public key."""
    _check_key_curve(public_key)
    return public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def export_public_key(public_key: ec.EllipticCurvePublicKey) -> SerializedPublicKey:
    """A public key as the protocol sends it (base64 of the uncompressed point)."""
    return SerializedPublicKey(public_key_b64=to_base64(export_public_key_bytes(public_key)))


def import_public_key(public_key_b64: str, curve: str = CURVE) -> ec.EllipticCurvePublicKey:
    """Import a peer's public key: base64 of the 65-byte uncompressed point, on the curve.

    The base64 text is read as ``atob`` reads it (whitespace ignored, padding
    optional).

    Raises:
        EcdhError: ``ENCRYPTION_INVALID_PUBLIC_KEY`` for anything but a valid
            uncompressed point (compressed, hybrid, infinity, off the curve,
            wrong length, empty, not base64); ``ENCRYPTION_UNSUPPORTED_ALGORITHM``
            for another curve.
    """
    _check_curve(curve)
    try:
        point = from_base64(public_key_b64)
    except Base64DecodeError as exc:
        raise EcdhError(f"Failed to import public key: {exc}", _INVALID_PUBLIC_KEY) from exc
    if len(point) != PUBLIC_KEY_LENGTH or point[0] != _UNCOMPRESSED_TAG:
        raise EcdhError(
            f"Failed to import public key: {_describe_bad_point(point)}", _INVALID_PUBLIC_KEY
        )
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(_P256, point)
    except ValueError as exc:
        raise EcdhError(
            "Failed to import public key: the point is not on the P-256 curve", _INVALID_PUBLIC_KEY
        ) from exc


def derive_shared_secret(
    private_key: ec.EllipticCurvePrivateKey, peer_public_key: ec.EllipticCurvePublicKey
) -> bytes:
    """The 32-byte ECDH shared secret (X coordinate of ``d * Q``) with a peer.

    Raises:
        EcdhError: ``ENCRYPTION_UNSUPPORTED_ALGORITHM`` if either key is not
            P-256; ``ENCRYPTION_HANDSHAKE_FAILED`` if the agreement fails.
    """
    _check_key_curve(private_key)
    _check_key_curve(peer_public_key)
    try:
        return private_key.exchange(_ECDH, peer_public_key)
    except ValueError as exc:
        raise EcdhError(
            f"Failed to derive shared secret: {exc}", EncryptionErrorCode.HANDSHAKE_FAILED
        ) from exc


def _describe_bad_point(point: bytes) -> str:
    if not point:
        return "the key is empty"
    tag = point[0]
    if len(point) != PUBLIC_KEY_LENGTH and tag == _UNCOMPRESSED_TAG:
        return (
            f"an uncompressed P-256 point is {PUBLIC_KEY_LENGTH} bytes (0x04 || X || Y), "
            f"got {len(point)}"
        )
    what = _OTHER_ENCODINGS.get(tag, "data")
    size = "1 byte" if len(point) == 1 else f"{len(point)} bytes"
    return (
        f"expected a {PUBLIC_KEY_LENGTH}-byte uncompressed P-256 point (0x04 || X || Y), got "
        f"{what} ({size} starting with 0x{tag:02x}); only uncompressed points are accepted"
    )
