"""The handshake: hellos, key agreement, optional server signatures, the transcript."""

from __future__ import annotations

import base64
import copy
import json
import pickle
import re
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from enclave_stream import StdoutEvent, encode_message
from enclave_stream.crypto import (
    ClientHandshake,
    EcdhError,
    EncryptedSession,
    ReceiveChecks,
    SessionRole,
    accept_client_hello,
    create_server_hello,
    generate_key_pair,
    generate_signing_key,
    process_client_hello,
    process_server_hello,
)
from enclave_stream.crypto.ecdh import export_public_key_bytes, key_pair_from_private_scalar
from enclave_stream.crypto.handshake import parse_client_hello, parse_server_hello
from enclave_stream.crypto.signing import (
    SIGNATURE_LENGTH,
    TRANSCRIPT_LABEL,
    handshake_transcript,
    load_server_public_key,
    sign_transcript,
    verify_transcript_signature,
)
from enclave_stream.errors import EncryptionErrorCode, EnvelopeError, HandshakeError
from enclave_stream.events import ClientHello, ServerHello, StdoutPayload
from enclave_stream.protocol import EncryptionAlgorithm, KeyDerivation, SupportedCurve

SESSION = "s_handshake"
KEY_ID = re.compile(r"k_[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
UNSUPPORTED = EncryptionErrorCode.UNSUPPORTED_ALGORITHM
FAILED = EncryptionErrorCode.HANDSHAKE_FAILED
BAD_SIGNATURE = EncryptionErrorCode.SIGNATURE_VERIFICATION_FAILED


def _event(seq: int) -> StdoutEvent:
    return StdoutEvent(session_id=SESSION, seq=seq, payload=StdoutPayload(chunk="x"))


def _wire(message: Any) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(encode_message(message))
    return value


# --- the happy paths --------------------------------------------------------------------


def test_handshake_yields_matching_sessions() -> None:
    handshake = ClientHandshake()
    server_hello, server = accept_client_hello(handshake.client_hello, SESSION)
    client = handshake.complete(server_hello, SESSION)
    assert client.role is SessionRole.CLIENT
    assert server.role is SessionRole.SERVER
    assert client.key_id == server.key_id == server_hello.key_id
    assert KEY_ID.fullmatch(server_hello.key_id)
    assert server.open(client.seal(_event(1))) == _event(1)
    assert client.open(server.seal(_event(1))) == _event(1)
    assert handshake.completed


def _opens_late_envelope(receiver: EncryptedSession, sender: EncryptedSession) -> bool:
    """Whether ``receiver`` opens envelope 1 after envelope 2 (only with seq_order off)."""
    early, late = sender.seal(_event(1)), sender.seal(_event(2))
    assert receiver.open(late) == _event(2)
    try:
        return receiver.open(early) == _event(1)
    except EnvelopeError:
        return False


@pytest.mark.parametrize("side", ["client", "server"])
def test_checks_reach_the_session_of_each_side(side: str) -> None:
    """checks= given to either end of the handshake is the session's; the default is strict."""
    lenient = ReceiveChecks(seq_order=False)
    handshake = ClientHandshake(checks=lenient if side == "client" else None)
    server_hello, server = accept_client_hello(
        handshake.client_hello, SESSION, checks=lenient if side == "server" else None
    )
    client = handshake.complete(server_hello, SESSION)
    assert _opens_late_envelope(client, server) is (side == "client")
    assert _opens_late_envelope(server, client) is (side == "server")


@pytest.mark.parametrize("form", ["struct", "mapping", "text", "bytes"])
def test_hellos_in_every_form(form: str) -> None:
    def convert(message: Any) -> Any:
        if form == "struct":
            return message
        if form == "mapping":
            return _wire(message)
        if form == "text":
            return encode_message(message).decode()
        return encode_message(message)

    handshake = ClientHandshake()
    server_hello, server = accept_client_hello(convert(handshake.client_hello), SESSION)
    client = handshake.complete(convert(server_hello), SESSION)
    assert server.open(client.seal(_event(1))) == _event(1)


def test_signed_handshake() -> None:
    signing_key = generate_signing_key()
    handshake = ClientHandshake(server_public_key=signing_key.public_key())
    server_hello, server = accept_client_hello(
        handshake.client_hello, SESSION, signing_key=signing_key
    )
    assert isinstance(server_hello.signature_b64, str)
    assert len(base64.b64decode(server_hello.signature_b64)) == SIGNATURE_LENGTH
    # signatureB64 is written last; a reference peer would ignore it.
    assert list(_wire(server_hello))[-1] == "signatureB64"
    client = handshake.complete(server_hello, SESSION)
    assert server.open(client.seal(_event(1))) == _event(1)


def test_unpinned_client_ignores_signatures() -> None:
    """A client without a pinned key accepts a signed, or even wrongly signed, hello."""
    signing_key = generate_signing_key()
    handshake = ClientHandshake()
    server_hello, _ = accept_client_hello(handshake.client_hello, SESSION, signing_key=signing_key)
    wrong = msgspec.structs.replace(
        server_hello, signature_b64=base64.b64encode(bytes(64)).decode()
    )
    assert handshake.complete(wrong, SESSION).key_id == server_hello.key_id


def test_reference_processing_ignores_the_signature_field() -> None:
    signing_key = generate_signing_key()
    hello, _ = accept_client_hello(ClientHandshake().client_hello, SESSION, signing_key=signing_key)
    assert process_server_hello(hello).key_id == hello.key_id


@pytest.mark.parametrize("form", ["object", "point", "base64", "pem"])
def test_pinned_key_forms(form: str) -> None:
    signing_key = generate_signing_key()
    public = signing_key.public_key()
    point = public.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    pinned: Any = {
        "object": public,
        "point": point,
        "base64": base64.b64encode(point).decode(),
        "pem": public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
    }[form]
    handshake = ClientHandshake(server_public_key=pinned)
    server_hello, _ = accept_client_hello(handshake.client_hello, SESSION, signing_key=signing_key)
    handshake.complete(server_hello, SESSION)
    other = ClientHandshake(server_public_key=pinned)
    forged, _ = accept_client_hello(other.client_hello, SESSION, signing_key=generate_signing_key())
    with pytest.raises(HandshakeError) as info:
        other.complete(forged, SESSION)
    assert info.value.code is BAD_SIGNATURE


# --- refusals -----------------------------------------------------------------------


def test_complete_only_once() -> None:
    handshake = ClientHandshake()
    server_hello, _ = accept_client_hello(handshake.client_hello, SESSION)
    handshake.complete(server_hello, SESSION)
    with pytest.raises(HandshakeError) as info:
        handshake.complete(server_hello, SESSION)
    assert info.value.code is FAILED


@pytest.mark.parametrize("session_id", ["", "s_", "x_1", 5])
def test_bad_session_ids(session_id: Any) -> None:
    handshake = ClientHandshake()
    with pytest.raises(HandshakeError) as info:
        accept_client_hello(handshake.client_hello, session_id)
    assert info.value.code is FAILED
    server_hello, _ = accept_client_hello(handshake.client_hello, SESSION)
    with pytest.raises(HandshakeError) as info:
        handshake.complete(server_hello, session_id)
    assert info.value.code is FAILED
    assert not handshake.completed


def _client_hello(**changes: Any) -> dict[str, Any]:
    value = _wire(ClientHandshake().client_hello)
    value.update(changes)
    return value


def _server_hello(**changes: Any) -> dict[str, Any]:
    value = _wire(create_server_hello(generate_key_pair(), "k_1"))
    value.update(changes)
    return value


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        pytest.param({"curve": "P-384"}, UNSUPPORTED, id="curve"),
        pytest.param({"supportedAlgorithms": ["CHACHA20"]}, UNSUPPORTED, id="algorithm"),
        pytest.param(
            {"supportedAlgorithms": ["AES-GCM-256", "AES-GCM-128"]}, UNSUPPORTED, id="extra-alg"
        ),
        pytest.param({"supportedAlgorithms": []}, UNSUPPORTED, id="no-algorithm"),
        pytest.param({"protocolVersion": 3}, FAILED, id="version"),
        pytest.param({"protocolVersion": "2"}, FAILED, id="version-text"),
        pytest.param({"clientEphemeralPubKeyB64": ""}, FAILED, id="empty-key"),
        pytest.param({"clientEphemeralPubKeyB64": 7}, FAILED, id="key-type"),
    ],
)
def test_client_hello_refusals(changes: dict[str, Any], code: EncryptionErrorCode) -> None:
    hello = _client_hello(**changes)
    for refuse in (parse_client_hello, process_client_hello):
        with pytest.raises(HandshakeError) as info:
            refuse(hello)
        assert info.value.code is code
    with pytest.raises(HandshakeError) as info:
        accept_client_hello(hello, SESSION)
    assert info.value.code is code


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        pytest.param({"curve": "P-521"}, UNSUPPORTED, id="curve"),
        pytest.param({"selectedAlgorithm": "AES-GCM-128"}, UNSUPPORTED, id="algorithm"),
        pytest.param({"kdf": "HKDF-SHA-512"}, UNSUPPORTED, id="kdf"),
        pytest.param({"keyId": ""}, FAILED, id="empty-key-id"),
        pytest.param({"keyId": None}, FAILED, id="null-key-id"),
        pytest.param({"signatureB64": None}, FAILED, id="null-signature"),
        pytest.param({"protocolVersion": 0}, FAILED, id="version"),
    ],
)
def test_server_hello_refusals(changes: dict[str, Any], code: EncryptionErrorCode) -> None:
    hello = _server_hello(**changes)
    for refuse in (parse_server_hello, process_server_hello):
        with pytest.raises(HandshakeError) as info:
            refuse(hello)
        assert info.value.code is code
    with pytest.raises(HandshakeError) as info:
        ClientHandshake().complete(hello, SESSION)
    assert info.value.code is code


def test_missing_protocol_version_is_refused() -> None:
    hello = _client_hello()
    del hello["protocolVersion"]
    with pytest.raises(HandshakeError) as info:
        parse_client_hello(hello)
    assert info.value.code is FAILED


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        "[1, 2]",
        "",
        42,
        None,
        ServerHello(
            server_ephemeral_pub_key_b64="x",
            key_id="k",
            curve=SupportedCurve.P256,
            selected_algorithm=EncryptionAlgorithm.AES_GCM_256,
            kdf=KeyDerivation.HKDF_SHA256,
        ),
    ],
)
def test_not_a_client_hello(raw: Any) -> None:
    with pytest.raises(HandshakeError) as info:
        parse_client_hello(raw)
    assert info.value.code is FAILED


def test_a_constructed_struct_is_validated() -> None:
    """Structs are not validated on construction; the hello layer does it."""
    unchecked = ClientHello(
        client_ephemeral_pub_key_b64="", supported_algorithms=[], curve=SupportedCurve.P256
    )
    with pytest.raises(HandshakeError):
        parse_client_hello(unchecked)
    lone = ClientHello(
        client_ephemeral_pub_key_b64="\ud800",
        curve=SupportedCurve.P256,
        supported_algorithms=[EncryptionAlgorithm.AES_GCM_256],
    )
    with pytest.raises(EcdhError) as info:  # JSON-valid (escaped), but not base64
        process_client_hello(lone)
    assert info.value.code is EncryptionErrorCode.INVALID_PUBLIC_KEY


_KEY_B64 = base64.b64encode(b"\x04" + bytes(64)).decode()
_AES = EncryptionAlgorithm.AES_GCM_256
_CLIENT_STRUCTS = {
    "canonical": {},
    "version-1": {"protocol_version": 1},
    "version-absent": {"protocol_version": msgspec.UNSET},  # replaced by the default below
    "version-true": {"protocol_version": True},
    "version-text": {"protocol_version": "2"},
    "key-empty": {"client_ephemeral_pub_key_b64": ""},
    "key-non-ascii": {"client_ephemeral_pub_key_b64": "é"},
    "key-surrogate": {"client_ephemeral_pub_key_b64": "\ud800"},
    "key-int": {"client_ephemeral_pub_key_b64": 7},
    "curve-text": {"curve": "P-256"},
    "curve-other": {"curve": "P-384"},
    "algorithms-text": {"supported_algorithms": ["AES-GCM-256"]},
    "algorithms-two": {"supported_algorithms": [_AES, _AES]},
    "algorithms-extra": {"supported_algorithms": [_AES, "AES-GCM-128"]},
    "algorithms-empty": {"supported_algorithms": []},
    "algorithms-tuple": {"supported_algorithms": (_AES,)},
}
_SERVER_STRUCTS = {
    "canonical": {},
    "version-1": {"protocol_version": 1},
    "version-absent": {"protocol_version": msgspec.UNSET},
    "version-zero": {"protocol_version": 0},
    "key-empty": {"server_ephemeral_pub_key_b64": ""},
    "key-id-empty": {"key_id": ""},
    "key-id-non-ascii": {"key_id": "k_é"},
    "key-id-none": {"key_id": None},
    "curve-text": {"curve": "P-256"},
    "algorithm-other": {"selected_algorithm": "AES-GCM-128"},
    "kdf-text": {"kdf": "HKDF-SHA-256"},
    "kdf-other": {"kdf": "HKDF-SHA-512"},
    "signature": {"signature_b64": "c2ln"},
    "signature-empty": {"signature_b64": ""},
    "signature-non-ascii": {"signature_b64": "é"},
    "signature-none": {"signature_b64": None},
}


def _struct(type_: Any, base: dict[str, Any], changes: dict[str, Any]) -> Any:
    fields = {**base, **changes}
    if fields["protocol_version"] is msgspec.UNSET:
        del fields["protocol_version"]  # the Struct's default: "absent on the wire"
    return type_(**fields)


def _wire(hello: Any) -> Any:
    # The hello as a mapping; the protocol-version default marker is an int.
    return msgspec.to_builtins(hello, enc_hook=int)


def _outcome(parse: Any) -> Any:
    try:
        hello = parse()
    except HandshakeError as exc:
        return ("refused", exc.code, exc.message)
    fields = msgspec.structs.asdict(hello)
    return ("accepted", fields, {name: type(value) for name, value in fields.items()})


@pytest.mark.parametrize("changes", _CLIENT_STRUCTS.values(), ids=_CLIENT_STRUCTS)
def test_client_hello_structs_get_the_schema_verdict(changes: dict[str, Any]) -> None:
    """A Struct gets exactly the verdict of its wire form (a mapping)."""
    base = {
        "protocol_version": 2,
        "client_ephemeral_pub_key_b64": _KEY_B64,
        "curve": SupportedCurve.P256,
        "supported_algorithms": [_AES],
    }
    hello = _struct(ClientHello, base, changes)
    schema = _outcome(lambda: parse_client_hello(_wire(hello)))
    assert _outcome(lambda: parse_client_hello(hello)) == schema


@pytest.mark.parametrize("changes", _SERVER_STRUCTS.values(), ids=_SERVER_STRUCTS)
def test_server_hello_structs_get_the_schema_verdict(changes: dict[str, Any]) -> None:
    base = {
        "protocol_version": 2,
        "server_ephemeral_pub_key_b64": _KEY_B64,
        "curve": SupportedCurve.P256,
        "selected_algorithm": _AES,
        "kdf": KeyDerivation.HKDF_SHA256,
        "key_id": "k_1",
    }
    hello = _struct(ServerHello, base, changes)
    schema = _outcome(lambda: parse_server_hello(_wire(hello)))
    assert _outcome(lambda: parse_server_hello(hello)) == schema


def test_the_handshakes_own_hellos_are_valid() -> None:
    """Our own hellos are judged like any other, and pass unchanged."""
    handshake = ClientHandshake()
    server_hello, _ = accept_client_hello(handshake.client_hello, SESSION)
    assert parse_client_hello(handshake.client_hello) == handshake.client_hello
    assert parse_server_hello(server_hello) == server_hello


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(base64.b64encode(b"\x04" + bytes(64)).decode(), id="off-curve"),
        pytest.param(base64.b64encode(b"\x04" + bytes(63)).decode(), id="short"),
        pytest.param(
            base64.b64encode(export_public_key_bytes(generate_key_pair().public_key)[:33]).decode(),
            id="truncated",
        ),
        pytest.param("!!!!", id="not-base64"),
    ],
)
def test_bad_public_keys(key: str) -> None:
    with pytest.raises(EcdhError) as info:
        accept_client_hello(_client_hello(clientEphemeralPubKeyB64=key), SESSION)
    assert info.value.code is EncryptionErrorCode.INVALID_PUBLIC_KEY
    with pytest.raises(EcdhError) as info:
        ClientHandshake().complete(_server_hello(serverEphemeralPubKeyB64=key), SESSION)
    assert info.value.code is EncryptionErrorCode.INVALID_PUBLIC_KEY


def test_create_server_hello_refuses_an_empty_key_id() -> None:
    with pytest.raises(HandshakeError) as info:
        create_server_hello(generate_key_pair(), "")
    assert info.value.code is FAILED


def test_signing_and_pinned_keys_must_be_p256() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(HandshakeError) as info:
        accept_client_hello(ClientHandshake().client_hello, SESSION, signing_key=p384)
    assert info.value.code is UNSUPPORTED
    with pytest.raises(HandshakeError) as info:
        ClientHandshake(server_public_key=p384.public_key())
    assert info.value.code is UNSUPPORTED
    with pytest.raises(EcdhError) as bad_point:
        load_server_public_key(b"\x04" + bytes(64))
    assert bad_point.value.code is EncryptionErrorCode.INVALID_PUBLIC_KEY
    with pytest.raises(EcdhError):
        load_server_public_key(b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")


# --- the transcript -------------------------------------------------------------------


def test_transcript_encoding_is_as_documented() -> None:
    client_point = b"\x04" + bytes(range(64))
    server_point = b"\x04" + bytes(range(64, 128))
    transcript = handshake_transcript(
        protocol_version=2,
        session_id="s_\u00e9",
        client_public_key=client_point,
        server_public_key=server_point,
        key_id="k_1",
    )

    def field(data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + data

    expected = b"".join(
        field(part)
        for part in (
            b"enclavejs-stream/v2 server-hello signature",
            b"2",
            "s_\u00e9".encode(),
            client_point,
            server_point,
            b"k_1",
            b"P-256",
            b"AES-GCM-256",
            b"HKDF-SHA-256",
        )
    )
    assert transcript == expected
    assert transcript.startswith(field(TRANSCRIPT_LABEL))


def test_transcript_fields_cannot_slide() -> None:
    """Length prefixes keep ("s_ab", "k_c") and ("s_a", "bk_c")-style splits apart."""
    point = b"\x04" + bytes(64)
    one = handshake_transcript(
        protocol_version=2,
        session_id="s_ab",
        client_public_key=point,
        server_public_key=point,
        key_id="k_c",
    )
    two = handshake_transcript(
        protocol_version=2,
        session_id="s_a",
        client_public_key=point,
        server_public_key=point,
        key_id="bk_c",
    )
    assert one != two


def test_sign_and_verify_the_transcript() -> None:
    key = generate_signing_key()
    transcript = b"\x00\x00\x00\x01x"
    signature = sign_transcript(key, transcript)
    verify_transcript_signature(key.public_key(), transcript, signature)
    with pytest.raises(HandshakeError) as info:
        verify_transcript_signature(key.public_key(), transcript + b"!", signature)
    assert info.value.code is BAD_SIGNATURE
    with pytest.raises(HandshakeError):
        verify_transcript_signature(key.public_key(), transcript, msgspec.UNSET)


def test_fixed_key_pair_gives_a_fixed_hello() -> None:
    pair = key_pair_from_private_scalar(7)
    one = ClientHandshake(key_pair=pair)
    two = ClientHandshake(key_pair=pair)
    assert one.client_hello == two.client_hello


# --- ids, safety ------------------------------------------------------------------------


def test_fresh_key_ids() -> None:
    hello = ClientHandshake().client_hello
    ids = {process_client_hello(hello).key_id for _ in range(50)}
    ids |= {accept_client_hello(hello, SESSION)[0].key_id for _ in range(50)}
    assert len(ids) == 100
    assert all(KEY_ID.fullmatch(key_id) for key_id in ids)


def test_process_client_hello_key_id() -> None:
    processed = process_client_hello(ClientHandshake().client_hello, key_id="k_fixed")
    assert processed.key_id == processed.server_hello.key_id == "k_fixed"


@pytest.mark.parametrize("clone", [copy.copy, copy.deepcopy, pickle.dumps])
def test_handshake_cannot_be_copied(clone: Any) -> None:
    with pytest.raises(TypeError):
        clone(ClientHandshake())


def test_reprs_hide_private_keys() -> None:
    handshake = ClientHandshake(server_public_key=generate_signing_key().public_key())
    assert repr(handshake) == "<ClientHandshake pinned=True completed=False>"
    processed = process_client_hello(ClientHandshake().client_hello)
    assert "private" not in repr(processed)
