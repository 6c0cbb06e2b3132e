"""P-256 ECDH: key pairs, public key import/export, shared secrets."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave_stream.crypto import (
    EcdhError,
    SerializedPublicKey,
    derive_shared_secret,
    export_public_key,
    from_base64,
    generate_key_pair,
    import_public_key,
    to_base64,
)
from enclave_stream.crypto.ecdh import (
    CURVE,
    PUBLIC_KEY_LENGTH,
    SHARED_SECRET_LENGTH,
    export_public_key_bytes,
    key_pair_from_private_scalar,
)
from enclave_stream.errors import Base64DecodeError, EncryptionErrorCode

ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def test_constants() -> None:
    assert str(CURVE) == "P-256"
    assert (PUBLIC_KEY_LENGTH, SHARED_SECRET_LENGTH) == (65, 32)


def test_both_sides_agree() -> None:
    client, server = generate_key_pair(), generate_key_pair()
    client_pub = import_public_key(export_public_key(client.public_key).public_key_b64)
    server_pub = import_public_key(export_public_key(server.public_key).public_key_b64)
    secret = derive_shared_secret(client.private_key, server_pub)
    assert len(secret) == 32
    assert secret == derive_shared_secret(server.private_key, client_pub)
    assert secret != derive_shared_secret(client.private_key, client_pub)


def test_export_format() -> None:
    pair = generate_key_pair("P-256")
    exported = export_public_key(pair.public_key)
    assert exported.curve == "P-256"
    raw = from_base64(exported.public_key_b64)
    assert raw == export_public_key_bytes(pair.public_key)
    assert len(raw) == 65
    assert raw[0] == 0x04
    assert exported == SerializedPublicKey(to_base64(raw))


@settings(max_examples=25)
@given(st.integers(1, ORDER - 1))
def test_scalar_forms_agree(d: int) -> None:
    from_int = key_pair_from_private_scalar(d)
    from_bytes = key_pair_from_private_scalar(d.to_bytes(32, "big"))
    assert export_public_key(from_int.public_key) == export_public_key(from_bytes.public_key)
    assert from_int.private_key.private_numbers().private_value == d


@pytest.mark.parametrize("d", [0, ORDER, ORDER + 1, -1])
def test_scalar_out_of_range(d: int) -> None:
    with pytest.raises(EcdhError) as info:
        key_pair_from_private_scalar(d)
    assert info.value.code is EncryptionErrorCode.HANDSHAKE_FAILED
    assert "private scalar" in info.value.message


def test_key_pair_repr_hides_the_private_key() -> None:
    pair = key_pair_from_private_scalar(12345)
    assert "private" not in repr(pair)


@pytest.mark.parametrize("curve", ["P-384", "P-521", "p-256", "secp256r1", ""])
def test_other_curves_are_unsupported(curve: str) -> None:
    valid_b64 = export_public_key(generate_key_pair().public_key).public_key_b64
    for call in (
        lambda: generate_key_pair(curve),
        lambda: key_pair_from_private_scalar(1, curve),
        lambda: import_public_key(valid_b64, curve),
    ):
        with pytest.raises(EcdhError) as info:
            call()
        assert info.value.code is EncryptionErrorCode.UNSUPPORTED_ALGORITHM
        assert repr(curve) in info.value.message


def test_foreign_curve_key_objects_are_unsupported() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    ours = generate_key_pair()
    for call in (
        lambda: derive_shared_secret(ours.private_key, p384.public_key()),
        lambda: derive_shared_secret(p384, ours.public_key),
        lambda: export_public_key(p384.public_key()),
    ):
        with pytest.raises(EcdhError) as info:
            call()
        assert info.value.code is EncryptionErrorCode.UNSUPPORTED_ALGORITHM


def _point(d: int) -> bytes:
    return export_public_key_bytes(key_pair_from_private_scalar(d).public_key)


Mutation = Callable[[bytes], bytes]


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda p: b"", "empty"),
        (lambda p: b"\x00", "point at infinity"),
        (lambda p: bytes([2 + (p[-1] & 1)]) + p[1:33], "compressed point"),
        (lambda p: bytes([6 + (p[-1] & 1)]) + p[1:], "hybrid point"),
        (lambda p: p[:-1], "got 64"),
        (lambda p: p + b"\x00", "got 66"),
        (lambda p: p[:-1] + bytes([p[-1] ^ 1]), "not on the P-256 curve"),
        (lambda p: b"\x04" + bytes(64), "not on the P-256 curve"),
        (lambda p: b"\x05" + p[1:], "0x05"),
    ],
)
def test_only_uncompressed_points_on_the_curve(mutate: Mutation, fragment: str) -> None:
    point = mutate(_point(7))
    with pytest.raises(EcdhError) as info:
        import_public_key(to_base64(point))
    assert info.value.code is EncryptionErrorCode.INVALID_PUBLIC_KEY
    assert info.value.message.startswith("Failed to import public key: ")
    assert fragment in info.value.message


def test_compressed_form_of_a_valid_key_is_still_refused() -> None:
    """The compressed encoding names the same valid point, and we still refuse it."""
    key = key_pair_from_private_scalar(7).public_key
    compressed = key.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
    assert ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), compressed) == key
    with pytest.raises(EcdhError):
        import_public_key(to_base64(compressed))


def test_bad_base64_is_an_invalid_key_with_the_cause_attached() -> None:
    with pytest.raises(EcdhError) as info:
        import_public_key("BAdl-_")
    assert info.value.code is EncryptionErrorCode.INVALID_PUBLIC_KEY
    assert isinstance(info.value.__cause__, Base64DecodeError)
    assert "'-'" in info.value.message


def test_import_reads_base64_like_atob() -> None:
    raw = _point(11)
    text = to_base64(raw)
    assert export_public_key_bytes(import_public_key(text.rstrip("="))) == raw
    assert export_public_key_bytes(import_public_key(f" {text[:10]}\n{text[10:]}\t")) == raw
